#include "tiers/nvme_tier.h"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/errno_message.h"
#include "proto/xxh3.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {
namespace {

// An errno from the data file as a Status: a full disk or a file size limit is
// RESOURCE_EXHAUSTED (a capacity problem), anything else INTERNAL.
[[nodiscard]] absl::Status IoError(const std::string& tier, const char* what, std::uint64_t offset,
                                   int err) {
  const std::string message =
      fmt::format("tier '{}': {} at offset {} failed: {}", tier, what, offset, ErrnoMessage(err));
  if (err == ENOSPC || err == EFBIG || err == EDQUOT) {
    return absl::ResourceExhaustedError(message);
  }
  return absl::InternalError(message);
}

bool Aligned(const void* p) { return reinterpret_cast<std::uintptr_t>(p) % kIoAlignment == 0; }

}  // namespace

absl::Status NvmeTierOptions::Validate() const {
  if (name.empty()) return absl::InvalidArgumentError("nvme tier name must not be empty");
  if (data_path.empty()) {
    return absl::InvalidArgumentError(fmt::format("nvme tier '{}': data_path is empty", name));
  }
  if (index_path.empty()) {
    return absl::InvalidArgumentError(fmt::format("nvme tier '{}': index_path is empty", name));
  }
  if (queue_depth == 0 || queue_depth > 4096) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': queue_depth {} must be 1..4096", name, queue_depth));
  }
  if (sync_group_writes == 0 || sync_group_writes > 4096) {
    return absl::InvalidArgumentError(fmt::format(
        "nvme tier '{}': sync_group_writes {} must be 1..4096", name, sync_group_writes));
  }
  if (rings == 0 || rings > 64) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': rings {} must be 1..64", name, rings));
  }
  // capacity 0 is allowed for a block device (whole device); Open checks it against the path.
  SlotAllocatorOptions alloc{std::max(capacity_bytes, max_slot_bytes), min_slot_bytes,
                             max_slot_bytes};
  if (absl::Status s = alloc.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': {}", name, std::string(s.message())));
  }
  if (capacity_bytes != 0 && capacity_bytes < max_slot_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': capacity_bytes {} is smaller than one chunk "
                    "(max_slot_bytes {})",
                    name, capacity_bytes, max_slot_bytes));
  }
  if (absl::Status s = slots.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': {}", name, std::string(s.message())));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<NvmeTier>> NvmeTier::Open(const NvmeTierOptions& options, Env* env) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  const std::string path = options.data_path.string();
  struct stat st {};
  const bool exists = ::stat(path.c_str(), &st) == 0;
  if (exists && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(
        fmt::format("nvme tier '{}': data_path '{}' is a folder, not a file or block device",
                    options.name, path));
  }
  const bool device = exists && S_ISBLK(st.st_mode);
  if (!device && options.capacity_bytes == 0) {
    return absl::InvalidArgumentError(fmt::format(
        "nvme tier '{}': capacity_bytes must be set for the file '{}'", options.name, path));
  }
  int flags = O_RDWR | O_CLOEXEC | (device ? 0 : O_CREAT);
  bool direct = options.direct_io;
  int fd = ::open(path.c_str(), flags | (direct ? O_DIRECT : 0), 0644);
  if (fd < 0 && direct && errno == EINVAL) {
    spdlog::warn(
        "nvme tier '{}': O_DIRECT refused on '{}' (tmpfs?); using buffered I/O with "
        "fdatasync",
        options.name, path);
    direct = false;
    fd = ::open(path.c_str(), flags, 0644);
  }
  if (fd < 0) {
    const int err = errno;
    const std::string message = fmt::format("nvme tier '{}': cannot open data file '{}': {}",
                                            options.name, path, ErrnoMessage(err));
    if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
    return absl::FailedPreconditionError(message);
  }
  std::uint64_t capacity = options.capacity_bytes;
  if (device) {
    std::uint64_t device_bytes = 0;
    if (::ioctl(fd, BLKGETSIZE64, &device_bytes) != 0) {
      const int err = errno;
      ::close(fd);
      return absl::FailedPreconditionError(fmt::format(
          "nvme tier '{}': cannot size device '{}': {}", options.name, path, ErrnoMessage(err)));
    }
    if (capacity == 0) capacity = device_bytes;
    if (device_bytes < capacity || capacity < options.max_slot_bytes) {
      ::close(fd);
      return absl::InvalidArgumentError(fmt::format(
          "nvme tier '{}': device '{}' has {} bytes, less than capacity_bytes {} (and at least "
          "one max_slot_bytes chunk, {})",
          options.name, path, device_bytes, capacity, options.max_slot_bytes));
    }
  }
  const std::uint64_t usable = capacity / options.max_slot_bytes * options.max_slot_bytes;
  if (!device) {
    struct stat now {};
    (void)::fstat(fd, &now);
    const auto old_size = static_cast<std::uint64_t>(now.st_size);
    if (old_size < usable) {
      if (::fallocate(fd, 0, 0, static_cast<off_t>(usable)) != 0) {
        const int err = errno;
        if (err != EOPNOTSUPP || ::ftruncate(fd, static_cast<off_t>(usable)) != 0) {
          ::close(fd);
          const std::string message =
              fmt::format("nvme tier '{}': cannot preallocate {} bytes for '{}': {}", options.name,
                          usable, path, ErrnoMessage(err == EOPNOTSUPP ? errno : err));
          if (err == ENOSPC || err == EFBIG || err == EDQUOT) {
            return absl::ResourceExhaustedError(message);
          }
          return absl::FailedPreconditionError(message);
        }
      }
      if (options.zero_fill) {
        constexpr std::size_t kChunk = 8 << 20;
        void* zeros = std::aligned_alloc(kIoAlignment, kChunk);
        std::memset(zeros, 0, kChunk);
        for (std::uint64_t off = old_size / kIoAlignment * kIoAlignment; off < usable;
             off += kChunk) {
          const std::size_t n =
              static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, usable - off));
          if (::pwrite(fd, zeros, n, static_cast<off_t>(off)) != static_cast<ssize_t>(n)) {
            const int err = errno;
            std::free(zeros);
            ::close(fd);
            return IoError(options.name, "zero-filling the data file", off, err);
          }
        }
        std::free(zeros);
      }
      if (::fsync(fd) != 0) {
        const int err = errno;
        ::close(fd);
        return IoError(options.name, "fsync of the preallocated data file", 0, err);
      }
    }
  }
  std::unique_ptr<NvmeTier> tier(new NvmeTier(options, env, fd, direct, usable));
  absl::StatusOr<std::unique_ptr<NvmeIndex>> index = NvmeIndex::Open(
      options.index_path, NvmeGeometry{usable, options.min_slot_bytes, options.max_slot_bytes},
      options.sync_index);
  if (!index.ok()) return index.status();
  tier->index_ = std::move(*index);
  tier->recovery_.cold_reason = tier->index_->cold_reason();
  tier->recovery_.started_cold = !tier->recovery_.cold_reason.empty();
  if (tier->index_->created() && exists && st.st_size > 0) {
    tier->recovery_.started_cold = true;
    tier->recovery_.cold_reason =
        fmt::format("no index at '{}' for the existing data file", options.index_path.string());
    spdlog::warn("nvme tier '{}': {}; starting cold, every slot is free", options.name,
                 tier->recovery_.cold_reason);
  }
  for (unsigned i = 0; i < options.rings; ++i) {
    absl::StatusOr<std::unique_ptr<IoRing>> ring = IoRing::Create(fd, direct, options.queue_depth);
    if (!ring.ok()) return ring.status();
    tier->rings_.push_back(std::move(*ring));
  }
  {
    MutexLock lock(&tier->rings_mu_);
    for (auto& ring : tier->rings_) tier->free_rings_.push_back(ring.get());
  }
  if (absl::Status s = tier->Recover(); !s.ok()) return s;
  NvmeWritePipeline::Options pipeline;
  pipeline.queue_depth = options.queue_depth;
  pipeline.direct = direct;
  pipeline.dsync = options.dsync_writes;
  pipeline.sync_group = options.sync_group_writes;
  NvmeTier* raw = tier.get();
  absl::StatusOr<std::unique_ptr<NvmeWritePipeline>> started = NvmeWritePipeline::Start(
      fd, pipeline,
      [raw](std::vector<NvmeWritePipeline::Write*> group) { raw->CommitGroup(std::move(group)); });
  if (!started.ok()) return started.status();
  tier->pipeline_ = std::move(*started);
  spdlog::info(
      "nvme tier '{}': {} bytes at '{}' ({}, {}), index '{}', {} blocks restored, {} "
      "entries dropped",
      options.name, usable, path, direct ? "O_DIRECT" : "buffered",
      tier->uses_io_uring() ? "io_uring" : "pread/pwrite", options.index_path.string(),
      tier->recovery_.blocks_restored, tier->recovery_.entries_dropped);
  return tier;
}

