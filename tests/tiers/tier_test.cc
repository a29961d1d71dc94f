// The Tier contract (tiers/tier.h), checked the same way for every implementation: host, NVMe,
// and HBM where a GPU is present.
#include "tiers/tier.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>
#include <memory>
#include <ostream>
#include <vector>

#include "tests/tiers/test_util.h"
#include "tiers/hbm_tier.h"
#include "tiers/host_tier.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

using std::chrono::milliseconds;
using testing::AlignedBuffer;
using testing::FillPayload;
using testing::Meta;
using testing::PayloadMatches;
constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

// Builds a 4 MiB tier of 1 MiB chunks on `env`, or skips the test.
// `dir` is a fresh folder for tiers that need files.
using Factory =
    std::function<absl::StatusOr<std::unique_ptr<Tier>>(Env*, const std::filesystem::path&)>;

struct Param {
  const char* name;
  Factory make;
};
void PrintTo(const Param& p, std::ostream* os) { *os << p.name; }

class TierContractTest : public ::testing::TestWithParam<Param> {
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testing::ScopedDir>(testing::TestName());
    auto tier = GetParam().make(&env_, dir_->path());
    if (absl::IsUnavailable(tier.status())) GTEST_SKIP() << tier.status();
    ASSERT_TRUE(tier.ok()) << tier.status();
    tier_ = std::move(*tier);
  }

  SlotId Put(std::uint64_t seed, std::uint64_t bytes) {
    AlignedBuffer p(bytes);
    FillPayload(seed, p.span());
    auto slot = tier_->Allocate(bytes);
    EXPECT_TRUE(slot.ok()) << slot.status();
    EXPECT_TRUE(tier_->Write(*slot, Meta(seed, bytes), p.cspan()).ok());
    return *slot;
  }

  void Expect(SlotId slot, std::uint64_t seed, std::uint64_t bytes) {
    AlignedBuffer out(bytes);
    auto info = tier_->Read(slot, out.span());
    ASSERT_TRUE(info.ok()) << info.status();
    EXPECT_EQ(info->stored_bytes, bytes);
    EXPECT_TRUE(PayloadMatches(seed, out.cspan()));
  }

  std::unique_ptr<testing::ScopedDir> dir_;
  ManualEnv env_;
  std::unique_ptr<Tier> tier_;
};

