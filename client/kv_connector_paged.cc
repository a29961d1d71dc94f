#include "client/kv_connector_paged.h"

#include <algorithm>
#include <array>
#include <cstring>

#include "fmt/format.h"

#ifdef CACHESVC_HAVE_CUDA
#include <cuda_runtime_api.h>

#include "kernels/tq_cuda.h"
#endif

namespace cachesvc::client {
namespace {

std::size_t VectorBytes(const ModelLayout& layout) {
  return std::size_t{layout.head_dim} * DtypeBytes(layout.dtype);
}

// Whether K and V live in one page (offset part_bytes apart).
bool SharedPages(const ModelLayout& layout, const PagedKvCache& cache) {
  return layout.PartsPerLayer() == 2 && !cache.layers.empty() &&
         cache.layers.front().v_pages.empty();
}

// Base of the page holding `part` of `layer` for `block_id`, the part offset included.
std::byte* PartBase(const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
                    std::uint32_t part, std::uint32_t block_id) {
  const PagedKvLayer& l = cache.layers[layer];
  if (part == 0) return static_cast<std::byte*>(l.k_pages[block_id]);
  if (SharedPages(layout, cache)) {
    return static_cast<std::byte*>(l.k_pages[block_id]) + cache.strides.part_bytes;
  }
  return static_cast<std::byte*>(l.v_pages[block_id]);
}

[[nodiscard]] absl::Status CheckPointers(const std::vector<void*>& pages, std::size_t align,
                                         std::uint32_t layer, const char* which) {
  for (std::size_t b = 0; b < pages.size(); ++b) {
    const auto addr = reinterpret_cast<std::uintptr_t>(pages[b]);
    if (addr == 0) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: layer {} {}_pages[{}] is null", layer, which, b));
    }
    if (addr % align != 0) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: layer {} {}_pages[{}] = {:#x} is not aligned to {} bytes", layer,
                      which, b, addr, align));
    }
  }
  return absl::OkStatus();
}

}  // namespace

PageStrides PageStrides::TokenMajor(const ModelLayout& layout) {
  const auto vec = static_cast<std::int64_t>(VectorBytes(layout));
  PageStrides s;
  s.head_bytes = vec;
  s.token_bytes = vec * layout.num_kv_heads;
  s.page_bytes = static_cast<std::uint64_t>(s.token_bytes) * layout.block_tokens;
  return s;
}

PageStrides PageStrides::HeadMajor(const ModelLayout& layout) {
  const auto vec = static_cast<std::int64_t>(VectorBytes(layout));
  PageStrides s;
  s.token_bytes = vec;
  s.head_bytes = vec * layout.block_tokens;
  s.page_bytes = static_cast<std::uint64_t>(s.head_bytes) * layout.num_kv_heads;
  return s;
}

PageStrides PageStrides::SharedKvTokenMajor(const ModelLayout& layout) {
  PageStrides s = TokenMajor(layout);
  s.part_bytes = static_cast<std::int64_t>(s.page_bytes);
  s.page_bytes *= 2;
  return s;
}

std::size_t CanonicalLayerBytes(const ModelLayout& layout) {
  return std::size_t{layout.PartsPerLayer()} * layout.block_tokens * layout.num_kv_heads *
         VectorBytes(layout);
}