NvmeTier::NvmeTier(const NvmeTierOptions& options, Env* env, int fd, bool direct,
                   std::uint64_t usable_bytes)
    : options_(options),
      fd_(fd),
      direct_(direct),
      table_(options.name, TierKind::kNvme,
             SlotAllocatorOptions{usable_bytes, options.min_slot_bytes, options.max_slot_bytes},
             options.slots, env) {}

NvmeTier::~NvmeTier() {
  pipeline_.reset();  // cancels queued writes, finishes those in flight, runs every callback
  rings_.clear();
  index_.reset();
  ::close(fd_);
}

absl::Status NvmeTier::Recover() {
  std::vector<IndexEntry> entries;
  std::vector<BlockId> drop;
  absl::Status scan = index_->ForEach([&](const BlockId& key, const absl::StatusOr<IndexEntry>& e) {
    if (e.ok()) {
      entries.push_back(*e);
    } else {
      spdlog::warn("nvme tier '{}': dropping index entry: {}", options_.name,
                   std::string(e.status().message()));
      drop.push_back(key);
    }
  });
  if (!scan.ok()) return scan;
  // By offset so the allocator carves forward; for one offset the newest generation first, so a
  // stale entry that survived a lost delete loses to the block really in the slot.
  std::sort(entries.begin(), entries.end(), [](const IndexEntry& a, const IndexEntry& b) {
    if (a.slot.offset != b.slot.offset) return a.slot.offset < b.slot.offset;
    return a.info.generation > b.info.generation;
  });
  MutexLock lock(&keys_mu_);
  for (const IndexEntry& e : entries) {
    if (absl::Status s = table_.Restore(e.slot, e.info); !s.ok()) {
      spdlog::warn("nvme tier '{}': dropping index entry for block {}: {}", options_.name,
                   BlockIdHex(e.info.meta.key), std::string(s.message()));
      drop.push_back(e.info.meta.key);
      continue;
    }
    keys_[e.info.meta.key] = KeySlot{e.slot, true};
    ++recovery_.blocks_restored;
  }
  recovery_.entries_dropped = drop.size();
  if (!drop.empty()) {
    if (absl::Status s = index_->Delete(drop); !s.ok()) return s;
  }
  return absl::OkStatus();
}

