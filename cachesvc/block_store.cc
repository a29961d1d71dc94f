#include "cachesvc/block_store.h"

#include <sys/random.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "fmt/format.h"
#include "proto/xxh3.h"
#include "spdlog/spdlog.h"
#include "tiers/nvme_tier.h"

namespace cachesvc {

using tiers::TierKind;

BlockKey TenantBlockKey(std::string_view tenant_salt, const BlockKey& key) {
  XXH3_state_t state;
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, tenant_salt.data(), tenant_salt.size());
  XXH3_128bits_update(&state, key.bytes.data(), key.bytes.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits_digest(&state));
  BlockKey out;
  std::memcpy(out.bytes.data(), canonical.digest, out.bytes.size());
  return out;
}

BlockStore::~BlockStore() {
  MutexLock lock(&mu_);
  // EndLease erases from leases_: collect the ids first.
  std::vector<std::uint64_t> ids;
  ids.reserve(leases_.size());
  for (const auto& [id, lease] : leases_) ids.push_back(id);
  for (std::uint64_t id : ids) {
    LeaseRecord& lease = leases_.find(id)->second;
    lease.transfers = 0;
    EndLease(id, lease);
  }
  leases_.clear();
}

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Open(std::vector<tiers::Tier*> tiers,
                                                             const PlacementPolicy& placement,
                                                             Env* env) {
  if (tiers.empty() || tiers[0]->kind() != TierKind::kHost) {
    return absl::InvalidArgumentError("block store: the first tier must be the host tier");
  }
  for (std::size_t i = 1; i < tiers.size(); ++i) {
    if (tiers[i]->kind() != TierKind::kNvme) {
      return absl::InvalidArgumentError(
          fmt::format("block store: tier {} is not an NVMe tier", tiers[i]->name()));
    }
  }
  if (absl::Status st = CheckPlacementPolicy(placement); !st.ok()) return st;
  std::unique_ptr<BlockStore> store(new BlockStore(std::move(tiers), env));
  {
    MutexLock lock(&store->mu_);
    store->placement_ = placement;
    store->policy_ = store->BuildPolicy(placement);
    TierMask present = 0;
    for (tiers::Tier* t : store->tiers_) present |= TierBit(t->kind());
    store->engine_ = std::make_unique<CacheEngine>(&store->index_, store->policy_.get(),
                                                   &store->placement_tiers_, present);
    store->engine_->set_daemon_clients(true);  // clients read and write host memory only
  }
  if (absl::Status st = store->Recover(); !st.ok()) return st;
  return store;
}

absl::Status BlockStore::Recover() {
  auto* nvme = dynamic_cast<tiers::NvmeTier*>(TierOf(TierKind::kNvme));
  if (nvme == nullptr) return absl::OkStatus();
  MutexLock lock(&mu_);
  for (const tiers::IndexEntry& e : nvme->Blocks()) {
    BlockKey internal;
    internal.bytes = e.info.meta.key;
    BlockEntry fresh;
    fresh.layout_fingerprint = e.info.meta.layout_fingerprint;
    fresh.raw_bytes = static_cast<std::uint32_t>(e.info.meta.raw_bytes);
    owner_[internal] = "";  // the tenant is not recorded on NVMe; the key is tenant-scoped
    if (e.info.checksum != 0) checksum_[internal] = e.info.checksum;
    engine_->Recovered(internal, TierKind::kNvme,
                       TierCopy::Of(e.slot, e.info.stored_bytes, e.info.meta.codec), fresh,
                       PolicyNow());
  }
  return absl::OkStatus();
}

tiers::Tier* BlockStore::TierOf(TierKind kind) const {
  for (tiers::Tier* t : tiers_) {
    if (t->kind() == kind) return t;
  }
  return nullptr;
}

std::uint64_t BlockStore::NewLeaseId() {
  for (;;) {
    std::uint64_t id = 0;
    if (getrandom(&id, sizeof id, 0) != static_cast<ssize_t>(sizeof id)) {
      // getrandom on Linux does not fail for 8 bytes once the pool is ready; fall back anyway.
      id = XXH3_64bits(&clock_us_, sizeof clock_us_) ^
           static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
    }
    if (id != 0 && !leases_.contains(id)) return id;
  }
}

