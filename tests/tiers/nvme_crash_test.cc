// Crash test: a child process writes and frees blocks on the NVMe tier and is killed with SIGKILL
// at a random moment, many times. After each kill the tier reopens warm, every indexed block reads
// back whole (checksum and content), and the tier accepts new writes.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <random>
#include <thread>

#include "tests/support/subprocess.h"
#include "tests/tiers/nvme_crash_options.h"
#include "tests/tiers/test_util.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

using std::chrono::milliseconds;

using testing::CrashOptions;

TEST(NvmeCrashTest, EveryIndexedBlockSurvivesSigkillAtRandomPoints) {
  const testing::ScopedDir scoped("nvme_crash");
  const auto& dir = scoped.path();
  std::mt19937_64 rng(20240611);
  constexpr int kCycles = 25;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(90);
  std::uint64_t verified = 0;
  int cycles = 0;
  for (; cycles < kCycles && std::chrono::steady_clock::now() < deadline; ++cycles) {
    {
      cachesvc::testing::Subprocess child(
          {CRASH_CHILD_BIN, dir.string(), std::to_string(cycles + 1)});
      ASSERT_TRUE(child.WaitForLine("writing", std::chrono::seconds(30)).has_value())
          << child.output();
      std::this_thread::sleep_for(milliseconds(rng() % 60));
      child.Signal(SIGKILL);
      const auto code = child.Wait(std::chrono::seconds(30));
      ASSERT_TRUE(code.has_value());
      // Killed, not exited on its own (an exit would mean a write or free failed).
      ASSERT_EQ(*code, 128 + SIGKILL) << child.output();
    }
    auto tier = NvmeTier::Open(CrashOptions(dir));
    ASSERT_TRUE(tier.ok()) << tier.status();
    ASSERT_FALSE((*tier)->recovery().started_cold) << (*tier)->recovery().cold_reason;
    EXPECT_EQ((*tier)->recovery().entries_dropped, 0u);
    for (const IndexEntry& e : (*tier)->Blocks()) {
      testing::AlignedBuffer out(e.info.stored_bytes);
      auto read = (*tier)->Read(e.slot, out.span());
      ASSERT_TRUE(read.ok()) << "cycle " << cycles << ": " << read.status();
      ASSERT_TRUE(testing::PayloadMatches(e.info.meta.layout_fingerprint, out.cspan()))
          << "cycle " << cycles << " block " << BlockIdHex(e.info.meta.key);
      ++verified;
    }
    EXPECT_EQ((*tier)->Stats().checksum_failures, 0u);
    // The tier still takes new writes.
    testing::AlignedBuffer fresh(100'000);
    testing::FillPayload(1ull << 60, fresh.span());
    auto slot = (*tier)->Allocate(fresh.size());
    if (!slot.ok()) {
      // Full: free blocks until a slot of this size class can be had (a freed slot of another
      // class makes room only once its whole chunk is free).
      ASSERT_EQ(slot.status().code(), absl::StatusCode::kResourceExhausted);
      for (const IndexEntry& e : (*tier)->Blocks()) {
        ASSERT_TRUE((*tier)->Free(e.slot).ok());
        slot = (*tier)->Allocate(fresh.size());
        if (slot.ok()) break;
      }
      ASSERT_TRUE(slot.ok()) << slot.status();
    }
    BlockMeta meta = testing::Meta(1ull << 60, fresh.size());
    meta.key[0] ^= static_cast<std::uint8_t>(cycles);  // a new key each cycle
    ASSERT_TRUE((*tier)->Write(*slot, meta, fresh.cspan()).ok());
    ASSERT_TRUE((*tier)->Free(*slot).ok());
  }
  std::printf("%d kill cycles, %llu recovered blocks verified\n", cycles,
              static_cast<unsigned long long>(verified));
  EXPECT_GE(cycles, 10);
  // The child really wrote: across the cycles blocks were recovered and checked.
  EXPECT_GT(verified, 0u);
}

}  // namespace
}  // namespace cachesvc::tiers
