// KvConnector with the engine's pages in GPU memory, against a real daemon: TQ3/TQ4 blocks decoded
// on the GPU straight into token-major pages (kernels/tq_cuda.h) and through host decode into
// head-major pages both equal the CPU codec's decode; RAW round-trips byte-identical through
// GPU pages in both directions. Skips (never fails) where the build has no CUDA or no GPU.
#include <gtest/gtest.h>

#include "client/kv_connector.h"
#include "kernels/gpu.h"
#include "kernels/tq_codec.h"
#include "tests/client/connector_test_util.h"

#ifdef CACHESVC_HAVE_CUDA
#include <cuda_runtime_api.h>
#endif

namespace cachesvc::testing {
namespace {

#ifdef CACHESVC_HAVE_CUDA

using client::KvConnector;
using kernels::CodecId;

// A mirror of a host EngineCache in device memory: one cudaMalloc per (layer, part) tensor, the
// same strides and page order, so copying a tensor back lets the host EngineCache read it.
class DeviceCache {
 public:
  DeviceCache(const ModelLayout& layout, EngineCache& host, std::uint32_t num_pages)
      : num_pages_(num_pages) {
    cache_ = host.cache();
    cache_.memory = client::KvMemory::kCuda;
    cache_.cuda_device = 0;
    const std::size_t tensor_bytes = num_pages * cache_.strides.page_bytes;
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
      for (auto* pages : {&cache_.layers[l].k_pages, &cache_.layers[l].v_pages}) {
        if (pages->empty()) continue;
        void* dev = nullptr;
        EXPECT_EQ(cudaMalloc(&dev, tensor_bytes), cudaSuccess);
        tensors_.push_back({dev, (*pages)[0]});
        for (std::uint32_t p = 0; p < num_pages; ++p) {
          (*pages)[p] = static_cast<std::byte*>(dev) + p * cache_.strides.page_bytes;
        }
      }
    }
  }
  ~DeviceCache() {
    for (auto& t : tensors_) (void)cudaFree(t.first);
  }
  const client::PagedKvCache& cache() const { return cache_; }
  void Upload() {
    for (auto& t : tensors_) {
      ASSERT_EQ(cudaMemcpy(t.first, t.second, num_pages_ * cache_.strides.page_bytes,
                           cudaMemcpyHostToDevice),
                cudaSuccess);
    }
  }
  void Download() {
    for (auto& t : tensors_) {
      ASSERT_EQ(cudaMemcpy(t.second, t.first, num_pages_ * cache_.strides.page_bytes,
                           cudaMemcpyDeviceToHost),
                cudaSuccess);
    }
  }

 private:
  std::uint32_t num_pages_;
  client::PagedKvCache cache_;
  std::vector<std::pair<void*, void*>> tensors_;  // device tensor, host tensor
};

std::vector<std::byte> CpuRoundTrip(CodecId codec, const std::vector<std::byte>& raw) {
  std::vector<std::byte> enc(
      kernels::EncodedBytes(codec, kernels::ValueType::kFp16, 128, raw.size() / 256));
  EXPECT_TRUE(
      kernels::Encode(codec, kernels::ValueType::kFp16, 128, kernels::kDefaultSignSeed, raw, enc)
          .ok());
  std::vector<std::byte> dec(raw.size());
  EXPECT_TRUE(
      kernels::Decode(codec, kernels::ValueType::kFp16, 128, enc, dec, kernels::CodecImpl::kScalar)
          .ok());
  return dec;
}

TEST(ConnectorGpuTest, LoadsAndSavesThroughGpuPages) {
  if (kernels::QueryGpus().devices.empty()) GTEST_SKIP() << "no GPU here";
  ConnectorDaemon daemon("gpu");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  const ModelLayout layout = ConnectorLayout();
  for (CodecId codec : {CodecId::kRaw, CodecId::kTq3, CodecId::kTq4}) {
    SCOPED_TRACE(kernels::CodecName(codec));
    std::vector<std::uint32_t> tokens = Tokens(48, 1);
    tokens[0] = static_cast<std::uint32_t>(codec);
    // Saved from GPU pages.
    EngineCache src_host(layout, PageKind::kTokenMajor, 3);
    src_host.Fill(20 + static_cast<int>(codec));
    DeviceCache src(layout, src_host, 3);
    src.Upload();
    auto saver = KvConnector::Create(daemon.Options(codec));
    ASSERT_TRUE(saver.ok()) << saver.status();
    ASSERT_TRUE((*saver)->RegisterPagedCache(src.cache()).ok());
    const std::vector<std::uint32_t> ids = {2, 0, 1};
    ASSERT_TRUE((*saver)->BeginSave(tokens, ids).ok());
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) ASSERT_TRUE((*saver)->SaveLayer(l).ok());
    auto saved = (*saver)->WaitForSave();
    ASSERT_TRUE(saved.ok()) << saved.status();
    ASSERT_EQ(saved->blocks_committed, 3u);

    // Loaded into GPU pages: token-major (GPU decode) and head-major (host decode, 2-D copies).
    for (PageKind kind : {PageKind::kTokenMajor, PageKind::kHeadMajor, PageKind::kSharedKv}) {
      SCOPED_TRACE(PageKindName(kind));
      EngineCache dst_host(layout, kind, 3);
      DeviceCache dst(layout, dst_host, 3);
      auto loader = KvConnector::Create(daemon.Options());
      ASSERT_TRUE(loader.ok()) << loader.status();
      ASSERT_TRUE((*loader)->RegisterPagedCache(dst.cache()).ok());
      const std::vector<std::uint32_t> dst_ids = {1, 2, 0};
      auto loaded = (*loader)->Load(tokens, dst_ids);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      ASSERT_EQ(loaded->blocks, 3u) << loaded->miss_reason;
      dst.Download();
      for (std::size_t i = 0; i < 3; ++i) {
        const std::vector<std::byte> raw = src_host.Canonical(ids[i]);
        const std::vector<std::byte> want = codec == CodecId::kRaw ? raw : CpuRoundTrip(codec, raw);
        EXPECT_EQ(dst_host.Canonical(dst_ids[i]), want) << "block " << i;
      }
    }
  }
}

TEST(ConnectorGpuTest, HostPointersAsGpuPagesAreRefused) {
  if (kernels::QueryGpus().devices.empty()) GTEST_SKIP() << "no GPU here";
  const ModelLayout layout = ConnectorLayout();
  EngineCache host(layout, PageKind::kTokenMajor, 2);
  client::PagedKvCache c = host.cache();
  c.memory = client::KvMemory::kCuda;
  EXPECT_EQ(client::ValidatePagedKv(layout, c).code(), absl::StatusCode::kInvalidArgument);
}

#else

TEST(ConnectorGpuTest, LoadsAndSavesThroughGpuPages) { GTEST_SKIP() << "built without CUDA"; }

#endif

}  // namespace
}  // namespace cachesvc::testing