void BlockStore::AddTenantBytes(const BlockKey& internal, TierKind tier, std::int64_t delta) {
  auto it = owner_.find(internal);
  const std::string tenant = it == owner_.end() ? std::string() : it->second;
  auto& bytes = tenant_bytes_[tenant][static_cast<unsigned>(tier)];
  bytes = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes) + delta);
}

std::uint64_t BlockStore::TenantBytes(std::string_view tenant, TierKind tier) const {
  MutexLock lock(&mu_);
  auto it = tenant_bytes_.find(std::string(tenant));
  return it == tenant_bytes_.end() ? 0 : it->second[static_cast<unsigned>(tier)];
}

std::vector<BlockPlace> BlockStore::Lookup(std::string_view tenant, std::string_view salt,
                                           std::span<const BlockKey> keys) {
  (void)tenant;
  std::vector<BlockPlace> out;
  for (const BlockKey& key : keys) {
    const BlockKey internal = TenantBlockKey(salt, key);
    const auto e = index_.Get(internal);
    if (!e || e->tiers == 0) break;
    const TierKind fastest = e->In(TierKind::kHost) ? TierKind::kHost : TierKind::kNvme;
    out.push_back(BlockPlace{key, e->tiers, e->Copy(fastest).codec});
  }
  MutexLock lock(&mu_);
  if (out.size() < keys.size()) ++stats_.misses;
  return out;
}

absl::StatusOr<std::vector<ReadLease>> BlockStore::Lease(std::string_view tenant,
                                                         std::string_view salt,
                                                         std::span<const BlockKey> keys,
                                                         bool one_read,
                                                         std::string_view session_id) {
  const std::vector<BlockKey> chain = TenantBlockKeys(salt, keys);  // hashing outside the lock
  const std::uint64_t session = SessionId(tenant, session_id);
  MutexLock lock(&mu_);
  tiers::Tier* host = TierOf(TierKind::kHost);
  const LoadResult loaded = engine_->Load(chain, PolicyNow(), session);
  if (!loaded.failed.ok()) NoteFailedLoad(chain[loaded.prefix], loaded.failed);
  std::vector<ReadLease> out;
  const std::int64_t now_us = env_->NowMicros();
  for (std::size_t i = 0; i < loaded.prefix; ++i) {
    const BlockKey& internal = chain[i];
    const auto e = index_.Get(internal);
    if (!e || !e->In(TierKind::kHost)) break;
    const tiers::SlotId slot = e->Copy(TierKind::kHost).slot();
    auto info = host->Info(slot);
    if (!info.ok()) break;
    auto mem = host->Memory(slot);
    if (!mem.ok()) break;
    auto tier_lease = host->AcquireLease(slot, placement_.lease_timeout * 2);
    if (!tier_lease.ok()) break;
    LeaseRecord rec;
    rec.tenant = std::string(tenant);
    rec.key = keys[i];
    rec.internal = internal;
    rec.slot = slot;
    rec.tier_lease = *tier_lease;
    rec.length = info->stored_bytes;
    rec.checksum = info->checksum;
    if (auto sum = checksum_.find(internal); rec.checksum == 0 && sum != checksum_.end()) {
      rec.checksum = sum->second;
    }
    if (rec.checksum == 0) {  // not known (the host tier keeps none): hash the bytes once
      rec.checksum = XXH3_64bits(mem->address, rec.length);
      checksum_[internal] = rec.checksum;
    }
    rec.codec = info->meta.codec;
    rec.layout_fingerprint = info->meta.layout_fingerprint;
    rec.expires_us = now_us + LeaseMicros();
    const std::uint64_t id = NewLeaseId();
    index_.Update(internal, [](BlockEntry& be) { ++be.leases; });
    ClaimOwner(internal, tenant);
    out.push_back(ReadLease{.lease_id = id,
                            .key = keys[i],
                            .tier = TierKind::kHost,
                            .length = rec.length,
                            .codec = rec.codec,
                            .checksum = rec.checksum,
                            .expires_unix_ms = env_->ToUnixMillis(rec.expires_us),
                            .layout_fingerprint = rec.layout_fingerprint,
                            .ends_after_read = one_read,
                            .address = reinterpret_cast<std::uintptr_t>(mem->address)});
    rec.one_read = one_read;
    // The holder of a lease that is not one-read copies the bytes out of shared memory itself:
    // count them as read here, since no data-plane transfer will.
    if (!one_read) stats_.bytes_read += rec.length;
    leases_.emplace(id, std::move(rec));
    ++stats_.hits;
  }
  if (out.size() < keys.size()) ++stats_.misses;
  return out;
}

