#include "tiers/slot_allocator.h"

#include <bit>
#include <utility>

#include "fmt/format.h"

namespace cachesvc::tiers {
namespace {

std::string Bytes(std::uint64_t n) {
  if (n >= (1ull << 30) && n % (1ull << 30) == 0) return fmt::format("{} GiB", n >> 30);
  if (n >= (1ull << 20) && n % (1ull << 20) == 0) return fmt::format("{} MiB", n >> 20);
  if (n >= (1ull << 10) && n % (1ull << 10) == 0) return fmt::format("{} KiB", n >> 10);
  return fmt::format("{} bytes", n);
}

}  // namespace

absl::Status SlotAllocatorOptions::Validate() const {
  if (!std::has_single_bit(min_slot_bytes) || min_slot_bytes < 4096) {
    return absl::InvalidArgumentError(
        fmt::format("min_slot_bytes {} must be a power of two and at least 4096", min_slot_bytes));
  }
  if (!std::has_single_bit(max_slot_bytes) || max_slot_bytes < min_slot_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("max_slot_bytes {} must be a power of two and at least min_slot_bytes {}",
                    max_slot_bytes, min_slot_bytes));
  }
  if (capacity_bytes < max_slot_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("capacity_bytes {} is smaller than one chunk (max_slot_bytes {})",
                    capacity_bytes, max_slot_bytes));
  }
  if (capacity_bytes / min_slot_bytes >= 0xffffffffull) {
    return absl::InvalidArgumentError(fmt::format(
        "capacity_bytes {} holds 2^32 or more min_slot_bytes ({}) granules; raise min_slot_bytes",
        capacity_bytes, min_slot_bytes));
  }
  return absl::OkStatus();
}

SlotAllocator::SlotAllocator(std::string name, const SlotAllocatorOptions& options)
    : name_(std::move(name)),
      min_slot_bytes_(options.min_slot_bytes),
      chunk_bytes_(options.max_slot_bytes),
      granules_per_chunk_(
          static_cast<std::uint32_t>(options.max_slot_bytes / options.min_slot_bytes)),
      num_chunks_(static_cast<std::uint32_t>(options.capacity_bytes / options.max_slot_bytes)),
      num_classes_(std::countr_zero(options.max_slot_bytes) -
                   std::countr_zero(options.min_slot_bytes) + 1),
      chunk_class_(num_chunks_, kFreeChunk),
      chunk_used_(num_chunks_, 0),
      chunk_carved_(num_chunks_, 0),
      chunk_free_head_(num_chunks_, kNone),
      chunk_prev_(num_chunks_, kNone),
      chunk_next_(num_chunks_, kNone),
      chunk_listed_(num_chunks_, false),
      list_head_(static_cast<std::size_t>(num_classes_) + 1, kNone),
      next_free_(static_cast<std::size_t>(num_chunks_) * granules_per_chunk_, kNone),
      allocated_(static_cast<std::size_t>(num_chunks_) * granules_per_chunk_, 0) {
  // Push in reverse so that chunk 0 is used first (low offsets first reads better on disk).
  for (std::uint32_t c = num_chunks_; c-- > 0;) ListPush(static_cast<std::size_t>(num_classes_), c);
}

int SlotAllocator::ClassFor(std::uint64_t bytes) const {
  if (bytes == 0 || bytes > chunk_bytes_) return -1;
  const std::uint64_t rounded = bytes <= min_slot_bytes_ ? min_slot_bytes_ : std::bit_ceil(bytes);
  return std::countr_zero(rounded) - std::countr_zero(min_slot_bytes_);
}

std::uint64_t SlotAllocator::SlotBytesFor(std::uint64_t bytes) const {
  const int cls = ClassFor(bytes);
  return cls < 0 ? 0 : ClassBytes(cls);
}

void SlotAllocator::ListPush(std::size_t list, std::uint32_t chunk) {
  chunk_prev_[chunk] = kNone;
  chunk_next_[chunk] = list_head_[list];
  if (list_head_[list] != kNone) chunk_prev_[list_head_[list]] = chunk;
  list_head_[list] = chunk;
  chunk_listed_[chunk] = true;
}

