// client/ucx_transport.cc: UcxTransport (see the header): one UCP context, worker and endpoint
// per connection; the block protocol's client side (cachesvc/ucx_am_protocol.h) and one-sided
// get/put, with bounded waits.
#include "client/ucx_transport.h"

#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>

#include <array>
#include <bit>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <utility>
#include <vector>

#include "base/mutex.h"
#include "cachesvc/ucx_am_protocol.h"
#include "cachesvc/ucx_status.h"
#include "fmt/format.h"

namespace cachesvc::client {
namespace {

using ucx_util::IsErrorPtr;
using ucx_util::IsPort;
using ucx_util::PtrStatus;
using ucx_util::UcsError;

using Clock = std::chrono::steady_clock;

// Progress rounds a waiting call spins before it sleeps on the worker's event fd. Shared-memory
// transfers usually finish within these; TCP ones need the server's reply, so sleeping on the fd
// frees the core (this machine's cores are shared with the server's progress thread).
constexpr int kSpinRounds = 64;
// ... and, for the block protocol, at least this long without progress: replies and rendezvous
// steps follow each other within microseconds on shared memory, and a wake-up costs more.
constexpr auto kSpinTime = std::chrono::microseconds(200);
// Longest sleep on the event fd, a safety net for progress that raises no event.
constexpr int kSleepMs = 1;
// After a timeout the endpoint is closed by force; how long to wait for UCX to cancel what was
// in flight.
constexpr auto kAbortGrace = std::chrono::seconds(1);

// A daemon's answer as a status. A code outside the gRPC range is reported as UNKNOWN.
[[nodiscard]] absl::Status StatusFromReply(std::uint32_t code, std::string message) {
  if (code > static_cast<std::uint32_t>(absl::StatusCode::kUnauthenticated)) {
    return absl::UnknownError(
        fmt::format("daemon answered unknown status code {}: {}", code, message));
  }
  if (code == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(code), message);
}

// ucp_ep_rkey_unpack takes no length: it trusts the md map and the per-md sizes inside the
// bytes. Checks that they describe no more bytes than there are, so a truncated or corrupted key
// is refused here instead of making UCX read past the buffer. Layout written by UCX 1.13's
// ucp_rkey_pack: u64 md_map, u8 memory type, then for each bit of md_map a u8 size and that many
// bytes of the transport's key (trailing bytes, which later versions may add, are allowed). A UCX
// that changes this layout fails the round-trip tests in tests/cachesvc/ucx_dataplane_test.cc.
[[nodiscard]] absl::Status CheckPackedRkey(std::string_view packed) {
  constexpr std::size_t kHeader = sizeof(std::uint64_t) + sizeof(std::uint8_t);
  if (packed.size() < kHeader) {
    return absl::InvalidArgumentError(
        fmt::format("packed rkey of {} bytes is too short (at least {})", packed.size(), kHeader));
  }
  std::uint64_t md_map = 0;
  std::memcpy(&md_map, packed.data(), sizeof(md_map));
  const auto mem_type = static_cast<std::uint8_t>(packed[sizeof(md_map)]);
  if (mem_type >= UCS_MEMORY_TYPE_LAST) {
    return absl::InvalidArgumentError(
        fmt::format("packed rkey names unknown memory type {}", mem_type));
  }
  std::size_t offset = kHeader;
  for (int md = 0; md < std::popcount(md_map); ++md) {
    if (offset >= packed.size()) {
      return absl::InvalidArgumentError(
          fmt::format("packed rkey is truncated: md map {:#x} needs more than its {} bytes", md_map,
                      packed.size()));
    }
    offset += 1 + static_cast<std::uint8_t>(packed[offset]);
    if (offset > packed.size()) {
      return absl::InvalidArgumentError(
          fmt::format("packed rkey is truncated: md map {:#x} needs more than its {} bytes", md_map,
                      packed.size()));
    }
  }
  return absl::OkStatus();
}

}  // namespace

namespace ucx_internal {

// One block-protocol operation of a call in progress (ReadMany/WriteMany), found by its request
// id when the daemon's reply arrives. Lives in the calling thread's vector until the call returns
// (and is out of Connection::am_ops_ by then).
struct AmOp {
  bool write = false;
  std::uint64_t request_id = 0;
  std::uint64_t lease_id = 0;
  std::array<std::uint8_t, ucx_am::kRequestSize> header{};  // read by UCX until the send completes
  void* dst = nullptr;                                      // reads
  std::size_t capacity = 0;
  void* send_request = nullptr;  // the request message (write: with its data)
  bool send_done = false;
  absl::Status send_status;
  void* recv_request = nullptr;  // reads, rendezvous: the data being received into dst
  absl::Status recv_status;
  bool replied = false;  // the daemon's reply header arrived
  absl::Status status;   // the daemon's answer, or why the reply was unusable
  std::size_t received = 0;
  bool done() const { return send_done && replied && recv_request == nullptr; }
};

// The UCX state of one connection. Shared by the UcxTransport and every RemoteKey and
// LocalRegion made from it, and destroyed with the last of them, so rkeys and memory handles are
// always released before the endpoint and worker they belong to.
class Connection {
 public:
  explicit Connection(UcxTransportOptions options) : options_(std::move(options)) {}
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  absl::Status Init(const std::string& server_address);

