// cachesvc/session_service.h: cachesvc.v1.SessionService, what agent frameworks call. Each
// handler authenticates the tenant (UNAUTHENTICATED), runs the operation in SessionOps
// (cachesvc/session_ops.h: validation, tenancy, quota, drain, time, the store) and finishes the
// call, counting it per method in the metrics registry like BlockService does.
//
// Thread-safe: gRPC calls handlers concurrently; SessionOps and the registries are thread-safe.
#pragma once

#include "cachesvc/metrics.h"
#include "cachesvc/session_ops.h"
#include "cachesvc/tenants.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"

namespace cachesvc {

class SessionServiceImpl final : public v1::SessionService::CallbackService {
 public:
  // All must outlive the service; `metrics` may be null.
  SessionServiceImpl(SessionOps* ops, const TenantRegistry* tenants, metrics::Registry* metrics)
      : ops_(ops), tenants_(tenants), metrics_(metrics) {}

  grpc::ServerUnaryReactor* OpenSession(grpc::CallbackServerContext* context,
                                        const v1::OpenSessionRequest* request,
                                        v1::OpenSessionResponse* response) override;
  grpc::ServerUnaryReactor* AppendTokens(grpc::CallbackServerContext* context,
                                         const v1::AppendTokensRequest* request,
                                         v1::AppendTokensResponse* response) override;
  grpc::ServerUnaryReactor* BeginToolCall(grpc::CallbackServerContext* context,
                                          const v1::BeginToolCallRequest* request,
                                          v1::BeginToolCallResponse* response) override;
  grpc::ServerUnaryReactor* EndToolCall(grpc::CallbackServerContext* context,
                                        const v1::EndToolCallRequest* request,
                                        v1::EndToolCallResponse* response) override;
  grpc::ServerUnaryReactor* ForkSession(grpc::CallbackServerContext* context,
                                        const v1::ForkSessionRequest* request,
                                        v1::ForkSessionResponse* response) override;
  grpc::ServerUnaryReactor* TruncateSession(grpc::CallbackServerContext* context,
                                            const v1::TruncateSessionRequest* request,
                                            v1::TruncateSessionResponse* response) override;
  grpc::ServerUnaryReactor* PinSession(grpc::CallbackServerContext* context,
                                       const v1::PinSessionRequest* request,
                                       v1::PinSessionResponse* response) override;
  grpc::ServerUnaryReactor* CloseSession(grpc::CallbackServerContext* context,
                                         const v1::CloseSessionRequest* request,
                                         v1::CloseSessionResponse* response) override;
  grpc::ServerUnaryReactor* GetSession(grpc::CallbackServerContext* context,
                                       const v1::GetSessionRequest* request,
                                       v1::SessionInfo* response) override;

 private:
  // Authenticates, runs `op(tenant)` (an absl::StatusOr<Response>), stores its value in
  // `response` and finishes the call.
  template <typename Response, typename Op>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* context, const char* method,
                                  Response* response, Op op);

  SessionOps* const ops_;
  const TenantRegistry* const tenants_;
  metrics::Registry* const metrics_;
};

}  // namespace cachesvc
