// kernels/tq_avx2_inl.h: internal. The AVX2 + F16C building blocks of the TQ codec and the
// single-vector encode/decode built from them, shared by tq_avx2.cc and tq_avx512.cc (which falls
// back to these for odd and special vectors). Everything is in an anonymous namespace on purpose:
// each translation unit is compiled with its own target flags, and its copy must not be merged
// with another's by the linker.
//
// Lane l of register r holds coordinate 8r + l, so the reference's eight strided accumulators are
// the eight lanes, and the WHT stages h = 1, 2, 4 are in-register permutes while h >= 8 pairs
// whole registers. Every lane does the reference's IEEE operations in the reference's order.
#pragma once

#include <immintrin.h>

#include "kernels/tq_format.h"
#include "kernels/tq_math.h"

namespace cachesvc::kernels::tq {
namespace {  // NOLINT(google-build-namespaces): per-TU copies, see above

constexpr float kSignBit = -0.0f;

// Reduce8 of tq_math.h on the lanes of acc.
inline float Reduce8(__m256 acc) {
  const __m128 q = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
  const __m128 r = _mm_add_ps(q, _mm_movehl_ps(q, q));
  return _mm_cvtss_f32(_mm_add_ss(r, _mm_shuffle_ps(r, r, 1)));
}

// Sign masks for the three in-register stages: the lanes that take a - b.
struct StageMasks {
  __m256 h1 = _mm256_setr_ps(0, kSignBit, 0, kSignBit, 0, kSignBit, 0, kSignBit);
  __m256 h2 = _mm256_setr_ps(0, 0, kSignBit, kSignBit, 0, 0, kSignBit, kSignBit);
  __m256 h4 = _mm256_setr_ps(0, 0, 0, 0, kSignBit, kSignBit, kSignBit, kSignBit);
};

template <int R>
inline void Wht(__m256* v, const StageMasks& m) {
  for (int r = 0; r < R; ++r) {
    __m256 x = v[r];
    // Each lane adds its partner; the upper lane of each pair negates itself first: a + (-b).
    x = _mm256_add_ps(_mm256_permute_ps(x, 0xb1), _mm256_xor_ps(x, m.h1));
    x = _mm256_add_ps(_mm256_permute_ps(x, 0x4e), _mm256_xor_ps(x, m.h2));
    x = _mm256_add_ps(_mm256_permute2f128_ps(x, x, 0x01), _mm256_xor_ps(x, m.h4));
    v[r] = x;
  }
  for (int step = 1; step < R; step <<= 1) {
    for (int r = 0; r < R; ++r) {
      if (r & step) continue;
      const __m256 a = v[r], b = v[r + step];
      v[r] = _mm256_add_ps(a, b);
      v[r + step] = _mm256_sub_ps(a, b);  // IEEE a - b is a + (-b), bit for bit
    }
  }
}

template <int R>
inline void LoadSignMasks(const std::uint64_t* words, __m256* masks) {
  const __m256i bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  for (int r = 0; r < R; ++r) {
    const auto byte = static_cast<int>((words[r / 8] >> (8 * (r % 8))) & 0xffu);
    const __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(byte), bit), bit);
    masks[r] = _mm256_and_ps(_mm256_castsi256_ps(set), _mm256_set1_ps(kSignBit));
  }
}

template <int kBits>
inline __m256 Lookup(__m256i code, const __m256* table) {
  const __m256 lo = _mm256_permutevar8x32_ps(table[0], code);
  if constexpr (kBits == 3) {
    return lo;
  } else {
    const __m256 hi = _mm256_permutevar8x32_ps(table[1], code);
    const __m256i upper = _mm256_cmpgt_epi32(code, _mm256_set1_epi32(7));
    return _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(upper));
  }
}

// Eight registers of codes (coordinates 8r..8r+7 each) to the eight packed words, one per register:
// word r = sum over lanes l of code << (bits * l).
template <int kBits>
inline __m256i PackWords(const __m256i* c) {
  const __m256i shifts = kBits == 4 ? _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
                                    : _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
  __m256i s[8];
  for (int r = 0; r < 8; ++r) s[r] = _mm256_sllv_epi32(c[r], shifts);
  const __m256i h0123 =
      _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
  const __m256i h4567 =
      _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]), _mm256_hadd_epi32(s[6], s[7]));
  return _mm256_add_epi32(_mm256_permute2x128_si256(h0123, h4567, 0x20),
                          _mm256_permute2x128_si256(h0123, h4567, 0x31));
}

