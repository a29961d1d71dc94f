#include "tiers/host_tier.h"

#include <gtest/gtest.h>
#include <numa.h>
#include <numaif.h>

#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

using testing::FillPayload;
using testing::Meta;
using testing::PayloadMatches;
constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

HostTierOptions Small() {
  HostTierOptions o;
  o.name = "host-test";
  o.capacity_bytes = 8 * kMiB;
  o.min_slot_bytes = 16 * kKiB;
  o.max_slot_bytes = 2 * kMiB;
  return o;
}

TEST(HostTierTest, OptionsValidationNamesTheField) {
  HostTierOptions o = Small();
  o.name = "";
  EXPECT_EQ(o.Validate().code(), absl::StatusCode::kInvalidArgument);
  o = Small();
  o.capacity_bytes = 1 * kMiB;
  EXPECT_NE(o.Validate().message().find("capacity_bytes"), absl::string_view::npos);
  o = Small();
  o.numa_node = -2;
  EXPECT_NE(o.Validate().message().find("numa_node"), absl::string_view::npos);
  o = Small();
  o.slots.allocation_ttl = std::chrono::milliseconds(0);
  EXPECT_NE(o.Validate().message().find("allocation_ttl"), absl::string_view::npos);
}

TEST(HostTierTest, WritesAndReadsBackManySizes) {
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok()) << tier.status();
  std::vector<std::pair<SlotId, std::uint64_t>> stored;
  const std::uint64_t sizes[] = {1, 4095, 16 * kKiB, 100'000, 256 * kKiB, 2 * kMiB};
  std::uint64_t seed = 0;
  for (std::uint64_t n : sizes) {
    std::vector<std::byte> payload(n);
    FillPayload(++seed, payload);
    auto slot = (*tier)->Allocate(n);
    ASSERT_TRUE(slot.ok()) << slot.status();
    ASSERT_TRUE((*tier)->Write(*slot, Meta(seed, n), payload).ok());
    stored.emplace_back(*slot, seed);
  }
  for (auto& [slot, s] : stored) {
    auto info = (*tier)->Info(slot);
    ASSERT_TRUE(info.ok());
    std::vector<std::byte> out(info->stored_bytes + 7);
    auto read = (*tier)->Read(slot, out);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->meta.key, testing::Key(s));
    EXPECT_EQ(read->meta.layout_fingerprint, Meta(s, 0).layout_fingerprint);
    EXPECT_TRUE(PayloadMatches(s, std::span<const std::byte>(out.data(), read->stored_bytes)));
  }
  const TierStats stats = (*tier)->Stats();
  EXPECT_EQ(stats.blocks, std::size(sizes));
  EXPECT_EQ(stats.kind, TierKind::kHost);
  EXPECT_EQ(stats.capacity_bytes, 8 * kMiB);
}

TEST(HostTierTest, FullTierReportsNameAndFreeBytesAndKeepsData) {
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok());
  std::vector<std::byte> payload(2 * kMiB);
  FillPayload(9, payload);
  std::vector<SlotId> slots;
  for (int i = 0; i < 4; ++i) {
    auto slot = (*tier)->Allocate(payload.size());
    ASSERT_TRUE(slot.ok());
    ASSERT_TRUE((*tier)->Write(*slot, Meta(9, payload.size()), payload).ok());
    slots.push_back(*slot);
  }
  auto full = (*tier)->Allocate(1);
  ASSERT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("'host-test'"), absl::string_view::npos);
  EXPECT_NE(full.status().message().find("0 bytes free"), absl::string_view::npos);
  std::vector<std::byte> out(payload.size());
  for (const SlotId& s : slots) {
    ASSERT_TRUE((*tier)->Read(s, out).ok());
    EXPECT_EQ(out, payload);
  }
}

TEST(HostTierTest, WrongLengthsAreRefusedAndChangeNothing) {
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok());
  auto slot = (*tier)->Allocate(16 * kKiB);
  ASSERT_TRUE(slot.ok());
  std::vector<std::byte> payload(16 * kKiB, std::byte{0x5a});
  ASSERT_TRUE((*tier)->Write(*slot, Meta(1, payload.size()), payload).ok());
  std::vector<std::byte> too_long(16 * kKiB + 1);
  const absl::Status s = (*tier)->Write(*slot, Meta(2, too_long.size()), too_long);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("16385"), absl::string_view::npos) << s;
  std::vector<std::byte> small(100);
  EXPECT_EQ((*tier)->Read(*slot, small).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*tier)->Read(SlotId{7 * kMiB, 16 * kKiB}, payload).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<std::byte> out(16 * kKiB);
  auto info = (*tier)->Read(*slot, out);
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->meta.key, testing::Key(1));
  EXPECT_EQ(out, payload);
}

