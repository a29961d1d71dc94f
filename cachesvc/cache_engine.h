// cachesvc/cache_engine.h: the service core's placement engine, the one the daemon runs
// (BlockStore, on its real tiers in real time) and the trace replay measures (bench/run replay,
// on SimulatedTiers of the same slot geometry in virtual time). It keeps every tier within its
// capacity, asking a ResidencyPolicy which block leaves a full tier and where it goes.
//
// A request is three steps, in this order, by the daemon and the replay alike:
//   1. Load: the longest prefix of the request's chain that some tier holds
//      (BlockIndex::LongestCachedPrefix) is the hit; each of its blocks is made resident in the
//      fastest tier (touched there, or copied up from the fastest tier holding it). A block that
//      cannot be brought up ends the prefix there (a failed load is a miss).
//   2. Reserve: a slot for each block of the chain no tier holds (the engine computed them), in
//      chain order, in the fastest tier, evicting as the policy says (never the request's own
//      chain: its blocks are in use), or, when the fastest tier cannot make room, in the next
//      tier that may take new blocks (the replay: every tier; the daemon: host memory only, which
//      its clients write). The first block no tier can take ends the reservation: the rest of
//      the chain is not saved. The daemon reserves when a client allocates (write leases); the
//      slots are the blocks' from then on.
//   3. Commit: the reserved blocks enter the index; the chain's blocks are told to the policy in
//      chain order, so a chain leaves its tier tail first.
// Serve() is the three steps back to back, as the replay (and a daemon whose client saves at
// once) runs them. Between steps the policy's session and chain are those of the request.
//
// Eviction: a full tier evicts the policy's victim, skipping (never touching) blocks that are
// leased (BlockEntry::leases) or being moved; the victim is copied to the policy's demotion target
// (making room there first, recursively) or dropped. Copies in slower tiers stay when a block is
// promoted unless the policy asks for exclusive tiers. Capacity is whatever the tiers say: the
// engine asks PlacementTiers::Reserve for a slot and evicts when it answers RESOURCE_EXHAUSTED.
//
// Not thread-safe: one caller at a time (the daemon holds its store's lock).
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "cachesvc/block_index.h"
#include "cachesvc/residency_policy.h"

namespace cachesvc {

// The tiers as the placement core sees them: where it makes room and what it copies between.
// The daemon's are its real tiers (BlockStore); the replay's SimulatedTiers only count. Called by
// the engine, one call at a time.
class PlacementTiers {
 public:
  virtual ~PlacementTiers() = default;
  // A free slot of `tier` for a copy of `bytes` (stored_bytes and codec left for the caller):
  // RESOURCE_EXHAUSTED when the tier has no room (the engine then evicts and asks again); any
  // other error ends the attempt.
  [[nodiscard]] virtual absl::StatusOr<TierCopy> Reserve(tiers::TierKind tier,
                                                         std::uint64_t bytes) = 0;
  // Copies `key` (index entry `entry`) from its copy in `from` into `dst`, reserved in `to`,
  // and sets dst's stored_bytes and codec. On error the engine frees `dst`.
  [[nodiscard]] virtual absl::Status Copy(const BlockKey& key, const BlockEntry& entry,
                                          tiers::TierKind from, tiers::TierKind to,
                                          TierCopy& dst) = 0;
  // Gives back a slot that no index entry records (a reservation, or a copy just removed).
  virtual void Free(tiers::TierKind tier, const TierCopy& copy) = 0;
  // The index now records `copy` of `key` in `tier` / no longer does (its slot is freed next).
  virtual void CopyAdded(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy) {
    (void)key, (void)tier, (void)copy;
  }
  virtual void CopyRemoved(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy) {
    (void)key, (void)tier, (void)copy;
  }
  // `key`'s last copy is gone and its index entry with it.
  virtual void BlockGone(const BlockKey& key) { (void)key; }
};

// How many blocks each tier holds (by tiers::TierKind; 0 = no such tier): the replay's unit.
struct TierCapacity {
  std::array<std::uint64_t, kTierKinds> blocks{};
};

// Tiers that only count: per tier a capacity in bytes, and slots sized as the real tiers' size
// classes make them (a power of two, at least min_slot_bytes). The replay's blocks are all one
// size, so a capacity of N blocks of B bytes is N slots of that size.
class SimulatedTiers final : public PlacementTiers {
 public:
  struct Geometry {
    std::uint64_t capacity_bytes = 0;  // 0 = no such tier
    std::uint64_t min_slot_bytes = 1;
  };
  explicit SimulatedTiers(const std::array<Geometry, kTierKinds>& tiers) : tiers_(tiers) {}
  // `capacity` blocks of `block_bytes` each, per tier.
  static std::array<Geometry, kTierKinds> ForBlocks(const TierCapacity& capacity,
                                                    std::uint64_t block_bytes = 1);

