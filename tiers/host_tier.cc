#include "tiers/host_tier.h"

#include <numa.h>
#include <numaif.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "base/errno_message.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "tiers/cuda_support.h"

namespace cachesvc::tiers {
namespace {

constexpr std::uint64_t kHugePageBytes = 2 << 20;

std::uint64_t RoundUp(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

// Checks that `node` exists and has memory, so that a typo is an error and not a silent
// allocation elsewhere.
[[nodiscard]] absl::Status CheckNumaNode(int node) {
  if (numa_available() < 0) {
    return absl::FailedPreconditionError(
        fmt::format("numa_node {} requested but this kernel does not support NUMA policy", node));
  }
  const int max_node = numa_max_node();
  if (node > max_node) {
    return absl::InvalidArgumentError(
        fmt::format("numa_node {} does not exist: this host has nodes 0..{}", node, max_node));
  }
  long long free_bytes = 0;
  if (numa_node_size64(node, &free_bytes) <= 0) {
    return absl::InvalidArgumentError(fmt::format("numa_node {} has no memory", node));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status HostTierOptions::Validate() const {
  if (name.empty()) return absl::InvalidArgumentError("host tier name must not be empty");
  SlotAllocatorOptions alloc{capacity_bytes, min_slot_bytes, max_slot_bytes};
  if (absl::Status s = alloc.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("host tier '{}': {}", name, std::string(s.message())));
  }
  if (numa_node < -1) {
    return absl::InvalidArgumentError(fmt::format(
        "host tier '{}': numa_node {} must be -1 (unbound) or a node id", name, numa_node));
  }
  if (absl::Status s = slots.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("host tier '{}': {}", name, std::string(s.message())));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<HostTier>> HostTier::Create(const HostTierOptions& options,
                                                           Env* env) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  if (options.numa_node >= 0) {
    if (absl::Status s = CheckNumaNode(options.numa_node); !s.ok()) return s;
  }
  const std::uint64_t usable =
      options.capacity_bytes / options.max_slot_bytes * options.max_slot_bytes;
  std::byte* arena = nullptr;
  std::uint64_t mapped = usable;
  if (options.huge_pages == HugePages::kHugetlb) mapped = RoundUp(usable, kHugePageBytes);
  // With `shared`, a memfd backs the arena; it is closed on every error below.
  int fd = -1;
  auto fail = [&fd](absl::Status st) {
    if (fd >= 0) ::close(fd);
    return st;
  };
  if (options.shared) {
    const unsigned flags =
        MFD_CLOEXEC | (options.huge_pages == HugePages::kHugetlb ? MFD_HUGETLB : 0u);
    fd = ::memfd_create(("cachesvc-" + options.name).c_str(), flags);
    if (fd < 0 || ::ftruncate(fd, static_cast<off_t>(mapped)) != 0) {
      return fail(absl::ResourceExhaustedError(
          fmt::format("host tier '{}': a shared arena of {} bytes (memfd) failed: {}", options.name,
                      mapped, ErrnoMessage(errno))));
    }
  }
  if (options.huge_pages == HugePages::kHugetlb) {
    void* p = fd >= 0 ? ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
                      : ::mmap(nullptr, mapped, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (p == MAP_FAILED) {
      return fail(absl::ResourceExhaustedError(fmt::format(
          "host tier '{}': mmap of {} bytes with MAP_HUGETLB failed: {} (reserve 2 MiB pages "
          "first: vm.nr_hugepages >= {})",
          options.name, mapped, ErrnoMessage(errno), mapped / kHugePageBytes)));
    }
    arena = static_cast<std::byte*>(p);
  } else {
    // Over-map by one huge page and trim, so the arena starts on a 2 MiB boundary and THP can
    // back it from the first byte.
    const std::uint64_t over = usable + kHugePageBytes;
    void* p = ::mmap(nullptr, over, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) {
      return fail(
          absl::ResourceExhaustedError(fmt::format("host tier '{}': mmap of {} bytes failed: {}",
                                                   options.name, usable, ErrnoMessage(errno))));
    }
    const auto base = reinterpret_cast<std::uintptr_t>(p);
    const std::uintptr_t aligned = RoundUp(base, kHugePageBytes);
    if (aligned > base) ::munmap(p, aligned - base);
    const std::uintptr_t end = base + over;
    if (end > aligned + usable) {
      ::munmap(reinterpret_cast<void*>(aligned + usable), end - (aligned + usable));
    }
    arena = reinterpret_cast<std::byte*>(aligned);
    if (fd >= 0 && ::mmap(arena, usable, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) ==
                       MAP_FAILED) {
      const int err = errno;
      ::munmap(arena, usable);
      return fail(absl::ResourceExhaustedError(
          fmt::format("host tier '{}': mapping the shared arena of {} bytes failed: {}",
                      options.name, usable, ErrnoMessage(err))));
    }
  }
  std::unique_ptr<HostTier> tier(new HostTier(options, env, arena, mapped, fd));
  if (options.huge_pages == HugePages::kTransparent) {
    if (::madvise(arena, mapped, MADV_HUGEPAGE) == 0) {
      tier->thp_advised_ = true;
    } else {
      spdlog::warn("host tier '{}': madvise(MADV_HUGEPAGE) failed ({}); using small pages",
                   options.name, ErrnoMessage(errno));
    }
  }
  if (options.numa_node >= 0) {
    std::vector<unsigned long> mask(static_cast<std::size_t>(numa_max_node()) / 64 + 1, 0);
    mask[static_cast<std::size_t>(options.numa_node) / 64] |=
        1ul << (static_cast<unsigned>(options.numa_node) % 64);
    if (::mbind(arena, mapped, MPOL_BIND, mask.data(), mask.size() * 64 + 1,
                MPOL_MF_STRICT | MPOL_MF_MOVE) != 0) {
      return absl::FailedPreconditionError(
          fmt::format("host tier '{}': binding {} bytes to numa_node {} failed: {}", options.name,
                      mapped, options.numa_node, ErrnoMessage(errno)));
    }
  }
  if (options.prefault) {
    const long page = ::sysconf(_SC_PAGESIZE);
    for (std::uint64_t off = 0; off < mapped; off += static_cast<std::uint64_t>(page)) {
      arena[off] = std::byte{0};
    }
  }
  if (options.cuda_register && CudaDeviceCount() > 0) {
    if (absl::Status s = CudaHostRegister(arena, mapped); s.ok()) {
      tier->cuda_registered_ = true;
    } else {
      spdlog::warn("host tier '{}': cudaHostRegister failed, GPU copies will not be DMA: {}",
                   options.name, std::string(s.message()));
    }
  }
  spdlog::info(
      "host tier '{}': {} bytes, slots {}..{} bytes, numa_node {}, huge pages {}, cuda registered "
      "{}",
      options.name, usable, options.min_slot_bytes, options.max_slot_bytes, options.numa_node,
      options.huge_pages == HugePages::kHugetlb ? "hugetlb"
      : tier->thp_advised_                      ? "thp-madvise"
                                                : "none",
      tier->cuda_registered_);
  return tier;
}

HostTier::HostTier(const HostTierOptions& options, Env* env, std::byte* arena,
                   std::uint64_t mapped_bytes, int shared_fd)
    : options_(options),
      arena_(arena),
      mapped_bytes_(mapped_bytes),
      shared_fd_(shared_fd),
      table_(options.name, TierKind::kHost,
             SlotAllocatorOptions{options.capacity_bytes, options.min_slot_bytes,
                                  options.max_slot_bytes},
             options.slots, env) {}

HostTier::~HostTier() {
  if (cuda_registered_) CudaHostUnregister(arena_);
  ::munmap(arena_, mapped_bytes_);
  if (shared_fd_ >= 0) ::close(shared_fd_);
}

absl::StatusOr<SlotId> HostTier::Allocate(std::uint64_t bytes, std::chrono::milliseconds ttl) {
  return table_.Allocate(bytes, ttl);
}

absl::Status HostTier::Write(SlotId slot, const BlockMeta& meta,
                             std::span<const std::byte> payload) {
  absl::StatusOr<std::uint64_t> generation = table_.BeginWrite(slot, payload.size());
  if (!generation.ok()) return generation.status();
  std::memcpy(arena_ + slot.offset, payload.data(), payload.size());
  table_.FinishWrite(slot, BlockInfo{meta, payload.size(), 0, *generation});
  return absl::OkStatus();
}

absl::StatusOr<BlockInfo> HostTier::Read(SlotId slot, std::span<std::byte> out) {
  absl::StatusOr<BlockInfo> info = table_.BeginRead(slot, out.size());
  if (!info.ok()) return info.status();
  std::memcpy(out.data(), arena_ + slot.offset, info->stored_bytes);
  table_.EndRead(slot);
  return info;
}

absl::StatusOr<BlockInfo> HostTier::Info(SlotId slot) const { return table_.Info(slot); }

absl::Status HostTier::Free(SlotId slot) { return table_.Free(slot); }

absl::StatusOr<LeaseId> HostTier::AcquireLease(SlotId slot, std::chrono::milliseconds ttl) {
  return table_.AcquireLease(slot, ttl);
}

absl::Status HostTier::ReleaseLease(LeaseId lease) { return table_.ReleaseLease(lease); }

std::size_t HostTier::ExpireLeases() { return table_.Expire(); }

absl::StatusOr<MemoryRegion> HostTier::Memory(SlotId slot) {
  if (absl::Status s = table_.CheckAllocated(slot); !s.ok()) return s;
  return MemoryRegion{arena_ + slot.offset, slot.slot_bytes, false, cuda_registered_,
                      options_.numa_node};
}

absl::Status HostTier::Commit(SlotId slot, const BlockMeta& meta, std::uint64_t stored_bytes) {
  absl::StatusOr<std::uint64_t> generation = table_.BeginWrite(slot, stored_bytes);
  if (!generation.ok()) return generation.status();
  table_.FinishWrite(slot, BlockInfo{meta, stored_bytes, 0, *generation});
  return absl::OkStatus();
}

TierStats HostTier::Stats() const { return table_.Stats(); }

}  // namespace cachesvc::tiers