  // Waits until every request in `requests` has completed (and frees each), or until
  // `deadline`: then the endpoint is closed by force, which cancels them. The first failure
  // wins; an endpoint failure is reported as the connection's failure.
  [[nodiscard]] absl::Status Wait(std::vector<void*>& requests, Clock::time_point deadline,
                                  std::string_view what);

  const UcxTransportOptions& options() const { return options_; }

  // Waits until every op is done (reply received, its data in place, its sends complete), or
  // until `deadline` (then the connection is closed as in Wait). Removes the ops from am_ops_.
  [[nodiscard]] absl::Status WaitAm(std::vector<AmOp>& ops, Clock::time_point deadline,
                                    std::string_view what);

  // All UCX calls happen under mu_. The worker is UCS_THREAD_MODE_SERIALIZED.
  mutable Mutex mu_;
  ucp_context_h context_ = nullptr;             // constant after Init
  ucp_worker_h worker_ = nullptr;               // constant after Init
  int event_fd_ = -1;                           // the worker's; constant after Init
  ucp_ep_h ep_ ABSL_GUARDED_BY(mu_) = nullptr;  // null after a forced close
  absl::Status failure_ ABSL_GUARDED_BY(mu_);   // why the endpoint is unusable
  // Block-protocol ops waiting for their reply, by request id.
  std::unordered_map<std::uint64_t, AmOp*> am_ops_ ABSL_GUARDED_BY(mu_);
  std::uint64_t next_request_id_ ABSL_GUARDED_BY(mu_) = 1;

  // OK when operations may be issued.
  [[nodiscard]] absl::Status UsableLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    if (!failure_.ok()) return failure_;
    if (ep_ == nullptr) return absl::UnavailableError("UCX connection is closed");
    return absl::OkStatus();
  }

