#include "tiers/mover.h"

#include <cstdlib>
#include <utility>

#include "fmt/format.h"
#include "spdlog/spdlog.h"
#include "tiers/io_ring.h"

namespace cachesvc::tiers {
namespace {

bool Final(JobState s) {
  return s == JobState::kDone || s == JobState::kFailed || s == JobState::kCancelled;
}

MoveResult Failed(absl::Status status) { return MoveResult{std::move(status), {}, {}}; }

}  // namespace

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::kQueued:
      return "queued";
    case JobState::kRunning:
      return "running";
    case JobState::kDone:
      return "done";
    case JobState::kFailed:
      return "failed";
    case JobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

absl::Status MoverOptions::Validate() const {
  if (threads == 0 || threads > 64) {
    return absl::InvalidArgumentError(fmt::format("mover threads {} must be 1..64", threads));
  }
  if (queue_capacity == 0) {
    return absl::InvalidArgumentError("mover queue_capacity must be at least 1");
  }
  if (staging_bytes < kIoAlignment || staging_bytes % kIoAlignment != 0) {
    return absl::InvalidArgumentError(fmt::format(
        "mover staging_bytes {} must be a positive multiple of {}", staging_bytes, kIoAlignment));
  }
  if (lease_ttl.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("mover lease_ttl {} ms must be positive", lease_ttl.count()));
  }
  if (sweep_interval.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("mover sweep_interval {} ms must be positive", sweep_interval.count()));
  }
  for (std::size_t i = 0; i < sweep_tiers.size(); ++i) {
    if (sweep_tiers[i] == nullptr) {
      return absl::InvalidArgumentError(fmt::format("mover sweep_tiers[{}] is null", i));
    }
  }
  return absl::OkStatus();
}

JobState MoveJob::state() const {
  MutexLock lock(&mu_);
  return state_;
}

MoveResult MoveJob::Wait(std::chrono::milliseconds timeout) {
  MutexLock lock(&mu_);
  const auto done = [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return Final(state_); };
  if (timeout == std::chrono::milliseconds::max()) {
    ended_.Wait(&mu_, done);
  } else if (!ended_.WaitFor(&mu_, timeout, done)) {
    return Failed(absl::DeadlineExceededError(
        fmt::format("move job still {} after {} ms", JobStateName(state_), timeout.count())));
  }
  return result_;
}

void MoveJob::Cancel() {
  bool cancel_now = false;
  {
    MutexLock lock(&mu_);
    cancel_ = true;
    cancel_now = state_ == JobState::kQueued;
  }
  if (cancel_now) Finish(JobState::kCancelled, Failed(absl::CancelledError("move cancelled")));
}

bool MoveJob::cancel_requested() const {
  MutexLock lock(&mu_);
  return cancel_;
}

bool MoveJob::TryStart() {
  MutexLock lock(&mu_);
  if (state_ != JobState::kQueued) return false;
  state_ = JobState::kRunning;
  return true;
}

bool MoveJob::Finish(JobState state, MoveResult result) {
  {
    MutexLock lock(&mu_);
    if (Final(state_)) return false;
    state_ = state;
    result_ = result;
  }
  ended_.SignalAll();
  if (request_.on_done) request_.on_done(result);
  return true;
}

absl::StatusOr<std::unique_ptr<Mover>> Mover::Create(const MoverOptions& options) {
  if (absl::Status s = options.Validate(); !s.ok()) return s;
  std::unique_ptr<Mover> mover(new Mover(options));
  for (unsigned i = 0; i < 2 * options.threads; ++i) {
    auto* buffer = static_cast<std::byte*>(std::aligned_alloc(kIoAlignment, options.staging_bytes));
    if (buffer == nullptr) {
      for (std::byte* b : mover->staging_) std::free(b);
      mover->staging_.clear();
      return absl::ResourceExhaustedError(
          fmt::format("mover: cannot allocate staging buffers of {} bytes", options.staging_bytes));
    }
    mover->staging_.push_back(buffer);
  }
  for (unsigned i = 0; i < options.threads; ++i) {
    mover->workers_.emplace_back([m = mover.get(), i] { m->WorkerLoop(i); });
  }
  mover->sweeper_ = std::thread([m = mover.get()] { m->SweepLoop(); });
  return mover;
}

