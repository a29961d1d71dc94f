// Gather/scatter between engine pages and the canonical payload, with no daemon: every page
// layout the connector documents (and one with padding) round-trips, matches an independent
// reading of the strides, and leaves every byte outside the vectors alone; a description that
// does not fit the layout is INVALID_ARGUMENT naming what is wrong.
#include <gtest/gtest.h>

#include "client/kv_connector_paged.h"
#include "tests/client/connector_pages_util.h"

namespace cachesvc::testing {
namespace {

using client::CanonicalLayerBytes;
using client::GatherLayerCpu;
using client::PagedKvCache;
using client::ScatterLayerCpu;
using client::ValidatePagedKv;

ModelLayout MlaLayout() {
  ModelLayout l = ConnectorLayout();
  l.attention = AttentionKind::kMla;
  l.num_kv_heads = 1;
  l.head_dim = 64;
  return l;
}

std::vector<std::byte> GatherBlock(const ModelLayout& layout, const PagedKvCache& cache,
                                   std::uint32_t page) {
  const std::size_t lb = CanonicalLayerBytes(layout);
  std::vector<std::byte> out(lb * layout.num_layers);
  for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
    GatherLayerCpu(layout, cache, l, page, std::span(out).subspan(l * lb, lb));
  }
  return out;
}

struct Case {
  PageKind kind;
  bool mla;
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << PageKindName(c.kind) << (c.mla ? " mla" : "");
}

class PagedRoundTrip : public ::testing::TestWithParam<Case> {};

TEST_P(PagedRoundTrip, GatherMatchesTheStridesAndScatterWritesOnlyTheVectors) {
  const ModelLayout layout = GetParam().mla ? MlaLayout() : ConnectorLayout();
  const std::uint32_t pages = 5;
  EngineCache src(layout, GetParam().kind, pages);
  src.Fill(11);
  ASSERT_TRUE(ValidatePagedKv(layout, src.cache()).ok()) << ValidatePagedKv(layout, src.cache());
  ASSERT_EQ(CanonicalLayerBytes(layout) * layout.num_layers, layout.RawBlockBytes());

  EngineCache dst(layout, GetParam().kind, pages);
  dst.Fill(12);
  std::vector<std::byte> expected(dst.bytes().begin(), dst.bytes().end());
  // Block from source page p goes to destination page (p + 2) % pages.
  for (std::uint32_t p = 0; p < pages; ++p) {
    const std::vector<std::byte> block = GatherBlock(layout, src.cache(), p);
    ASSERT_EQ(block, src.Canonical(p)) << "page " << p;
    const std::uint32_t to = (p + 2) % pages;
    const std::size_t lb = CanonicalLayerBytes(layout);
    for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
      ScatterLayerCpu(layout, dst.cache(), l, to, std::span(block).subspan(l * lb, lb));
    }
    dst.WriteCanonical(expected, to, block);
  }
  EXPECT_TRUE(std::equal(expected.begin(), expected.end(), dst.bytes().begin()))
      << "a scatter wrote outside the vectors, or the wrong vectors";
  for (std::uint32_t p = 0; p < pages; ++p) {
    EXPECT_EQ(dst.Canonical((p + 2) % pages), src.Canonical(p)) << p;
  }
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, PagedRoundTrip,
    ::testing::Values(Case{PageKind::kTokenMajor, false}, Case{PageKind::kHeadMajor, false},
                      Case{PageKind::kSharedKv, false}, Case{PageKind::kPaddedTokenMajor, false},
                      Case{PageKind::kTokenMajor, true}, Case{PageKind::kHeadMajor, true}),
    [](const auto& param_info) {
      return std::string(PageKindName(param_info.param.kind)) +
             (param_info.param.mla ? "_mla" : "");
    });

TEST(PagedLayoutTest, CrossLayoutCopyPreservesEveryValue) {
  // What an engine with head-major pages loads from one with token-major pages.
  const ModelLayout layout = ConnectorLayout();
  EngineCache a(layout, PageKind::kTokenMajor, 2);
  EngineCache b(layout, PageKind::kHeadMajor, 2);
  a.Fill(3);
  const std::vector<std::byte> block = GatherBlock(layout, a.cache(), 1);
  const std::size_t lb = CanonicalLayerBytes(layout);
  for (std::uint32_t l = 0; l < layout.num_layers; ++l) {
    ScatterLayerCpu(layout, b.cache(), l, 0, std::span(block).subspan(l * lb, lb));
  }
  // Value (layer 2, V, token 5, head 1, dim 7) by hand.
  const std::size_t off_a =
      5 * a.cache().strides.token_bytes + 1 * a.cache().strides.head_bytes + 7 * 2;
  const std::size_t off_b =
      5 * b.cache().strides.token_bytes + 1 * b.cache().strides.head_bytes + 7 * 2;
  EXPECT_EQ(0, std::memcmp(static_cast<std::byte*>(a.cache().layers[2].v_pages[1]) + off_a,
                           static_cast<std::byte*>(b.cache().layers[2].v_pages[0]) + off_b, 2));
  EXPECT_EQ(b.Canonical(0), a.Canonical(1));
}