absl::Status ValidatePagedKv(const ModelLayout& layout, const PagedKvCache& cache) {
  if (absl::Status st = layout.Validate(); !st.ok()) return st;
  if (cache.dtype != layout.dtype) {
    return absl::InvalidArgumentError(fmt::format("paged KV: pages hold {} but the layout is {}",
                                                  std::string(DtypeName(cache.dtype)),
                                                  std::string(DtypeName(layout.dtype))));
  }
  if (cache.layers.size() != layout.num_layers) {
    return absl::InvalidArgumentError(fmt::format("paged KV: {} layers of pages, the layout has {}",
                                                  cache.layers.size(), layout.num_layers));
  }
  const std::size_t num_blocks = cache.num_blocks();
  if (num_blocks == 0) return absl::InvalidArgumentError("paged KV: no pages");
  const bool mla = layout.PartsPerLayer() == 1;
  const bool shared = SharedPages(layout, cache);
  const std::size_t elem = DtypeBytes(layout.dtype);
  for (std::uint32_t l = 0; l < cache.layers.size(); ++l) {
    const PagedKvLayer& layer = cache.layers[l];
    if (layer.k_pages.size() != num_blocks) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: layer {} has {} K pages, layer 0 has {}", l, layer.k_pages.size(),
                      num_blocks));
    }
    if (mla && !layer.v_pages.empty()) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: layer {} has V pages but the layout is MLA (latent only)", l));
    }
    if (!mla && !shared && layer.v_pages.size() != num_blocks) {
      return absl::InvalidArgumentError(fmt::format(
          "paged KV: layer {} has {} V pages and {} K pages", l, layer.v_pages.size(), num_blocks));
    }
    if (!mla && shared && !layer.v_pages.empty()) {
      return absl::InvalidArgumentError(fmt::format(
          "paged KV: layer 0 shares K and V pages (no V pages) but layer {} has V pages", l));
    }
    if (absl::Status st = CheckPointers(layer.k_pages, elem, l, "k"); !st.ok()) return st;
    if (absl::Status st = CheckPointers(layer.v_pages, elem, l, "v"); !st.ok()) return st;
  }

  // Strides: every (part, token, head) vector inside the page, no two overlapping. Sufficient
  // check: sorted by stride, each dimension steps over the whole extent of the smaller ones.
  const PageStrides& s = cache.strides;
  if (!shared && s.part_bytes != 0) {
    return absl::InvalidArgumentError(
        fmt::format("paged KV: part_bytes is {} but K and V are not in shared pages (must be 0)",
                    s.part_bytes));
  }
  struct Dim {
    const char* name;
    std::int64_t stride;
    std::int64_t count;
  };
  std::vector<Dim> dims = {{"token_bytes", s.token_bytes, layout.block_tokens},
                           {"head_bytes", s.head_bytes, layout.num_kv_heads}};
  if (shared) dims.push_back({"part_bytes", s.part_bytes, 2});
  const auto vec = static_cast<std::int64_t>(VectorBytes(layout));
  std::int64_t extent = vec;  // bytes spanned by the dimensions checked so far
  std::erase_if(dims, [](const Dim& d) { return d.count == 1; });
  for (const Dim& d : dims) {
    if (d.stride <= 0 || d.stride % static_cast<std::int64_t>(elem) != 0) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: {} = {} must be a positive multiple of the element size {}",
                      d.name, d.stride, elem));
    }
  }
  std::sort(dims.begin(), dims.end(),
            [](const Dim& a, const Dim& b) { return a.stride < b.stride; });
  for (const Dim& d : dims) {
    if (d.stride < extent) {
      return absl::InvalidArgumentError(
          fmt::format("paged KV: {} = {} makes vectors overlap (it must be at least {})", d.name,
                      d.stride, extent));
    }
    extent = d.stride * (d.count - 1) + extent;
  }
  if (static_cast<std::uint64_t>(extent) > s.page_bytes) {
    return absl::InvalidArgumentError(fmt::format(
        "paged KV: the strides address {} bytes of each page but page_bytes is {} (layout: {} "
        "tokens x {} heads x head_dim {} of {})",
        extent, s.page_bytes, layout.block_tokens, layout.num_kv_heads, layout.head_dim,
        std::string(DtypeName(layout.dtype))));
  }

  if (cache.memory == KvMemory::kCuda) {
#ifdef CACHESVC_HAVE_CUDA
    for (std::uint32_t l = 0; l < cache.layers.size(); ++l) {
      for (const auto* pages : {&cache.layers[l].k_pages, &cache.layers[l].v_pages}) {
        if (pages->empty()) continue;
        cudaPointerAttributes attr{};
        if (cudaPointerGetAttributes(&attr, pages->front()) != cudaSuccess ||
            attr.type != cudaMemoryTypeDevice || attr.device != cache.cuda_device) {
          (void)cudaGetLastError();
          return absl::InvalidArgumentError(fmt::format(
              "paged KV: layer {} pages are not device memory of GPU {}", l, cache.cuda_device));
        }
      }
    }
#else
    return absl::FailedPreconditionError(
        "paged KV: pages in GPU memory, but this connector was built without CUDA");
#endif
  } else if (cache.memory != KvMemory::kCpu) {
    return absl::InvalidArgumentError(
        fmt::format("paged KV: unknown memory kind {}", static_cast<int>(cache.memory)));
  }
  return absl::OkStatus();
}

