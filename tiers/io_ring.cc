#include "tiers/io_ring.h"

#include <liburing.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "base/errno_message.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {
namespace {

// One request on the ring: all of an op, its aligned body, or its last page through a bounce.
struct Request {
  std::size_t op = 0;
  bool write = false;
  bool dsync = false;
  std::byte* buffer = nullptr;  // caller memory, or null when `bounce` is used
  std::uint64_t bytes = 0;
  std::uint64_t file_offset = 0;
  std::uint64_t done = 0;
  std::uint64_t tail_bytes = 0;      // for a bounce request: the caller's bytes in that page
  std::byte* tail_source = nullptr;  // the caller's memory the bounce page stands for
  int bounce = -1;                   // bounce page index, assigned at submission
  bool uses_bounce = false;
};

}  // namespace

absl::StatusOr<std::unique_ptr<IoRing>> IoRing::TEST_CreateSynchronous(int fd, bool direct,
                                                                       unsigned queue_depth) {
  auto ring = Create(fd, direct, queue_depth);
  if (ring.ok() && (*ring)->ring_ != nullptr) {
    io_uring_queue_exit((*ring)->ring_.get());
    (*ring)->ring_.reset();
  }
  return ring;
}

absl::StatusOr<std::unique_ptr<IoRing>> IoRing::Create(int fd, bool direct, unsigned queue_depth) {
  if (queue_depth == 0) queue_depth = 1;
  std::unique_ptr<IoRing> ring(new IoRing(fd, direct, queue_depth));
  ring->bounce_ = static_cast<std::byte*>(
      std::aligned_alloc(kIoAlignment, static_cast<std::size_t>(queue_depth) * kIoAlignment));
  if (ring->bounce_ == nullptr) {
    return absl::InternalError(
        fmt::format("cannot allocate {} bounce pages for the I/O ring", queue_depth));
  }
  auto uring = std::make_unique<io_uring>();
  const int err = io_uring_queue_init(queue_depth, uring.get(), 0);
  if (err < 0) {
    spdlog::warn("io_uring_queue_init(depth {}) failed: {}; falling back to pread/pwrite",
                 queue_depth, ErrnoMessage(-err));
    return ring;
  }
  ring->ring_ = std::move(uring);
  ring->fixed_file_ = io_uring_register_files(ring->ring_.get(), &fd, 1) == 0;
  iovec iov{ring->bounce_, static_cast<std::size_t>(queue_depth) * kIoAlignment};
  ring->fixed_buffers_ = io_uring_register_buffers(ring->ring_.get(), &iov, 1) == 0;
  return ring;
}

IoRing::IoRing(int fd, bool direct, unsigned queue_depth)
    : fd_(fd), direct_(direct), queue_depth_(queue_depth) {}

IoRing::~IoRing() {
  if (ring_ != nullptr) io_uring_queue_exit(ring_.get());
  std::free(bounce_);
}

void IoRing::RunSynchronous(std::span<const Op> ops, std::span<int> results) {
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    results[i] = 0;
    std::uint64_t body = op.bytes;
    if (direct_ && op.bytes % kIoAlignment != 0) body = op.bytes / kIoAlignment * kIoAlignment;
    std::uint64_t done = 0;
    while (done < body) {
      iovec iov{op.buffer + done, body - done};
      const ssize_t n = op.write
                            ? ::pwritev2(fd_, &iov, 1, static_cast<off_t>(op.file_offset + done),
                                         op.dsync ? RWF_DSYNC : 0)
                            : ::pread(fd_, op.buffer + done, body - done,
                                      static_cast<off_t>(op.file_offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        results[i] = n < 0 ? -errno : -EIO;
        break;
      }
      done += static_cast<std::uint64_t>(n);
    }
    if (results[i] != 0 || body == op.bytes) continue;
    const std::uint64_t tail = op.bytes - body;
    if (op.write) {
      std::memcpy(bounce_, op.buffer + body, tail);
      std::memset(bounce_ + tail, 0, kIoAlignment - tail);
    }
    const ssize_t n =
        op.write ? ::pwrite(fd_, bounce_, kIoAlignment, static_cast<off_t>(op.file_offset + body))
                 : ::pread(fd_, bounce_, kIoAlignment, static_cast<off_t>(op.file_offset + body));
    if (n != static_cast<ssize_t>(kIoAlignment)) {
      results[i] = n < 0 ? -errno : -EIO;
    } else if (!op.write) {
      std::memcpy(op.buffer + body, bounce_, tail);
    }
  }
}

