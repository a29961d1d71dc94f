// kernels/tq_math.h: the per-vector math of the TQ3/TQ4 format, written once for CPU and GPU.
//
// Every function here is the reference definition of kernels/FORMAT.md: the scalar CPU codec runs
// it directly, the CUDA kernels run the same code per thread, and the SIMD paths must produce the
// same bits (tests check them against it). Floating-point rules that make that possible:
//   - every operation is a single IEEE fp32 operation rounded to nearest-even; no FMA contraction
//     (host builds use -ffp-contract=off; device code uses the __f*_rn intrinsics, which nvcc never
//     fuses);
//   - every reduction has the fixed order of Reduce8 (eight strided lanes, then a fixed tree);
//   - conversions to fp16/bf16 round to nearest-even, written out here bit by bit.
// Header-only, no allocation, no globals; safe to call from any thread.
#pragma once

#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define TQ_HD __host__ __device__ __forceinline__
#else
#define TQ_HD inline
#endif

namespace cachesvc::kernels::tq {

// ---- IEEE fp32 operations, one rounding each, never fused. ----
TQ_HD float Add(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
TQ_HD float Mul(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
TQ_HD float Div(float a, float b) {
#ifdef __CUDA_ARCH__
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
TQ_HD float Sqrt(float a) {
#ifdef __CUDA_ARCH__
  return __fsqrt_rn(a);
#else
  return __builtin_sqrtf(a);
#endif
}

TQ_HD std::uint32_t FloatBits(float f) {
  std::uint32_t u;
  memcpy(&u, &f, sizeof(u));
  return u;
}
TQ_HD float BitsFloat(std::uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof(f));
  return f;
}
TQ_HD bool IsFinite(float f) { return (FloatBits(f) & 0x7f800000u) != 0x7f800000u; }
TQ_HD float Negate(float f) { return BitsFloat(FloatBits(f) ^ 0x80000000u); }

// ---- Element conversions (exact in, round-to-nearest-even out). ----
inline constexpr std::uint16_t kFp16CanonicalNan = 0x7e00;
inline constexpr std::uint16_t kBf16CanonicalNan = 0x7fc0;
inline constexpr float kFp16Max = 65504.0f;

TQ_HD float Fp16ToFloat(std::uint16_t h) {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0x1f) return BitsFloat(sign | 0x7f800000u | (mant << 13));  // Inf / NaN
  if (exp != 0) return BitsFloat(sign | ((exp + 112) << 23) | (mant << 13));
  if (mant == 0) return BitsFloat(sign);  // signed zero
  // Subnormal: value = mant * 2^-24, normalize.
  int e = 113;
  while ((mant & 0x400u) == 0) {
    mant <<= 1;
    --e;
  }
  return BitsFloat(sign | (static_cast<std::uint32_t>(e) << 23) | ((mant & 0x3ffu) << 13));
}

TQ_HD std::uint16_t FloatToFp16(float f) {
  const std::uint32_t u = FloatBits(f);
  const std::uint16_t sign = static_cast<std::uint16_t>((u >> 16) & 0x8000u);
  const std::uint32_t abs = u & 0x7fffffffu;
  if (abs >= 0x7f800000u) {  // Inf or NaN
    return static_cast<std::uint16_t>(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (abs >= 0x477ff000u) return static_cast<std::uint16_t>(sign | 0x7c00u);  // rounds to Inf
  if (abs >= 0x38800000u) {                                                   // normal fp16
    const std::uint32_t mant_round = abs + 0x0fffu + ((abs >> 13) & 1u);
    return static_cast<std::uint16_t>(sign | ((mant_round - 0x38000000u) >> 13));
  }
  if (abs < 0x33000000u) return sign;  // below half the smallest subnormal: +-0
  // Subnormal fp16: shift the full significand right, round to nearest-even.
  const std::uint32_t e = abs >> 23;
  const std::uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
  const std::uint32_t shift = 126 - e;  // 14..24 for e in [102, 112]
  const std::uint32_t half = 1u << (shift - 1);
  std::uint32_t q = mant >> shift;
  const std::uint32_t rem = mant & ((1u << shift) - 1);
  if (rem > half || (rem == half && (q & 1u))) ++q;
  return static_cast<std::uint16_t>(sign | q);
}

TQ_HD float Bf16ToFloat(std::uint16_t b) { return BitsFloat(static_cast<std::uint32_t>(b) << 16); }

TQ_HD std::uint16_t FloatToBf16(float f) {
  const std::uint32_t u = FloatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return kBf16CanonicalNan;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// ---- Sign vector: bit j of the SplitMix64 stream seeded with the block's seed. ----
TQ_HD std::uint64_t SplitMix64(std::uint64_t& state) {
  state += 0x9e3779b97f4a7c15ull;
  std::uint64_t z = state;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// words[w] = the w-th output; coordinate j is negated when bit (j % 64) of words[j / 64] is 1.
TQ_HD void SignWords(std::uint64_t seed, int head_dim, std::uint64_t* words) {
  std::uint64_t state = seed;
  for (int w = 0; w < head_dim / 64; ++w) words[w] = SplitMix64(state);
}
TQ_HD bool SignBit(const std::uint64_t* words, int j) { return (words[j >> 6] >> (j & 63)) & 1u; }

// ---- Fixed-order reductions. ----
// Lane l of p holds the sum, in increasing j, of the terms with j % 8 == l. The lanes combine as
//   ((p0 + p4) + (p2 + p6)) + ((p1 + p5) + (p3 + p7)).
TQ_HD float Reduce8(const float* p) {
  const float q0 = Add(p[0], p[4]), q1 = Add(p[1], p[5]), q2 = Add(p[2], p[6]),
              q3 = Add(p[3], p[7]);
  return Add(Add(q0, q2), Add(q1, q3));
}

// ---- Unnormalized Walsh-Hadamard transform, stages h = 1, 2, 4, ..., D/2. ----
// Each butterfly maps (a, b) = (v[j], v[j+h]) to (a + b, a - b).
template <int D>
TQ_HD void Wht(float* v) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
  for (int h = 1; h < D; h <<= 1) {
#ifdef __CUDA_ARCH__
#pragma unroll
#endif
    for (int i = 0; i < D; i += 2 * h) {
      for (int j = i; j < i + h; ++j) {
        const float a = v[j], b = v[j + h];
        v[j] = Add(a, b);
        v[j + h] = Add(a, Negate(b));
      }
    }
  }
}

// ---- Codes. ----
// The code of z: how many thresholds z is strictly greater than (ties take the lower code; NaN
// takes code 0).
template <int kBits>
TQ_HD int Quantize(float z, const float* thresholds) {
  int code = 0;
  for (int k = 0; k < (1 << kBits) - 1; ++k) code += z > thresholds[k] ? 1 : 0;
  return code;
}

// Code bytes per vector: D * bits / 8.
template <int D, int kBits>
inline constexpr int kCodeBytes = D* kBits / 8;

// TQ3: coordinates 8g..8g+7 form the 24-bit little-endian word sum(code[8g+k] << 3k) in bytes
// 3g..3g+2. TQ4: byte m holds code[2m] in its low nibble and code[2m+1] in its high nibble.
template <int D, int kBits>
TQ_HD void PackCodes(const std::uint8_t* codes, std::uint8_t* out) {
  if constexpr (kBits == 4) {
    for (int m = 0; m < D / 2; ++m) {
      out[m] = static_cast<std::uint8_t>(codes[2 * m] | (codes[2 * m + 1] << 4));
    }
  } else {
    for (int g = 0; g < D / 8; ++g) {
      std::uint32_t w = 0;
      for (int k = 0; k < 8; ++k) w |= static_cast<std::uint32_t>(codes[8 * g + k]) << (3 * k);
      out[3 * g] = static_cast<std::uint8_t>(w);
      out[3 * g + 1] = static_cast<std::uint8_t>(w >> 8);
      out[3 * g + 2] = static_cast<std::uint8_t>(w >> 16);
    }
  }
}

template <int D, int kBits>
TQ_HD void UnpackCodes(const std::uint8_t* in, std::uint8_t* codes) {
  if constexpr (kBits == 4) {
    for (int m = 0; m < D / 2; ++m) {
      codes[2 * m] = in[m] & 0x0fu;
      codes[2 * m + 1] = in[m] >> 4;
    }
  } else {
    for (int g = 0; g < D / 8; ++g) {
      const std::uint32_t w = in[3 * g] | (in[3 * g + 1] << 8) | (in[3 * g + 2] << 16);
      for (int k = 0; k < 8; ++k) codes[8 * g + k] = (w >> (3 * k)) & 7u;
    }
  }
}

// The fp16 norm field for scale `alpha` of a vector of norm `norm`. The least-squares scale can
// exceed the norm by a few percent: a vector whose norm fits fp16 keeps a finite field, clamped to
// 65504, and only a vector whose norm itself is beyond fp16 gets Inf (and decodes to NaN).
TQ_HD std::uint16_t NormField(float alpha, float norm) {
  const std::uint16_t field = FloatToFp16(alpha);
  if ((field & 0x7c00u) == 0x7c00u && norm < 65520.0f) return 0x7bff;
  return field;
}

// What encoding a vector found.
enum class VectorOutcome : std::uint8_t { kOk, kZero, kNonFinite };

// Encodes one vector of D fp32 values (already converted from the input dtype, exactly).
// Writes its fp16 norm field and its packed codes. See FORMAT.md "Encoding a vector". Tests pass
// `alpha_out` to compare the fp32 scale before its rounding to fp16 (0 or NaN for the special
// vectors), which exposes a one-ulp difference in any reduction.
template <int D, int kBits>
TQ_HD VectorOutcome EncodeVector(const float* x, const std::uint64_t* sign_words,
                                 const float* centroids, const float* thresholds,
                                 std::uint16_t* norm_out, std::uint8_t* codes_out,
                                 float* alpha_out = nullptr) {
  bool finite = true;
  float p[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < D; ++j) {
    finite = finite && IsFinite(x[j]);
    p[j & 7] = Add(p[j & 7], Mul(x[j], x[j]));
  }
  const float n2 = Reduce8(p);
  std::uint8_t codes[D];
  if (!finite || !IsFinite(n2) || n2 == 0.0f) {
    for (int j = 0; j < D; ++j) codes[j] = 0;
    PackCodes<D, kBits>(codes, codes_out);
    *norm_out = (finite && IsFinite(n2)) ? std::uint16_t{0} : kFp16CanonicalNan;
    if (alpha_out != nullptr) *alpha_out = Fp16ToFloat(*norm_out);
    return (finite && IsFinite(n2)) ? VectorOutcome::kZero : VectorOutcome::kNonFinite;
  }
  float v[D];
  for (int j = 0; j < D; ++j) v[j] = SignBit(sign_words, j) ? Negate(x[j]) : x[j];
  Wht<D>(v);
  const float norm = Sqrt(n2);
  const float inv = Div(1.0f, norm);
  float dp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  float ep[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < D; ++j) {
    const float z = Mul(v[j], inv);
    const int code = Quantize<kBits>(z, thresholds);
    const float c = centroids[code];
    codes[j] = static_cast<std::uint8_t>(code);
    dp[j & 7] = Add(dp[j & 7], Mul(z, c));
    ep[j & 7] = Add(ep[j & 7], Mul(c, c));
  }
  // Least-squares scale: the norm field is |x| * <z, c> / <c, c>, which minimizes the error of
  // the reconstruction given the codes (FORMAT.md "Why the norm field is not exactly |x|").
  const float alpha = Mul(norm, Div(Reduce8(dp), Reduce8(ep)));
  *norm_out = NormField(alpha, norm);
  if (alpha_out != nullptr) *alpha_out = alpha;
  PackCodes<D, kBits>(codes, codes_out);
  return IsFinite(Fp16ToFloat(*norm_out)) ? VectorOutcome::kOk : VectorOutcome::kNonFinite;
}

// Decodes one vector into D fp32 values y (before conversion to the output dtype). Returns false
// when the norm field is not finite: then every output coordinate is NaN.
template <int D, int kBits>
TQ_HD bool DecodeVector(std::uint16_t norm_bits, const std::uint8_t* codes_in,
                        const std::uint64_t* sign_words, const float* centroids, float* y) {
  const float alpha = Fp16ToFloat(norm_bits);
  if (!IsFinite(alpha)) return false;
  std::uint8_t codes[D];
  UnpackCodes<D, kBits>(codes_in, codes);
  for (int j = 0; j < D; ++j) y[j] = centroids[codes[j]];
  Wht<D>(y);
  const float beta = Mul(alpha, 1.0f / D);  // exact: D is a power of two
  for (int j = 0; j < D; ++j) {
    const float t = Mul(y[j], beta);
    y[j] = SignBit(sign_words, j) ? Negate(t) : t;
  }
  return true;
}

// Output conversion: fp16 saturates finite values to +-65504 so that a finite input never decodes
// to Inf; bf16 has fp32's range and only rounds.
TQ_HD std::uint16_t ToFp16Saturated(float y) {
  const float c = y > kFp16Max ? kFp16Max : (y < -kFp16Max ? -kFp16Max : y);
  return FloatToFp16(c);
}

}  // namespace cachesvc::kernels::tq
