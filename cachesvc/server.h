// cachesvc/server.h: the daemon's serving side and its lifecycle.
//
// Start() opens the tenants (their salts under the data folder), the block store over the tiers,
// the UCX data plane (`ucx_listen`), the Prometheus /metrics endpoint (`metrics_listen`), and
// binds the gRPC address (TLS when `tls_cert_path`/`tls_key_path` are set) serving
// grpc.health.v1.Health (SERVING once started), gRPC server reflection, cachesvc.v1.BlockService,
// cachesvc.v1.SessionService (sessions persisted in <data_dir>/sessions) and
// cachesvc.v1.AdminService. A reaper thread ends leases that time out. Shutdown() is the
// drain: health turns NOT_SERVING, new calls are refused, calls in flight get up to the drain
// timeout, the data plane stops (its transfers in flight are bounded by the same timeout), the
// host tier's blocks are written to NVMe when `keep_volatile_on_exit`, and the metrics endpoint
// stops. gRPC's own log lines are routed into the daemon's logger.
//
// The owning thread calls Shutdown() (the destructor does if it was not called); gRPC's threads
// serve calls meanwhile.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "base/mutex.h"
#include "cachesvc/admin_service.h"
#include "cachesvc/config.h"
#include "cachesvc/tier_set.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace cachesvc::metrics {
class Registry;
class HttpExporter;
}  // namespace cachesvc::metrics

namespace cachesvc {

class BlockServiceImpl;
class BlockStore;
class KnownLayouts;
class SessionOps;
class SessionServiceImpl;
class SessionStore;
class TenantRegistry;
class UcxDataPlane;
class LocalDataPlane;
struct LocalOptions;
class TierSet;

class Server {
 public:
  // Binds and starts serving. UNAVAILABLE naming the address and the reason ("Address already in
  // use") when it cannot listen there.
  // `tiers` (may be null: no block store, no BlockService) must outlive the server; tenant salts
  // live under `data_dir`. `env` (it must outlive the server; the same one `tiers` was opened
  // with) is the store's and the session service's clock.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<Server>> Start(
      const Config& config, DaemonInfo info, TierSet* tiers, const std::filesystem::path& data_dir,
      Env* env = Env::Default());

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // The address actually bound: the configured one, with the chosen port when it asked for 0.
  [[nodiscard]] const std::string& address() const { return address_; }
  // The data plane's and the metrics endpoint's bound addresses ("" when off).
  [[nodiscard]] std::string ucx_address() const;
  [[nodiscard]] std::string metrics_address() const;
  // Applies what can change live (tenants' tokens, quotas and codecs); the summary of what
  // changed, or the error (nothing changed then).
  [[nodiscard]] absl::StatusOr<std::string> Reload(const Config& config);

  // Drains and stops: see the header comment. Returns when the server has stopped.
  void Shutdown(std::chrono::milliseconds drain_timeout);

 private:
  Server() = default;
  void ReapLeases();
  // Shares the host tier's arena with engines on this host (docs/local.md).
  [[nodiscard]] absl::Status StartLocalDataPlane(const LocalOptions& options, TierSet* tiers);

  bool keep_volatile_on_exit_ = true;
  std::unique_ptr<TenantRegistry> tenants_;
  std::unique_ptr<metrics::Registry> metrics_;
  std::unique_ptr<metrics::HttpExporter> exporter_;
  std::unique_ptr<BlockStore> store_;
  std::unique_ptr<UcxDataPlane> ucx_;
  std::unique_ptr<LocalDataPlane> local_;  // after blocks_ in Start, stopped before store_
  // Sessions (<data_dir>/sessions); declared before the services that point into them.
  std::unique_ptr<SessionStore> session_store_;
  std::unique_ptr<KnownLayouts> layouts_;
  std::unique_ptr<SessionOps> session_ops_;
  std::unique_ptr<BlockServiceImpl> blocks_;
  std::unique_ptr<SessionServiceImpl> sessions_;
  std::unique_ptr<AdminServiceImpl> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  Env* env_ = Env::Default();  // the store's and the reaper's clock
  std::thread reaper_;
  Mutex reaper_mu_;
  CondVar reaper_cv_;
  bool stopping_ ABSL_GUARDED_BY(reaper_mu_) = false;
  bool shut_down_ = false;
};

// Binds `address` once and lets it go: OK when gRPC will be able to listen there, else UNAVAILABLE
// with the exact reason ("Address already in use", "Cannot assign requested address"). Start()
// checks this itself; the daemon also calls it before taking the data folder, so a bad address
// leaves no trace on disk. unix: addresses are not probed.
[[nodiscard]] absl::Status ProbeListenAddress(const std::string& address);

// Routes gRPC's internal log lines into spdlog (errors as errors, the rest at debug and below).
void RouteGrpcLogging();

}  // namespace cachesvc