void BlockStore::NoteFailedLoad(const BlockKey& internal, const absl::Status& st) {
  // Host memory taken by leases is an ordinary miss under load (debug, or a busy daemon would
  // write a line per load); a copy that failed its checksum is dropped; anything else (an NVMe
  // error) is worth a warning.
  if (absl::IsResourceExhausted(st)) {
    ++stats_.stage_no_room;
    spdlog::debug("block {}: no host room to stage it from NVMe: {}", internal.Hex(),
                  std::string(st.message()));
    return;
  }
  spdlog::warn("block {}: staging from NVMe failed: {}", internal.Hex(), std::string(st.message()));
  if (absl::IsDataLoss(st)) {
    ++stats_.checksum_failures;
    engine_->Drop(internal, TierKind::kNvme);
  }
}

absl::Status BlockStore::Release(std::string_view tenant, std::span<const std::uint64_t> ids) {
  MutexLock lock(&mu_);
  absl::Status first = absl::OkStatus();
  for (std::uint64_t id : ids) {
    auto it = leases_.find(id);
    if (it == leases_.end() || it->second.tenant != tenant || it->second.released) {
      if (first.ok()) first = absl::NotFoundError(fmt::format("lease {} is not a live lease", id));
      continue;
    }
    EndLease(id, it->second);
  }
  return first;
}

void BlockStore::EndLease(std::uint64_t id, LeaseRecord& lease) {
  if (lease.transfers > 0) {  // the data plane ends it when its transfer finishes
    lease.released = true;
    return;
  }
  tiers::Tier* host = TierOf(TierKind::kHost);
  if (lease.write) {
    ForgetWriteLease(lease);
    if (absl::Status st = host->Free(lease.slot); !st.ok()) {
      spdlog::warn("freeing the slot of write lease {}: {}", id, std::string(st.message()));
    }
  } else {
    tiers::ReleaseLeaseOrWarn(*host, lease.tier_lease, "read lease ended");
    index_.Update(lease.internal, [](BlockEntry& e) {
      if (e.leases > 0) --e.leases;
    });
  }
  leases_.erase(id);
}

std::size_t BlockStore::ExpireLeases() {
  MutexLock lock(&mu_);
  return ExpireLocked();
}

std::size_t BlockStore::ExpireLocked() {
  const std::int64_t now_us = env_->NowMicros();
  std::vector<std::uint64_t> expired;
  for (const auto& [id, lease] : leases_) {
    if (lease.expires_us <= now_us && lease.transfers == 0) expired.push_back(id);
  }
  for (std::uint64_t id : expired) EndLease(id, leases_.find(id)->second);
  stats_.leases_expired += expired.size();
  for (tiers::Tier* t : tiers_) t->ExpireLeases();
  return expired.size();
}

