// kernels/tq_format.h: internal. The byte layout of an encoded TQ block (kernels/FORMAT.md) and
// the argument bundles the scalar, SIMD and CUDA implementations share. Not for use outside
// kernels/; the public API is tq_codec.h.
#pragma once

#include <cstddef>
#include <cstdint>

#include "kernels/tq_codec.h"

namespace cachesvc::kernels::tq {

inline constexpr std::uint8_t kMagic[4] = {'C', 'S', 'T', 'Q'};
inline constexpr std::uint8_t kFormatVersion = 1;
inline constexpr std::size_t kHeaderBytes = 32;
inline constexpr int kMaxHeadDim = 256;

// Offsets inside an encoded block of n vectors.
inline constexpr std::size_t NormsOffset() { return kHeaderBytes; }
inline constexpr std::size_t CodesOffset(std::uint64_t n) {
  return kHeaderBytes + ((2 * n + 15) / 16) * 16;  // norms padded to 16 bytes
}
inline constexpr std::size_t CodeBytesPerVector(int head_dim, int bits) {
  return static_cast<std::size_t>(head_dim) * bits / 8;
}

// FNV-1a 32 over the first 28 header bytes; stored in bytes 28..31.
std::uint32_t HeaderCheck(const std::uint8_t* header);
void WriteHeader(const BlockHeader& h, std::uint8_t* out);

// The frozen tables of tq_tables.h for (head_dim, bits); nullptr when unsupported.
const float* Centroids(int head_dim, int bits);
const float* Thresholds(int head_dim, int bits);

// One block's work, in the form every implementation takes.
struct EncodeArgs {
  int head_dim;
  int bits;
  ValueType type;
  std::uint64_t num_vectors;
  const std::uint64_t* sign_words;  // head_dim / 64 words
  const float* centroids;
  const float* thresholds;
  const std::uint16_t* in;  // num_vectors * head_dim elements
  std::uint16_t* norms;     // num_vectors
  std::uint8_t* codes;      // num_vectors * CodeBytesPerVector
};
struct DecodeArgs {
  int head_dim;
  int bits;
  ValueType type;
  std::uint64_t num_vectors;
  const std::uint64_t* sign_words;
  const float* centroids;
  const std::uint16_t* norms;
  const std::uint8_t* codes;
  std::uint16_t* out;
};

// The one place runtime (head_dim, bits) become template constants: calls
// fn.template operator()<D, kBits>() for the supported pairs. Callers validate first.
template <typename Fn>
void DispatchShape(int head_dim, int bits, Fn&& fn) {
  switch (head_dim * 10 + bits) {
    case 643:
      return fn.template operator()<64, 3>();
    case 644:
      return fn.template operator()<64, 4>();
    case 1283:
      return fn.template operator()<128, 3>();
    case 1284:
      return fn.template operator()<128, 4>();
    case 2563:
      return fn.template operator()<256, 3>();
    case 2564:
      return fn.template operator()<256, 4>();
    default:
      return;
  }
}

void EncodeBlockScalar(const EncodeArgs& a, EncodeStats* stats);
void DecodeBlockScalar(const DecodeArgs& a);
// Defined only when the build has them (CodecImplAvailable tells whether the CPU has them).
void EncodeBlockAvx2(const EncodeArgs& a, EncodeStats* stats);
void DecodeBlockAvx2(const DecodeArgs& a);
void EncodeBlockAvx512(const EncodeArgs& a, EncodeStats* stats);
void DecodeBlockAvx512(const DecodeArgs& a);

}  // namespace cachesvc::kernels::tq
