// tiers/nvme_tier.h: the NVMe tier: a preallocated file (or a raw block device) cut into slots,
// read and written with io_uring and O_DIRECT, with a RocksDB index so a restart comes back warm.
//
// On disk (docs/tiers.md has the picture): the data file holds payloads at their slot offsets
// (slot offset == file offset, every slot 4 KiB-aligned, the last page zero-padded); nothing
// else. The index (tiers/nvme_index.h) holds, per block key, the slot, lengths, codec, layout
// fingerprint, XXH3-64 of the payload and a generation.
//
// Write ordering, so that after a crash every indexed block is whole:
//   1. the old index entry of a slot being rewritten is deleted (in the caller's thread);
//   2. the payload is written by the write pipeline (tiers/nvme_write_pipeline.h), which keeps up
//      to queue_depth payload writes in flight continuously, whoever submitted them;
//   3. the payload is durable: one fdatasync (IORING_OP_FSYNC) covers every write that completed
//      before it was issued, while later writes keep flowing (group commit); or each write
//      carried RWF_DSYNC (dsync_writes);
//   4. one RocksDB write batch adds the index entries of the whole sync group;
//   5. only then is each block readable and its callback (or Write/WriteBatch) answers OK.
// A crash between 3 and 4 leaves payloads without entries: their slots are free at restart.
// Reads verify XXH3-64 against the index; a mismatch answers DATA_LOSS, deletes the entry,
// frees the slot and counts `checksum_failures`; the block is never served.
//
// O_DIRECT is used wherever the file system accepts it; where it is refused (tmpfs) the tier logs
// one warning and uses buffered I/O, still with fdatasync before indexing. With O_DIRECT the
// caller's buffers must be 4 KiB-aligned (INVALID_ARGUMENT otherwise); lengths need not be.
//
// A block key lives in at most one slot: writing a key that another slot holds is
// ALREADY_EXISTS (free the old slot first).
//
// Thread-safe. Writes from every caller share the one pipeline (so they share syncs and index
// batches); read batches run in parallel on a pool of `rings` io_uring instances.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/env.h"
#include "base/mutex.h"
#include "tiers/io_ring.h"
#include "tiers/nvme_index.h"
#include "tiers/nvme_write_pipeline.h"
#include "tiers/slot_table.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

struct NvmeTierOptions {
  std::string name = "nvme";
  std::filesystem::path data_path;   // file (created and preallocated) or block device
  std::filesystem::path index_path;  // RocksDB folder (created)
  // File size to preallocate; for a block device 0 means the whole device. Rounded down to whole
  // max_slot_bytes chunks.
  std::uint64_t capacity_bytes = 0;
  std::uint64_t min_slot_bytes = 16 << 10;
  std::uint64_t max_slot_bytes = 64 << 20;
  unsigned queue_depth = 32;  // payload writes in flight in the pipeline; reads per read batch
  unsigned rings = 2;         // read batches that can run at once
  bool direct_io = true;      // O_DIRECT where the file system accepts it
  bool sync_index = false;    // fsync RocksDB's WAL on every index write (power-loss safety of
                              // the newest entries; process crashes lose nothing either way)
  // How payloads become durable before they are indexed: plain writes and one fdatasync per
  // batch (false), or each write carrying RWF_DSYNC (a FUA write where the disk supports it, no
  // separate flush). Both keep the ordering; which is faster depends on the disk (on the virtio
  // disk of docs/bench/tiers.md one fdatasync per batch wins from queue depth 8 on).
  bool dsync_writes = false;
  // Group commit: while more writes are queued than queue_depth, one fdatasync waits for this many
  // completed payloads (fewer flushes under load; a lone writer's sync is never delayed).
  unsigned sync_group_writes = 8;
  // Write zeros over newly preallocated space, so later O_DIRECT writes do not pay for unwritten
  // extent conversion (slower start, steadier writes).
  bool zero_fill = false;
  SlotTableOptions slots;

  // INVALID_ARGUMENT naming the field.
  [[nodiscard]] absl::Status Validate() const;
};

// What start-up found.
struct NvmeRecovery {
  bool started_cold = false;
  std::string cold_reason;            // why, when started_cold
  std::uint64_t blocks_restored = 0;  // indexed blocks that are readable again
  std::uint64_t entries_dropped = 0;  // index entries that could not be vouched for
};