absl::StatusOr<AllocateResult> BlockStore::Allocate(
    std::string_view tenant, std::string_view salt, std::span<const BlockKey> keys,
    kernels::CodecId codec, std::uint64_t length, std::uint64_t raw_bytes,
    std::uint64_t layout_fingerprint, std::uint64_t host_quota_bytes, std::string_view session_id) {
  if (length == 0) return absl::InvalidArgumentError("block length must be > 0");
  auto chain = std::make_shared<const std::vector<BlockKey>>(TenantBlockKeys(salt, keys));
  const std::uint64_t session = SessionId(tenant, session_id);
  MutexLock lock(&mu_);
  AllocateResult result;
  const std::string owner(tenant);
  const unsigned host_index = static_cast<unsigned>(TierKind::kHost);
  absl::flat_hash_set<BlockKey> seen;
  std::vector<std::size_t> fresh;  // positions in the chain of the blocks to write
  for (std::size_t i = 0; i < keys.size(); ++i) {
    const BlockKey& internal = (*chain)[i];
    if (index_.Tiers(internal) != 0) {
      result.already_stored.push_back(keys[i]);
    } else if (seen.insert(internal).second) {  // a key named twice gets one lease
      fresh.push_back(i);
    }
  }
  if (fresh.empty()) return result;
  if (host_quota_bytes > 0) {
    const std::uint64_t used = tenant_bytes_[owner][host_index] + reserved_bytes_[owner];
    if (used + fresh.size() * std::bit_ceil(length) > host_quota_bytes) {
      return absl::ResourceExhaustedError(
          fmt::format("tenant '{}' would exceed its host quota of {} bytes ({} used or reserved)",
                      tenant, host_quota_bytes, used));
    }
  }
  // Clients write host memory: no spill to NVMe. Blocks past the first that found no room get no
  // lease (the client saves the head of its chain).
  auto slots = engine_->Reserve(*chain, fresh.size(), length, PolicyNow(), session);
  if (!slots.ok()) return slots.status();
  for (std::size_t n = 0; n < slots->size(); ++n) {
    const std::size_t i = fresh[n];
    const BlockKey& internal = (*chain)[i];
    const TierCopy* slot = &(*slots)[n].copy;
    LeaseRecord rec;
    rec.tenant = owner;
    rec.write = true;
    rec.key = keys[i];
    rec.internal = internal;
    rec.slot = slot->slot();
    rec.length = length;
    rec.raw_bytes = raw_bytes;
    rec.layout_fingerprint = layout_fingerprint;
    rec.codec = codec;
    rec.expires_us = env_->NowMicros() + LeaseMicros();
    rec.chain = chain;
    rec.chain_pos = i;
    rec.session = session;
    reserved_bytes_[owner] += rec.slot.slot_bytes;
    const std::uint64_t id = NewLeaseId();
    result.leases.push_back(
        WriteLease{id, keys[i], length, codec, env_->ToUnixMillis(rec.expires_us)});
    leases_.emplace(id, std::move(rec));
  }
  return result;
}

