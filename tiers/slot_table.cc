#include "tiers/slot_table.h"

#include <utility>

#include "fmt/format.h"

namespace cachesvc::tiers {

absl::Status SlotTableOptions::Validate() const {
  if (allocation_ttl.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("allocation_ttl must be positive, got {} ms", allocation_ttl.count()));
  }
  if (max_lease_ttl.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("max_lease_ttl must be positive, got {} ms", max_lease_ttl.count()));
  }
  return absl::OkStatus();
}

SlotTable::SlotTable(std::string name, TierKind kind, const SlotAllocatorOptions& allocator,
                     const SlotTableOptions& options, Env* env)
    : name_(std::move(name)),
      kind_(kind),
      options_(options),
      env_(env),
      allocator_(name_, allocator) {}

absl::StatusOr<SlotTable::Slot*> SlotTable::Find(SlotId slot) {
  // A second name rather than std::as_const(*this).Find: the lock analysis cannot see that
  // as_const(*this).mu_ is this->mu_.
  absl::StatusOr<const Slot*> found = FindConst(slot);
  if (!found.ok()) return found.status();
  return const_cast<Slot*>(*found);  // this object is not const: the slot may be changed
}

absl::StatusOr<const SlotTable::Slot*> SlotTable::FindConst(SlotId slot) const {
  auto it = slots_.find(slot.offset);
  if (it == slots_.end() || it->second.id.slot_bytes != slot.slot_bytes ||
      it->second.free_pending) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': slot at offset {} ({} bytes) is not allocated", name_, slot.offset,
                    slot.slot_bytes));
  }
  return &it->second;
}

void SlotTable::ArmAllocationDeadline(Slot* slot) {
  slot->alloc_seq = next_alloc_seq_++;
  const std::chrono::milliseconds ttl =
      slot->alloc_ttl.count() > 0 ? slot->alloc_ttl : options_.allocation_ttl;
  deadlines_.push(Deadline{env_->Now() + ttl, false, slot->id.offset, slot->alloc_seq});
}

void SlotTable::MaybeRelease(Slot* slot) {
  if (!slot->free_pending || slot->leases != 0 || slot->reads != 0) return;
  const absl::Status freed = allocator_.Free(slot->id);
  (void)freed;  // cannot fail: the table only holds slots the allocator handed out
  slots_.erase(slot->id.offset);
}

std::size_t SlotTable::ExpireLocked() {
  std::size_t ended = 0;
  const Env::TimePoint now = env_->Now();
  while (!deadlines_.empty() && deadlines_.top().when <= now) {
    const Deadline due = deadlines_.top();
    deadlines_.pop();
    if (due.is_lease) {
      auto it = leases_.find(due.id);
      if (it == leases_.end()) continue;  // released in time
      const std::uint64_t offset = it->second.offset;
      leases_.erase(it);
      ++leases_expired_;
      ++ended;
      auto slot = slots_.find(offset);
      if (slot != slots_.end()) {
        --slot->second.leases;
        MaybeRelease(&slot->second);
      }
    } else {
      auto it = slots_.find(due.id);
      if (it == slots_.end()) continue;
      Slot& slot = it->second;
      if (slot.state != State::kAllocated || slot.alloc_seq != due.seq || slot.free_pending) {
        continue;  // written, or re-armed since
      }
      ++allocations_reclaimed_;
      ++ended;
      slot.free_pending = true;
      MaybeRelease(&slot);
    }
  }
  return ended;
}

absl::StatusOr<SlotId> SlotTable::Allocate(std::uint64_t bytes, std::chrono::milliseconds ttl) {
  MutexLock lock(&mu_);
  ExpireLocked();
  absl::StatusOr<SlotId> id = allocator_.Allocate(bytes);
  if (!id.ok()) return id.status();
  Slot& slot = slots_[id->offset];
  slot = Slot{};
  slot.id = *id;
  slot.alloc_ttl = std::max(ttl, std::chrono::milliseconds(0));
  ArmAllocationDeadline(&slot);
  return *id;
}

