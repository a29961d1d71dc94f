// BlockStore's placement policy (built, replaced, its knobs) and the sessions it is told about:
// their chains and tags, tool calls, closes, and the prefetches of waiting sessions.
#include <algorithm>
#include <charconv>

#include "absl/container/flat_hash_set.h"
#include "cachesvc/block_store.h"
#include "fmt/format.h"
#include "proto/xxh3.h"

namespace cachesvc {

using tiers::TierKind;

std::unique_ptr<ResidencyPolicy> BlockStore::BuildPolicy(const PlacementPolicy& p) {
  using std::chrono::microseconds;
  // The name was checked (CheckPlacementPolicy) before the store got it.
  std::unique_ptr<ResidencyPolicy> policy = *MakeResidencyPolicy(
      p.name, PolicyParams{.prefetch_lead_us = microseconds(p.prefetch_lead).count(),
                           .pin_ttl_us = microseconds(p.pin_ttl).count(),
                           .fastest = TierKind::kHost});
  // Every stored block, least recently used first, then the sessions waiting on tool calls.
  std::vector<std::pair<std::int64_t, BlockKey>> blocks;
  index_.ForEach(
      [&](const BlockKey& k, const BlockEntry& e) { blocks.emplace_back(e.last_access_us, k); });
  std::sort(blocks.begin(), blocks.end());
  for (const auto& [last, key] : blocks) {
    const TierMask tiers = index_.Tiers(key);
    for (TierKind kind : {TierKind::kHost, TierKind::kNvme}) {
      if ((tiers & TierBit(kind)) != 0) policy->Added(key, kind, PolicyNow());
    }
  }
  for (const auto& [name, s] : sessions_) {
    if (s.waiting) {
      policy->ToolCallStarted(s.policy_id, SessionKeys(s), s.start_us, s.expected_end_us);
    }
  }
  return policy;
}

PlacementPolicy BlockStore::Policy() const {
  MutexLock lock(&mu_);
  return placement_;
}

absl::Status BlockStore::SetPolicy(const PlacementPolicy& p) {
  if (absl::Status st = CheckPlacementPolicy(p); !st.ok()) return st;
  MutexLock lock(&mu_);
  policy_ = BuildPolicy(p);
  engine_->SetPolicy(policy_.get());
  placement_ = p;
  return absl::OkStatus();
}

absl::Status CheckPlacementPolicy(const PlacementPolicy& p) {
  using std::chrono::milliseconds;
  if (absl::Status st = CheckPolicyName(p.name); !st.ok()) return st;
  const auto check = [](std::string_view name, milliseconds v, milliseconds lo, milliseconds hi) {
    if (v >= lo && v <= hi) return absl::OkStatus();
    return absl::InvalidArgumentError(
        fmt::format("{}: {} ms, not in {}..{}", name, v.count(), lo.count(), hi.count()));
  };
  for (absl::Status st :
       {check("prefetch_lead_ms", p.prefetch_lead, milliseconds(0), kMaxPrefetchLead),
        check("pin_ttl_ms", p.pin_ttl, milliseconds(1), kMaxPinTtl),
        check("lease_timeout_ms", p.lease_timeout, milliseconds(1), kMaxLeaseTimeout)}) {
    if (!st.ok()) return st;
  }
  return absl::OkStatus();
}

std::vector<PlacementKnob> PlacementKnobs(const PlacementPolicy& p) {
  return {
      {"policy", p.name,
       "cachesvc (agent-aware: a waiting session's blocks stay in host memory until its "
       "expected return), lru-tiered, or ttl-pin"},
      {"prefetch_lead_ms", std::to_string(p.prefetch_lead.count()),
       "cachesvc: stage a waiting session's blocks from NVMe this long before its expected "
       "return (0..600000)"},
      {"pin_ttl_ms", std::to_string(p.pin_ttl.count()),
       "ttl-pin: how long a session's blocks are held after its tool call starts (1..86400000)"},
      {"lease_timeout_ms", std::to_string(p.lease_timeout.count()),
       "a lease not released this long ends and its slot is reclaimed (1..86400000); applies to "
       "leases granted from now on"},
  };
}

absl::Status SetPlacementKnob(PlacementPolicy& p, std::string_view name, std::string_view value) {
  if (name == "policy") {
    p.name = std::string(value);
    return absl::OkStatus();
  }
  std::chrono::milliseconds* field = nullptr;
  if (name == "prefetch_lead_ms") field = &p.prefetch_lead;
  if (name == "pin_ttl_ms") field = &p.pin_ttl;
  if (name == "lease_timeout_ms") field = &p.lease_timeout;
  if (field == nullptr) {
    return absl::InvalidArgumentError(fmt::format(
        "knob '{}': not one of policy, prefetch_lead_ms, pin_ttl_ms, lease_timeout_ms", name));
  }
  std::int64_t ms = 0;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), ms);
  if (value.empty() || ec != std::errc() || end != value.data() + value.size()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: '{}' is not a whole number of milliseconds", name, value));
  }
  *field = std::chrono::milliseconds(ms);
  return absl::OkStatus();
}

namespace {
std::string SessionName(std::string_view tenant, std::string_view session_id) {
  return fmt::format("{}\n{}", tenant, session_id);
}
}  // namespace

std::uint64_t BlockStore::SessionId(std::string_view tenant, std::string_view session_id) {
  if (session_id.empty()) return 0;
  const std::string name = SessionName(tenant, session_id);
  return XXH3_64bits(name.data(), name.size()) | 1;
}