void IoRing::Run(std::span<const Op> ops, std::span<int> results) {
  if (ring_ == nullptr) {
    RunSynchronous(ops, results);
    return;
  }
  std::vector<Request> requests;
  requests.reserve(ops.size() * 2);
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const Op& op = ops[i];
    results[i] = 0;
    std::uint64_t body = op.bytes;
    if (direct_ && op.bytes % kIoAlignment != 0) body = op.bytes / kIoAlignment * kIoAlignment;
    if (body > 0) {
      requests.push_back(Request{i, op.write, op.dsync, op.buffer, body, op.file_offset});
    }
    if (body < op.bytes) {
      Request tail{i, op.write, op.dsync, nullptr, kIoAlignment, op.file_offset + body};
      tail.uses_bounce = true;
      tail.tail_bytes = op.bytes - body;
      tail.tail_source = op.buffer + body;
      requests.push_back(tail);
    }
  }
  std::vector<int> free_bounce;
  free_bounce.reserve(queue_depth_);
  for (unsigned b = queue_depth_; b-- > 0;) free_bounce.push_back(static_cast<int>(b));
  std::vector<std::size_t> retry;
  std::size_t next = 0;
  unsigned inflight = 0;
  io_uring* ring = ring_.get();

  auto fail = [&](Request& r, int err) {
    if (results[r.op] == 0) results[r.op] = err;
    if (r.bounce >= 0) {
      free_bounce.push_back(r.bounce);
      r.bounce = -1;
    }
  };

  while (next < requests.size() || !retry.empty() || inflight > 0) {
    while (inflight < queue_depth_ && (!retry.empty() || next < requests.size())) {
      const bool from_retry = !retry.empty();
      const std::size_t index = from_retry ? retry.back() : next;
      Request& r = requests[index];
      if (r.uses_bounce && r.bounce < 0) {
        if (free_bounce.empty()) break;
        r.bounce = free_bounce.back();
        free_bounce.pop_back();
        if (r.write) {
          std::byte* page = bounce_ + static_cast<std::size_t>(r.bounce) * kIoAlignment;
          std::memcpy(page, r.tail_source, r.tail_bytes);
          std::memset(page + r.tail_bytes, 0, kIoAlignment - r.tail_bytes);
        }
      }
      io_uring_sqe* sqe = io_uring_get_sqe(ring);
      if (sqe == nullptr) break;
      if (from_retry) {
        retry.pop_back();
      } else {
        ++next;
      }
      std::byte* memory =
          r.uses_bounce ? bounce_ + static_cast<std::size_t>(r.bounce) * kIoAlignment : r.buffer;
      memory += r.done;
      const auto len = static_cast<unsigned>(r.bytes - r.done);
      const std::uint64_t off = r.file_offset + r.done;
      const int file = fixed_file_ ? 0 : fd_;
      if (r.uses_bounce && fixed_buffers_) {
        if (r.write) {
          io_uring_prep_write_fixed(sqe, file, memory, len, off, 0);
        } else {
          io_uring_prep_read_fixed(sqe, file, memory, len, off, 0);
        }
      } else if (r.write) {
        io_uring_prep_write(sqe, file, memory, len, off);
      } else {
        io_uring_prep_read(sqe, file, memory, len, off);
      }
      if (fixed_file_) sqe->flags |= IOSQE_FIXED_FILE;
      if (r.write && r.dsync) sqe->rw_flags = RWF_DSYNC;
      io_uring_sqe_set_data64(sqe, index);
      ++inflight;
    }
    if (inflight == 0) break;  // nothing could be queued (cannot happen with free bounces)
    const int submitted = io_uring_submit_and_wait(ring, 1);
    if (submitted < 0 && submitted != -EINTR && submitted != -EAGAIN && submitted != -EBUSY) {
      // The ring itself failed: every unfinished request fails with its error.
      spdlog::error("io_uring_submit_and_wait failed: {}", ErrnoMessage(-submitted));
      for (Request& r : requests) {
        if (r.done < r.bytes) fail(r, submitted);
      }
      return;
    }
    io_uring_cqe* cqe = nullptr;
    unsigned head = 0;
    unsigned seen = 0;
    io_uring_for_each_cqe(ring, head, cqe) {
      ++seen;
      --inflight;
      Request& r = requests[static_cast<std::size_t>(io_uring_cqe_get_data64(cqe))];
      const int res = cqe->res;
      if (res == -EAGAIN || res == -EINTR) {
        retry.push_back(static_cast<std::size_t>(&r - requests.data()));
      } else if (res < 0) {
        fail(r, res);
      } else if (res == 0) {
        fail(r, -EIO);
      } else {
        r.done += static_cast<std::uint64_t>(res);
        if (r.done < r.bytes) {
          retry.push_back(static_cast<std::size_t>(&r - requests.data()));
        } else if (r.uses_bounce) {
          if (!r.write) {
            std::memcpy(r.tail_source, bounce_ + static_cast<std::size_t>(r.bounce) * kIoAlignment,
                        r.tail_bytes);
          }
          free_bounce.push_back(r.bounce);
          r.bounce = -1;
        }
      }
    }
    io_uring_cq_advance(ring, seen);
  }
}

}  // namespace cachesvc::tiers
