#include "cachesvc/session_service.h"

#include <chrono>

#include "cachesvc/grpc_util.h"

namespace cachesvc {

template <typename Response, typename Op>
grpc::ServerUnaryReactor* SessionServiceImpl::Serve(grpc::CallbackServerContext* context,
                                                    const char* method, Response* response, Op op) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return FinishRpc(context, metrics_, method, start, tenant.status());
  absl::StatusOr<Response> result = op(**tenant);
  if (result.ok()) *response = std::move(*result);
  return FinishRpc(context, metrics_, method, start, result.status());
}

grpc::ServerUnaryReactor* SessionServiceImpl::OpenSession(grpc::CallbackServerContext* context,
                                                          const v1::OpenSessionRequest* request,
                                                          v1::OpenSessionResponse* response) {
  return Serve(context, "OpenSession", response,
               [&](const Tenant& t) { return ops_->Open(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::AppendTokens(grpc::CallbackServerContext* context,
                                                           const v1::AppendTokensRequest* request,
                                                           v1::AppendTokensResponse* response) {
  return Serve(context, "AppendTokens", response,
               [&](const Tenant& t) { return ops_->Append(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::BeginToolCall(grpc::CallbackServerContext* context,
                                                            const v1::BeginToolCallRequest* request,
                                                            v1::BeginToolCallResponse* response) {
  return Serve(context, "BeginToolCall", response,
               [&](const Tenant& t) { return ops_->BeginToolCall(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::EndToolCall(grpc::CallbackServerContext* context,
                                                          const v1::EndToolCallRequest* request,
                                                          v1::EndToolCallResponse* response) {
  return Serve(context, "EndToolCall", response,
               [&](const Tenant& t) { return ops_->EndToolCall(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::ForkSession(grpc::CallbackServerContext* context,
                                                          const v1::ForkSessionRequest* request,
                                                          v1::ForkSessionResponse* response) {
  return Serve(context, "ForkSession", response,
               [&](const Tenant& t) { return ops_->Fork(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::TruncateSession(
    grpc::CallbackServerContext* context, const v1::TruncateSessionRequest* request,
    v1::TruncateSessionResponse* response) {
  return Serve(context, "TruncateSession", response,
               [&](const Tenant& t) { return ops_->Truncate(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::PinSession(grpc::CallbackServerContext* context,
                                                         const v1::PinSessionRequest* request,
                                                         v1::PinSessionResponse* response) {
  return Serve(context, "PinSession", response,
               [&](const Tenant& t) { return ops_->Pin(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::CloseSession(grpc::CallbackServerContext* context,
                                                           const v1::CloseSessionRequest* request,
                                                           v1::CloseSessionResponse* response) {
  return Serve(context, "CloseSession", response,
               [&](const Tenant& t) { return ops_->Close(t, *request); });
}

grpc::ServerUnaryReactor* SessionServiceImpl::GetSession(grpc::CallbackServerContext* context,
                                                         const v1::GetSessionRequest* request,
                                                         v1::SessionInfo* response) {
  return Serve(context, "GetSession", response,
               [&](const Tenant& t) { return ops_->Get(t, *request); });
}

}  // namespace cachesvc
