// tiers/nvme_write_pipeline.h: the NVMe tier's write engine: payload writes kept continuously in
// flight on one io_uring, made durable by group commit, and handed back in durable groups.
//
// One ring thread owns the ring. It keeps up to `queue_depth` payload writes in flight (O_DIRECT,
// a last partial page through a zero-padded bounce page, short transfers resubmitted). As writes
// complete it collects them; when no sync is in flight it issues one IORING_OP_FSYNC
// (IORING_FSYNC_DATASYNC) that covers exactly the writes that completed *before* it was issued
// (the ring does not order it against writes still in flight, so those wait for the next sync),
// and payload writes keep flowing while it runs. While more writes are queued than the lanes hold,
// a sync also waits for `sync_group` completions: on the virtio disk of docs/bench/tiers.md a
// flush per 64 KiB write at queue depth 1 costs a third of the throughput. With `dsync` every write
// carries RWF_DSYNC and is durable when it completes: no sync is issued. A sync's group (or a set
// of completed RWF_DSYNC writes) goes to a commit thread, which calls `commit` with it; the tier
// writes the group's index entries there in one RocksDB batch, publishes the blocks and runs its
// callbacks. So the device is never idle while a sync, an index write or a callback runs.
//
// Every submitted Write comes back through `commit` exactly once, with `result` 0 (durable) or a
// negative errno (its payload write failed, its sync failed, or -ECANCELED: Stop() found it not
// yet started). Stop() cancels writes not yet started, lets those in flight finish (their syncs
// included), delivers every group and joins both threads; Submit after Stop refuses.
//
// Where io_uring cannot be set up, the ring thread falls back to IoRing's pread/pwrite path: up to
// queue_depth writes at a time, one fdatasync for them, same contract, no overlap.
//
// Thread-safe: Submit from any thread; `commit` runs on the commit thread only.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "tiers/io_ring.h"

struct io_uring;

namespace cachesvc::tiers {

class NvmeWritePipeline {
 public:
  // One payload write. The submitter owns it and must keep it (and its buffer) alive until it
  // comes back through `commit`; the tier derives its own job type from it.
  struct Write {
    virtual ~Write() = default;
    const std::byte* buffer = nullptr;  // 4 KiB-aligned when the file is O_DIRECT
    std::uint64_t bytes = 0;
    std::uint64_t file_offset = 0;  // 4 KiB-aligned when the file is O_DIRECT
    // Filled in by the pipeline: 0 when durable, else -errno; `failed_at` names the stage.
    int result = 0;
    const char* failed_at = "";

   private:
    friend class NvmeWritePipeline;
    std::uint64_t body_bytes_ = 0;  // the aligned part written from `buffer` directly
    std::uint64_t body_done_ = 0;
    std::uint64_t tail_done_ = 0;  // bytes of the bounce page written (when there is a tail)
    unsigned parts_in_flight_ = 0;
    int lane_ = -1;
  };
  using CommitFn = std::function<void(std::vector<Write*> group)>;

  struct Options {
    unsigned queue_depth = 32;    // payload writes in flight
    bool direct = true;           // the file was opened with O_DIRECT
    bool dsync = false;           // RWF_DSYNC per write instead of a group fdatasync
    bool force_fallback = false;  // use the pread/pwrite path even where io_uring works (tests)
    // While more writes are queued behind the lanes, a sync waits until this many writes have
    // completed (fewer flushes for a stream of small writes); with nothing queued it goes at once.
    unsigned sync_group = 8;
  };

  // Starts both threads. INTERNAL when the bounce pages or an eventfd cannot be had.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<NvmeWritePipeline>> Start(
      int fd, const Options& options, CommitFn commit);
  ~NvmeWritePipeline();  // Stop()
  NvmeWritePipeline(const NvmeWritePipeline&) = delete;
  NvmeWritePipeline& operator=(const NvmeWritePipeline&) = delete;

  // Queues `writes` in order. False (nothing queued) once Stop() has begun.
  [[nodiscard]] bool Submit(std::span<Write* const> writes);
  // Cancels queued writes, finishes those in flight, delivers everything, joins. Idempotent.
  void Stop();

  [[nodiscard]] bool uses_io_uring() const { return ring_ != nullptr; }

  // Test hooks. The next `count` payload writes (syncs) fail with `-err` without reaching the
  // disk; while syncs are held no sync is issued (completed writes wait, not yet durable).
  void TEST_FailWrites(int err, unsigned count);
  void TEST_FailSyncs(int err, unsigned count);
  void TEST_HoldSyncs(bool hold);
  // Writes whose payload completed and that wait for (or are in) a sync.
  [[nodiscard]] std::size_t TEST_AwaitingSync();

 private:
  NvmeWritePipeline(int fd, const Options& options, CommitFn commit);
  void RingLoop();
  void FallbackLoop();
  void CommitLoop();
  // Ring thread: queues the SQEs of `w`'s remaining parts.
  void QueueParts(Write* w, bool body, bool tail);
  // Ring thread: hands `group` to the commit thread.
  void Deliver(std::vector<Write*> group);
  // Takes the oldest queued write. Returns it when it should run; otherwise (stopping: cancelled;
  // a TEST_FailWrites fault pending: failed) sets its result, appends it to `failed` and returns
  // nullptr. Shared by the io_uring and the fallback loops.
  Write* PopRunnable(bool stopping, std::vector<Write*>* failed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Wake();

  // Constant after construction.
  const int fd_;
  const Options options_;
  const CommitFn commit_;
  std::unique_ptr<io_uring> ring_;
  std::unique_ptr<IoRing> fallback_;
  std::byte* bounce_ = nullptr;  // queue_depth pages, one per lane
  int event_fd_ = -1;
  bool fixed_file_ = false;

  // Ring thread only.
  std::vector<Write*> lanes_;  // the write using each lane, null when free
  std::vector<int> free_lanes_;
  std::vector<Write*> completed_;  // payload done, not yet covered by a sync
  std::vector<Write*> syncing_;    // covered by the sync in flight
  bool sync_in_flight_ = false;
  bool event_armed_ = false;
  std::uint64_t event_value_ = 0;
  int sync_fault_pending_ = 0;  // TEST_FailSyncs: the result of the sync in flight

  Mutex mu_;
  CondVar changed_;
  std::deque<Write*> queued_ ABSL_GUARDED_BY(mu_);
  std::deque<std::vector<Write*>> durable_ ABSL_GUARDED_BY(mu_);  // for the commit thread
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool ring_done_ ABSL_GUARDED_BY(mu_) = false;
  bool wake_wanted_ ABSL_GUARDED_BY(mu_) = false;
  int fail_writes_err_ ABSL_GUARDED_BY(mu_) = 0;
  unsigned fail_writes_ ABSL_GUARDED_BY(mu_) = 0;
  int fail_syncs_err_ ABSL_GUARDED_BY(mu_) = 0;
  unsigned fail_syncs_ ABSL_GUARDED_BY(mu_) = 0;
  bool hold_syncs_ ABSL_GUARDED_BY(mu_) = false;
  std::size_t awaiting_sync_ ABSL_GUARDED_BY(mu_) = 0;

  std::thread ring_thread_;
  std::thread commit_thread_;
  bool stopped_ = false;  // Stop() joined (guarded by being called from the owner only)
};

}  // namespace cachesvc::tiers
