#include "tiers/slot_table.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace cachesvc::tiers {
namespace {

using std::chrono::milliseconds;
constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

class SlotTableTest : public ::testing::Test {
 protected:
  SlotTableTest()
      : table_("t", TierKind::kHost, SlotAllocatorOptions{4 * kMiB, 16 * kKiB, 1 * kMiB},
               SlotTableOptions{milliseconds(500), milliseconds(10'000)}, &env_) {}

  // A slot holding a block of `bytes`.
  SlotId Written(std::uint64_t bytes) {
    auto slot = table_.Allocate(bytes);
    EXPECT_TRUE(slot.ok());
    auto gen = table_.BeginWrite(*slot, bytes);
    EXPECT_TRUE(gen.ok()) << gen.status();
    BlockInfo info;
    info.stored_bytes = bytes;
    info.generation = *gen;
    table_.FinishWrite(*slot, info);
    return *slot;
  }

  ManualEnv env_;
  SlotTable table_;
};

TEST_F(SlotTableTest, OptionsValidation) {
  EXPECT_EQ((SlotTableOptions{milliseconds(0), milliseconds(1)}.Validate().code()),
            absl::StatusCode::kInvalidArgument);
  const absl::Status s = SlotTableOptions{milliseconds(1), milliseconds(-5)}.Validate();
  EXPECT_NE(s.message().find("max_lease_ttl"), absl::string_view::npos);
}

TEST_F(SlotTableTest, WriteReadFreeLifecycle) {
  auto slot = table_.Allocate(40 * kKiB);
  ASSERT_TRUE(slot.ok());
  EXPECT_EQ(table_.BeginRead(*slot, 64 * kKiB).status().code(),
            absl::StatusCode::kFailedPrecondition);  // nothing written yet
  EXPECT_EQ(table_.BeginWrite(*slot, 65 * kKiB).status().code(),
            absl::StatusCode::kInvalidArgument);  // longer than the slot
  EXPECT_EQ(table_.BeginWrite(*slot, 0).status().code(), absl::StatusCode::kInvalidArgument);
  auto gen = table_.BeginWrite(*slot, 40 * kKiB);
  ASSERT_TRUE(gen.ok());
  EXPECT_EQ(table_.BeginWrite(*slot, 40 * kKiB).status().code(),
            absl::StatusCode::kFailedPrecondition);  // a write is in flight
  BlockInfo info;
  info.stored_bytes = 40 * kKiB;
  info.generation = *gen;
  table_.FinishWrite(*slot, info);
  const auto small = table_.BeginRead(*slot, 10);
  EXPECT_EQ(small.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(small.status().message().find("buffer of 10 bytes"), absl::string_view::npos);
  auto read = table_.BeginRead(*slot, 40 * kKiB);
  ASSERT_TRUE(read.ok());
  EXPECT_EQ(read->generation, *gen);
  table_.EndRead(*slot);
  TierStats stats = table_.Stats();
  EXPECT_EQ(stats.blocks, 1u);
  EXPECT_EQ(stats.reads, 1u);
  EXPECT_DOUBLE_EQ(stats.internal_fragmentation, 24.0 / 64.0);
  ASSERT_TRUE(table_.Free(*slot).ok());
  EXPECT_EQ(table_.Free(*slot).code(), absl::StatusCode::kInvalidArgument);
  stats = table_.Stats();
  EXPECT_EQ(stats.blocks, 0u);
  EXPECT_EQ(stats.allocated_bytes, 0u);
}

TEST_F(SlotTableTest, LeasedSlotIsNeitherRewrittenNorReusedUntilReleased) {
  const SlotId slot = Written(1 * kMiB);
  auto lease = table_.AcquireLease(slot, milliseconds(1000));
  ASSERT_TRUE(lease.ok());
  const auto rewrite = table_.BeginWrite(slot, 1 * kMiB);
  EXPECT_EQ(rewrite.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(rewrite.status().message().find("1 leases"), absl::string_view::npos);
  ASSERT_TRUE(table_.Free(slot).ok());  // deferred
  EXPECT_EQ(table_.Stats().frees_deferred, 1u);
  // The 1 MiB slot is still held: allocate everything else and one more must fail.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(table_.Allocate(1 * kMiB).ok());
  EXPECT_EQ(table_.Allocate(1 * kMiB).status().code(), absl::StatusCode::kResourceExhausted);
  // A freed block cannot be read or leased any more.
  EXPECT_FALSE(table_.BeginRead(slot, 1 * kMiB).ok());
  EXPECT_FALSE(table_.AcquireLease(slot, milliseconds(10)).ok());
  ASSERT_TRUE(table_.ReleaseLease(*lease).ok());
  EXPECT_EQ(table_.ReleaseLease(*lease).code(), absl::StatusCode::kNotFound);
  auto reused = table_.Allocate(1 * kMiB);
  ASSERT_TRUE(reused.ok());
  EXPECT_EQ(reused->offset, slot.offset);
}

TEST_F(SlotTableTest, ReadInProgressDefersFree) {
  const SlotId slot = Written(64 * kKiB);
  ASSERT_TRUE(table_.BeginRead(slot, 64 * kKiB).ok());
  ASSERT_TRUE(table_.Free(slot).ok());
  EXPECT_EQ(table_.Stats().slots_in_use, 1u);
  table_.EndRead(slot);
  EXPECT_EQ(table_.Stats().slots_in_use, 0u);
}

TEST_F(SlotTableTest, LeasesExpireAndFinishDeferredFrees) {
  const SlotId slot = Written(1 * kMiB);
  auto lease = table_.AcquireLease(slot, milliseconds(100));
  ASSERT_TRUE(lease.ok());
  ASSERT_TRUE(table_.Free(slot).ok());
  env_.Advance(milliseconds(99));
  EXPECT_EQ(table_.Expire(), 0u);
  EXPECT_EQ(table_.Stats().slots_in_use, 1u);
  env_.Advance(milliseconds(1));
  EXPECT_EQ(table_.Expire(), 1u);
  const TierStats stats = table_.Stats();
  EXPECT_EQ(stats.leases_expired, 1u);
  EXPECT_EQ(stats.leases_active, 0u);
  EXPECT_EQ(stats.slots_in_use, 0u);
  EXPECT_EQ(table_.ReleaseLease(*lease).code(), absl::StatusCode::kNotFound);
}

TEST_F(SlotTableTest, ExpiredLeaseNoLongerBlocksWritesEvenBeforeASweep) {
  const SlotId slot = Written(64 * kKiB);
  ASSERT_TRUE(table_.AcquireLease(slot, milliseconds(50)).ok());
  EXPECT_FALSE(table_.BeginWrite(slot, 64 * kKiB).ok());
  env_.Advance(milliseconds(60));
  EXPECT_TRUE(table_.BeginWrite(slot, 64 * kKiB).ok());
}

TEST_F(SlotTableTest, LeaseTtlIsBounded) {
  const SlotId slot = Written(64 * kKiB);
  EXPECT_EQ(table_.AcquireLease(slot, milliseconds(0)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(table_.AcquireLease(slot, milliseconds(10'001)).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto unwritten = table_.Allocate(64 * kKiB);
  ASSERT_TRUE(unwritten.ok());
  EXPECT_EQ(table_.AcquireLease(*unwritten, milliseconds(10)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(SlotTableTest, NeverWrittenAllocationsAreReclaimedAtTheirTtl) {
  auto dead_client = table_.Allocate(1 * kMiB);
  ASSERT_TRUE(dead_client.ok());
  auto written = Written(1 * kMiB);
  env_.Advance(milliseconds(499));
  EXPECT_EQ(table_.Expire(), 0u);
  env_.Advance(milliseconds(1));
  EXPECT_EQ(table_.Expire(), 1u);
  const TierStats stats = table_.Stats();
  EXPECT_EQ(stats.allocations_reclaimed, 1u);
  EXPECT_EQ(stats.slots_in_use, 1u);  // the written one stays
  EXPECT_TRUE(table_.Info(written).ok());
  EXPECT_EQ(table_.BeginWrite(*dead_client, 10).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(SlotTableTest, AbortedWriteLeavesNoBlockAndRearmsTheTtl) {
  const SlotId slot = Written(64 * kKiB);
  BlockInfo replaced;
  ASSERT_TRUE(table_.BeginWrite(slot, 32 * kKiB, &replaced).ok());
  EXPECT_EQ(replaced.stored_bytes, 64 * kKiB);
  table_.AbortWrite(slot);
  EXPECT_EQ(table_.Info(slot).status().code(), absl::StatusCode::kFailedPrecondition);
  env_.Advance(milliseconds(500));
  EXPECT_EQ(table_.Expire(), 1u);
  EXPECT_EQ(table_.Stats().slots_in_use, 0u);
}

TEST_F(SlotTableTest, ConcurrentLeasesReadsAndFreesStayConsistent) {
  std::vector<SlotId> slots;
  for (int i = 0; i < 32; ++i) slots.push_back(Written(64 * kKiB));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 200; ++round) {
        const SlotId slot = slots[static_cast<std::size_t>((round * 7 + t) % 32)];
        auto lease = table_.AcquireLease(slot, milliseconds(1000));
        if (lease.ok()) {
          auto r = table_.BeginRead(slot, 64 * kKiB);
          if (r.ok()) table_.EndRead(slot);
          EXPECT_TRUE(table_.ReleaseLease(*lease).ok());
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  for (const SlotId& s : slots) ASSERT_TRUE(table_.Free(s).ok());
  const TierStats stats = table_.Stats();
  EXPECT_EQ(stats.slots_in_use, 0u);
  EXPECT_EQ(stats.leases_active, 0u);
}

}  // namespace
}  // namespace cachesvc::tiers