 private:
  static void OnEndpointError(void* arg, ucp_ep_h ep, ucs_status_t status);
  // The daemon's read and write replies (called from ucp_worker_progress, so under mu_).
  static ucs_status_t OnReply(void* arg, const void* header, std::size_t header_length, void* data,
                              std::size_t length, const ucp_am_recv_param_t* param);
  // Frees the op's completed requests; records their status.
  static void CollectAm(AmOp& op);
  // Frees completed requests; records the first failure in `first_error`.
  static void CollectLocked(std::vector<void*>& requests, absl::Status& first_error);
  // Force-closes the endpoint (cancelling what is in flight) and waits briefly for it.
  void AbortLocked(std::vector<void*>& requests, absl::Status why)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const UcxTransportOptions options_;
  std::string server_address_;
};

void Connection::OnEndpointError(void* arg, ucp_ep_h /*ep*/, ucs_status_t status) {
  auto* self = static_cast<Connection*>(arg);
  self->mu_.AssertHeld();  // called from ucp_worker_progress, which runs under mu_
  if (self->failure_.ok()) {
    self->failure_ = absl::UnavailableError(fmt::format(
        "UCX connection to {} failed: {}", self->server_address_, ucs_status_string(status)));
  }
}

ucs_status_t Connection::OnReply(void* arg, const void* header, std::size_t header_length,
                                 void* data, std::size_t length, const ucp_am_recv_param_t* param) {
  auto* self = static_cast<Connection*>(arg);
  self->mu_.AssertHeld();  // called from ucp_worker_progress, which runs under mu_
  const bool rndv = (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0;
  // A rendezvous payload not received here is dropped when this returns; an error status tells
  // the daemon's send (and so its EndRead) that the data was refused.
  const ucs_status_t refuse = rndv ? UCS_ERR_CANCELED : UCS_OK;
  ucx_am::Reply reply;
  if (!ucx_am::Decode(header, header_length, &reply) || reply.version != ucx_am::kVersion) {
    return refuse;  // not a reply this library can read; its op times out
  }
  const auto it = self->am_ops_.find(reply.request_id);
  if (it == self->am_ops_.end() || it->second->replied) {
    return refuse;  // not (or no longer) waited for
  }
  AmOp& op = *it->second;
  op.replied = true;
  if (reply.code != 0) {
    const std::size_t shown = rndv ? 0 : std::min(length, ucx_am::kMaxMessage);
    op.status = StatusFromReply(reply.code, std::string(static_cast<const char*>(data), shown));
    return refuse;
  }
  if (op.write) {
    op.received = reply.length;
    return refuse;
  }
  if (reply.length != length) {
    op.status = absl::InternalError(fmt::format(
        "daemon announced {} bytes for lease {} and sent {}", reply.length, op.lease_id, length));
    return refuse;
  }
  if (length > op.capacity) {
    op.status =
        absl::OutOfRangeError(fmt::format("lease {}: the daemon sent {} bytes for a {}-byte buffer",
                                          op.lease_id, length, op.capacity));
    return refuse;
  }
  op.received = length;
  if (!rndv) {
    if (length > 0) std::memcpy(op.dst, data, length);  // eager: the whole message is here
    return UCS_OK;
  }
  // Rendezvous: straight into the caller's buffer. No callback: the waiting call polls it.
  ucp_request_param_t recv{};
  void* request = ucp_am_recv_data_nbx(self->worker_, data, op.dst, length, &recv);
  if (IsErrorPtr(request)) {
    op.status = UcsError(PtrStatus(request), fmt::format("receiving lease {}", op.lease_id));
  } else {
    op.recv_request = request;  // null: done
  }
  return UCS_OK;
}

void Connection::CollectAm(AmOp& op) {
  if (op.send_request != nullptr) {
    const ucs_status_t st = ucp_request_check_status(op.send_request);
    if (st != UCS_INPROGRESS) {
      if (st != UCS_OK) op.send_status = UcsError(st, "UCX send");
      ucp_request_free(op.send_request);
      op.send_request = nullptr;
      op.send_done = true;
    }
  }
  if (op.recv_request != nullptr) {
    const ucs_status_t st = ucp_request_check_status(op.recv_request);
    if (st != UCS_INPROGRESS) {
      if (st != UCS_OK) op.recv_status = UcsError(st, "UCX receive");
      ucp_request_free(op.recv_request);
      op.recv_request = nullptr;
    }
  }
}

absl::Status Connection::WaitAm(std::vector<AmOp>& ops, Clock::time_point deadline,
                                std::string_view what) {
  // Every exit path removes the ops from am_ops_ under mu_, so no reply can find them after this
  // returns.
  auto forget = [this, &ops]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    for (AmOp& op : ops) am_ops_.erase(op.request_id);
  };
  auto outstanding = [&ops] {
    std::vector<void*> requests;
    for (AmOp& op : ops) {
      if (op.send_request != nullptr) requests.push_back(std::exchange(op.send_request, nullptr));
      if (op.recv_request != nullptr) requests.push_back(std::exchange(op.recv_request, nullptr));
    }
    return requests;
  };
  auto last_progress = Clock::now();
  for (int round = 0;; ++round) {
    bool armed = false;
    {
      MutexLock lock(&mu_);
      if (ep_ == nullptr) {
        // Another call closed the connection (timeout): nothing may progress this worker again.
        forget();
        std::vector<void*> requests = outstanding();
        AbortLocked(requests, absl::UnavailableError("UCX connection closed"));
        return failure_;
      }
      const bool progressed = ucp_worker_progress(worker_) != 0;
      bool all_done = true;
      for (AmOp& op : ops) {
        CollectAm(op);
        all_done = all_done && op.done();
      }
      if (all_done) {
        forget();
        return absl::OkStatus();
      }
      if (!failure_.ok() || Clock::now() >= deadline) {
        // The endpoint failed (the replies will not come) or time is up: close by force.
        const bool timed_out = failure_.ok();
        forget();
        std::vector<void*> requests = outstanding();
        AbortLocked(requests, absl::UnavailableError(
                                  fmt::format("UCX connection closed after a timeout ({})", what)));
        if (timed_out) {
          return absl::DeadlineExceededError(
              fmt::format("{}: not done within the timeout; connection closed", what));
        }
        return failure_;
      }
      if (progressed) {
        round = 0;
        last_progress = Clock::now();
      } else if (round >= kSpinRounds && Clock::now() - last_progress >= kSpinTime) {
        armed = ucp_worker_arm(worker_) == UCS_OK;
      }
    }
    if (armed) {
      pollfd fd{event_fd_, POLLIN, 0};
      poll(&fd, 1, kSleepMs);
    }
  }
}

absl::Status Connection::Init(const std::string& server_address) {
  server_address_ = server_address;
  const auto colon = server_address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == server_address.size()) {
    return absl::InvalidArgumentError(
        fmt::format("UCX server address '{}' is not host:port", server_address));
  }
  std::string host = server_address.substr(0, colon);
  const std::string port = server_address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (!IsPort(port)) {
    return absl::InvalidArgumentError(
        fmt::format("UCX server address '{}': bad port '{}'", server_address, port));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICSERV;
  addrinfo* resolved = nullptr;
  if (const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &resolved);
      rc != 0 || resolved == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("UCX server address '{}': {}", server_address, gai_strerror(rc)));
  }
  sockaddr_storage server{};
  std::memcpy(&server, resolved->ai_addr, resolved->ai_addrlen);
  const socklen_t server_len = resolved->ai_addrlen;
  freeaddrinfo(resolved);

  ucp_config_t* config = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK) {
    return UcsError(st, "ucp_config_read");
  }
  if (!options_.transports.empty()) {
    if (ucs_status_t st = ucp_config_modify(config, "TLS", options_.transports.c_str());
        st != UCS_OK) {
      ucp_config_release(config);
      return absl::InvalidArgumentError(
          fmt::format("UCX transports '{}': {}", options_.transports, ucs_status_string(st)));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA | UCP_FEATURE_WAKEUP;
  const ucs_status_t init_status = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (init_status != UCS_OK) {
    context_ = nullptr;
    return UcsError(init_status, fmt::format("ucp_init (transports '{}')", options_.transports));
  }
  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  if (ucs_status_t st = ucp_worker_create(context_, &worker_params, &worker_); st != UCS_OK) {
    worker_ = nullptr;
    return UcsError(st, "ucp_worker_create");
  }
  if (ucs_status_t st = ucp_worker_get_efd(worker_, &event_fd_); st != UCS_OK) {
    return UcsError(st, "ucp_worker_get_efd");
  }
  for (const unsigned id : {ucx_am::kAmReadReply, ucx_am::kAmWriteReply}) {
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    am.id = id;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;
    am.cb = &Connection::OnReply;
    am.arg = this;
    if (ucs_status_t st = ucp_worker_set_am_recv_handler(worker_, &am); st != UCS_OK) {
      return UcsError(st, "ucp_worker_set_am_recv_handler");
    }
  }

  std::vector<void*> requests;
  {
    MutexLock lock(&mu_);
    ucp_ep_params_t ep_params{};
    ep_params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                           UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE | UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep_params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep_params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&server);
    ep_params.sockaddr.addrlen = server_len;
    ep_params.err_mode =
        options_.detect_peer_failure ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ep_params.err_handler.cb = &Connection::OnEndpointError;
    ep_params.err_handler.arg = this;
    if (ucs_status_t st = ucp_ep_create(worker_, &ep_params, &ep_); st != UCS_OK) {
      ep_ = nullptr;
      return absl::UnavailableError(fmt::format("cannot connect to UCX data plane at {}: {}",
                                                server_address, ucs_status_string(st)));
    }
    // The endpoint is created at once but wired up asynchronously; a flush completes once it is
    // connected (or fails with it).
    ucp_request_param_t flush{};
    void* request = ucp_ep_flush_nbx(ep_, &flush);
    if (IsErrorPtr(request)) {
      return absl::UnavailableError(fmt::format("cannot connect to UCX data plane at {}: {}",
                                                server_address,
                                                ucs_status_string(PtrStatus(request))));
    }
    if (request != nullptr) requests.push_back(request);
  }
  absl::Status status =
      Wait(requests, Clock::now() + options_.connect_timeout, "connecting to the UCX data plane");
  if (absl::IsDeadlineExceeded(status)) {
    return absl::DeadlineExceededError(
        fmt::format("connecting to UCX data plane at {}: no answer within {} ms", server_address,
                    options_.connect_timeout.count()));
  }
  if (!status.ok()) {
    return absl::UnavailableError(fmt::format("cannot connect to UCX data plane at {}: {}",
                                              server_address, std::string(status.message())));
  }
  return absl::OkStatus();
}