TEST(HostTierTest, TransportWritesThroughMemoryAndCommits) {
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok());
  auto slot = (*tier)->Allocate(64 * kKiB);
  ASSERT_TRUE(slot.ok());
  auto region = (*tier)->Memory(*slot);
  ASSERT_TRUE(region.ok());
  EXPECT_EQ(region->bytes, 64 * kKiB);
  EXPECT_FALSE(region->device_memory);
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(region->address) % 4096, 0u);
  FillPayload(77, std::span<std::byte>(region->address, 50'000));
  ASSERT_TRUE((*tier)->Commit(*slot, Meta(77, 50'000), 50'000).ok());
  std::vector<std::byte> out(50'000);
  ASSERT_TRUE((*tier)->Read(*slot, out).ok());
  EXPECT_TRUE(PayloadMatches(77, out));
}

TEST(HostTierTest, BindsToNumaNodeZero) {
  if (numa_available() < 0) GTEST_SKIP() << "no NUMA policy support in this kernel";
  HostTierOptions o = Small();
  o.numa_node = 0;
  auto tier = HostTier::Create(o);
  ASSERT_TRUE(tier.ok()) << tier.status();
  auto slot = (*tier)->Allocate(2 * kMiB);
  ASSERT_TRUE(slot.ok());
  auto region = (*tier)->Memory(*slot);
  ASSERT_TRUE(region.ok());
  EXPECT_EQ(region->numa_node, 0);
  // The policy on the range is MPOL_BIND to node 0, and the (prefaulted) pages are on node 0.
  int mode = -1;
  unsigned long mask = 0;
  ASSERT_EQ(get_mempolicy(&mode, &mask, sizeof(mask) * 8, region->address, MPOL_F_ADDR), 0);
  EXPECT_EQ(mode, MPOL_BIND);
  EXPECT_EQ(mask, 1ul);
  int node = -1;
  ASSERT_EQ(get_mempolicy(&node, nullptr, 0, region->address + 12345, MPOL_F_NODE | MPOL_F_ADDR),
            0);
  EXPECT_EQ(node, 0);
}

TEST(HostTierTest, UnknownNumaNodeIsInvalidArgument) {
  if (numa_available() < 0) GTEST_SKIP() << "no NUMA policy support in this kernel";
  HostTierOptions o = Small();
  o.numa_node = numa_max_node() + 1;
  auto tier = HostTier::Create(o);
  EXPECT_EQ(tier.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tier.status().message().find("does not exist"), absl::string_view::npos);
}

TEST(HostTierTest, TransparentHugePagesAreAdvised) {
  std::ifstream thp("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string mode;
  std::getline(thp, mode);
  if (mode.find("[never]") != std::string::npos || mode.empty()) {
    GTEST_SKIP() << "THP disabled on this host: " << mode;
  }
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok());
  EXPECT_TRUE((*tier)->transparent_huge_pages());
}

TEST(HostTierTest, HugetlbWithoutReservedPagesFailsLoudly) {
  std::ifstream f("/proc/sys/vm/nr_hugepages");
  long reserved = 0;
  f >> reserved;
  HostTierOptions o = Small();
  o.huge_pages = HugePages::kHugetlb;
  auto tier = HostTier::Create(o);
  if (reserved >= 4) {
    EXPECT_TRUE(tier.ok()) << tier.status();
    return;
  }
  ASSERT_EQ(tier.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(tier.status().message().find("nr_hugepages"), absl::string_view::npos);
}

TEST(HostTierTest, ConcurrentWritersAndReaders) {
  auto tier = HostTier::Create(Small());
  ASSERT_TRUE(tier.ok());
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::byte> payload(64 * kKiB);
      std::vector<std::byte> out(64 * kKiB);
      for (int i = 0; i < 50; ++i) {
        const std::uint64_t seed = static_cast<std::uint64_t>(t * 1000 + i);
        FillPayload(seed, payload);
        auto slot = (*tier)->Allocate(payload.size());
        ASSERT_TRUE(slot.ok());
        ASSERT_TRUE((*tier)->Write(*slot, Meta(seed, payload.size()), payload).ok());
        ASSERT_TRUE((*tier)->Read(*slot, out).ok());
        ASSERT_EQ(out, payload);
        ASSERT_TRUE((*tier)->Free(*slot).ok());
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ((*tier)->Stats().slots_in_use, 0u);
}

}  // namespace
}  // namespace cachesvc::tiers
