#include "cachesvc/cache_engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <list>
#include <map>
#include <set>
#include <vector>

#include "cachesvc/tool_history.h"
#include "nlohmann/json.hpp"

namespace cachesvc {
namespace {

using tiers::TierKind;

BlockKey Key(std::uint64_t id) {
  BlockKey k;
  for (int i = 0; i < 8; ++i) k.bytes[i] = static_cast<std::uint8_t>(id >> (8 * i));
  k.bytes[15] = 0xa5;
  return k;
}

std::vector<BlockKey> Keys(const std::vector<std::uint64_t>& ids) {
  std::vector<BlockKey> out;
  for (auto id : ids) out.push_back(Key(id));
  return out;
}

TierCapacity Capacity(std::uint64_t hbm, std::uint64_t host = 0, std::uint64_t nvme = 0) {
  TierCapacity c;
  c.blocks = {hbm, host, nvme};
  return c;
}

// A brute-force LRU over block ids, written from the definition of a request's three steps and
// nothing else: it hits on the longest prefix of its ids that are cached, each of which becomes
// the most recent in order (load); each id no tier holds gets a slot, the least recent cached id
// not of this request leaving while the cache and the slots taken would exceed the capacity
// (reserve; the first id that finds no slot, nothing else being left to leave, ends it); then
// each id of the request, in order, still cached or just given a slot, becomes the most recent
// (commit).
class ReferenceLru {
 public:
  explicit ReferenceLru(std::size_t capacity) : capacity_(capacity) {}
  std::size_t Serve(const std::vector<std::uint64_t>& ids) {
    std::size_t hits = 0;
    while (hits < ids.size() && Cached(ids[hits])) ++hits;
    for (std::size_t i = 0; i < hits; ++i) {  // loaded: each becomes the most recent
      order_.erase(std::find(order_.begin(), order_.end(), ids[i]));
      order_.push_front(ids[i]);
    }
    std::set<std::uint64_t> reserved;
    const std::set<std::uint64_t> own(ids.begin(), ids.end());
    for (std::size_t i = hits; i < ids.size(); ++i) {
      if (Cached(ids[i]) || reserved.count(ids[i]) != 0) continue;
      while (order_.size() + reserved.size() >= capacity_) {  // the least recent not its own goes
        auto victim = std::find_if(order_.rbegin(), order_.rend(),
                                   [&](std::uint64_t id) { return own.count(id) == 0; });
        if (victim == order_.rend()) break;
        order_.erase(std::next(victim).base());
      }
      if (order_.size() + reserved.size() >= capacity_) break;  // no slot: the rest is not saved
      reserved.insert(ids[i]);
    }
    for (auto id : ids) {
      auto it = std::find(order_.begin(), order_.end(), id);
      if (it != order_.end()) {
        order_.erase(it);
      } else if (reserved.erase(id) == 0) {
        continue;
      }
      order_.push_front(id);
    }
    return hits;
  }