Connection::~Connection() {
  MutexLock lock(&mu_);
  if (ep_ != nullptr) {
    ucp_request_param_t param{};
    if (!failure_.ok()) {
      // A failed endpoint cannot be flushed; UCX asks for a forced close.
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_EP_CLOSE_FLAG_FORCE;
    }
    // Otherwise a graceful close: flushes, then tells the server, which closes its endpoint.
    void* request = ucp_ep_close_nbx(ep_, &param);
    ep_ = nullptr;
    if (request != nullptr && !IsErrorPtr(request)) {
      const auto deadline = Clock::now() + options_.close_timeout;
      while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < deadline) {
        ucp_worker_progress(worker_);
      }
      ucp_request_free(request);  // an unfinished close is released with the worker
    }
  }
  if (worker_ != nullptr) ucp_worker_destroy(worker_);
  if (context_ != nullptr) ucp_cleanup(context_);
}

void Connection::CollectLocked(std::vector<void*>& requests, absl::Status& first_error) {
  std::erase_if(requests, [&first_error](void* request) {
    const ucs_status_t st = ucp_request_check_status(request);
    if (st == UCS_INPROGRESS) return false;
    if (st != UCS_OK && first_error.ok()) first_error = UcsError(st, "UCX transfer");
    ucp_request_free(request);
    return true;
  });
}

