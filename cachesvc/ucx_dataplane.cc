// cachesvc/ucx_dataplane.cc: UcxDataPlane (see the header): UCP context, worker, listener,
// endpoint bookkeeping, the block protocol's server side (cachesvc/ucx_am_protocol.h), memory
// registration, and the progress thread.
#include "cachesvc/ucx_dataplane.h"
#include "base/errno_message.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <ucp/api/ucp.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <initializer_list>
#include <string_view>
#include <utility>

#include "cachesvc/ucx_am_protocol.h"
#include "cachesvc/ucx_status.h"
#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc {
namespace {

using ucx_util::IsErrorPtr;
using ucx_util::IsPort;
using ucx_util::PtrStatus;
using ucx_util::UcsError;

// The progress thread sleeps on the worker's event fd; this bounds a sleep in case a transport
// raises no event for some progress it needs (a safety net, not the wake-up path).
constexpr int kIdlePollMs = 100;
// While endpoints are closing, their completion needs progress that may raise no fd event.
constexpr int kClosingPollMs = 1;
// How long the destructor waits for endpoint closes to complete.
constexpr auto kCloseTimeout = std::chrono::seconds(2);
// While block operations are in flight, the progress thread goes on progressing for this long
// without progress before it sleeps (arrivals on shared memory are then picked up without a
// wake-up, and sends waiting for room in a shared-memory ring resume as soon as there is room),
// and then sleeps at most this long (requests queued inside UCX may need progress that raises no
// event).
constexpr auto kBusySpinTime = std::chrono::microseconds(200);
constexpr int kBusyPollMs = 1;
// How often the progress thread looks for operations past their deadline.
constexpr auto kDeadlineScanPeriod = std::chrono::milliseconds(20);

using Clock = std::chrono::steady_clock;

// Whether a UCX_TLS value may select one of `names` (UCX's default, "all", and exclusion lists
// like "^ib" may select anything).
bool MayUse(const std::string& transports, std::initializer_list<std::string_view> names) {
  if (transports.empty() || transports.front() == '^' ||
      transports.find("all") != std::string::npos) {
    return true;
  }
  for (const std::string_view name : names) {
    if (transports.find(name) != std::string::npos) return true;
  }
  return false;
}

// "ip:port" or "[ipv6]:port", numeric only (a listen address names an interface).
[[nodiscard]] absl::Status ParseListenAddress(const std::string& address, sockaddr_storage* out,
                                              socklen_t* out_len) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == address.size()) {
    return absl::InvalidArgumentError(
        fmt::format("UCX listen address '{}' is not ip:port", address));
  }
  std::string host = address.substr(0, colon);
  const std::string port = address.substr(colon + 1);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  if (!IsPort(port)) {
    return absl::InvalidArgumentError(
        fmt::format("UCX listen address '{}': bad port '{}'", address, port));
  }
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE;
  addrinfo* result = nullptr;
  const int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &result);
  if (rc != 0 || result == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("UCX listen address '{}': {}", address, gai_strerror(rc)));
  }
  std::memcpy(out, result->ai_addr, result->ai_addrlen);
  *out_len = result->ai_addrlen;
  freeaddrinfo(result);
  return absl::OkStatus();
}

std::string FormatAddress(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = {};
  if (addr.ss_family == AF_INET6) {
    const auto* in6 = reinterpret_cast<const sockaddr_in6*>(&addr);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    return fmt::format("[{}]:{}", host, ntohs(in6->sin6_port));
  }
  const auto* in = reinterpret_cast<const sockaddr_in*>(&addr);
  inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
  return fmt::format("{}:{}", host, ntohs(in->sin_port));
}

}  // namespace

// One block-protocol operation whose UCX request is in flight: a read reply with the block's
// bytes, a write's data being received into a grant, or a fire-and-forget reply. UCX callbacks
// only mark it completed and queue it (completed_); ProcessCompletedLocked ends it, after the
// ucp_*_nbx call that started it has returned (for rendezvous receives UCX may run the callback
// inside ucp_am_recv_data_nbx, before the request handle is known).
struct UcxDataPlane::Pending {
  enum class Kind { kRead, kWrite, kReply };
  Kind kind = Kind::kReply;
  UcxDataPlane* plane = nullptr;
  std::uint64_t lease_id = 0;
  std::uint64_t request_id = 0;
  std::uint64_t length = 0;            // bytes sent (read) or expected (write)
  ucp_ep_h ep = nullptr;               // where the reply goes; null once the endpoint is closed
  void* request = nullptr;             // the UCX request; null until its ucp_*_nbx returned
  UcxBlockHandler* handler = nullptr;  // who began it (reads and writes)
  bool completed = false;
  ucs_status_t ucx_status = UCS_OK;
  std::size_t received = 0;  // rendezvous receives: bytes UCX delivered
  Clock::time_point deadline;
  bool cancelled = false;  // its deadline passed and cancellation was tried
  // The AM header (and error message) being sent: UCX 1.13 reads them until the send completes.
  std::array<std::uint8_t, ucx_am::kReplySize> header{};
  std::string message;
};

