// cachesvc/server.h: the daemon's gRPC server and its lifecycle.
//
// Start() binds the configured address and serves grpc.health.v1.Health (SERVING once started),
// gRPC server reflection and cachesvc.v1.AdminService. Shutdown() is the drain: health turns
// NOT_SERVING, new calls are refused, calls in flight get up to the drain timeout to finish and
// are then cancelled. gRPC's own log lines are routed into the daemon's logger.
//
// The owning thread calls Shutdown() (the destructor does if it was not called); gRPC's threads
// serve calls meanwhile.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cachesvc/admin_service.h"
#include "cachesvc/config.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace cachesvc {

class Server {
 public:
  // Binds and starts serving. UNAVAILABLE naming the address and the reason ("Address already in
  // use") when it cannot listen there.
  // `tiers` (may be null) must outlive the server.
  static absl::StatusOr<std::unique_ptr<Server>> Start(const Config& config, DaemonInfo info,
                                                       const TierSet* tiers);

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  ~Server();

  // The address actually bound: the configured one, with the chosen port when it asked for 0.
  [[nodiscard]] const std::string& address() const { return address_; }

  // Drains and stops: see the header comment. Returns when the server has stopped.
  void Shutdown(std::chrono::milliseconds drain_timeout);

 private:
  Server(std::unique_ptr<AdminServiceImpl> admin, std::unique_ptr<grpc::Server> server,
         std::string address);

  std::unique_ptr<AdminServiceImpl> admin_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  bool shut_down_ = false;
};

// Binds `address` once and lets it go: OK when gRPC will be able to listen there, else UNAVAILABLE
// with the exact reason ("Address already in use", "Cannot assign requested address"). Start()
// checks this itself; the daemon also calls it before taking the data folder, so a bad address
// leaves no trace on disk. unix: addresses are not probed.
absl::Status ProbeListenAddress(const std::string& address);

// Routes gRPC's internal log lines into spdlog (errors as errors, the rest at debug and below).
void RouteGrpcLogging();

}  // namespace cachesvc