Mover::~Mover() {
  Shutdown();
  for (std::byte* b : staging_) std::free(b);
}

absl::StatusOr<std::shared_ptr<MoveJob>> Mover::Submit(MoveRequest request) {
  if (request.source == nullptr) return absl::InvalidArgumentError("move request has no source");
  if (request.kind == MoveKind::kDrop) {
    if (request.destination != nullptr || request.transform != nullptr) {
      return absl::InvalidArgumentError("a drop has no destination and no transform");
    }
  } else if (request.destination == nullptr) {
    return absl::InvalidArgumentError("a copy or move request needs a destination tier");
  } else if (request.destination == request.source) {
    return absl::InvalidArgumentError(
        fmt::format("move request copies tier '{}' onto itself", request.source->name()));
  }
  if ((request.transform == nullptr) != (request.direction == TransformDirection::kNone)) {
    return absl::InvalidArgumentError(
        "a transform needs a direction (encode or decode), and a direction needs a transform");
  }
  std::shared_ptr<MoveJob> job(new MoveJob(std::move(request)));
  MutexLock lock(&mu_);
  if (stopping_) return absl::FailedPreconditionError("mover is shut down");
  if (queue_.size() >= options_.queue_capacity) {
    return absl::UnavailableError(
        fmt::format("mover queue is full ({} jobs); retry later", options_.queue_capacity));
  }
  queue_.push_back(job);
  changed_.SignalAll();
  return job;
}

std::size_t Mover::queued() const {
  MutexLock lock(&mu_);
  return queue_.size();
}

