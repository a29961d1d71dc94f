// CUDA kernels of the TQ codec: one thread per vector running the tq_math.h reference, so the
// bytes equal the CPU's by construction. Tables, signs and the expected header travel in the
// kernel parameters and are staged in shared memory.
#include <cuda_runtime_api.h>

#include <cstring>
#include <string>

#include "kernels/tq_cuda.h"
#include "kernels/tq_format.h"
#include "kernels/tq_math.h"

namespace cachesvc::kernels::cuda {
namespace {

// Everything a launch needs besides pointers, passed by value.
struct Params {
  float centroids[16];
  float thresholds[15];
  std::uint64_t sign_words[tq::kMaxHeadDim / 64];
  std::uint32_t header[8];  // the 32 header bytes every block has (encode) or must have (decode)
  std::uint32_t num_vectors;
  std::uint32_t codes_offset;
  ValueType type;
  std::uint32_t slabs_per_block;
  std::uint32_t vectors_per_slab;
};

// Where vector i of block b lives on the uncompressed side.
struct Contiguous {
  template <int D>
  __device__ static std::uint16_t* At(void* const* ptrs, const Params& p, std::uint64_t b,
                                      std::uint32_t i) {
    (void)p;
    return static_cast<std::uint16_t*>(ptrs[b]) + static_cast<std::uint64_t>(i) * D;
  }
};
struct Paged {
  template <int D>
  __device__ static std::uint16_t* At(void* const* ptrs, const Params& p, std::uint64_t b,
                                      std::uint32_t i) {
    const std::uint32_t slab = i / p.vectors_per_slab, row = i % p.vectors_per_slab;
    return static_cast<std::uint16_t*>(ptrs[b * p.slabs_per_block + slab]) +
           static_cast<std::uint64_t>(row) * D;
  }
};

__device__ void StageParams(const Params& p, float* cent, float* thr, std::uint64_t* signs) {
  for (int k = threadIdx.x; k < 16; k += blockDim.x) cent[k] = p.centroids[k];
  for (int k = threadIdx.x; k < 15; k += blockDim.x) thr[k] = p.thresholds[k];
  for (int k = threadIdx.x; k < tq::kMaxHeadDim / 64; k += blockDim.x) signs[k] = p.sign_words[k];
  __syncthreads();
}

template <int D, int kBits, typename Src>
__global__ void EncodeKernel(Params p, const void* const* src, void* const* dst,
                             std::uint64_t total) {
  __shared__ float cent[16], thr[15];
  __shared__ std::uint64_t signs[tq::kMaxHeadDim / 64];
  StageParams(p, cent, thr, signs);
  for (std::uint64_t g = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
       g < total; g += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t b = g / p.num_vectors;
    const auto i = static_cast<std::uint32_t>(g % p.num_vectors);
    auto* out = static_cast<std::uint8_t*>(dst[b]);
    if (i == 0) {
      auto* h = reinterpret_cast<std::uint32_t*>(out);
      for (int k = 0; k < 8; ++k) h[k] = p.header[k];
      for (std::uint32_t k = tq::kHeaderBytes + 2 * p.num_vectors; k < p.codes_offset; ++k)
        out[k] = 0;
    }
    const std::uint16_t* in = Src::template At<D>(const_cast<void* const*>(src), p, b, i);
    float x[D];
    for (int j = 0; j < D; ++j) {
      x[j] = p.type == ValueType::kFp16 ? tq::Fp16ToFloat(in[j]) : tq::Bf16ToFloat(in[j]);
    }
    auto* norms = reinterpret_cast<std::uint16_t*>(out + tq::kHeaderBytes);
    tq::EncodeVector<D, kBits>(
        x, signs, cent, thr, &norms[i],
        out + p.codes_offset + static_cast<std::uint64_t>(i) * tq::kCodeBytes<D, kBits>);
  }
}

template <int D, int kBits, typename Dst>
__global__ void DecodeKernel(Params p, const void* const* src, void* const* dst,
                             std::uint64_t total, int* status) {
  __shared__ float cent[16], thr[15];
  __shared__ std::uint64_t signs[tq::kMaxHeadDim / 64];
  StageParams(p, cent, thr, signs);
  for (std::uint64_t g = blockIdx.x * static_cast<std::uint64_t>(blockDim.x) + threadIdx.x;
       g < total; g += static_cast<std::uint64_t>(gridDim.x) * blockDim.x) {
    const std::uint64_t b = g / p.num_vectors;
    const auto i = static_cast<std::uint32_t>(g % p.num_vectors);
    const auto* in = static_cast<const std::uint8_t*>(src[b]);
    const auto* h = reinterpret_cast<const std::uint32_t*>(in);
    bool header_ok = true;
    for (int k = 0; k < 8; ++k) header_ok = header_ok && h[k] == p.header[k];
    if (!header_ok && i == 0) status[b] = kBlockBadHeader;
    if (header_ok && i == 0) status[b] = kBlockOk;
    std::uint16_t* out = Dst::template At<D>(dst, p, b, i);
    const auto* norms = reinterpret_cast<const std::uint16_t*>(in + tq::kHeaderBytes);
    float y[D];
    const bool finite =
        header_ok &&
        tq::DecodeVector<D, kBits>(
            norms[i],
            in + p.codes_offset + static_cast<std::uint64_t>(i) * tq::kCodeBytes<D, kBits>, signs,
            cent, y);
    for (int j = 0; j < D; ++j) {
      if (p.type == ValueType::kFp16) {
        out[j] = finite ? tq::ToFp16Saturated(y[j]) : tq::kFp16CanonicalNan;
      } else {
        out[j] = finite ? tq::FloatToBf16(y[j]) : tq::kBf16CanonicalNan;
      }
    }
  }
}

CodecStatus Error(CodecCode code, std::string message) { return {code, std::move(message)}; }

CodecStatus MakeParams(const BlockShape& s, std::uint64_t seed, Params* p) {
  const int bits = s.codec == CodecId::kTq3 ? 3 : (s.codec == CodecId::kTq4 ? 4 : 0);
  if (bits == 0) return Error(CodecCode::kInvalidArgument, "CUDA codec handles TQ3 and TQ4 only");
  if (!SupportedHeadDim(s.head_dim)) {
    return Error(CodecCode::kInvalidArgument, "unsupported head_dim " + std::to_string(s.head_dim));
  }
  if (s.type != ValueType::kFp16 && s.type != ValueType::kBf16) {
    return Error(CodecCode::kInvalidArgument, "unsupported value type");
  }
  if (s.num_vectors == 0) return Error(CodecCode::kInvalidArgument, "a block needs vectors");
  std::memset(p, 0, sizeof(*p));
  const int d = static_cast<int>(s.head_dim);
  std::memcpy(p->centroids, tq::Centroids(d, bits), sizeof(float) << bits);
  std::memcpy(p->thresholds, tq::Thresholds(d, bits), sizeof(float) * ((1 << bits) - 1));
  tq::SignWords(seed, d, p->sign_words);
  BlockHeader h{tq::kFormatVersion, s.codec, s.type, s.head_dim, seed, s.num_vectors};
  tq::WriteHeader(h, reinterpret_cast<std::uint8_t*>(p->header));
  p->num_vectors = s.num_vectors;
  p->codes_offset = static_cast<std::uint32_t>(tq::CodesOffset(s.num_vectors));
  p->type = s.type;
  return {};
}

CodecStatus LaunchResult(cudaError_t err) {
  if (err == cudaSuccess) return {};
  return Error(CodecCode::kUnimplemented,
               std::string("CUDA launch failed: ") + cudaGetErrorString(err));
}

constexpr int kThreads = 128;

dim3 Grid(std::uint64_t total) {
  const std::uint64_t blocks = (total + kThreads - 1) / kThreads;
  return dim3(static_cast<unsigned>(blocks < 65535u * 8 ? blocks : 65535u * 8));
}

template <typename Src>
CodecStatus LaunchEncode(const BlockShape& s, const Params& p, const void* const* src,
                         void* const* dst, std::uint32_t num_blocks, cudaStream_t stream) {
  const std::uint64_t total = static_cast<std::uint64_t>(num_blocks) * s.num_vectors;
  if (total == 0) return {};
  tq::DispatchShape(
      static_cast<int>(s.head_dim), s.codec == CodecId::kTq3 ? 3 : 4, [&]<int D, int kBits>() {
        EncodeKernel<D, kBits, Src><<<Grid(total), kThreads, 0, stream>>>(p, src, dst, total);
      });
  return LaunchResult(cudaGetLastError());
}

template <typename Dst>
CodecStatus LaunchDecode(const BlockShape& s, const Params& p, const void* const* src,
                         void* const* dst, std::uint32_t num_blocks, int* status,
                         cudaStream_t stream) {
  const std::uint64_t total = static_cast<std::uint64_t>(num_blocks) * s.num_vectors;
  if (total == 0) return {};
  tq::DispatchShape(static_cast<int>(s.head_dim), s.codec == CodecId::kTq3 ? 3 : 4,
                    [&]<int D, int kBits>() {
                      DecodeKernel<D, kBits, Dst>
                          <<<Grid(total), kThreads, 0, stream>>>(p, src, dst, total, status);
                    });
  return LaunchResult(cudaGetLastError());
}

CodecStatus CheckPaged(const BlockShape& s, const PagedLayout& paged) {
  if (paged.slabs_per_block == 0 || paged.vectors_per_slab == 0 ||
      static_cast<std::uint64_t>(paged.slabs_per_block) * paged.vectors_per_slab != s.num_vectors) {
    return Error(CodecCode::kInvalidArgument,
                 "slabs_per_block * vectors_per_slab must equal num_vectors");
  }
  return {};
}

}  // namespace

CodecStatus EncodeBlocks(const BlockShape& shape, std::uint64_t seed, const void* const* src_blocks,
                         void* const* dst_blocks, std::uint32_t num_blocks, cudaStream_t stream) {
  Params p;
  if (CodecStatus s = MakeParams(shape, seed, &p); !s.ok()) return s;
  return LaunchEncode<Contiguous>(shape, p, src_blocks, dst_blocks, num_blocks, stream);
}

CodecStatus DecodeBlocks(const BlockShape& shape, std::uint64_t seed, const void* const* src_blocks,
                         void* const* dst_blocks, std::uint32_t num_blocks, int* block_status,
                         cudaStream_t stream) {
  Params p;
  if (CodecStatus s = MakeParams(shape, seed, &p); !s.ok()) return s;
  return LaunchDecode<Contiguous>(shape, p, src_blocks, dst_blocks, num_blocks, block_status,
                                  stream);
}

CodecStatus EncodePagedBlocks(const BlockShape& shape, std::uint64_t seed, const PagedLayout& paged,
                              const void* const* slab_ptrs, void* const* dst_blocks,
                              std::uint32_t num_blocks, cudaStream_t stream) {
  Params p;
  if (CodecStatus s = MakeParams(shape, seed, &p); !s.ok()) return s;
  if (CodecStatus s = CheckPaged(shape, paged); !s.ok()) return s;
  p.slabs_per_block = paged.slabs_per_block;
  p.vectors_per_slab = paged.vectors_per_slab;
  return LaunchEncode<Paged>(shape, p, slab_ptrs, dst_blocks, num_blocks, stream);
}

CodecStatus DecodePagedBlocks(const BlockShape& shape, std::uint64_t seed, const PagedLayout& paged,
                              const void* const* src_blocks, void* const* slab_ptrs,
                              std::uint32_t num_blocks, int* block_status, cudaStream_t stream) {
  Params p;
  if (CodecStatus s = MakeParams(shape, seed, &p); !s.ok()) return s;
  if (CodecStatus s = CheckPaged(shape, paged); !s.ok()) return s;
  p.slabs_per_block = paged.slabs_per_block;
  p.vectors_per_slab = paged.vectors_per_slab;
  return LaunchDecode<Paged>(shape, p, src_blocks, slab_ptrs, num_blocks, block_status, stream);
}

}  // namespace cachesvc::kernels::cuda
