// cachesvc/ucx_dataplane.h: the daemon's side of the UCX data plane. Clients connect to a UCX
// listener and move KV blocks with a two-sided protocol over UCX active messages (docs/ucx.md,
// "The block protocol"): a client asks to read or write a lease, the daemon (UcxBlockHandler)
// checks the lease and grants a buffer, and this class sends the bytes from it or receives them
// into it. The daemon sees, checks and bounds every transfer; a client can reach no byte outside a
// grant through this protocol, and a client that dies or stalls mid-transfer costs the daemon one
// failed operation (EndRead/EndWrite with an error), never the process.
//
// One-sided RMA (Register/PackedRkey, clients' ucp_get/ucp_put) is still here for RDMA NICs, but
// off by default (UcxOptions::enable_rma): on TCP and shared memory UCX 1.13 emulates it in
// software without any range check, and a client dying mid-get over TCP aborts the daemon
// (docs/ucx.md). With RMA off the daemon's UCP context has no RMA feature, so UCX's emulated
// get/put handlers are not even installed.
//
// What this layer does: one UCP context and one worker, a listener on
// `UcxOptions::listen_address` that accepts every connection request, endpoint bookkeeping (a
// client that disconnects or fails has its endpoint closed), the block protocol's server side
// with a timeout on every operation in flight, and (with enable_rma) memory registration and rkey
// packing. A progress thread drives the worker: it sleeps on the worker's event fd when idle and
// is woken by UCX events or by this class. What it does not do: leases, authentication (the
// UcxBlockHandler decides what a lease id grants).
//
// Ownership: registered memory stays owned by the caller and must outlive its registration. A
// grant's memory must stay valid until its EndRead/EndWrite.
//
// Thread-safety: all public methods may be called from any thread. One mutex serializes every
// call into UCX (the worker runs in UCS_THREAD_MODE_SERIALIZED); the progress thread holds it
// only while progressing, never while it sleeps. The UcxBlockHandler is called on the progress
// thread with that mutex held: it must not call back into this UcxDataPlane.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"

// UCX handle types, declared here so that users of this header need not include <ucp/api/ucp.h>.
struct ucp_context;
struct ucp_worker;
struct ucp_listener;
struct ucp_ep;
struct ucp_mem;
struct ucp_conn_request;

namespace cachesvc {

struct UcxOptions {
  // "ip:port" (IPv4, or "[ipv6]:port"); port 0 picks a free port, reported by address(). The
  // default listens on loopback only: TCP and shared-memory transports carry no encryption.
  std::string listen_address = "127.0.0.1:0";
  // UCX_TLS for this context, e.g. "tcp", "rc,ud,sm,self,tcp"; empty keeps UCX's default (the
  // UCX_TLS environment variable, else every transport UCX finds). The listener needs a network
  // transport for its device ("tcp" for a loopback or Ethernet address): UCX 1.13 refuses a
  // client whose connection arrives on a device no listed transport covers.
  std::string transports;
  // Endpoints in UCP_ERR_HANDLING_MODE_PEER: a client that dies or vanishes is noticed (keepalive,
  // transport errors) and its endpoint closed. UCX 1.13 then uses only transports that can detect
  // a dead peer, which excludes shared memory (posix, sysv, self): on one host the data goes over
  // TCP. false allows shared memory; a departed client is then noticed only when it disconnects
  // cleanly or its connection's socket closes. Must match the clients' setting.
  bool detect_peer_failure = true;
  // Bound on every block-protocol operation in flight: a read reply being sent, a write's data
  // being received, an error or write reply being sent. When it passes the operation is cancelled
  // (ucp_request_cancel; with detect_peer_failure also by closing the client's endpoint, which is
  // what really cancels in UCX 1.13) and its EndRead/EndWrite gets the failure. Without peer
  // failure detection UCX 1.13 offers no way to cancel an active-message transfer: the grant is
  // then kept until UCX finishes the transfer or the client's connection drops (docs/ucx.md).
  std::chrono::milliseconds op_timeout{10000};
  // Most block operations (reads and writes) in flight at once, all clients together; a request
  // beyond it is answered RESOURCE_EXHAUSTED without calling the handler.
  std::size_t max_pending_ops = 4096;
  // One-sided RMA (Register, PackedRkey, clients' Get/Put): for RDMA NICs only. On TCP and shared
  // memory it lets any connected client read and write any address of this process (docs/ucx.md);
  // false (the default) creates the UCP context without the RMA feature, so UCX installs no
  // handler for RMA requests, and Register fails with FAILED_PRECONDITION.
  bool enable_rma = false;
};

// Implemented by the daemon: what a lease id grants. Called on the data plane's progress thread,
// with the data plane's lock held (do not call the UcxDataPlane from here), so keep it short.
// For every Begin* that returns OK the data plane calls the matching End* exactly once, with OK
// when the transfer completed and an error otherwise (client gone, timeout, bad request, shutdown);
// a Begin* that fails gets no End*.
class UcxBlockHandler {
 public:
  virtual ~UcxBlockHandler() = default;