template <int kBits>
inline void StoreWords(__m256i words, std::uint8_t* out) {
  if constexpr (kBits == 4) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out), words);
  } else {
    // Keep the low three bytes of each word: 8 words -> 24 bytes.
    const __m256i compact = _mm256_shuffle_epi8(
        words, _mm256_setr_epi8(0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4,
                                5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1));
    const __m128i lo = _mm256_castsi256_si128(compact);
    const __m128i hi = _mm256_extracti128_si256(compact, 1);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out), lo);
    const int lo2 = _mm_extract_epi32(lo, 2);
    __builtin_memcpy(out + 8, &lo2, 4);
    _mm_storel_epi64(reinterpret_cast<__m128i*>(out + 12), hi);
    const int hi2 = _mm_extract_epi32(hi, 2);
    __builtin_memcpy(out + 20, &hi2, 4);
  }
}

template <int D>
inline void LoadVector(const std::uint16_t* in, ValueType type, __m256* x) {
  for (int r = 0; r < D / 8; ++r) {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(in + 8 * r));
    x[r] = type == ValueType::kFp16
               ? _mm256_cvtph_ps(h)
               : _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
}

template <int kBits>
inline __m256i UnpackRegister(const std::uint8_t* codes, int r) {
  std::uint32_t word;
  if constexpr (kBits == 4) {
    __builtin_memcpy(&word, codes + 4 * r, 4);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                            _mm256_set1_epi32(0xf));
  } else {
    // Three bytes at 3r; read the four at 3r - 1 so the load never passes the end of the buffer.
    if (r == 0) {
      word = codes[0] | (codes[1] << 8) | (codes[2] << 16);
    } else {
      __builtin_memcpy(&word, codes + 3 * r - 1, 4);
      word >>= 8;
    }
    const __m256i shifts = _mm256_setr_epi32(0, 3, 6, 9, 12, 15, 18, 21);
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(static_cast<int>(word)), shifts),
                            _mm256_set1_epi32(7));
  }
}

// Per-block constants of the AVX2 path, and one vector's encode and decode.
template <int D, int kBits>
struct Avx2Codec {
  static constexpr int R = D / 8;
  static constexpr int kLevels = 1 << kBits;
  StageMasks stage;
  __m256 signs[R];
  __m256 table[2];
  __m256 thresholds[kLevels - 1];

  Avx2Codec(const std::uint64_t* sign_words, const float* centroids, const float* thr) {
    LoadSignMasks<R>(sign_words, signs);
    table[0] = _mm256_loadu_ps(centroids);
    table[1] = kBits == 4 ? _mm256_loadu_ps(centroids + 8) : table[0];
    for (int k = 0; k < kLevels - 1; ++k) {
      thresholds[k] = _mm256_set1_ps(thr != nullptr ? thr[k] : 0.0f);  // decode passes none
    }
  }