void GatherLayerCpu(const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
                    std::uint32_t block_id, std::span<std::byte> canonical_layer) {
  const std::size_t vec = VectorBytes(layout);
  const PageStrides& s = cache.strides;
  std::byte* out = canonical_layer.data();
  for (std::uint32_t p = 0; p < layout.PartsPerLayer(); ++p) {
    const std::byte* base = PartBase(layout, cache, layer, p, block_id);
    for (std::uint32_t t = 0; t < layout.block_tokens; ++t) {
      for (std::uint32_t h = 0; h < layout.num_kv_heads; ++h) {
        std::memcpy(out, base + t * s.token_bytes + h * s.head_bytes, vec);
        out += vec;
      }
    }
  }
}

void ScatterLayerCpu(const ModelLayout& layout, const PagedKvCache& cache, std::uint32_t layer,
                     std::uint32_t block_id, std::span<const std::byte> canonical_layer) {
  const std::size_t vec = VectorBytes(layout);
  const PageStrides& s = cache.strides;
  const std::byte* in = canonical_layer.data();
  for (std::uint32_t p = 0; p < layout.PartsPerLayer(); ++p) {
    std::byte* base = PartBase(layout, cache, layer, p, block_id);
    for (std::uint32_t t = 0; t < layout.block_tokens; ++t) {
      for (std::uint32_t h = 0; h < layout.num_kv_heads; ++h) {
        std::memcpy(base + t * s.token_bytes + h * s.head_bytes, in, vec);
        in += vec;
      }
    }
  }
}

bool PagesAreCanonicalSlabs(const ModelLayout& layout, const PagedKvCache& cache) {
  const auto vec = static_cast<std::int64_t>(VectorBytes(layout));
  return cache.strides.head_bytes == vec &&
         cache.strides.token_bytes == vec * static_cast<std::int64_t>(layout.num_kv_heads);
}

