#include "tiers/block_transform.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

TEST(BlockTransformTest, RawIsAnExactCopyBothWays) {
  RawTransform raw;
  EXPECT_EQ(raw.codec(), kernels::CodecId::kRaw);
  std::vector<std::byte> in(12345), enc(raw.MaxEncodedBytes(in.size())), out(in.size());
  testing::FillPayload(3, in);
  auto n = raw.Encode(in, enc);
  ASSERT_TRUE(n.ok());
  EXPECT_EQ(*n, in.size());
  ASSERT_TRUE(raw.Decode(std::span<const std::byte>(enc.data(), *n), out).ok());
  EXPECT_EQ(out, in);
}

TEST(BlockTransformTest, RawRefusesWrongSizes) {
  RawTransform raw;
  std::vector<std::byte> in(100), small(99), out(101);
  EXPECT_EQ(raw.Encode(in, small).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(raw.Decode(in, out).code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlockTransformTest, FunctionTransformForwardsToTheCallables) {
  int encodes = 0;
  FunctionTransform t(
      kernels::CodecId::kTq4, [](std::uint64_t n) { return n / 2 + 1; },
      [&](std::span<const std::byte> raw,
          std::span<std::byte> out) -> absl::StatusOr<std::uint64_t> {
        ++encodes;
        out[0] = raw[0];
        return 1;
      },
      [](std::span<const std::byte>, std::span<std::byte>) {
        return absl::DataLossError("bad block");
      });
  EXPECT_EQ(t.codec(), kernels::CodecId::kTq4);
  EXPECT_EQ(t.MaxEncodedBytes(100), 51u);
  std::vector<std::byte> in(4, std::byte{7}), out(3);
  EXPECT_EQ(*t.Encode(in, out), 1u);
  EXPECT_EQ(out[0], std::byte{7});
  EXPECT_EQ(encodes, 1);
  EXPECT_EQ(t.Decode(out, in).code(), absl::StatusCode::kDataLoss);
}

}  // namespace
}  // namespace cachesvc::tiers
