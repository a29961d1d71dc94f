// cachesvc/block_store.h: the daemon's blocks: what BlockService and the UCX data plane act on.
//
// It joins the block index (cachesvc/block_index.h), the tiers the daemon runs (host memory, then
// NVMe; cachesvc/tier_set.h), a residency policy that picks what leaves a full tier, and the
// leases through which clients move bytes:
//   - save: Allocate reserves a host slot per new block and returns a write lease; the client
//     writes the payload over the data plane (UcxBlockHandler::BeginWrite/EndWrite); Commit checks
//     the length against what the layout and codec make, and the XXH3-64 against the bytes in the
//     slot, and only then publishes the block (tier Commit, index entry). Until then no reader can
//     see it; a lease that times out frees its slot.
//   - load: Lease pins a block's host copy (staging it from NVMe first when only NVMe has it) and
//     returns a read lease with the block's XXH3-64 (kept from its commit, or from NVMe); the
//     client reads it once over the data plane, which ends the lease (Release, or the timeout,
//     ends one whose read failed).
// Keys are per tenant: a block is stored under XXH3-128(tenant salt ‖ key), so two tenants that
// send the same key bytes never meet, and a key of another tenant is simply not found. Lease ids
// are 64 random bits, bound to the tenant that got them; the data plane accepts a lease id as the
// capability to move that one block (the UCX connection itself is not authenticated:
// docs/ucx.md).
//
// Placement is the service core's CacheEngine (cachesvc/cache_engine.h), the same one the trace
// replay measures: a load is its load step, an allocation its reserve step, a commit its commit
// step, each with the request's session and chain; a full host tier evicts the policy's victim
// (never a leased block) to the policy's demotion target (NVMe) or drops it. Moves are
// synchronous here (a demotion is a memory-to-NVMe write of one block, under the lock).
//
// Thread-safe: one mutex serializes index, policy and lease changes; payload bytes are moved
// outside it, under the tier leases that keep the slots in place.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "base/env.h"
#include "base/mutex.h"
#include "cachesvc/block_index.h"
#include "cachesvc/cache_engine.h"
#include "cachesvc/residency_policy.h"
#include "cachesvc/ucx_dataplane.h"
#include "kernels/codec.h"
#include "proto/block_key.h"
#include "tiers/tier.h"

