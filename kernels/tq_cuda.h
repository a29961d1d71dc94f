// kernels/tq_cuda.h: batched TQ3/TQ4 encode and decode of whole blocks on the GPU.
//
// Same bytes as the CPU codec (kernels/FORMAT.md): each thread runs the tq_math.h reference on one
// vector. Two ways to address the uncompressed side:
//   - contiguous: block b's payload is one buffer of num_vectors * head_dim values;
//   - paged: block b's payload is `slabs_per_block` slabs ([layer][part] of the canonical layout),
//     each `vectors_per_slab` contiguous vectors ([token][kv_head] x head_dim) somewhere in the
//     engine's paged KV cache, so an engine encodes from / decodes into its own pages with no
//     staging copy. slab_ptrs[b * slabs_per_block + s] points at slab s of block b.
// Pointer arrays are device arrays of device pointers; every pointer 16-byte aligned. Launches are
// asynchronous on `stream`; a launch error is returned at once, a bad block is reported in
// `block_status` (device array, one int per block, 0 = ok) once the stream reaches it. A decode
// whose block header is not the expected one writes NaN to that block's output and a non-zero
// status, never a reinterpretation.
//
// Only in builds with CUDA (CACHESVC_HAVE_CUDA); host-callable, thread-safe.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/tq_codec.h"

namespace cachesvc::kernels::cuda {

// block_status values.
inline constexpr int kBlockOk = 0;
inline constexpr int kBlockBadHeader = 1;  // decode: header differs from the expected one

struct BlockShape {
  CodecId codec;
  ValueType type;
  std::uint32_t head_dim;
  std::uint32_t num_vectors;  // per block
};

CodecStatus EncodeBlocks(const BlockShape& shape, std::uint64_t seed, const void* const* src_blocks,
                         void* const* dst_blocks, std::uint32_t num_blocks, cudaStream_t stream);

CodecStatus DecodeBlocks(const BlockShape& shape, std::uint64_t seed, const void* const* src_blocks,
                         void* const* dst_blocks, std::uint32_t num_blocks, int* block_status,
                         cudaStream_t stream);

struct PagedLayout {
  std::uint32_t slabs_per_block;   // layers * parts
  std::uint32_t vectors_per_slab;  // block_tokens * kv_heads; slabs * vectors = num_vectors
};

CodecStatus EncodePagedBlocks(const BlockShape& shape, std::uint64_t seed, const PagedLayout& paged,
                              const void* const* slab_ptrs, void* const* dst_blocks,
                              std::uint32_t num_blocks, cudaStream_t stream);

CodecStatus DecodePagedBlocks(const BlockShape& shape, std::uint64_t seed, const PagedLayout& paged,
                              const void* const* src_blocks, void* const* slab_ptrs,
                              std::uint32_t num_blocks, int* block_status, cudaStream_t stream);

}  // namespace cachesvc::kernels::cuda