class NvmeTier final : public Tier {
 public:
  // INVALID_ARGUMENT for bad options, a data path that is a folder, or a device smaller than
  // capacity_bytes; PERMISSION_DENIED/FAILED_PRECONDITION when the file cannot be opened;
  // RESOURCE_EXHAUSTED when it cannot be preallocated (no space, file size limit). A corrupt or
  // missing index is not an error: the tier starts cold (recovery().started_cold).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NvmeTier>> Open(
      const NvmeTierOptions& options, Env* env = Env::Default());
  ~NvmeTier() override;
  NvmeTier(const NvmeTier&) = delete;
  NvmeTier& operator=(const NvmeTier&) = delete;

  struct WriteOp {
    SlotId slot;
    BlockMeta meta;
    std::span<const std::byte> payload;
  };
  struct ReadOp {
    SlotId slot;
    std::span<std::byte> out;
  };
  // Runs exactly once with the write's outcome: OK once the block is durable, indexed and readable;
  // otherwise the slot holds no block. Refusals found up front (unaligned buffer with O_DIRECT,
  // ALREADY_EXISTS, a slot not writable, the old entry's delete failing) and CANCELLED after the
  // tier began shutting down run it inline, before WriteAsync returns; every other outcome runs it
  // on the pipeline's commit thread (which must not block on this tier's writes: no Write or
  // WriteBatch from a callback; WriteAsync, Read and Free are fine). Errors: RESOURCE_EXHAUSTED
  // (disk full, file size limit), INTERNAL (other I/O errors, payload write or fdatasync, naming
  // the offset), CANCELLED (the tier was destroyed before the write started).
  using WriteCallback = std::function<void(absl::Status)>;

  // Starts writing `op` and returns at once; the payload buffer must stay valid and unchanged
  // until `done` runs. Up to queue_depth payload writes are in flight continuously.
  void WriteAsync(const WriteOp& op, WriteCallback done);

  // Writes a batch through the pipeline and waits for all of it; reads a batch with up to
  // queue_depth requests in flight. One status per op; ops fail independently.
  std::vector<absl::Status> WriteBatch(std::span<const WriteOp> ops);
  std::vector<absl::StatusOr<BlockInfo>> ReadBatch(std::span<const ReadOp> ops);

  // The slot holding `key`; NOT_FOUND when no written block has it.
  [[nodiscard]] absl::StatusOr<SlotId> Lookup(const BlockId& key) const;
  // Every readable block (after a restart: what the index vouched for).
  [[nodiscard]] std::vector<IndexEntry> Blocks() const;

  [[nodiscard]] const NvmeRecovery& recovery() const { return recovery_; }
  [[nodiscard]] bool direct_io() const { return direct_; }
  [[nodiscard]] bool uses_io_uring() const;

  // The write pipeline, for tests that inject faults or hold syncs.
  [[nodiscard]] NvmeWritePipeline* TEST_pipeline() { return pipeline_.get(); }

  [[nodiscard]] const std::string& name() const override { return options_.name; }
  [[nodiscard]] TierKind kind() const override { return TierKind::kNvme; }
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
  // UNIMPLEMENTED: the NVMe tier is not memory.
  [[nodiscard]] absl::StatusOr<MemoryRegion> Memory(SlotId slot) override;
  [[nodiscard]] absl::Status Commit(SlotId slot, const BlockMeta& meta,
                                    std::uint64_t stored_bytes) override;
  [[nodiscard]] TierStats Stats() const override;

 private:
  struct KeySlot {
    SlotId slot;
    bool ready = false;  // false while its write is in flight
  };

  struct WriteJob;

  NvmeTier(const NvmeTierOptions& options, Env* env, int fd, bool direct,
           std::uint64_t usable_bytes);
  // Checks `op`, reserves its key and slot and computes its index entry; reports a replaced
  // block's key in `*replaced_keys`. On error nothing is reserved.
  [[nodiscard]] absl::Status PrepareWrite(const WriteOp& op, WriteJob* job,
                                          std::vector<BlockId>* replaced_keys);
  // Prepares and submits `ops`; dones[i] runs exactly once for ops[i].
  void StartWrites(std::span<const WriteOp> ops, std::span<WriteCallback> dones);
  // Pipeline commit thread: indexes a durable group, publishes it, runs its callbacks.
  void CommitGroup(std::vector<NvmeWritePipeline::Write*> group);
  // Undoes PrepareWrite after a failure.
  void AbortJob(const WriteJob& job);
  [[nodiscard]] absl::Status Recover();
  IoRing* AcquireRing();
  void ReleaseRing(IoRing* ring);
  // Removes `key` from the key map if it still maps to `slot`.
  void ForgetKey(const BlockId& key, SlotId slot);

  // Constant after construction.
  const NvmeTierOptions options_;
  const int fd_;
  const bool direct_;
  std::unique_ptr<NvmeIndex> index_;
  std::vector<std::unique_ptr<IoRing>> rings_;
  std::unique_ptr<NvmeWritePipeline> pipeline_;  // stopped first at destruction
  NvmeRecovery recovery_;

  SlotTable table_;

  mutable Mutex keys_mu_;
  absl::flat_hash_map<BlockId, KeySlot> keys_ ABSL_GUARDED_BY(keys_mu_);

  Mutex rings_mu_;
  CondVar ring_freed_;
  std::vector<IoRing*> free_rings_ ABSL_GUARDED_BY(rings_mu_);
};

}  // namespace cachesvc::tiers
