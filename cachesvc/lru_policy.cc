// LRU residency: one recency list per tier, a doubly linked list over a slab of nodes addressed by
// index (indices survive the slab's growth, pointers into a hash map would not), with a key ->
// index map, so every notification is O(1).
#include <array>
#include <vector>

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

class LruPolicy final : public ResidencyPolicy {
 public:
  explicit LruPolicy(bool cascade) : cascade_(cascade) {}

  std::string_view Name() const override { return cascade_ ? "lru-tiered" : "lru-hbm"; }

  void Added(const BlockKey& key, tiers::TierKind tier, std::int64_t) override {
    lists_[Index(tier)].Touch(key);
  }
  void Touched(const BlockKey& key, tiers::TierKind tier, std::int64_t) override {
    lists_[Index(tier)].Touch(key);
  }
  void Removed(const BlockKey& key, tiers::TierKind tier) override {
    lists_[Index(tier)].Erase(key);
  }

  std::optional<BlockKey> ChooseVictim(tiers::TierKind tier, std::int64_t) override {
    return lists_[Index(tier)].Oldest();
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

 private:
  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }

  const bool cascade_;
  std::array<RecencyList, kTierKinds> lists_;
};

}  // namespace

std::unique_ptr<ResidencyPolicy> MakeLruPolicy(bool cascade) {
  return std::make_unique<LruPolicy>(cascade);
}

}  // namespace cachesvc
