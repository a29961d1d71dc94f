// nvme_crash_child DIR SEED: opens the NVMe tier in DIR and writes and frees blocks forever, for
// nvme_crash_test, which kills it with SIGKILL at a random moment. Each block's payload derives
// from an id kept in its layout_fingerprint, so the parent can check content, not only checksums.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "spdlog/spdlog.h"
#include "tests/tiers/test_util.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

NvmeTierOptions CrashOptions(const std::filesystem::path& dir) {
  NvmeTierOptions o;
  o.name = "nvme-crash";
  o.data_path = dir / "slots.dat";
  o.index_path = dir / "index";
  o.capacity_bytes = 32 << 20;
  o.min_slot_bytes = 16 << 10;
  o.max_slot_bytes = 1 << 20;
  o.queue_depth = 8;
  return o;
}

int Main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR SEED\n", argv[0]);
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  auto tier = NvmeTier::Open(CrashOptions(argv[1]));
  if (!tier.ok()) {
    std::fprintf(stderr, "open failed: %s\n", std::string(tier.status().message()).c_str());
    return 1;
  }
  std::vector<SlotId> live;
  for (const IndexEntry& e : (*tier)->Blocks()) live.push_back(e.slot);
  std::printf("ready %zu\n", live.size());
  std::fflush(stdout);
  const std::uint64_t seed = std::strtoull(argv[2], nullptr, 10);
  std::mt19937_64 rng(seed);
  std::uint64_t next_id = seed << 20;
  std::vector<std::unique_ptr<testing::AlignedBuffer>> buffers;
  bool announced = false;
  for (;;) {
    if (!live.empty() && (rng() % 100 < 30 || live.size() > 40)) {
      const std::size_t i = rng() % live.size();
      if (!(*tier)->Free(live[i]).ok()) return 3;
      live[i] = live.back();
      live.pop_back();
      continue;
    }
    const std::size_t batch = 1 + rng() % 6;
    buffers.clear();
    std::vector<NvmeTier::WriteOp> ops;
    for (std::size_t b = 0; b < batch; ++b) {
      const std::uint64_t bytes = 1 + rng() % (1 << 20);
      auto slot = (*tier)->Allocate(bytes);
      if (!slot.ok()) break;  // full: frees come next
      const std::uint64_t id = ++next_id;
      buffers.push_back(std::make_unique<testing::AlignedBuffer>(bytes));
      testing::FillPayload(id, buffers.back()->span());
      BlockMeta meta = testing::Meta(id, bytes);
      meta.layout_fingerprint = id;
      ops.push_back({*slot, meta, buffers.back()->cspan()});
    }
    const auto results = (*tier)->WriteBatch(ops);
    for (std::size_t k = 0; k < ops.size(); ++k) {
      if (!results[k].ok()) return 4;
      live.push_back(ops[k].slot);
    }
    if (!announced && !ops.empty()) {
      // The parent kills at a random moment after this, so every cycle has blocks to check even
      // where the child is slow (sanitizer builds).
      std::printf("writing\n");
      std::fflush(stdout);
      announced = true;
    }
  }
}

}  // namespace
}  // namespace cachesvc::tiers

int main(int argc, char** argv) { return cachesvc::tiers::Main(argc, argv); }