namespace cachesvc {

// The tenant-scoped name of a block: XXH3-128(salt ‖ key), in the key's byte form.
BlockKey TenantBlockKey(std::string_view tenant_salt, const BlockKey& key);

// How blocks are placed; AdminService GetPolicy/SetPolicy read and change it at run time.
struct PlacementPolicy {
  // "cachesvc" (agent-aware: a session waiting on a tool call keeps its blocks in host memory
  // until its expected return and has them staged back from NVMe `prefetch_lead` before it),
  // "lru-tiered" (least recently used leaves host memory for NVMe), or "ttl-pin" (a session's
  // blocks are held for `pin_ttl` after its tool call starts).
  std::string name = "cachesvc";
  std::chrono::milliseconds prefetch_lead{1000};
  std::chrono::milliseconds pin_ttl{10000};
  std::chrono::milliseconds lease_timeout{30000};
};

// OK, or INVALID_ARGUMENT naming the first field out of range or the unknown policy.
[[nodiscard]] absl::Status CheckPlacementPolicy(const PlacementPolicy& p);

// A placement policy as named text knobs (AdminService GetPolicy/SetPolicy, cachectl policy).
struct PlacementKnob {
  std::string name;  // "policy", "prefetch_lead_ms", "pin_ttl_ms", "lease_timeout_ms"
  std::string value;
  std::string help;
};
std::vector<PlacementKnob> PlacementKnobs(const PlacementPolicy& p);
// Sets one knob of `p` from its text; INVALID_ARGUMENT for an unknown knob or a value that is
// not a whole number of milliseconds (ranges are CheckPlacementPolicy's).
[[nodiscard]] absl::Status SetPlacementKnob(PlacementPolicy& p, std::string_view name,
                                            std::string_view value);

// What one block of a load can be read as.
struct ReadLease {
  std::uint64_t lease_id = 0;
  BlockKey key;  // the caller's key
  tiers::TierKind tier = tiers::TierKind::kHost;
  std::uint64_t length = 0;  // payload bytes
  kernels::CodecId codec = kernels::CodecId::kRaw;
  std::uint64_t checksum = 0;  // XXH3-64 of the payload
  std::int64_t expires_unix_ms = 0;
  std::uint64_t layout_fingerprint = 0;  // the layout the block was saved for
  // The lease ends once the data plane has sent the block (one read, no Release needed): it
  // saves the client a round trip per load. false for leases the holder reads on its own (the
  // local data plane's), which last until Release or expiry.
  bool ends_after_read = true;
  // Where the payload is in this process (host memory); for the local data plane, which turns it
  // into an offset in the shared arena.
  std::uintptr_t address = 0;
};

struct WriteLease {
  std::uint64_t lease_id = 0;
  BlockKey key;
  std::uint64_t length = 0;  // the payload length the commit must have
  kernels::CodecId codec = kernels::CodecId::kRaw;
  std::int64_t expires_unix_ms = 0;
};

struct AllocateResult {
  std::vector<WriteLease> leases;
  std::vector<BlockKey> already_stored;
};

struct CommitRequest {
  std::uint64_t lease_id = 0;
  std::uint64_t length = 0;
  std::uint64_t checksum = 0;
};

// A block as a lookup sees it.
struct BlockPlace {
  BlockKey key;  // the caller's key
  TierMask tiers = 0;
  kernels::CodecId codec = kernels::CodecId::kRaw;
};

// One block as an operator sees it (AdminService.GetBlock).
struct BlockDescription {
  BlockKey key;  // the caller's key
  std::uint64_t layout_fingerprint = 0;
  TierMask tiers = 0;
  kernels::CodecId codec = kernels::CodecId::kRaw;  // of the fastest copy
  std::uint64_t length = 0;                         // payload bytes of the fastest copy
  std::uint64_t checksum = 0;                       // XXH3-64 of the payload (0: not known)
  std::uint32_t sessions = 0;                       // live sessions whose blocks include it
  std::uint32_t leases = 0;
  std::int64_t last_access_unix_ms = 0;  // last commit or load (0: not since the start)
  std::uint64_t accesses = 0;            // loads since the start
};

// What AdminService.Evict names: one block, the blocks only one session references, or all of
// the tenant's blocks.
struct EvictTarget {
  std::optional<BlockKey> key;
  std::string session_id;
  bool all = false;
};
struct EvictResult {
  std::uint64_t blocks = 0;  // blocks that lost a copy
  std::uint64_t bytes = 0;   // slot bytes freed
};

struct BlockStoreStats {
  std::uint64_t leases_read = 0;     // outstanding
  std::uint64_t leases_write = 0;    // outstanding
  std::uint64_t leases_expired = 0;  // since start
  std::uint64_t commits = 0;
  std::uint64_t checksum_failures = 0;  // commits whose bytes did not match, reads that failed
  std::uint64_t demoted = 0;            // host -> NVMe
  std::uint64_t dropped = 0;            // evicted with nowhere to go
  std::uint64_t evicted_admin = 0;      // copies removed by AdminService.Evict
  std::uint64_t prefetched = 0;         // NVMe -> host ahead of a session's expected return
  std::uint64_t staged = 0;             // NVMe -> host for a load
  std::uint64_t stage_no_room = 0;      // loads that missed: no host room to stage into
  std::uint64_t hits = 0;               // blocks leased for loading
  std::uint64_t misses = 0;             // lookups and leases that stopped at a missing block
  std::uint64_t bytes_read = 0;         // payload bytes sent to clients
  std::uint64_t bytes_written = 0;      // payload bytes received from clients
};

class BlockStore final : public UcxBlockHandler {
 public:
  // `tiers`: fastest first; the first must be a memory tier (host), an NVMe tier may follow.
  // Rebuilds the index from what the NVMe tier holds (a restart serves every block it indexed).
  // INVALID_ARGUMENT for a bad `placement`.
  // `env` (which must outlive the store) is its clock: lease deadlines, access times and the
  // policy's time are all its NowMicros() (tests pass a ManualEnv).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BlockStore>> Open(
      std::vector<tiers::Tier*> tiers, const PlacementPolicy& placement = {},
      Env* env = Env::Default());
  ~BlockStore() override;