void Mover::Shutdown() {
  std::deque<std::shared_ptr<MoveJob>> dropped;
  {
    MutexLock lock(&mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
    dropped.swap(queue_);
  }
  changed_.SignalAll();
  for (auto& job : dropped) {
    job->Finish(JobState::kCancelled, Failed(absl::CancelledError("mover shut down")));
  }
  for (std::thread& t : workers_) t.join();
  workers_.clear();
  if (sweeper_.joinable()) sweeper_.join();
}

void Mover::WorkerLoop(unsigned index) {
  std::byte* stage_a = staging_[2 * index];
  std::byte* stage_b = staging_[2 * index + 1];
  for (;;) {
    std::shared_ptr<MoveJob> job;
    {
      MutexLock lock(&mu_);
      changed_.Wait(
          &mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    if (!job->TryStart()) continue;  // cancelled while queued
    MoveResult result = Run(job.get(), stage_a, stage_b);
    JobState state = JobState::kDone;
    if (absl::IsCancelled(result.status)) {
      state = JobState::kCancelled;
    } else if (!result.status.ok()) {
      state = JobState::kFailed;
    }
    job->Finish(state, std::move(result));
  }
}

void Mover::SweepLoop() {
  for (;;) {
    {
      MutexLock lock(&mu_);
      if (changed_.WaitFor(&mu_, options_.sweep_interval,
                           [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stopping_; })) {
        return;
      }
    }
    for (Tier* tier : options_.sweep_tiers) tier->ExpireLeases();
  }
}

MoveResult Mover::Run(MoveJob* job, std::byte* stage_a, std::byte* stage_b) {
  const MoveRequest& r = job->request_;
  Tier* source = r.source;
  if (r.kind == MoveKind::kDrop) return Failed(source->Free(r.source_slot));
  const auto cancelled = [] { return Failed(absl::CancelledError("move cancelled")); };
  if (job->cancel_requested()) return cancelled();

  absl::StatusOr<LeaseId> lease = source->AcquireLease(r.source_slot, options_.lease_ttl);
  if (!lease.ok()) return Failed(lease.status());
  // The lease may have expired under a very slow job; NOT_FOUND on release is then expected.
  struct LeaseGuard {
    Tier* tier;
    LeaseId id;
    bool held = true;
    void Release() {
      if (held) ReleaseLeaseOrWarn(*tier, id, "mover job done");
      held = false;
    }
    ~LeaseGuard() { Release(); }
  } guard{source, *lease};

  absl::StatusOr<BlockInfo> info = source->Info(r.source_slot);
  if (!info.ok()) return Failed(info.status());
  const std::uint64_t stored = info->stored_bytes;
  BlockMeta meta = info->meta;
  std::uint64_t out_bytes = stored;
  if (r.direction == TransformDirection::kEncode) {
    if (meta.codec != kernels::CodecId::kRaw) {
      return Failed(absl::FailedPreconditionError(
          fmt::format("block {} is already {}-encoded; only raw blocks are encoded",
                      BlockIdHex(meta.key), kernels::CodecName(meta.codec))));
    }
    out_bytes = r.transform->MaxEncodedBytes(stored);
  } else if (r.direction == TransformDirection::kDecode) {
    if (meta.codec != r.transform->codec()) {
      return Failed(absl::FailedPreconditionError(
          fmt::format("block {} is {}-encoded; the transform decodes {}", BlockIdHex(meta.key),
                      kernels::CodecName(meta.codec), kernels::CodecName(r.transform->codec()))));
    }
    out_bytes = meta.raw_bytes;
  }
  if (stored > options_.staging_bytes || out_bytes > options_.staging_bytes) {
    return Failed(absl::InvalidArgumentError(
        fmt::format("block {} ({} bytes, {} after transform) exceeds the mover's staging_bytes {}",
                    BlockIdHex(meta.key), stored, out_bytes, options_.staging_bytes)));
  }

  // Source bytes: straight from host memory when the tier is memory, else through staging.
  const std::byte* src = nullptr;
  absl::StatusOr<MemoryRegion> region = source->Memory(r.source_slot);
  if (region.ok() && !region->device_memory) {
    src = region->address;
  } else {
    absl::StatusOr<BlockInfo> read =
        source->Read(r.source_slot, std::span<std::byte>(stage_a, options_.staging_bytes));
    if (!read.ok()) return Failed(read.status());
    src = stage_a;
  }
  if (job->cancel_requested()) return cancelled();

  std::span<const std::byte> data(src, stored);
  if (r.direction == TransformDirection::kEncode) {
    absl::StatusOr<std::uint64_t> n =
        r.transform->Encode(data, std::span<std::byte>(stage_b, out_bytes));
    if (!n.ok()) return Failed(n.status());
    data = std::span<const std::byte>(stage_b, *n);
    meta.codec = r.transform->codec();
    meta.raw_bytes = stored;
  } else if (r.direction == TransformDirection::kDecode) {
    if (absl::Status s = r.transform->Decode(data, std::span<std::byte>(stage_b, out_bytes));
        !s.ok()) {
      return Failed(s);
    }
    data = std::span<const std::byte>(stage_b, out_bytes);
    meta.codec = kernels::CodecId::kRaw;
    meta.raw_bytes = out_bytes;
  }
  if (job->cancel_requested()) return cancelled();

  absl::StatusOr<SlotId> dst = r.destination->Allocate(data.size());
  if (!dst.ok()) return Failed(dst.status());
  if (absl::Status s = r.destination->Write(*dst, meta, data); !s.ok()) {
    FreeOrWarn(*r.destination, *dst, "mover: destination write failed");
    return Failed(s);
  }
  if (job->cancel_requested()) {
    (void)r.destination->Free(*dst);
    return cancelled();
  }
  absl::StatusOr<BlockInfo> stored_info = r.destination->Info(*dst);
  guard.Release();
  if (r.kind == MoveKind::kMove) {
    // INVALID_ARGUMENT here means someone freed the source meanwhile: the goal is reached.
    if (absl::Status s = source->Free(r.source_slot); !s.ok() && !absl::IsInvalidArgument(s)) {
      spdlog::warn(
          "mover: block {} copied to tier '{}' but its source in tier '{}' was not "
          "freed: {}",
          BlockIdHex(meta.key), r.destination->name(), source->name(), std::string(s.message()));
    }
  }
  return MoveResult{absl::OkStatus(), *dst, stored_info.ok() ? *stored_info : BlockInfo{}};
}

}  // namespace cachesvc::tiers
