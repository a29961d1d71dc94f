// nvme_crash_child DIR SEED: opens the NVMe tier in DIR and writes, overwrites and frees blocks
// forever, for nvme_crash_test, which kills it with SIGKILL at a random moment. Each block's
// payload derives from an id kept in its layout_fingerprint, so the parent can check content, not
// only checksums. Most writes go through the pipelined path (WriteAsync, up to kWindow writes
// outstanding, so payload writes, group syncs and index batches overlap when the kill lands); some
// through WriteBatch; some rewrite a stored block's slot with a new block. Seeds divisible by 3
// use RWF_DSYNC writes instead of group fdatasync.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "spdlog/spdlog.h"
#include "tests/tiers/nvme_crash_options.h"
#include "tests/tiers/test_util.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

using testing::CrashOptions;

constexpr std::size_t kWindow = 16;

int Main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s DIR SEED\n", argv[0]);
    return 2;
  }
  spdlog::set_level(spdlog::level::warn);
  const std::uint64_t seed = std::strtoull(argv[2], nullptr, 10);
  NvmeTierOptions options = CrashOptions(argv[1]);
  options.dsync_writes = seed % 3 == 0;
  auto tier = NvmeTier::Open(options);
  if (!tier.ok()) {
    std::fprintf(stderr, "open failed: %s\n", std::string(tier.status().message()).c_str());
    return 1;
  }
  std::vector<SlotId> live;  // acknowledged blocks (only the main thread touches it)
  for (const IndexEntry& e : (*tier)->Blocks()) live.push_back(e.slot);
  std::printf("ready %zu\n", live.size());
  std::fflush(stdout);
  std::mt19937_64 rng(seed);
  std::uint64_t next_id = seed << 20;
  // Acknowledgements arrive on the tier's commit thread.
  Mutex mu;
  CondVar acked;
  std::vector<SlotId> done;  // acknowledged, not yet moved to `live`
  bool failed = false;
  std::size_t outstanding = 0;
  // Payload buffers of writes in flight, by slot offset (a slot has at most one write in flight).
  std::map<std::uint64_t, std::unique_ptr<testing::AlignedBuffer>> buffers;
  auto submit = [&](const NvmeTier::WriteOp& op) {
    const SlotId slot = op.slot;
    (*tier)->WriteAsync(op, [&, slot](absl::Status s) {
      MutexLock lock(&mu);
      if (!s.ok()) failed = true;
      done.push_back(slot);
      buffers.erase(slot.offset);
      --outstanding;
      acked.SignalAll();
    });
  };
  // A buffer for a block of `bytes` with id's payload, owned by `buffers` until acknowledged.
  auto make_op = [&](SlotId slot, std::uint64_t id, std::uint64_t bytes) {
    auto buffer = std::make_unique<testing::AlignedBuffer>(bytes);
    testing::FillPayload(id, buffer->span());
    BlockMeta meta = testing::Meta(id, bytes);
    meta.layout_fingerprint = id;
    const NvmeTier::WriteOp op{slot, meta, buffer->cspan()};
    MutexLock lock(&mu);
    buffers[slot.offset] = std::move(buffer);
    return op;
  };
  bool announced = false;
  // Moves acknowledged writes to `live`; returns how many are still outstanding.
  auto take_acks = [&] {
    MutexLock lock(&mu);
    if (failed) std::exit(4);
    live.insert(live.end(), done.begin(), done.end());
    done.clear();
    return outstanding;
  };
  for (;;) {
    const std::size_t in_flight = take_acks();
    // Blocks stored or on their way stay around 40 (of at most 64 of 1 MiB), so the tier has room.
    if (!live.empty() && (rng() % 100 < 30 || live.size() + in_flight > 40)) {
      const std::size_t i = rng() % live.size();
      const SlotId slot = live[i];
      live[i] = live.back();
      live.pop_back();
      if (rng() % 3 == 0) {
        // Rewrite the slot with a new block: the old entry must go before the new payload lands.
        const std::uint64_t bytes = slot.slot_bytes / 2 + 1 + rng() % (slot.slot_bytes / 2);
        const NvmeTier::WriteOp op = make_op(slot, ++next_id, bytes);
        {
          MutexLock lock(&mu);
          ++outstanding;
        }
        submit(op);
      } else if (!(*tier)->Free(slot).ok()) {
        return 3;
      }
      continue;
    }
    const bool sync_batch = rng() % 4 == 0;
    const std::size_t batch = 1 + rng() % 6;
    std::vector<NvmeTier::WriteOp> ops;
    for (std::size_t b = 0; b < batch; ++b) {
      const std::uint64_t bytes = 1 + rng() % (1 << 20);
      auto slot = (*tier)->Allocate(bytes);
      if (!slot.ok()) break;  // full: frees come next
      ops.push_back(make_op(*slot, ++next_id, bytes));
    }
    if (sync_batch) {
      const auto results = (*tier)->WriteBatch(ops);
      MutexLock lock(&mu);
      for (std::size_t k = 0; k < ops.size(); ++k) {
        if (!results[k].ok()) std::exit(4);
        live.push_back(ops[k].slot);
        buffers.erase(ops[k].slot.offset);
      }
    } else {
      for (const NvmeTier::WriteOp& op : ops) {
        {
          MutexLock lock(&mu);
          acked.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return outstanding < kWindow; });
          ++outstanding;
        }
        submit(op);
      }
    }
    if (ops.empty()) {
      // Full and nothing acknowledged to free yet: wait for the writes in flight.
      MutexLock lock(&mu);
      acked.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return outstanding == 0; });
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