 private:
  bool Cached(std::uint64_t id) const {
    return std::find(order_.begin(), order_.end(), id) != order_.end();
  }
  std::size_t capacity_;
  std::list<std::uint64_t> order_;
};

std::vector<std::vector<std::uint64_t>> MooncakeSample(std::size_t lines) {
  std::ifstream in(CACHESVC_SOURCE_DIR "/../shared/traces/mooncake-conversation_trace.jsonl");
  std::vector<std::vector<std::uint64_t>> out;
  for (std::string line; out.size() < lines && std::getline(in, line);) {
    out.push_back(nlohmann::json::parse(line)["hash_ids"].get<std::vector<std::uint64_t>>());
  }
  return out;
}

TEST(CacheEngineTest, LruHbmAgreesWithBruteForceLruOnMooncakeSample) {
  const auto requests = MooncakeSample(1500);
  if (requests.empty()) GTEST_SKIP() << "shared/traces is not beside the checkout";
  ASSERT_EQ(requests.size(), 1500u);
  for (std::size_t capacity : {64u, 500u, 2000u}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    BlockIndex index(1);
    auto policy = MakeLruPolicy(/*cascade=*/false);
    CacheEngine engine(&index, policy.get(), Capacity(capacity));
    ReferenceLru reference(capacity);
    std::size_t total_hits = 0;
    for (std::size_t r = 0; r < requests.size(); ++r) {
      const ServeResult got = engine.Serve(Keys(requests[r]), static_cast<std::int64_t>(r));
      const std::size_t want = reference.Serve(requests[r]);
      ASSERT_EQ(got.prefix_hits, want) << "request " << r;
      total_hits += want;
    }
    EXPECT_LE(engine.Used(TierKind::kHbm), capacity);
    EXPECT_EQ(index.Size(), engine.Used(TierKind::kHbm));
    if (capacity >= 500) {
      EXPECT_GT(total_hits, 0u) << "a test that never hits proves nothing";
    }
  }
}

// Belady written from its definition: at each eviction, the cached block whose next use (the next
// request containing it, after the current one) is farthest, ties to the larger key. Evictions
// make room for the request's missing blocks, which join the cache once all have a slot (the
// engine's reserve and commit steps).
std::size_t ReferenceBelady(const std::vector<std::vector<std::uint64_t>>& requests,
                            std::size_t capacity) {
  std::map<std::uint64_t, std::vector<std::size_t>> uses;  // id -> requests using it, increasing
  for (std::size_t r = 0; r < requests.size(); ++r) {
    for (auto id : requests[r]) {
      if (uses[id].empty() || uses[id].back() != r) uses[id].push_back(r);
    }
  }
  std::set<std::uint64_t> cache;
  std::size_t hits = 0;
  for (std::size_t r = 0; r < requests.size(); ++r) {
    std::size_t h = 0;
    while (h < requests[r].size() && cache.count(requests[r][h]) != 0) ++h;
    hits += h;
    std::set<std::uint64_t> reserved;
    const std::set<std::uint64_t> own(requests[r].begin(), requests[r].end());
    for (std::size_t i = h; i < requests[r].size(); ++i) {
      const std::uint64_t id = requests[r][i];
      if (cache.count(id) != 0 || reserved.count(id) != 0) continue;
      if (cache.size() + reserved.size() >= capacity) {  // evict one, not of this request
        std::pair<std::size_t, BlockKey> worst{0, BlockKey{}};
        std::uint64_t victim = 0;
        bool first = true;
        for (auto c : cache) {
          if (own.count(c) != 0) continue;
          const auto& u = uses[c];
          const auto after = std::upper_bound(u.begin(), u.end(), r);
          const std::size_t next = after == u.end() ? SIZE_MAX : *after;
          const std::pair<std::size_t, BlockKey> rank{next, Key(c)};
          if (first || rank > worst) worst = rank, victim = c, first = false;
        }
        if (!first) cache.erase(victim);
      }
      if (cache.size() + reserved.size() >= capacity) break;  // no slot: the rest is not saved
      reserved.insert(id);
    }
    cache.insert(reserved.begin(), reserved.end());
  }
  return hits;
}

TEST(CacheEngineTest, BeladyAgreesWithBruteForceAndBoundsLru) {
  auto requests = MooncakeSample(600);
  if (requests.empty()) GTEST_SKIP() << "shared/traces is not beside the checkout";
  for (std::size_t capacity : {40u, 200u}) {
    SCOPED_TRACE("capacity " + std::to_string(capacity));
    std::vector<std::vector<BlockKey>> future;
    for (const auto& r : requests) future.push_back(Keys(r));
    BlockIndex index(1);
    auto belady = MakeBeladyPolicy(future);
    CacheEngine engine(&index, belady.get(), Capacity(capacity));
    BlockIndex lru_index(1);
    auto lru = MakeLruPolicy(false);
    CacheEngine lru_engine(&lru_index, lru.get(), Capacity(capacity));
    std::size_t hits = 0, lru_hits = 0;
    for (std::size_t r = 0; r < future.size(); ++r) {
      hits += engine.Serve(future[r], static_cast<std::int64_t>(r)).prefix_hits;
      lru_hits += lru_engine.Serve(future[r], static_cast<std::int64_t>(r)).prefix_hits;
    }
    EXPECT_EQ(hits, ReferenceBelady(requests, capacity));
    EXPECT_GE(hits, lru_hits);
  }
}

TEST(CacheEngineTest, TieredLruDemotesAndHitsFromTheSlowerTier) {
  BlockIndex index;
  auto policy = MakeLruPolicy(/*cascade=*/true);
  CacheEngine engine(&index, policy.get(), Capacity(2, 2, 0));
  EXPECT_EQ(engine.Serve(Keys({1, 2}), 1).prefix_hits, 0u);
  EXPECT_EQ(engine.Serve(Keys({3, 4}), 2).prefix_hits, 0u);  // 1, 2 demoted to host
  EXPECT_EQ(engine.stats().demoted_from[static_cast<unsigned>(TierKind::kHbm)], 2u);
  EXPECT_EQ(engine.Used(TierKind::kHost), 2u);
  const ServeResult r = engine.Serve(Keys({1, 2}), 3);
  EXPECT_EQ(r.prefix_hits, 2u);
  EXPECT_EQ(r.hits_from[static_cast<unsigned>(TierKind::kHost)], 2u);
  EXPECT_EQ(r.computed, 0u);
  // 1 and 2 are promoted back, each displacing 3 or 4 from HBM. Their host copies are what is
  // being loaded, so the full host tier (the last tier) cannot take 3 and 4: they are dropped.
  for (std::uint64_t k : {1, 2}) {
    EXPECT_EQ(index.Get(Key(k))->tiers, TierBit(TierKind::kHbm) | TierBit(TierKind::kHost)) << k;
  }
  for (std::uint64_t k : {3, 4}) EXPECT_FALSE(index.Contains(Key(k))) << k;
  EXPECT_EQ(engine.Used(TierKind::kHbm), 2u);
  EXPECT_EQ(engine.Used(TierKind::kHost), 2u);
  EXPECT_EQ(engine.stats().dropped_from[static_cast<unsigned>(TierKind::kHbm)], 2u);
  EXPECT_EQ(engine.stats().promoted, 2u);
}

TEST(CacheEngineTest, HbmOnlyDropsWhatItEvicts) {
  BlockIndex index;
  auto policy = MakeLruPolicy(/*cascade=*/false);
  CacheEngine engine(&index, policy.get(), Capacity(3));
  engine.Serve(Keys({1, 2, 3}), 1);
  engine.Serve(Keys({4}), 2);
  EXPECT_FALSE(index.Contains(Key(1)));
  EXPECT_EQ(engine.stats().dropped_from[static_cast<unsigned>(TierKind::kHbm)], 1u);
  EXPECT_EQ(engine.Serve(Keys({2, 3}), 3).prefix_hits, 2u);
}

TEST(CacheEngineTest, AChainLongerThanTheTierSavesItsHead) {
  BlockIndex index;
  auto policy = MakeLruPolicy(false);
  CacheEngine engine(&index, policy.get(), Capacity(3));
  engine.Serve(Keys({1, 2}), 1);
  // 1 and 2 hit; 3..6 need four slots, the tier has one besides the prefix's two (which are not
  // evicted for their own chain): 3 is saved, the rest is not.
  const ServeResult r = engine.Serve(Keys({1, 2, 3, 4, 5, 6}), 2);
  EXPECT_EQ(r.prefix_hits, 2u);
  EXPECT_EQ(r.computed, 4u);
  EXPECT_EQ(r.not_admitted, 3u);
  EXPECT_TRUE(index.Contains(Key(3)));
  EXPECT_FALSE(index.Contains(Key(4)));
  EXPECT_EQ(engine.Serve(Keys({1, 2, 3, 4}), 3).prefix_hits, 3u);
}

// What the fastest tier cannot take goes to the next tier down, so a chain longer than HBM is
// still cached whole.
TEST(CacheEngineTest, WhatTheFastestTierCannotTakeGoesBelow) {
  BlockIndex index;
  auto policy = MakeLruPolicy(/*cascade=*/true);
  CacheEngine engine(&index, policy.get(), Capacity(2, 10));
  const ServeResult r = engine.Serve(Keys({1, 2, 3, 4, 5}), 1);
  EXPECT_EQ(r.not_admitted, 0u);
  for (std::uint64_t k : {1, 2}) EXPECT_TRUE(index.Get(Key(k))->In(TierKind::kHbm)) << k;
  for (std::uint64_t k : {3, 4, 5}) EXPECT_TRUE(index.Get(Key(k))->In(TierKind::kHost)) << k;
  EXPECT_EQ(engine.Serve(Keys({1, 2, 3, 4, 5}), 2).prefix_hits, 5u);
}

// A leased block (a client is reading it) is never a victim, and skipping it changes nothing in
// the policy's order: it is still the next to go once its lease ends.
TEST(CacheEngineTest, ALeasedBlockIsSkippedNotTouched) {
  BlockIndex index;
  auto policy = MakeLruPolicy(false);
  CacheEngine engine(&index, policy.get(), Capacity(3));
  engine.Serve(Keys({1}), 1);
  engine.Serve(Keys({2}), 2);
  engine.Serve(Keys({3}), 3);
  index.Update(Key(1), [](BlockEntry& e) { ++e.leases; });
  engine.Serve(Keys({4}), 4);  // 1 is the least recent but leased: 2 goes
  EXPECT_TRUE(index.Contains(Key(1)));
  EXPECT_FALSE(index.Contains(Key(2)));
  index.Update(Key(1), [](BlockEntry& e) { --e.leases; });
  engine.Serve(Keys({5}), 5);  // 1 is still the least recent (not touched by being skipped)
  EXPECT_FALSE(index.Contains(Key(1)));
  EXPECT_TRUE(index.Contains(Key(3)));
}

TEST(CacheEngineTest, NoTiersMeansNothingIsCached) {
  BlockIndex index;
  auto policy = MakeLruPolicy(false);
  CacheEngine engine(&index, policy.get(), Capacity(0));
  const ServeResult r = engine.Serve(Keys({1, 2}), 1);
  EXPECT_EQ(r.computed, 2u);
  EXPECT_EQ(r.not_admitted, 2u);
  EXPECT_EQ(index.Size(), 0u);
}

}  // namespace
}  // namespace cachesvc

