#include "tiers/nvme_write_pipeline.h"

#include <liburing.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/errno_message.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {
namespace {

// user_data of the ring's requests: lane * 2 + (1 for the bounce-page tail), or one of these.
constexpr std::uint64_t kEventTag = ~0ull;
constexpr std::uint64_t kSyncTag = ~0ull - 1;

// The SQ is sized so that it never runs out (every lane's two parts, the sync and the wake-up
// read); should it anyway, submitting what is queued makes room.
io_uring_sqe* GetSqe(io_uring* ring) {
  io_uring_sqe* sqe = io_uring_get_sqe(ring);
  while (sqe == nullptr) {
    io_uring_submit(ring);
    sqe = io_uring_get_sqe(ring);
  }
  return sqe;
}

}  // namespace

absl::StatusOr<std::unique_ptr<NvmeWritePipeline>> NvmeWritePipeline::Start(int fd,
                                                                            const Options& options,
                                                                            CommitFn commit) {
  Options o = options;
  if (o.queue_depth == 0) o.queue_depth = 1;
  if (o.sync_group == 0) o.sync_group = 1;
  std::unique_ptr<NvmeWritePipeline> p(new NvmeWritePipeline(fd, o, std::move(commit)));
  p->bounce_ = static_cast<std::byte*>(
      std::aligned_alloc(kIoAlignment, static_cast<std::size_t>(o.queue_depth) * kIoAlignment));
  if (p->bounce_ == nullptr) {
    return absl::InternalError(
        fmt::format("cannot allocate {} bounce pages for the write pipeline", o.queue_depth));
  }
  // Blocking: io_uring then polls it (with O_NONBLOCK a read would just answer -EAGAIN).
  p->event_fd_ = ::eventfd(0, EFD_CLOEXEC);
  if (p->event_fd_ < 0) {
    return absl::InternalError(
        fmt::format("write pipeline: eventfd failed: {}", ErrnoMessage(errno)));
  }
  if (!o.force_fallback) {
    auto ring = std::make_unique<io_uring>();
    // Every lane can have its body and its tail in flight, plus one sync and the wake-up read.
    const int err = io_uring_queue_init(2 * o.queue_depth + 2, ring.get(), 0);
    if (err < 0) {
      spdlog::warn("write pipeline: io_uring_queue_init failed: {}; using pwrite and fdatasync",
                   ErrnoMessage(-err));
    } else {
      p->ring_ = std::move(ring);
      p->fixed_file_ = io_uring_register_files(p->ring_.get(), &fd, 1) == 0;
    }
  }
  if (p->ring_ == nullptr) {
    absl::StatusOr<std::unique_ptr<IoRing>> fallback =
        IoRing::TEST_CreateSynchronous(fd, o.direct, o.queue_depth);
    if (!fallback.ok()) return fallback.status();
    p->fallback_ = std::move(*fallback);
  }
  p->lanes_.assign(o.queue_depth, nullptr);
  for (unsigned lane = o.queue_depth; lane-- > 0;) p->free_lanes_.push_back(static_cast<int>(lane));
  NvmeWritePipeline* raw = p.get();
  p->ring_thread_ = std::thread([raw] {
    if (raw->ring_ != nullptr) {
      raw->RingLoop();
    } else {
      raw->FallbackLoop();
    }
  });
  p->commit_thread_ = std::thread([raw] { raw->CommitLoop(); });
  return p;
}

NvmeWritePipeline::NvmeWritePipeline(int fd, const Options& options, CommitFn commit)
    : fd_(fd), options_(options), commit_(std::move(commit)) {}

NvmeWritePipeline::~NvmeWritePipeline() {
  Stop();
  if (ring_ != nullptr) io_uring_queue_exit(ring_.get());
  if (event_fd_ >= 0) ::close(event_fd_);
  std::free(bounce_);
}

