#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t
#include "cachesvc/block_store.h"

#include <sys/random.h>

#include <bit>
#include <cstring>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "tiers/nvme_tier.h"
#include "xxhash.h"

namespace cachesvc {
namespace {

using tiers::TierKind;

constexpr int kMaxEvictionTries = 256;

TierCopy CopyOf(const tiers::SlotId& slot, std::uint64_t stored, kernels::CodecId codec) {
  return TierCopy{slot.offset, static_cast<std::uint32_t>(stored),
                  static_cast<std::uint8_t>(std::countr_zero(slot.slot_bytes)), codec};
}

tiers::SlotId SlotOf(const BlockEntry& e, TierKind kind) {
  const TierCopy c = e.Copy(kind);
  return tiers::SlotId{c.slot_offset, std::uint64_t{1} << c.slot_log2};
}

tiers::BlockMeta MetaOf(const BlockKey& internal, const BlockEntry& e, TierKind kind) {
  tiers::BlockMeta meta;
  meta.key = internal.bytes;
  meta.layout_fingerprint = e.layout_fingerprint;
  meta.codec = e.Copy(kind).codec;
  meta.raw_bytes = e.raw_bytes;
  return meta;
}

}  // namespace

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

BlockStore::BlockStore(std::vector<tiers::Tier*> tiers, const BlockStoreOptions& options)
    : tiers_(std::move(tiers)), options_(options), policy_(MakeLruPolicy(/*cascade=*/true)) {}

BlockStore::~BlockStore() {
  tiers::MutexLock lock(&mu_);
  for (auto& [id, lease] : leases_) {
    lease.transfers = 0;
    EndLease(id, lease);
  }
  leases_.clear();
}

absl::StatusOr<std::unique_ptr<BlockStore>> BlockStore::Open(std::vector<tiers::Tier*> tiers,
                                                             const BlockStoreOptions& options) {
  if (tiers.empty() || tiers[0]->kind() != TierKind::kHost) {
    return absl::InvalidArgumentError("block store: the first tier must be the host tier");
  }
  for (std::size_t i = 1; i < tiers.size(); ++i) {
    if (tiers[i]->kind() != TierKind::kNvme) {
      return absl::InvalidArgumentError(
          fmt::format("block store: tier {} is not an NVMe tier", tiers[i]->name()));
    }
  }
  std::unique_ptr<BlockStore> store(new BlockStore(std::move(tiers), options));
  if (absl::Status st = store->Recover(); !st.ok()) return st;
  return store;
}

absl::Status BlockStore::Recover() {
  auto* nvme = dynamic_cast<tiers::NvmeTier*>(TierOf(TierKind::kNvme));
  if (nvme == nullptr) return absl::OkStatus();
  tiers::MutexLock lock(&mu_);
  for (const tiers::IndexEntry& e : nvme->Blocks()) {
    BlockKey internal;
    internal.bytes = e.info.meta.key;
    BlockEntry fresh;
    fresh.layout_fingerprint = e.info.meta.layout_fingerprint;
    fresh.raw_bytes = static_cast<std::uint32_t>(e.info.meta.raw_bytes);
    index_.AddCopy(internal, TierKind::kNvme,
                   CopyOf(e.slot, e.info.stored_bytes, e.info.meta.codec), fresh);
    owner_[internal] = "";  // the tenant is not recorded on NVMe; the key is tenant-scoped
    if (e.info.checksum != 0) checksum_[internal] = e.info.checksum;
    tenant_bytes_[""][static_cast<unsigned>(TierKind::kNvme)] += e.slot.slot_bytes;
    policy_->Added(internal, TierKind::kNvme, ++clock_us_);
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

std::int64_t BlockStore::UnixMs(std::chrono::steady_clock::time_point t) {
  const auto wall = std::chrono::system_clock::now() + (t - std::chrono::steady_clock::now());
  return std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count();
}

void BlockStore::AddTenantBytes(const BlockKey& internal, TierKind tier, std::int64_t delta) {
  auto it = owner_.find(internal);
  const std::string tenant = it == owner_.end() ? std::string() : it->second;
  auto& bytes = tenant_bytes_[tenant][static_cast<unsigned>(tier)];
  bytes = static_cast<std::uint64_t>(static_cast<std::int64_t>(bytes) + delta);
}

std::uint64_t BlockStore::TenantBytes(std::string_view tenant, TierKind tier) const {
  tiers::MutexLock lock(&mu_);
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
  tiers::MutexLock lock(&mu_);
  if (out.size() < keys.size()) ++stats_.misses;
  return out;
}

absl::StatusOr<std::vector<ReadLease>> BlockStore::Lease(std::string_view tenant,
                                                         std::string_view salt,
                                                         std::span<const BlockKey> keys) {
  tiers::MutexLock lock(&mu_);
  ExpireLocked();
  tiers::Tier* host = TierOf(TierKind::kHost);
  std::vector<ReadLease> out;
  for (const BlockKey& key : keys) {
    const BlockKey internal = TenantBlockKey(salt, key);
    auto e = index_.Get(internal);
    if (!e || e->tiers == 0) break;
    if (!e->In(TierKind::kHost)) {
      if (absl::Status st = Stage(internal, *e); !st.ok()) {
        spdlog::warn("block {}: staging from NVMe failed: {}", internal.Hex(),
                     std::string(st.message()));
        break;  // a failed load is a miss
      }
      e = index_.Get(internal);
      if (!e || !e->In(TierKind::kHost)) break;
    }
    const tiers::SlotId slot = SlotOf(*e, TierKind::kHost);
    auto info = host->Info(slot);
    if (!info.ok()) break;
    auto tier_lease = host->AcquireLease(slot, options_.lease_timeout * 2);
    if (!tier_lease.ok()) break;
    LeaseRecord rec;
    rec.tenant = std::string(tenant);
    rec.key = key;
    rec.internal = internal;
    rec.slot = slot;
    rec.tier_lease = *tier_lease;
    rec.length = info->stored_bytes;
    rec.checksum = info->checksum;
    if (auto sum = checksum_.find(internal); rec.checksum == 0 && sum != checksum_.end()) {
      rec.checksum = sum->second;
    }
    if (rec.checksum == 0) {  // not known (the host tier keeps none): hash the bytes once
      auto mem = host->Memory(slot);
      if (!mem.ok()) break;
      rec.checksum = XXH3_64bits(mem->address, rec.length);
      checksum_[internal] = rec.checksum;
    }
    rec.codec = info->meta.codec;
    rec.layout_fingerprint = info->meta.layout_fingerprint;
    rec.expires = std::chrono::steady_clock::now() + options_.lease_timeout;
    const std::uint64_t id = NewLeaseId();
    index_.Update(internal, [](BlockEntry& be) { ++be.leases; });
    policy_->Touched(internal, TierKind::kHost, ++clock_us_);
    out.push_back(ReadLease{id, key, TierKind::kHost, rec.length, rec.codec, rec.checksum,
                            UnixMs(rec.expires)});
    leases_.emplace(id, std::move(rec));
    ++stats_.hits;
  }
  if (out.size() < keys.size()) ++stats_.misses;
  return out;
}

absl::Status BlockStore::Release(std::string_view tenant, std::span<const std::uint64_t> ids) {
  tiers::MutexLock lock(&mu_);
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
    if (absl::Status st = host->Free(lease.slot); !st.ok()) {
      spdlog::warn("freeing the slot of write lease {}: {}", id, std::string(st.message()));
    }
  } else {
    (void)host->ReleaseLease(lease.tier_lease);  // NOT_FOUND if the tier expired it first
    index_.Update(lease.internal, [](BlockEntry& e) {
      if (e.leases > 0) --e.leases;
    });
  }
  leases_.erase(id);
}

std::size_t BlockStore::ExpireLeases() {
  tiers::MutexLock lock(&mu_);
  return ExpireLocked();
}

std::size_t BlockStore::ExpireLocked() {
  const auto now = std::chrono::steady_clock::now();
  std::vector<std::uint64_t> expired;
  for (const auto& [id, lease] : leases_) {
    if (lease.expires <= now && lease.transfers == 0) expired.push_back(id);
  }
  for (std::uint64_t id : expired) EndLease(id, leases_.find(id)->second);
  stats_.leases_expired += expired.size();
  for (tiers::Tier* t : tiers_) t->ExpireLeases();
  return expired.size();
}

absl::StatusOr<tiers::SlotId> BlockStore::AllocateHost(std::uint64_t bytes) {
  tiers::Tier* host = TierOf(TierKind::kHost);
  for (int i = 0; i < kMaxEvictionTries; ++i) {
    auto slot = host->Allocate(bytes);
    if (slot.ok() || slot.status().code() != absl::StatusCode::kResourceExhausted) return slot;
    if (!EvictOne(TierKind::kHost)) return slot.status();
  }
  return absl::ResourceExhaustedError(
      fmt::format("host tier: no room for {} bytes after {} evictions", bytes, kMaxEvictionTries));
}

bool BlockStore::EvictOne(TierKind kind) {
  tiers::Tier* tier = TierOf(kind);
  for (int attempt = 0; attempt < kMaxEvictionTries; ++attempt) {
    const std::optional<BlockKey> victim = policy_->ChooseVictim(kind, ++clock_us_);
    if (!victim) return false;
    const auto e = index_.Get(*victim);
    if (!e || !e->In(kind)) {  // the policy's view is stale: forget it
      policy_->Removed(*victim, kind);
      continue;
    }
    if (e->leases > 0) {  // being read: try the next one
      policy_->Touched(*victim, kind, ++clock_us_);
      continue;
    }
    const tiers::SlotId slot = SlotOf(*e, kind);
    tiers::Tier* nvme = TierOf(TierKind::kNvme);
    if (kind == TierKind::kHost && nvme != nullptr && !e->In(TierKind::kNvme)) {
      // Demote: write the host copy to NVMe (making room there first).
      const std::uint64_t stored = e->Copy(kind).stored_bytes;
      auto mem = tier->Memory(slot);
      absl::StatusOr<tiers::SlotId> nslot = absl::UnknownError("");
      for (int i = 0; i < kMaxEvictionTries; ++i) {
        nslot = nvme->Allocate(stored);
        if (nslot.ok() || nslot.status().code() != absl::StatusCode::kResourceExhausted) break;
        if (!EvictOne(TierKind::kNvme)) break;
      }
      if (mem.ok() && nslot.ok()) {
        const tiers::BlockMeta meta = MetaOf(*victim, *e, kind);
        absl::Status st =
            nvme->Write(*nslot, meta, std::span<const std::byte>(mem->address, stored));
        if (st.ok()) {
          index_.AddCopy(*victim, TierKind::kNvme, CopyOf(*nslot, stored, meta.codec), *e);
          AddTenantBytes(*victim, TierKind::kNvme, static_cast<std::int64_t>(nslot->slot_bytes));
          policy_->Added(*victim, TierKind::kNvme, ++clock_us_);
          ++stats_.demoted;
        } else {
          spdlog::warn("demoting {} to NVMe: {}", victim->Hex(), std::string(st.message()));
          (void)nvme->Free(*nslot);
        }
      } else if (nslot.ok()) {
        (void)nvme->Free(*nslot);
      }
    }
    // The copy in this tier goes.
    if (absl::Status st = tier->Free(slot); !st.ok()) {
      spdlog::warn("freeing {} in {}: {}", victim->Hex(), tier->name(), std::string(st.message()));
    }
    const TierMask left = index_.TakeCopy(*victim, kind);
    AddTenantBytes(*victim, kind, -static_cast<std::int64_t>(slot.slot_bytes));
    policy_->Removed(*victim, kind);
    if (left == 0) {
      ++stats_.dropped;
      index_.EraseIfUnused(*victim);
      owner_.erase(*victim);
      checksum_.erase(*victim);
    }
    return true;
  }
  return false;
}

absl::Status BlockStore::Stage(const BlockKey& internal, const BlockEntry& entry) {
  tiers::Tier* host = TierOf(TierKind::kHost);
  tiers::Tier* nvme = TierOf(TierKind::kNvme);
  if (nvme == nullptr || !entry.In(TierKind::kNvme)) {
    return absl::NotFoundError("no NVMe copy to stage");
  }
  // Hold the entry while host room is made (eviction may pick NVMe victims).
  index_.Update(internal, [](BlockEntry& e) { ++e.leases; });
  const std::uint64_t stored = entry.Copy(TierKind::kNvme).stored_bytes;
  auto slot = AllocateHost(stored);
  index_.Update(internal, [](BlockEntry& e) { --e.leases; });
  if (!slot.ok()) return slot.status();
  auto mem = host->Memory(*slot);
  if (!mem.ok()) {
    (void)host->Free(*slot);
    return mem.status();
  }
  auto info =
      nvme->Read(SlotOf(entry, TierKind::kNvme), std::span<std::byte>(mem->address, mem->bytes));
  if (!info.ok()) {
    (void)host->Free(*slot);
    if (info.status().code() == absl::StatusCode::kDataLoss) {  // the tier dropped it
      ++stats_.checksum_failures;
      const TierMask left = index_.TakeCopy(internal, TierKind::kNvme);
      policy_->Removed(internal, TierKind::kNvme);
      if (left == 0) {
        index_.EraseIfUnused(internal);
        owner_.erase(internal);
        checksum_.erase(internal);
      }
    }
    return info.status();
  }
  if (absl::Status st = host->Commit(*slot, info->meta, info->stored_bytes); !st.ok()) {
    (void)host->Free(*slot);
    return st;
  }
  index_.AddCopy(internal, TierKind::kHost, CopyOf(*slot, info->stored_bytes, info->meta.codec),
                 entry);
  AddTenantBytes(internal, TierKind::kHost, static_cast<std::int64_t>(slot->slot_bytes));
  policy_->Added(internal, TierKind::kHost, ++clock_us_);
  ++stats_.staged;
  return absl::OkStatus();
}

absl::StatusOr<AllocateResult> BlockStore::Allocate(std::string_view tenant, std::string_view salt,
                                                    std::span<const BlockKey> keys,
                                                    kernels::CodecId codec, std::uint64_t length,
                                                    std::uint64_t raw_bytes,
                                                    std::uint64_t layout_fingerprint,
                                                    std::uint64_t host_quota_bytes) {
  if (length == 0) return absl::InvalidArgumentError("block length must be > 0");
  tiers::MutexLock lock(&mu_);
  ExpireLocked();
  AllocateResult result;
  std::vector<std::uint64_t> created;
  const std::string owner(tenant);
  const unsigned host_index = static_cast<unsigned>(TierKind::kHost);
  std::uint64_t reserved = 0;
  for (const auto& [id, lease] : leases_) {
    if (lease.write && lease.tenant == owner) reserved += lease.slot.slot_bytes;
  }
  for (const BlockKey& key : keys) {
    const BlockKey internal = TenantBlockKey(salt, key);
    if (index_.Tiers(internal) != 0) {
      result.already_stored.push_back(key);
      continue;
    }
    if (host_quota_bytes > 0) {
      const std::uint64_t used = tenant_bytes_[owner][host_index] + reserved;
      if (used + std::bit_ceil(length) > host_quota_bytes) {
        for (std::uint64_t id : created) EndLease(id, leases_.find(id)->second);
        return absl::ResourceExhaustedError(
            fmt::format("tenant '{}' would exceed its host quota of {} bytes ({} used or reserved)",
                        tenant, host_quota_bytes, used));
      }
    }
    auto slot = AllocateHost(length);
    if (!slot.ok()) {
      for (std::uint64_t id : created) EndLease(id, leases_.find(id)->second);
      return slot.status();
    }
    reserved += slot->slot_bytes;
    LeaseRecord rec;
    rec.tenant = owner;
    rec.write = true;
    rec.key = key;
    rec.internal = internal;
    rec.slot = *slot;
    rec.length = length;
    rec.raw_bytes = raw_bytes;
    rec.layout_fingerprint = layout_fingerprint;
    rec.codec = codec;
    rec.expires = std::chrono::steady_clock::now() + options_.lease_timeout;
    const std::uint64_t id = NewLeaseId();
    result.leases.push_back(WriteLease{id, key, length, codec, UnixMs(rec.expires)});
    leases_.emplace(id, std::move(rec));
    created.push_back(id);
  }
  return result;
}

absl::StatusOr<std::vector<BlockKey>> BlockStore::Commit(std::string_view tenant,
                                                         std::span<const CommitRequest> commits) {
  tiers::MutexLock lock(&mu_);
  tiers::Tier* host = TierOf(TierKind::kHost);
  std::vector<BlockKey> committed;
  for (const CommitRequest& c : commits) {
    auto it = leases_.find(c.lease_id);
    if (it == leases_.end() || it->second.tenant != tenant || !it->second.write ||
        it->second.released) {
      return absl::NotFoundError(fmt::format("lease {} is not a live write lease", c.lease_id));
    }
    LeaseRecord& lease = it->second;
    if (lease.transfers > 0) {
      return absl::FailedPreconditionError(
          fmt::format("lease {}: a write is still in progress", c.lease_id));
    }
    if (c.length != lease.length) {
      return absl::InvalidArgumentError(
          fmt::format("lease {}: length {} is not the allocated block length {}", c.lease_id,
                      c.length, lease.length));
    }
    if (lease.written != lease.length) {
      return absl::FailedPreconditionError(fmt::format(
          "lease {}: nothing was written for it (or a write failed); write, then commit",
          c.lease_id));
    }
    auto mem = host->Memory(lease.slot);
    if (!mem.ok()) return mem.status();
    const std::uint64_t sum = XXH3_64bits(mem->address, lease.length);
    if (sum != c.checksum) {
      ++stats_.checksum_failures;
      const std::uint64_t id = c.lease_id;
      EndLease(id, lease);  // frees the slot: nothing stored is touched
      return absl::DataLossError(fmt::format(
          "lease {}: checksum {:016x} does not match the bytes written ({:016x}); block dropped",
          id, c.checksum, sum));
    }
    if (index_.Tiers(lease.internal) != 0) {  // someone else committed it meanwhile
      committed.push_back(lease.key);
      EndLease(c.lease_id, lease);
      continue;
    }
    tiers::BlockMeta meta;
    meta.key = lease.internal.bytes;
    meta.layout_fingerprint = lease.layout_fingerprint;
    meta.codec = lease.codec;
    meta.raw_bytes = lease.raw_bytes;
    if (absl::Status st = host->Commit(lease.slot, meta, lease.length); !st.ok()) return st;
    BlockEntry fresh;
    fresh.layout_fingerprint = lease.layout_fingerprint;
    fresh.raw_bytes = static_cast<std::uint32_t>(lease.raw_bytes);
    index_.AddCopy(lease.internal, TierKind::kHost, CopyOf(lease.slot, lease.length, lease.codec),
                   fresh);
    owner_[lease.internal] = lease.tenant;
    checksum_[lease.internal] = sum;
    AddTenantBytes(lease.internal, TierKind::kHost,
                   static_cast<std::int64_t>(lease.slot.slot_bytes));
    policy_->Added(lease.internal, TierKind::kHost, ++clock_us_);
    ++stats_.commits;
    committed.push_back(lease.key);
    leases_.erase(it);  // the slot now belongs to the block
  }
  return committed;
}

std::size_t BlockStore::FlushToNvme() {
  tiers::MutexLock lock(&mu_);
  tiers::Tier* host = TierOf(TierKind::kHost);
  tiers::Tier* nvme = TierOf(TierKind::kNvme);
  if (nvme == nullptr) return 0;
  std::vector<std::pair<BlockKey, BlockEntry>> todo;
  index_.ForEach([&](const BlockKey& k, const BlockEntry& e) {
    if (e.In(TierKind::kHost) && !e.In(TierKind::kNvme)) todo.emplace_back(k, e);
  });
  std::size_t written = 0;
  for (const auto& [key, e] : todo) {
    const std::uint64_t stored = e.Copy(TierKind::kHost).stored_bytes;
    auto mem = host->Memory(SlotOf(e, TierKind::kHost));
    auto slot = nvme->Allocate(stored);
    if (!mem.ok() || !slot.ok()) continue;  // NVMe full: what does not fit stays volatile
    const tiers::BlockMeta meta = MetaOf(key, e, TierKind::kHost);
    if (nvme->Write(*slot, meta, std::span<const std::byte>(mem->address, stored)).ok()) {
      index_.AddCopy(key, TierKind::kNvme, CopyOf(*slot, stored, meta.codec), e);
      AddTenantBytes(key, TierKind::kNvme, static_cast<std::int64_t>(slot->slot_bytes));
      policy_->Added(key, TierKind::kNvme, ++clock_us_);
      ++written;
    } else {
      (void)nvme->Free(*slot);
    }
  }
  return written;
}

BlockStoreStats BlockStore::Stats() const {
  tiers::MutexLock lock(&mu_);
  BlockStoreStats s = stats_;
  for (const auto& [id, lease] : leases_) ++(lease.write ? s.leases_write : s.leases_read);
  return s;
}

absl::StatusOr<UcxBlockHandler::ReadGrant> BlockStore::BeginRead(std::uint64_t lease_id) {
  tiers::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || it->second.write || it->second.released ||
      it->second.expires <= std::chrono::steady_clock::now()) {
    return absl::NotFoundError(fmt::format("lease {} is not a live read lease", lease_id));
  }
  auto mem = TierOf(TierKind::kHost)->Memory(it->second.slot);
  if (!mem.ok()) return mem.status();
  ++it->second.transfers;
  return ReadGrant{mem->address, it->second.length};
}

void BlockStore::EndRead(std::uint64_t lease_id, const absl::Status& sent) {
  tiers::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  --it->second.transfers;
  if (sent.ok()) stats_.bytes_read += it->second.length;
  if (it->second.released && it->second.transfers == 0) EndLease(lease_id, it->second);
}

absl::StatusOr<UcxBlockHandler::WriteGrant> BlockStore::BeginWrite(std::uint64_t lease_id,
                                                                   std::size_t length) {
  tiers::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end() || !it->second.write || it->second.released ||
      it->second.expires <= std::chrono::steady_clock::now()) {
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
  tiers::MutexLock lock(&mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return;
  LeaseRecord& lease = it->second;
  --lease.transfers;
  lease.written = received.ok() ? lease.length : 0;
  if (received.ok()) stats_.bytes_written += lease.length;
  if (lease.released && lease.transfers == 0) EndLease(lease_id, lease);
}

}  // namespace cachesvc
