#include "cachesvc/cache_engine.h"

namespace cachesvc {
namespace {

constexpr tiers::TierKind kFastestFirst[kTierKinds] = {
    tiers::TierKind::kHbm, tiers::TierKind::kHost, tiers::TierKind::kNvme};

}  // namespace

CacheEngine::CacheEngine(BlockIndex* index, ResidencyPolicy* policy, TierCapacity capacity)
    : index_(index), policy_(policy), capacity_(capacity), exclusive_(policy->ExclusiveTiers()) {
  bool found = false;
  for (tiers::TierKind t : kFastestFirst) {
    if (capacity_.blocks[Index(t)] == 0) continue;
    present_ |= TierBit(t);
    if (!found) fastest_ = t;
    found = true;
  }
}

ServeResult CacheEngine::Serve(std::span<const BlockKey> chain, std::int64_t now_us,
                               std::span<std::uint8_t> hit_tiers, std::uint64_t session) {
  ServeResult r;
  if (present_ == 0) {
    r.computed = static_cast<std::uint32_t>(chain.size());
    r.not_admitted = r.computed;
    return r;
  }
  policy_->BeginRequest(session, chain, now_us);
  masks_.resize(chain.size());
  r.prefix_hits =
      static_cast<std::uint32_t>(index_->LongestCachedPrefix(chain, present_, now_us, masks_));
  for (std::uint32_t i = 0; i < r.prefix_hits; ++i) {
    for (tiers::TierKind t : kFastestFirst) {
      if ((masks_[i] & TierBit(t)) != 0) {
        ++r.hits_from[Index(t)];
        if (i < hit_tiers.size()) hit_tiers[i] = static_cast<std::uint8_t>(t);
        break;
      }
    }
  }
  r.computed = static_cast<std::uint32_t>(chain.size()) - r.prefix_hits;
  for (const BlockKey& key : chain) {
    const TierMask held = index_->Tiers(key);
    if ((held & TierBit(fastest_)) != 0) {
      policy_->Touched(key, fastest_, now_us);
    } else if (!Admit(key, fastest_, now_us, 0)) {
      ++r.not_admitted;
    } else if (exclusive_ && held != 0) {
      DropSlowerCopies(key, held);
    }
  }
  policy_->EndRequest(now_us);
  return r;
}

std::size_t CacheEngine::Prefetch(std::int64_t now_us) {
  std::size_t moved = 0;
  for (const BlockKey& key : policy_->Prefetch(now_us)) {
    const TierMask held = index_->Tiers(key);
    if ((held & TierBit(fastest_)) != 0) {
      policy_->PrefetchFound(key, now_us);  // still there: the policy may keep it now
      continue;
    }
    if ((held & present_) == 0) continue;
    if (Admit(key, fastest_, now_us, 0)) {
      ++moved;
      if (exclusive_) DropSlowerCopies(key, held);
    }
  }
  stats_.prefetched += moved;
  return moved;
}

void CacheEngine::DropSlowerCopies(const BlockKey& key, TierMask held) {
  for (tiers::TierKind t : kFastestFirst) {
    if (t == fastest_ || (held & TierBit(t)) == 0) continue;
    if (index_->RemoveCopy(key, t)) {
      --used_[Index(t)];
      policy_->Removed(key, t);
    }
  }
}

bool CacheEngine::Admit(const BlockKey& key, tiers::TierKind tier, std::int64_t now_us, int depth) {
  const unsigned t = Index(tier);
  while (used_[t] >= capacity_.blocks[t]) {
    if (!EvictOne(tier, now_us, depth)) return false;
  }
  BlockEntry fresh;
  fresh.last_access_us = now_us;
  index_->AddCopy(key, tier, TierCopy{}, fresh);
  ++used_[t];
  ++stats_.admitted_to[t];
  policy_->Added(key, tier, now_us);
  return true;
}

bool CacheEngine::EvictOne(tiers::TierKind tier, std::int64_t now_us, int depth) {
  const std::optional<BlockKey> victim = policy_->ChooseVictim(tier, now_us);
  if (!victim) return false;
  const unsigned t = Index(tier);
  const std::optional<tiers::TierKind> target = policy_->DemoteTarget(tier);
  const bool demote = target && (present_ & TierBit(*target)) != 0 && depth < kTierKinds;
  // The entry stays while the block moves (TakeCopy), and goes if the block was dropped.
  const TierMask left = index_->TakeCopy(*victim, tier);
  --used_[t];
  policy_->Removed(*victim, tier);
  bool moved = false;
  if (demote) {
    if ((left & TierBit(*target)) != 0) {
      policy_->Touched(*victim, *target, now_us);
      moved = true;
    } else {
      moved = Admit(*victim, *target, now_us, depth + 1);
    }
  }
  if (!moved && left == 0) index_->EraseIfUnused(*victim);
  ++(moved ? stats_.demoted_from[t] : stats_.dropped_from[t]);
  return true;
}

}  // namespace cachesvc