  // The longest prefix of `keys` that is stored, and where.
  std::vector<BlockPlace> Lookup(std::string_view tenant, std::string_view salt,
                                 std::span<const BlockKey> keys);
  // Read leases for the longest stored prefix of `keys` (stops at the first block not stored).
  // `one_read`: each lease ends with its data-plane read (ReadLease::ends_after_read); false for
  // holders that read the memory themselves and Release.
  // `session_id`: the session the load is for ("" when not known), which the policy is told.
  [[nodiscard]] absl::StatusOr<std::vector<ReadLease>> Lease(std::string_view tenant,
                                                             std::string_view salt,
                                                             std::span<const BlockKey> keys,
                                                             bool one_read = true,
                                                             std::string_view session_id = {});
  // Ends leases of `tenant`; NOT_FOUND names the first id that is not one of its live leases
  // (the others are still released).
  [[nodiscard]] absl::Status Release(std::string_view tenant,
                                     std::span<const std::uint64_t> lease_ids);
  // Write leases for the keys not stored yet, each `length` bytes of `codec` for layout
  // `layout_fingerprint` (`raw_bytes` decoded), in chain order, for as many as the host tier can
  // take (the rest of the chain gets no lease); RESOURCE_EXHAUSTED when it can take none, or
  // `tenant` would be over its host quota (`host_quota_bytes`, 0 = none) with all of them. `keys`
  // is the request's chain in order (stored blocks are named in already_stored): the committed
  // blocks enter the policy's order behind the stored ones (CacheEngine's commit step);
  // `session_id` as for Lease.
  [[nodiscard]] absl::StatusOr<AllocateResult> Allocate(
      std::string_view tenant, std::string_view salt, std::span<const BlockKey> keys,
      kernels::CodecId codec, std::uint64_t length, std::uint64_t raw_bytes,
      std::uint64_t layout_fingerprint, std::uint64_t host_quota_bytes = 0,
      std::string_view session_id = {});
  // Publishes written blocks. Per commit: NOT_FOUND (not a live write lease of the tenant, or
  // past its deadline), FAILED_PRECONDITION (nothing or something else was written),
  // INVALID_ARGUMENT (length not the allocated one), DATA_LOSS (checksum does not match the
  // bytes: the slot is freed). The first failure is returned with its lease id; commits before
  // it are kept.
  [[nodiscard]] absl::StatusOr<std::vector<BlockKey>> Commit(
      std::string_view tenant, std::span<const CommitRequest> commits);

  // Ends leases past their timeout and reclaims their slots; returns how many ended. The
  // daemon's reaper calls it every second; until then a lease past its deadline is refused by
  // every call that would use it.
  std::size_t ExpireLeases();

  // Operators' view and actions (AdminService). Describe: NOT_FOUND for a key the tenant has
  // not stored. Evict: a key target that is leased is FAILED_PRECONDITION (nothing changes);
  // session and all targets skip leased blocks. `tier` nullopt = every tier.
  [[nodiscard]] absl::StatusOr<BlockDescription> Describe(std::string_view tenant,
                                                          std::string_view salt,
                                                          const BlockKey& key) const;
  [[nodiscard]] absl::StatusOr<EvictResult> Evict(std::string_view tenant, std::string_view salt,
                                                  const EvictTarget& target,
                                                  std::optional<tiers::TierKind> tier);
  // The placement policy in force; Replace installs another (validated first: INVALID_ARGUMENT
  // and nothing changes), rebuilding its view of every stored block and waiting session.
  [[nodiscard]] PlacementPolicy Policy() const;
  [[nodiscard]] absl::Status SetPolicy(const PlacementPolicy& policy);

