// client/admin_client.h: a client of the daemon's operator surface: grpc.health.v1, the whole of
// cachesvc.v1.AdminService, and the two BlockService calls an operator needs to ask which blocks
// of a prompt are cached (RegisterEngine, LookupPrefix). Used by cachectl and by tests.
//
// Each call has a deadline (the options' timeout, or the one passed). A daemon that cannot be
// reached (nothing listening, wrong address, deadline passed while connecting) is UNAVAILABLE or
// DEADLINE_EXCEEDED; callers map both to "cannot reach the daemon". Every other status is the
// daemon's own answer, code and message kept (the codes are documented in cachesvc.proto).
//
// Authentication: when a token is set every call carries "authorization: Bearer <token>", the
// metadata the daemon reads (cachesvc/grpc_util.h CallerTenant). Thread-safe, as the gRPC channel
// and stubs are.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "client/grpc_status.h"
#include "grpc/health/v1/health.grpc.pb.h"

namespace cachesvc::client {

struct AdminClientOptions {
  std::string address;                      // host:port or unix:/path
  std::string token;                        // bearer token; empty: none is sent (open mode)
  std::string tls_root_pem;                 // when set: TLS, trusting these roots (PEM text)
  std::string tls_server_name;              // overrides the name checked in the certificate
  std::chrono::milliseconds timeout{3000};  // deadline of each call
};

class AdminClient {
 public:
  // Plaintext, no token: enough for health, status and tiers, which need no tenant.
  explicit AdminClient(const std::string& address);
  // Connects lazily (no RPC until the first call).
  explicit AdminClient(const AdminClientOptions& options);

  // grpc.health.v1.Health/Check for the server as a whole.
  [[nodiscard]] absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth(
      std::chrono::milliseconds timeout);
  [[nodiscard]] absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> CheckHealth();

  // AdminService, one method each, with the options' timeout unless one is passed.
  [[nodiscard]] absl::StatusOr<v1::GetStatusResponse> GetStatus(std::chrono::milliseconds timeout);
  [[nodiscard]] absl::StatusOr<v1::GetStatusResponse> GetStatus();
  [[nodiscard]] absl::StatusOr<v1::ListTiersResponse> ListTiers(std::chrono::milliseconds timeout);
  [[nodiscard]] absl::StatusOr<v1::ListTiersResponse> ListTiers();
  [[nodiscard]] absl::StatusOr<v1::ListSessionsResponse> ListSessions(
      const v1::ListSessionsRequest& request);
  // Every page of ListSessions for `state` (UNSPECIFIED: all), at most `max_sessions`.
  [[nodiscard]] absl::StatusOr<std::vector<v1::SessionInfo>> ListAllSessions(
      v1::SessionState state, std::size_t max_sessions);
  [[nodiscard]] absl::StatusOr<v1::SessionInfo> GetSession(const std::string& session_id,
                                                           bool include_tokens);
  [[nodiscard]] absl::Status PinSession(const std::string& session_id, std::uint32_t duration_ms);
  [[nodiscard]] absl::Status CloseSession(const std::string& session_id);
  // `key` is the 16 wire bytes of the block key.
  [[nodiscard]] absl::StatusOr<v1::GetBlockResponse> GetBlock(const std::string& key);
  [[nodiscard]] absl::StatusOr<v1::EvictResponse> Evict(const v1::EvictRequest& request);
  [[nodiscard]] absl::StatusOr<v1::GetPolicyResponse> GetPolicy();
  [[nodiscard]] absl::StatusOr<v1::SetPolicyResponse> SetPolicy(
      const v1::SetPolicyRequest& request);
  [[nodiscard]] absl::Status Drain(std::uint32_t timeout_ms);

  // BlockService: registers `layout` as an engine with no data-plane transport (it only looks
  // up), and asks which leading blocks of `tokens` are cached, keys derived by the daemon.
  [[nodiscard]] absl::StatusOr<v1::RegisterEngineResponse> RegisterLookupEngine(
      const v1::ModelLayout& layout);
  [[nodiscard]] absl::StatusOr<v1::LookupPrefixResponse> LookupPrefixTokens(
      const std::string& engine_id, const std::vector<std::uint32_t>& tokens);

  const AdminClientOptions& options() const { return options_; }

 private:
  // A context with the deadline and the token.
  std::unique_ptr<grpc::ClientContext> NewContext(std::chrono::milliseconds timeout) const;

  AdminClientOptions options_;
  std::unique_ptr<grpc::health::v1::Health::Stub> health_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
  std::unique_ptr<v1::BlockService::Stub> blocks_;
};

}  // namespace cachesvc::client
