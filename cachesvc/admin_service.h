// cachesvc/admin_service.h: cachesvc.v1.AdminService, the operators' API.
//
// Handlers stay thin: they read the daemon's state and answer; policy and storage logic belong to
// the core. What each call does today:
//   - GetStatus, ListTiers: no token needed (cachectl status/tiers; counts only, no tenant data).
//   - ListSessions, GetSession, PinSession, CloseSession: any tenant's token; the call acts on
//     that tenant's sessions only, exactly like SessionService (SessionOps): another tenant's
//     session is NOT_FOUND. In open mode every session is the "default" tenant's, so an operator
//     sees them all. ListSessions pages in id order and returns no tokens or block locations.
//   - Drain: any tenant's token, and a caller on this host (loopback or unix socket peer;
//     PERMISSION_DENIED otherwise), because it affects every tenant. Marks the daemon draining:
//     GetStatus reports it and new sessions (open, fork) are UNAVAILABLE; everything else keeps
//     working and it is not undone. SIGTERM does the full drain (cachesvc/server.h).
//   - GetBlock: any tenant's token; describes one of that tenant's blocks (tiers, codec, length,
//     checksum, sessions, leases, last access); another tenant's key is NOT_FOUND.
//   - Evict: any tenant's token; removes the tenant's copies of one block (FAILED_PRECONDITION
//     while it is leased), of the blocks only one of its sessions references, or of all its
//     blocks, from one tier or all; leased blocks are skipped. Counts and frees; never touches
//     another tenant's blocks.
//   - GetPolicy: the placement policy and its knobs with their help. SetPolicy: a caller on this
//     host (it affects every tenant); all knobs are checked first and applied together, or none
//     is (INVALID_ARGUMENT names the bad one); answers the knobs after the change.
// Thread-safe: gRPC calls handlers concurrently; all state read here is atomic, constant, or
// behind the thread-safe objects it points to.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "cachesvc/tier_set.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"

namespace cachesvc {

class BlockStore;
class SessionOps;
class TenantRegistry;
namespace metrics {
class Registry;
}  // namespace metrics

// Facts about this daemon fixed at start.
struct DaemonInfo {
  std::string version;  // "0.1.0 (commit)"
  std::int64_t started_unix_ms = 0;
  bool gpu_present = false;
};

// What the calls beyond GetStatus and ListTiers act on. Each may be null: without `tenants` and
// `sessions` the session calls and Drain answer UNIMPLEMENTED; without `blocks` GetStatus counts
// no blocks or leases. All must outlive the service.
struct AdminBackends {
  const TenantRegistry* tenants = nullptr;
  SessionOps* sessions = nullptr;
  BlockStore* blocks = nullptr;
  metrics::Registry* metrics = nullptr;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  // `tiers` may be null (no tiers); it must outlive the service.
  AdminServiceImpl(DaemonInfo info, const TierSet* tiers, AdminBackends backends = {})
      : info_(std::move(info)), tiers_(tiers), backends_(backends) {}

  // Marks the daemon as draining: GetStatus reports it from then on, and new sessions are
  // refused (SessionOps::SetDraining).
  void SetDraining();

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;
  grpc::ServerUnaryReactor* ListTiers(grpc::CallbackServerContext* context,
                                      const v1::ListTiersRequest* request,
                                      v1::ListTiersResponse* response) override;
  grpc::ServerUnaryReactor* ListSessions(grpc::CallbackServerContext* context,
                                         const v1::ListSessionsRequest* request,
                                         v1::ListSessionsResponse* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;
  grpc::ServerUnaryReactor* GetBlock(grpc::CallbackServerContext* context,
                                     const v1::GetBlockRequest* request,
                                     v1::GetBlockResponse* response) override;
  grpc::ServerUnaryReactor* Evict(grpc::CallbackServerContext* context,
                                  const v1::EvictRequest* request,
                                  v1::EvictResponse* response) override;
  grpc::ServerUnaryReactor* PinSession(grpc::CallbackServerContext* context,
                                       const v1::PinSessionRequest* request,
                                       v1::PinSessionResponse* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const v1::CloseSessionRequest* request,
                                         v1::CloseSessionResponse* response) override;
  grpc::ServerUnaryReactor* GetPolicy(grpc::CallbackServerContext* context,
                                      const v1::GetPolicyRequest* request,
                                      v1::GetPolicyResponse* response) override;
  grpc::ServerUnaryReactor* SetPolicy(grpc::CallbackServerContext* context,
                                      const v1::SetPolicyRequest* request,
                                      v1::SetPolicyResponse* response) override;
  grpc::ServerUnaryReactor* Drain(grpc::CallbackServerContext* context,
                                  const v1::DrainRequest* request,
                                  v1::DrainResponse* response) override;

 private:
  // Authenticates, runs `op(tenant)` (an absl::StatusOr<Response>), stores its value in
  // `response` and finishes the call, counted as method "Admin.<name>".
  template <typename Response, typename Op>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context, const char* method,
                                  Response* response, Op op);

  const DaemonInfo info_;
  const TierSet* const tiers_;
  const AdminBackends backends_;
  std::atomic<bool> draining_{false};
};

}  // namespace cachesvc