namespace cachesvc {
namespace {

TEST(ToolCallPolicyTest, TtlPinKeepsAWaitingSessionOverNewerBlocksUntilTheTtl) {
  BlockIndex index;
  auto policy = MakeTtlPinPolicy(/*ttl_us=*/10);
  CacheEngine engine(&index, policy.get(), Capacity(4, 100, 0));
  engine.Serve(Keys({1, 2}), 0);
  engine.ToolCallStarted(7, Keys({1, 2}), 1, 50);  // pinned until 11
  engine.Serve(Keys({3, 4}), 2);
  engine.Serve(Keys({5, 6}), 3);  // HBM full: 3 and 4 (unpinned) leave, not 1 and 2
  EXPECT_TRUE(index.Get(Key(1))->In(TierKind::kHbm));
  EXPECT_TRUE(index.Get(Key(2))->In(TierKind::kHbm));
  EXPECT_FALSE(index.Get(Key(3))->In(TierKind::kHbm));
  engine.Serve(Keys({8, 9}), 20);  // the pin has expired: 1 and 2 are the oldest now
  EXPECT_FALSE(index.Get(Key(1))->In(TierKind::kHbm));
  EXPECT_TRUE(index.Get(Key(1))->In(TierKind::kHost)) << "demoted, not dropped";
}

TEST(ToolCallPolicyTest, AgentAwarePrefetchesADemotedSessionBeforeItsReturn) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(/*lead_us=*/5);
  CacheEngine engine(&index, policy.get(), Capacity(2, 100, 0));
  engine.Serve(Keys({1, 2}), 0);
  engine.ToolCallStarted(7, Keys({1, 2}), 1, 100);  // expected back at 100
  // Other traffic: 3 finds only pinned blocks and demotes one (the head, pinned first); 4 then
  // demotes the other, since it is needed 90 us from now, later than 3 (just used) may be.
  engine.Serve(Keys({3, 4}), 10);
  EXPECT_FALSE(index.Get(Key(1))->In(TierKind::kHbm));
  EXPECT_FALSE(index.Get(Key(2))->In(TierKind::kHbm));
  EXPECT_EQ(engine.Prefetch(50), 0u) << "not due yet";
  EXPECT_EQ(engine.Prefetch(96), 2u) << "due at 100 - 5: both come back";
  const ServeResult r = engine.Serve(Keys({1, 2}), 100);
  EXPECT_EQ(r.hits_from[static_cast<unsigned>(TierKind::kHbm)], 2u) << "the resume hits in HBM";
  EXPECT_EQ(engine.stats().prefetched, 2u);
}

// The agent-aware policy's parts, each on a scenario small enough to see the right answer.

bool InHbm(const BlockIndex& index, std::uint64_t id) {
  const auto e = index.Get(Key(id));
  return e && e->In(TierKind::kHbm);
}

TEST(AgentAwarePolicyTest, AChainLeavesFromItsTail) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(/*lead_us=*/5);
  CacheEngine engine(&index, policy.get(), Capacity(3));
  engine.Serve(Keys({1, 2, 3}), 1);
  engine.Serve(Keys({4}), 2);  // one must go: the tail (3), not the head (1) plain LRU drops
  EXPECT_TRUE(InHbm(index, 1));
  EXPECT_TRUE(InHbm(index, 2));
  EXPECT_FALSE(index.Contains(Key(3)));
  EXPECT_EQ(engine.Serve(Keys({1, 2, 3}), 3).prefix_hits, 2u);
}