IoRing* NvmeTier::AcquireRing() {
  MutexLock lock(&rings_mu_);
  ring_freed_.Wait(&rings_mu_,
                   [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !free_rings_.empty(); });
  IoRing* ring = free_rings_.back();
  free_rings_.pop_back();
  return ring;
}

void NvmeTier::ReleaseRing(IoRing* ring) {
  {
    MutexLock lock(&rings_mu_);
    free_rings_.push_back(ring);
  }
  ring_freed_.SignalAll();
}

bool NvmeTier::uses_io_uring() const { return !rings_.empty() && rings_[0]->uses_io_uring(); }

void NvmeTier::ForgetKey(const BlockId& key, SlotId slot) {
  MutexLock lock(&keys_mu_);
  auto it = keys_.find(key);
  if (it != keys_.end() && it->second.slot == slot) keys_.erase(it);
}

struct NvmeTier::WriteJob final : NvmeWritePipeline::Write {
  SlotId slot;
  IndexEntry entry;
  WriteCallback done;
};

absl::Status NvmeTier::PrepareWrite(const WriteOp& op, WriteJob* job,
                                    std::vector<BlockId>* replaced_keys) {
  if (direct_ && !Aligned(op.payload.data())) {
    return absl::InvalidArgumentError(
        fmt::format("tier '{}': payload buffer {} is not {}-byte aligned (required by O_DIRECT)",
                    options_.name, static_cast<const void*>(op.payload.data()), kIoAlignment));
  }
  // Reserve the key (atomically with the check, so two writers cannot both take it).
  bool inserted = false;
  {
    MutexLock lock(&keys_mu_);
    auto it = keys_.find(op.meta.key);
    if (it != keys_.end() && !(it->second.slot == op.slot)) {
      return absl::AlreadyExistsError(fmt::format(
          "tier '{}': block {} is already stored in the slot at offset {}; free it first",
          options_.name, BlockIdHex(op.meta.key), it->second.slot.offset));
    }
    if (it == keys_.end()) {
      keys_[op.meta.key] = KeySlot{op.slot, false};
      inserted = true;
    }
  }
  BlockInfo replaced;
  absl::StatusOr<std::uint64_t> generation =
      table_.BeginWrite(op.slot, op.payload.size(), &replaced);
  if (!generation.ok()) {
    if (inserted) ForgetKey(op.meta.key, op.slot);
    return generation.status();
  }
  {
    MutexLock lock(&keys_mu_);
    if (replaced.stored_bytes != 0) {
      replaced_keys->push_back(replaced.meta.key);
      auto old = keys_.find(replaced.meta.key);
      if (old != keys_.end() && old->second.slot == op.slot) keys_.erase(old);
    }
    keys_[op.meta.key] = KeySlot{op.slot, false};
  }
  job->slot = op.slot;
  job->entry = IndexEntry{
      op.slot, BlockInfo{op.meta, op.payload.size(),
                         XXH3_64bits(op.payload.data(), op.payload.size()), *generation}};
  job->buffer = op.payload.data();
  job->bytes = op.payload.size();
  job->file_offset = op.slot.offset;
  return absl::OkStatus();
}