absl::StatusOr<std::uint64_t> SlotTable::BeginWrite(SlotId id, std::uint64_t stored_bytes,
                                                    BlockInfo* replaced) {
  MutexLock lock(&mu_);
  ExpireLocked();
  absl::StatusOr<Slot*> found = Find(id);
  if (!found.ok()) return found.status();
  Slot* slot = *found;
  if (stored_bytes == 0 || stored_bytes > id.slot_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': a payload of {} bytes does not fit the slot at offset {} ({} "
                    "bytes)",
                    name_, stored_bytes, id.offset, id.slot_bytes));
  }
  if (slot->state == State::kWriting) {
    return absl::FailedPreconditionError(fmt::format(
        "tier '{}': slot at offset {} is being written by another caller", name_, id.offset));
  }
  if (slot->leases != 0 || slot->reads != 0) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} is pinned ({} leases, {} reads in progress) "
                    "and cannot be rewritten",
                    name_, id.offset, slot->leases, slot->reads));
  }
  if (slot->state == State::kReady) {
    if (replaced != nullptr) *replaced = slot->info;
    --blocks_;
    stored_bytes_ -= slot->info.stored_bytes;
    stored_slot_bytes_ -= id.slot_bytes;
  } else if (replaced != nullptr) {
    *replaced = BlockInfo{};
  }
  slot->state = State::kWriting;
  slot->alloc_seq = 0;
  return next_generation_++;
}

void SlotTable::FinishWrite(SlotId id, const BlockInfo& info) {
  MutexLock lock(&mu_);
  auto it = slots_.find(id.offset);
  if (it == slots_.end() || it->second.state != State::kWriting) return;
  it->second.state = State::kReady;
  it->second.info = info;
  ++blocks_;
  stored_bytes_ += info.stored_bytes;
  stored_slot_bytes_ += id.slot_bytes;
  ++writes_;
  write_bytes_ += info.stored_bytes;
}

void SlotTable::AbortWrite(SlotId id) {
  MutexLock lock(&mu_);
  auto it = slots_.find(id.offset);
  if (it == slots_.end() || it->second.state != State::kWriting) return;
  it->second.state = State::kAllocated;
  it->second.info = BlockInfo{};
  ArmAllocationDeadline(&it->second);
}

absl::StatusOr<BlockInfo> SlotTable::BeginRead(SlotId id, std::uint64_t out_bytes) {
  MutexLock lock(&mu_);
  ExpireLocked();
  absl::StatusOr<Slot*> found = Find(id);
  if (!found.ok()) return found.status();
  Slot* slot = *found;
  if (slot->state != State::kReady) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} holds no block", name_, id.offset));
  }
  if (out_bytes < slot->info.stored_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': buffer of {} bytes is smaller than the block of {} bytes in slot "
                    "at offset {}",
                    name_, out_bytes, slot->info.stored_bytes, id.offset));
  }
  ++slot->reads;
  return slot->info;
}

void SlotTable::EndRead(SlotId id, bool ok) {
  MutexLock lock(&mu_);
  auto it = slots_.find(id.offset);
  if (it == slots_.end() || it->second.reads == 0) return;
  --it->second.reads;
  if (ok) {
    ++reads_;
    read_bytes_ += it->second.info.stored_bytes;
  }
  MaybeRelease(&it->second);
}

absl::StatusOr<BlockInfo> SlotTable::Info(SlotId id) const {
  MutexLock lock(&mu_);
  absl::StatusOr<const Slot*> found = FindConst(id);
  if (!found.ok()) return found.status();
  if ((*found)->state != State::kReady) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} holds no block", name_, id.offset));
  }
  return (*found)->info;
}

absl::Status SlotTable::Free(SlotId id, BlockInfo* dropped, bool* had_block) {
  MutexLock lock(&mu_);
  ExpireLocked();
  if (had_block != nullptr) *had_block = false;
  absl::StatusOr<Slot*> found = Find(id);
  if (!found.ok()) return found.status();
  Slot* slot = *found;
  if (slot->state == State::kWriting) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} is being written", name_, id.offset));
  }
  if (slot->state == State::kReady) {
    if (dropped != nullptr) *dropped = slot->info;
    if (had_block != nullptr) *had_block = true;
    --blocks_;
    stored_bytes_ -= slot->info.stored_bytes;
    stored_slot_bytes_ -= id.slot_bytes;
    slot->state = State::kAllocated;
  }
  slot->free_pending = true;
  if (slot->leases != 0 || slot->reads != 0) ++frees_deferred_;
  MaybeRelease(slot);
  return absl::OkStatus();
}

void SlotTable::DropCorrupt(SlotId id) {
  MutexLock lock(&mu_);
  ++checksum_failures_;
  auto it = slots_.find(id.offset);
  if (it == slots_.end() || it->second.free_pending) return;
  Slot& slot = it->second;
  if (slot.state == State::kReady) {
    --blocks_;
    stored_bytes_ -= slot.info.stored_bytes;
    stored_slot_bytes_ -= id.slot_bytes;
    slot.state = State::kAllocated;
  }
  slot.free_pending = true;
  MaybeRelease(&slot);
}

