// BlockStore's operator view and actions (AdminService GetBlock and Evict). Another tenant's
// block is simply not found: keys are tenant-scoped.
#include "cachesvc/block_store.h"
#include "fmt/format.h"

namespace cachesvc {

using tiers::TierKind;

absl::StatusOr<BlockDescription> BlockStore::Describe(std::string_view tenant,
                                                      std::string_view salt,
                                                      const BlockKey& key) const {
  (void)tenant;  // the salt scopes the key: another tenant's block is simply not found
  const BlockKey internal = TenantBlockKey(salt, key);
  MutexLock lock(&mu_);
  const auto e = index_.Get(internal);
  if (!e || e->tiers == 0) {
    return absl::NotFoundError(fmt::format("block {} is not stored", key.Hex()));
  }
  const TierKind fastest = e->In(TierKind::kHost) ? TierKind::kHost : TierKind::kNvme;
  BlockDescription d;
  d.key = key;
  d.layout_fingerprint = e->layout_fingerprint;
  d.tiers = e->tiers;
  d.codec = e->Copy(fastest).codec;
  d.length = e->Copy(fastest).stored_bytes;
  d.leases = e->leases;
  if (auto it = checksum_.find(internal); it != checksum_.end()) d.checksum = it->second;
  if (auto it = session_refs_.find(internal); it != session_refs_.end()) d.sessions = it->second;
  d.last_access_unix_ms = e->last_access_us == 0 ? 0 : env_->ToUnixMillis(e->last_access_us);
  d.accesses = e->accesses;
  return d;
}

absl::StatusOr<EvictResult> BlockStore::Evict(std::string_view tenant, std::string_view salt,
                                              const EvictTarget& target,
                                              std::optional<TierKind> tier) {
  MutexLock lock(&mu_);
  std::vector<BlockKey> candidates;  // tenant-scoped keys
  if (target.key) {
    const BlockKey internal = TenantBlockKey(salt, *target.key);
    const auto e = index_.Get(internal);
    if (!e || e->tiers == 0) {
      return absl::NotFoundError(fmt::format("block {} is not stored", target.key->Hex()));
    }
    if (e->leases > 0) {
      return absl::FailedPreconditionError(fmt::format(
          "block {} has {} outstanding leases (a load is reading it); evict it when they end",
          target.key->Hex(), e->leases));
    }
    candidates.push_back(internal);
  } else if (!target.session_id.empty()) {
    if (SessionBlocks* s = FindSession(tenant, target.session_id); s != nullptr) {
      for (const BlockKey& k : SessionKeys(*s)) {
        auto refs = session_refs_.find(k);
        if (refs == session_refs_.end() || refs->second <= 1) candidates.push_back(k);
      }
    }
  } else if (target.all) {
    for (const auto& [internal, owner] : owner_) {
      if (owner == tenant) candidates.push_back(internal);
    }
  } else {
    return absl::InvalidArgumentError("evict: name a key, a session or all");
  }
  EvictResult result;
  for (const BlockKey& internal : candidates) {
    const auto e = index_.Get(internal);
    if (!e || e->leases > 0) continue;
    bool evicted = false;
    for (TierKind kind : {TierKind::kHost, TierKind::kNvme}) {
      if ((tier && *tier != kind) || !e->In(kind)) continue;
      result.bytes += engine_->Drop(internal, kind);
      ++stats_.evicted_admin;
      evicted = true;
    }
    if (evicted) ++result.blocks;
  }
  return result;
}

}  // namespace cachesvc