void Connection::AbortLocked(std::vector<void*>& requests, absl::Status why) {
  if (failure_.ok()) failure_ = std::move(why);
  if (ep_ == nullptr) {
    // Another call closed the connection already: give up on these without progressing.
    for (void* request : requests) ucp_request_free(request);
    requests.clear();
    return;
  }
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
  param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  void* close_request = ucp_ep_close_nbx(ep_, &param);
  ep_ = nullptr;
  if (close_request != nullptr && !IsErrorPtr(close_request)) {
    requests.push_back(close_request);
  }
  // With peer failure detection, a forced close completes what was in flight with
  // UCS_ERR_CANCELED. Without it, UCX 1.13 cancels nothing that waits for a reply (a software
  // get); those requests are abandoned. Either way the callers' buffers are safe once this
  // returns: software-emulated transfers write into them only from ucp_worker_progress, and with
  // failure_ set nothing progresses this worker again (every call returns failure_, and the
  // destructor, finding no endpoint, destroys the worker without progressing it).
  absl::Status ignored;
  const auto grace = Clock::now() + kAbortGrace;
  while (!requests.empty() && Clock::now() < grace) {
    ucp_worker_progress(worker_);
    CollectLocked(requests, ignored);
  }
  for (void* request : requests) ucp_request_free(request);
  requests.clear();
}

absl::Status Connection::Wait(std::vector<void*>& requests, Clock::time_point deadline,
                              std::string_view what) {
  absl::Status first_error;
  for (int round = 0;; ++round) {
    bool armed = false;
    {
      MutexLock lock(&mu_);
      if (ep_ == nullptr) {
        // Another thread's call timed out and closed the connection. Its abandoned transfers
        // must never be progressed again (see AbortLocked), so neither are these.
        AbortLocked(requests, absl::UnavailableError("UCX connection closed"));
        return failure_;
      }
      // One progress call per round, so a steady stream of arrivals cannot keep this call past
      // its deadline.
      const bool progressed = ucp_worker_progress(worker_) != 0;
      CollectLocked(requests, first_error);
      if (requests.empty()) {
        if (!first_error.ok() && !failure_.ok()) return failure_;
        return first_error;
      }
      if (Clock::now() >= deadline) {
        absl::Status timeout = absl::DeadlineExceededError(
            fmt::format("{}: not done within the timeout; connection closed", what));
        AbortLocked(requests, absl::UnavailableError(
                                  fmt::format("UCX connection closed after a timeout ({})", what)));
        return timeout;
      }
      if (progressed) {
        round = 0;
      } else if (round >= kSpinRounds) {
        armed = ucp_worker_arm(worker_) == UCS_OK;
      }
    }
    if (armed) {
      pollfd fd{event_fd_, POLLIN, 0};
      poll(&fd, 1, kSleepMs);
    }
  }
}

}  // namespace ucx_internal

// RemoteKey and LocalRegion.

void RemoteKey::Reset() {
  if (rkey_ != nullptr) {
    MutexLock lock(&connection_->mu_);
    ucp_rkey_destroy(rkey_);
  }
  rkey_ = nullptr;
  connection_.reset();
  base_ = 0;
  length_ = 0;
}
RemoteKey::~RemoteKey() { Reset(); }
RemoteKey::RemoteKey(RemoteKey&& other) noexcept
    : connection_(std::move(other.connection_)),
      rkey_(std::exchange(other.rkey_, nullptr)),
      base_(other.base_),
      length_(other.length_) {}