absl::Status SlotTable::Restore(SlotId id, const BlockInfo& info) {
  MutexLock lock(&mu_);
  if (info.stored_bytes == 0 || info.stored_bytes > id.slot_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': {} stored bytes do not fit the slot at offset {} ({} bytes)", name_,
                    info.stored_bytes, id.offset, id.slot_bytes));
  }
  if (absl::Status s = allocator_.Claim(id); !s.ok()) return s;
  Slot& slot = slots_[id.offset];
  slot = Slot{};
  slot.id = id;
  slot.state = State::kReady;
  slot.info = info;
  ++blocks_;
  stored_bytes_ += info.stored_bytes;
  stored_slot_bytes_ += id.slot_bytes;
  if (info.generation >= next_generation_) next_generation_ = info.generation + 1;
  return absl::OkStatus();
}

absl::StatusOr<LeaseId> SlotTable::AcquireLease(SlotId id, std::chrono::milliseconds ttl) {
  if (ttl.count() <= 0 || ttl > options_.max_lease_ttl) {
    return absl::InvalidArgumentError(fmt::format("tier '{}': lease ttl {} ms is outside 1..{} ms",
                                                  name_, ttl.count(),
                                                  options_.max_lease_ttl.count()));
  }
  MutexLock lock(&mu_);
  ExpireLocked();
  absl::StatusOr<Slot*> found = Find(id);
  if (!found.ok()) return found.status();
  Slot* slot = *found;
  if (slot->state != State::kReady) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} holds no block to lease", name_, id.offset));
  }
  const LeaseId lease = next_lease_++;
  const Env::TimePoint deadline = env_->Now() + ttl;
  leases_[lease] = Lease{id.offset, deadline};
  ++slot->leases;
  deadlines_.push(Deadline{deadline, true, lease, 0});
  return lease;
}

absl::Status SlotTable::ReleaseLease(LeaseId lease) {
  MutexLock lock(&mu_);
  ExpireLocked();
  auto it = leases_.find(lease);
  if (it == leases_.end()) {
    return absl::NotFoundError(
        fmt::format("tier '{}': lease {} is not held (released or expired)", name_, lease));
  }
  const std::uint64_t offset = it->second.offset;
  leases_.erase(it);
  auto slot = slots_.find(offset);
  if (slot != slots_.end()) {
    --slot->second.leases;
    MaybeRelease(&slot->second);
  }
  return absl::OkStatus();
}

std::size_t SlotTable::Expire() {
  MutexLock lock(&mu_);
  return ExpireLocked();
}

absl::Status SlotTable::CheckAllocated(SlotId id) const {
  MutexLock lock(&mu_);
  absl::StatusOr<const Slot*> found = FindConst(id);
  if (!found.ok()) return found.status();
  if ((*found)->state == State::kWriting) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} is being written", name_, id.offset));
  }
  return absl::OkStatus();
}

std::uint64_t SlotTable::SlotBytesFor(std::uint64_t bytes) const {
  MutexLock lock(&mu_);
  return allocator_.SlotBytesFor(bytes);
}

TierStats SlotTable::Stats() const {
  MutexLock lock(&mu_);
  TierStats s;
  s.name = name_;
  s.kind = kind_;
  s.capacity_bytes = allocator_.capacity_bytes();
  s.allocated_bytes = allocator_.allocated_bytes();
  s.free_bytes = allocator_.free_bytes();
  s.slots_in_use = allocator_.slots_in_use();
  s.stored_bytes = stored_bytes_;
  s.blocks = blocks_;
  s.leases_active = leases_.size();
  s.leases_expired = leases_expired_;
  s.allocations_reclaimed = allocations_reclaimed_;
  s.frees_deferred = frees_deferred_;
  s.checksum_failures = checksum_failures_;
  s.writes = writes_;
  s.reads = reads_;
  s.write_bytes = write_bytes_;
  s.read_bytes = read_bytes_;
  s.internal_fragmentation = stored_slot_bytes_ == 0
                                 ? 0.0
                                 : static_cast<double>(stored_slot_bytes_ - stored_bytes_) /
                                       static_cast<double>(stored_slot_bytes_);
  s.external_fragmentation = allocator_.ExternalFragmentation();
  return s;
}

}  // namespace cachesvc::tiers
