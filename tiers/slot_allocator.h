// tiers/slot_allocator.h: fixed-size slots in power-of-two size classes over one address range
// (a memory arena, a file or a device); the allocator only does arithmetic on offsets.
//
// Layout: the range is cut into chunks of `max_slot_bytes` (a remainder smaller than one chunk is
// not used). A chunk is free, or belongs to one size class and is cut into slots of that class,
// handed out bump-first and then from a per-chunk free stack. A chunk whose slots are all free
// goes back to the free chunks, so classes trade space as demand shifts (a slab allocator).
// Allocate and Free are O(1) and never touch the heap: every list lives in arrays sized at
// construction (4 bytes + 1 byte per `min_slot_bytes` granule, 20 bytes per chunk).
//
// Claim re-marks a specific slot as allocated, for rebuilding state from an index after a
// restart; it is O(slots in the chunk) at worst and meant for start-up only.
//
// Thread-compatible: the owner (a tier) serializes calls.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

struct SlotAllocatorOptions {
  std::uint64_t capacity_bytes = 0;
  std::uint64_t min_slot_bytes = 16 << 10;  // 16 KiB
  std::uint64_t max_slot_bytes = 64 << 20;  // 64 MiB; also the chunk size

  // INVALID_ARGUMENT naming the field: sizes must be powers of two, min >= 4096 (the O_DIRECT
  // alignment), min <= max, capacity >= max (at least one chunk), and at most 2^32 granules.
  [[nodiscard]] absl::Status Validate() const;
};

class SlotAllocator {
 public:
  // `name` appears in error messages (the owning tier's name). Options must be valid.
  SlotAllocator(std::string name, const SlotAllocatorOptions& options);

  // The smallest slot of a class holding `bytes`. INVALID_ARGUMENT for 0 or > max_slot_bytes;
  // RESOURCE_EXHAUSTED with the tier name and free bytes when the class has no free slot and no
  // free chunk is left.
  [[nodiscard]] absl::StatusOr<SlotId> Allocate(std::uint64_t bytes);

  // INVALID_ARGUMENT if `slot` is not an allocated slot (wrong offset, size or a double free).
  [[nodiscard]] absl::Status Free(SlotId slot);

  // Marks exactly `slot` allocated (start-up recovery). INVALID_ARGUMENT when the slot is out of
  // range or misaligned, ALREADY_EXISTS when it is allocated, FAILED_PRECONDITION when its chunk
  // already serves another size class.
  [[nodiscard]] absl::Status Claim(SlotId slot);

  // True when `slot` is currently allocated.
  [[nodiscard]] bool IsAllocated(SlotId slot) const;

  // The class size that `bytes` rounds up to (0 when bytes is 0 or above the largest class).
  [[nodiscard]] std::uint64_t SlotBytesFor(std::uint64_t bytes) const;

  [[nodiscard]] std::uint64_t capacity_bytes() const { return chunk_bytes_ * num_chunks_; }
  [[nodiscard]] std::uint64_t allocated_bytes() const { return allocated_bytes_; }
  [[nodiscard]] std::uint64_t free_bytes() const { return capacity_bytes() - allocated_bytes_; }
  [[nodiscard]] std::uint64_t slots_in_use() const { return slots_in_use_; }
  [[nodiscard]] std::uint64_t min_slot_bytes() const { return min_slot_bytes_; }
  [[nodiscard]] std::uint64_t max_slot_bytes() const { return chunk_bytes_; }
  // Free bytes inside chunks owned by a class, as a share of all free bytes (0 when none free).
  [[nodiscard]] double ExternalFragmentation() const;

 private:
  static constexpr std::uint32_t kNone = 0xffffffffu;
  static constexpr std::int8_t kFreeChunk = -1;

  [[nodiscard]] int ClassFor(std::uint64_t bytes) const;  // -1 when out of range
  [[nodiscard]] std::uint64_t ClassBytes(int cls) const { return min_slot_bytes_ << cls; }
  [[nodiscard]] std::uint32_t SlotsPerChunk(int cls) const {
    return static_cast<std::uint32_t>(chunk_bytes_ / ClassBytes(cls));
  }
  // Doubly linked lists of chunks: index 0..classes-1 are the chunks of that class with a free
  // slot; index `classes` is the free chunks.
  void ListPush(std::size_t list, std::uint32_t chunk);
  void ListRemove(std::size_t list, std::uint32_t chunk);
  // Validates `slot` and returns its chunk and its granule, or an error.
  [[nodiscard]] absl::Status Locate(SlotId slot, std::uint32_t* chunk, std::uint32_t* granule,
                                    int* cls) const;
  void AssignChunk(std::uint32_t chunk, int cls);
  void ReleaseChunkIfEmpty(std::uint32_t chunk);

  // Constant after construction.
  const std::string name_;
  const std::uint64_t min_slot_bytes_;
  const std::uint64_t chunk_bytes_;
  const std::uint32_t granules_per_chunk_;
  const std::uint32_t num_chunks_;
  const int num_classes_;

  // Per chunk.
  std::vector<std::int8_t> chunk_class_;
  std::vector<std::uint32_t> chunk_used_;       // allocated slots
  std::vector<std::uint32_t> chunk_carved_;     // slots handed out by the bump pointer so far
  std::vector<std::uint32_t> chunk_free_head_;  // granule of the first freed slot, or kNone
  std::vector<std::uint32_t> chunk_prev_;
  std::vector<std::uint32_t> chunk_next_;
  std::vector<bool> chunk_listed_;
  // Per list (classes + the free-chunk list).
  std::vector<std::uint32_t> list_head_;
  // Per granule: the next freed slot in the chunk's stack, and whether a slot starting here is
  // allocated.
  std::vector<std::uint32_t> next_free_;
  std::vector<std::uint8_t> allocated_;

  std::uint64_t allocated_bytes_ = 0;
  std::uint64_t slots_in_use_ = 0;
  std::uint64_t class_owned_bytes_ = 0;  // bytes of chunks assigned to a class
};

}  // namespace cachesvc::tiers
