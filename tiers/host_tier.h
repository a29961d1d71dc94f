// tiers/host_tier.h: the host/CXL memory tier: one mmap arena (anonymous, or a memfd to share with
// engines on this host) cut into slots.
//
// The arena is reserved once at Create and never grows, so `capacity_bytes` is a hard limit. It
// can be:
// - bound to one NUMA node (libnuma/mbind, MPOL_BIND, before any page is touched). A CXL memory
//   expander shows up as a CPU-less NUMA node, so the same option serves CXL (docs/tiers.md);
// - backed by huge pages: transparent ones (madvise(MADV_HUGEPAGE), the default, a hint), or
//   MAP_HUGETLB pages reserved by the operator (vm.nr_hugepages), which fails loudly when none are
//   reserved instead of silently using small pages;
// - page-locked with cudaHostRegister when a GPU is present, so copies to and from the GPU are
//   DMA (MemoryRegion::cuda_registered tells whether it happened).
// `prefault` touches every page at start (after binding), so the memory is really there and
// first writes do not fault.
//
// Payload checksums: memory tiers trust the memory (ECC); BlockInfo::checksum is 0 here and the
// NVMe tier computes its own when a block is demoted.
//
// Thread-safe: slot bookkeeping under SlotTable's mutex, copies outside it (a slot being copied
// is pinned, so it cannot be reused meanwhile).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "tiers/slot_table.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

enum class HugePages : std::uint8_t {
  kNone,         // small pages
  kTransparent,  // madvise(MADV_HUGEPAGE); works when THP is "always" or "madvise"
  kHugetlb,      // MAP_HUGETLB from the reserved pool; Create fails if the pool is too small
};

struct HostTierOptions {
  std::string name = "host";
  std::uint64_t capacity_bytes = 0;         // rounded down to whole max_slot_bytes chunks
  std::uint64_t min_slot_bytes = 16 << 10;  // smallest size class
  std::uint64_t max_slot_bytes = 64 << 20;  // largest size class (and chunk size)
  int numa_node = -1;                       // -1: no binding
  HugePages huge_pages = HugePages::kTransparent;
  bool prefault = true;
  bool cuda_register = true;  // cudaHostRegister when a GPU is present
  // Back the arena with a memfd (MAP_SHARED) instead of anonymous memory, so that it can be shared
  // with engines on this host (cachesvc/local_dataplane.h). shared_fd() is the file.
  bool shared = false;
  SlotTableOptions slots;

  // INVALID_ARGUMENT naming the field (empty name, capacity, slot sizes, ttls).
  [[nodiscard]] absl::Status Validate() const;
};

class HostTier final : public Tier {
 public:
  // INVALID_ARGUMENT for bad options or a NUMA node this host does not have (or one without
  // memory); RESOURCE_EXHAUSTED when the arena cannot be mapped (naming the size, and the huge
  // page pool for kHugetlb). `env` must outlive the tier.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<HostTier>> Create(
      const HostTierOptions& options, Env* env = Env::Default());
  ~HostTier() override;
  HostTier(const HostTier&) = delete;
  HostTier& operator=(const HostTier&) = delete;

  [[nodiscard]] const std::string& name() const override { return options_.name; }
  [[nodiscard]] TierKind kind() const override { return TierKind::kHost; }
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

  // What Create achieved (for logs, stats and tests).
  [[nodiscard]] bool transparent_huge_pages() const { return thp_advised_; }
  [[nodiscard]] bool cuda_registered() const { return cuda_registered_; }
  [[nodiscard]] int numa_node() const { return options_.numa_node; }
  // The arena: where it is and how long (every slot lies inside it), and with `shared`, the memfd
  // that backs it (-1 otherwise; owned by the tier).
  [[nodiscard]] const std::byte* arena() const { return arena_; }
  [[nodiscard]] std::uint64_t arena_bytes() const { return mapped_bytes_; }
  [[nodiscard]] int shared_fd() const { return shared_fd_; }

 private:
  HostTier(const HostTierOptions& options, Env* env, std::byte* arena, std::uint64_t mapped_bytes,
           int shared_fd);

  // Constant after construction.
  const HostTierOptions options_;
  std::byte* const arena_;
  const std::uint64_t mapped_bytes_;
  const int shared_fd_;
  bool thp_advised_ = false;
  bool cuda_registered_ = false;

  SlotTable table_;
};

}  // namespace cachesvc::tiers
