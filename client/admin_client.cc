#include "client/admin_client.h"

#include <grpcpp/grpcpp.h>

namespace cachesvc::client {
namespace {

void SetDeadline(grpc::ClientContext& ctx, std::chrono::milliseconds timeout) {
  ctx.set_deadline(std::chrono::system_clock::now() + timeout);
}

}  // namespace

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

AdminClient::AdminClient(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  health_ = grpc::health::v1::Health::NewStub(channel);
  admin_ = v1::AdminService::NewStub(channel);
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> AdminClient::CheckHealth(
    std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  grpc::health::v1::HealthCheckRequest request;
  grpc::health::v1::HealthCheckResponse response;
  if (grpc::Status s = health_->Check(&ctx, request, &response); !s.ok()) return FromGrpc(s);
  return response.status();
}

absl::StatusOr<v1::GetStatusResponse> AdminClient::GetStatus(std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::GetStatusResponse response;
  if (grpc::Status s = admin_->GetStatus(&ctx, v1::GetStatusRequest(), &response); !s.ok()) {
    return FromGrpc(s);
  }
  return response;
}

absl::StatusOr<v1::ListTiersResponse> AdminClient::ListTiers(std::chrono::milliseconds timeout) {
  grpc::ClientContext ctx;
  SetDeadline(ctx, timeout);
  v1::ListTiersResponse response;
  if (grpc::Status s = admin_->ListTiers(&ctx, v1::ListTiersRequest(), &response); !s.ok()) {
    return FromGrpc(s);
  }
  return response;
}

}  // namespace cachesvc::client
