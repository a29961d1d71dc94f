// AVX-512 implementation of the TQ block codec: two vectors at a time, vector A in the low and
// vector B in the high 256 bits of each zmm register, so every lane still does exactly the
// AVX2/scalar operations in the same order (a 16-lane accumulator would change the order of the
// reference's 8-lane reductions). Odd and special (zero, NaN/Inf) vectors go through the AVX2
// single-vector path, which is bit-identical. Compiled with -mavx512f -mavx512bw -mavx512vl
// -mavx512dq -mavx2 -mf16c; used only when the CPU has them (CodecImplAvailable).
#include "kernels/tq_avx2_inl.h"

namespace cachesvc::kernels::tq {
namespace {

// Both halves of a zmm: A's register r and B's register r.
inline __m512 Pair(__m256 a, __m256 b) {
  return _mm512_insertf32x8(_mm512_castps256_ps512(a), b, 1);
}
inline __m512i Pair(__m256i a, __m256i b) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(a), b, 1);
}
inline __m256 Low(__m512 x) { return _mm512_castps512_ps256(x); }
inline __m256 High(__m512 x) { return _mm512_extractf32x8_ps(x, 1); }
inline __m256i Low(__m512i x) { return _mm512_castsi512_si256(x); }
inline __m256i High(__m512i x) { return _mm512_extracti64x4_epi64(x, 1); }

template <int R>
inline void Wht512(__m512* v, const __m512* m) {
  for (int r = 0; r < R; ++r) {
    __m512 x = v[r];
    x = _mm512_add_ps(_mm512_permute_ps(x, 0xb1), _mm512_xor_ps(x, m[0]));
    x = _mm512_add_ps(_mm512_permute_ps(x, 0x4e), _mm512_xor_ps(x, m[1]));
    // Swap the 128-bit quarters within each 256-bit half: [1, 0, 3, 2].
    x = _mm512_add_ps(_mm512_shuffle_f32x4(x, x, 0xb1), _mm512_xor_ps(x, m[2]));
    v[r] = x;
  }
  for (int step = 1; step < R; step <<= 1) {
    for (int r = 0; r < R; ++r) {
      if (r & step) continue;
      const __m512 a = v[r], b = v[r + step];
      v[r] = _mm512_add_ps(a, b);
      v[r + step] = _mm512_sub_ps(a, b);
    }
  }
}

template <int D, int kBits>
struct Avx512Codec {
  static constexpr int R = D / 8;
  static constexpr int kLevels = 1 << kBits;
  Avx2Codec<D, kBits> single;
  __m512 stage[3];
  __m512 signs[R];
  __m512 table;  // centroids; TQ3's eight repeated, so a 4-bit index of 0..7 finds them
  __m512 thresholds[kLevels - 1];

  Avx512Codec(const std::uint64_t* sign_words, const float* centroids, const float* thr)
      : single(sign_words, centroids, thr) {
    stage[0] = Pair(single.stage.h1, single.stage.h1);
    stage[1] = Pair(single.stage.h2, single.stage.h2);
    stage[2] = Pair(single.stage.h4, single.stage.h4);
    for (int r = 0; r < R; ++r) signs[r] = Pair(single.signs[r], single.signs[r]);
    table = Pair(single.table[0], kBits == 4 ? single.table[1] : single.table[0]);
    for (int k = 0; k < kLevels - 1; ++k) {
      thresholds[k] = _mm512_set1_ps(thr != nullptr ? thr[k] : 0.0f);
    }
  }