void SlotAllocator::ListRemove(std::size_t list, std::uint32_t chunk) {
  const std::uint32_t prev = chunk_prev_[chunk];
  const std::uint32_t next = chunk_next_[chunk];
  if (prev != kNone) {
    chunk_next_[prev] = next;
  } else {
    list_head_[list] = next;
  }
  if (next != kNone) chunk_prev_[next] = prev;
  chunk_prev_[chunk] = chunk_next_[chunk] = kNone;
  chunk_listed_[chunk] = false;
}

void SlotAllocator::AssignChunk(std::uint32_t chunk, int cls) {
  ListRemove(static_cast<std::size_t>(num_classes_), chunk);
  chunk_class_[chunk] = static_cast<std::int8_t>(cls);
  chunk_used_[chunk] = 0;
  chunk_carved_[chunk] = 0;
  chunk_free_head_[chunk] = kNone;
  class_owned_bytes_ += chunk_bytes_;
  ListPush(static_cast<std::size_t>(cls), chunk);
}

void SlotAllocator::ReleaseChunkIfEmpty(std::uint32_t chunk) {
  if (chunk_used_[chunk] != 0) return;
  const int cls = chunk_class_[chunk];
  if (chunk_listed_[chunk]) ListRemove(static_cast<std::size_t>(cls), chunk);
  chunk_class_[chunk] = kFreeChunk;
  chunk_carved_[chunk] = 0;
  chunk_free_head_[chunk] = kNone;
  class_owned_bytes_ -= chunk_bytes_;
  ListPush(static_cast<std::size_t>(num_classes_), chunk);
}

absl::StatusOr<SlotId> SlotAllocator::Allocate(std::uint64_t bytes) {
  const int cls = ClassFor(bytes);
  if (cls < 0) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': cannot allocate {} bytes: slots hold 1 to {} bytes", name_, bytes,
                    chunk_bytes_));
  }
  const auto list = static_cast<std::size_t>(cls);
  std::uint32_t chunk = list_head_[list];
  if (chunk == kNone) {
    chunk = list_head_[static_cast<std::size_t>(num_classes_)];
    if (chunk == kNone) {
      return absl::ResourceExhaustedError(fmt::format(
          "tier '{}' is full: no free {} slot for {} bytes ({} free of {}, in slots of other "
          "sizes)",
          name_, Bytes(ClassBytes(cls)), bytes, Bytes(free_bytes()), Bytes(capacity_bytes())));
    }
    AssignChunk(chunk, cls);
  }
  const std::uint32_t step = granules_per_chunk_ / SlotsPerChunk(cls);
  const std::uint32_t base = chunk * granules_per_chunk_;
  std::uint32_t granule;
  if (chunk_free_head_[chunk] != kNone) {
    granule = chunk_free_head_[chunk];
    chunk_free_head_[chunk] = next_free_[granule];
    next_free_[granule] = kNone;
  } else {
    granule = base + chunk_carved_[chunk] * step;
    ++chunk_carved_[chunk];
  }
  allocated_[granule] = 1;
  ++chunk_used_[chunk];
  if (chunk_used_[chunk] == SlotsPerChunk(cls)) ListRemove(list, chunk);
  const std::uint64_t slot_bytes = ClassBytes(cls);
  allocated_bytes_ += slot_bytes;
  ++slots_in_use_;
  return SlotId{static_cast<std::uint64_t>(granule) * min_slot_bytes_, slot_bytes};
}

absl::Status SlotAllocator::Locate(SlotId slot, std::uint32_t* chunk, std::uint32_t* granule,
                                   int* cls) const {
  *cls = ClassFor(slot.slot_bytes);
  if (*cls < 0 || ClassBytes(*cls) != slot.slot_bytes || slot.offset % slot.slot_bytes != 0 ||
      slot.offset + slot.slot_bytes > capacity_bytes()) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': no slot of {} bytes at offset {} (capacity {} bytes)", name_,
                    slot.slot_bytes, slot.offset, capacity_bytes()));
  }
  *chunk = static_cast<std::uint32_t>(slot.offset / chunk_bytes_);
  *granule = static_cast<std::uint32_t>(slot.offset / min_slot_bytes_);
  return absl::OkStatus();
}