  // Sessions (SessionOps and BlockService.TagBlocks tell the store; it tells the policy).
  // A session's blocks are its context's chain (keys the service derived from its tokens,
  // replaced on every change) plus the blocks an engine tagged with it (TagBlocks).
  void SetSessionChain(std::string_view tenant, std::string_view salt, std::string_view session_id,
                       std::span<const BlockKey> chain);
  // Adds the chain's new full blocks after an append; false (and nothing changes) when the store
  // does not know the session yet, whose whole chain SetSessionChain must then give.
  bool ExtendSessionChain(std::string_view tenant, std::string_view salt,
                          std::string_view session_id, std::span<const BlockKey> more);
  void TagSession(std::string_view tenant, std::string_view salt, std::string_view session_id,
                  std::span<const BlockKey> keys);
  // The session's response ended in a tool call expected to take `expected`.
  void SessionToolCallStarted(std::string_view tenant, std::string_view session_id,
                              std::chrono::milliseconds expected);
  void SessionToolCallEnded(std::string_view tenant, std::string_view session_id);
  // The session is closed: its blocks count for it no longer and are the first to leave.
  void SessionClosed(std::string_view tenant, std::string_view session_id);
  // Stages from NVMe the blocks of sessions due back within the prefetch lead; returns how many
  // it staged. The daemon calls it periodically.
  std::size_t Prefetch();
  // Writes every host-only block to NVMe (used at shutdown when configured); returns how many.
  std::size_t FlushToNvme();

  [[nodiscard]] BlockStoreStats Stats() const;
  // The id the placement policy knows a tenant's session by (0 for ""): XXH3-64 of
  // tenant '\n' session id, odd.
  static std::uint64_t SessionId(std::string_view tenant, std::string_view session_id);
  // Called for every eviction the placement core makes (the block's tenant-scoped key, the tier
  // it left, whether it moved down rather than being dropped), under the store's lock: it must
  // not call the store. For tests and tracing; nullptr turns it off.
  void SetEvictionObserver(CacheEngine::EvictionObserver observer);
  [[nodiscard]] std::size_t Blocks() const { return index_.Size(); }
  // Bytes of `tier` the tenant's blocks use.
  [[nodiscard]] std::uint64_t TenantBytes(std::string_view tenant, tiers::TierKind tier) const;

  // UcxBlockHandler: the data plane's requests (any thread).
  [[nodiscard]] absl::StatusOr<ReadGrant> BeginRead(std::uint64_t lease_id) override;
  void EndRead(std::uint64_t lease_id, const absl::Status& sent) override;
  [[nodiscard]] absl::StatusOr<WriteGrant> BeginWrite(std::uint64_t lease_id,
                                                      std::size_t length) override;
  void EndWrite(std::uint64_t lease_id, const absl::Status& received) override;

 private:
  struct LeaseRecord {
    std::string tenant;
    bool write = false;
    BlockKey key;       // the caller's key
    BlockKey internal;  // the tenant-scoped key
    tiers::TierKind tier = tiers::TierKind::kHost;
    tiers::SlotId slot;
    tiers::LeaseId tier_lease = 0;  // read leases: the tier's pin on the slot
    std::uint64_t length = 0;
    std::uint64_t raw_bytes = 0;
    std::uint64_t layout_fingerprint = 0;
    std::uint64_t checksum = 0;
    kernels::CodecId codec = kernels::CodecId::kRaw;
    std::int64_t expires_us = 0;  // Env::NowMicros() scale
    int transfers = 0;            // data-plane operations in progress on it
    std::uint64_t written = 0;    // write leases: bytes received (0 = none yet)
    bool released = false;        // ended while a transfer was in progress
    bool one_read = true;         // read leases: ends with its first data-plane read
    // Write leases: the allocation's chain (tenant-scoped keys), this block's place in it, and
    // the session (the policy's id, 0: none), for the engine's commit step.
    std::shared_ptr<const std::vector<BlockKey>> chain;
    std::size_t chain_pos = 0;
    std::uint64_t session = 0;
  };

  // The engine's view of the tiers (block_store_tiers.cc): slots, copies between tiers, and the
  // tenant accounting that follows each copy. Called by the engine, under mu_.
  class Placement final : public PlacementTiers {
   public:
    explicit Placement(BlockStore* store) : store_(store) {}
    [[nodiscard]] absl::StatusOr<TierCopy> Reserve(tiers::TierKind tier,
                                                   std::uint64_t bytes) override;
    [[nodiscard]] absl::Status Copy(const BlockKey& key, const BlockEntry& entry,
                                    tiers::TierKind from, tiers::TierKind to,
                                    TierCopy& dst) override;
    void Free(tiers::TierKind tier, const TierCopy& copy) override;
    void CopyAdded(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy) override;
    void CopyRemoved(const BlockKey& key, tiers::TierKind tier, const TierCopy& copy) override;
    void BlockGone(const BlockKey& key) override;

