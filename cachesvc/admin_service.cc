#include "cachesvc/admin_service.h"

#include <chrono>
#include <string_view>

#include "cachesvc/block_store.h"
#include "cachesvc/grpc_util.h"
#include "cachesvc/session_ops.h"
#include "cachesvc/tenants.h"

namespace cachesvc {
namespace {

// Whether the call comes from this host: gRPC's peer string for loopback TCP and unix sockets.
bool IsLocalPeer(std::string_view peer) {
  for (std::string_view local :
       {"unix:", "unix-abstract:", "ipv4:127.", "ipv6:[::1]:", "ipv6:[::ffff:127."}) {
    if (peer.starts_with(local)) return true;
  }
  return false;
}

}  // namespace

void AdminServiceImpl::SetDraining() {
  draining_.store(true, std::memory_order_relaxed);
  if (backends_.sessions != nullptr) backends_.sessions->SetDraining();
}

template <typename Response, typename Op>
grpc::ServerUnaryReactor* AdminServiceImpl::Serve(grpc::CallbackServerContext* context,
                                                  const char* method, Response* response, Op op) {
  const auto start = std::chrono::steady_clock::now();
  if (backends_.tenants == nullptr || backends_.sessions == nullptr) {
    return FinishRpc(context, backends_.metrics, method, start,
                     absl::UnimplementedError("this daemon serves no sessions"));
  }
  auto tenant = CallerTenant(context, *backends_.tenants);
  if (!tenant.ok()) return FinishRpc(context, backends_.metrics, method, start, tenant.status());
  absl::StatusOr<Response> result = op(**tenant);
  if (result.ok()) *response = std::move(*result);
  return FinishRpc(context, backends_.metrics, method, start, result.status());
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetStatus(grpc::CallbackServerContext* context,
                                                      const v1::GetStatusRequest* /*request*/,
                                                      v1::GetStatusResponse* response) {
  response->set_version(info_.version);
  response->set_started_unix_ms(info_.started_unix_ms);
  response->set_draining(draining_.load(std::memory_order_relaxed));
  response->set_gpu_present(info_.gpu_present);
  if (backends_.sessions != nullptr) {
    response->set_sessions_open(backends_.sessions->open_sessions());
  }
  if (backends_.blocks != nullptr) {
    response->set_blocks_indexed(backends_.blocks->Blocks());
    const BlockStoreStats stats = backends_.blocks->Stats();
    response->set_leases_outstanding(stats.leases_read + stats.leases_write);
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListTiers(grpc::CallbackServerContext* context,
                                                      const v1::ListTiersRequest* /*request*/,
                                                      v1::ListTiersResponse* response) {
  if (tiers_ != nullptr) {
    for (const tiers::Tier* tier : tiers_->tiers()) {
      const tiers::TierStats s = tier->Stats();
      v1::TierStats* out = response->add_tiers();
      switch (s.kind) {
        case tiers::TierKind::kHbm:
          out->set_kind(v1::TIER_HBM);
          break;
        case tiers::TierKind::kHost:
          out->set_kind(v1::TIER_HOST);
          break;
        case tiers::TierKind::kNvme:
          out->set_kind(v1::TIER_NVME);
          break;
      }
      out->set_name(s.name);
      out->set_capacity_bytes(s.capacity_bytes);
      out->set_used_bytes(s.allocated_bytes);
      out->set_stored_bytes(s.stored_bytes);
      out->set_free_bytes(s.free_bytes);
      out->set_blocks(s.blocks);
      out->set_read_bytes(s.read_bytes);
      out->set_written_bytes(s.write_bytes);
      out->set_checksum_failures(s.checksum_failures);
      out->set_leases_active(s.leases_active);
      out->set_numa_node(tiers_->NumaNode(tier));
      out->set_internal_fragmentation(s.internal_fragmentation);
      out->set_external_fragmentation(s.external_fragmentation);
      // hits, misses and evictions are the service core's to count; it does not run yet.
    }
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* AdminServiceImpl::ListSessions(grpc::CallbackServerContext* context,
                                                         const v1::ListSessionsRequest* request,
                                                         v1::ListSessionsResponse* response) {
  return Serve(context, "Admin.ListSessions", response,
               [&](const Tenant& t) { return backends_.sessions->List(t, *request); });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                       const v1::GetSessionRequest* request,
                                                       v1::SessionInfo* response) {
  return Serve(context, "Admin.GetSession", response,
               [&](const Tenant& t) { return backends_.sessions->Get(t, *request); });
}

grpc::ServerUnaryReactor* AdminServiceImpl::PinSession(grpc::CallbackServerContext* context,
                                                       const v1::PinSessionRequest* request,
                                                       v1::PinSessionResponse* response) {
  return Serve(context, "Admin.PinSession", response,
               [&](const Tenant& t) { return backends_.sessions->Pin(t, *request); });
}

grpc::ServerUnaryReactor* AdminServiceImpl::CloseSession(grpc::CallbackServerContext* context,
                                                         const v1::CloseSessionRequest* request,
                                                         v1::CloseSessionResponse* response) {
  return Serve(context, "Admin.CloseSession", response,
               [&](const Tenant& t) { return backends_.sessions->Close(t, *request); });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetBlock(grpc::CallbackServerContext* context,
                                                     const v1::GetBlockRequest* /*request*/,
                                                     v1::GetBlockResponse* response) {
  return Serve(context, "Admin.GetBlock", response,
               [](const Tenant&) -> absl::StatusOr<v1::GetBlockResponse> {
                 return absl::UnimplementedError(
                     "GetBlock: the block store has no per-block description yet (it answers "
                     "only prefix lookups: tiers and codec, no length, checksum, leases or "
                     "accesses)");
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Evict(grpc::CallbackServerContext* context,
                                                  const v1::EvictRequest* /*request*/,
                                                  v1::EvictResponse* response) {
  return Serve(context, "Admin.Evict", response,
               [](const Tenant&) -> absl::StatusOr<v1::EvictResponse> {
                 return absl::UnimplementedError(
                     "Evict: the block store has no eviction on demand yet (blocks leave a tier "
                     "only when it is full), and sessions are not tied to blocks yet");
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::GetPolicy(grpc::CallbackServerContext* context,
                                                      const v1::GetPolicyRequest* /*request*/,
                                                      v1::GetPolicyResponse* response) {
  return Serve(context, "Admin.GetPolicy", response,
               [](const Tenant&) -> absl::StatusOr<v1::GetPolicyResponse> {
                 return absl::UnimplementedError(
                     "GetPolicy: the block store does not expose its residency policy or "
                     "its knobs yet");
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetPolicy(grpc::CallbackServerContext* context,
                                                      const v1::SetPolicyRequest* /*request*/,
                                                      v1::SetPolicyResponse* response) {
  return Serve(context, "Admin.SetPolicy", response,
               [](const Tenant&) -> absl::StatusOr<v1::SetPolicyResponse> {
                 return absl::UnimplementedError(
                     "SetPolicy: the residency policy has no knobs that can change at run time "
                     "yet");
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Drain(grpc::CallbackServerContext* context,
                                                  const v1::DrainRequest* /*request*/,
                                                  v1::DrainResponse* response) {
  return Serve(context, "Admin.Drain", response,
               [&](const Tenant&) -> absl::StatusOr<v1::DrainResponse> {
                 if (!IsLocalPeer(context->peer())) {
                   return absl::PermissionDeniedError(
                       "Drain affects every tenant: call it from the daemon's host");
                 }
                 SetDraining();
                 return v1::DrainResponse();
               });
}

}  // namespace cachesvc