struct UcxDataPlane::Callbacks {
  // UCX completed (or failed, or purged) a request of `user_data` (a Pending).
  static void OnSent(void* /*request*/, ucs_status_t status,
                     void* user_data) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto* op = static_cast<Pending*>(user_data);
    op->completed = true;
    op->ucx_status = status;
    op->plane->completed_.push_back(op);
  }
  static void OnReceived(void* /*request*/, ucs_status_t status, std::size_t length,
                         void* user_data) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    auto* op = static_cast<Pending*>(user_data);
    op->completed = true;
    op->ucx_status = status;
    op->received = length;
    op->plane->completed_.push_back(op);
  }
  static ucp_ep_h ReplyEp(const ucp_am_recv_param_t* param) {
    return (param->recv_attr & UCP_AM_RECV_ATTR_FIELD_REPLY_EP) != 0 ? param->reply_ep : nullptr;
  }
  // Active messages of the block protocol. A rendezvous descriptor not received in the callback
  // is dropped by UCX when the callback returns UCS_OK (the sender's send completes).
  static ucs_status_t OnReadAm(void* arg, const void* header, std::size_t header_length, void* data,
                               std::size_t length,
                               const ucp_am_recv_param_t* param) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    static_cast<UcxDataPlane*>(arg)->OnReadLocked(
        header, header_length, data, length, (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0,
        ReplyEp(param));
    return UCS_OK;
  }
  static ucs_status_t OnWriteAm(void* arg, const void* header, std::size_t header_length,
                                void* data, std::size_t length,
                                const ucp_am_recv_param_t* param) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    static_cast<UcxDataPlane*>(arg)->OnWriteLocked(
        header, header_length, data, length, (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) != 0,
        ReplyEp(param));
    return UCS_OK;
  }

  // Queued, not accepted here: endpoints are created after ucp_worker_progress returns.
  static void OnConnRequest(ucp_conn_request_h request, void* arg) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    static_cast<UcxDataPlane*>(arg)->pending_requests_.push_back(request);
  }
  // A client went away (disconnect, crash, network): its endpoint is closed after progress.
  static void OnEndpointError(void* arg, ucp_ep_h ep,
                              ucs_status_t status) ABSL_NO_THREAD_SAFETY_ANALYSIS {
    spdlog::debug("ucx: client endpoint failed ({}), closing it", ucs_status_string(status));
    static_cast<UcxDataPlane*>(arg)->failed_endpoints_.push_back(ep);
  }
};

absl::StatusOr<std::unique_ptr<UcxDataPlane>> UcxDataPlane::Start(const UcxOptions& options) {
  std::unique_ptr<UcxDataPlane> plane(new UcxDataPlane());
  if (absl::Status status = plane->Init(options); !status.ok()) {
    return status;  // the destructor releases whatever Init created
  }
  return plane;
}

