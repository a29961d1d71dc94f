#include "tiers/kv_codec_transform.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

namespace cachesvc::tiers {
namespace {

using kernels::CodecId;
using kernels::ValueType;

// fp16 bits of a float in [-4, 4] (normal range, round toward zero is enough for test data).
std::uint16_t ToFp16(float f) {
  std::uint32_t x;
  std::memcpy(&x, &f, 4);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  const int exp = static_cast<int>((x >> 23) & 0xff) - 127 + 15;
  if (exp <= 0) return static_cast<std::uint16_t>(sign);
  return static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exp) << 10) |
                                    ((x >> 13) & 0x3ffu));
}

std::vector<std::byte> Gaussian(std::size_t values, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<std::byte> out(values * 2);
  for (std::size_t i = 0; i < values; ++i) {
    const std::uint16_t h = ToFp16(dist(rng));
    std::memcpy(out.data() + 2 * i, &h, 2);
  }
  return out;
}

TEST(KvCodecTransformTest, Tq3ShrinksAndMatchesTheCodecApi) {
  auto t = KvCodecTransform::Create(CodecId::kTq3, ValueType::kFp16, 128);
  ASSERT_TRUE(t.ok()) << t.status();
  const std::vector<std::byte> raw = Gaussian(128 * 64, 1);
  std::vector<std::byte> enc((*t)->MaxEncodedBytes(raw.size()));
  EXPECT_LT(enc.size(), raw.size() / 4);  // ~5x smaller than fp16
  auto n = (*t)->Encode(raw, enc);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, enc.size());
  std::vector<std::byte> direct(enc.size());
  ASSERT_TRUE(
      kernels::Encode(CodecId::kTq3, ValueType::kFp16, 128, kernels::kDefaultSignSeed, raw, direct)
          .ok());
  EXPECT_EQ(enc, direct);
  std::vector<std::byte> back(raw.size());
  ASSERT_TRUE((*t)->Decode(enc, back).ok());
  std::vector<std::byte> want(raw.size());
  ASSERT_TRUE(kernels::Decode(CodecId::kTq3, ValueType::kFp16, 128, enc, want).ok());
  EXPECT_EQ(back, want);
}

TEST(KvCodecTransformTest, BadShapesAndCorruptBlocksAreErrors) {
  EXPECT_EQ(KvCodecTransform::Create(CodecId::kTq3, ValueType::kFp16, 100).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto t = KvCodecTransform::Create(CodecId::kTq4, ValueType::kFp16, 64);
  ASSERT_TRUE(t.ok());
  std::vector<std::byte> odd(128 * 3 + 2), out(4096);
  EXPECT_EQ((*t)->Encode(odd, out).status().code(), absl::StatusCode::kInvalidArgument);
  const std::vector<std::byte> raw = Gaussian(64 * 8, 2);
  std::vector<std::byte> enc((*t)->MaxEncodedBytes(raw.size()));
  ASSERT_TRUE((*t)->Encode(raw, enc).ok());
  std::vector<std::byte> back(raw.size());
  EXPECT_FALSE((*t)->Decode(std::span<const std::byte>(enc.data(), enc.size() - 1), back).ok());
  std::vector<std::byte> garbage(enc.size(), std::byte{0xff});
  EXPECT_FALSE((*t)->Decode(garbage, back).ok());
}

}  // namespace
}  // namespace cachesvc::tiers
