// cachesvc/local_dataplane.h: the same-host fast path (docs/local.md). Engines on the daemon's
// host, running as the daemon's user, connect to a Unix stream socket, name their engine id (the
// capability RegisterEngine handed out over authenticated gRPC) and receive the host tier's arena
// as a read-only file descriptor, which they map. From then on a load is one LEASE round trip on
// the socket, a memcpy out of the mapping with the checksum computed on the copy, and a RELEASE
// that needs no answer; a prefix lookup is one LOOKUP round trip. Neither touches gRPC or UCX.
//
// Who may connect: peers whose uid (SO_PEERCRED) is the daemon's or root's, i.e. processes that
// could already read the daemon's memory (ptrace, process_vm_readv, which is what UCX's cma
// transport does). The mapping shows such an engine every block in host memory, other tenants'
// too; what it grants is a lease's bytes staying in place while leased, not secrecy
// (docs/local.md, "What it protects").
//
// One thread serves every connection (poll); requests are short calls into the BlockStore. A
// connection's leases are released when it closes, so a killed engine holds nothing.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "absl/status/statusor.h"
#include "cachesvc/local_protocol.h"
#include "cachesvc/rpc_metrics.h"

namespace cachesvc {

class BlockStore;

// What an engine id names: its tenant, that tenant's key salt, and the layout's fingerprint and
// block size (for keys derived from tokens).
struct LocalEngine {
  std::string tenant;
  std::string salt;
  std::uint64_t fingerprint = 0;
  std::uint32_t block_tokens = 0;
};
// NOT_FOUND for an id no RegisterEngine handed out.
using LocalEngineResolver = std::function<absl::StatusOr<LocalEngine>(std::string_view engine_id)>;

struct LocalOptions {
  std::string socket_path;  // created at Start (a stale socket file is replaced), removed at stop
  std::size_t max_connections = 1024;
  // After each request the serving thread keeps polling, without sleeping, until this long passes
  // without another: an engine loading back to back then never waits for the thread to wake
  // (35 -> 9 us per LEASE here), at the cost of a core while it loads. 0: sleep at once.
  std::chrono::microseconds busy_poll{0};
};

// The arena a LocalDataPlane shares: the host tier's memory, and the file that backs it.
struct LocalArena {
  int fd = -1;  // read-write memfd (not owned); a read-only descriptor of it is what peers get
  const std::byte* base = nullptr;
  std::uint64_t bytes = 0;
};

class LocalDataPlane {
 public:
  // Binds the socket (mode 0600) and starts the thread. INVALID_ARGUMENT for an empty or too long
  // path (a Unix socket path holds at most 107 bytes); UNAVAILABLE when another process is
  // listening there or the socket cannot be created.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<LocalDataPlane>> Start(
      const LocalOptions& options, const LocalArena& arena, BlockStore* store,
      LocalEngineResolver resolver, metrics::Registry* metrics);

  // Stops the thread, closes every connection (releasing its leases) and removes the socket file.
  ~LocalDataPlane();
  LocalDataPlane(const LocalDataPlane&) = delete;
  LocalDataPlane& operator=(const LocalDataPlane&) = delete;

  const std::string& path() const { return options_.socket_path; }
  // Connections open now; for tests and status pages.
  std::size_t connections() const { return connections_.load(std::memory_order_relaxed); }

 private:
  struct Connection;

  LocalDataPlane(LocalOptions options, const LocalArena& arena, BlockStore* store,
                 LocalEngineResolver resolver, metrics::Registry* metrics)
      : options_(std::move(options)),
        arena_(arena),
        store_(store),
        resolver_(std::move(resolver)),
        metrics_(metrics) {}

  [[nodiscard]] absl::Status Init();
  void Loop();
  // Handles every whole frame in the connection's buffer; false when the connection must close.
  bool HandleFrames(Connection& c);
  // One request body; returns the reply frame ("" for none) and, for HELLO, sets *send_fd.
  // LOOKUP, KEYS and LEASE are answered here; HELLO and RELEASE by their own functions.
  std::string Handle(Connection& c, std::string_view body, bool* send_fd);
  std::string Hello(Connection& c, local::Reader& r, std::chrono::steady_clock::time_point start,
                    bool* send_fd);
  void Release(Connection& c, local::Reader& r, std::chrono::steady_clock::time_point start);
  bool Send(Connection& c, const std::string& frame, bool send_fd);
  void Close(Connection& c);
  void Record(const char* method, std::chrono::steady_clock::time_point start, std::uint32_t code);

  const LocalOptions options_;
  const LocalArena arena_;
  BlockStore* const store_;
  const LocalEngineResolver resolver_;
  metrics::Registry* const metrics_;
  int listen_fd_ = -1;
  int wake_fd_ = -1;
  int readonly_fd_ = -1;  // the arena, opened read-only; sent to peers
  // Metric series by (method, code), touched only by the serving thread (Record).
  std::map<std::pair<const char*, std::uint32_t>, RpcSeries> series_;
  std::atomic<bool> stop_{false};
  std::atomic<std::size_t> connections_{0};
  std::thread thread_;
};

}  // namespace cachesvc
