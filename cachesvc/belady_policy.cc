// Belady's offline optimum: evict the block whose next use is farthest in the future. Each key's
// future uses (request numbers) are known up front; BeginRequest advances every key of the
// current request past it, and each tier keeps its blocks ordered by next use.
#include <array>
#include <limits>
#include <set>

#include "absl/container/flat_hash_map.h"
#include "cachesvc/block_index.h"
#include "cachesvc/residency_policy.h"

namespace cachesvc {
namespace {

class BeladyPolicy final : public ResidencyPolicy {
 public:
  explicit BeladyPolicy(const std::vector<std::vector<BlockKey>>& future) {
    for (std::size_t r = 0; r < future.size(); ++r) {
      for (const BlockKey& k : future[r]) {
        auto& uses = uses_[k].requests;
        if (uses.empty() || uses.back() != r) uses.push_back(r);
      }
    }
  }

  std::string_view Name() const override { return "belady"; }

  void BeginRequest(std::uint64_t, std::span<const BlockKey> chain, std::int64_t,
                    RequestStep step) override {
    if (step != RequestStep::kLoad) return;  // the same request
    ++request_;                              // the request now being served
    for (const BlockKey& k : chain) {
      auto it = uses_.find(k);
      if (it == uses_.end()) continue;  // not in the declared future: treated as never reused
      Uses& u = it->second;
      const std::uint64_t before = NextUse(u);
      while (u.cursor < u.requests.size() && u.requests[u.cursor] <= request_) ++u.cursor;
      const std::uint64_t after = NextUse(u);
      if (before == after) continue;
      for (unsigned t = 0; t < kTierKinds; ++t) {
        if (order_[t].erase({before, k}) != 0) order_[t].insert({after, k});
      }
    }
  }

  void Added(const BlockKey& key, tiers::TierKind tier, std::int64_t) override {
    order_[Index(tier)].insert({NextUseOf(key), key});
  }
  void Touched(const BlockKey&, tiers::TierKind, std::int64_t) override {}  // order is by next use
  void Removed(const BlockKey& key, tiers::TierKind tier) override {
    order_[Index(tier)].erase({NextUseOf(key), key});
  }

  using ResidencyPolicy::ChooseVictim;
  std::optional<BlockKey> ChooseVictim(tiers::TierKind tier, std::int64_t,
                                       Evictable evictable) override {
    const auto& o = order_[Index(tier)];
    for (auto it = o.rbegin(); it != o.rend(); ++it) {  // farthest next use first
      if (evictable(it->second)) return it->second;
    }
    return std::nullopt;
  }
  std::optional<tiers::TierKind> DemoteTarget(tiers::TierKind from) const override {
    if (from == tiers::TierKind::kHbm) return tiers::TierKind::kHost;
    if (from == tiers::TierKind::kHost) return tiers::TierKind::kNvme;
    return std::nullopt;
  }

 private:
  static constexpr std::uint64_t kNever = std::numeric_limits<std::uint64_t>::max();
  struct Uses {
    std::vector<std::uint64_t> requests;  // 0-based request numbers using the key, increasing
    std::size_t cursor = 0;               // first entry after the current request
  };
  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }
  static std::uint64_t NextUse(const Uses& u) {
    return u.cursor < u.requests.size() ? u.requests[u.cursor] : kNever;
  }
  std::uint64_t NextUseOf(const BlockKey& k) const {
    auto it = uses_.find(k);
    return it == uses_.end() ? kNever : NextUse(it->second);
  }

  absl::flat_hash_map<BlockKey, Uses> uses_;
  std::array<std::set<std::pair<std::uint64_t, BlockKey>>, kTierKinds> order_;
  std::uint64_t request_ = static_cast<std::uint64_t>(-1);  // the first BeginRequest makes it 0
};

}  // namespace

std::unique_ptr<ResidencyPolicy> MakeBeladyPolicy(
    const std::vector<std::vector<BlockKey>>& future) {
  return std::make_unique<BeladyPolicy>(future);
}

}  // namespace cachesvc