  [[nodiscard]] absl::StatusOr<TierCopy> Reserve(tiers::TierKind tier,
                                                 std::uint64_t bytes) override;
  [[nodiscard]] absl::Status Copy(const BlockKey&, const BlockEntry& entry, tiers::TierKind from,
                                  tiers::TierKind, TierCopy& dst) override {
    dst.stored_bytes = entry.Copy(from).stored_bytes;
    dst.codec = entry.Copy(from).codec;
    return absl::OkStatus();
  }
  void Free(tiers::TierKind tier, const TierCopy& copy) override;

  [[nodiscard]] TierMask Present() const;
  [[nodiscard]] std::uint64_t UsedBytes(tiers::TierKind tier) const {
    return used_[static_cast<unsigned>(tier)];
  }

 private:
  const std::array<Geometry, kTierKinds> tiers_;
  std::array<std::uint64_t, kTierKinds> used_{};
  std::uint64_t next_offset_ = 0;
};

struct ServeResult {
  std::uint32_t prefix_hits = 0;                      // blocks of the cached prefix
  std::array<std::uint32_t, kTierKinds> hits_from{};  // where each prefix block was (fastest copy)
  std::uint32_t computed = 0;                         // blocks after the prefix
  std::uint32_t not_admitted = 0;  // computed blocks not saved: the fast tier had no room
};

struct EngineStats {
  std::array<std::uint64_t, kTierKinds> demoted_from{};  // evictions that moved a block down
  std::array<std::uint64_t, kTierKinds> dropped_from{};  // evictions that dropped a block
  std::array<std::uint64_t, kTierKinds> admitted_to{};   // copies that entered a tier
  std::uint64_t promoted = 0;      // copied up into the fastest tier for a load
  std::uint64_t not_promoted = 0;  // prefix hits served from a slower tier with no room above
  std::uint64_t prefetched = 0;    // copied up ahead of a request
};

// What Load found.
struct LoadResult {
  std::uint32_t prefix = 0;  // blocks of the chain now resident in the fastest tier, from 0
  std::array<std::uint32_t, kTierKinds> hits_from{};  // where each was found (fastest copy)
  absl::Status failed;  // why block `prefix` could not be brought up (OK: it is not stored)
};

class CacheEngine {
 public:
  // `index`, `policy` and `tiers` must outlive the engine; `present`: the tiers there are.
  CacheEngine(BlockIndex* index, ResidencyPolicy* policy, PlacementTiers* tiers, TierMask present);
  // The replay's engine: SimulatedTiers of `capacity` blocks of `block_bytes` (owned).
  CacheEngine(BlockIndex* index, ResidencyPolicy* policy, TierCapacity capacity,
              std::uint64_t block_bytes = 1);
  CacheEngine(const CacheEngine&) = delete;
  CacheEngine& operator=(const CacheEngine&) = delete;

  // Another policy from now on (the caller has told it about the stored blocks).
  void SetPolicy(ResidencyPolicy* policy);