// Each broken description, and a word its error must contain.
TEST(PagedLayoutTest, DescriptionsThatDoNotFitAreInvalidArgument) {
  const ModelLayout layout = ConnectorLayout();
  struct Broken {
    const char* what;
    std::function<void(PagedKvCache&)> breakit;
    const char* says;
  };
  alignas(16) static std::byte scratch[64];
  const std::vector<Broken> cases = {
      {"layer missing", [](PagedKvCache& c) { c.layers.pop_back(); }, "layers"},
      {"dtype", [](PagedKvCache& c) { c.dtype = Dtype::kBf16; }, "bf16"},
      {"page too small", [](PagedKvCache& c) { c.strides.page_bytes -= 2; }, "page_bytes"},
      {"heads overlap", [](PagedKvCache& c) { c.strides.head_bytes = 128; }, "overlap"},
      {"tokens overlap", [](PagedKvCache& c) { c.strides.token_bytes = c.strides.head_bytes; },
       "overlap"},
      {"negative stride", [](PagedKvCache& c) { c.strides.token_bytes = -512; }, "positive"},
      {"odd stride", [](PagedKvCache& c) { c.strides.token_bytes += 1; }, "multiple"},
      {"null page", [](PagedKvCache& c) { c.layers[1].v_pages[2] = nullptr; }, "null"},
      {"misaligned page", [](PagedKvCache& c) { c.layers[0].k_pages[0] = scratch + 1; }, "aligned"},
      {"fewer V pages", [](PagedKvCache& c) { c.layers[3].v_pages.pop_back(); }, "V pages"},
      {"fewer K pages", [](PagedKvCache& c) { c.layers[2].k_pages.pop_back(); }, "K pages"},
      {"part stride on separate pages", [](PagedKvCache& c) { c.strides.part_bytes = 8192; },
       "part_bytes"},
      {"no pages",
       [](PagedKvCache& c) {
         for (auto& l : c.layers) l.k_pages.clear(), l.v_pages.clear();
       },
       "no pages"},
  };
  for (const Broken& b : cases) {
    EngineCache e(layout, PageKind::kTokenMajor, 4);
    ASSERT_TRUE(ValidatePagedKv(layout, e.cache()).ok());
    PagedKvCache c = e.cache();
    b.breakit(c);
    const absl::Status st = ValidatePagedKv(layout, c);
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << b.what << ": " << st;
    EXPECT_NE(st.message().find(b.says), std::string::npos) << b.what << ": " << st;
  }
  // Shared K|V pages whose part stride lets K and V overlap.
  EngineCache shared(layout, PageKind::kSharedKv, 2);
  PagedKvCache c = shared.cache();
  c.strides.part_bytes = c.strides.token_bytes;
  EXPECT_EQ(ValidatePagedKv(layout, c).code(), absl::StatusCode::kInvalidArgument);
  // MLA has no V pages.
  EngineCache mha(layout, PageKind::kTokenMajor, 2);
  ModelLayout mla = MlaLayout();
  mla.head_dim = 128;
  EXPECT_EQ(ValidatePagedKv(mla, mha.cache()).code(), absl::StatusCode::kInvalidArgument);
}

TEST(PagedLayoutTest, GpuPagesWithoutCudaAreRefused) {
#ifdef CACHESVC_HAVE_CUDA
  GTEST_SKIP() << "built with CUDA: covered by connector_gpu_test";
#else
  const ModelLayout layout = ConnectorLayout();
  EngineCache e(layout, PageKind::kTokenMajor, 2);
  PagedKvCache c = e.cache();
  c.memory = client::KvMemory::kCuda;
  EXPECT_EQ(ValidatePagedKv(layout, c).code(), absl::StatusCode::kFailedPrecondition);
#endif
}

}  // namespace
}  // namespace cachesvc::testing