#ifdef CACHESVC_HAVE_CUDA
namespace {

[[nodiscard]] absl::Status CudaError(cudaError_t err, const char* what) {
  return absl::InternalError(fmt::format("paged KV: {}: {}", what, cudaGetErrorString(err)));
}

// One layer of one block between host canonical bytes and device pages. `to_device` chooses the
// direction. Token-major pages (head_bytes = vector) take one 2-D copy per part; others one per
// (part, head).
[[nodiscard]] absl::Status CopyLayerCuda(const ModelLayout& layout, const PagedKvCache& cache,
                                         std::uint32_t layer, std::uint32_t block_id,
                                         std::byte* host, bool to_device, cudaStream_t stream) {
  const std::size_t vec = VectorBytes(layout);
  const PageStrides& s = cache.strides;
  const std::size_t heads = layout.num_kv_heads;
  const std::size_t tokens = layout.block_tokens;
  const bool token_major = s.head_bytes == static_cast<std::int64_t>(vec);
  for (std::uint32_t p = 0; p < layout.PartsPerLayer(); ++p) {
    std::byte* dev = PartBase(layout, cache, layer, p, block_id);
    std::byte* part_host = host + p * tokens * heads * vec;
    const std::size_t runs = token_major ? 1 : heads;
    const std::size_t width = token_major ? heads * vec : vec;
    for (std::size_t h = 0; h < runs; ++h) {
      std::byte* d = dev + h * static_cast<std::size_t>(s.head_bytes);
      std::byte* hp = part_host + h * vec;
      const cudaError_t err =
          to_device ? cudaMemcpy2DAsync(d, static_cast<std::size_t>(s.token_bytes), hp, heads * vec,
                                        width, tokens, cudaMemcpyHostToDevice, stream)
                    : cudaMemcpy2DAsync(hp, heads * vec, d, static_cast<std::size_t>(s.token_bytes),
                                        width, tokens, cudaMemcpyDeviceToHost, stream);
      if (err != cudaSuccess) return CudaError(err, "cudaMemcpy2DAsync");
    }
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CopyBlocksCuda(const ModelLayout& layout, const PagedKvCache& cache,
                                          std::uint32_t layer,
                                          std::span<const std::uint32_t> block_ids,
                                          std::span<std::byte* const> hosts, bool to_device) {
  if (cudaError_t err = cudaSetDevice(cache.cuda_device); err != cudaSuccess) {
    return CudaError(err, "cudaSetDevice");
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      err != cudaSuccess) {
    return CudaError(err, "cudaStreamCreate");
  }
  absl::Status st;
  for (std::size_t i = 0; i < block_ids.size() && st.ok(); ++i) {
    st = CopyLayerCuda(layout, cache, layer, block_ids[i], hosts[i], to_device, stream);
  }
  // Always wait: the host buffers must not be touched by a copy after this returns.
  if (cudaError_t err = cudaStreamSynchronize(stream); err != cudaSuccess && st.ok()) {
    st = CudaError(err, "cudaStreamSynchronize");
  }
  (void)cudaStreamDestroy(stream);
  return st;
}

// Device memory freed on every return path.
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() {
    if (ptr_ != nullptr) (void)cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  absl::Status Allocate(std::size_t bytes) {
    if (cudaError_t err = cudaMalloc(&ptr_, bytes); err != cudaSuccess) {
      ptr_ = nullptr;
      return CudaError(err, "cudaMalloc");
    }
    return absl::OkStatus();
  }
  void* get() const { return ptr_; }

 private:
  void* ptr_ = nullptr;
};

}  // namespace

absl::StatusOr<std::size_t> DecodeIntoPagesCuda(const ModelLayout& layout,
                                                const PagedKvCache& cache, kernels::CodecId codec,
                                                std::uint64_t seed,
                                                std::span<const std::span<const std::byte>> encoded,
                                                std::span<const std::uint32_t> block_ids) {
  if (!PagesAreCanonicalSlabs(layout, cache) || cache.memory != KvMemory::kCuda) {
    return absl::InvalidArgumentError("DecodeIntoPagesCuda: pages are not canonical device slabs");
  }
  if (encoded.empty()) return 0;
  const auto n = static_cast<std::uint32_t>(encoded.size());
  const std::uint32_t slabs = layout.num_layers * layout.PartsPerLayer();
  const std::uint32_t vectors_per_slab = layout.block_tokens * layout.num_kv_heads;
  const kernels::cuda::BlockShape shape{
      codec, layout.dtype == Dtype::kBf16 ? kernels::ValueType::kBf16 : kernels::ValueType::kFp16,
      layout.head_dim, slabs * vectors_per_slab};
  if (cudaError_t err = cudaSetDevice(cache.cuda_device); err != cudaSuccess) {
    return CudaError(err, "cudaSetDevice");
  }
  // One device allocation: the encoded blocks (16-byte aligned each), the source pointers, the
  // slab pointers and the per-block status.
  std::vector<std::size_t> offsets;
  std::size_t bytes = 0;
  for (const auto& e : encoded) {
    offsets.push_back(bytes);
    bytes += (e.size() + 15) / 16 * 16;
  }
  const std::size_t src_ptrs_at = bytes;
  bytes += n * sizeof(void*);
  const std::size_t slab_ptrs_at = bytes;
  bytes += std::size_t{n} * slabs * sizeof(void*);
  const std::size_t status_at = bytes;
  bytes += n * sizeof(int);
  DeviceBuffer dev;
  if (absl::Status st = dev.Allocate(bytes); !st.ok()) return st;
  auto* base = static_cast<std::byte*>(dev.get());
  std::vector<const void*> src_ptrs(n);
  std::vector<void*> slab_ptrs(std::size_t{n} * slabs);
  for (std::uint32_t b = 0; b < n; ++b) {
    src_ptrs[b] = base + offsets[b];
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
      for (std::uint32_t p = 0; p < layout.PartsPerLayer(); ++p) {
        slab_ptrs[std::size_t{b} * slabs + l * layout.PartsPerLayer() + p] =
            PartBase(layout, cache, l, p, block_ids[b]);
      }
    }
  }
  cudaStream_t stream = nullptr;
  if (cudaError_t err = cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking);
      err != cudaSuccess) {
    return CudaError(err, "cudaStreamCreate");
  }
  absl::Status st;
  auto copy = [&](void* dst, const void* src, std::size_t len) {
    if (!st.ok()) return;
    if (cudaError_t err = cudaMemcpyAsync(dst, src, len, cudaMemcpyHostToDevice, stream);
        err != cudaSuccess) {
      st = CudaError(err, "cudaMemcpyAsync");
    }
  };
  for (std::uint32_t b = 0; b < n; ++b)
    copy(base + offsets[b], encoded[b].data(), encoded[b].size());
  copy(base + src_ptrs_at, src_ptrs.data(), n * sizeof(void*));
  copy(base + slab_ptrs_at, slab_ptrs.data(), slab_ptrs.size() * sizeof(void*));
  if (st.ok()) {
    kernels::CodecStatus cs = kernels::cuda::DecodePagedBlocks(
        shape, seed, kernels::cuda::PagedLayout{slabs, vectors_per_slab},
        reinterpret_cast<const void* const*>(base + src_ptrs_at),
        reinterpret_cast<void* const*>(base + slab_ptrs_at), n,
        reinterpret_cast<int*>(base + status_at), stream);
    if (!cs.ok()) st = absl::InternalError("DecodePagedBlocks: " + cs.message);
  }
  std::vector<int> status(n, -1);
  if (st.ok()) {
    if (cudaError_t err = cudaMemcpyAsync(status.data(), base + status_at, n * sizeof(int),
                                          cudaMemcpyDeviceToHost, stream);
        err != cudaSuccess) {
      st = CudaError(err, "cudaMemcpyAsync");
    }
  }
  // Always wait: host buffers and the device allocation must outlive the stream's work.
  if (cudaError_t err = cudaStreamSynchronize(stream); err != cudaSuccess && st.ok()) {
    st = CudaError(err, "cudaStreamSynchronize");
  }
  (void)cudaStreamDestroy(stream);
  if (!st.ok()) return st;
  std::size_t good = 0;
  while (good < n && status[good] == kernels::cuda::kBlockOk) ++good;
  return good;
}