absl::StatusOr<std::vector<BlockKey>> BlockStore::Commit(std::string_view tenant,
                                                         std::span<const CommitRequest> commits) {
  MutexLock lock(&mu_);
  tiers::Tier* host = TierOf(TierKind::kHost);
  std::vector<BlockKey> committed;
  // The blocks that pass, per allocation (its chain), told to the engine in chain order when the
  // batch ends, early or not: commits before a failure are kept.
  struct Passed {
    std::size_t pos;
    CacheEngine::NewBlock block;
    std::uint64_t session;
  };
  std::vector<std::pair<std::shared_ptr<const std::vector<BlockKey>>, std::vector<Passed>>> passed;
  absl::flat_hash_set<BlockKey> passed_keys;  // their keys (a key committed twice in one batch)
  const auto publish = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    const std::int64_t now = PolicyNow();
    for (auto& [chain, blocks] : passed) {
      std::sort(blocks.begin(), blocks.end(),
                [](const Passed& a, const Passed& b) { return a.pos < b.pos; });
      std::vector<CacheEngine::NewBlock> fresh;
      fresh.reserve(blocks.size());
      for (const Passed& p : blocks) fresh.push_back(p.block);
      engine_->Commit(*chain, fresh, now, blocks.front().session);
    }
  };
  for (const CommitRequest& c : commits) {
    auto it = leases_.find(c.lease_id);
    if (it == leases_.end() || it->second.tenant != tenant || !it->second.write ||
        it->second.released || it->second.expires_us <= env_->NowMicros()) {
      // Past its deadline a lease is dead even before the reaper ends it: its slot may be
      // reclaimed at any moment.
      publish();
      return absl::NotFoundError(fmt::format("lease {} is not a live write lease", c.lease_id));
    }
    LeaseRecord& lease = it->second;
    absl::Status bad;
    if (lease.transfers > 0) {
      bad = absl::FailedPreconditionError(
          fmt::format("lease {}: a write is still in progress", c.lease_id));
    } else if (c.length != lease.length) {
      bad = absl::InvalidArgumentError(
          fmt::format("lease {}: length {} is not the allocated block length {}", c.lease_id,
                      c.length, lease.length));
    } else if (lease.written != lease.length) {
      bad = absl::FailedPreconditionError(fmt::format(
          "lease {}: nothing was written for it (or a write failed); write, then commit",
          c.lease_id));
    }
    if (!bad.ok()) {
      publish();
      return bad;
    }
    auto mem = host->Memory(lease.slot);
    if (!mem.ok()) {
      publish();
      return mem.status();
    }
    const std::uint64_t sum = XXH3_64bits(mem->address, lease.length);
    if (sum != c.checksum) {
      ++stats_.checksum_failures;
      const std::uint64_t id = c.lease_id;
      EndLease(id, lease);  // frees the slot: nothing stored is touched
      publish();
      return absl::DataLossError(fmt::format(
          "lease {}: checksum {:016x} does not match the bytes written ({:016x}); block dropped",
          id, c.checksum, sum));
    }
    const bool taken = index_.Tiers(lease.internal) != 0 || passed_keys.contains(lease.internal);
    if (taken) {  // someone else committed it meanwhile
      committed.push_back(lease.key);
      EndLease(c.lease_id, lease);
      continue;
    }
    tiers::BlockMeta meta;
    meta.key = lease.internal.bytes;
    meta.layout_fingerprint = lease.layout_fingerprint;
    meta.codec = lease.codec;
    meta.raw_bytes = lease.raw_bytes;
    if (absl::Status st = host->Commit(lease.slot, meta, lease.length); !st.ok()) {
      publish();
      return st;
    }
    CacheEngine::NewBlock block;
    block.key = lease.internal;
    block.slot =
        CacheEngine::Slot{TierKind::kHost, TierCopy::Of(lease.slot, lease.length, lease.codec)};
    block.entry.layout_fingerprint = lease.layout_fingerprint;
    block.entry.raw_bytes = static_cast<std::uint32_t>(lease.raw_bytes);
    block.entry.last_access_us = env_->NowMicros();
    owner_[lease.internal] = lease.tenant;
    checksum_[lease.internal] = sum;
    auto group = std::find_if(passed.begin(), passed.end(),
                              [&](const auto& g) { return g.first == lease.chain; });
    if (group == passed.end()) {
      passed.emplace_back(lease.chain, std::vector<Passed>{});
      group = std::prev(passed.end());
    }
    group->second.push_back(Passed{lease.chain_pos, block, lease.session});
    passed_keys.insert(lease.internal);
    ++stats_.commits;
    committed.push_back(lease.key);
    ForgetWriteLease(lease);
    leases_.erase(it);  // the slot now belongs to the block
  }
  publish();
  return committed;
}

std::size_t BlockStore::FlushToNvme() {
  MutexLock lock(&mu_);
  if (TierOf(TierKind::kNvme) == nullptr) return 0;
  std::vector<BlockKey> todo;
  index_.ForEach([&](const BlockKey& k, const BlockEntry& e) {
    if (e.In(TierKind::kHost) && !e.In(TierKind::kNvme)) todo.push_back(k);
  });
  std::size_t written = 0;
  for (const BlockKey& key : todo) {
    // NVMe full: what does not fit stays volatile (nothing is evicted at exit).
    if (absl::Status st = engine_->Replicate(key, TierKind::kNvme, PolicyNow()); st.ok()) {
      ++written;
    } else if (!absl::IsResourceExhausted(st)) {
      spdlog::warn("writing {} to NVMe at exit: {}", key.Hex(), std::string(st.message()));
    }
  }
  return written;
}

void BlockStore::SetEvictionObserver(CacheEngine::EvictionObserver observer) {
  MutexLock lock(&mu_);
  engine_->SetEvictionObserver(std::move(observer));
}

BlockStoreStats BlockStore::Stats() const {
  MutexLock lock(&mu_);
  BlockStoreStats s = stats_;
  for (const auto& [id, lease] : leases_) ++(lease.write ? s.leases_write : s.leases_read);
  const EngineStats& e = engine_->stats();
  s.demoted = e.demoted_from[static_cast<unsigned>(TierKind::kHost)];
  for (std::uint64_t d : e.dropped_from) s.dropped += d;
  s.staged = e.promoted;
  s.prefetched = e.prefetched;
  return s;
}

