// tiers/slot_table.h: the bookkeeping every tier shares: which slots are allocated, which hold a
// block (and its metadata), who holds leases on them, and which frees wait for those leases.
//
// A tier owns one SlotTable and does only its own I/O around it:
//   write: BeginWrite (slot must be allocated, not leased, not being read or written) → the
//          tier's copy/I/O → FinishWrite (publish) or AbortWrite (the slot holds no block).
//   read:  BeginRead (pins the slot, checks the caller's buffer) → copy/I/O → EndRead.
// A pinned slot (a lease, or a read in progress) is never rewritten and never handed out again:
// Free marks it and the allocator gets it back when the last pin goes. Leases and never-written
// allocations carry deadlines from the injected Env (base/env.h); every call first retires what is
// due, and Expire() does it on demand, so a dead client cannot hold memory past its ttl.
//
// Slot states: allocated (reserved, no block) → writing → ready (holds a block) → freed.
//
// Thread-safe: one mutex guards everything; the tier's I/O runs outside it.
#pragma once

#include <chrono>
#include <cstdint>
#include <queue>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/env.h"
#include "base/mutex.h"
#include "tiers/slot_allocator.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

struct SlotTableOptions {
  // A slot allocated and never written is reclaimed after this long.
  std::chrono::milliseconds allocation_ttl{30'000};
  // Longest lease a caller may ask for.
  std::chrono::milliseconds max_lease_ttl{600'000};

  // INVALID_ARGUMENT naming the field when a duration is not positive.
  [[nodiscard]] absl::Status Validate() const;
};

class SlotTable {
 public:
  SlotTable(std::string name, TierKind kind, const SlotAllocatorOptions& allocator,
            const SlotTableOptions& options, Env* env);

  // `ttl`: how long the slot may stay unwritten before it is reclaimed (0: allocation_ttl).
  [[nodiscard]] absl::StatusOr<SlotId> Allocate(
      std::uint64_t bytes, std::chrono::milliseconds ttl = std::chrono::milliseconds(0));

  // Reserves `slot` for a write of `stored_bytes` and returns the write's generation. The block
  // the slot held before (if any) is reported in `*replaced` so that an index can drop it.
  [[nodiscard]] absl::StatusOr<std::uint64_t> BeginWrite(SlotId slot, std::uint64_t stored_bytes,
                                                         BlockInfo* replaced = nullptr);
  void FinishWrite(SlotId slot, const BlockInfo& info);
  void AbortWrite(SlotId slot);

  // Pins a ready slot for a read into a buffer of `out_bytes`; INVALID_ARGUMENT when the buffer is
  // smaller than the block. Every successful BeginRead needs one EndRead.
  [[nodiscard]] absl::StatusOr<BlockInfo> BeginRead(SlotId slot, std::uint64_t out_bytes);
  // `ok`: the read delivered the block (counted in stats).
  void EndRead(SlotId slot, bool ok = true);

  [[nodiscard]] absl::StatusOr<BlockInfo> Info(SlotId slot) const;

  // Frees the slot, now or (when pinned) when its last pin goes. Returns the block the slot held,
  // if any, through `*dropped` (`*had_block` tells whether there was one).
  [[nodiscard]] absl::Status Free(SlotId slot, BlockInfo* dropped = nullptr,
                                  bool* had_block = nullptr);
  // Drops the block in a pinned (being read) slot after a failed checksum: the slot no longer
  // holds a block and is freed when its pins go.
  void DropCorrupt(SlotId slot);

  // Re-creates a ready slot from an index at start-up (see SlotAllocator::Claim).
  [[nodiscard]] absl::Status Restore(SlotId slot, const BlockInfo& info);

  [[nodiscard]] absl::StatusOr<LeaseId> AcquireLease(SlotId slot, std::chrono::milliseconds ttl);
  [[nodiscard]] absl::Status ReleaseLease(LeaseId lease);
  std::size_t Expire();

  // Whether `slot` is allocated and not being written (a transport may use its memory).
  [[nodiscard]] absl::Status CheckAllocated(SlotId slot) const;
  [[nodiscard]] std::uint64_t SlotBytesFor(std::uint64_t bytes) const;

  // Stats with the counters this table keeps; the tier adds its I/O counters.
  [[nodiscard]] TierStats Stats() const;

  [[nodiscard]] const std::string& name() const { return name_; }

 private:
  enum class State : std::uint8_t { kAllocated, kWriting, kReady };
  struct Slot {
    SlotId id;
    State state = State::kAllocated;
    bool free_pending = false;
    std::uint32_t leases = 0;
    std::uint32_t reads = 0;
    std::uint64_t alloc_seq = 0;             // matches the deadline entry of this allocation
    std::chrono::milliseconds alloc_ttl{0};  // this allocation's ttl (0: allocation_ttl)
    BlockInfo info;
  };
  struct Lease {
    std::uint64_t offset = 0;
    Env::TimePoint deadline;
  };
  struct Deadline {
    Env::TimePoint when;
    bool is_lease = false;
    std::uint64_t id = 0;   // lease id, or slot offset
    std::uint64_t seq = 0;  // allocation sequence, for slots
    bool operator>(const Deadline& o) const { return when > o.when; }
  };

  [[nodiscard]] absl::StatusOr<Slot*> Find(SlotId slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  [[nodiscard]] absl::StatusOr<const Slot*> FindConst(SlotId slot) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::size_t ExpireLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Returns the slot to the allocator once nothing pins it.
  void MaybeRelease(Slot* slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ArmAllocationDeadline(Slot* slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // Constant after construction.
  const std::string name_;
  const TierKind kind_;
  const SlotTableOptions options_;
  Env* const env_;

  mutable Mutex mu_;
  SlotAllocator allocator_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::uint64_t, Slot> slots_ ABSL_GUARDED_BY(mu_);  // by offset
  absl::flat_hash_map<LeaseId, Lease> leases_ ABSL_GUARDED_BY(mu_);
  std::priority_queue<Deadline, std::vector<Deadline>, std::greater<>> deadlines_
      ABSL_GUARDED_BY(mu_);
  LeaseId next_lease_ ABSL_GUARDED_BY(mu_) = 1;
  std::uint64_t next_generation_ ABSL_GUARDED_BY(mu_) = 1;
  std::uint64_t next_alloc_seq_ ABSL_GUARDED_BY(mu_) = 1;
  std::uint64_t blocks_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t stored_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t stored_slot_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t leases_expired_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t allocations_reclaimed_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t frees_deferred_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t checksum_failures_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t writes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t reads_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t write_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t read_bytes_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace cachesvc::tiers