  struct ReadGrant {
    const void* data;
    std::size_t length;
  };
  // A client asks to read lease `lease_id`; the bytes must stay valid (and unchanged) until
  // EndRead(lease_id, ...) is called. The error (e.g. NOT_FOUND) is sent to the client as is.
  [[nodiscard]] virtual absl::StatusOr<ReadGrant> BeginRead(std::uint64_t lease_id) = 0;
  virtual void EndRead(std::uint64_t lease_id, const absl::Status& sent) = 0;

  struct WriteGrant {
    void* data;
    std::size_t capacity;
  };
  // A client will write `length` bytes for lease `lease_id`: where to put them. length > capacity
  // fails the write (OUT_OF_RANGE, nothing written, EndWrite called). The bytes may be partly
  // written when EndWrite reports an error.
  [[nodiscard]] virtual absl::StatusOr<WriteGrant> BeginWrite(std::uint64_t lease_id,
                                                              std::size_t length) = 0;
  virtual void EndWrite(std::uint64_t lease_id, const absl::Status& received) = 0;
};

// Names one registered memory region; never reused within one UcxDataPlane.
using RegionId = std::uint64_t;

class UcxDataPlane {
 public:
  // Creates the context, worker and listener and starts the progress thread. INVALID_ARGUMENT for
  // a malformed address or transports string, UNAVAILABLE when UCX cannot start or cannot listen
  // there (no such address, port in use), with UCX's reason.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UcxDataPlane>> Start(
      const UcxOptions& options);

  // Closes every endpoint (forcibly: the daemon has no operations of its own in flight), destroys
  // the listener, unregisters every region, stops the progress thread, destroys the worker and the
  // context.
  ~UcxDataPlane();
  UcxDataPlane(const UcxDataPlane&) = delete;
  UcxDataPlane& operator=(const UcxDataPlane&) = delete;

  // The handler that serves the block protocol; set it before clients use it (requests that arrive
  // without one are answered UNAVAILABLE). Not owned; must outlive the data plane or be replaced
  // (SetHandler(nullptr) does not wait for operations already granted: their End* still go to the
  // handler that began them).
  void SetHandler(UcxBlockHandler* handler);

  // Registers [base, base + length) for remote read and write (ucp_mem_map of existing memory;
  // pins it on RDMA transports). The remote address a client uses is the local address.
  // FAILED_PRECONDITION without UcxOptions::enable_rma, INVALID_ARGUMENT for a null base or zero
  // length, RESOURCE_EXHAUSTED or INTERNAL when UCX refuses.
  [[nodiscard]] absl::StatusOr<RegionId> Register(void* base, std::size_t length);

  // The region's remote key, packed for sending to a client (opaque bytes for
  // client::UcxTransport::ImportRkey). NOT_FOUND for an unknown region.
  [[nodiscard]] absl::StatusOr<std::string> PackedRkey(RegionId region);

