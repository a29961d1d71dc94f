#include "tiers/hbm_tier.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

constexpr std::uint64_t kMiB = 1 << 20;

HbmTierOptions Small() {
  HbmTierOptions o;
  o.capacity_bytes = 8 * kMiB;
  o.max_slot_bytes = 2 * kMiB;
  return o;
}

TEST(HbmTierTest, OptionsValidationNamesTheField) {
  HbmTierOptions o = Small();
  o.device = -1;
  EXPECT_NE(o.Validate().message().find("device"), absl::string_view::npos);
  o = Small();
  o.capacity_bytes = 1;
  EXPECT_NE(o.Validate().message().find("capacity_bytes"), absl::string_view::npos);
}

TEST(HbmTierTest, AbsentWithoutAGpu) {
  if (CudaDeviceCount() > 0) GTEST_SKIP() << "a GPU is present";
  auto tier = HbmTier::Create(Small());
  EXPECT_EQ(tier.status().code(), absl::StatusCode::kUnavailable);
}

TEST(HbmTierTest, RoundTripThroughDeviceMemoryAndIpcHandle) {
  if (CudaDeviceCount() == 0) GTEST_SKIP() << "no CUDA device";
  auto tier = HbmTier::Create(Small());
  ASSERT_TRUE(tier.ok()) << tier.status();
  std::vector<std::byte> in(1'500'000), out(1'500'000);
  testing::FillPayload(11, in);
  auto slot = (*tier)->Allocate(in.size());
  ASSERT_TRUE(slot.ok());
  ASSERT_TRUE((*tier)->Write(*slot, testing::Meta(11, in.size()), in).ok());
  ASSERT_TRUE((*tier)->Read(*slot, out).ok());
  EXPECT_EQ(out, in);
  auto region = (*tier)->Memory(*slot);
  ASSERT_TRUE(region.ok());
  EXPECT_TRUE(region->device_memory);
  bool any = false;
  for (unsigned char b : (*tier)->ipc_handle()) any |= b != 0;
  EXPECT_TRUE(any);
  EXPECT_EQ((*tier)->Allocate(3 * kMiB).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace cachesvc::tiers
