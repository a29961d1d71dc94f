// client/local_transport.h: the engine's side of the same-host data plane (docs/local.md,
// cachesvc/local_dataplane.h): one Unix-socket connection to the daemon, the host tier's arena
// mapped read-only, and the requests LOOKUP, LEASE and RELEASE.
//
// A load: Lease(keys) names where each block of the stored prefix lies in the arena; Read copies
// one block out and checks its XXH3-64 on the copy (DATA_LOSS when it does not match: a miss);
// Release gives the leases back without waiting for an answer. The daemon keeps a leased block
// in place until it is released, its lease times out, or this connection closes.
//
// Errors: UNAVAILABLE when the daemon cannot be reached or the connection broke (every later call
// fails the same way: connect again), DEADLINE_EXCEEDED when the daemon does not answer within
// the timeout (the connection is then closed too), PERMISSION_DENIED for a process of another
// user, and the daemon's own answers (NOT_FOUND for an unknown engine id, INVALID_ARGUMENT).
//
// Thread-safety: calls may come from several threads; one mutex serializes the round trips. Read
// takes no lock (it only copies out of the mapping).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "cachesvc/local_protocol.h"
#include "proto/block_key.h"

namespace cachesvc::client {

class LocalTransport {
 public:
  // Connects to `socket_path`, says HELLO with `engine_id` and maps the arena the daemon sends.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LocalTransport>> Connect(
      const std::string& socket_path, const std::string& engine_id,
      std::chrono::milliseconds timeout = std::chrono::milliseconds(10000));
  ~LocalTransport();
  LocalTransport(const LocalTransport&) = delete;
  LocalTransport& operator=(const LocalTransport&) = delete;

  // How many leading blocks of `keys` are stored.
  [[nodiscard]] absl::StatusOr<std::size_t> Lookup(std::span<const BlockKey> keys);
  // The keys the daemon derives for the full blocks of `tokens` (with the tenant's salt, as
  // LookupPrefix with tokens does), and how many leading ones are stored.
  struct TokenKeys {
    std::size_t cached_blocks = 0;
    std::vector<BlockKey> keys;
  };
  [[nodiscard]] absl::StatusOr<TokenKeys> Keys(std::span<const std::uint32_t> tokens);
  // Leases for the stored prefix of `keys`, in order (fewer than the keys when not all are).
  [[nodiscard]] absl::StatusOr<std::vector<local::Lease>> Lease(std::span<const BlockKey> keys);
  // Copies the leased block into `out` (at least lease.length bytes) and checks its checksum on
  // the copy. OUT_OF_RANGE for a short buffer, DATA_LOSS for a mismatch.
  [[nodiscard]] absl::Status Read(const local::Lease& lease, std::span<std::byte> out) const;
  // Only the copy, for callers that check the checksum themselves.
  [[nodiscard]] absl::Status Copy(const local::Lease& lease, std::span<std::byte> out) const;
  // Gives leases back; no answer is awaited (a failure to send closes the connection, and the
  // daemon then releases every lease of this connection).
  void Release(std::span<const std::uint64_t> lease_ids);

  // OK while usable; otherwise why not.
  [[nodiscard]] absl::Status health() const;
  std::uint64_t arena_bytes() const { return arena_bytes_; }

 private:
  LocalTransport() = default;
  // Sends `frame` and, unless `expect_reply` is false, reads one reply: its body after the code
  // and message, or the daemon's error.
  [[nodiscard]] absl::StatusOr<std::string> RoundTrip(const std::string& frame, bool expect_reply,
                                                      int* received_fd = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  [[nodiscard]] absl::Status BreakLocked(absl::Status why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const std::byte* arena_ = nullptr;  // constant after Connect
  std::uint64_t arena_bytes_ = 0;
  mutable Mutex mu_;
  int fd_ ABSL_GUARDED_BY(mu_) = -1;
  absl::Status broken_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc::client
