// cachesvc/metrics_http.h: the Prometheus scrape endpoint, `GET /metrics` over HTTP, served from a
// metrics::Registry by cpp-httplib on its own threads.
//
// Start() binds the configured "host:port" in the calling thread, so a bad or busy address is an
// error there and then, and then serves on a listener thread and a small worker pool; each scrape
// calls Registry::Render(). Any other path is 404. Stop() closes the socket and joins every thread
// the exporter started; after it returns no scrape is running. The listening socket is bound
// without SO_REUSEPORT, so a second process cannot share the port by accident.
//
// Thread-safety: Start, Stop and the destructor are called by the owning thread; port() and
// address() may be read from any thread once Start() has returned.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "cachesvc/metrics.h"

namespace httplib {
class Server;
}  // namespace httplib

namespace cachesvc::metrics {

inline constexpr char kPrometheusContentType[] = "text/plain; version=0.0.4; charset=utf-8";

class HttpExporter {
 public:
  // `registry` must outlive the exporter. `address` is "host:port" or "[ipv6]:port"; an empty host
  // means every IPv4 interface; port 0 picks a free port (see port()).
  HttpExporter(const Registry* registry, std::string address);
  HttpExporter(const HttpExporter&) = delete;
  HttpExporter& operator=(const HttpExporter&) = delete;
  ~HttpExporter();  // Stop()

  // INVALID_ARGUMENT for an address that does not parse; UNAVAILABLE naming the address and the
  // reason ("Address already in use") when it cannot listen there; FAILED_PRECONDITION when
  // already started. A stopped exporter may be started again.
  [[nodiscard]] absl::Status Start();
  // Stops serving and joins the exporter's threads. Idempotent.
  void Stop();

  // The port bound by Start() (the chosen one when the address asked for 0); 0 when not serving.
  [[nodiscard]] int port() const { return port_.load(std::memory_order_acquire); }
  // "host:port" with the bound port.
  [[nodiscard]] std::string address() const;

 private:
  // Constant after construction.
  const Registry* const registry_;
  const std::string configured_address_;

  // Owned by the thread that calls Start/Stop.
  std::string host_;
  std::unique_ptr<httplib::Server> server_;
  std::thread listener_;
  std::atomic<bool> listener_done_{false};
  std::atomic<int> port_{0};
};

}  // namespace cachesvc::metrics
