// tiers/hbm_tier.h: the HBM tier: one cudaMalloc arena on the service's GPU, cut into slots by the
// same allocator as the other tiers, exported with a CUDA IPC handle so a co-located engine can
// map it (cudaIpcOpenMemHandle) and copy device-to-device at `base + slot.offset`.
//
// Present only where a GPU is: Create answers UNAVAILABLE in a build without CUDA or on a host
// without a usable device, and the service runs without this tier (tests skip). Write and Read
// are synchronous cudaMemcpy calls between the caller's host memory and the slot; transports that
// want device-to-device copies use Memory() (device_memory = true) under a lease, then Commit.
// Every CUDA error becomes a Status (tiers/cuda_support.h); nothing aborts.
//
// Thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "tiers/cuda_support.h"
#include "tiers/slot_table.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

struct HbmTierOptions {
  std::string name = "hbm";
  int device = 0;
  std::uint64_t capacity_bytes = 0;
  std::uint64_t min_slot_bytes = 16 << 10;
  std::uint64_t max_slot_bytes = 64 << 20;
  SlotTableOptions slots;

  // INVALID_ARGUMENT naming the field.
  [[nodiscard]] absl::Status Validate() const;
};

class HbmTier final : public Tier {
 public:
  // UNAVAILABLE without CUDA or without device `options.device`; RESOURCE_EXHAUSTED when the GPU
  // cannot hold capacity_bytes.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HbmTier>> Create(
      const HbmTierOptions& options, Env* env = Env::Default());
  ~HbmTier() override;
  HbmTier(const HbmTier&) = delete;
  HbmTier& operator=(const HbmTier&) = delete;

  // The IPC handle of the arena; a slot lives at the mapped base + slot.offset.
  [[nodiscard]] const CudaIpcHandleBytes& ipc_handle() const { return ipc_handle_; }
  [[nodiscard]] int device() const { return options_.device; }

  [[nodiscard]] const std::string& name() const override { return options_.name; }
  [[nodiscard]] TierKind kind() const override { return TierKind::kHbm; }
  [[nodiscard]] absl::StatusOr<SlotId> Allocate(
      std::uint64_t bytes, std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) override;
  [[nodiscard]] absl::Status Write(SlotId slot, const BlockMeta& meta,
                                   std::span<const std::byte> payload) override;
  [[nodiscard]] absl::StatusOr<BlockInfo> Read(SlotId slot, std::span<std::byte> out) override;
  [[nodiscard]] absl::StatusOr<BlockInfo> Info(SlotId slot) const override;
  [[nodiscard]] absl::Status Free(SlotId slot) override;
  [[nodiscard]] absl::StatusOr<LeaseId> AcquireLease(SlotId slot,
                                                     std::chrono::milliseconds ttl) override;
  [[nodiscard]] absl::Status ReleaseLease(LeaseId lease) override;
  std::size_t ExpireLeases() override;
  [[nodiscard]] absl::StatusOr<MemoryRegion> Memory(SlotId slot) override;
  [[nodiscard]] absl::Status Commit(SlotId slot, const BlockMeta& meta,
                                    std::uint64_t stored_bytes) override;
  [[nodiscard]] TierStats Stats() const override;

 private:
  HbmTier(const HbmTierOptions& options, Env* env, std::byte* arena);

  const HbmTierOptions options_;
  std::byte* const arena_;  // device address
  CudaIpcHandleBytes ipc_handle_{};
  SlotTable table_;
};

}  // namespace cachesvc::tiers
