#include "tiers/slot_allocator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <random>
#include <set>
#include <vector>

namespace cachesvc::tiers {
namespace {

constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

SlotAllocatorOptions Small() { return SlotAllocatorOptions{8 * kMiB, 16 * kKiB, 1 * kMiB}; }

TEST(SlotAllocatorTest, OptionsValidationNamesTheField) {
  struct Case {
    SlotAllocatorOptions options;
    const char* field;
  };
  const Case cases[] = {
      {{8 * kMiB, 12 * kKiB, 1 * kMiB}, "min_slot_bytes"},
      {{8 * kMiB, 2 * kKiB, 1 * kMiB}, "min_slot_bytes"},
      {{8 * kMiB, 16 * kKiB, 3 * kMiB}, "max_slot_bytes"},
      {{8 * kMiB, 64 * kKiB, 16 * kKiB}, "max_slot_bytes"},
      {{512 * kKiB, 16 * kKiB, 1 * kMiB}, "capacity_bytes"},
  };
  for (const Case& c : cases) {
    const absl::Status s = c.options.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << c.field;
    EXPECT_NE(s.message().find(c.field), absl::string_view::npos) << s;
  }
  EXPECT_TRUE(Small().Validate().ok());
  EXPECT_TRUE((SlotAllocatorOptions{1ull << 30, 16 * kKiB, 64 * kMiB}.Validate().ok()));
}

TEST(SlotAllocatorTest, RoundsUpToPowerOfTwoClasses) {
  SlotAllocator a("t", Small());
  EXPECT_EQ(a.SlotBytesFor(1), 16 * kKiB);
  EXPECT_EQ(a.SlotBytesFor(16 * kKiB), 16 * kKiB);
  EXPECT_EQ(a.SlotBytesFor(16 * kKiB + 1), 32 * kKiB);
  EXPECT_EQ(a.SlotBytesFor(1 * kMiB), 1 * kMiB);
  EXPECT_EQ(a.SlotBytesFor(1 * kMiB + 1), 0u);
  EXPECT_EQ(a.SlotBytesFor(0), 0u);
  auto s = a.Allocate(100 * kKiB);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->slot_bytes, 128 * kKiB);
  EXPECT_EQ(s->offset % s->slot_bytes, 0u);
}

TEST(SlotAllocatorTest, BadSizesAreInvalidArgument) {
  SlotAllocator a("host0", Small());
  EXPECT_EQ(a.Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
  const auto big = a.Allocate(1 * kMiB + 1);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(big.status().message().find("1048577"), absl::string_view::npos) << big.status();
}

TEST(SlotAllocatorTest, FullTierIsResourceExhaustedWithNameAndFreeBytes) {
  SlotAllocator a("host0", Small());  // 8 chunks of 1 MiB
  std::vector<SlotId> slots;
  for (int i = 0; i < 8; ++i) {
    auto s = a.Allocate(1 * kMiB);
    ASSERT_TRUE(s.ok()) << s.status();
    slots.push_back(*s);
  }
  auto full = a.Allocate(1 * kMiB);
  ASSERT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("host0"), absl::string_view::npos);
  EXPECT_NE(full.status().message().find("0 bytes free"), absl::string_view::npos) << full.status();
  EXPECT_EQ(a.free_bytes(), 0u);
  // A failed allocation changes nothing.
  EXPECT_EQ(a.slots_in_use(), 8u);
  ASSERT_TRUE(a.Free(slots[3]).ok());
  auto again = a.Allocate(1 * kMiB);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->offset, slots[3].offset);
}

