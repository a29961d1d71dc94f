// The scalar reference: tq_math.h applied to each vector of a block. This file defines the format
// in executable form; everything else is checked against it.
#include "kernels/tq_format.h"
#include "kernels/tq_math.h"
#include "kernels/tq_tables.h"

namespace cachesvc::kernels::tq {
namespace {

template <int D, int kBits>
void EncodeBlock(const EncodeArgs& a, EncodeStats* stats) {
  float x[D];
  for (std::uint64_t i = 0; i < a.num_vectors; ++i) {
    const std::uint16_t* in = a.in + i * D;
    for (int j = 0; j < D; ++j) {
      x[j] = a.type == ValueType::kFp16 ? Fp16ToFloat(in[j]) : Bf16ToFloat(in[j]);
    }
    const VectorOutcome outcome =
        EncodeVector<D, kBits>(x, a.sign_words, a.centroids, a.thresholds, &a.norms[i],
                               a.codes + i * kCodeBytes<D, kBits>);
    if (stats != nullptr && outcome == VectorOutcome::kZero) ++stats->zero_vectors;
    if (stats != nullptr && outcome == VectorOutcome::kNonFinite) ++stats->nonfinite_vectors;
  }
}

template <int D, int kBits>
void DecodeBlock(const DecodeArgs& a) {
  float y[D];
  for (std::uint64_t i = 0; i < a.num_vectors; ++i) {
    std::uint16_t* out = a.out + i * D;
    const bool finite = DecodeVector<D, kBits>(a.norms[i], a.codes + i * kCodeBytes<D, kBits>,
                                               a.sign_words, a.centroids, y);
    for (int j = 0; j < D; ++j) {
      if (a.type == ValueType::kFp16) {
        out[j] = finite ? ToFp16Saturated(y[j]) : kFp16CanonicalNan;
      } else {
        out[j] = finite ? FloatToBf16(y[j]) : kBf16CanonicalNan;
      }
    }
  }
}

}  // namespace

void EncodeBlockScalar(const EncodeArgs& a, EncodeStats* stats) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() { EncodeBlock<D, kBits>(a, stats); });
}

void DecodeBlockScalar(const DecodeArgs& a) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() { DecodeBlock<D, kBits>(a); });
}

const float* Centroids(int head_dim, int bits) {
  switch (head_dim * 10 + bits) {
    case 643:
      return kCentroidsD64B3;
    case 644:
      return kCentroidsD64B4;
    case 1283:
      return kCentroidsD128B3;
    case 1284:
      return kCentroidsD128B4;
    case 2563:
      return kCentroidsD256B3;
    case 2564:
      return kCentroidsD256B4;
    default:
      return nullptr;
  }
}

const float* Thresholds(int head_dim, int bits) {
  switch (head_dim * 10 + bits) {
    case 643:
      return kThresholdsD64B3;
    case 644:
      return kThresholdsD64B4;
    case 1283:
      return kThresholdsD128B3;
    case 1284:
      return kThresholdsD128B4;
    case 2563:
      return kThresholdsD256B3;
    case 2564:
      return kThresholdsD256B4;
    default:
      return nullptr;
  }
}

}  // namespace cachesvc::kernels::tq