absl::Status GatherLayerCuda(const ModelLayout& layout, const PagedKvCache& cache,
                             std::uint32_t layer, std::span<const std::uint32_t> block_ids,
                             std::span<const std::span<std::byte>> canonical_layers) {
  std::vector<std::byte*> hosts;
  for (const auto& c : canonical_layers) hosts.push_back(c.data());
  return CopyBlocksCuda(layout, cache, layer, block_ids, hosts, /*to_device=*/false);
}

absl::Status ScatterLayerCuda(const ModelLayout& layout, const PagedKvCache& cache,
                              std::uint32_t layer, std::span<const std::uint32_t> block_ids,
                              std::span<const std::span<const std::byte>> canonical_layers) {
  std::vector<std::byte*> hosts;
  // cudaMemcpy2DAsync only reads host memory in this direction.
  for (const auto& c : canonical_layers) hosts.push_back(const_cast<std::byte*>(c.data()));
  return CopyBlocksCuda(layout, cache, layer, block_ids, hosts, /*to_device=*/true);
}

#else

absl::StatusOr<std::size_t> DecodeIntoPagesCuda(const ModelLayout&, const PagedKvCache&,
                                                kernels::CodecId, std::uint64_t,
                                                std::span<const std::span<const std::byte>>,
                                                std::span<const std::uint32_t>) {
  return absl::UnimplementedError("paged KV: this connector was built without CUDA");
}

absl::Status GatherLayerCuda(const ModelLayout&, const PagedKvCache&, std::uint32_t,
                             std::span<const std::uint32_t>,
                             std::span<const std::span<std::byte>>) {
  return absl::UnimplementedError("paged KV: this connector was built without CUDA");
}

absl::Status ScatterLayerCuda(const ModelLayout&, const PagedKvCache&, std::uint32_t,
                              std::span<const std::uint32_t>,
                              std::span<const std::span<const std::byte>>) {
  return absl::UnimplementedError("paged KV: this connector was built without CUDA");
}

#endif

}  // namespace cachesvc::client