absl::Status UcxDataPlane::Init(const UcxOptions& options) {
  detect_peer_failure_ = options.detect_peer_failure;
  enable_rma_ = options.enable_rma;
  op_timeout_ = options.op_timeout;
  max_pending_ops_ = options.max_pending_ops;
  if (op_timeout_.count() <= 0) {
    return absl::InvalidArgumentError(
        fmt::format("UCX op_timeout must be positive, not {} ms", op_timeout_.count()));
  }
  sockaddr_storage listen_addr{};
  socklen_t listen_len = 0;
  if (absl::Status status = ParseListenAddress(options.listen_address, &listen_addr, &listen_len);
      !status.ok()) {
    return status;
  }

  ucp_config_t* config = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK) {
    return UcsError(st, "ucp_config_read");
  }
  if (!options.transports.empty()) {
    if (ucs_status_t st = ucp_config_modify(config, "TLS", options.transports.c_str());
        st != UCS_OK) {
      ucp_config_release(config);
      return absl::InvalidArgumentError(
          fmt::format("UCX transports '{}': {}", options.transports, ucs_status_string(st)));
    }
  }
  // Hardening that costs nothing on the block protocol (docs/ucx.md, "What UCX protects"):
  // - PROTO_INDIRECT_ID: endpoint and request ids in UCX's wire messages are looked up in a
  //   table instead of being raw pointers (UCX's default without peer failure detection), so a
  //   forged id cannot make this process dereference an arbitrary address; it also makes UCX
  //   track each endpoint's requests, so they fail when a client's connection drops.
  // - TCP_PUT_ENABLE=n: UCT's TCP transport otherwise writes an incoming PUT to whatever address
  //   the peer names. Rendezvous data from clients then arrives as active-message fragments that
  //   UCP copies into the receive buffer within its bounds.
  // Transport settings are given only where the transport may be used: UCX warns about unused
  // ones. (Not set: MM_ERROR_HANDLING=y, which would let sysv/posix shared memory run with peer
  // failure detection; a client killed while writing into the daemon's shared-memory receive
  // ring can wedge that ring for every client, and with it the rendezvous data of writes would
  // go through the ring. docs/ucx.md, "Known UCX 1.13 problems".)
  std::vector<std::pair<const char*, const char*>> settings = {{"PROTO_INDIRECT_ID", "on"}};
  if (MayUse(options.transports, {"tcp"})) settings.emplace_back("PUT_ENABLE", "n");
  for (const auto& [key, value] : settings) {
    if (ucs_status_t st = ucp_config_modify(config, key, value); st != UCS_OK) {
      ucp_config_release(config);
      return UcsError(st, fmt::format("ucp_config_modify {}={}", key, value));
    }
  }
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  // AM for the block protocol; WAKEUP for the worker's event fd; RMA only on request (without it
  // UCX installs no handler for emulated get/put requests).
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP | (enable_rma_ ? UCP_FEATURE_RMA : 0);
  const ucs_status_t init_status = ucp_init(&params, config, &context_);
  ucp_config_release(config);
  if (init_status != UCS_OK) {
    context_ = nullptr;
    return UcsError(init_status, fmt::format("ucp_init (transports '{}')", options.transports));
  }

  ucp_worker_params_t worker_params{};
  worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  // Callers and the progress thread take turns under mu_.
  worker_params.thread_mode = UCS_THREAD_MODE_SERIALIZED;
  if (ucs_status_t st = ucp_worker_create(context_, &worker_params, &worker_); st != UCS_OK) {
    worker_ = nullptr;
    return UcsError(st, "ucp_worker_create");
  }
  if (ucs_status_t st = ucp_worker_get_efd(worker_, &worker_fd_); st != UCS_OK) {
    return UcsError(st, "ucp_worker_get_efd");
  }
  for (const auto& [id, cb] :
       {std::pair<unsigned, ucp_am_recv_callback_t>{ucx_am::kAmRead, &Callbacks::OnReadAm},
        {ucx_am::kAmWrite, &Callbacks::OnWriteAm}}) {
    ucp_am_handler_param_t am{};
    am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    am.id = id;
    am.flags = UCP_AM_FLAG_WHOLE_MSG;  // eager data arrives in one piece
    am.cb = cb;
    am.arg = this;
    if (ucs_status_t st = ucp_worker_set_am_recv_handler(worker_, &am); st != UCS_OK) {
      return UcsError(st, "ucp_worker_set_am_recv_handler");
    }
  }
  wake_fd_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    return absl::InternalError(fmt::format("eventfd: {}", ErrnoMessage(errno)));
  }

  ucp_listener_params_t listener_params{};
  listener_params.field_mask =
      UCP_LISTENER_PARAM_FIELD_SOCK_ADDR | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER;
  listener_params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&listen_addr);
  listener_params.sockaddr.addrlen = listen_len;
  listener_params.conn_handler.cb = &Callbacks::OnConnRequest;
  listener_params.conn_handler.arg = this;
  {
    MutexLock lock(&mu_);
    ucp_listener_h listener = nullptr;
    if (ucs_status_t st = ucp_listener_create(worker_, &listener_params, &listener); st != UCS_OK) {
      return absl::UnavailableError(fmt::format("UCX cannot listen on {}: {}",
                                                options.listen_address, ucs_status_string(st)));
    }
    listener_ = listener;
    ucp_listener_attr_t attr{};
    attr.field_mask = UCP_LISTENER_ATTR_FIELD_SOCKADDR;
    if (ucs_status_t st = ucp_listener_query(listener_, &attr); st != UCS_OK) {
      return UcsError(st, "ucp_listener_query");
    }
    address_ = FormatAddress(attr.sockaddr);
  }

  progress_thread_ = std::thread([this] { ProgressLoop(); });
  return absl::OkStatus();
}

