// cachesvc/residency_policy.h: the pluggable part of the service core that decides where blocks
// live. The CacheEngine (cachesvc/cache_engine.h) keeps the facts (which tier holds which block,
// how full each tier is); a policy only answers its questions: which block should leave a full
// tier, and where it should go. Policies are compared in the trace replay (bench/run replay), so
// each keeps whatever order it needs in its own structures, fed by the engine's notifications.
//
// The engine calls a policy from one thread at a time (it serializes itself); policies need no
// locking of their own.
#pragma once

#include <chrono>

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "proto/block_key.h"
#include "tiers/tier.h"

namespace cachesvc {

// The steps of a request, in order (cachesvc/cache_engine.h).
enum class RequestStep { kLoad, kReserve, kCommit };

class ResidencyPolicy {
 public:
  virtual ~ResidencyPolicy() = default;

  // The name bench/run replay selects it by (lru-hbm, lru-tiered, ...).
  [[nodiscard]] virtual std::string_view Name() const = 0;

  // A step of a request of `session` (0: none known) for `chain` is about to run (before any
  // other notification about it): its load (a new request), a slot reserved for one of its
  // computed blocks, or the commit of those blocks (CacheEngine's three steps).
  virtual void BeginRequest(std::uint64_t session, std::span<const BlockKey> chain,
                            std::int64_t now_us, RequestStep step) {
    (void)session, (void)chain, (void)now_us, (void)step;
  }

  // The step begun by the last BeginRequest is done (every block of it notified).
  virtual void EndRequest(std::int64_t now_us) { (void)now_us; }

  // Session `session`'s response ended in a tool call at `start_us`, expected back at
  // `expected_end_us`; `chain` is the session's context (its blocks, in order).
  virtual void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                               std::int64_t start_us, std::int64_t expected_end_us) {
    (void)session, (void)chain, (void)start_us, (void)expected_end_us;
  }
  // Session `session` was closed at `now_us` (the agent framework is done with it: a sub-agent that
  // returned its result, a finished conversation); `chain` is its context. Its blocks that no
  // other session uses are worth the least now.
  virtual void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain,
                             std::int64_t now_us) {
    (void)session, (void)chain, (void)now_us;
  }
  // Session `session`'s tool call ended at `now_us` (its next request follows).
  virtual void ToolCallEnded(std::uint64_t session, std::int64_t now_us) {
    (void)session, (void)now_us;
  }
  // Blocks to bring into the fastest tier now (prefetch), in order. Called before each request.
  virtual std::vector<BlockKey> Prefetch(std::int64_t now_us) {
    (void)now_us;
    return {};
  }

  // A block Prefetch named is already in the fastest tier.
  virtual void PrefetchFound(const BlockKey& key, std::int64_t now_us) { (void)key, (void)now_us; }

  // `key` entered `tier` (inserted, promoted into it, or demoted into it).
  virtual void Added(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) = 0;
  // `key` was used from `tier` (a prefix hit).
  virtual void Touched(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us) = 0;
  // `key` left `tier`.
  virtual void Removed(const BlockKey& key, tiers::TierKind tier) = 0;

  // Whether a block may leave its tier now (the engine's answer: not leased, not being moved).
  using Evictable = absl::FunctionRef<bool(const BlockKey&)>;
  // `tier` is full and a block must leave it: which one, among those `evictable` accepts (the
  // policy's order is unchanged by the ones it skips). nullopt refuses (nothing can leave, so the
  // incoming block is not admitted).
  [[nodiscard]] virtual std::optional<BlockKey> ChooseVictim(tiers::TierKind tier,
                                                             std::int64_t now_us,
                                                             Evictable evictable) = 0;
  // Every block evictable.
  [[nodiscard]] std::optional<BlockKey> ChooseVictim(tiers::TierKind tier, std::int64_t now_us) {
    return ChooseVictim(tier, now_us, [](const BlockKey&) { return true; });
  }
  // Whether a block promoted into the fastest tier gives up its copies in slower tiers (exclusive
  // tiers: more distinct blocks fit; a later demotion writes the block again) or keeps them
  // (inclusive: the next demotion is free).
  [[nodiscard]] virtual bool ExclusiveTiers() const { return false; }

  // Where a block leaving `from` goes: a slower tier, or nullopt to drop it.
  [[nodiscard]] virtual std::optional<tiers::TierKind> DemoteTarget(tiers::TierKind from) const = 0;
};

// Least recently used in each tier. `cascade` = true demotes HBM -> host -> NVMe (what
// LMCache-style offloading does: "lru-tiered"); false drops what leaves a tier ("lru-hbm" when only
// the HBM tier has capacity: what engines' prefix caches do).
std::unique_ptr<ResidencyPolicy> MakeLruPolicy(bool cascade);

// Continuum-style "ttl-pin": lru-tiered, and a session's blocks are pinned in the fastest tier for
// a fixed `ttl_us` after its tool call starts (evicted only when nothing unpinned is left).
// `fastest`: the tier pins apply to (HBM in an engine; host memory in a daemon without HBM).
std::unique_ptr<ResidencyPolicy> MakeTtlPinPolicy(std::int64_t ttl_us,
                                                  tiers::TierKind fastest = tiers::TierKind::kHbm);

// The agent-aware policy, first version ("cachesvc"): lru-tiered, plus, for a session waiting on a
// tool call, its blocks are held in the fastest tier until the expected return (not a fixed TTL),
// and whatever of them was demoted meanwhile is prefetched back `lead_us` before that return.
std::unique_ptr<ResidencyPolicy> MakeAgentAwarePolicy(
    std::int64_t lead_us, tiers::TierKind fastest = tiers::TierKind::kHbm);

// Belady's offline optimum ("belady"): given the whole future sequence of requests (each a chain of
// keys, in the order they will be served), a full tier evicts the block whose next use is farthest
// away (never used again first). Demotes like lru-tiered. The bound no online policy passes for
// the fast tier's hit rate; only for replays, which know the future.
std::unique_ptr<ResidencyPolicy> MakeBeladyPolicy(const std::vector<std::vector<BlockKey>>& future);

// The policies the daemon runs (its `policy` key, AdminService SetPolicy): cachesvc, lru-tiered,
// ttl-pin. INVALID_ARGUMENT naming them otherwise.
[[nodiscard]] absl::Status CheckPolicyName(std::string_view name);

// The one registry of online policies by name, for the daemon and the replay alike.
struct PolicyParams {
  std::int64_t prefetch_lead_us = 1'000'000;        // cachesvc
  std::int64_t pin_ttl_us = 10'000'000;             // ttl-pin
  tiers::TierKind fastest = tiers::TierKind::kHbm;  // where pins and chain order apply
};
// lru-hbm, lru-tiered, ttl-pin or cachesvc; INVALID_ARGUMENT naming them for any other name
// (belady needs the future: MakeBeladyPolicy).
[[nodiscard]] absl::StatusOr<std::unique_ptr<ResidencyPolicy>> MakeResidencyPolicy(
    std::string_view name, const PolicyParams& params);

// The largest placement knobs the daemon accepts, from its config and from AdminService
// SetPolicy alike (the smallest are 0 ms for the lead, 1 ms for the others).
inline constexpr std::chrono::milliseconds kMaxPrefetchLead{600'000};
inline constexpr std::chrono::milliseconds kMaxPinTtl{86'400'000};
inline constexpr std::chrono::milliseconds kMaxLeaseTimeout{86'400'000};

}  // namespace cachesvc
