// tiers/mover.h: asynchronous block moves between tiers (promote, demote, copy, drop).
//
// A job copies one block from a source slot to a newly allocated slot of a destination tier,
// optionally encoding it (demotion to a compressed form) or decoding it (promotion) with a
// BlockTransform, and for kMove frees the source afterwards. The source slot is leased for the
// whole job, so it is never freed or rewritten under the transfer; the destination block becomes
// visible only when fully written (for NVMe: durable and indexed). A failed or cancelled job
// leaves the destination without the block (its slot is freed) and the source untouched.
//
// Jobs run on a small pool of threads from one bounded queue: Submit answers UNAVAILABLE when the
// queue is full (the caller retries or drops the work) rather than growing without bound. Each job
// is a MoveJob the caller can Wait on, poll, or Cancel; a callback, if given, runs once when the
// job ends (on a worker thread, or on the cancelling thread for a job still queued). State goes
// kQueued → kRunning → kDone | kFailed | kCancelled; the in-progress states are never mistaken for
// an outcome. A separate housekeeping thread calls ExpireLeases on the tiers listed in
// `sweep_tiers`, so dead clients' leases and allocations are reclaimed.
//
// Each worker owns two staging buffers of `staging_bytes` (4 KiB-aligned, allocated once), used
// when a side is not host-addressable memory (NVMe, HBM) or for transform output; memory-to-memory
// moves without a transform copy once, straight between the tiers' slots.
//
// Thread-safe. The tiers and transforms named in requests must outlive the jobs.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "tiers/block_transform.h"
#include "tiers/tier.h"

namespace cachesvc::tiers {

struct MoverOptions {
  unsigned threads = 2;
  std::size_t queue_capacity = 256;
  std::uint64_t staging_bytes = 64 << 20;  // largest block (raw or encoded) a job can carry
  std::chrono::milliseconds lease_ttl{60'000};
  std::chrono::milliseconds sweep_interval{1'000};
  std::vector<Tier*> sweep_tiers;  // tiers whose expired leases the mover reclaims

  // INVALID_ARGUMENT naming the field.
  [[nodiscard]] absl::Status Validate() const;
};

enum class MoveKind : std::uint8_t {
  kCopy,  // the source keeps its block
  kMove,  // the source slot is freed after the destination holds the block
  kDrop,  // free the source slot (no destination)
};

enum class TransformDirection : std::uint8_t { kNone, kEncode, kDecode };

struct MoveResult {
  absl::Status status;
  SlotId destination_slot;  // valid when status is OK and the job had a destination
  BlockInfo destination;    // the block as the destination stored it
};

struct MoveRequest {
  MoveKind kind = MoveKind::kCopy;
  Tier* source = nullptr;
  SlotId source_slot;
  Tier* destination = nullptr;  // null for kDrop
  const BlockTransform* transform = nullptr;
  TransformDirection direction = TransformDirection::kNone;
  std::function<void(const MoveResult&)> on_done;
};

enum class JobState : std::uint8_t { kQueued, kRunning, kDone, kFailed, kCancelled };
const char* JobStateName(JobState state);

class MoveJob {
 public:
  [[nodiscard]] JobState state() const;
  // Blocks until the job ends or `timeout` passes; nullopt-like: DEADLINE_EXCEEDED in status
  // (with state still kQueued/kRunning) when it has not ended.
  MoveResult Wait(std::chrono::milliseconds timeout = std::chrono::milliseconds::max());
  // Asks the job to stop. A queued job ends at once as kCancelled; a running one stops at its
  // next step (and undoes its destination write), or finishes if it is past its last step.
  void Cancel();

 private:
  friend class Mover;
  explicit MoveJob(MoveRequest request) : request_(std::move(request)) {}
  // Moves to a final state and runs the callback; false if the job had already ended.
  bool Finish(JobState state, MoveResult result);
  bool cancel_requested() const;
  bool TryStart();

  MoveRequest request_;
  mutable Mutex mu_;
  CondVar ended_;  // signalled when the job reaches a final state
  JobState state_ ABSL_GUARDED_BY(mu_) = JobState::kQueued;
  bool cancel_ ABSL_GUARDED_BY(mu_) = false;
  MoveResult result_ ABSL_GUARDED_BY(mu_);
};

class Mover {
 public:
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Mover>> Create(const MoverOptions& options);
  ~Mover();  // Shutdown()
  Mover(const Mover&) = delete;
  Mover& operator=(const Mover&) = delete;

  // Queues a job. INVALID_ARGUMENT for a malformed request (missing tier, a transform without a
  // direction or the other way round, a drop with a destination); UNAVAILABLE when the queue is
  // full; FAILED_PRECONDITION after Shutdown.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<MoveJob>> Submit(MoveRequest request);

  // Stops taking jobs, cancels the queued ones, waits for the running ones. Idempotent.
  void Shutdown();

  [[nodiscard]] std::size_t queued() const;

 private:
  explicit Mover(const MoverOptions& options) : options_(options) {}
  void WorkerLoop(unsigned index);
  void SweepLoop();
  MoveResult Run(MoveJob* job, std::byte* stage_a, std::byte* stage_b);

  const MoverOptions options_;
  std::vector<std::byte*> staging_;  // 2 per worker
  std::vector<std::thread> workers_;
  std::thread sweeper_;

  mutable Mutex mu_;
  CondVar changed_;  // a job was queued, or stopping_ was set
  std::deque<std::shared_ptr<MoveJob>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace cachesvc::tiers