absl::StatusOr<UcxBlockHandler::ReadGrant> BlockStore::BeginRead(std::uint64_t lease_id) {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || it->second.write || it->second.released ||
      it->second.expires_us <= env_->NowMicros()) {
    return absl::NotFoundError(fmt::format("lease {} is not a live read lease", lease_id));
  }
  auto mem = TierOf(TierKind::kHost)->Memory(it->second.slot);
  if (!mem.ok()) return mem.status();
  ++it->second.transfers;
  return ReadGrant{mem->address, it->second.length};
}

void BlockStore::EndRead(std::uint64_t lease_id, const absl::Status& sent) {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  --it->second.transfers;
  if (sent.ok()) {
    stats_.bytes_read += it->second.length;
    // A read lease is good for one read (ReadLease::ends_after_read) unless its holder asked
    // otherwise.
    if (it->second.one_read) it->second.released = true;
  }
  if (it->second.released && it->second.transfers == 0) EndLease(lease_id, it->second);
}

absl::StatusOr<UcxBlockHandler::WriteGrant> BlockStore::BeginWrite(std::uint64_t lease_id,
                                                                   std::size_t length) {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || !it->second.write || it->second.released ||
      it->second.expires_us <= env_->NowMicros()) {
    return absl::NotFoundError(fmt::format("lease {} is not a live write lease", lease_id));
  }
  LeaseRecord& lease = it->second;
  if (length != lease.length) {
    return absl::InvalidArgumentError(fmt::format("lease {}: {} bytes sent, the block is {} bytes",
                                                  lease_id, length, lease.length));
  }
  if (lease.transfers > 0) {
    return absl::FailedPreconditionError(fmt::format("lease {}: already being written", lease_id));
  }
  auto mem = TierOf(TierKind::kHost)->Memory(lease.slot);
  if (!mem.ok()) return mem.status();
  ++lease.transfers;
  lease.written = 0;
  return WriteGrant{mem->address, lease.length};
}

void BlockStore::EndWrite(std::uint64_t lease_id, const absl::Status& received) {
  MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  LeaseRecord& lease = it->second;
  --lease.transfers;
  lease.written = received.ok() ? lease.length : 0;
  if (received.ok()) stats_.bytes_written += lease.length;
  if (lease.released && lease.transfers == 0) EndLease(lease_id, lease);
}

std::vector<BlockKey> BlockStore::TenantBlockKeys(std::string_view salt,
                                                  std::span<const BlockKey> keys) {
  std::vector<BlockKey> out;
  out.reserve(keys.size());
  for (const BlockKey& k : keys) out.push_back(TenantBlockKey(salt, k));
  return out;
}

void BlockStore::ForgetWriteLease(const LeaseRecord& lease) {
  auto it = reserved_bytes_.find(lease.tenant);
  if (it == reserved_bytes_.end()) return;
  it->second -= std::min(it->second, lease.slot.slot_bytes);
  if (it->second == 0) reserved_bytes_.erase(it);
}

std::int64_t BlockStore::PolicyNow() {
  clock_us_ = std::max(clock_us_, env_->NowMicros());
  return clock_us_;
}

void BlockStore::ClaimOwner(const BlockKey& internal, std::string_view tenant) {
  auto it = owner_.find(internal);
  if (it == owner_.end() || !it->second.empty() || tenant.empty()) return;
  const auto e = index_.Get(internal);
  if (!e) return;
  // Both entries first: a reference into the map is good only until the next insertion.
  tenant_bytes_.try_emplace(std::string());
  tenant_bytes_.try_emplace(std::string(tenant));
  auto& from = tenant_bytes_.find(std::string())->second;
  auto& to = tenant_bytes_.find(std::string(tenant))->second;
  for (TierKind kind : {TierKind::kHost, TierKind::kNvme}) {
    if (!e->In(kind)) continue;
    const std::uint64_t bytes = e->Copy(kind).slot().slot_bytes;
    const auto k = static_cast<unsigned>(kind);
    from[k] -= std::min(from[k], bytes);
    to[k] += bytes;
  }
  it->second = std::string(tenant);
}

}  // namespace cachesvc
