// cachesvc/grpc_util.h: what every gRPC handler of the daemon does the same way: turn an
// absl::Status into a grpc::Status, find the calling tenant from the `authorization` metadata,
// and finish a unary callback call, counting it and its latency.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cachesvc/metrics.h"
#include "cachesvc/rpc_metrics.h"
#include "cachesvc/tenants.h"
#include "grpcpp/grpcpp.h"

namespace cachesvc {

inline grpc::Status ToGrpc(const absl::Status& st) {
  if (st.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(st.code()), std::string(st.message()));
}

// The tenant the call's bearer token names (UNAUTHENTICATED otherwise; the default tenant in open
// mode).
[[nodiscard]] inline absl::StatusOr<const Tenant*> CallerTenant(
    const grpc::CallbackServerContext* context, const TenantRegistry& tenants) {
  const auto& md = context->client_metadata();
  auto it = md.find("authorization");
  const std::string value =
      it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
  return tenants.Authenticate(value);
}

// Finishes a unary callback call with `status`, counting it in `metrics` (may be null):
// cachesvc_rpc_requests_total{method, code} and cachesvc_rpc_latency_seconds{method} since
// `start`.
inline grpc::ServerUnaryReactor* FinishRpc(grpc::CallbackServerContext* context,
                                           metrics::Registry* metrics, const char* method,
                                           std::chrono::steady_clock::time_point start,
                                           const absl::Status& status) {
  RecordRpc(metrics, method, start, status.code());
  auto* reactor = context->DefaultReactor();
  reactor->Finish(ToGrpc(status));
  return reactor;
}

}  // namespace cachesvc