TEST(AgentAwarePolicyTest, PromotionGivesUpTheSlowerCopy) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(5);
  CacheEngine engine(&index, policy.get(), Capacity(1, 10));
  engine.Serve(Keys({1}), 1);
  engine.Serve(Keys({2}), 2);  // 1 demoted to host
  const ServeResult r = engine.Serve(Keys({1}), 3);
  EXPECT_EQ(r.hits_from[static_cast<unsigned>(TierKind::kHost)], 1u);
  EXPECT_EQ(index.Get(Key(1))->tiers, TierBit(TierKind::kHbm)) << "exclusive: no host copy left";
  EXPECT_EQ(engine.Used(TierKind::kHost), 1u) << "only 2, demoted to make room";
}

TEST(AgentAwarePolicyTest, WhenOnlyPinnedBlocksAreLeftTheLatestReturnLeaves) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(5);
  CacheEngine engine(&index, policy.get(), Capacity(2, 100));
  engine.Serve(Keys({1}), 0, {}, /*session=*/1);
  engine.ToolCallStarted(1, Keys({1}), 0, 1000);  // back late
  engine.Serve(Keys({2}), 0, {}, 2);
  engine.ToolCallStarted(2, Keys({2}), 0, 8);  // back soon
  engine.Serve(Keys({3}), 1);
  EXPECT_FALSE(InHbm(index, 1)) << "session 1 returns last";
  EXPECT_TRUE(InHbm(index, 2));
}

