// tiers/io_ring.h: batched file I/O over one io_uring (liburing), for the NVMe tier.
//
// One IoRing serves one thread at a time (the NVMe tier keeps a small pool). It registers the
// data file (IOSQE_FIXED_FILE) and a pool of `queue_depth` 4 KiB bounce pages (READ/WRITE_FIXED),
// and Run() keeps up to `queue_depth` requests in flight until a whole batch is done, resubmitting
// short transfers. With O_DIRECT every request must start 4 KiB-aligned in memory and on disk; a
// length that is not a multiple of 4 KiB is split into the aligned body (straight to or from the
// caller's memory) and a last page that goes through a bounce page (zero-padded on writes, only
// the wanted bytes copied out on reads), so callers never need padded buffers.
//
// Where io_uring itself is unavailable (a kernel or seccomp policy refusing io_uring_setup) the
// ring falls back to pread/pwrite, one request at a time, and says so once in the log.
//
// Thread-compatible.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"

struct io_uring;

namespace cachesvc::tiers {

inline constexpr std::uint64_t kIoAlignment = 4096;

class IoRing {
 public:
  struct Op {
    bool write = false;
    std::byte* buffer = nullptr;  // 4 KiB-aligned when the file is O_DIRECT
    std::uint64_t bytes = 0;
    std::uint64_t file_offset = 0;  // 4 KiB-aligned when the file is O_DIRECT
    bool dsync = false;  // write: durable when it completes (RWF_DSYNC, FUA where the disk has it)
  };

  // `direct`: the file was opened with O_DIRECT. INTERNAL only when memory for the bounce pages
  // cannot be had; an io_uring that cannot be set up selects the fallback instead.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<IoRing>> Create(int fd, bool direct,
                                                                      unsigned queue_depth);
  // A ring that always uses the pread/pwrite fallback (tests of that path).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<IoRing>> TEST_CreateSynchronous(
      int fd, bool direct, unsigned queue_depth);
  ~IoRing();
  IoRing(const IoRing&) = delete;
  IoRing& operator=(const IoRing&) = delete;

  // Runs every op; results[i] is 0 on success or -errno (for example -ENOSPC, -EFBIG, -EIO).
  // A request that moves 0 bytes (end of file) counts as -EIO.
  void Run(std::span<const Op> ops, std::span<int> results);

  [[nodiscard]] bool uses_io_uring() const { return ring_ != nullptr; }
  [[nodiscard]] unsigned queue_depth() const { return queue_depth_; }

 private:
  IoRing(int fd, bool direct, unsigned queue_depth);
  void RunSynchronous(std::span<const Op> ops, std::span<int> results);

  const int fd_;
  const bool direct_;
  const unsigned queue_depth_;
  std::unique_ptr<io_uring> ring_;
  std::byte* bounce_ = nullptr;  // queue_depth_ pages, registered as fixed buffer 0
  bool fixed_file_ = false;
  bool fixed_buffers_ = false;
};

}  // namespace cachesvc::tiers