UcxDataPlane::~UcxDataPlane() {
  if (progress_thread_.joinable()) {
    stop_.store(true, std::memory_order_release);
    Wake();
    progress_thread_.join();
  }
  {
    MutexLock lock(&mu_);
    if (worker_ != nullptr) {
      // Connection requests that arrived but were never accepted are refused, then no new ones
      // can arrive.
      while (ucp_worker_progress(worker_) != 0) {
      }
      ProcessCompletedLocked();
      for (ucp_conn_request_h request : pending_requests_) {
        ucp_listener_reject(listener_, request);
      }
      pending_requests_.clear();
      if (listener_ != nullptr) {
        ucp_listener_destroy(listener_);
        listener_ = nullptr;
      }
      failed_endpoints_.clear();  // all of them are in endpoints_ or already closing
      for (auto& [raw, op] : pending_) op->ep = nullptr;  // no more replies
      for (ucp_ep_h ep : endpoints_) {
        CloseEndpointLocked(ep);
      }
      endpoints_.clear();
      const auto deadline = Clock::now() + kCloseTimeout;
      while ((!closing_.empty() || !pending_.empty()) && Clock::now() < deadline) {
        ucp_worker_progress(worker_);
        ProcessCompletedLocked();
        ReapClosingLocked();
      }
      if (!closing_.empty()) {
        spdlog::warn("ucx: {} endpoint close(s) did not complete in time", closing_.size());
        for (void* request : closing_) {
          ucp_request_free(request);  // returned to UCX when it completes (or the worker goes)
        }
        closing_.clear();
      }
      for (auto& [id, region] : regions_) {
        ucp_mem_unmap(context_, region.memh);
      }
      regions_.clear();
      ucp_worker_destroy(worker_);
      worker_ = nullptr;
    }
    // The worker is gone, so UCX no longer touches any grant: operations it never completed end
    // here (FinishLocked makes no UCX call without a worker).
    for (Pending* op : completed_) op->completed = true;
    completed_.clear();
    while (!pending_.empty()) {
      Pending* op = pending_.begin()->first;
      FinishLocked(op, op->completed && op->ucx_status == UCS_OK
                           ? absl::OkStatus()
                           : absl::CancelledError("UCX data plane shut down"));
    }
  }
  if (context_ != nullptr) {
    ucp_cleanup(context_);
  }
  if (wake_fd_ >= 0) {
    close(wake_fd_);
  }
  // worker_fd_ belongs to the worker.
}

void UcxDataPlane::Wake() {
  const std::uint64_t one = 1;
  // A full eventfd counter still wakes the poller, so a failed write needs no handling.
  [[maybe_unused]] const ssize_t written = write(wake_fd_, &one, sizeof(one));
}

