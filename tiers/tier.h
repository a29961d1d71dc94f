// tiers/tier.h: the one interface every storage tier implements (HBM, host/CXL memory, NVMe, and
// the in-memory fakes the service core and the replay benchmark use).
//
// A tier is a fixed-capacity store of *slots*. A caller allocates a slot big enough for a payload,
// writes the payload with its metadata (block key, codec, layout fingerprint), reads it back into
// its own buffer, and frees it. Slots never move; a SlotId stays valid until it is freed.
//
// Contract every implementation keeps (tests/tiers/tier_contract_test.cc checks it for each):
// - Capacity is a hard limit. A full tier answers RESOURCE_EXHAUSTED naming the tier and its free
//   bytes, and nothing already stored is disturbed.
// - Bad arguments (unknown slot, payload longer than the slot, buffer too small) are
//   INVALID_ARGUMENT or FAILED_PRECONDITION naming the value; the slot is unchanged.
// - A slot under a lease (a reader or a transfer) is never rewritten or reused: Write refuses with
//   FAILED_PRECONDITION, Free is deferred until the last lease ends or expires.
// - A slot allocated but never written is reclaimed after `allocation_ttl` (a client that died
//   mid-transfer does not leak it). ExpireLeases() does the reclaiming; owners call it
//   periodically (the Mover does).
// - Read never returns bytes that do not match what was written: a tier that can detect
//   corruption (NVMe: XXH3-64 per block) answers DATA_LOSS and drops the block.
//
// Implementations are thread-safe.
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "kernels/codec.h"

namespace cachesvc::tiers {

// A block's 128-bit key as 16 opaque bytes (proto/block_key.h's BlockKey::bytes). Tiers do not
// interpret keys; they index by them (NVMe) and report them.
using BlockId = std::array<std::uint8_t, 16>;

// Hex form of a block id, for messages.
std::string BlockIdHex(const BlockId& id);

// What is stored beside a payload.
struct BlockMeta {
  BlockId key{};
  std::uint64_t layout_fingerprint = 0;
  kernels::CodecId codec = kernels::CodecId::kRaw;
  std::uint64_t raw_bytes = 0;  // the decoded (RAW) size; equals the payload size for RAW
};

// A stored block as a tier reports it.
struct BlockInfo {
  BlockMeta meta;
  std::uint64_t stored_bytes = 0;  // payload bytes in the slot
  std::uint64_t checksum = 0;      // XXH3-64 of the payload; 0 where the tier does not keep one
  std::uint64_t generation = 0;    // increases with every write to the tier
};

// A slot: its byte offset inside the tier's arena or file, and its size class in bytes. Offsets
// are unique within a tier; the pair is what an index records.
struct SlotId {
  std::uint64_t offset = 0;
  std::uint64_t slot_bytes = 0;
  friend bool operator==(const SlotId&, const SlotId&) = default;
};

enum class TierKind : std::uint8_t { kHbm, kHost, kNvme };
const char* TierKindName(TierKind kind);  // "hbm", "host", "nvme"

// How a transport reaches a memory tier's slot without a copy through the tier.
struct MemoryRegion {
  std::byte* address = nullptr;  // host or device address of the slot
  std::uint64_t bytes = 0;       // the slot's size
  bool device_memory = false;    // a cudaMalloc address (HBM tier)
  bool cuda_registered = false;  // host memory pinned with cudaHostRegister (DMA to/from GPU)
  int numa_node = -1;            // node the memory is bound to, -1 when unbound
};

struct TierStats {
  std::string name;
  TierKind kind = TierKind::kHost;
  std::uint64_t capacity_bytes = 0;         // usable bytes (whole chunks)
  std::uint64_t allocated_bytes = 0;        // bytes in allocated slots (by slot size)
  std::uint64_t stored_bytes = 0;           // payload bytes of written blocks
  std::uint64_t free_bytes = 0;             // capacity - allocated
  std::uint64_t slots_in_use = 0;           // allocated slots (written or not)
  std::uint64_t blocks = 0;                 // written slots
  std::uint64_t leases_active = 0;          // unexpired leases
  std::uint64_t leases_expired = 0;         // leases that ran out before release (since start)
  std::uint64_t allocations_reclaimed = 0;  // allocated, never written, reclaimed at ttl
  std::uint64_t frees_deferred = 0;         // frees that waited for leases (since start)
  std::uint64_t checksum_failures = 0;      // reads answered DATA_LOSS (since start)
  std::uint64_t writes = 0;
  std::uint64_t reads = 0;
  std::uint64_t write_bytes = 0;
  std::uint64_t read_bytes = 0;
  // (slot bytes - payload bytes) / slot bytes over written slots: space lost inside slots.
  double internal_fragmentation = 0;
  // Free bytes stranded in chunks already given to one size class, as a share of free bytes:
  // space a request of another class cannot use.
  double external_fragmentation = 0;
};

using LeaseId = std::uint64_t;

class Tier {
 public:
  virtual ~Tier() = default;

