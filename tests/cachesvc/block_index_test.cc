#include "cachesvc/block_index.h"

#include <gtest/gtest.h>

#include <numeric>
#include <thread>
#include <vector>

namespace cachesvc {
namespace {

using tiers::TierKind;

std::vector<BlockKey> Chain(std::size_t blocks, std::uint32_t salt = 0) {
  std::vector<std::uint32_t> tokens(blocks * 4);
  std::iota(tokens.begin(), tokens.end(), salt * 100000);
  return *DeriveBlockKeys(KeyChainSeed("t", 1), tokens, 4);
}

BlockEntry Fresh(std::uint32_t raw_bytes = 4096) {
  BlockEntry e;
  e.layout_fingerprint = 77;
  e.raw_bytes = raw_bytes;
  return e;
}

TierCopy At(std::uint64_t offset, kernels::CodecId codec = kernels::CodecId::kRaw) {
  return TierCopy{offset, 4096, 14, codec};
}

TEST(BlockIndexTest, CopiesPerTierAndErasureWhenUnused) {
  BlockIndex index;
  const BlockKey k = Chain(1)[0];
  EXPECT_FALSE(index.Contains(k));
  index.AddCopy(k, TierKind::kHost, At(1 << 14), Fresh());
  index.AddCopy(k, TierKind::kNvme, At(5 << 14, kernels::CodecId::kTq3), Fresh(1));
  auto e = index.Get(k);
  ASSERT_TRUE(e);
  EXPECT_TRUE(e->In(TierKind::kHost));
  EXPECT_TRUE(e->In(TierKind::kNvme));
  EXPECT_FALSE(e->In(TierKind::kHbm));
  EXPECT_EQ(e->raw_bytes, 4096u);  // the second AddCopy's fresh fields do not overwrite
  EXPECT_EQ(e->Copy(TierKind::kNvme), At(5 << 14, kernels::CodecId::kTq3));
  EXPECT_EQ(index.RemoveCopy(k, TierKind::kHost), At(1 << 14));
  EXPECT_FALSE(index.RemoveCopy(k, TierKind::kHost).has_value());
  EXPECT_TRUE(index.Contains(k));
  EXPECT_TRUE(index.RemoveCopy(k, TierKind::kNvme).has_value());
  EXPECT_FALSE(index.Contains(k)) << "an entry without copies or references goes";
  EXPECT_EQ(index.Size(), 0u);
}

TEST(BlockIndexTest, ReferencedEntriesOutliveTheirCopies) {
  BlockIndex index;
  const BlockKey k = Chain(1)[0];
  index.AddCopy(k, TierKind::kHost, At(0), Fresh());
  ASSERT_TRUE(index.Update(k, [](BlockEntry& e) { ++e.session_refs; }));
  index.RemoveCopy(k, TierKind::kHost);
  EXPECT_TRUE(index.Contains(k)) << "a session still references it";
  EXPECT_TRUE(index.Update(k, [](BlockEntry& e) { --e.session_refs; }));
  EXPECT_FALSE(index.Contains(k));
  EXPECT_FALSE(index.Update(k, [](BlockEntry&) { ADD_FAILURE() << "no entry to update"; }));
}

TEST(BlockIndexTest, LongestCachedPrefixStopsAtTheFirstGap) {
  BlockIndex index(4);
  const auto chain = Chain(10);
  for (std::size_t i = 0; i < 10; ++i) {
    if (i == 6) continue;  // a gap
    index.AddCopy(chain[i], i < 3 ? TierKind::kHost : TierKind::kNvme, At(i << 14), Fresh());
  }
  EXPECT_EQ(index.LongestCachedPrefix(chain), 6u);
  EXPECT_EQ(index.LongestCachedPrefix(chain, TierBit(TierKind::kHost)), 3u);
  EXPECT_EQ(index.LongestCachedPrefix(chain, TierBit(TierKind::kHbm)), 0u);
  EXPECT_EQ(index.LongestCachedPrefix({}), 0u);
  // Another prompt sharing only the first block.
  auto other = Chain(3, 7);
  other[0] = chain[0];
  EXPECT_EQ(index.LongestCachedPrefix(other), 1u);
}

TEST(BlockIndexTest, PrefixLookupTouchesOnlyTheHits) {
  BlockIndex index;
  const auto chain = Chain(4);
  for (int i = 0; i < 3; ++i) index.AddCopy(chain[i], TierKind::kHost, At(0), Fresh());
  index.Erase(chain[1]);
  EXPECT_EQ(index.LongestCachedPrefix(chain, kAllTiers, 500), 1u);
  EXPECT_EQ(index.Get(chain[0])->last_access_us, 500);
  EXPECT_EQ(index.Get(chain[0])->accesses, 1u);
  EXPECT_EQ(index.Get(chain[2])->accesses, 0u) << "past the gap: not a hit";
  EXPECT_EQ(index.LongestCachedPrefix(chain), 1u);
  EXPECT_EQ(index.Get(chain[0])->accesses, 1u) << "no time given: a pure query";
}

TEST(BlockIndexTest, ReusesEntrySlotsAndForEachSeesEverything) {
  BlockIndex index(2);
  const auto chain = Chain(3000);
  for (const auto& k : chain) index.AddCopy(k, TierKind::kHost, At(0), Fresh());
  for (std::size_t i = 0; i < chain.size(); i += 2) index.Erase(chain[i]);
  for (std::size_t i = 0; i < chain.size(); i += 2)
    index.AddCopy(chain[i], TierKind::kNvme, At(1), Fresh(9));
  EXPECT_EQ(index.Size(), 3000u);
  std::size_t host = 0, nvme = 0;
  index.ForEach([&](const BlockKey&, const BlockEntry& e) {
    host += e.In(TierKind::kHost);
    nvme += e.In(TierKind::kNvme);
    EXPECT_NE(e.In(TierKind::kHost), e.In(TierKind::kNvme));  // a reused slot starts clean
  });
  EXPECT_EQ(host, 1500u);
  EXPECT_EQ(nvme, 1500u);
}

TEST(BlockIndexTest, EntriesAreCompact) {
  EXPECT_LE(sizeof(BlockEntry), 72u);
  BlockIndex index(16);
  const auto chain = Chain(200'000);
  for (const auto& k : chain) index.AddCopy(k, TierKind::kHost, At(0), Fresh());
  RecordProperty("bytes_per_entry", std::to_string(index.BytesPerEntry()));
  EXPECT_LE(index.BytesPerEntry(), 128.0);
}

TEST(BlockIndexTest, ConcurrentWritersAndReaders) {
  BlockIndex index(8);
  const auto chain = Chain(1200);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < chain.size(); i += 4) {
        index.AddCopy(chain[i], TierKind::kHost, At(i), Fresh());
        index.Update(chain[i], [](BlockEntry& e) { ++e.leases; });
        (void)index.LongestCachedPrefix(std::span(chain).first(i + 1), kAllTiers, 1);
        index.Update(chain[i], [](BlockEntry& e) { --e.leases; });
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(index.Size(), chain.size());
  EXPECT_EQ(index.LongestCachedPrefix(chain), chain.size());
}

}  // namespace
}  // namespace cachesvc