void UcxDataPlane::ProgressLoop() {
  while (!stop_.load(std::memory_order_acquire)) {
    ucs_status_t armed = UCS_OK;
    bool closing = false;
    bool busy = false;
    {
      MutexLock lock(&mu_);
      for (auto last_progress = Clock::now();;) {
        if (ucp_worker_progress(worker_) != 0) {
          ProcessCompletedLocked();
          last_progress = Clock::now();
          continue;
        }
        ProcessCompletedLocked();
        if (pending_.empty() || Clock::now() - last_progress > kBusySpinTime) break;
      }
      HandleEventsLocked();
      CheckDeadlinesLocked();
      ProcessCompletedLocked();
      closing = !closing_.empty();
      busy = !pending_.empty();
      // ucp_worker_arm returns BUSY when events arrived since the last progress: progress again
      // instead of sleeping on them.
      armed = ucp_worker_arm(worker_);
    }
    if (armed == UCS_ERR_BUSY) {
      continue;
    }
    pollfd fds[2] = {{worker_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}};
    const int timeout_ms =
        (closing || armed != UCS_OK) ? kClosingPollMs : (busy ? kBusyPollMs : kIdlePollMs);
    if (poll(fds, 2, timeout_ms) > 0 && (fds[1].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      [[maybe_unused]] const ssize_t got = read(wake_fd_, &count, sizeof(count));
    }
  }
}

void UcxDataPlane::HandleEventsLocked() {
  for (ucp_conn_request_h request : pending_requests_) {
    ucp_ep_params_t ep_params{};
    ep_params.field_mask = UCP_EP_PARAM_FIELD_CONN_REQUEST | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                           UCP_EP_PARAM_FIELD_ERR_HANDLER;
    ep_params.conn_request = request;
    ep_params.err_mode =
        detect_peer_failure_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    ep_params.err_handler.cb = &Callbacks::OnEndpointError;
    ep_params.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    if (ucs_status_t st = ucp_ep_create(worker_, &ep_params, &ep); st != UCS_OK) {
      // UCX has answered the request with a reject; the client sees a failed connect.
      spdlog::warn("ucx: cannot accept a client connection: {}", ucs_status_string(st));
      continue;
    }
    endpoints_.insert(ep);
  }
  pending_requests_.clear();
  // Closing may complete requests and so run callbacks, which never touch failed_endpoints_.
  std::vector<ucp_ep_h> failed = std::move(failed_endpoints_);
  failed_endpoints_.clear();
  for (ucp_ep_h ep : failed) {
    if (endpoints_.erase(ep) != 0) {
      DropEndpointLocked(ep);
    }
  }
  ReapClosingLocked();
}

void UcxDataPlane::DropEndpointLocked(ucp_ep_h ep) {
  for (auto& [raw, op] : pending_) {
    if (op->ep == ep) op->ep = nullptr;
  }
  CloseEndpointLocked(ep);
}

void UcxDataPlane::CloseEndpointLocked(ucp_ep_h ep) {
  ucp_request_param_t param{};
  if (detect_peer_failure_) {
    // Forced: whatever is still in flight on it is cancelled (its callbacks run with
    // UCS_ERR_CANCELED), and a failed peer could not confirm a graceful close anyway.
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = UCP_EP_CLOSE_FLAG_FORCE;
  }
  // Without peer failure detection UCX 1.13 refuses a forced close (INVALID_PARAM): the close
  // flushes, which for a failed endpoint completes at once.
  void* request = ucp_ep_close_nbx(ep, &param);
  if (request == nullptr) {
    return;
  }
  if (IsErrorPtr(request)) {
    spdlog::debug("ucx: endpoint close: {}", ucs_status_string(PtrStatus(request)));
    return;
  }
  closing_.push_back(request);
}

void UcxDataPlane::ReapClosingLocked() {
  std::erase_if(closing_, [](void* request) {
    if (ucp_request_check_status(request) == UCS_INPROGRESS) {
      return false;
    }
    ucp_request_free(request);
    return true;
  });
}

std::size_t UcxDataPlane::connected_clients() {
  MutexLock lock(&mu_);
  return endpoints_.size();
}

std::size_t UcxDataPlane::pending_operations() {
  MutexLock lock(&mu_);
  return pending_grants_;
}

void UcxDataPlane::SetHandler(UcxBlockHandler* handler) {
  MutexLock lock(&mu_);
  handler_ = handler;
}

// The block protocol.

namespace {

// A request header's problems, as the status to answer with.
[[nodiscard]] absl::Status CheckRequest(const void* header, std::size_t header_length,
                                        ucx_am::Request* out) {
  const std::uint32_t version = ucx_am::VersionOf(header, header_length);
  if (header_length >= 4 && version != ucx_am::kVersion) {
    return absl::FailedPreconditionError(
        fmt::format("block protocol version {} is not supported (this server speaks {})", version,
                    ucx_am::kVersion));
  }
  if (!ucx_am::Decode(header, header_length, out)) {
    return absl::InvalidArgumentError(fmt::format("block request header of {} bytes (expected {})",
                                                  header_length, ucx_am::kRequestSize));
  }
  return absl::OkStatus();
}

}  // namespace

void UcxDataPlane::OnReadLocked(const void* header, std::size_t header_length, void* /*data*/,
                                std::size_t length, bool /*rndv*/, ucp_ep_h reply_ep) {
  if (reply_ep == nullptr) {
    // Not sent with UCP_AM_SEND_FLAG_REPLY: nobody to answer. (A rendezvous payload is dropped
    // by UCX when the callback returns.)
    spdlog::debug("ucx: block read request without a reply endpoint dropped");
    return;
  }
  const std::uint64_t request_id = ucx_am::RequestIdOf(header, header_length);
  ucx_am::Request request;
  if (absl::Status status = CheckRequest(header, header_length, &request); !status.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmReadReply, request_id, status, 0);
    return;
  }
  absl::Status refused;
  if (length != 0) {
    refused = absl::InvalidArgumentError(
        fmt::format("a block read request carries no data; this one carries {} bytes", length));
  } else if (handler_ == nullptr) {
    refused = absl::UnavailableError("the UCX data plane serves no blocks yet (no handler)");
  } else if (pending_grants_ >= max_pending_ops_) {
    refused = absl::ResourceExhaustedError(
        fmt::format("{} block transfers in flight; try again", pending_grants_));
  }
  if (!refused.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmReadReply, request.request_id, refused, 0);
    return;
  }
  UcxBlockHandler* handler = handler_;
  absl::StatusOr<UcxBlockHandler::ReadGrant> grant = handler->BeginRead(request.lease_id);
  if (!grant.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmReadReply, request.request_id, grant.status(), 0);
    return;
  }
  if (grant->length > request.length) {
    refused = absl::OutOfRangeError(
        fmt::format("lease {}: the block's {} bytes do not fit the reader's {}-byte buffer",
                    request.lease_id, grant->length, request.length));
  } else if (grant->data == nullptr && grant->length > 0) {
    refused =
        absl::InternalError(fmt::format("lease {}: read granted no memory", request.lease_id));
  }
  if (!refused.ok()) {
    handler->EndRead(request.lease_id, refused);
    SendReplyLocked(reply_ep, ucx_am::kAmReadReply, request.request_id, refused, 0);
    return;
  }

  auto owned = std::make_unique<Pending>();
  Pending* op = owned.get();
  op->kind = Pending::Kind::kRead;
  op->plane = this;
  op->lease_id = request.lease_id;
  op->request_id = request.request_id;
  op->length = grant->length;
  op->ep = reply_ep;
  op->handler = handler;
  op->deadline = Clock::now() + op_timeout_;
  op->header =
      ucx_am::Encode(ucx_am::Reply{.request_id = request.request_id, .length = grant->length});
  pending_.emplace(op, std::move(owned));
  ++pending_grants_;

  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &Callbacks::OnSent;
  param.user_data = op;
  // UCX picks eager or rendezvous by size; rendezvous lets the client receive straight into its
  // buffer (over shared memory with cma, it copies from this process's memory itself).
  void* ucx_request = ucp_am_send_nbx(reply_ep, ucx_am::kAmReadReply, op->header.data(),
                                      op->header.size(), grant->data, grant->length, &param);
  if (ucx_request == nullptr) {
    FinishLocked(op, absl::OkStatus());  // sent (copied out) at once
  } else if (IsErrorPtr(ucx_request)) {
    const absl::Status status = UcsError(PtrStatus(ucx_request), "sending the block");
    FinishLocked(op, status);
    SendReplyLocked(reply_ep, ucx_am::kAmReadReply, request.request_id, status, 0);
  } else {
    op->request = ucx_request;
  }
}

