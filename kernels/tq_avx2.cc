// AVX2 + F16C implementation of the TQ block codec (building blocks in tq_avx2_inl.h). Compiled
// with -mavx2 -mf16c and used only when the CPU has both (CodecImplAvailable). Produces the bytes
// of the scalar reference exactly.
#include "kernels/tq_avx2_inl.h"

namespace cachesvc::kernels::tq {

void EncodeBlockAvx2(const EncodeArgs& a, EncodeStats* stats) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() {
    const Avx2Codec<D, kBits> codec(a.sign_words, a.centroids, a.thresholds);
    for (std::uint64_t i = 0; i < a.num_vectors; ++i) codec.EncodeOne(a, i, stats);
  });
}

void DecodeBlockAvx2(const DecodeArgs& a) {
  DispatchShape(a.head_dim, a.bits, [&]<int D, int kBits>() {
    const Avx2Codec<D, kBits> codec(a.sign_words, a.centroids, nullptr);
    for (std::uint64_t i = 0; i < a.num_vectors; ++i) codec.DecodeOne(a, i);
  });
}

}  // namespace cachesvc::kernels::tq