bool NvmeWritePipeline::Submit(std::span<Write* const> writes) {
  bool wake = false;
  {
    MutexLock lock(&mu_);
    if (stopping_) return false;
    for (Write* w : writes) {
      w->result = 0;
      w->failed_at = "";
      queued_.push_back(w);
    }
    wake = wake_wanted_;
    wake_wanted_ = false;
  }
  if (wake) Wake();
  if (fallback_ != nullptr) changed_.SignalAll();
  return true;
}

void NvmeWritePipeline::Stop() {
  if (stopped_ || !ring_thread_.joinable()) return;
  {
    MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  changed_.SignalAll();
  ring_thread_.join();
  commit_thread_.join();
  stopped_ = true;
}

void NvmeWritePipeline::Wake() {
  const std::uint64_t one = 1;
  // EAGAIN (the counter is saturated) still leaves the reader woken.
  (void)!::write(event_fd_, &one, sizeof(one));
}

void NvmeWritePipeline::Deliver(std::vector<Write*> group) {
  if (group.empty()) return;
  {
    MutexLock lock(&mu_);
    durable_.push_back(std::move(group));
  }
  changed_.SignalAll();
}

NvmeWritePipeline::Write* NvmeWritePipeline::PopRunnable(bool stopping,
                                                         std::vector<Write*>* failed) {
  Write* w = queued_.front();
  queued_.pop_front();
  if (stopping) {
    w->result = -ECANCELED;
    w->failed_at = "cancelled";
  } else if (fail_writes_ > 0) {
    --fail_writes_;
    w->result = -fail_writes_err_;
    w->failed_at = "payload write";
  } else {
    return w;
  }
  failed->push_back(w);
  return nullptr;
}

void NvmeWritePipeline::QueueParts(Write* w, bool body, bool tail) {
  io_uring* ring = ring_.get();
  const int file = fixed_file_ ? 0 : fd_;
  const auto lane = static_cast<std::uint64_t>(w->lane_);
  auto prep = [&](const std::byte* memory, std::uint64_t len, std::uint64_t offset,
                  std::uint64_t tag) {
    io_uring_sqe* sqe = GetSqe(ring);
    io_uring_prep_write(sqe, file, memory, static_cast<unsigned>(len), offset);
    if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
    if (options_.dsync) sqe->rw_flags = RWF_DSYNC;
    io_uring_sqe_set_data64(sqe, tag);
    ++w->parts_in_flight_;
  };
  if (body && w->body_done_ < w->body_bytes_) {
    prep(w->buffer + w->body_done_, w->body_bytes_ - w->body_done_, w->file_offset + w->body_done_,
         lane * 2);
  }
  if (tail && w->body_bytes_ < w->bytes && w->tail_done_ < kIoAlignment) {
    prep(bounce_ + lane * kIoAlignment + w->tail_done_, kIoAlignment - w->tail_done_,
         w->file_offset + w->body_bytes_ + w->tail_done_, lane * 2 + 1);
  }
}

void NvmeWritePipeline::RingLoop() {
  io_uring* ring = ring_.get();
  const int file = fixed_file_ ? 0 : fd_;
  std::vector<Write*> taken;
  std::vector<Write*> failed;
  std::vector<Write*> durable_now;
  for (;;) {
    bool stopping = false;
    bool hold = false;
    bool want_sync = false;
    int sync_fault = 0;
    {
      MutexLock lock(&mu_);
      stopping = stopping_;
      while (!queued_.empty() && (stopping || !free_lanes_.empty())) {
        if (Write* w = PopRunnable(stopping, &failed)) {
          w->lane_ = free_lanes_.back();
          free_lanes_.pop_back();
          lanes_[static_cast<std::size_t>(w->lane_)] = w;
          taken.push_back(w);
        }
      }
      hold = hold_syncs_ && !stopping;
      // A sync waits for `sync_group` completed writes only while more work is queued behind the
      // lanes; with nothing queued it goes at once, so a lone writer never waits on the policy.
      want_sync = !options_.dsync && !sync_in_flight_ && !completed_.empty() && !hold &&
                  (stopping || queued_.empty() || completed_.size() >= options_.sync_group);
      if (want_sync && fail_syncs_ > 0) {
        --fail_syncs_;
        sync_fault = -fail_syncs_err_;
      }
      // New work reaches a ring thread that has free lanes through the eventfd.
      wake_wanted_ = !free_lanes_.empty();
      awaiting_sync_ = completed_.size() + syncing_.size();
    }
    Deliver(std::move(failed));
    failed.clear();
    for (Write* w : taken) {
      w->body_bytes_ = w->bytes;
      if (options_.direct && w->bytes % kIoAlignment != 0) {
        w->body_bytes_ = w->bytes / kIoAlignment * kIoAlignment;
      }
      w->body_done_ = 0;
      w->tail_done_ = 0;
      w->parts_in_flight_ = 0;
      if (w->body_bytes_ < w->bytes) {
        // The last partial page goes through the lane's bounce page, zero-padded.
        std::byte* page = bounce_ + static_cast<std::size_t>(w->lane_) * kIoAlignment;
        const std::uint64_t tail = w->bytes - w->body_bytes_;
        std::memcpy(page, w->buffer + w->body_bytes_, tail);
        std::memset(page + tail, 0, kIoAlignment - tail);
      }
      QueueParts(w, true, true);
    }
    taken.clear();
    // One sync covers exactly the writes that completed before it is issued.
    if (want_sync) {
      syncing_.swap(completed_);
      sync_in_flight_ = true;
      if (sync_fault != 0) {
        io_uring_sqe* sqe = GetSqe(ring);
        io_uring_prep_nop(sqe);
        io_uring_sqe_set_data64(sqe, kSyncTag);
        sync_fault_pending_ = sync_fault;  // a failing sync that never reaches the disk
      } else {
        io_uring_sqe* sqe = GetSqe(ring);
        io_uring_prep_fsync(sqe, file, IORING_FSYNC_DATASYNC);
        if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
        io_uring_sqe_set_data64(sqe, kSyncTag);
      }
    }
    const bool idle = free_lanes_.size() == lanes_.size() && completed_.empty() && !sync_in_flight_;
    if (stopping && idle) {
      if (!event_armed_) break;
      Wake();  // completes the armed read, so no request outlives the loop
    } else if (!event_armed_) {
      io_uring_sqe* sqe = GetSqe(ring);
      io_uring_prep_read(sqe, event_fd_, &event_value_, sizeof(event_value_), 0);
      io_uring_sqe_set_data64(sqe, kEventTag);
      event_armed_ = true;
    }
    const int submitted = io_uring_submit_and_wait(ring, 1);
    if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
      // Requests already in flight still complete; retry rather than abandon their buffers.
      spdlog::error("write pipeline: io_uring_submit_and_wait failed: {}",
                    ErrnoMessage(-submitted));
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      const std::uint64_t tag = io_uring_cqe_get_data64(cqe);
      const int res = cqe->res;
      if (tag == kEventTag) {
        event_armed_ = false;
        continue;
      }
      if (tag == kSyncTag) {
        sync_in_flight_ = false;
        int err = res < 0 ? res : 0;
        if (sync_fault_pending_ != 0) {
          err = sync_fault_pending_;
          sync_fault_pending_ = 0;
        }
        for (Write* w : syncing_) {
          if (err != 0) {
            w->result = err;
            w->failed_at = "fdatasync";
          }
        }
        std::vector<Write*> group;
        group.swap(syncing_);
        Deliver(std::move(group));
        continue;
      }
      const bool tail = (tag & 1) != 0;
      Write* w = lanes_[static_cast<std::size_t>(tag / 2)];
      --w->parts_in_flight_;
      if (res == -EAGAIN || res == -EINTR) {
        if (w->result == 0) QueueParts(w, !tail, tail);
      } else if (res <= 0) {
        if (w->result == 0) {
          w->result = res < 0 ? res : -EIO;
          w->failed_at = "payload write";
        }
      } else {
        (tail ? w->tail_done_ : w->body_done_) += static_cast<std::uint64_t>(res);
        if (w->result == 0) QueueParts(w, !tail, tail);  // a short transfer's remainder
      }
      if (w->parts_in_flight_ != 0) continue;
      lanes_[static_cast<std::size_t>(w->lane_)] = nullptr;
      free_lanes_.push_back(w->lane_);
      w->lane_ = -1;
      if (w->result != 0) {
        failed.push_back(w);
      } else if (options_.dsync) {
        durable_now.push_back(w);  // RWF_DSYNC: durable on completion
      } else {
        completed_.push_back(w);
      }
    }
    io_uring_cq_advance(ring, seen);
    Deliver(std::move(failed));
    failed.clear();
    Deliver(std::move(durable_now));
    durable_now.clear();
  }
  {
    MutexLock lock(&mu_);
    ring_done_ = true;
    awaiting_sync_ = 0;
  }
  changed_.SignalAll();
}

