// LRU residency: one recency list per tier, a doubly linked list over a slab of nodes addressed by
// index (indices survive the slab's growth, pointers into a hash map would not), with a key ->
// index map, so every notification is O(1).
#include <algorithm>
#include <array>
#include <map>
#include <queue>
#include <vector>

#include "absl/container/flat_hash_map.h"

#include "absl/container/flat_hash_map.h"
#include "cachesvc/block_index.h"
#include "cachesvc/residency_policy.h"

namespace cachesvc {
namespace {

class RecencyList {
 public:
  // Makes `key` the most recent, adding it if new.
  void Touch(const BlockKey& key) {
    auto [it, inserted] = index_.try_emplace(key, kNone);
    if (inserted) {
      it->second = Allocate(key);
    } else {
      Unlink(it->second);
    }
    PushFront(it->second);
  }
  void Erase(const BlockKey& key) {
    auto it = index_.find(key);
    if (it == index_.end()) return;
    Unlink(it->second);
    free_.push_back(it->second);
    index_.erase(it);
  }
  // Adds `key` as the least recent (it must not be in the list).
  void PushOldest(const BlockKey& key) {
    auto [it, inserted] = index_.try_emplace(key, kNone);
    if (!inserted) return;
    it->second = Allocate(key);
    const std::uint32_t i = it->second;
    nodes_[i].next = kNone;
    nodes_[i].prev = tail_;
    if (tail_ != kNone) nodes_[tail_].next = i;
    tail_ = i;
    if (head_ == kNone) head_ = i;
  }
  [[nodiscard]] bool Contains(const BlockKey& key) const { return index_.contains(key); }
  [[nodiscard]] std::optional<BlockKey> Oldest() const {
    if (tail_ == kNone) return std::nullopt;
    return nodes_[tail_].key;
  }

 private:
  static constexpr std::uint32_t kNone = UINT32_MAX;
  struct Node {
    BlockKey key;
    std::uint32_t prev = kNone;
    std::uint32_t next = kNone;
  };

  std::uint32_t Allocate(const BlockKey& key) {
    if (!free_.empty()) {
      const std::uint32_t i = free_.back();
      free_.pop_back();
      nodes_[i] = Node{key};
      return i;
    }
    nodes_.push_back(Node{key});
    return static_cast<std::uint32_t>(nodes_.size() - 1);
  }
  void PushFront(std::uint32_t i) {
    nodes_[i].prev = kNone;
    nodes_[i].next = head_;
    if (head_ != kNone) nodes_[head_].prev = i;
    head_ = i;
    if (tail_ == kNone) tail_ = i;
  }
  void Unlink(std::uint32_t i) {
    Node& n = nodes_[i];
    if (n.prev != kNone) {
      nodes_[n.prev].next = n.next;
    } else {
      head_ = n.next;
    }
    if (n.next != kNone) {
      nodes_[n.next].prev = n.prev;
    } else {
      tail_ = n.prev;
    }
    n.prev = n.next = kNone;
  }

  absl::flat_hash_map<BlockKey, std::uint32_t> index_;
  std::vector<Node> nodes_;
  std::vector<std::uint32_t> free_;
  std::uint32_t head_ = kNone;
  std::uint32_t tail_ = kNone;
};

class LruPolicy : public ResidencyPolicy {
 public:
  explicit LruPolicy(bool cascade) : cascade_(cascade) {}

  std::string_view Name() const override { return cascade_ ? "lru-tiered" : "lru-hbm"; }

  void Added(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) override {
    Touched(key, tier, now_us);
  }
  void Touched(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) override {
    if (tier == tiers::TierKind::kHbm && IsPinned(key, now_us)) {
      pinned_list_.Touch(key);
    } else {
      lists_[Index(tier)].Touch(key);
    }
  }
  void Removed(const BlockKey& key, tiers::TierKind tier) override {
    lists_[Index(tier)].Erase(key);
    if (tier == tiers::TierKind::kHbm) pinned_list_.Erase(key);
  }

  std::optional<BlockKey> ChooseVictim(tiers::TierKind tier, std::int64_t now_us) override {
    if (tier != tiers::TierKind::kHbm) return lists_[Index(tier)].Oldest();
    ExpirePins(now_us);
    // Unpinned blocks go first; when only pinned ones are left, the oldest of those (demoted).
    if (auto victim = lists_[Index(tier)].Oldest()) return victim;
    return pinned_list_.Oldest();
  }
  std::optional<tiers::TierKind> DemoteTarget(tiers::TierKind from) const override {
    if (!cascade_) return std::nullopt;
    switch (from) {
      case tiers::TierKind::kHbm:
        return tiers::TierKind::kHost;
      case tiers::TierKind::kHost:
        return tiers::TierKind::kNvme;
      case tiers::TierKind::kNvme:
        return std::nullopt;
    }
    return std::nullopt;
  }