bool SlotAllocator::IsAllocated(SlotId slot) const {
  std::uint32_t chunk = 0, granule = 0;
  int cls = 0;
  if (!Locate(slot, &chunk, &granule, &cls).ok()) return false;
  return chunk_class_[chunk] == cls && allocated_[granule] != 0;
}

absl::Status SlotAllocator::Free(SlotId slot) {
  std::uint32_t chunk = 0, granule = 0;
  int cls = 0;
  if (absl::Status s = Locate(slot, &chunk, &granule, &cls); !s.ok()) return s;
  if (chunk_class_[chunk] != cls || allocated_[granule] == 0) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': slot at offset {} ({} bytes) is not allocated", name_, slot.offset,
                    slot.slot_bytes));
  }
  allocated_[granule] = 0;
  const bool was_full = chunk_used_[chunk] == SlotsPerChunk(cls);
  --chunk_used_[chunk];
  allocated_bytes_ -= slot.slot_bytes;
  --slots_in_use_;
  next_free_[granule] = chunk_free_head_[chunk];
  chunk_free_head_[chunk] = granule;
  if (was_full) ListPush(static_cast<std::size_t>(cls), chunk);
  ReleaseChunkIfEmpty(chunk);
  return absl::OkStatus();
}

absl::Status SlotAllocator::Claim(SlotId slot) {
  std::uint32_t chunk = 0, granule = 0;
  int cls = 0;
  if (absl::Status s = Locate(slot, &chunk, &granule, &cls); !s.ok()) return s;
  if (chunk_class_[chunk] == kFreeChunk) {
    AssignChunk(chunk, cls);
  } else if (chunk_class_[chunk] != cls) {
    return absl::FailedPreconditionError(
        fmt::format("tier '{}': slot at offset {} ({} bytes) lies in a chunk of {}-byte slots",
                    name_, slot.offset, slot.slot_bytes, ClassBytes(chunk_class_[chunk])));
  }
  if (allocated_[granule] != 0) {
    return absl::AlreadyExistsError(
        fmt::format("tier '{}': slot at offset {} is already allocated", name_, slot.offset));
  }
  const std::uint32_t step = granules_per_chunk_ / SlotsPerChunk(cls);
  const std::uint32_t index = (granule - chunk * granules_per_chunk_) / step;
  if (index >= chunk_carved_[chunk]) {
    // Carve up to and including the slot; the ones skipped go on the free stack.
    for (std::uint32_t i = chunk_carved_[chunk]; i < index; ++i) {
      const std::uint32_t g = chunk * granules_per_chunk_ + i * step;
      next_free_[g] = chunk_free_head_[chunk];
      chunk_free_head_[chunk] = g;
    }
    chunk_carved_[chunk] = index + 1;
  } else {
    // The slot is on the free stack: unlink it (start-up only, so a walk is fine).
    std::uint32_t* link = &chunk_free_head_[chunk];
    while (*link != kNone && *link != granule) link = &next_free_[*link];
    if (*link == granule) *link = next_free_[granule];
    next_free_[granule] = kNone;
  }
  allocated_[granule] = 1;
  ++chunk_used_[chunk];
  if (chunk_used_[chunk] == SlotsPerChunk(cls)) ListRemove(static_cast<std::size_t>(cls), chunk);
  allocated_bytes_ += slot.slot_bytes;
  ++slots_in_use_;
  return absl::OkStatus();
}

double SlotAllocator::ExternalFragmentation() const {
  const std::uint64_t free = free_bytes();
  if (free == 0) return 0;
  const std::uint64_t stranded = class_owned_bytes_ - allocated_bytes_;
  return static_cast<double>(stranded) / static_cast<double>(free);
}

}  // namespace cachesvc::tiers
