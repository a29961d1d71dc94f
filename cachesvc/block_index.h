// cachesvc/block_index.h: what the service knows about each block it holds.
//
// Maps a block key (proto/block_key.h) to a compact BlockEntry: which tiers hold a copy and where
// (slot, stored size, codec of that copy), the block's layout and decoded size, how many leases
// and live sessions hold it, and its recency and frequency. The service core, the policy and the
// trace replay all read and update blocks through it, so it is built for speed and size:
//   - sharded by key, one mutex per shard, so concurrent RPCs on different blocks do not contend;
//   - a 72-byte entry in fixed chunks plus a 20-byte slot in an open-addressing table
//     (absl::flat_hash_map of key -> entry index), no heap node per block: BytesPerEntry() reports
//     what an entry really costs, table and chunk slack included (at most ~120 bytes);
//   - LongestCachedPrefix walks a chain of keys (a prompt's blocks in order) and stops at the
//     first block no usable tier holds, which is how prefix hits are defined.
// Times are in the caller's clock (microseconds of virtual or real time), never read here, so
// the replay benchmark can drive it in virtual time.
//
// Thread-safe. Callbacks given to Update run under the shard's lock: keep them short, and never
// call back into the index from one.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "base/mutex.h"
#include "kernels/codec.h"
#include "proto/block_key.h"
#include "tiers/tier.h"

namespace cachesvc {

inline constexpr int kTierKinds = 3;  // tiers::TierKind: kHbm, kHost, kNvme

// A set of tier kinds, one bit each (bit = 1 << TierKind).
using TierMask = std::uint8_t;
inline constexpr TierMask TierBit(tiers::TierKind kind) {
  return static_cast<TierMask>(1u << static_cast<unsigned>(kind));
}
inline constexpr TierMask kAllTiers = (1u << kTierKinds) - 1;

// Where one tier keeps its copy of a block.
struct TierCopy {
  std::uint64_t slot_offset = 0;   // tiers::SlotId::offset
  std::uint32_t stored_bytes = 0;  // bytes of this copy (encoded size when compressed)
  std::uint8_t slot_log2 = 0;      // tiers::SlotId::slot_bytes == 1 << slot_log2
  kernels::CodecId codec = kernels::CodecId::kRaw;
  friend bool operator==(const TierCopy&, const TierCopy&) = default;

  // The tier's name for the slot, and a copy in a slot the tier handed out.
  [[nodiscard]] tiers::SlotId slot() const {
    return tiers::SlotId{slot_offset, std::uint64_t{1} << slot_log2};
  }
  static TierCopy Of(const tiers::SlotId& slot, std::uint64_t stored, kernels::CodecId codec) {
    return TierCopy{slot.offset, static_cast<std::uint32_t>(stored),
                    static_cast<std::uint8_t>(std::countr_zero(slot.slot_bytes)), codec};
  }
};

// 72 bytes: the per-tier fields are stored as arrays rather than an array of TierCopy, which would
// pad each copy to 16 bytes.
struct BlockEntry {
  std::uint64_t layout_fingerprint = 0;
  std::int64_t last_access_us = 0;
  std::array<std::uint64_t, kTierKinds> slot_offset{};
  std::array<std::uint32_t, kTierKinds> stored_bytes{};
  std::uint32_t raw_bytes = 0;     // decoded payload size
  std::uint32_t accesses = 0;      // lookups that hit it, saturating
  std::uint16_t leases = 0;        // outstanding leases on any copy
  std::uint16_t session_refs = 0;  // live sessions whose context includes it
  std::array<std::uint8_t, kTierKinds> slot_log2{};
  std::array<kernels::CodecId, kTierKinds> codec{};
  TierMask tiers = 0;  // tiers holding a copy

  [[nodiscard]] bool In(tiers::TierKind kind) const { return (tiers & TierBit(kind)) != 0; }
  [[nodiscard]] TierCopy Copy(tiers::TierKind kind) const {
    const auto k = static_cast<unsigned>(kind);
    return TierCopy{slot_offset[k], stored_bytes[k], slot_log2[k], codec[k]};
  }
  void SetCopy(tiers::TierKind kind, const TierCopy& c) {
    const auto k = static_cast<unsigned>(kind);
    slot_offset[k] = c.slot_offset;
    stored_bytes[k] = c.stored_bytes;
    slot_log2[k] = c.slot_log2;
    codec[k] = c.codec;
  }
};
static_assert(sizeof(BlockEntry) <= 72, "keep the index entry compact (bytes per block)");

class BlockIndex {
 public:
  // `shards` is rounded up to a power of two (at least 1).
  explicit BlockIndex(unsigned shards = 16);
  BlockIndex(const BlockIndex&) = delete;
  BlockIndex& operator=(const BlockIndex&) = delete;

