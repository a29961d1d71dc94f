#include "tiers/nvme_index.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <cstring>
#include <system_error>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {
namespace {

constexpr char kGeometryKey[] = "\x01geometry";
constexpr std::uint8_t kEntryVersion = 1;
// version u8, offset, slot_bytes, stored_bytes, raw_bytes u64, codec u8, fingerprint, checksum,
// generation u64.
constexpr std::size_t kEntryBytes = 1 + 8 * 4 + 1 + 8 * 3;

void PutU64(std::string* out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::uint64_t GetU64(const char* p) {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<std::uint8_t>(p[i]);
  return v;
}

std::string EncodeGeometry(const NvmeGeometry& g) {
  std::string out;
  PutU64(&out, g.data_bytes);
  PutU64(&out, g.min_slot_bytes);
  PutU64(&out, g.max_slot_bytes);
  return out;
}

[[nodiscard]] absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = fmt::format("index {}: {}", what, s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  return absl::InternalError(message);
}

rocksdb::Options DbOptions() {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.max_background_jobs = 1;  // small, write-light index; leave the cores to I/O
  options.keep_log_file_num = 2;
  // No periodic stats threads: nothing reads them, and they only add wake-ups (and, in a TSan
  // build, reports from inside the uninstrumented RocksDB library).
  options.stats_dump_period_sec = 0;
  options.stats_persist_period_sec = 0;
  return options;
}

}  // namespace

std::string NvmeIndex::KeyFor(const BlockId& key) {
  std::string out = "b";
  out.append(reinterpret_cast<const char*>(key.data()), key.size());
  return out;
}

std::string NvmeIndex::EncodeEntry(const IndexEntry& e) {
  std::string out;
  out.reserve(kEntryBytes);
  out.push_back(static_cast<char>(kEntryVersion));
  PutU64(&out, e.slot.offset);
  PutU64(&out, e.slot.slot_bytes);
  PutU64(&out, e.info.stored_bytes);
  PutU64(&out, e.info.meta.raw_bytes);
  out.push_back(static_cast<char>(e.info.meta.codec));
  PutU64(&out, e.info.meta.layout_fingerprint);
  PutU64(&out, e.info.checksum);
  PutU64(&out, e.info.generation);
  return out;
}

absl::StatusOr<IndexEntry> NvmeIndex::DecodeEntry(const BlockId& key, std::string_view value) {
  if (value.size() != kEntryBytes || static_cast<std::uint8_t>(value[0]) != kEntryVersion) {
    return absl::DataLossError(fmt::format("index entry for block {} is malformed ({} bytes)",
                                           BlockIdHex(key), value.size()));
  }
  const char* p = value.data() + 1;
  IndexEntry e;
  e.slot.offset = GetU64(p);
  e.slot.slot_bytes = GetU64(p + 8);
  e.info.stored_bytes = GetU64(p + 16);
  e.info.meta.raw_bytes = GetU64(p + 24);
  const std::optional<kernels::CodecId> codec =
      kernels::CodecFromId(static_cast<std::uint8_t>(p[32]));
  if (!codec.has_value()) {
    return absl::DataLossError(fmt::format("index entry for block {} names unknown codec {}",
                                           BlockIdHex(key), static_cast<int>(p[32])));
  }
  e.info.meta.codec = *codec;
  e.info.meta.layout_fingerprint = GetU64(p + 33);
  e.info.checksum = GetU64(p + 41);
  e.info.generation = GetU64(p + 49);
  e.info.meta.key = key;
  return e;
}

absl::StatusOr<std::unique_ptr<NvmeIndex>> NvmeIndex::Open(const std::filesystem::path& path,
                                                           const NvmeGeometry& geometry,
                                                           bool sync) {
  std::error_code ec;
  const bool existed = std::filesystem::exists(path / "CURRENT", ec);
  std::string cold_reason;
  rocksdb::Options options = DbOptions();
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(options, path.string(), &raw);
  std::unique_ptr<rocksdb::DB> db(raw);
  if (s.ok() && existed) {
    std::string stored;
    const rocksdb::Status g = db->Get(rocksdb::ReadOptions(), kGeometryKey, &stored);
    if (!g.ok()) {
      cold_reason =
          fmt::format("index at '{}' has no geometry record ({})", path.string(), g.ToString());
    } else if (stored != EncodeGeometry(geometry)) {
      cold_reason = fmt::format(
          "index at '{}' describes another data file layout (data file is now {} bytes, slots "
          "{}..{} bytes)",
          path.string(), geometry.data_bytes, geometry.min_slot_bytes, geometry.max_slot_bytes);
    }
  } else if (!s.ok()) {
    cold_reason = fmt::format("index at '{}' cannot be opened: {}", path.string(), s.ToString());
  }
  if (!cold_reason.empty()) {
    db.reset();
    std::filesystem::path aside = path;
    aside += ".corrupt";
    std::filesystem::remove_all(aside, ec);
    std::filesystem::rename(path, aside, ec);
    if (ec) std::filesystem::remove_all(path, ec);
    spdlog::warn("{}: starting cold, every NVMe slot is free (old index moved to '{}')",
                 cold_reason, aside.string());
    raw = nullptr;
    s = rocksdb::DB::Open(options, path.string(), &raw);
    db.reset(raw);
    if (!s.ok()) {
      return absl::InternalError(
          fmt::format("cannot create index at '{}': {}", path.string(), s.ToString()));
    }
  }
  rocksdb::WriteOptions write;
  write.sync = true;
  if (absl::Status ps =
          FromRocks(db->Put(write, kGeometryKey, EncodeGeometry(geometry)), "write geometry");
      !ps.ok()) {
    return ps;
  }
  return std::unique_ptr<NvmeIndex>(
      new NvmeIndex(std::move(db), sync, std::move(cold_reason), !existed));
}

NvmeIndex::NvmeIndex(std::unique_ptr<rocksdb::DB> db, bool sync, std::string cold_reason,
                     bool created)
    : db_(std::move(db)), sync_(sync), cold_reason_(std::move(cold_reason)), created_(created) {}

NvmeIndex::~NvmeIndex() {
  if (db_ != nullptr) (void)db_->Close();
}

absl::Status NvmeIndex::Put(std::span<const IndexEntry> entries) {
  rocksdb::WriteBatch batch;
  for (const IndexEntry& e : entries) {
    if (!batch.Put(KeyFor(e.info.meta.key), EncodeEntry(e)).ok()) {
      return absl::InternalError("index batch put failed");
    }
  }
  rocksdb::WriteOptions write;
  write.sync = sync_;
  return FromRocks(db_->Write(write, &batch), "put");
}

absl::Status NvmeIndex::Delete(std::span<const BlockId> keys) {
  rocksdb::WriteBatch batch;
  for (const BlockId& key : keys) {
    if (!batch.Delete(KeyFor(key)).ok()) return absl::InternalError("index batch delete failed");
  }
  rocksdb::WriteOptions write;
  write.sync = sync_;
  return FromRocks(db_->Write(write, &batch), "delete");
}

absl::Status NvmeIndex::ForEach(
    const std::function<void(const BlockId&, const absl::StatusOr<IndexEntry>&)>& fn) const {
  std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions()));
  for (it->Seek("b"); it->Valid() && it->key().starts_with("b"); it->Next()) {
    BlockId key{};
    const rocksdb::Slice k = it->key();
    if (k.size() != 1 + key.size()) {
      // A key of the wrong size cannot be addressed by block id; report it under a zero id.
      fn(key, absl::DataLossError(fmt::format("index key of {} bytes is malformed", k.size())));
      continue;
    }
    std::memcpy(key.data(), k.data() + 1, key.size());
    const rocksdb::Slice v = it->value();
    fn(key, DecodeEntry(key, std::string_view(v.data(), v.size())));
  }
  return FromRocks(it->status(), "scan");
}

absl::Status NvmeIndex::TEST_PutRaw(const std::string& key, const std::string& value) {
  return FromRocks(db_->Put(rocksdb::WriteOptions(), key, value), "raw put");
}

}  // namespace cachesvc::tiers
