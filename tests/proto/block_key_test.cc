#include "proto/block_key.h"

#include <gtest/gtest.h>

#include <numeric>
#include <vector>

#include "absl/container/flat_hash_set.h"

namespace cachesvc {
namespace {

std::vector<uint32_t> Iota(std::size_t n, uint32_t start = 0) {
  std::vector<uint32_t> v(n);
  std::iota(v.begin(), v.end(), start);
  return v;
}

// Keys order as byte strings and compare equal only when every byte does, whatever the words
// the comparison reads them as (regression guard for the word-wise operators).
TEST(BlockKeyTest, OrderIsByteOrderAndEqualityIsEveryByte) {
  std::vector<BlockKey> keys;
  for (std::size_t byte : {0u, 7u, 8u, 15u}) {
    for (std::uint8_t v : {std::uint8_t{1}, std::uint8_t{0x80}, std::uint8_t{0xff}}) {
      BlockKey k;
      k.bytes[byte] = v;
      keys.push_back(k);
    }
  }
  for (const BlockKey& a : keys) {
    for (const BlockKey& b : keys) {
      EXPECT_EQ(a == b, a.bytes == b.bytes);
      EXPECT_EQ(a < b, a.bytes < b.bytes) << a.Hex() << " " << b.Hex();
      EXPECT_EQ(a > b, a.bytes > b.bytes);
    }
  }
  absl::flat_hash_set<BlockKey> set(keys.begin(), keys.end());
  EXPECT_EQ(set.size(), keys.size());
  BlockKey copy = keys[5];
  EXPECT_TRUE(set.contains(copy));
  copy.bytes[15] ^= 1;
  EXPECT_NE(copy, keys[5]);
}

TEST(BlockKeyTest, OnlyFullBlocksHaveKeys) {
  const BlockKey seed = KeyChainSeed("salt", 42);
  for (std::size_t n : {0u, 1u, 15u, 16u, 17u, 31u, 32u, 100u}) {
    auto keys = DeriveBlockKeys(seed, Iota(n), 16);
    ASSERT_TRUE(keys.ok());
    EXPECT_EQ(keys->size(), n / 16) << n;
  }
}

TEST(BlockKeyTest, TailTokensDoNotChangeKeys) {
  const BlockKey seed = KeyChainSeed("salt", 42);
  auto full = DeriveBlockKeys(seed, Iota(32), 16);
  auto with_tail = DeriveBlockKeys(seed, Iota(45), 16);
  ASSERT_TRUE(full.ok() && with_tail.ok());
  EXPECT_EQ(*full, *with_tail);
}

TEST(BlockKeyTest, KeyNamesWholePrefix) {
  const BlockKey seed = KeyChainSeed("salt", 42);
  std::vector<uint32_t> a = Iota(48);
  std::vector<uint32_t> b = a;
  b[3] = 999;  // differs in block 0 only
  auto ka = DeriveBlockKeys(seed, a, 16);
  auto kb = DeriveBlockKeys(seed, b, 16);
  ASSERT_TRUE(ka.ok() && kb.ok());
  for (std::size_t i = 0; i < 3; ++i) EXPECT_NE((*ka)[i], (*kb)[i]) << "block " << i;
  // The chain equals step-by-step derivation.
  EXPECT_EQ((*ka)[1], NextBlockKey((*ka)[0], std::span(a).subspan(16, 16)));
}

TEST(BlockKeyTest, TenantAndLayoutSeparateKeys) {
  const std::vector<uint32_t> tokens = Iota(16);
  absl::flat_hash_set<BlockKey> seen;
  for (std::string_view salt : {"", "a", "b", "ab"}) {
    for (uint64_t fp : {0ull, 1ull, 0xffffffffffffffffull}) {
      auto keys = DeriveBlockKeys(KeyChainSeed(salt, fp), tokens, 16);
      ASSERT_TRUE(keys.ok());
      EXPECT_TRUE(seen.insert((*keys)[0]).second)
          << "collision for salt '" << salt << "' fp " << fp;
    }
  }
}

TEST(BlockKeyTest, ZeroBlockTokensIsAnError) {
  auto keys = DeriveBlockKeys(KeyChainSeed("", 1), Iota(4), 0);
  EXPECT_EQ(keys.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(BlockKeyTest, HexAndBytesRoundTrip) {
  const BlockKey key = KeyChainSeed("x", 7);
  auto from_hex = BlockKey::FromHex(key.Hex());
  ASSERT_TRUE(from_hex.ok());
  EXPECT_EQ(*from_hex, key);
  auto upper = BlockKey::FromHex("00112233445566778899AABBCCDDEEFF");
  ASSERT_TRUE(upper.ok());
  EXPECT_EQ(upper->Hex(), "00112233445566778899aabbccddeeff");
  auto from_bytes = BlockKey::FromBytes(key.Bytes());
  ASSERT_TRUE(from_bytes.ok());
  EXPECT_EQ(*from_bytes, key);
}

TEST(BlockKeyTest, MalformedKeysAreRejected) {
  EXPECT_EQ(BlockKey::FromBytes("short").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(BlockKey::FromBytes(std::string(17, 'x')).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(BlockKey::FromHex("00112233").ok());
  EXPECT_FALSE(BlockKey::FromHex("zz112233445566778899aabbccddeeff").ok());
}

}  // namespace
}  // namespace cachesvc
