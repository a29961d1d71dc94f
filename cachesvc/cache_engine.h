// cachesvc/cache_engine.h: the service core's placement engine: serves a request's chain of
// blocks against the tiers and keeps every tier within its capacity, asking a ResidencyPolicy
// which block leaves a full tier and where it goes.
//
// Semantics (the same in the daemon and in the trace replay): a request hits on the longest prefix
// of its chain that some tier holds (BlockIndex::LongestCachedPrefix); the engine then has the
// whole chain in GPU memory (hits were loaded, misses computed), so every block of the chain is
// made resident in the fastest tier, in chain order. A full tier evicts the policy's victim,
// which moves to the policy's demotion target (recursively, if that tier is full too) or is
// dropped. Copies in slower tiers stay when a block is promoted (a host copy under an HBM copy
// makes the next demotion free).
//
// Capacities are counted in blocks here (the replay's unit); the daemon's byte-sized tiers map
// onto the same decisions. Not thread-safe: one caller at a time (the daemon serializes).
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "cachesvc/block_index.h"
#include "cachesvc/residency_policy.h"

namespace cachesvc {

struct TierCapacity {
  std::array<std::uint64_t, kTierKinds> blocks{};  // by tiers::TierKind; 0 = no such tier
};

struct ServeResult {
  std::uint32_t prefix_hits = 0;                      // blocks of the cached prefix
  std::array<std::uint32_t, kTierKinds> hits_from{};  // where each prefix block was (fastest copy)
  std::uint32_t computed = 0;                         // blocks after the prefix
  std::uint32_t not_admitted = 0;                     // blocks the fast tier could not take
};

struct EngineStats {
  std::array<std::uint64_t, kTierKinds> demoted_from{};  // evictions that moved a block down
  std::array<std::uint64_t, kTierKinds> dropped_from{};  // evictions that dropped a block
  std::array<std::uint64_t, kTierKinds> admitted_to{};   // blocks that entered a tier
  std::uint64_t prefetched = 0;                          // promoted ahead of a request
};

class CacheEngine {
 public:
  // `index` and `policy` must outlive the engine.
  CacheEngine(BlockIndex* index, ResidencyPolicy* policy, TierCapacity capacity);

  // When `hit_tiers` is given (at least chain.size() long), entry i receives the tier (as a
  // tiers::TierKind value) block i of the prefix was found in. `session`: the session the request
  // belongs to, 0 when unknown.
  ServeResult Serve(std::span<const BlockKey> chain, std::int64_t now_us,
                    std::span<std::uint8_t> hit_tiers = {}, std::uint64_t session = 0);

  // A session's response ended in a tool call (forwarded to the policy).
  void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                       std::int64_t start_us, std::int64_t expected_end_us) {
    policy_->ToolCallStarted(session, chain, start_us, expected_end_us);
  }
  // A session's tool call ended (forwarded to the policy).
  void ToolCallEnded(std::uint64_t session, std::int64_t now_us) {
    policy_->ToolCallEnded(session, now_us);
  }
  // A session was closed (forwarded to the policy).
  void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain, std::int64_t now_us) {
    policy_->SessionClosed(session, chain, now_us);
  }
  // Brings the blocks the policy wants prefetched at `now_us` into the fastest tier (those still
  // held by a slower tier). Returns how many moved. Call before serving each request.
  std::size_t Prefetch(std::int64_t now_us);

  [[nodiscard]] std::uint64_t Used(tiers::TierKind tier) const { return used_[Index(tier)]; }
  [[nodiscard]] const EngineStats& stats() const { return stats_; }
  [[nodiscard]] const TierCapacity& capacity() const { return capacity_; }

 private:
  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }
  // Makes `key` resident in `tier`, evicting as needed; false if no room could be made.
  bool Admit(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us, int depth);
  // Moves the policy's victim out of `tier`; false if the policy names none.
  bool EvictOne(tiers::TierKind tier, std::int64_t now_us, int depth);

  // With an exclusive policy: removes `key`'s copies below the fastest tier (just promoted);
  // `held`: the tiers that held it before.
  void DropSlowerCopies(const BlockKey& key, TierMask held);

  BlockIndex* const index_;
  ResidencyPolicy* const policy_;
  const TierCapacity capacity_;
  const bool exclusive_;
  TierMask present_ = 0;
  tiers::TierKind fastest_ = tiers::TierKind::kHbm;
  std::array<std::uint64_t, kTierKinds> used_{};
  std::vector<TierMask> masks_;  // Serve's scratch: the prefix blocks' tiers
  EngineStats stats_;
};

}  // namespace cachesvc