BlockStore::SessionBlocks* BlockStore::FindSession(std::string_view tenant,
                                                   std::string_view session_id) {
  auto it = sessions_.find(SessionName(tenant, session_id));
  return it == sessions_.end() ? nullptr : &it->second;
}

BlockStore::SessionBlocks& BlockStore::SessionFor(std::string_view tenant,
                                                  std::string_view session_id) {
  const std::string name = SessionName(tenant, session_id);
  SessionBlocks& s = sessions_[name];
  if (s.policy_id == 0) s.policy_id = SessionId(tenant, session_id);
  return s;
}

std::vector<BlockKey> BlockStore::SessionKeys(const SessionBlocks& s) {
  std::vector<BlockKey> keys = s.chain;
  if (s.tags.empty()) return keys;
  absl::flat_hash_set<BlockKey> seen(s.chain.begin(), s.chain.end());
  for (const BlockKey& k : s.tags) {
    if (seen.insert(k).second) keys.push_back(k);
  }
  return keys;
}

void BlockStore::CountSessionRefs(std::span<const BlockKey> keys, int delta) {
  for (const BlockKey& k : keys) {
    if (delta > 0) {
      session_refs_[k] += static_cast<std::uint32_t>(delta);
      continue;
    }
    auto it = session_refs_.find(k);
    if (it == session_refs_.end()) continue;
    const auto minus = static_cast<std::uint32_t>(-delta);
    if (it->second <= minus) {
      session_refs_.erase(it);
    } else {
      it->second -= minus;
    }
  }
}

void BlockStore::SetSessionChain(std::string_view tenant, std::string_view salt,
                                 std::string_view session_id, std::span<const BlockKey> chain) {
  std::vector<BlockKey> internal;
  internal.reserve(chain.size());
  for (const BlockKey& k : chain) internal.push_back(TenantBlockKey(salt, k));
  MutexLock lock(&mu_);
  SessionBlocks& s = SessionFor(tenant, session_id);
  CountSessionRefs(SessionKeys(s), -1);
  s.chain = std::move(internal);
  CountSessionRefs(SessionKeys(s), +1);
}

bool BlockStore::ExtendSessionChain(std::string_view tenant, std::string_view salt,
                                    std::string_view session_id, std::span<const BlockKey> more) {
  MutexLock lock(&mu_);
  SessionBlocks* s = FindSession(tenant, session_id);
  if (s == nullptr) return false;
  for (const BlockKey& k : more) {
    const BlockKey internal = TenantBlockKey(salt, k);
    s->chain.push_back(internal);
    if (!s->tags.contains(internal)) CountSessionRefs(std::span(&internal, 1), +1);
  }
  return true;
}

void BlockStore::TagSession(std::string_view tenant, std::string_view salt,
                            std::string_view session_id, std::span<const BlockKey> keys) {
  MutexLock lock(&mu_);
  SessionBlocks& s = SessionFor(tenant, session_id);
  CountSessionRefs(SessionKeys(s), -1);
  for (const BlockKey& k : keys) {
    const BlockKey internal = TenantBlockKey(salt, k);
    s.tags.insert(internal);
  }
  CountSessionRefs(SessionKeys(s), +1);
}

void BlockStore::SessionToolCallStarted(std::string_view tenant, std::string_view session_id,
                                        std::chrono::milliseconds expected) {
  MutexLock lock(&mu_);
  SessionBlocks& s = SessionFor(tenant, session_id);
  s.waiting = true;
  s.start_us = PolicyNow();
  s.expected_end_us = s.start_us + std::chrono::microseconds(expected).count();
  engine_->ToolCallStarted(s.policy_id, SessionKeys(s), s.start_us, s.expected_end_us);
}

void BlockStore::SessionToolCallEnded(std::string_view tenant, std::string_view session_id) {
  MutexLock lock(&mu_);
  SessionBlocks* s = FindSession(tenant, session_id);
  if (s == nullptr || !s->waiting) return;
  s->waiting = false;
  engine_->ToolCallEnded(s->policy_id, PolicyNow());
}

void BlockStore::SessionClosed(std::string_view tenant, std::string_view session_id) {
  MutexLock lock(&mu_);
  auto it = sessions_.find(SessionName(tenant, session_id));
  if (it == sessions_.end()) return;
  const std::vector<BlockKey> keys = SessionKeys(it->second);
  // What the closed session leaves: the blocks of its context no other live session's names.
  std::vector<BlockKey> own;
  for (const BlockKey& k : keys) {
    auto refs = session_refs_.find(k);
    if (refs == session_refs_.end() || refs->second <= 1) own.push_back(k);
  }
  engine_->SessionClosed(it->second.policy_id, own, PolicyNow());
  CountSessionRefs(keys, -1);
  sessions_.erase(it);
}

std::size_t BlockStore::Prefetch() {
  std::vector<BlockKey> due;
  {
    MutexLock lock(&mu_);
    due = engine_->DuePrefetches(PolicyNow());
  }
  // One block per lock hold: staging reads NVMe, and RPCs should not wait for all of it.
  std::size_t staged = 0;
  for (const BlockKey& key : due) {
    MutexLock lock(&mu_);
    if (engine_->PrefetchOne(key, PolicyNow())) ++staged;
  }
  return staged;
}

}  // namespace cachesvc