   private:
    BlockStore* const store_;
  };

  // A session's blocks as the store tracks them (keys are tenant-scoped).
  struct SessionBlocks {
    std::uint64_t policy_id = 0;  // the policy's name for the session
    std::vector<BlockKey> chain;
    absl::flat_hash_set<BlockKey> tags;  // keys an engine tagged the session with
    bool waiting = false;  // on a tool call, since start_us, expected back at expected_end_us
    std::int64_t start_us = 0;
    std::int64_t expected_end_us = 0;
  };

  BlockStore(std::vector<tiers::Tier*> tiers, Env* env) : tiers_(std::move(tiers)), env_(env) {}
  std::int64_t LeaseMicros() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    return std::chrono::microseconds(placement_.lease_timeout).count();
  }
  // A fresh policy of `p` told about every stored block and waiting session.
  std::unique_ptr<ResidencyPolicy> BuildPolicy(const PlacementPolicy& p)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  SessionBlocks* FindSession(std::string_view tenant, std::string_view session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The session's record, made on first use (with the policy's name for it).
  SessionBlocks& SessionFor(std::string_view tenant, std::string_view session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Adds `delta` to the session count of each of `keys`.
  void CountSessionRefs(std::span<const BlockKey> keys, int delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static std::vector<BlockKey> SessionKeys(const SessionBlocks& s);
  // The Env's NowMicros() (the one time scale of leases, access times and the policy), never
  // going back: the time of a policy notification (several may share one).
  std::int64_t PolicyNow() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A block recovered from NVMe has no recorded tenant; the first tenant whose salt names it
  // owns it from then on (the key is tenant-scoped, so only that tenant can name it).
  void ClaimOwner(const BlockKey& internal, std::string_view tenant)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  [[nodiscard]] absl::Status Recover();
  tiers::Tier* TierOf(tiers::TierKind kind) const;
  std::uint64_t NewLeaseId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts and logs a load that stopped at `internal` with `st`; a copy that failed its
  // checksum is dropped.
  void NoteFailedLoad(const BlockKey& internal, const absl::Status& st)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A write lease is ending (committed or not): its slot no longer counts as reserved.
  void ForgetWriteLease(const LeaseRecord& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  static std::vector<BlockKey> TenantBlockKeys(std::string_view salt,
                                               std::span<const BlockKey> keys);
  void EndLease(std::uint64_t id, LeaseRecord& lease) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::size_t ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void AddTenantBytes(const BlockKey& internal, tiers::TierKind tier, std::int64_t delta)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::vector<tiers::Tier*> tiers_;
  Env* const env_;
  mutable Mutex mu_;
  BlockIndex index_;
  std::unique_ptr<ResidencyPolicy> policy_ ABSL_GUARDED_BY(mu_);
  Placement placement_tiers_{this};
  // The placement core (the one the replay measures), over index_, policy_ and placement_tiers_.
  std::unique_ptr<CacheEngine> engine_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::uint64_t, LeaseRecord> leases_ ABSL_GUARDED_BY(mu_);
  // Which tenant each stored block belongs to, and each tenant's bytes per tier (quotas).
  absl::flat_hash_map<BlockKey, std::string> owner_ ABSL_GUARDED_BY(mu_);
  // XXH3-64 of each stored block's payload (from its commit, or its NVMe index entry).
  absl::flat_hash_map<BlockKey, std::uint64_t> checksum_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, std::array<std::uint64_t, kTierKinds>> tenant_bytes_
      ABSL_GUARDED_BY(mu_);
  // Host slot bytes each tenant's write leases hold (its quota counts them).
  absl::flat_hash_map<std::string, std::uint64_t> reserved_bytes_ ABSL_GUARDED_BY(mu_);
  BlockStoreStats stats_ ABSL_GUARDED_BY(mu_);
  PlacementPolicy placement_ ABSL_GUARDED_BY(mu_);
  // Sessions by tenant + '\n' + session id, and how many sessions reference each block.
  absl::flat_hash_map<std::string, SessionBlocks> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<BlockKey, std::uint32_t> session_refs_ ABSL_GUARDED_BY(mu_);
  std::int64_t clock_us_ ABSL_GUARDED_BY(mu_) = 0;  // the last time the policy was told
};

}  // namespace cachesvc
