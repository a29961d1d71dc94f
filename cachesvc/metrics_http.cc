// cachesvc/metrics_http.cc: HttpExporter over cpp-httplib (Debian's libcpp-httplib, built with
// its OpenSSL/zlib/brotli options, which the pkg-config target passes to every includer).
#include "cachesvc/metrics_http.h"
#include "base/errno_message.h"

#include <fcntl.h>
#include <httplib.h>
#include <sys/socket.h>

#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <utility>

#include "fmt/format.h"

namespace cachesvc::metrics {
namespace {

// A scrape is one short request every 15 s or more: two workers are plenty, and a one-second
// keep-alive bounds how long Stop() waits on an idle client connection.
constexpr size_t kWorkerThreads = 2;
constexpr time_t kKeepAliveSeconds = 1;
constexpr time_t kIoTimeoutSeconds = 5;

struct HostPort {
  std::string host;
  int port = 0;
};

[[nodiscard]] absl::Status ParseAddress(const std::string& address, HostPort* out) {
  const auto colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("metrics address '{}' is not host:port", address));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("metrics address '{}': write an IPv6 host in brackets, [::1]:port", address));
  }
  const char* begin = address.data() + colon + 1;
  const char* end = address.data() + address.size();
  int port = -1;
  const auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || begin == end || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("metrics address '{}': port must be a number in 0..65535", address));
  }
  out->host = host.empty() ? "0.0.0.0" : std::move(host);
  out->port = port;
  return absl::OkStatus();
}

// httplib's default adds SO_REUSEPORT, which would let a second daemon bind the same port and
// steal half the scrapes. SO_REUSEADDR alone still allows a quick restart.
void SocketOptions(int fd) {
  const int one = 1;
  ::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);
}

}  // namespace

HttpExporter::HttpExporter(const Registry* registry, std::string address)
    : registry_(registry), configured_address_(std::move(address)) {}

HttpExporter::~HttpExporter() { Stop(); }

std::string HttpExporter::address() const {
  if (host_.find(':') != std::string::npos) return fmt::format("[{}]:{}", host_, port());
  return fmt::format("{}:{}", host_, port());
}

absl::Status HttpExporter::Start() {
  if (server_ != nullptr) {
    return absl::FailedPreconditionError(
        fmt::format("metrics HTTP exporter on {} already started", configured_address_));
  }
  HostPort where;
  if (absl::Status s = ParseAddress(configured_address_, &where); !s.ok()) return s;

  auto server = std::make_unique<httplib::Server>();
  server->new_task_queue = [] { return new httplib::ThreadPool(kWorkerThreads); };
  server->set_socket_options(SocketOptions);
  server->set_keep_alive_timeout(kKeepAliveSeconds);
  server->set_read_timeout(kIoTimeoutSeconds, 0);
  server->set_write_timeout(kIoTimeoutSeconds, 0);
  const Registry* registry = registry_;
  server->Get("/metrics", [registry](const httplib::Request&, httplib::Response& response) {
    response.set_content(registry->Render(), kPrometheusContentType);
  });

  // httplib reports only success; errno still holds the failed bind's reason (its clean-up
  // close() of the socket succeeds and leaves errno alone).
  errno = 0;
  int port = -1;
  if (where.port == 0) {
    port = server->bind_to_any_port(where.host);
  } else if (server->bind_to_port(where.host, where.port)) {
    port = where.port;
  }
  if (port < 0) {
    const int err = errno;
    return absl::UnavailableError(
        fmt::format("metrics HTTP exporter cannot listen on {}: {}", configured_address_,
                    err != 0 ? ErrnoMessage(err) : "cannot resolve or bind the address"));
  }

  host_ = where.host;
  server_ = std::move(server);
  listener_done_.store(false, std::memory_order_release);
  httplib::Server* raw = server_.get();
  listener_ = std::thread([this, raw] {
    raw->listen_after_bind();
    listener_done_.store(true, std::memory_order_release);
  });
  // stop() is a no-op until the listener is running, so Stop() must not be able to come first.
  while (!raw->is_running() && !listener_done_.load(std::memory_order_acquire)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  if (!raw->is_running()) {
    listener_.join();
    server_.reset();
    return absl::UnavailableError(fmt::format(
        "metrics HTTP exporter on {}: the listener stopped as it started", configured_address_));
  }
  port_.store(port, std::memory_order_release);
  return absl::OkStatus();
}

void HttpExporter::Stop() {
  if (server_ == nullptr) return;
  server_->stop();
  // The listener returns after shutting down its worker pool, which joins the workers: no
  // request handler runs past this join.
  if (listener_.joinable()) listener_.join();
  server_.reset();
  port_.store(0, std::memory_order_release);
}

}  // namespace cachesvc::metrics