  // Step 1. `session`: the request's session (0 when unknown). When `hit_tiers` is given (at
  // least chain.size() long), entry i receives the tier (a tiers::TierKind value) block i of the
  // prefix was found in.
  LoadResult Load(std::span<const BlockKey> chain, std::int64_t now_us, std::uint64_t session = 0,
                  std::span<std::uint8_t> hit_tiers = {});
  // Step 2: up to `count` slots of `bytes` for the chain's computed blocks, in chain order, each
  // in the fastest tier or, failing that, in the fastest tier of `spill` below it (0: none);
  // fewer than `count` when a block found no room (the rest are not saved), RESOURCE_EXHAUSTED
  // when none did. Hand the slots to Commit, or back with Release.
  struct Slot {
    tiers::TierKind tier = tiers::TierKind::kHost;
    TierCopy copy;
  };
  [[nodiscard]] absl::StatusOr<std::vector<Slot>> Reserve(std::span<const BlockKey> chain,
                                                          std::size_t count, std::uint64_t bytes,
                                                          std::int64_t now_us,
                                                          std::uint64_t session = 0,
                                                          TierMask spill = 0);
  void Release(const Slot& slot) { tiers_->Free(slot.tier, slot.copy); }
  // How the reader of the blocks uses the tiers. An engine (the replay's default) copies a hit
  // from whichever tier holds it into its own memory, and saves into any tier: a prefix block
  // the fastest tier has no room for is still a hit, and Serve's computed blocks may go to a
  // slower tier. The daemon's clients read and write host memory only (its fastest tier): Load
  // stops at a block it cannot bring up, and its allocations do not spill. daemon_clients()
  // makes Load and Serve behave as for the daemon's store (which sets it when it opens; the
  // equivalence test sets it on the replay's engine).
  void set_daemon_clients(bool on) { daemon_clients_ = on; }
  // Step 3: `blocks` (each with its reserved slot, stored_bytes and codec set, and the
  // block-wide fields of its entry) enter their tiers; the chain's stored blocks are touched in
  // the fastest tier holding them, all in chain order.
  struct NewBlock {
    BlockKey key;
    Slot slot;
    BlockEntry entry;
  };
  void Commit(std::span<const BlockKey> chain, std::span<const NewBlock> blocks,
              std::int64_t now_us, std::uint64_t session = 0);
  // Steps 1-3 for a request whose missing blocks are computed and saved at once (the replay).
  ServeResult Serve(std::span<const BlockKey> chain, std::int64_t now_us,
                    std::span<std::uint8_t> hit_tiers = {}, std::uint64_t session = 0,
                    std::uint64_t block_bytes = 1);

  // Blocks the policy wants in the fastest tier by `now_us` (before each request), and bringing
  // one up: true when it was copied up.
  std::vector<BlockKey> DuePrefetches(std::int64_t now_us) { return policy_->Prefetch(now_us); }
  bool PrefetchOne(const BlockKey& key, std::int64_t now_us);
  // Both, for every due block; returns how many moved.
  std::size_t Prefetch(std::int64_t now_us);

  // `key` (found on a tier at start: the NVMe index) has `copy` in `tier`.
  void Recovered(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy,
                 const BlockEntry& entry, std::int64_t now_us);
  // A copy of `key` in `to`, made from its fastest other copy, without evicting anything (the
  // exit flush to NVMe): FAILED_PRECONDITION when it has no other copy, the tier's error when
  // there is no room or the copy fails.
  [[nodiscard]] absl::Status Replicate(const BlockKey& key, tiers::TierKind to,
                                       std::int64_t now_us);
  // Removes `key`'s copy in `tier` (the caller checks it is not leased); the block goes with its
  // last copy. Returns the slot bytes freed (0: no such copy).
  std::uint64_t Drop(const BlockKey& key, tiers::TierKind tier);

