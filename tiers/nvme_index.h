// tiers/nvme_index.h: the NVMe tier's persistent index, a RocksDB database mapping
// block key → (slot, stored length, codec, layout fingerprint, raw length, XXH3-64, generation).
//
// It also records the data file's geometry (size and slot size classes). At Open an index that
// RocksDB cannot open (corrupt, unreadable) or whose geometry does not match the data file is
// moved aside to `<path>.corrupt` and a fresh one is created: the tier starts cold, with the
// reason in `cold_reason()`, and every slot is free. An index entry that cannot be decoded is
// reported to the caller, which drops it. The tier writes an entry only after the payload it
// describes is durable (docs/tiers.md, "Write ordering"), so every entry names a whole payload.
//
// Thread-safe (RocksDB is); Put and Delete are atomic per call.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "absl/status/statusor.h"
#include "tiers/tier.h"

namespace rocksdb {
class DB;
}

namespace cachesvc::tiers {

struct NvmeGeometry {
  std::uint64_t data_bytes = 0;
  std::uint64_t min_slot_bytes = 0;
  std::uint64_t max_slot_bytes = 0;
  friend bool operator==(const NvmeGeometry&, const NvmeGeometry&) = default;
};

struct IndexEntry {
  SlotId slot;
  BlockInfo info;  // info.meta.key is the index key
};

class NvmeIndex {
 public:
  // Opens (or creates) the index at `path` for a data file of `geometry`. `sync`: every Put and
  // Delete waits for RocksDB's WAL to reach the disk (otherwise the WAL is written, not synced:
  // a process crash loses nothing, a power loss may lose the newest entries, never leaving one
  // without its payload). INTERNAL when even a fresh index cannot be created.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NvmeIndex>> Open(
      const std::filesystem::path& path, const NvmeGeometry& geometry, bool sync);
  ~NvmeIndex();
  NvmeIndex(const NvmeIndex&) = delete;
  NvmeIndex& operator=(const NvmeIndex&) = delete;

  // Empty when the existing index was opened; otherwise why the tier starts cold.
  [[nodiscard]] const std::string& cold_reason() const { return cold_reason_; }
  // True when the index did not exist before Open.
  [[nodiscard]] bool created() const { return created_; }

  [[nodiscard]] absl::Status Put(std::span<const IndexEntry> entries);
  [[nodiscard]] absl::Status Delete(std::span<const BlockId> keys);

  // Calls `fn` for each entry; undecodable ones come as an error Status (with the raw key, so
  // the caller can Delete it) instead of an entry.
  [[nodiscard]] absl::Status ForEach(
      const std::function<void(const BlockId& key, const absl::StatusOr<IndexEntry>& entry)>& fn)
      const;

  // The fixed-size value encoding (exposed for tests that plant bad entries).
  static std::string EncodeEntry(const IndexEntry& entry);
  [[nodiscard]] static absl::StatusOr<IndexEntry> DecodeEntry(const BlockId& key,
                                                              std::string_view value);
  static std::string KeyFor(const BlockId& key);  // "b" + 16 key bytes
  // Writes a raw value under a raw key (tests only).
  [[nodiscard]] absl::Status TEST_PutRaw(const std::string& key, const std::string& value);

 private:
  NvmeIndex(std::unique_ptr<rocksdb::DB> db, bool sync, std::string cold_reason, bool created);

  const std::unique_ptr<rocksdb::DB> db_;
  const bool sync_;
  const std::string cold_reason_;
  const bool created_;
};

}  // namespace cachesvc::tiers