  void EncodeOne(const EncodeArgs& a, std::uint64_t i, EncodeStats* stats) const {
    const std::uint16_t* in = a.in + i * D;
    std::uint8_t* codes_out = a.codes + i * kCodeBytes<D, kBits>;
    const __m256i exp_mask = _mm256_set1_epi32(0x7f800000);
    __m256 x[R];
    LoadVector<D>(in, a.type, x);
    __m256 acc = _mm256_setzero_ps();
    __m256i nonfinite = _mm256_setzero_si256();
    for (int r = 0; r < R; ++r) {
      acc = _mm256_add_ps(acc, _mm256_mul_ps(x[r], x[r]));
      nonfinite = _mm256_or_si256(
          nonfinite,
          _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_castps_si256(x[r]), exp_mask), exp_mask));
    }
    const float n2 = Reduce8(acc);
    if (!_mm256_testz_si256(nonfinite, nonfinite) || !IsFinite(n2) || n2 == 0.0f) {
      // Rare special vectors take the reference path, which defines them.
      float xs[D];
      for (int r = 0; r < R; ++r) _mm256_storeu_ps(xs + 8 * r, x[r]);
      const VectorOutcome outcome = EncodeVector<D, kBits>(xs, a.sign_words, a.centroids,
                                                           a.thresholds, &a.norms[i], codes_out);
      if (outcome == VectorOutcome::kZero) ++stats->zero_vectors;
      if (outcome == VectorOutcome::kNonFinite) ++stats->nonfinite_vectors;
      return;
    }
    for (int r = 0; r < R; ++r) x[r] = _mm256_xor_ps(x[r], signs[r]);
    Wht<R>(x, stage);
    const float norm = Sqrt(n2);
    const __m256 inv = _mm256_set1_ps(Div(1.0f, norm));
    __m256 dp = _mm256_setzero_ps(), ep = _mm256_setzero_ps();
    __m256i codes[R];
    for (int r = 0; r < R; ++r) {
      const __m256 z = _mm256_mul_ps(x[r], inv);
      __m256i code = _mm256_setzero_si256();
      for (int k = 0; k < kLevels - 1; ++k) {
        code = _mm256_sub_epi32(code,
                                _mm256_castps_si256(_mm256_cmp_ps(z, thresholds[k], _CMP_GT_OQ)));
      }
      const __m256 c = Lookup<kBits>(code, table);
      dp = _mm256_add_ps(dp, _mm256_mul_ps(z, c));
      ep = _mm256_add_ps(ep, _mm256_mul_ps(c, c));
      codes[r] = code;
    }
    const float alpha = Mul(norm, Div(Reduce8(dp), Reduce8(ep)));
    a.norms[i] = NormField(alpha, norm);
    if (!IsFinite(Fp16ToFloat(a.norms[i]))) ++stats->nonfinite_vectors;
    StoreCodes(codes, codes_out);
  }

  // Packs and stores one vector's R registers of codes.
  static void StoreCodes(const __m256i* codes, std::uint8_t* out) {
    constexpr int kWordBytes = kBits == 4 ? 4 : 3;
    for (int r = 0; r < R; r += 8)
      StoreWords<kBits>(PackWords<kBits>(codes + r), out + r * kWordBytes);
  }

  // Writes one decoded register (coordinates 8r..8r+7, already scaled and signed).
  static void StoreOutput(ValueType type, __m256 y, std::uint16_t* out) {
    if (type == ValueType::kFp16) {
      const __m256 sat =
          _mm256_min_ps(_mm256_max_ps(y, _mm256_set1_ps(-kFp16Max)), _mm256_set1_ps(kFp16Max));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out),
                       _mm256_cvtps_ph(sat, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    } else {
      const __m256i u = _mm256_castps_si256(y);
      const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
      const __m256i rounded = _mm256_srli_epi32(
          _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb)), 16);
      const __m128i packed =
          _mm_packus_epi32(_mm256_castsi256_si128(rounded), _mm256_extracti128_si256(rounded, 1));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out), packed);
    }
  }

  static void StoreNan(ValueType type, std::uint16_t* out) {
    const std::uint16_t nan = type == ValueType::kFp16 ? kFp16CanonicalNan : kBf16CanonicalNan;
    for (int j = 0; j < D; ++j) out[j] = nan;
  }

  void DecodeOne(const DecodeArgs& a, std::uint64_t i) const {
    std::uint16_t* out = a.out + i * D;
    const float alpha = Fp16ToFloat(a.norms[i]);
    if (!IsFinite(alpha)) {
      StoreNan(a.type, out);
      return;
    }
    const std::uint8_t* codes = a.codes + i * kCodeBytes<D, kBits>;
    __m256 v[R];
    for (int r = 0; r < R; ++r) v[r] = Lookup<kBits>(UnpackRegister<kBits>(codes, r), table);
    Wht<R>(v, stage);
    const __m256 beta = _mm256_set1_ps(Mul(alpha, 1.0f / D));
    for (int r = 0; r < R; ++r) {
      StoreOutput(a.type, _mm256_xor_ps(_mm256_mul_ps(v[r], beta), signs[r]), out + 8 * r);
    }
  }
};

}  // namespace
}  // namespace cachesvc::kernels::tq
