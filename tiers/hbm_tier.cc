#include "tiers/hbm_tier.h"

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {

absl::Status HbmTierOptions::Validate() const {
  if (name.empty()) return absl::InvalidArgumentError("hbm tier name must not be empty");
  if (device < 0) {
    return absl::InvalidArgumentError(
        fmt::format("hbm tier '{}': device {} must be >= 0", name, device));
  }
  SlotAllocatorOptions alloc{capacity_bytes, min_slot_bytes, max_slot_bytes};
  if (absl::Status s = alloc.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("hbm tier '{}': {}", name, std::string(s.message())));
  }
  if (absl::Status s = slots.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("hbm tier '{}': {}", name, std::string(s.message())));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HbmTier>> HbmTier::Create(const HbmTierOptions& options, Env* env) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const int devices = CudaDeviceCount();
  if (options.device >= devices) {
    return absl::UnavailableError(
        fmt::format("hbm tier '{}': no CUDA device {} ({} usable devices); the tier is absent",
                    options.name, options.device, devices));
  }
  const std::uint64_t usable =
      options.capacity_bytes / options.max_slot_bytes * options.max_slot_bytes;
  absl::StatusOr<void*> arena = CudaMallocOnDevice(options.device, usable);
  if (!arena.ok()) {
    return absl::Status(
        arena.status().code(),
        fmt::format("hbm tier '{}': cannot allocate {} bytes on device {}: {}", options.name,
                    usable, options.device, std::string(arena.status().message())));
  }
  std::unique_ptr<HbmTier> tier(new HbmTier(options, env, static_cast<std::byte*>(*arena)));
  absl::StatusOr<CudaIpcHandleBytes> handle = CudaExportIpcHandle(*arena);
  if (!handle.ok()) return handle.status();
  tier->ipc_handle_ = *handle;
  spdlog::info("hbm tier '{}': {} bytes on device {}", options.name, usable, options.device);
  return tier;
}

HbmTier::HbmTier(const HbmTierOptions& options, Env* env, std::byte* arena)
    : options_(options),
      arena_(arena),
      table_(options.name, TierKind::kHbm,
             SlotAllocatorOptions{options.capacity_bytes, options.min_slot_bytes,
                                  options.max_slot_bytes},
             options.slots, env) {}

HbmTier::~HbmTier() { CudaFreeOnDevice(options_.device, arena_); }

absl::StatusOr<SlotId> HbmTier::Allocate(std::uint64_t bytes, std::chrono::milliseconds ttl) {
  return table_.Allocate(bytes, ttl);
}

absl::Status HbmTier::Write(SlotId slot, const BlockMeta& meta,
                            std::span<const std::byte> payload) {
  absl::StatusOr<std::uint64_t> generation = table_.BeginWrite(slot, payload.size());
  if (!generation.ok()) return generation.status();
  if (absl::Status s = CudaCopy(arena_ + slot.offset, payload.data(), payload.size()); !s.ok()) {
    table_.AbortWrite(slot);
    return s;
  }
  table_.FinishWrite(slot, BlockInfo{meta, payload.size(), 0, *generation});
  return absl::OkStatus();
}

absl::StatusOr<BlockInfo> HbmTier::Read(SlotId slot, std::span<std::byte> out) {
  absl::StatusOr<BlockInfo> info = table_.BeginRead(slot, out.size());
  if (!info.ok()) return info.status();
  const absl::Status s = CudaCopy(out.data(), arena_ + slot.offset, info->stored_bytes);
  table_.EndRead(slot, s.ok());
  if (!s.ok()) return s;
  return info;
}

absl::StatusOr<BlockInfo> HbmTier::Info(SlotId slot) const { return table_.Info(slot); }

absl::Status HbmTier::Free(SlotId slot) { return table_.Free(slot); }

absl::StatusOr<LeaseId> HbmTier::AcquireLease(SlotId slot, std::chrono::milliseconds ttl) {
  return table_.AcquireLease(slot, ttl);
}

absl::Status HbmTier::ReleaseLease(LeaseId lease) { return table_.ReleaseLease(lease); }

std::size_t HbmTier::ExpireLeases() { return table_.Expire(); }

absl::StatusOr<MemoryRegion> HbmTier::Memory(SlotId slot) {
  if (absl::Status s = table_.CheckAllocated(slot); !s.ok()) return s;
  return MemoryRegion{arena_ + slot.offset, slot.slot_bytes, true, false, -1};
}

absl::Status HbmTier::Commit(SlotId slot, const BlockMeta& meta, std::uint64_t stored_bytes) {
  absl::StatusOr<std::uint64_t> generation = table_.BeginWrite(slot, stored_bytes);
  if (!generation.ok()) return generation.status();
  table_.FinishWrite(slot, BlockInfo{meta, stored_bytes, 0, *generation});
  return absl::OkStatus();
}

TierStats HbmTier::Stats() const { return table_.Stats(); }

}  // namespace cachesvc::tiers
