// BlockStore::Placement: the daemon's tiers as the placement core (CacheEngine) sees them. Slots
// come from the real tiers; a copy between tiers is a write from the source's memory (host to
// NVMe) or a read into the destination's memory (NVMe to host); each copy's slot bytes count for
// the block's tenant. Runs under the store's lock (the engine is called only there).
#include "cachesvc/block_store.h"
#include "spdlog/spdlog.h"

namespace cachesvc {

using tiers::TierKind;

absl::StatusOr<TierCopy> BlockStore::Placement::Reserve(TierKind tier, std::uint64_t bytes) {
  store_->mu_.AssertHeld();
  tiers::Tier* t = store_->TierOf(tier);
  if (t == nullptr) return absl::FailedPreconditionError("no such tier");
  // A slot may become a write lease's: the tier must not reclaim it before the store ends the
  // lease (at lease_timeout, or once a transfer still running then finishes; the data planes
  // time transfers out within seconds).
  const auto ttl = 2 * store_->placement_.lease_timeout + std::chrono::minutes(1);
  auto slot = t->Allocate(bytes, ttl);
  if (!slot.ok()) return slot.status();
  return TierCopy::Of(*slot, 0, kernels::CodecId::kRaw);
}

absl::Status BlockStore::Placement::Copy(const BlockKey& key, const BlockEntry& entry,
                                         TierKind from, TierKind to, TierCopy& dst) {
  store_->mu_.AssertHeld();
  tiers::Tier* src = store_->TierOf(from);
  tiers::Tier* out = store_->TierOf(to);
  if (src == nullptr || out == nullptr) return absl::FailedPreconditionError("no such tier");
  const TierCopy have = entry.Copy(from);
  if (from != TierKind::kNvme) {  // from memory: one write
    auto mem = src->Memory(have.slot());
    if (!mem.ok()) return mem.status();
    tiers::BlockMeta meta;
    meta.key = key.bytes;
    meta.layout_fingerprint = entry.layout_fingerprint;
    meta.codec = have.codec;
    meta.raw_bytes = entry.raw_bytes;
    if (absl::Status st = out->Write(dst.slot(), meta,
                                     std::span<const std::byte>(mem->address, have.stored_bytes));
        !st.ok()) {
      return st;
    }
    dst.stored_bytes = have.stored_bytes;
    dst.codec = have.codec;
    return absl::OkStatus();
  }
  auto mem = out->Memory(dst.slot());  // into memory: one read, then publish the slot
  if (!mem.ok()) return mem.status();
  auto info = src->Read(have.slot(), std::span<std::byte>(mem->address, mem->bytes));
  if (!info.ok()) return info.status();
  if (absl::Status st = out->Commit(dst.slot(), info->meta, info->stored_bytes); !st.ok()) {
    return st;
  }
  dst.stored_bytes = static_cast<std::uint32_t>(info->stored_bytes);
  dst.codec = info->meta.codec;
  if (info->checksum != 0) store_->checksum_.try_emplace(key, info->checksum);
  return absl::OkStatus();
}

void BlockStore::Placement::Free(TierKind tier, const TierCopy& copy) {
  store_->mu_.AssertHeld();
  if (tiers::Tier* t = store_->TierOf(tier); t != nullptr) {
    tiers::FreeOrWarn(*t, copy.slot(), "placement");
  }
}

void BlockStore::Placement::CopyAdded(const BlockKey& key, TierKind tier, const TierCopy& copy) {
  store_->mu_.AssertHeld();
  store_->AddTenantBytes(key, tier, static_cast<std::int64_t>(copy.slot().slot_bytes));
}

void BlockStore::Placement::CopyRemoved(const BlockKey& key, TierKind tier, const TierCopy& copy) {
  store_->mu_.AssertHeld();
  store_->AddTenantBytes(key, tier, -static_cast<std::int64_t>(copy.slot().slot_bytes));
}

void BlockStore::Placement::BlockGone(const BlockKey& key) {
  store_->mu_.AssertHeld();
  store_->owner_.erase(key);
  store_->checksum_.erase(key);
}

}  // namespace cachesvc