void UcxDataPlane::OnWriteLocked(const void* header, std::size_t header_length, void* data,
                                 std::size_t length, bool rndv, ucp_ep_h reply_ep) {
  if (reply_ep == nullptr) {
    spdlog::debug("ucx: block write request without a reply endpoint dropped");
    return;  // a rendezvous payload is dropped by UCX when the callback returns
  }
  const std::uint64_t request_id = ucx_am::RequestIdOf(header, header_length);
  ucx_am::Request request;
  if (absl::Status status = CheckRequest(header, header_length, &request); !status.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmWriteReply, request_id, status, 0);
    return;
  }
  absl::Status refused;
  if (request.length != length) {
    refused = absl::InvalidArgumentError(
        fmt::format("lease {}: the write header announces {} bytes, the message carries {}",
                    request.lease_id, request.length, length));
  } else if (handler_ == nullptr) {
    refused = absl::UnavailableError("the UCX data plane serves no blocks yet (no handler)");
  } else if (pending_grants_ >= max_pending_ops_) {
    refused = absl::ResourceExhaustedError(
        fmt::format("{} block transfers in flight; try again", pending_grants_));
  }
  if (!refused.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmWriteReply, request.request_id, refused, 0);
    return;
  }
  UcxBlockHandler* handler = handler_;
  absl::StatusOr<UcxBlockHandler::WriteGrant> grant = handler->BeginWrite(request.lease_id, length);
  if (!grant.ok()) {
    SendReplyLocked(reply_ep, ucx_am::kAmWriteReply, request.request_id, grant.status(), 0);
    return;
  }
  if (length > grant->capacity) {
    refused = absl::OutOfRangeError(
        fmt::format("lease {}: {} bytes do not fit the block's {}-byte capacity", request.lease_id,
                    length, grant->capacity));
  } else if (grant->data == nullptr && length > 0) {
    refused =
        absl::InternalError(fmt::format("lease {}: write granted no memory", request.lease_id));
  }
  if (!refused.ok()) {
    handler->EndWrite(request.lease_id, refused);
    SendReplyLocked(reply_ep, ucx_am::kAmWriteReply, request.request_id, refused, 0);
    return;
  }
  if (!rndv) {
    // Eager: the whole payload is here (UCP_AM_FLAG_WHOLE_MSG).
    if (length > 0) std::memcpy(grant->data, data, length);
    handler->EndWrite(request.lease_id, absl::OkStatus());
    SendReplyLocked(reply_ep, ucx_am::kAmWriteReply, request.request_id, absl::OkStatus(), length);
    return;
  }

  auto owned = std::make_unique<Pending>();
  Pending* op = owned.get();
  op->kind = Pending::Kind::kWrite;
  op->plane = this;
  op->lease_id = request.lease_id;
  op->request_id = request.request_id;
  op->length = length;
  op->ep = reply_ep;
  op->handler = handler;
  op->deadline = Clock::now() + op_timeout_;
  pending_.emplace(op, std::move(owned));
  ++pending_grants_;

  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.recv_am = &Callbacks::OnReceived;
  param.user_data = op;
  // Straight into the grant. `length` (the size UCX announced) fits it, as UCX requires.
  void* ucx_request = ucp_am_recv_data_nbx(worker_, data, grant->data, length, &param);
  if (ucx_request == nullptr) {
    op->received = length;
    FinishLocked(op, absl::OkStatus());
  } else if (IsErrorPtr(ucx_request)) {
    FinishLocked(op, UcsError(PtrStatus(ucx_request), "receiving the block"));
  } else {
    // The callback may already have run (UCX completes some receives inside the call); the
    // operation then waits in completed_ for its request handle.
    op->request = ucx_request;
  }
}