RemoteKey& RemoteKey::operator=(RemoteKey&& other) noexcept {
  if (this != &other) {
    Reset();
    connection_ = std::move(other.connection_);
    rkey_ = std::exchange(other.rkey_, nullptr);
    base_ = other.base_;
    length_ = other.length_;
  }
  return *this;
}

void LocalRegion::Reset() {
  if (memh_ != nullptr) {
    MutexLock lock(&connection_->mu_);
    ucp_mem_unmap(connection_->context_, memh_);
  }
  memh_ = nullptr;
  connection_.reset();
  base_ = nullptr;
  length_ = 0;
}
LocalRegion::~LocalRegion() { Reset(); }
LocalRegion::LocalRegion(LocalRegion&& other) noexcept
    : connection_(std::move(other.connection_)),
      memh_(std::exchange(other.memh_, nullptr)),
      base_(other.base_),
      length_(other.length_) {}
LocalRegion& LocalRegion::operator=(LocalRegion&& other) noexcept {
  if (this != &other) {
    Reset();
    connection_ = std::move(other.connection_);
    memh_ = std::exchange(other.memh_, nullptr);
    base_ = other.base_;
    length_ = other.length_;
  }
  return *this;
}

// UcxTransport.

UcxTransport::UcxTransport(std::shared_ptr<ucx_internal::Connection> connection)
    : connection_(std::move(connection)) {}

UcxTransport::~UcxTransport() = default;

absl::StatusOr<std::unique_ptr<UcxTransport>> UcxTransport::Connect(
    const std::string& server_address, const UcxTransportOptions& options) {
  auto connection = std::make_shared<ucx_internal::Connection>(options);
  if (absl::Status status = connection->Init(server_address); !status.ok()) {
    return status;
  }
  return std::unique_ptr<UcxTransport>(new UcxTransport(std::move(connection)));
}

absl::Status UcxTransport::health() const {
  MutexLock lock(&connection_->mu_);
  return connection_->UsableLocked();
}

std::string UcxTransport::DescribeLanes() const {
  char* text = nullptr;
  std::size_t size = 0;
  FILE* stream = open_memstream(&text, &size);
  if (stream == nullptr) return {};
  {
    MutexLock lock(&connection_->mu_);
    if (connection_->ep_ != nullptr) ucp_ep_print_info(connection_->ep_, stream);
  }
  std::fclose(stream);
  std::string description(text, size);
  std::free(text);
  return description;
}

absl::StatusOr<RemoteKey> UcxTransport::ImportRkey(std::string_view packed,
                                                   std::uint64_t remote_base,
                                                   std::uint64_t remote_length) {
  if (remote_length == 0 || remote_base + remote_length < remote_base) {
    return absl::InvalidArgumentError(fmt::format(
        "remote range [{:#x}, +{}) is empty or wraps around", remote_base, remote_length));
  }
  if (absl::Status status = CheckPackedRkey(packed); !status.ok()) {
    return status;
  }
  // UCX reads the key in place; give it an aligned copy of exactly the checked bytes.
  const std::string buffer(packed);
  MutexLock lock(&connection_->mu_);
  if (absl::Status status = connection_->UsableLocked(); !status.ok()) {
    return status;
  }
  ucp_rkey_h rkey = nullptr;
  if (ucs_status_t st = ucp_ep_rkey_unpack(connection_->ep_, buffer.data(), &rkey); st != UCS_OK) {
    return absl::InvalidArgumentError(
        fmt::format("cannot unpack the remote key: {}", ucs_status_string(st)));
  }
  RemoteKey key;
  key.connection_ = connection_;
  key.rkey_ = rkey;
  key.base_ = remote_base;
  key.length_ = remote_length;
  return key;
}

absl::StatusOr<LocalRegion> UcxTransport::RegisterLocal(void* base, std::size_t length) {
  if (base == nullptr || length == 0) {
    return absl::InvalidArgumentError(
        fmt::format("local region at {} of {} bytes is empty", base, length));
  }
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = base;
  params.length = length;
  MutexLock lock(&connection_->mu_);
  ucp_mem_h memh = nullptr;
  if (ucs_status_t st = ucp_mem_map(connection_->context_, &params, &memh); st != UCS_OK) {
    return UcsError(st, fmt::format("ucp_mem_map of {} local bytes at {}", length, base));
  }
  LocalRegion region;
  region.connection_ = connection_;
  region.memh_ = memh;
  region.base_ = base;
  region.length_ = length;
  return region;
}