void NvmeTier::AbortJob(const WriteJob& job) {
  table_.AbortWrite(job.slot);
  ForgetKey(job.entry.info.meta.key, job.slot);
}

void NvmeTier::StartWrites(std::span<const WriteOp> ops, std::span<WriteCallback> dones) {
  std::vector<std::unique_ptr<WriteJob>> jobs;
  std::vector<BlockId> replaced_keys;
  jobs.reserve(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    auto job = std::make_unique<WriteJob>();
    if (absl::Status s = PrepareWrite(ops[i], job.get(), &replaced_keys); !s.ok()) {
      dones[i](std::move(s));
      continue;
    }
    job->done = std::move(dones[i]);
    jobs.push_back(std::move(job));
  }
  if (jobs.empty()) return;
  auto fail_all = [&](const absl::Status& s) {
    for (auto& job : jobs) AbortJob(*job);
    for (auto& job : jobs) job->done(s);
  };
  // 1. Entries of blocks being overwritten go first: the index never points at a slot whose
  //    payload is changing.
  if (!replaced_keys.empty()) {
    if (absl::Status s = index_->Delete(replaced_keys); !s.ok()) {
      fail_all(s);
      return;
    }
  }
  // 2.-5. run in the pipeline and CommitGroup.
  std::vector<NvmeWritePipeline::Write*> writes;
  writes.reserve(jobs.size());
  for (auto& job : jobs) writes.push_back(job.get());
  if (!pipeline_->Submit(writes)) {
    fail_all(absl::CancelledError(
        fmt::format("tier '{}': write refused: the tier is shutting down", options_.name)));
    return;
  }
  for (auto& job : jobs) (void)job.release();  // CommitGroup owns them now
}

void NvmeTier::CommitGroup(std::vector<NvmeWritePipeline::Write*> group) {
  std::vector<std::unique_ptr<WriteJob>> jobs;
  std::vector<IndexEntry> entries;
  jobs.reserve(group.size());
  entries.reserve(group.size());
  for (NvmeWritePipeline::Write* w : group) {
    jobs.emplace_back(static_cast<WriteJob*>(w));
    if (w->result == 0) entries.push_back(jobs.back()->entry);
  }
  // 4. Index: the payloads of `entries` are durable.
  absl::Status indexed = absl::OkStatus();
  if (!entries.empty()) indexed = index_->Put(entries);
  std::vector<absl::Status> status(jobs.size());
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    const WriteJob& job = *jobs[k];
    if (job.result == -ECANCELED) {
      status[k] = absl::CancelledError(
          fmt::format("tier '{}': write of block {} to the slot at offset {} cancelled: the tier "
                      "is shutting down",
                      options_.name, BlockIdHex(job.entry.info.meta.key), job.slot.offset));
    } else if (job.result != 0) {
      status[k] = IoError(options_.name, job.failed_at, job.slot.offset, -job.result);
    } else {
      status[k] = indexed;
    }
    if (!status[k].ok()) AbortJob(job);
  }
  // 5. Readable, then acknowledged: a callback that reads any block of its group finds it.
  for (std::size_t k = 0; k < jobs.size(); ++k) {
    if (status[k].ok()) table_.FinishWrite(jobs[k]->slot, jobs[k]->entry.info);
  }
  {
    MutexLock lock(&keys_mu_);
    for (std::size_t k = 0; k < jobs.size(); ++k) {
      if (!status[k].ok()) continue;
      auto it = keys_.find(jobs[k]->entry.info.meta.key);
      if (it != keys_.end() && it->second.slot == jobs[k]->slot) it->second.ready = true;
    }
  }
  for (std::size_t k = 0; k < jobs.size(); ++k) jobs[k]->done(std::move(status[k]));
}

void NvmeTier::WriteAsync(const WriteOp& op, WriteCallback done) {
  StartWrites(std::span<const WriteOp>(&op, 1), std::span<WriteCallback>(&done, 1));
}

std::vector<absl::Status> NvmeTier::WriteBatch(std::span<const WriteOp> ops) {
  std::vector<absl::Status> status(ops.size());
  if (ops.empty()) return status;
  Mutex mu;
  CondVar finished;
  std::size_t left = ops.size();
  std::vector<WriteCallback> dones;
  dones.reserve(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    dones.emplace_back([&, i](absl::Status s) {
      // Signalled under the lock: the waiter cannot return (and destroy `finished`) before.
      MutexLock lock(&mu);
      status[i] = std::move(s);
      if (--left == 0) finished.SignalAll();
    });
  }
  StartWrites(ops, std::span<WriteCallback>(dones));
  MutexLock lock(&mu);
  finished.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return left == 0; });
  return status;
}

std::vector<absl::StatusOr<BlockInfo>> NvmeTier::ReadBatch(std::span<const ReadOp> ops) {
  std::vector<absl::StatusOr<BlockInfo>> out(ops.size());
  std::vector<std::size_t> started;
  std::vector<IoRing::Op> io;
  started.reserve(ops.size());
  io.reserve(ops.size());
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const ReadOp& op = ops[i];
    if (direct_ && !Aligned(op.out.data())) {
      out[i] = absl::InvalidArgumentError(
          fmt::format("tier '{}': read buffer {} is not {}-byte aligned (required by O_DIRECT)",
                      options_.name, static_cast<const void*>(op.out.data()), kIoAlignment));
      continue;
    }
    out[i] = table_.BeginRead(op.slot, op.out.size());
    if (!out[i].ok()) continue;
    started.push_back(i);
    io.push_back(IoRing::Op{false, op.out.data(), out[i]->stored_bytes, op.slot.offset});
  }
  if (started.empty()) return out;
  std::vector<int> results(io.size(), 0);
  IoRing* ring = AcquireRing();
  ring->Run(io, results);
  ReleaseRing(ring);
  std::vector<BlockId> corrupt;
  for (std::size_t k = 0; k < started.size(); ++k) {
    const std::size_t i = started[k];
    const SlotId slot = ops[i].slot;
    if (results[k] != 0) {
      out[i] = IoError(options_.name, "payload read", slot.offset, -results[k]);
      table_.EndRead(slot, false);
      continue;
    }
    const BlockInfo& info = *out[i];
    const std::uint64_t actual = XXH3_64bits(ops[i].out.data(), info.stored_bytes);
    if (actual != info.checksum) {
      const BlockId key = info.meta.key;
      out[i] = absl::DataLossError(fmt::format(
          "tier '{}': block {} in the slot at offset {} failed its checksum (index {:016x}, "
          "data {:016x}); the block is dropped",
          options_.name, BlockIdHex(key), slot.offset, info.checksum, actual));
      spdlog::warn("{}", std::string(out[i].status().message()));
      corrupt.push_back(key);
      ForgetKey(key, slot);
      table_.DropCorrupt(slot);
      table_.EndRead(slot, false);
      continue;
    }
    table_.EndRead(slot);
  }
  if (!corrupt.empty()) {
    if (absl::Status s = index_->Delete(corrupt); !s.ok()) {
      spdlog::error("tier '{}': cannot delete {} corrupt index entries: {}", options_.name,
                    corrupt.size(), std::string(s.message()));
    }
  }
  return out;
}