  // Forwarded to the policy.
  void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                       std::int64_t start_us, std::int64_t expected_end_us) {
    policy_->ToolCallStarted(session, chain, start_us, expected_end_us);
  }
  void ToolCallEnded(std::uint64_t session, std::int64_t now_us) {
    policy_->ToolCallEnded(session, now_us);
  }
  void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain, std::int64_t now_us) {
    policy_->SessionClosed(session, chain, now_us);
  }

  // Called for each eviction: the victim, the tier it left, whether it was moved down (true) or
  // dropped.
  using EvictionObserver = std::function<void(const BlockKey&, tiers::TierKind, bool)>;
  void SetEvictionObserver(EvictionObserver observer) { observer_ = std::move(observer); }

  // Copies in `tier` now.
  [[nodiscard]] std::uint64_t Used(tiers::TierKind tier) const { return used_[Index(tier)]; }
  [[nodiscard]] const EngineStats& stats() const { return stats_; }
  [[nodiscard]] tiers::TierKind fastest() const { return fastest_; }
  [[nodiscard]] TierMask present() const { return present_; }

 private:
  static unsigned Index(tiers::TierKind t) { return static_cast<unsigned>(t); }
  void Init();
  // A slot of `bytes` in `tier`, evicting as needed.
  [[nodiscard]] absl::StatusOr<TierCopy> MakeRoom(tiers::TierKind tier, std::uint64_t bytes,
                                                  std::int64_t now_us, int depth);
  // Moves the policy's victim out of `tier`; false if the policy names none.
  bool EvictOne(tiers::TierKind tier, std::int64_t now_us, int depth);
  // Copies `key` (entry `e`) from `from` into a new copy in `to`, evicting there as needed when
  // `make_room`.
  [[nodiscard]] absl::Status CopyTo(const BlockKey& key, const BlockEntry& e, tiers::TierKind from,
                                    tiers::TierKind to, std::int64_t now_us, int depth,
                                    bool make_room);
  // Brings `key` (held in `held`, not in the fastest tier) up into the fastest tier.
  [[nodiscard]] absl::Status Promote(const BlockKey& key, TierMask held, std::int64_t now_us);
  void Insert(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy,
              const BlockEntry& fresh, std::int64_t now_us);
  // Forgets `key`'s copy in `tier` (index, policy, tiers); keeps the entry (TakeCopy). Returns the
  // tiers still holding it.
  TierMask Forget(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy);
  // With an exclusive policy: removes `key`'s copies below the fastest tier (just promoted);
  // `held`: the tiers that held it before.
  void DropSlowerCopies(const BlockKey& key, TierMask held);
  bool Evictable(const BlockKey& key) const;
  // Commit, with the tiers each block of the chain is in already known (Serve knows them).
  void CommitKnown(std::span<const BlockKey> chain, std::span<const NewBlock> blocks,
                   std::int64_t now_us, std::uint64_t session,
                   std::span<const TierMask> held_tiers);
  void Hold(const BlockKey& key);
  void Unhold(const BlockKey& key);

  BlockIndex* const index_;
  ResidencyPolicy* policy_;
  std::unique_ptr<SimulatedTiers> owned_tiers_;
  PlacementTiers* tiers_;
  bool exclusive_ = false;
  TierMask present_ = 0;
  bool daemon_clients_ = false;
  tiers::TierKind fastest_ = tiers::TierKind::kHbm;
  std::array<std::uint64_t, kTierKinds> used_{};
  std::vector<TierMask> masks_;  // Load's and Serve's scratch: the chain's blocks' tiers
  // Blocks being loaded, brought up or moved down (how many times each): not victims.
  absl::flat_hash_map<BlockKey, std::uint32_t> moving_;
  std::vector<NewBlock> fresh_;               // Serve's scratch
  absl::flat_hash_set<BlockKey> fresh_keys_;  // Serve's scratch
  EngineStats stats_;
  EvictionObserver observer_;
};

}  // namespace cachesvc