void UcxDataPlane::SendReplyLocked(ucp_ep_h ep, unsigned am_id, std::uint64_t request_id,
                                   const absl::Status& status, std::uint64_t length) {
  auto owned = std::make_unique<Pending>();
  Pending* op = owned.get();
  op->kind = Pending::Kind::kReply;
  op->plane = this;
  op->request_id = request_id;
  op->ep = ep;
  op->deadline = Clock::now() + op_timeout_;
  if (!status.ok()) {
    op->message = std::string(status.message().substr(0, ucx_am::kMaxMessage));
    length = op->message.size();
  }
  op->header = ucx_am::Encode(ucx_am::Reply{.code = static_cast<std::uint32_t>(status.code()),
                                            .request_id = request_id,
                                            .length = length});
  ucp_request_param_t param{};
  param.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
  param.cb.send = &Callbacks::OnSent;
  param.user_data = op;
  void* ucx_request = ucp_am_send_nbx(ep, am_id, op->header.data(), op->header.size(),
                                      op->message.data(), op->message.size(), &param);
  if (ucx_request == nullptr) return;  // sent; `owned` goes
  if (IsErrorPtr(ucx_request)) {
    spdlog::debug("ucx: cannot send a block reply: {}", ucs_status_string(PtrStatus(ucx_request)));
    return;
  }
  op->request = ucx_request;
  pending_.emplace(op, std::move(owned));
}

void UcxDataPlane::ProcessCompletedLocked() {
  while (!completed_.empty()) {
    std::vector<Pending*> batch = std::move(completed_);
    completed_.clear();
    for (Pending* op : batch) {
      absl::Status status;
      if (op->ucx_status != UCS_OK) {
        status = UcsError(op->ucx_status, op->kind == Pending::Kind::kWrite ? "receiving the block"
                                                                            : "sending the block");
      } else if (op->kind == Pending::Kind::kWrite && op->received != op->length) {
        status = absl::DataLossError(
            fmt::format("received {} of the {} bytes announced", op->received, op->length));
      }
      FinishLocked(op, status);
    }
  }
}