  // Unmaps the region. NOT_FOUND for an unknown region.
  [[nodiscard]] absl::Status Unregister(RegionId region);

  // The bound "ip:port" (the real port when the options asked for port 0).
  const std::string& address() const { return address_; }

  // Endpoints currently open (connected clients); for tests and status pages.
  std::size_t connected_clients();

  // Block operations (reads and writes) granted and not yet ended; for tests and status pages.
  std::size_t pending_operations();

 private:
  struct Region {
    ucp_mem* memh = nullptr;
    void* base = nullptr;
    std::size_t length = 0;
  };

  // One UCX operation in flight for the block protocol (ucx_dataplane.cc).
  struct Pending;

  UcxDataPlane() = default;

  [[nodiscard]] absl::Status Init(const UcxOptions& options);
  void ProgressLoop();
  void Wake();
  // Creates endpoints for queued connection requests and closes failed endpoints.
  void HandleEventsLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CloseEndpointLocked(ucp_ep* ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReapClosingLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Closes `ep` after detaching the operations that would reply on it.
  void DropEndpointLocked(ucp_ep* ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The block protocol (called from the AM callbacks, under mu_).
  void OnReadLocked(const void* header, std::size_t header_length, void* data, std::size_t length,
                    bool rndv, ucp_ep* reply_ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void OnWriteLocked(const void* header, std::size_t header_length, void* data, std::size_t length,
                     bool rndv, ucp_ep* reply_ep) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Sends a reply header (+ message for an error) on `ep`, fire and forget.
  void SendReplyLocked(ucp_ep* ep, unsigned am_id, std::uint64_t request_id,
                       const absl::Status& status, std::uint64_t length)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Ends the operations whose UCX requests completed (UCX callbacks only queue them).
  void ProcessCompletedLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(Pending* op, const absl::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Cancels operations past their deadline.
  void CheckDeadlinesLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  // The UCX callbacks (defined in the .cc, where the UCX types are). UCX calls them from
  // ucp_worker_progress, so mu_ is held.
  struct Callbacks;

  // Constant after Start.
  ucp_context* context_ = nullptr;
  ucp_worker* worker_ = nullptr;
  int worker_fd_ = -1;  // the worker's event fd (UCP_FEATURE_WAKEUP)
  int wake_fd_ = -1;    // eventfd that wakes the progress thread
  bool detect_peer_failure_ = true;
  bool enable_rma_ = false;
  std::chrono::milliseconds op_timeout_{10000};
  std::size_t max_pending_ops_ = 4096;
  std::string address_;
  std::thread progress_thread_;
  std::atomic<bool> stop_{false};

  Mutex mu_;
  ucp_listener* listener_ ABSL_GUARDED_BY(mu_) = nullptr;
  std::unordered_set<ucp_ep*> endpoints_ ABSL_GUARDED_BY(mu_);
  std::vector<ucp_conn_request*> pending_requests_ ABSL_GUARDED_BY(mu_);
  std::vector<ucp_ep*> failed_endpoints_ ABSL_GUARDED_BY(mu_);
  std::vector<void*> closing_ ABSL_GUARDED_BY(mu_);  // ucp_ep_close_nbx requests in flight
  std::unordered_map<RegionId, Region> regions_ ABSL_GUARDED_BY(mu_);
  RegionId next_region_ ABSL_GUARDED_BY(mu_) = 1;

  UcxBlockHandler* handler_ ABSL_GUARDED_BY(mu_) = nullptr;
  // Every block-protocol operation with a UCX request in flight (reads, writes, replies), owned.
  std::unordered_map<Pending*, std::unique_ptr<Pending>> pending_ ABSL_GUARDED_BY(mu_);
  std::size_t pending_grants_ ABSL_GUARDED_BY(mu_) = 0;   // reads and writes among pending_
  std::vector<Pending*> completed_ ABSL_GUARDED_BY(mu_);  // completed by UCX, not yet ended
  std::chrono::steady_clock::time_point next_deadline_scan_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc
