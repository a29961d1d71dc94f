#include "cachesvc/admin_service.h"

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "cachesvc/block_store.h"
#include "cachesvc/grpc_util.h"
#include "cachesvc/session_ops.h"
#include "cachesvc/tenants.h"
#include "cachesvc/wire.h"

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
                                                     const v1::GetBlockRequest* request,
                                                     v1::GetBlockResponse* response) {
  return Serve(context, "Admin.GetBlock", response,
               [&](const Tenant& t) -> absl::StatusOr<v1::GetBlockResponse> {
                 if (backends_.blocks == nullptr) {
                   return absl::UnimplementedError("GetBlock: this daemon stores no blocks");
                 }
                 auto key = KeyFromProto(request->key(), "key");
                 if (!key.ok()) return key.status();
                 auto d = backends_.blocks->Describe(t.name(), t.salt(), *key);
                 if (!d.ok()) return d.status();
                 v1::GetBlockResponse out;
                 out.mutable_key()->set_key(std::string(d->key.Bytes()));
                 out.set_layout_fingerprint(d->layout_fingerprint);
                 for (tiers::TierKind k :
                      {tiers::TierKind::kHbm, tiers::TierKind::kHost, tiers::TierKind::kNvme}) {
                   if ((d->tiers & TierBit(k)) != 0) out.add_tiers(TierToProto(k));
                 }
                 out.set_codec(CodecToProto(d->codec));
                 out.set_length(d->length);
                 out.set_checksum(d->checksum);
                 out.set_sessions(d->sessions);
                 out.set_leases(d->leases);
                 out.set_last_access_unix_ms(d->last_access_unix_ms);
                 out.set_accesses(d->accesses);
                 return out;
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::Evict(grpc::CallbackServerContext* context,
                                                  const v1::EvictRequest* request,
                                                  v1::EvictResponse* response) {
  return Serve(
      context, "Admin.Evict", response, [&](const Tenant& t) -> absl::StatusOr<v1::EvictResponse> {
        if (backends_.blocks == nullptr) {
          return absl::UnimplementedError("Evict: this daemon stores no blocks");
        }
        auto tier = TierFromProto(request->tier());
        if (!tier.ok()) return tier.status();
        EvictTarget target;
        switch (request->target_case()) {
          case v1::EvictRequest::kKey: {
            auto key = KeyFromProto(request->key(), "key");
            if (!key.ok()) return key.status();
            target.key = *key;
            break;
          }
          case v1::EvictRequest::kSessionId:
            if (absl::Status st = backends_.sessions->CheckSession(t, request->session_id());
                !st.ok()) {
              return st;
            }
            target.session_id = request->session_id();
            break;
          case v1::EvictRequest::kAll:
            if (!request->all()) {
              return absl::InvalidArgumentError("all: false; set it to evict every block");
            }
            target.all = true;
            break;
          default:
            return absl::InvalidArgumentError("target: give a key, a session_id or all");
        }
        auto result = backends_.blocks->Evict(t.name(), t.salt(), target, *tier);
        if (!result.ok()) return result.status();
        v1::EvictResponse out;
        out.set_blocks_evicted(result->blocks);
        out.set_bytes_freed(result->bytes);
        return out;
      });
}

namespace {

void AddKnobs(const PlacementPolicy& p, google::protobuf::RepeatedPtrField<v1::PolicyKnob>* out) {
  for (PlacementKnob& k : PlacementKnobs(p)) {
    v1::PolicyKnob* knob = out->Add();
    knob->set_name(std::move(k.name));
    knob->set_value(std::move(k.value));
    knob->set_help(std::move(k.help));
  }
}

}  // namespace

grpc::ServerUnaryReactor* AdminServiceImpl::GetPolicy(grpc::CallbackServerContext* context,
                                                      const v1::GetPolicyRequest* /*request*/,
                                                      v1::GetPolicyResponse* response) {
  return Serve(context, "Admin.GetPolicy", response,
               [&](const Tenant&) -> absl::StatusOr<v1::GetPolicyResponse> {
                 if (backends_.blocks == nullptr) {
                   return absl::UnimplementedError("GetPolicy: this daemon stores no blocks");
                 }
                 const PlacementPolicy p = backends_.blocks->Policy();
                 v1::GetPolicyResponse out;
                 out.set_policy(p.name);
                 AddKnobs(p, out.mutable_knobs());
                 return out;
               });
}

grpc::ServerUnaryReactor* AdminServiceImpl::SetPolicy(grpc::CallbackServerContext* context,
                                                      const v1::SetPolicyRequest* request,
                                                      v1::SetPolicyResponse* response) {
  return Serve(context, "Admin.SetPolicy", response,
               [&](const Tenant&) -> absl::StatusOr<v1::SetPolicyResponse> {
                 if (backends_.blocks == nullptr) {
                   return absl::UnimplementedError("SetPolicy: this daemon stores no blocks");
                 }
                 if (!IsLocalPeer(context->peer())) {
                   return absl::PermissionDeniedError(
                       "SetPolicy affects every tenant: call it from the daemon's host");
                 }
                 if (request->knobs().empty()) {
                   return absl::InvalidArgumentError("knobs: empty; nothing to set");
                 }
                 PlacementPolicy p = backends_.blocks->Policy();
                 for (const v1::PolicyKnob& knob : request->knobs()) {
                   if (absl::Status st = SetPlacementKnob(p, knob.name(), knob.value()); !st.ok()) {
                     return st;
                   }
                 }
                 if (absl::Status st = backends_.blocks->SetPolicy(p); !st.ok()) return st;
                 v1::SetPolicyResponse out;
                 AddKnobs(backends_.blocks->Policy(), out.mutable_knobs());
                 return out;
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