void UcxDataPlane::FinishLocked(Pending* op, const absl::Status& status) {
  absl::Status result = status;
  if (op->cancelled && !status.ok()) {
    result = absl::DeadlineExceededError(fmt::format("not done within {} ms, cancelled ({})",
                                                     op_timeout_.count(),
                                                     std::string(status.message())));
  }
  if (op->request != nullptr && worker_ != nullptr) {
    ucp_request_free(op->request);
  }
  if (op->completed) std::erase(completed_, op);  // finished directly while queued (rare)
  switch (op->kind) {
    case Pending::Kind::kRead:
      --pending_grants_;
      op->handler->EndRead(op->lease_id, result);
      break;
    case Pending::Kind::kWrite:
      --pending_grants_;
      op->handler->EndWrite(op->lease_id, result);
      if (op->ep != nullptr && worker_ != nullptr) {
        SendReplyLocked(op->ep, ucx_am::kAmWriteReply, op->request_id, result,
                        result.ok() ? op->length : 0);
      }
      break;
    case Pending::Kind::kReply:
      break;
  }
  pending_.erase(op);
}

void UcxDataPlane::CheckDeadlinesLocked() {
  const auto now = Clock::now();
  if (pending_.empty() || now < next_deadline_scan_) return;
  next_deadline_scan_ = now + kDeadlineScanPeriod;
  std::vector<ucp_ep_h> to_close;
  for (auto& [raw, op] : pending_) {
    if (op->completed || op->cancelled || now < op->deadline) continue;
    op->cancelled = true;
    // A no-op for active messages in UCX 1.13 (it cancels only tag receives); kept for UCX
    // versions that can cancel them.
    if (op->request != nullptr) ucp_request_cancel(worker_, op->request);
    if (op->ep != nullptr && detect_peer_failure_) {
      // What really cancels: closing the endpoint by force completes everything in flight on
      // it with UCS_ERR_CANCELED. The client's calls fail; it must reconnect.
      spdlog::warn(
          "ucx: block transfer (lease {}) not done within {} ms; closing the client's "
          "connection",
          op->lease_id, op_timeout_.count());
      to_close.push_back(op->ep);
    } else if (op->kind != Pending::Kind::kReply) {
      spdlog::warn(
          "ucx: block transfer (lease {}) not done within {} ms; UCX cannot cancel it "
          "without peer failure detection, so it stays granted until UCX completes it "
          "or the client's connection drops",
          op->lease_id, op_timeout_.count());
    }
  }
  for (ucp_ep_h ep : to_close) {
    if (endpoints_.erase(ep) != 0) DropEndpointLocked(ep);
  }
}

absl::StatusOr<RegionId> UcxDataPlane::Register(void* base, std::size_t length) {
  if (!enable_rma_) {
    return absl::FailedPreconditionError(
        "UCX register: one-sided RMA is off (UcxOptions::enable_rma; docs/ucx.md)");
  }
  if (base == nullptr || length == 0) {
    return absl::InvalidArgumentError(
        fmt::format("UCX register: empty region (base {}, length {})", base, length));
  }
  ucp_mem_map_params_t params{};
  params.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH;
  params.address = base;
  params.length = length;
  // Under mu_ although ucp_mem_map is a context call: the progress thread also uses the
  // context's registration cache. Registering a large arena on RDMA pins it, which can take a
  // while; the daemon registers its arenas at start-up.
  MutexLock lock(&mu_);
  ucp_mem_h memh = nullptr;
  if (ucs_status_t st = ucp_mem_map(context_, &params, &memh); st != UCS_OK) {
    return UcsError(st, fmt::format("ucp_mem_map of {} bytes at {}", length, base));
  }
  const RegionId id = next_region_++;
  regions_.emplace(id, Region{memh, base, length});
  return id;
}

absl::StatusOr<std::string> UcxDataPlane::PackedRkey(RegionId region) {
  MutexLock lock(&mu_);
  const auto it = regions_.find(region);
  if (it == regions_.end()) {
    return absl::NotFoundError(fmt::format("UCX region {} is not registered", region));
  }
  void* buffer = nullptr;
  std::size_t size = 0;
  if (ucs_status_t st = ucp_rkey_pack(context_, it->second.memh, &buffer, &size); st != UCS_OK) {
    return UcsError(st, fmt::format("ucp_rkey_pack of region {}", region));
  }
  std::string packed(static_cast<const char*>(buffer), size);
  ucp_rkey_buffer_release(buffer);
  return packed;
}

absl::Status UcxDataPlane::Unregister(RegionId region) {
  MutexLock lock(&mu_);
  const auto it = regions_.find(region);
  if (it == regions_.end()) {
    return absl::NotFoundError(fmt::format("UCX region {} is not registered", region));
  }
  const ucs_status_t st = ucp_mem_unmap(context_, it->second.memh);
  regions_.erase(it);
  if (st != UCS_OK) {
    return UcsError(st, fmt::format("ucp_mem_unmap of region {}", region));
  }
  return absl::OkStatus();
}

}  // namespace cachesvc