TEST(AgentAwarePolicyTest, APinnedBlockNeededLaterThanAnIdleOneLeavesFirst) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(5);  // pinned blocks due more than 10 us ahead may leave
  CacheEngine engine(&index, policy.get(), Capacity(2, 100));
  engine.Serve(Keys({1}), 0, {}, 1);
  engine.ToolCallStarted(1, Keys({1}), 0, 1000);
  engine.Serve(Keys({2}), 100);
  engine.Serve(Keys({3}), 101);  // 2 idle 1 us, 1 needed in 899 us: 1 goes (and comes back)
  EXPECT_FALSE(InHbm(index, 1));
  EXPECT_TRUE(InHbm(index, 2));
  EXPECT_EQ(engine.Prefetch(996), 1u) << "due 5 us before the return";
  EXPECT_TRUE(InHbm(index, 1));

  // The other way round: a block idle longer than the pinned one has to wait goes instead.
  BlockIndex index2;
  auto policy2 = MakeAgentAwarePolicy(5);
  CacheEngine engine2(&index2, policy2.get(), Capacity(2, 100));
  engine2.Serve(Keys({2}), 0);
  engine2.Serve(Keys({1}), 500, {}, 1);
  engine2.ToolCallStarted(1, Keys({1}), 500, 600);
  engine2.Serve(Keys({3}), 501);  // 2 idle 501 us, 1 needed in 99 us: 2 goes
  EXPECT_TRUE(InHbm(index2, 1));
  EXPECT_FALSE(InHbm(index2, 2));
}