absl::StatusOr<SlotId> NvmeTier::Lookup(const BlockId& key) const {
  MutexLock lock(&keys_mu_);
  auto it = keys_.find(key);
  if (it == keys_.end() || !it->second.ready) {
    return absl::NotFoundError(
        fmt::format("tier '{}': no block {}", options_.name, BlockIdHex(key)));
  }
  return it->second.slot;
}

std::vector<IndexEntry> NvmeTier::Blocks() const {
  std::vector<SlotId> slots;
  {
    MutexLock lock(&keys_mu_);
    for (const auto& [key, ks] : keys_) {
      if (ks.ready) slots.push_back(ks.slot);
    }
  }
  std::vector<IndexEntry> out;
  out.reserve(slots.size());
  for (SlotId slot : slots) {
    absl::StatusOr<BlockInfo> info = table_.Info(slot);
    if (info.ok()) out.push_back(IndexEntry{slot, *info});
  }
  return out;
}

absl::StatusOr<SlotId> NvmeTier::Allocate(std::uint64_t bytes, std::chrono::milliseconds ttl) {
  return table_.Allocate(bytes, ttl);
}

absl::Status NvmeTier::Write(SlotId slot, const BlockMeta& meta,
                             std::span<const std::byte> payload) {
  const WriteOp op{slot, meta, payload};
  return WriteBatch(std::span<const WriteOp>(&op, 1))[0];
}

absl::StatusOr<BlockInfo> NvmeTier::Read(SlotId slot, std::span<std::byte> out) {
  const ReadOp op{slot, out};
  return std::move(ReadBatch(std::span<const ReadOp>(&op, 1))[0]);
}

absl::StatusOr<BlockInfo> NvmeTier::Info(SlotId slot) const { return table_.Info(slot); }

absl::Status NvmeTier::Free(SlotId slot) {
  // The index entry goes before the slot can be handed out again.
  absl::StatusOr<BlockInfo> info = table_.Info(slot);
  if (info.ok()) {
    const BlockId key = info->meta.key;
    if (absl::Status s = index_->Delete(std::span<const BlockId>(&key, 1)); !s.ok()) return s;
    ForgetKey(key, slot);
  }
  return table_.Free(slot);
}

absl::StatusOr<LeaseId> NvmeTier::AcquireLease(SlotId slot, std::chrono::milliseconds ttl) {
  return table_.AcquireLease(slot, ttl);
}

absl::Status NvmeTier::ReleaseLease(LeaseId lease) { return table_.ReleaseLease(lease); }

std::size_t NvmeTier::ExpireLeases() { return table_.Expire(); }

absl::StatusOr<MemoryRegion> NvmeTier::Memory(SlotId) {
  return absl::UnimplementedError(fmt::format(
      "tier '{}' is NVMe storage: it has no memory a transport can address", options_.name));
}

absl::Status NvmeTier::Commit(SlotId, const BlockMeta&, std::uint64_t) {
  return absl::UnimplementedError(
      fmt::format("tier '{}' is NVMe storage: write blocks with Write", options_.name));
}

TierStats NvmeTier::Stats() const { return table_.Stats(); }

}  // namespace cachesvc::tiers