  [[nodiscard]] virtual const std::string& name() const = 0;
  [[nodiscard]] virtual TierKind kind() const = 0;

  // A slot of the smallest size class holding `bytes`. INVALID_ARGUMENT for 0 or more than the
  // largest class; RESOURCE_EXHAUSTED (tier name, free bytes) when no slot of that class is free.
  // The slot is reclaimed if not written within `ttl` (0: the tier's allocation ttl); whoever
  // hands the slot to a writer for longer (a write lease) passes a ttl that outlives it.
  [[nodiscard]] virtual absl::StatusOr<SlotId> Allocate(
      std::uint64_t bytes, std::chrono::milliseconds ttl = std::chrono::milliseconds(0)) = 0;

  // Stores `payload` and `meta` in `slot`, replacing what was there. The block is readable (and,
  // for NVMe, durable and indexed) when this returns OK; on error the slot holds no block.
  [[nodiscard]] virtual absl::Status Write(SlotId slot, const BlockMeta& meta,
                                           std::span<const std::byte> payload) = 0;

  // Copies the block in `slot` into `out` (at least stored_bytes long) and describes it.
  // DATA_LOSS when the tier detects corruption; the block is then dropped.
  [[nodiscard]] virtual absl::StatusOr<BlockInfo> Read(SlotId slot, std::span<std::byte> out) = 0;

  // The block's description without reading it. FAILED_PRECONDITION if the slot holds none.
  [[nodiscard]] virtual absl::StatusOr<BlockInfo> Info(SlotId slot) const = 0;

  // Releases the slot (deferred while leased). INVALID_ARGUMENT for a slot not allocated.
  [[nodiscard]] virtual absl::Status Free(SlotId slot) = 0;

  // Pins a written slot for `ttl`: not rewritten or reused until released or expired.
  [[nodiscard]] virtual absl::StatusOr<LeaseId> AcquireLease(SlotId slot,
                                                             std::chrono::milliseconds ttl) = 0;
  // NOT_FOUND for a lease that was released or has expired.
  [[nodiscard]] virtual absl::Status ReleaseLease(LeaseId lease) = 0;
  // Ends expired leases, finishes the frees they deferred and reclaims stale allocations.
  // Returns how many leases and allocations it ended.
  virtual std::size_t ExpireLeases() = 0;

  // Direct access for transports (UCX, CUDA IPC, DMA). UNIMPLEMENTED for tiers that are not
  // memory (NVMe). The caller must hold a lease on the slot while it uses the memory, then call
  // Commit to publish what it wrote there.
  [[nodiscard]] virtual absl::StatusOr<MemoryRegion> Memory(SlotId slot) = 0;
  // Publishes `stored_bytes` written into Memory(slot) by a transport, with `meta`.
  [[nodiscard]] virtual absl::Status Commit(SlotId slot, const BlockMeta& meta,
                                            std::uint64_t stored_bytes) = 0;

  [[nodiscard]] virtual TierStats Stats() const = 0;
};

// Cleanup on an error path, where the caller has nothing better to do with a failure than say
// so: frees `slot` (a slot this caller allocated, so a failure means the bookkeeping is wrong)
// and logs a warning naming `context` if the tier refuses. Returns whether it was freed.
bool FreeOrWarn(Tier& tier, SlotId slot, std::string_view context);
// Ends `lease`; NOT_FOUND (the tier already expired it) is expected and silent, any other
// failure is logged with `context`. Returns whether the lease was still held.
bool ReleaseLeaseOrWarn(Tier& tier, LeaseId lease, std::string_view context);

}  // namespace cachesvc::tiers