  // A copy of the entry, or nullopt.
  [[nodiscard]] std::optional<BlockEntry> Get(const BlockKey& key) const;
  [[nodiscard]] bool Contains(const BlockKey& key) const;
  // Makes room for `entries` blocks in all, so that growing to that size does not rehash.
  void Reserve(std::size_t entries);
  // The tiers holding a copy of `key` (0 when there is no entry).
  [[nodiscard]] TierMask Tiers(const BlockKey& key) const;

  // Records that `kind` holds a copy of the block (creating the entry if needed); `fresh` fills
  // the block-wide fields of a new entry and is ignored for an existing one.
  void AddCopy(const BlockKey& key, tiers::TierKind kind, const TierCopy& copy,
               const BlockEntry& fresh);
  // Forgets `kind`'s copy; the entry goes when no tier holds a copy and nothing references it.
  // Returns the copy that was recorded, or nullopt.
  std::optional<TierCopy> RemoveCopy(const BlockKey& key, tiers::TierKind kind);
  // Forgets `kind`'s copy but keeps the entry even when nothing is left in it (a block on its way
  // to another tier); returns the tiers still holding a copy (0 also when there is no entry).
  // Pair with EraseIfUnused.
  TierMask TakeCopy(const BlockKey& key, tiers::TierKind kind);
  // Erases the entry if no tier holds a copy and nothing references it.
  void EraseIfUnused(const BlockKey& key);

  // Runs `fn` on the entry under its shard lock; false when there is no entry. An entry left
  // with no copy, no lease and no session reference is erased afterwards.
  bool Update(const BlockKey& key, const std::function<void(BlockEntry&)>& fn);

  // Removes the entry whatever it holds; returns it.
  std::optional<BlockEntry> Erase(const BlockKey& key);

  // How many of `chain`'s leading keys have an entry with a copy in `usable` tiers. When `now_us`
  // is given, the blocks of that prefix are touched: last access = now_us, accesses + 1. When
  // `masks` is given (at least chain.size() long), entry i receives block i's tier mask for each
  // block of the prefix.
  std::size_t LongestCachedPrefix(std::span<const BlockKey> chain, TierMask usable = kAllTiers,
                                  std::optional<std::int64_t> now_us = std::nullopt,
                                  std::span<TierMask> masks = {});

  [[nodiscard]] std::size_t Size() const;
  // Bytes the tables use (capacity x slot size plus control bytes), over Size(): the real cost of
  // an entry, slack included. 0 when empty.
  [[nodiscard]] double BytesPerEntry() const;

  // Calls `fn` on a copy of every entry, shard by shard (no global snapshot).
  void ForEach(const std::function<void(const BlockKey&, const BlockEntry&)>& fn) const;

 private:
  // Entries live in fixed chunks (no reallocation slack, stable addresses); the hash table maps a
  // key to its entry's index, so a table slot is 20 bytes instead of key + entry.
  static constexpr std::uint32_t kChunkEntries = 1024;
  struct Shard {
    mutable Mutex mu;
    absl::flat_hash_map<BlockKey, std::uint32_t> ids ABSL_GUARDED_BY(mu);
    std::vector<std::unique_ptr<BlockEntry[]>> chunks ABSL_GUARDED_BY(mu);
    std::vector<std::uint32_t> free_ids ABSL_GUARDED_BY(mu);
    std::uint32_t next_id ABSL_GUARDED_BY(mu) = 0;

    BlockEntry& At(std::uint32_t id) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) {
      return chunks[id / kChunkEntries][id % kChunkEntries];
    }
    BlockEntry* Find(const BlockKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
    // The entry for `key`, created from `fresh` if absent.
    BlockEntry& FindOrAdd(const BlockKey& key, const BlockEntry& fresh, bool* added = nullptr)
        ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
    void Remove(const BlockKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu);
  };

  Shard& ShardFor(const BlockKey& key) const;
  static bool Unused(const BlockEntry& e) {
    return e.tiers == 0 && e.leases == 0 && e.session_refs == 0;
  }

  const unsigned mask_;
  std::unique_ptr<Shard[]> shards_;
};

}  // namespace cachesvc