 protected:
  // Pins `chain` in the fastest tier until `until_us` (extending earlier pins). Pinned blocks that
  // are in HBM move to their own recency list, which eviction turns to only when the unpinned
  // list is empty; pins end through a heap of expiry times, so every operation stays O(log n).
  void Pin(std::span<const BlockKey> chain, std::int64_t until_us) {
    const std::size_t hbm = Index(tiers::TierKind::kHbm);
    for (const BlockKey& k : chain) {
      std::int64_t& u = pinned_until_[k];
      if (until_us <= u) continue;
      u = until_us;
      expiries_.push({until_us, k});
      if (lists_[hbm].Contains(k)) {
        lists_[hbm].Erase(k);
        pinned_list_.Touch(k);
      }
    }
  }
  [[nodiscard]] bool IsPinned(const BlockKey& key, std::int64_t now_us) const {
    auto it = pinned_until_.find(key);
    return it != pinned_until_.end() && it->second > now_us;
  }
  void ExpirePins(std::int64_t now_us) {
    const std::size_t hbm = Index(tiers::TierKind::kHbm);
    while (!expiries_.empty() && expiries_.top().first <= now_us) {
      const auto [until, key] = expiries_.top();
      expiries_.pop();
      auto it = pinned_until_.find(key);
      if (it == pinned_until_.end() || it->second != until) continue;  // extended since
      pinned_until_.erase(it);
      if (pinned_list_.Contains(key)) {
        // Its last use was when the pin began, before anything touched since: it returns as the
        // least recent block.
        pinned_list_.Erase(key);
        lists_[hbm].PushOldest(key);
      }
    }
  }

  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }

  absl::flat_hash_map<BlockKey, std::int64_t> pinned_until_;  // key -> pinned in HBM until
  RecencyList pinned_list_;                                   // pinned blocks now in HBM
  using Expiry = std::pair<std::int64_t, BlockKey>;
  std::priority_queue<Expiry, std::vector<Expiry>, std::greater<>> expiries_;
  const bool cascade_;
  std::array<RecencyList, kTierKinds> lists_;
};

}  // namespace

class TtlPinPolicy final : public LruPolicy {
 public:
  explicit TtlPinPolicy(std::int64_t ttl_us) : LruPolicy(true), ttl_us_(ttl_us) {}
  std::string_view Name() const override { return "ttl-pin"; }
  void ToolCallStarted(std::uint64_t, std::span<const BlockKey> chain, std::int64_t start_us,
                       std::int64_t) override {
    Pin(chain, start_us + ttl_us_);
  }

 private:
  const std::int64_t ttl_us_;
};

class AgentAwarePolicy final : public LruPolicy {
 public:
  explicit AgentAwarePolicy(std::int64_t lead_us) : LruPolicy(true), lead_us_(lead_us) {}
  std::string_view Name() const override { return "cachesvc"; }
  void ToolCallStarted(std::uint64_t, std::span<const BlockKey> chain, std::int64_t,
                       std::int64_t expected_end_us) override {
    Pin(chain, expected_end_us);
    due_.emplace(expected_end_us - lead_us_, std::vector<BlockKey>(chain.begin(), chain.end()));
  }
  std::vector<BlockKey> Prefetch(std::int64_t now_us) override {
    std::vector<BlockKey> out;
    while (!due_.empty() && due_.begin()->first <= now_us) {
      for (const BlockKey& k : due_.begin()->second) out.push_back(k);
      due_.erase(due_.begin());
    }
    return out;
  }

 private:
  const std::int64_t lead_us_;
  std::multimap<std::int64_t, std::vector<BlockKey>> due_;  // prefetch time -> session's chain
};

std::unique_ptr<ResidencyPolicy> MakeTtlPinPolicy(std::int64_t ttl_us) {
  return std::make_unique<TtlPinPolicy>(ttl_us);
}

std::unique_ptr<ResidencyPolicy> MakeAgentAwarePolicy(std::int64_t lead_us) {
  return std::make_unique<AgentAwarePolicy>(lead_us);
}

std::unique_ptr<ResidencyPolicy> MakeLruPolicy(bool cascade) {
  return std::make_unique<LruPolicy>(cascade);
}

}  // namespace cachesvc