TEST(SlotAllocatorTest, SmallClassHoldingAChunkStrandsSpaceForOtherClasses) {
  SlotAllocator a("host0", SlotAllocatorOptions{2 * kMiB, 16 * kKiB, 1 * kMiB});
  auto small = a.Allocate(16 * kKiB);
  ASSERT_TRUE(small.ok());
  ASSERT_TRUE(a.Allocate(1 * kMiB).ok());
  // One chunk left is held by the 16 KiB class: a 1 MiB request cannot be met.
  auto big = a.Allocate(1 * kMiB);
  EXPECT_EQ(big.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(big.status().message().find("1008 KiB free"), absl::string_view::npos) << big.status();
  EXPECT_DOUBLE_EQ(a.ExternalFragmentation(), 1.0);
  // Freeing the last slot of the chunk returns the chunk: the big request now fits.
  ASSERT_TRUE(a.Free(*small).ok());
  EXPECT_DOUBLE_EQ(a.ExternalFragmentation(), 0.0);
  EXPECT_TRUE(a.Allocate(1 * kMiB).ok());
}

TEST(SlotAllocatorTest, DoubleFreeAndForeignSlotsAreRefused) {
  SlotAllocator a("t", Small());
  auto s = a.Allocate(64 * kKiB);
  ASSERT_TRUE(s.ok());
  EXPECT_TRUE(a.Free(*s).ok());
  EXPECT_EQ(a.Free(*s).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Free(SlotId{12345, 64 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Free(SlotId{0, 48 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(a.Free(SlotId{64 * kMiB, 64 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  auto t = a.Allocate(64 * kKiB);
  ASSERT_TRUE(t.ok());
  // Same offset, wrong class.
  EXPECT_EQ(a.Free(SlotId{t->offset, 32 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(a.IsAllocated(*t));
}

TEST(SlotAllocatorTest, RandomWorkloadNeverOverlapsAndAccountsExactly) {
  SlotAllocator a("t", SlotAllocatorOptions{16 * kMiB, 16 * kKiB, 1 * kMiB});
  std::mt19937_64 rng(42);
  std::vector<SlotId> live;
  std::uint64_t live_bytes = 0;
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 100 < 55) {
      const std::uint64_t want = 1 + rng() % (1 * kMiB);
      auto s = a.Allocate(want);
      if (!s.ok()) {
        ASSERT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted);
        continue;
      }
      ASSERT_GE(s->slot_bytes, want);
      ASSERT_LT(s->slot_bytes / 2, std::max<std::uint64_t>(want, 16 * kKiB));
      live.push_back(*s);
      live_bytes += s->slot_bytes;
    } else {
      const std::size_t i = rng() % live.size();
      ASSERT_TRUE(a.Free(live[i]).ok());
      live_bytes -= live[i].slot_bytes;
      live[i] = live.back();
      live.pop_back();
    }
    ASSERT_EQ(a.allocated_bytes(), live_bytes);
    ASSERT_EQ(a.slots_in_use(), live.size());
  }
  std::sort(live.begin(), live.end(),
            [](const SlotId& x, const SlotId& y) { return x.offset < y.offset; });
  for (std::size_t i = 1; i < live.size(); ++i) {
    ASSERT_LE(live[i - 1].offset + live[i - 1].slot_bytes, live[i].offset);
  }
  for (const SlotId& s : live) ASSERT_TRUE(a.Free(s).ok());
  EXPECT_EQ(a.allocated_bytes(), 0u);
  EXPECT_EQ(a.free_bytes(), 16 * kMiB);
}

TEST(SlotAllocatorTest, ClaimRebuildsStateForRecovery) {
  SlotAllocator a("t", Small());
  const SlotId x{2 * kMiB + 64 * kKiB, 64 * kKiB};
  const SlotId y{2 * kMiB + 5 * 64 * kKiB, 64 * kKiB};
  ASSERT_TRUE(a.Claim(x).ok());
  ASSERT_TRUE(a.Claim(y).ok());
  EXPECT_EQ(a.Claim(x).code(), absl::StatusCode::kAlreadyExists);
  // Another class in the same chunk conflicts.
  EXPECT_EQ(a.Claim(SlotId{2 * kMiB + 256 * kKiB, 128 * kKiB}).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.Claim(SlotId{3 * kKiB, 64 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(a.IsAllocated(x));
  EXPECT_EQ(a.slots_in_use(), 2u);
  // New allocations of that class fill the chunk's holes and never hand out x or y.
  std::set<std::uint64_t> seen;
  for (int i = 0; i < 14; ++i) {
    auto s = a.Allocate(64 * kKiB);
    ASSERT_TRUE(s.ok());
    EXPECT_NE(s->offset, x.offset);
    EXPECT_NE(s->offset, y.offset);
    EXPECT_TRUE(seen.insert(s->offset).second);
    EXPECT_EQ(s->offset / (1 * kMiB), 2u);  // the claimed chunk first
  }
}

}  // namespace
}  // namespace cachesvc::tiers