TEST_P(TierContractTest, RoundTripAndStats) {
  const SlotId a = Put(1, 300'000);
  const SlotId b = Put(2, 1 * kMiB);
  Expect(a, 1, 300'000);
  Expect(b, 2, 1 * kMiB);
  const TierStats s = tier_->Stats();
  EXPECT_EQ(s.name, tier_->name());
  EXPECT_EQ(s.kind, tier_->kind());
  EXPECT_EQ(s.capacity_bytes, 4 * kMiB);
  EXPECT_EQ(s.blocks, 2u);
  EXPECT_EQ(s.stored_bytes, 1 * kMiB + 300'000);
  EXPECT_EQ(s.allocated_bytes, 1 * kMiB + 512 * kKiB);
  EXPECT_EQ(s.free_bytes, 4 * kMiB - s.allocated_bytes);
  EXPECT_EQ(s.writes, 2u);
  EXPECT_EQ(s.reads, 2u);
}

TEST_P(TierContractTest, FullIsResourceExhaustedNamingTierAndFreeBytes) {
  std::vector<SlotId> slots;
  for (std::uint64_t i = 0; i < 4; ++i) slots.push_back(Put(i, 1 * kMiB));
  auto full = tier_->Allocate(1 * kMiB);
  ASSERT_EQ(full.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(full.status().message().find("'" + tier_->name() + "'"), absl::string_view::npos);
  EXPECT_NE(full.status().message().find("0 bytes free"), absl::string_view::npos);
  for (std::uint64_t i = 0; i < 4; ++i) Expect(slots[i], i, 1 * kMiB);
}

TEST_P(TierContractTest, LeasePinsAgainstRewriteAndReuse) {
  const SlotId a = Put(1, 1 * kMiB);
  auto lease = tier_->AcquireLease(a, milliseconds(1000));
  ASSERT_TRUE(lease.ok());
  AlignedBuffer other(1 * kMiB);
  EXPECT_EQ(tier_->Write(a, Meta(9, other.size()), other.cspan()).code(),
            absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(tier_->Free(a).ok());
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(tier_->Allocate(1 * kMiB).ok());
  EXPECT_EQ(tier_->Allocate(1 * kMiB).status().code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(tier_->ReleaseLease(*lease).ok());
  EXPECT_TRUE(tier_->Allocate(1 * kMiB).ok());
}

TEST_P(TierContractTest, LeaseExpiryAndAllocationTtlReclaim) {
  const SlotId a = Put(1, 64 * kKiB);
  ASSERT_TRUE(tier_->AcquireLease(a, milliseconds(100)).ok());
  ASSERT_TRUE(tier_->Free(a).ok());
  ASSERT_TRUE(tier_->Allocate(64 * kKiB).ok());  // never written
  EXPECT_EQ(tier_->Stats().slots_in_use, 2u);
  env_.Advance(milliseconds(1000));
  EXPECT_EQ(tier_->ExpireLeases(), 2u);
  EXPECT_EQ(tier_->Stats().slots_in_use, 0u);
}

TEST_P(TierContractTest, BadArgumentsChangeNothing) {
  const SlotId a = Put(1, 64 * kKiB);
  AlignedBuffer big(64 * kKiB + 1);
  EXPECT_EQ(tier_->Write(a, Meta(2, big.size()), big.cspan()).code(),
            absl::StatusCode::kInvalidArgument);
  AlignedBuffer small(4096);
  EXPECT_EQ(tier_->Read(a, small.span()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier_->Free(SlotId{3 * kMiB, 64 * kKiB}).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier_->Allocate(0).status().code(), absl::StatusCode::kInvalidArgument);
  Expect(a, 1, 64 * kKiB);
}

[[nodiscard]] absl::StatusOr<std::unique_ptr<Tier>> MakeHost(Env* env,
                                                             const std::filesystem::path&) {
  HostTierOptions o;
  o.name = "host-contract";
  o.capacity_bytes = 4 * kMiB;
  o.max_slot_bytes = 1 * kMiB;
  o.slots.allocation_ttl = milliseconds(500);
  auto t = HostTier::Create(o, env);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Tier>(std::move(*t));
}

[[nodiscard]] absl::StatusOr<std::unique_ptr<Tier>> MakeNvme(Env* env,
                                                             const std::filesystem::path& dir) {
  NvmeTierOptions o;
  o.name = "nvme-contract";
  o.data_path = dir / "slots.dat";
  o.index_path = dir / "index";
  o.capacity_bytes = 4 * kMiB;
  o.max_slot_bytes = 1 * kMiB;
  o.slots.allocation_ttl = milliseconds(500);
  auto t = NvmeTier::Open(o, env);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Tier>(std::move(*t));
}

[[nodiscard]] absl::StatusOr<std::unique_ptr<Tier>> MakeHbm(Env* env,
                                                            const std::filesystem::path&) {
  HbmTierOptions o;
  o.name = "hbm-contract";
  o.capacity_bytes = 4 * kMiB;
  o.max_slot_bytes = 1 * kMiB;
  o.slots.allocation_ttl = milliseconds(500);
  auto t = HbmTier::Create(o, env);
  if (!t.ok()) return t.status();
  return std::unique_ptr<Tier>(std::move(*t));
}

INSTANTIATE_TEST_SUITE_P(Tiers, TierContractTest,
                         ::testing::Values(Param{"host", MakeHost}, Param{"nvme", MakeNvme},
                                           Param{"hbm", MakeHbm}),
                         [](const auto& p) { return std::string(p.param.name); });

TEST(TierNamesTest, KindsAndHex) {
  EXPECT_STREQ(TierKindName(TierKind::kHbm), "hbm");
  EXPECT_STREQ(TierKindName(TierKind::kHost), "host");
  EXPECT_STREQ(TierKindName(TierKind::kNvme), "nvme");
  BlockId id{};
  id[0] = 0xab;
  id[15] = 0x01;
  EXPECT_EQ(BlockIdHex(id), "ab000000000000000000000000000001");
}

}  // namespace
}  // namespace cachesvc::tiers
