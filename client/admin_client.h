// client/admin_client.h: a small client of the daemon's admin surface (health and status), used by
// cachectl and by tests.
//
// Each call takes its own deadline. A daemon that cannot be reached (nothing listening, wrong
// address, deadline passed while connecting) is UNAVAILABLE or DEADLINE_EXCEEDED; callers map both
// to "cannot reach the daemon". Thread-safe, as the gRPC channel and stubs are.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cachesvc::client {

class AdminClient {
 public:
  // Connects lazily to `address` (host:port or unix:/path) over plaintext gRPC.
  explicit AdminClient(const std::string& address);

  // grpc.health.v1.Health/Check for the server as a whole.
  absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      std::chrono::milliseconds timeout);

  // cachesvc.v1.AdminService/GetStatus.
  absl::StatusOr<v1::GetStatusResponse> GetStatus(std::chrono::milliseconds timeout);

  // cachesvc.v1.AdminService/ListTiers.
  absl::StatusOr<v1::ListTiersResponse> ListTiers(std::chrono::milliseconds timeout);

 private:
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

// A gRPC status as an absl::Status (the codes are the same set).
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace cachesvc::client