void NvmeWritePipeline::FallbackLoop() {
  std::vector<IoRing::Op> ops;
  std::vector<int> results;
  for (;;) {
    std::vector<Write*> batch;
    std::vector<Write*> failed;
    bool stop = false;
    {
      MutexLock lock(&mu_);
      changed_.Wait(
          &mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stopping_ || !queued_.empty(); });
      stop = stopping_;
      while (!queued_.empty() && (stop || batch.size() < options_.queue_depth)) {
        if (Write* w = PopRunnable(stop, &failed)) batch.push_back(w);
      }
    }
    Deliver(std::move(failed));
    failed.clear();
    if (stop) break;
    if (batch.empty()) continue;
    ops.clear();
    for (Write* w : batch) {
      ops.push_back(IoRing::Op{true, const_cast<std::byte*>(w->buffer), w->bytes, w->file_offset,
                               options_.dsync});
    }
    results.assign(batch.size(), 0);
    fallback_->Run(ops, results);
    std::vector<Write*> written;
    for (std::size_t i = 0; i < batch.size(); ++i) {
      if (results[i] != 0) {
        batch[i]->result = results[i];
        batch[i]->failed_at = "payload write";
        failed.push_back(batch[i]);
      } else {
        written.push_back(batch[i]);
      }
    }
    Deliver(std::move(failed));
    if (!options_.dsync && !written.empty()) {
      int err = 0;
      {
        MutexLock lock(&mu_);
        awaiting_sync_ = written.size();
        changed_.Wait(
            &mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return !hold_syncs_ || stopping_; });
        if (fail_syncs_ > 0) {
          --fail_syncs_;
          err = -fail_syncs_err_;
        }
      }
      if (err == 0 && ::fdatasync(fd_) != 0) err = -errno;
      for (Write* w : written) {
        if (err != 0) {
          w->result = err;
          w->failed_at = "fdatasync";
        }
      }
      MutexLock lock(&mu_);
      awaiting_sync_ = 0;
    }
    Deliver(std::move(written));
  }
  {
    MutexLock lock(&mu_);
    ring_done_ = true;
  }
  changed_.SignalAll();
}

void NvmeWritePipeline::CommitLoop() {
  for (;;) {
    std::vector<Write*> group;
    {
      MutexLock lock(&mu_);
      changed_.Wait(&mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return !durable_.empty() || ring_done_;
      });
      if (durable_.empty()) break;  // ring_done_ and everything delivered
      group = std::move(durable_.front());
      durable_.pop_front();
    }
    commit_(std::move(group));
  }
}

void NvmeWritePipeline::TEST_FailWrites(int err, unsigned count) {
  MutexLock lock(&mu_);
  fail_writes_err_ = err;
  fail_writes_ = count;
}

void NvmeWritePipeline::TEST_FailSyncs(int err, unsigned count) {
  MutexLock lock(&mu_);
  fail_syncs_err_ = err;
  fail_syncs_ = count;
}

void NvmeWritePipeline::TEST_HoldSyncs(bool hold) {
  {
    MutexLock lock(&mu_);
    hold_syncs_ = hold;
  }
  Wake();
  changed_.SignalAll();
}

std::size_t NvmeWritePipeline::TEST_AwaitingSync() {
  MutexLock lock(&mu_);
  return awaiting_sync_;
}

}  // namespace cachesvc::tiers