TEST(AgentAwarePolicyTest, ABlockSharedByTwoWaitingSessionsStaysPinnedUntilBothReturn) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(5);
  CacheEngine engine(&index, policy.get(), Capacity(3, 100));
  engine.Serve(Keys({1, 2}), 0, {}, 1);
  engine.Serve(Keys({1, 3}), 0, {}, 2);
  engine.ToolCallStarted(1, Keys({1, 2}), 0, 50);
  engine.ToolCallStarted(2, Keys({1, 3}), 0, 60);
  engine.ToolCallEnded(1, 50);  // session 1 is back; 2 still waits on block 1
  engine.Serve(Keys({4}), 55);  // HBM full: 2 (no longer pinned) goes, not 1 or 3
  EXPECT_TRUE(InHbm(index, 1));
  EXPECT_TRUE(InHbm(index, 3));
  EXPECT_FALSE(InHbm(index, 2));
}

TEST(AgentAwarePolicyTest, AClosedSessionsOwnBlocksGoFirstButNotSharedOnes) {
  BlockIndex index;
  auto policy = MakeAgentAwarePolicy(5);
  CacheEngine engine(&index, policy.get(), Capacity(4));
  engine.Serve(Keys({1, 2}), 0, {}, 1);  // 1 is shared with session 2
  engine.Serve(Keys({1, 3}), 1, {}, 2);
  engine.Serve(Keys({4}), 2, {}, 3);
  engine.SessionClosed(1, Keys({1, 2}), 3);
  engine.Serve(Keys({5}), 4, {}, 3);  // 2 is the closed session's own block: it goes
  EXPECT_FALSE(index.Contains(Key(2)));
  EXPECT_TRUE(InHbm(index, 1));
  EXPECT_TRUE(InHbm(index, 3));
}

TEST(ToolHistoryTest, PlansWithTheMedianOfRecentCalls) {
  ToolHistory h;
  EXPECT_EQ(h.Expected(), ToolHistory::kDefaultExpectationUs);
  for (std::int64_t d : {5, 1, 3}) h.Add(d);
  EXPECT_EQ(h.Expected(), 3);
  EXPECT_EQ(h.Stats().calls, 3u);
  for (int i = 0; i < 1000; ++i) h.Add(100);
  EXPECT_EQ(h.recent_us.size(), ToolHistory::kSamples);
  EXPECT_EQ(h.Stats().p90_us, 100);
  EXPECT_EQ(h.Stats().calls, 1003u);
}

}  // namespace
}  // namespace cachesvc