absl::Status UcxTransport::Get(void* local, std::size_t length, std::uint64_t remote_addr,
                               const RemoteKey& rkey, const LocalRegion* local_region) {
  const GetOp op{local, length, remote_addr, &rkey, local_region};
  return GetMany(std::span<const GetOp>(&op, 1));
}

absl::Status UcxTransport::Put(const void* local, std::size_t length, std::uint64_t remote_addr,
                               const RemoteKey& rkey, const LocalRegion* local_region) {
  const PutOp op{local, length, remote_addr, &rkey, local_region};
  return PutMany(std::span<const PutOp>(&op, 1));
}

absl::Status UcxTransport::GetMany(std::span<const GetOp> ops) { return Transfer(ops); }
absl::Status UcxTransport::PutMany(std::span<const PutOp> ops) { return Transfer(ops); }

template <typename Op>
absl::Status UcxTransport::CheckOp(const Op& op, std::size_t index) const {
  if (op.rkey == nullptr || !op.rkey->valid()) {
    return absl::InvalidArgumentError(fmt::format("op {}: no remote key", index));
  }
  if (op.rkey->connection_ != connection_) {
    return absl::InvalidArgumentError(
        fmt::format("op {}: the remote key was imported on another connection", index));
  }
  if (op.local == nullptr) {
    return absl::InvalidArgumentError(fmt::format("op {}: no local buffer", index));
  }
  const std::uint64_t base = op.rkey->base_;
  const std::uint64_t limit = op.rkey->length_;
  if (op.remote_addr < base || op.remote_addr - base > limit ||
      op.length > limit - (op.remote_addr - base)) {
    return absl::OutOfRangeError(
        fmt::format("op {}: remote range [{:#x}, +{}) is outside the key's [{:#x}, +{})", index,
                    op.remote_addr, op.length, base, limit));
  }
  if (op.local_region != nullptr) {
    const LocalRegion& region = *op.local_region;
    const auto local = reinterpret_cast<std::uintptr_t>(op.local);
    const auto region_base = reinterpret_cast<std::uintptr_t>(region.base_);
    if (!region.valid() || region.connection_ != connection_ || local < region_base ||
        local - region_base > region.length_ ||
        op.length > region.length_ - (local - region_base)) {
      return absl::InvalidArgumentError(
          fmt::format("op {}: local range [{}, +{}) is not inside its local region", index,
                      static_cast<const void*>(op.local), op.length));
    }
  }
  return absl::OkStatus();
}

template <typename Op>
absl::Status UcxTransport::Transfer(std::span<const Op> ops) {
  constexpr bool kPut = std::is_same_v<Op, PutOp>;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    if (ops[i].length == 0) continue;
    if (absl::Status status = CheckOp(ops[i], i); !status.ok()) return status;
  }
  ucx_internal::Connection& connection = *connection_;
  const auto deadline = Clock::now() + connection.options().op_timeout;
  std::vector<void*> requests;
  requests.reserve(ops.size() + 1);
  absl::Status issue_error;
  {
    MutexLock lock(&connection.mu_);
    if (absl::Status status = connection.UsableLocked(); !status.ok()) return status;
    std::size_t issued = 0;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      const Op& op = ops[i];
      if (op.length == 0) continue;
      ucp_request_param_t param{};
      if (op.local_region != nullptr) {
        param.op_attr_mask = UCP_OP_ATTR_FIELD_MEMH;
        param.memh = op.local_region->memh_;
      }
      void* request;
      if constexpr (kPut) {
        request = ucp_put_nbx(connection.ep_, op.local, op.length, op.remote_addr, op.rkey->rkey_,
                              &param);
      } else {
        request = ucp_get_nbx(connection.ep_, op.local, op.length, op.remote_addr, op.rkey->rkey_,
                              &param);
      }
      if (IsErrorPtr(request)) {
        issue_error = UcsError(PtrStatus(request),
                               fmt::format("op {}: {}", i, kPut ? "ucp_put_nbx" : "ucp_get_nbx"));
        break;
      }
      ++issued;
      if (request != nullptr) requests.push_back(request);
    }
    // A put is complete locally when its request is; the flush makes it complete remotely.
    if (kPut && issue_error.ok() && issued > 0) {
      ucp_request_param_t param{};
      void* request = ucp_ep_flush_nbx(connection.ep_, &param);
      if (IsErrorPtr(request)) {
        issue_error = UcsError(PtrStatus(request), "ucp_ep_flush_nbx");
      } else if (request != nullptr) {
        requests.push_back(request);
      }
    }
  }
  // Even after an issue error, what was issued must finish before the buffers are given back.
  absl::Status status = connection.Wait(requests, deadline, kPut ? "UCX put" : "UCX get");
  if (!issue_error.ok()) return issue_error;
  return status;
}

