#include "cachesvc/cache_engine.h"

#include <algorithm>
#include <bit>

#include "fmt/format.h"

namespace cachesvc {
namespace {

using tiers::TierKind;

constexpr TierKind kFastestFirst[kTierKinds] = {TierKind::kHbm, TierKind::kHost, TierKind::kNvme};

// Evictions one allocation may cause before it gives up (a tier whose free space is fragmented
// across size classes may need several).
constexpr int kMaxEvictions = 256;

}  // namespace

std::array<SimulatedTiers::Geometry, kTierKinds> SimulatedTiers::ForBlocks(
    const TierCapacity& capacity, std::uint64_t block_bytes) {
  std::array<Geometry, kTierKinds> g{};
  const std::uint64_t slot = std::bit_ceil(std::max<std::uint64_t>(block_bytes, 1));
  for (unsigned t = 0; t < kTierKinds; ++t) g[t] = Geometry{capacity.blocks[t] * slot, slot};
  return g;
}

absl::StatusOr<TierCopy> SimulatedTiers::Reserve(TierKind tier, std::uint64_t bytes) {
  const auto t = static_cast<unsigned>(tier);
  const std::uint64_t slot =
      std::max(tiers_[t].min_slot_bytes, std::bit_ceil(std::max<std::uint64_t>(bytes, 1)));
  if (used_[t] + slot > tiers_[t].capacity_bytes) {
    return absl::ResourceExhaustedError(
        fmt::format("tier {}: {} of {} bytes used", t, used_[t], tiers_[t].capacity_bytes));
  }
  used_[t] += slot;
  TierCopy c;
  c.slot_offset = next_offset_;
  next_offset_ += slot;
  c.slot_log2 = static_cast<std::uint8_t>(std::countr_zero(slot));
  return c;
}

void SimulatedTiers::Free(TierKind tier, const TierCopy& copy) {
  const auto t = static_cast<unsigned>(tier);
  used_[t] -= std::min(used_[t], std::uint64_t{1} << copy.slot_log2);
}

TierMask SimulatedTiers::Present() const {
  TierMask m = 0;
  for (TierKind t : kFastestFirst) {
    if (tiers_[static_cast<unsigned>(t)].capacity_bytes > 0) m |= TierBit(t);
  }
  return m;
}

CacheEngine::CacheEngine(BlockIndex* index, ResidencyPolicy* policy, PlacementTiers* tiers,
                         TierMask present)
    : index_(index), policy_(policy), tiers_(tiers), present_(present) {
  Init();
}

CacheEngine::CacheEngine(BlockIndex* index, ResidencyPolicy* policy, TierCapacity capacity,
                         std::uint64_t block_bytes)
    : index_(index),
      policy_(policy),
      owned_tiers_(
          std::make_unique<SimulatedTiers>(SimulatedTiers::ForBlocks(capacity, block_bytes))),
      tiers_(owned_tiers_.get()),
      present_(owned_tiers_->Present()) {
  Init();
}

void CacheEngine::Init() {
  exclusive_ = policy_->ExclusiveTiers();
  for (TierKind t : kFastestFirst) {
    if ((present_ & TierBit(t)) != 0) {
      fastest_ = t;
      break;
    }
  }
}

void CacheEngine::SetPolicy(ResidencyPolicy* policy) {
  policy_ = policy;
  exclusive_ = policy_->ExclusiveTiers();
}

void CacheEngine::Hold(const BlockKey& key) { ++moving_[key]; }

void CacheEngine::Unhold(const BlockKey& key) {
  auto it = moving_.find(key);
  if (it != moving_.end() && --it->second == 0) moving_.erase(it);
}

bool CacheEngine::Evictable(const BlockKey& key) const {
  if (moving_.contains(key)) return false;
  const auto e = index_->Get(key);
  return !e || e->leases == 0;
}

LoadResult CacheEngine::Load(std::span<const BlockKey> chain, std::int64_t now_us,
                             std::uint64_t session, std::span<std::uint8_t> hit_tiers) {
  LoadResult r;
  if (present_ == 0) return r;
  policy_->BeginRequest(session, chain, now_us, RequestStep::kLoad);
  masks_.resize(chain.size());
  const std::size_t prefix = index_->LongestCachedPrefix(chain, present_, now_us, masks_);
  // The prefix's blocks are not victims while it is brought up (making room for one must not
  // push out another, nor the copy it is read from).
  for (std::size_t i = 0; i < prefix; ++i) Hold(chain[i]);
  // Once the fastest tier has no room, it has none for the rest of the prefix either (only held
  // blocks are left to evict): the rest is served from where it is, without asking again.
  bool fastest_full = false;
  for (std::size_t i = 0; i < prefix; ++i) {
    const BlockKey& key = chain[i];
    const TierMask held = masks_[i] & present_;
    if ((held & TierBit(fastest_)) != 0) {
      policy_->Touched(key, fastest_, now_us);
    } else if (absl::Status st = fastest_full ? absl::ResourceExhaustedError("fastest tier full")
                                              : Promote(key, held, now_us);
               !st.ok()) {
      // Not brought up: a miss where the reader needs the fastest tier (the daemon's clients read
      // host memory), else a hit served from the tier that holds it (an engine copies it into
      // its own memory). A copy that failed its checksum is a miss either way.
      if (daemon_clients_ || !absl::IsResourceExhausted(st)) {
        r.failed = st;
        break;
      }
      fastest_full = true;
      ++stats_.not_promoted;
    } else {
      ++stats_.promoted;
      masks_[i] |= TierBit(fastest_);
    }
    for (TierKind t : kFastestFirst) {
      if ((held & TierBit(t)) != 0) {
        ++r.hits_from[Index(t)];
        if (i < hit_tiers.size()) hit_tiers[i] = static_cast<std::uint8_t>(t);
        break;
      }
    }
    ++r.prefix;
  }
  for (std::size_t i = 0; i < prefix; ++i) Unhold(chain[i]);
  policy_->EndRequest(now_us);
  return r;
}

absl::StatusOr<std::vector<CacheEngine::Slot>> CacheEngine::Reserve(
    std::span<const BlockKey> chain, std::size_t count, std::uint64_t bytes, std::int64_t now_us,
    std::uint64_t session, TierMask spill) {
  if (present_ == 0) return absl::FailedPreconditionError("no tiers");
  policy_->BeginRequest(session, chain, now_us, RequestStep::kReserve);
  for (const BlockKey& k : chain) Hold(k);
  std::vector<Slot> slots;
  slots.reserve(count);
  absl::Status failed;
  // The tiers that may take the blocks, fastest first. A tier that found no room once has none
  // for the rest of the request (it could only evict the request's own, held, blocks).
  TierMask open = (spill & present_) | TierBit(fastest_);
  while (slots.size() < count) {
    absl::StatusOr<TierCopy> slot = absl::ResourceExhaustedError("no tier has room");
    TierKind tier = fastest_;
    for (TierKind t : kFastestFirst) {
      if (Index(t) < Index(fastest_) || (open & TierBit(t)) == 0) continue;
      tier = t;
      slot = MakeRoom(tier, bytes, now_us, 0);
      if (slot.ok() || !absl::IsResourceExhausted(slot.status())) break;
      open &= static_cast<TierMask>(~TierBit(t));
    }
    if (!slot.ok()) {
      failed = slot.status();
      break;
    }
    slots.push_back(Slot{tier, *slot});
  }
  for (const BlockKey& k : chain) Unhold(k);
  policy_->EndRequest(now_us);
  if (slots.empty() && count > 0) return failed;
  return slots;
}

void CacheEngine::Commit(std::span<const BlockKey> chain, std::span<const NewBlock> blocks,
                         std::int64_t now_us, std::uint64_t session) {
  CommitKnown(chain, blocks, now_us, session, {});
}

void CacheEngine::CommitKnown(std::span<const BlockKey> chain, std::span<const NewBlock> blocks,
                              std::int64_t now_us, std::uint64_t session,
                              std::span<const TierMask> held_tiers) {
  policy_->BeginRequest(session, chain, now_us, RequestStep::kCommit);
  std::size_t next = 0;  // blocks are in chain order; any not in `chain` go last
  for (std::size_t i = 0; i < chain.size(); ++i) {
    const BlockKey& key = chain[i];
    if (next < blocks.size() && blocks[next].key == key) {
      Insert(key, blocks[next].slot.tier, blocks[next].slot.copy, blocks[next].entry, now_us);
      ++next;
      continue;
    }
    const TierMask held = (i < held_tiers.size() ? held_tiers[i] : index_->Tiers(key)) & present_;
    for (TierKind t : kFastestFirst) {
      if ((held & TierBit(t)) != 0) {
        policy_->Touched(key, t, now_us);
        break;
      }
    }
  }
  for (; next < blocks.size(); ++next) {
    Insert(blocks[next].key, blocks[next].slot.tier, blocks[next].slot.copy, blocks[next].entry,
           now_us);
  }
  policy_->EndRequest(now_us);
}

ServeResult CacheEngine::Serve(std::span<const BlockKey> chain, std::int64_t now_us,
                               std::span<std::uint8_t> hit_tiers, std::uint64_t session,
                               std::uint64_t block_bytes) {
  ServeResult r;
  const LoadResult loaded = Load(chain, now_us, session, hit_tiers);
  r.prefix_hits = loaded.prefix;
  r.hits_from = loaded.hits_from;
  r.computed = static_cast<std::uint32_t>(chain.size()) - r.prefix_hits;
  if (present_ == 0) {
    r.not_admitted = r.computed;
    return r;
  }
  fresh_.clear();
  fresh_keys_.clear();
  // Where each block of the chain is, for the commit: the chain's blocks are not victims while
  // the slots are reserved, so this holds until then.
  masks_.resize(chain.size());
  for (std::size_t i = r.prefix_hits; i < chain.size(); ++i) {
    masks_[i] = index_->Tiers(chain[i]) & present_;
    if (masks_[i] != 0) continue;                        // stored (after a gap)
    if (!fresh_keys_.insert(chain[i]).second) continue;  // the chain repeats a block
    NewBlock b{chain[i], Slot{}, BlockEntry{}};
    b.entry.last_access_us = now_us;
    fresh_.push_back(b);
  }
  if (!fresh_.empty()) {
    // The daemon's clients write host memory only: no spill below it for them.
    auto slots = Reserve(chain, fresh_.size(), block_bytes, now_us, session,
                         daemon_clients_ ? 0 : kAllTiers);
    const std::size_t got = slots.ok() ? slots->size() : 0;
    r.not_admitted = static_cast<std::uint32_t>(fresh_.size() - got);
    fresh_.resize(got);
    for (std::size_t i = 0; i < got; ++i) {
      fresh_[i].slot = (*slots)[i];
      fresh_[i].slot.copy.stored_bytes = static_cast<std::uint32_t>(block_bytes);
    }
  }
  CommitKnown(chain, fresh_, now_us, session, masks_);
  return r;
}

bool CacheEngine::PrefetchOne(const BlockKey& key, std::int64_t now_us) {
  const TierMask held = index_->Tiers(key) & present_;
  if ((held & TierBit(fastest_)) != 0) {
    policy_->PrefetchFound(key, now_us);  // still there: the policy may keep it now
    return false;
  }
  if (held == 0 || !Promote(key, held, now_us).ok()) return false;
  ++stats_.prefetched;
  return true;
}

std::size_t CacheEngine::Prefetch(std::int64_t now_us) {
  std::size_t moved = 0;
  for (const BlockKey& key : DuePrefetches(now_us)) moved += PrefetchOne(key, now_us) ? 1 : 0;
  return moved;
}

absl::Status CacheEngine::Promote(const BlockKey& key, TierMask held, std::int64_t now_us) {
  const auto e = index_->Get(key);
  if (!e) return absl::NotFoundError("block is gone");
  TierKind from = fastest_;
  for (TierKind t : kFastestFirst) {
    if (t != fastest_ && (held & TierBit(t)) != 0) {
      from = t;
      break;
    }
  }
  if (from == fastest_) return absl::NotFoundError("no copy to bring up");
  if (absl::Status st = CopyTo(key, *e, from, fastest_, now_us, 0, true); !st.ok()) return st;
  if (exclusive_) DropSlowerCopies(key, held);
  return absl::OkStatus();
}

absl::Status CacheEngine::Replicate(const BlockKey& key, TierKind to, std::int64_t now_us) {
  const auto e = index_->Get(key);
  if (!e || (present_ & TierBit(to)) == 0) return absl::FailedPreconditionError("no such copy");
  if (e->In(to)) return absl::OkStatus();
  for (TierKind t : kFastestFirst) {
    if (t != to && e->In(t) && (present_ & TierBit(t)) != 0) {
      return CopyTo(key, *e, t, to, now_us, 0, /*make_room=*/false);
    }
  }
  return absl::FailedPreconditionError("no other copy to make it from");
}

absl::Status CacheEngine::CopyTo(const BlockKey& key, const BlockEntry& e, TierKind from,
                                 TierKind to, std::int64_t now_us, int depth, bool make_room) {
  const std::uint64_t bytes = e.Copy(from).stored_bytes;
  Hold(key);
  absl::StatusOr<TierCopy> slot =
      make_room ? MakeRoom(to, bytes, now_us, depth) : tiers_->Reserve(to, bytes);
  absl::Status st = slot.status();
  if (slot.ok()) {
    st = tiers_->Copy(key, e, from, to, *slot);
    if (st.ok()) {
      Insert(key, to, *slot, e, now_us);
    } else {
      tiers_->Free(to, *slot);
    }
  }
  Unhold(key);
  return st;
}

void CacheEngine::Recovered(const BlockKey& key, TierKind tier, const TierCopy& copy,
                            const BlockEntry& entry, std::int64_t now_us) {
  Insert(key, tier, copy, entry, now_us);
}

void CacheEngine::Insert(const BlockKey& key, TierKind tier, const TierCopy& copy,
                         const BlockEntry& fresh, std::int64_t now_us) {
  index_->AddCopy(key, tier, copy, fresh);
  ++used_[Index(tier)];
  ++stats_.admitted_to[Index(tier)];
  tiers_->CopyAdded(key, tier, copy);
  policy_->Added(key, tier, now_us);
}

TierMask CacheEngine::Forget(const BlockKey& key, TierKind tier, const TierCopy& copy) {
  const TierMask left = index_->TakeCopy(key, tier);
  --used_[Index(tier)];
  policy_->Removed(key, tier);
  tiers_->CopyRemoved(key, tier, copy);
  tiers_->Free(tier, copy);
  return left;
}

std::uint64_t CacheEngine::Drop(const BlockKey& key, TierKind tier) {
  const auto e = index_->Get(key);
  if (!e || !e->In(tier)) return 0;
  const TierCopy copy = e->Copy(tier);
  if (Forget(key, tier, copy) == 0) {
    index_->EraseIfUnused(key);
    tiers_->BlockGone(key);
  }
  return std::uint64_t{1} << copy.slot_log2;
}

void CacheEngine::DropSlowerCopies(const BlockKey& key, TierMask held) {
  for (TierKind t : kFastestFirst) {
    if (t == fastest_ || (held & TierBit(t)) == 0) continue;
    const auto e = index_->Get(key);
    if (e && e->In(t)) Forget(key, t, e->Copy(t));
  }
}

absl::StatusOr<TierCopy> CacheEngine::MakeRoom(TierKind tier, std::uint64_t bytes,
                                               std::int64_t now_us, int depth) {
  for (int i = 0; i < kMaxEvictions; ++i) {
    auto slot = tiers_->Reserve(tier, bytes);
    if (slot.ok() || !absl::IsResourceExhausted(slot.status())) return slot;
    if (!EvictOne(tier, now_us, depth)) return slot.status();
  }
  return absl::ResourceExhaustedError(
      fmt::format("no room for {} bytes after {} evictions", bytes, kMaxEvictions));
}

bool CacheEngine::EvictOne(TierKind tier, std::int64_t now_us, int depth) {
  const unsigned t = Index(tier);
  for (int attempt = 0; attempt < kMaxEvictions; ++attempt) {
    const std::optional<BlockKey> victim =
        policy_->ChooseVictim(tier, now_us, [this](const BlockKey& k) { return Evictable(k); });
    if (!victim) return false;
    const auto e = index_->Get(*victim);
    if (!e || !e->In(tier)) {  // the policy's view is stale: it forgets the block
      policy_->Removed(*victim, tier);
      continue;
    }
    const std::optional<TierKind> target = policy_->DemoteTarget(tier);
    const bool demote = target && (present_ & TierBit(*target)) != 0 && depth < kTierKinds;
    bool moved = false;
    if (demote && e->In(*target)) {
      policy_->Touched(*victim, *target, now_us);
      moved = true;
    } else if (demote) {
      // The source slot stays valid until Forget frees it below.
      moved = CopyTo(*victim, *e, tier, *target, now_us, depth + 1, true).ok();
    }
    if (Forget(*victim, tier, e->Copy(tier)) == 0) {
      index_->EraseIfUnused(*victim);
      tiers_->BlockGone(*victim);
    }
    ++(moved ? stats_.demoted_from[t] : stats_.dropped_from[t]);
    if (observer_) observer_(*victim, tier, moved);
    return true;
  }
  return false;
}

}  // namespace cachesvc
