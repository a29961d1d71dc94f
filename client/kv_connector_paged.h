// client/kv_connector_paged.h: an engine's paged KV cache as the connector sees it, and the
// gather/scatter between its pages and the canonical block payload of DESIGN.md
// ([layer][part][token][kv_head][head_dim], part = K, V; MLA: the latent only).
//
// A paged cache is described by pointers and byte strides, so one description fits the layouts
// engines use:
//   - vLLM (flash-attn): per layer a K tensor and a V tensor, each [block][token][head][dim]:
//     k_pages[b] / v_pages[b] point at page b, PageStrides::TokenMajor.
//   - head-major pages [block][head][token][dim]: PageStrides::HeadMajor.
//   - K and V in one page [block][2][token][head][dim] (FlashInfer's NHD): k_pages only,
//     v_pages empty, PageStrides::SharedKvTokenMajor (part_bytes = offset of V from K).
// Inside one page, the (token, head) vector of head_dim values starts at
//   part * part_bytes + token * token_bytes + head * head_bytes
// and its head_dim values are contiguous. Other layouts need only other strides.
//
// Ownership: the engine owns the pages; the description holds raw pointers, which must stay valid
// (and the cache must not be reallocated) while a connector uses the description.
// ValidatePagedKv checks everything a description can get wrong (layer count, dtype, null or
// misaligned pointers, strides that overlap or overrun a page) and says which value is wrong;
// the gather/scatter functions assume a validated description and an in-range block id.
//
// Pure functions on caller-owned memory; thread-safe as long as callers do not write the same
// pages concurrently.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"
#include "proto/layout.h"

namespace cachesvc::client {

// Where the pages live. kCuda needs a build with CUDA (CACHESVC_HAVE_CUDA) and pointers into
// device memory of `PagedKvCache::cuda_device`.
enum class KvMemory : std::uint8_t { kCpu = 0, kCuda = 1 };

struct PageStrides {
  std::int64_t token_bytes = 0;  // from token t to t + 1 (same head, same part)
  std::int64_t head_bytes = 0;   // from kv head h to h + 1 (same token, same part)
  std::int64_t part_bytes = 0;   // from K to V inside one shared page; 0 when K and V are separate
  std::uint64_t page_bytes = 0;  // size of one page; every vector the strides address must fit

  // [token][head][dim] per K and per V page (vLLM).
  static PageStrides TokenMajor(const ModelLayout& layout);
  // [head][token][dim] per K and per V page.
  static PageStrides HeadMajor(const ModelLayout& layout);
  // [2][token][head][dim]: K and V in one page (use k_pages only).
  static PageStrides SharedKvTokenMajor(const ModelLayout& layout);
};

struct PagedKvLayer {
  std::vector<void*> k_pages;  // k_pages[block_id]: page of K (MLA: the latent) for that block
  std::vector<void*> v_pages;  // the same for V; empty when K and V share pages, and for MLA
};

struct PagedKvCache {
  KvMemory memory = KvMemory::kCpu;
  int cuda_device = 0;         // kCuda only
  Dtype dtype = Dtype::kFp16;  // the pages' element type; must equal the layout's
  PageStrides strides;
  std::vector<PagedKvLayer> layers;  // one per model layer

  // Pages per layer (every layer and part has the same count once validated).
  [[nodiscard]] std::size_t num_blocks() const {
    return layers.empty() ? 0 : layers.front().k_pages.size();
  }
};

// OK, or INVALID_ARGUMENT naming the first thing that does not fit `layout`; FAILED_PRECONDITION
// for kCuda in a build without CUDA (or pointers that are not device memory there).
[[nodiscard]] absl::Status ValidatePagedKv(const ModelLayout& layout, const PagedKvCache& cache);

// Bytes of one layer of one block in the canonical payload: parts * tokens * heads * head_dim *
// dtype size. A block's payload is num_layers of these, layer after layer.
[[nodiscard]] std::size_t CanonicalLayerBytes(const ModelLayout& layout);

// CPU pages only. Copies layer `layer` of page `block_id` into / out of `canonical_layer`
// (exactly CanonicalLayerBytes).
void GatherLayerCpu(const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
                    std::uint32_t block_id, std::span<std::byte> canonical_layer);
void ScatterLayerCpu(const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
                     std::uint32_t block_id, std::span<const std::byte> canonical_layer);

// The same for device pages (kCuda): host canonical bytes to or from device pages, with
// cudaMemcpy2D per (part, [head]) and a synchronize before returning. UNIMPLEMENTED in builds
// without CUDA; INTERNAL with the CUDA error otherwise.
[[nodiscard]] absl::Status GatherLayerCuda(const ModelLayout& layout, const PagedKvCache& cache,
                                           std::uint32_t layer,
                                           std::span<const std::uint32_t> block_ids,
                                           std::span<const std::span<std::byte>> canonical_layers);
[[nodiscard]] absl::Status ScatterLayerCuda(
    const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
    std::span<const std::uint32_t> block_ids,
    std::span<const std::span<const std::byte>> canonical_layers);

// Whether pages are laid out so that each (layer, part) page holds its block's canonical slab
// ([token][head][dim], contiguous): then the GPU codec decodes straight into the pages.
[[nodiscard]] bool PagesAreCanonicalSlabs(const ModelLayout& layout, const PagedKvCache& cache);

// Device pages that are canonical slabs only: decodes TQ3/TQ4 blocks `encoded[i]` (host memory,
// already checked: checksum and header) on the GPU with kernels/tq_cuda.h DecodePagedBlocks
// straight into page block_ids[i] of every layer. All blocks must carry sign seed `seed`.
// Returns how many leading blocks decoded cleanly (a block the kernel refuses has NaN in its
// pages and must be reported as not loaded). UNIMPLEMENTED without CUDA.
[[nodiscard]] absl::StatusOr<std::size_t> DecodeIntoPagesCuda(
    const ModelLayout& layout, const PagedKvCache& cache, kernels::CodecId codec,
    std::uint64_t seed, std::span<const std::span<const std::byte>> encoded,
    std::span<const std::uint32_t> block_ids);

}  // namespace cachesvc::client