absl::Status UcxTransport::Read(std::uint64_t lease_id, void* dst, std::size_t capacity,
                                std::size_t* received) {
  absl::Status status;
  const ReadOp op{lease_id, dst, capacity, received, &status};
  const absl::Status batch = ReadMany(std::span<const ReadOp>(&op, 1));
  return batch.ok() || status.ok() ? batch : status;  // the op's own words, without "op 0: "
}

absl::Status UcxTransport::Write(std::uint64_t lease_id, const void* src, std::size_t length) {
  absl::Status status;
  const WriteOp op{lease_id, src, length, &status};
  const absl::Status batch = WriteMany(std::span<const WriteOp>(&op, 1));
  return batch.ok() || status.ok() ? batch : status;
}

absl::Status UcxTransport::ReadMany(std::span<const ReadOp> ops) { return BlockTransfer(ops); }
absl::Status UcxTransport::WriteMany(std::span<const WriteOp> ops) { return BlockTransfer(ops); }

template <typename Op>
absl::Status UcxTransport::BlockTransfer(std::span<const Op> ops) {
  constexpr bool kWrite = std::is_same_v<Op, WriteOp>;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    bool no_buffer;
    if constexpr (kWrite) {
      no_buffer = ops[i].src == nullptr && ops[i].length > 0;
    } else {
      no_buffer = ops[i].dst == nullptr && ops[i].capacity > 0;
    }
    if (no_buffer) {
      return absl::InvalidArgumentError(fmt::format("op {}: no buffer", i));
    }
  }
  if (ops.empty()) return absl::OkStatus();
  ucx_internal::Connection& connection = *connection_;
  const auto deadline = Clock::now() + connection.options().op_timeout;
  std::vector<ucx_internal::AmOp> am(ops.size());
  {
    MutexLock lock(&connection.mu_);
    if (absl::Status status = connection.UsableLocked(); !status.ok()) return status;
    for (std::size_t i = 0; i < ops.size(); ++i) {
      ucx_internal::AmOp& op = am[i];
      op.write = kWrite;
      op.request_id = connection.next_request_id_++;
      op.lease_id = ops[i].lease_id;
      const void* payload = nullptr;
      std::size_t payload_length = 0;
      if constexpr (kWrite) {
        payload = ops[i].src;
        payload_length = ops[i].length;
      } else {
        op.dst = ops[i].dst;
        op.capacity = ops[i].capacity;
      }
      op.header = ucx_am::Encode(ucx_am::Request{
          .request_id = op.request_id,
          .lease_id = op.lease_id,
          .length = kWrite ? payload_length : op.capacity,
      });
      connection.am_ops_.emplace(op.request_id, &op);
      ucp_request_param_t param{};
      param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
      param.flags = UCP_AM_SEND_FLAG_REPLY;  // the daemon answers on this endpoint
      void* request =
          ucp_am_send_nbx(connection.ep_, kWrite ? ucx_am::kAmWrite : ucx_am::kAmRead,
                          op.header.data(), op.header.size(), payload, payload_length, &param);
      if (IsErrorPtr(request)) {
        // Not sent: no reply will come. The ops after it are not sent either.
        const absl::Status status = UcsError(PtrStatus(request), "ucp_am_send_nbx");
        for (std::size_t j = i; j < ops.size(); ++j) {
          am[j].send_done = true;
          am[j].replied = true;
          am[j].status = status;
          if (j > i) am[j].request_id = 0;  // never registered
        }
        break;
      }
      op.send_request = request;
      op.send_done = request == nullptr;
    }
  }
  const absl::Status wait = connection.WaitAm(am, deadline, kWrite ? "UCX write" : "UCX read");
  absl::Status first;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const ucx_internal::AmOp& op = am[i];
    absl::Status status = op.status;
    if (status.ok()) status = op.send_status;
    if (status.ok()) status = op.recv_status;
    if (status.ok() && !op.done()) status = wait.ok() ? absl::InternalError("not done") : wait;
    if (ops[i].status != nullptr) *ops[i].status = status;
    if constexpr (!kWrite) {
      if (status.ok() && ops[i].received != nullptr) *ops[i].received = op.received;
    }
    if (!status.ok() && first.ok()) {
      first =
          absl::Status(status.code(), fmt::format("op {}: {}", i, std::string(status.message())));
    }
  }
  return first;
}

}  // namespace cachesvc::client