  // Encodes vectors i and i + 1; false (nothing written) when either is special.
  bool EncodePair(const EncodeArgs& a, std::uint64_t i, EncodeStats* stats) const {
    __m256 xa[R], xb[R];
    LoadVector<D>(a.in + i * D, a.type, xa);
    LoadVector<D>(a.in + (i + 1) * D, a.type, xb);
    const __m512i exp_mask = _mm512_set1_epi32(0x7f800000);
    __m512 x[R];
    __m512 acc = _mm512_setzero_ps();
    __mmask16 nonfinite = 0;
    for (int r = 0; r < R; ++r) {
      x[r] = Pair(xa[r], xb[r]);
      acc = _mm512_add_ps(acc, _mm512_mul_ps(x[r], x[r]));
      nonfinite |=
          _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(x[r]), exp_mask), exp_mask);
    }
    const float n2a = Reduce8(Low(acc)), n2b = Reduce8(High(acc));
    if (nonfinite != 0 || !IsFinite(n2a) || !IsFinite(n2b) || n2a == 0.0f || n2b == 0.0f) {
      return false;
    }
    for (int r = 0; r < R; ++r) x[r] = _mm512_xor_ps(x[r], signs[r]);
    Wht512<R>(x, stage);
    const float norm_a = Sqrt(n2a), norm_b = Sqrt(n2b);
    const __m512 inv = Pair(_mm256_set1_ps(Div(1.0f, norm_a)), _mm256_set1_ps(Div(1.0f, norm_b)));
    const __m512i one = _mm512_set1_epi32(1);
    __m512 dp = _mm512_setzero_ps(), ep = _mm512_setzero_ps();
    __m256i codes_a[R], codes_b[R];
    for (int r = 0; r < R; ++r) {
      const __m512 z = _mm512_mul_ps(x[r], inv);
      __m512i code = _mm512_setzero_si512();
      for (int k = 0; k < kLevels - 1; ++k) {
        code = _mm512_mask_add_epi32(code, _mm512_cmp_ps_mask(z, thresholds[k], _CMP_GT_OQ), code,
                                     one);
      }
      const __m512 c = _mm512_permutexvar_ps(code, table);
      dp = _mm512_add_ps(dp, _mm512_mul_ps(z, c));
      ep = _mm512_add_ps(ep, _mm512_mul_ps(c, c));
      codes_a[r] = Low(code);
      codes_b[r] = High(code);
    }
    const float alpha_a = Mul(norm_a, Div(Reduce8(Low(dp)), Reduce8(Low(ep))));
    const float alpha_b = Mul(norm_b, Div(Reduce8(High(dp)), Reduce8(High(ep))));
    a.norms[i] = NormField(alpha_a, norm_a);
    a.norms[i + 1] = NormField(alpha_b, norm_b);
    if (!IsFinite(Fp16ToFloat(a.norms[i]))) ++stats->nonfinite_vectors;
    if (!IsFinite(Fp16ToFloat(a.norms[i + 1]))) ++stats->nonfinite_vectors;
    Avx2Codec<D, kBits>::StoreCodes(codes_a, a.codes + i * kCodeBytes<D, kBits>);
    Avx2Codec<D, kBits>::StoreCodes(codes_b, a.codes + (i + 1) * kCodeBytes<D, kBits>);
    return true;
  }

  // Decodes vectors i and i + 1; false (nothing written) when either norm is not finite.
  bool DecodePair(const DecodeArgs& a, std::uint64_t i) const {
    const float alpha_a = Fp16ToFloat(a.norms[i]), alpha_b = Fp16ToFloat(a.norms[i + 1]);
    if (!IsFinite(alpha_a) || !IsFinite(alpha_b)) return false;
    const std::uint8_t* ca = a.codes + i * kCodeBytes<D, kBits>;
    const std::uint8_t* cb = a.codes + (i + 1) * kCodeBytes<D, kBits>;
    __m512 v[R];
    for (int r = 0; r < R; ++r) {
      v[r] = _mm512_permutexvar_ps(Pair(UnpackRegister<kBits>(ca, r), UnpackRegister<kBits>(cb, r)),
                                   table);
    }
    Wht512<R>(v, stage);
    const __m512 beta =
        Pair(_mm256_set1_ps(Mul(alpha_a, 1.0f / D)), _mm256_set1_ps(Mul(alpha_b, 1.0f / D)));
    std::uint16_t* out_a = a.out + i * D;
    std::uint16_t* out_b = a.out + (i + 1) * D;
    for (int r = 0; r < R; ++r) {
      const __m512 y = _mm512_xor_ps(_mm512_mul_ps(v[r], beta), signs[r]);
      Avx2Codec<D, kBits>::StoreOutput(a.type, Low(y), out_a + 8 * r);
      Avx2Codec<D, kBits>::StoreOutput(a.type, High(y), out_b + 8 * r);
    }
    return true;
  }
};

}  // namespace

void EncodeBlockAvx512(const EncodeArgs& a, EncodeStats* stats) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() {
    const Avx512Codec<D, kBits> codec(a.sign_words, a.centroids, a.thresholds);
    std::uint64_t i = 0;
    for (; i + 1 < a.num_vectors; i += 2) {
      if (!codec.EncodePair(a, i, stats)) {
        codec.single.EncodeOne(a, i, stats);
        codec.single.EncodeOne(a, i + 1, stats);
      }
    }
    if (i < a.num_vectors) codec.single.EncodeOne(a, i, stats);
  });
}

void DecodeBlockAvx512(const DecodeArgs& a) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() {
    const Avx512Codec<D, kBits> codec(a.sign_words, a.centroids, nullptr);
    std::uint64_t i = 0;
    for (; i + 1 < a.num_vectors; i += 2) {
      if (!codec.DecodePair(a, i)) {
        codec.single.DecodeOne(a, i);
        codec.single.DecodeOne(a, i + 1);
      }
    }
    if (i < a.num_vectors) codec.single.DecodeOne(a, i);
  });
}

}  // namespace cachesvc::kernels::tq
