#include "client/admin_client.h"

#include <grpcpp/grpcpp.h>

#include "client/grpc_channel.h"

namespace cachesvc::client {

namespace {

// Calls one unary method and returns its response or its status.
template <typename Stub, typename Request, typename Response>
[[nodiscard]] absl::StatusOr<Response> Unary(
    Stub& stub, grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&, Response*),
    grpc::ClientContext* ctx, const Request& request) {
  Response response;
  if (grpc::Status s = (stub.*method)(ctx, request, &response); !s.ok()) return FromGrpc(s);
  return response;
}

}  // namespace

namespace {
AdminClientOptions PlainOptions(const std::string& address) {
  AdminClientOptions options;
  options.address = address;
  return options;
}
}  // namespace

AdminClient::AdminClient(const std::string& address) : AdminClient(PlainOptions(address)) {}

AdminClient::AdminClient(const AdminClientOptions& options) : options_(options) {
  auto channel = MakeChannel(options_.address, options_.tls_root_pem, options_.tls_server_name);
  health_ = grpc::health::v1::Health::NewStub(channel);
  admin_ = v1::AdminService::NewStub(channel);
  blocks_ = v1::BlockService::NewStub(channel);
}

std::unique_ptr<grpc::ClientContext> AdminClient::NewContext(
    std::chrono::milliseconds timeout) const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + timeout);
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
  return ctx;
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> AdminClient::CheckHealth(
    std::chrono::milliseconds timeout) {
  auto ctx = NewContext(timeout);
  auto response = Unary(*health_, &grpc::health::v1::Health::Stub::Check, ctx.get(),
                        grpc::health::v1::HealthCheckRequest());
  if (!response.ok()) return response.status();
  return response->status();
}

absl::StatusOr<grpc::health::v1::HealthCheckResponse::ServingStatus> AdminClient::CheckHealth() {
  return CheckHealth(options_.timeout);
}

absl::StatusOr<v1::GetStatusResponse> AdminClient::GetStatus(std::chrono::milliseconds timeout) {
  auto ctx = NewContext(timeout);
  return Unary(*admin_, &v1::AdminService::Stub::GetStatus, ctx.get(), v1::GetStatusRequest());
}

absl::StatusOr<v1::GetStatusResponse> AdminClient::GetStatus() {
  return GetStatus(options_.timeout);
}

absl::StatusOr<v1::ListTiersResponse> AdminClient::ListTiers(std::chrono::milliseconds timeout) {
  auto ctx = NewContext(timeout);
  return Unary(*admin_, &v1::AdminService::Stub::ListTiers, ctx.get(), v1::ListTiersRequest());
}

absl::StatusOr<v1::ListTiersResponse> AdminClient::ListTiers() {
  return ListTiers(options_.timeout);
}

absl::StatusOr<v1::ListSessionsResponse> AdminClient::ListSessions(
    const v1::ListSessionsRequest& request) {
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::ListSessions, ctx.get(), request);
}

absl::StatusOr<std::vector<v1::SessionInfo>> AdminClient::ListAllSessions(
    v1::SessionState state, std::size_t max_sessions) {
  std::vector<v1::SessionInfo> all;
  v1::ListSessionsRequest request;
  request.set_state(state);
  while (all.size() < max_sessions) {
    auto page = ListSessions(request);
    if (!page.ok()) return page.status();
    for (auto& s : *page->mutable_sessions()) {
      if (all.size() == max_sessions) break;
      all.push_back(std::move(s));
    }
    // A page token equal to the last one would loop forever; the daemon never sends one, but a
    // CLI must not hang on a bug either.
    if (page->next_page_token().empty() || page->next_page_token() == request.page_token()) break;
    request.set_page_token(page->next_page_token());
  }
  return all;
}

absl::StatusOr<v1::SessionInfo> AdminClient::GetSession(const std::string& session_id,
                                                        bool include_tokens) {
  v1::GetSessionRequest request;
  request.set_session_id(session_id);
  request.set_include_tokens(include_tokens);
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::GetSession, ctx.get(), request);
}

absl::Status AdminClient::PinSession(const std::string& session_id, std::uint32_t duration_ms) {
  v1::PinSessionRequest request;
  request.set_session_id(session_id);
  request.set_duration_ms(duration_ms);
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::PinSession, ctx.get(), request).status();
}

absl::Status AdminClient::CloseSession(const std::string& session_id) {
  v1::CloseSessionRequest request;
  request.set_session_id(session_id);
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::CloseSession, ctx.get(), request).status();
}

absl::StatusOr<v1::GetBlockResponse> AdminClient::GetBlock(const std::string& key) {
  v1::GetBlockRequest request;
  request.mutable_key()->set_key(key);
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::GetBlock, ctx.get(), request);
}

absl::StatusOr<v1::EvictResponse> AdminClient::Evict(const v1::EvictRequest& request) {
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::Evict, ctx.get(), request);
}

absl::StatusOr<v1::GetPolicyResponse> AdminClient::GetPolicy() {
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::GetPolicy, ctx.get(), v1::GetPolicyRequest());
}

absl::StatusOr<v1::SetPolicyResponse> AdminClient::SetPolicy(const v1::SetPolicyRequest& request) {
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::SetPolicy, ctx.get(), request);
}

absl::Status AdminClient::Drain(std::uint32_t timeout_ms) {
  v1::DrainRequest request;
  request.set_timeout_ms(timeout_ms);
  auto ctx = NewContext(options_.timeout);
  return Unary(*admin_, &v1::AdminService::Stub::Drain, ctx.get(), request).status();
}

absl::StatusOr<v1::RegisterEngineResponse> AdminClient::RegisterLookupEngine(
    const v1::ModelLayout& layout) {
  v1::RegisterEngineRequest request;
  *request.mutable_layout() = layout;
  auto ctx = NewContext(options_.timeout);
  return Unary(*blocks_, &v1::BlockService::Stub::RegisterEngine, ctx.get(), request);
}

absl::StatusOr<v1::LookupPrefixResponse> AdminClient::LookupPrefixTokens(
    const std::string& engine_id, const std::vector<std::uint32_t>& tokens) {
  v1::LookupPrefixRequest request;
  request.set_engine_id(engine_id);
  request.mutable_tokens()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  auto ctx = NewContext(options_.timeout);
  return Unary(*blocks_, &v1::BlockService::Stub::LookupPrefix, ctx.get(), request);
}

}  // namespace cachesvc::client
