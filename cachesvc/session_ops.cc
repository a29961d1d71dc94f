#include "cachesvc/session_ops.h"

#include "cachesvc/wire.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <span>
#include <vector>

#include "cachesvc/wire.h"
#include "fmt/format.h"

namespace cachesvc {
namespace {

[[nodiscard]] absl::Status CheckSessionId(const std::string& id, const char* field = "session_id") {
  if (id.empty()) return absl::InvalidArgumentError(fmt::format("{}: empty", field));
  if (id.size() > SessionOps::kMaxIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes, at most {}", field, id.size(), SessionOps::kMaxIdBytes));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CheckClientId(const std::string& id) {
  if (id.size() > SessionOps::kMaxIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("client_session_id: {} bytes, at most {}", id.size(), SessionOps::kMaxIdBytes));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CheckDuration(std::uint32_t ms, const char* field) {
  if (ms > SessionOps::kMaxDurationMs) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} ms, at most {} (a day)", field, ms, SessionOps::kMaxDurationMs));
  }
  return absl::OkStatus();
}

// Tool statistics are per tenant: the store keys them by this name.
std::string StoreToolName(const Tenant& tenant, const std::string& tool_name) {
  return fmt::format("{}/{}", tenant.name(), tool_name);
}
std::string CallerToolName(const std::string& store_name) {
  const auto slash = store_name.find('/');
  return slash == std::string::npos ? store_name : store_name.substr(slash + 1);
}

std::uint32_t ClampMs(std::int64_t us, bool round) {
  if (us <= 0) return 0;
  const std::int64_t ms = round ? (us + 500) / 1000 : us / 1000;
  return static_cast<std::uint32_t>(
      std::min<std::int64_t>(ms, std::numeric_limits<std::uint32_t>::max()));
}

// The session as the wire shows it, without tokens and block locations.
v1::SessionInfo InfoFromSession(const Session& s) {
  v1::SessionInfo info;
  info.set_session_id(s.id);
  info.set_client_session_id(s.client_session_id);
  info.set_layout_fingerprint(s.layout_fingerprint);
  info.set_state(static_cast<v1::SessionState>(static_cast<int>(s.state)));
  if (s.state == SessionState::kWaitingTool && s.tool) {
    info.set_tool_name(CallerToolName(s.tool->tool_name));
    info.set_expected_ms(ClampMs(s.tool->expected_us, /*round=*/true));
  }
  info.set_context_tokens(s.tokens.size());
  info.set_parent_session_id(s.parent_id);
  info.set_pinned_until_unix_ms(s.pinned_until_us / 1000);
  return info;
}

}  // namespace

SessionOps::SessionOps(SessionStore* store, BlockStore* blocks, const KnownLayouts* layouts,
                       Env* env)
    : store_(store), blocks_(blocks), layouts_(layouts), env_(env) {
  const std::int64_t wall_us = env_->NowUnixMicros();
  std::int64_t latest_us = 0;
  MutexLock lock(&mu_);
  for (const Session& s : store_->List()) {
    latest_us = std::max(latest_us, s.last_active_us);
    if (s.state != SessionState::kClosed) ++open_[s.tenant];
  }
  base_us_ = std::max(wall_us, latest_us);
  base_steady_ = env_->Now();
}

std::int64_t SessionOps::NowUs() const {
  return base_us_ +
         std::chrono::duration_cast<std::chrono::microseconds>(env_->Now() - base_steady_).count();
}

std::uint64_t SessionOps::open_sessions() const {
  MutexLock lock(&mu_);
  std::uint64_t n = 0;
  for (const auto& [tenant, count] : open_) n += static_cast<std::uint64_t>(count);
  return n;
}

absl::Status SessionOps::CheckQuota(const Tenant& tenant) const {
  const std::int64_t limit = tenant.quota().sessions;
  if (limit == 0) return absl::OkStatus();
  auto it = open_.find(tenant.name());
  const std::int64_t held = it == open_.end() ? 0 : it->second;
  if (held >= limit) {
    return absl::ResourceExhaustedError(
        fmt::format("tenant '{}' holds {} open sessions, its quota is {}; close one first",
                    tenant.name(), held, limit));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::OpenSessionResponse> SessionOps::Open(const Tenant& tenant,
                                                         const v1::OpenSessionRequest& req) {
  if (req.layout_fingerprint() == 0) {
    return absl::InvalidArgumentError(
        "layout_fingerprint: 0; give the fingerprint RegisterEngine returned");
  }
  if (absl::Status st = CheckClientId(req.client_session_id()); !st.ok()) return st;
  if (static_cast<std::size_t>(req.tokens_size()) > kMaxContextTokens) {
    return absl::InvalidArgumentError(
        fmt::format("tokens: {} tokens, at most {}", req.tokens_size(), kMaxContextTokens));
  }
  if (draining()) return absl::UnavailableError("the daemon is draining; no new sessions");
  const std::optional<ModelLayout> layout = layouts_->Find(tenant.name(), req.layout_fingerprint());
  if (!layout) {
    return absl::NotFoundError(fmt::format(
        "layout_fingerprint {:#018x}: no engine of this tenant registered that layout since the "
        "daemon started",
        req.layout_fingerprint()));
  }
  OpenSessionArgs args;
  args.tenant = tenant.name();
  args.client_session_id = req.client_session_id();
  args.layout_fingerprint = req.layout_fingerprint();
  args.block_tokens = layout->block_tokens;
  args.seed = KeyChainSeed(tenant.salt(), req.layout_fingerprint());
  args.tokens.assign(req.tokens().begin(), req.tokens().end());
  MutexLock lock(&mu_);
  if (absl::Status st = CheckQuota(tenant); !st.ok()) return st;
  auto id = store_->OpenSession(args, NowUs());
  if (!id.ok()) return id.status();
  ++open_[tenant.name()];
  SyncBlocks(tenant, *id);
  v1::OpenSessionResponse resp;
  resp.set_session_id(*id);
  return resp;
}

absl::StatusOr<v1::AppendTokensResponse> SessionOps::Append(const Tenant& tenant,
                                                            const v1::AppendTokensRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  if (req.tokens().empty()) return absl::InvalidArgumentError("tokens: empty; nothing to append");
  MutexLock lock(&mu_);
  // Changes are serialized here, so the size read now is the size the append starts from.
  auto before = store_->Get(tenant.name(), req.session_id());
  if (!before.ok()) return before.status();
  const std::size_t total = before->tokens.size() + static_cast<std::size_t>(req.tokens_size());
  if (before->state != SessionState::kClosed && total > kMaxContextTokens) {
    return absl::InvalidArgumentError(fmt::format(
        "tokens: the context would hold {} tokens, at most {}; truncate or fork it first", total,
        kMaxContextTokens));
  }
  auto keys = store_->Append(
      tenant.name(), req.session_id(),
      std::span<const std::uint32_t>(req.tokens().data(), req.tokens().size()), NowUs());
  if (!keys.ok()) return keys.status();
  // Only the new full blocks go to the block store, not the whole context again.
  if (blocks_ != nullptr && !keys->empty() &&
      !blocks_->ExtendSessionChain(tenant.name(), tenant.salt(), req.session_id(), *keys)) {
    SyncBlocks(tenant, req.session_id());
  }
  v1::AppendTokensResponse resp;
  resp.set_context_tokens(total);
  resp.set_full_blocks(static_cast<std::uint32_t>(total / before->block_tokens));
  return resp;
}

absl::StatusOr<v1::BeginToolCallResponse> SessionOps::BeginToolCall(
    const Tenant& tenant, const v1::BeginToolCallRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  if (req.tool_name().empty()) return absl::InvalidArgumentError("tool_name: empty");
  if (req.tool_name().size() > kMaxToolNameBytes) {
    return absl::InvalidArgumentError(
        fmt::format("tool_name: {} bytes, at most {}", req.tool_name().size(), kMaxToolNameBytes));
  }
  if (absl::Status st = CheckDuration(req.expected_ms(), "expected_ms"); !st.ok()) return st;
  MutexLock lock(&mu_);
  auto expected_us =
      store_->BeginToolCall(tenant.name(), req.session_id(), StoreToolName(tenant, req.tool_name()),
                            std::int64_t{req.expected_ms()} * 1000, NowUs());
  if (!expected_us.ok()) return expected_us.status();
  if (blocks_ != nullptr) {
    blocks_->SessionToolCallStarted(tenant.name(), req.session_id(),
                                    std::chrono::milliseconds(*expected_us / 1000));
  }
  v1::BeginToolCallResponse resp;
  resp.set_expected_ms(ClampMs(*expected_us, /*round=*/true));
  return resp;
}

absl::StatusOr<v1::EndToolCallResponse> SessionOps::EndToolCall(const Tenant& tenant,
                                                                const v1::EndToolCallRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  MutexLock lock(&mu_);
  auto elapsed_us = store_->EndToolCall(tenant.name(), req.session_id(), NowUs());
  if (!elapsed_us.ok()) return elapsed_us.status();
  if (blocks_ != nullptr) blocks_->SessionToolCallEnded(tenant.name(), req.session_id());
  v1::EndToolCallResponse resp;
  resp.set_elapsed_ms(ClampMs(*elapsed_us, /*round=*/false));
  return resp;
}

absl::StatusOr<v1::ForkSessionResponse> SessionOps::Fork(const Tenant& tenant,
                                                         const v1::ForkSessionRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  if (absl::Status st = CheckClientId(req.client_session_id()); !st.ok()) return st;
  if (draining()) return absl::UnavailableError("the daemon is draining; no new sessions");
  MutexLock lock(&mu_);
  if (absl::Status st = CheckQuota(tenant); !st.ok()) {
    // An unknown or closed parent says so first: the quota is not the caller's problem then.
    auto parent = store_->Get(tenant.name(), req.session_id());
    if (!parent.ok()) return parent.status();
    return st;
  }
  auto id = store_->Fork(tenant.name(), req.session_id(), req.client_session_id(), NowUs());
  if (!id.ok()) return id.status();
  ++open_[tenant.name()];
  SyncBlocks(tenant, *id);
  v1::ForkSessionResponse resp;
  resp.set_session_id(*id);
  return resp;
}

absl::StatusOr<v1::TruncateSessionResponse> SessionOps::Truncate(
    const Tenant& tenant, const v1::TruncateSessionRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  MutexLock lock(&mu_);
  if (absl::Status st =
          store_->Truncate(tenant.name(), req.session_id(), req.keep_tokens(), NowUs());
      !st.ok()) {
    return st;
  }
  SyncBlocks(tenant, req.session_id());
  v1::TruncateSessionResponse resp;
  resp.set_context_tokens(req.keep_tokens());
  return resp;
}

absl::StatusOr<v1::PinSessionResponse> SessionOps::Pin(const Tenant& tenant,
                                                       const v1::PinSessionRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  if (absl::Status st = CheckDuration(req.duration_ms(), "duration_ms"); !st.ok()) return st;
  MutexLock lock(&mu_);
  if (absl::Status st = store_->Pin(tenant.name(), req.session_id(),
                                    std::int64_t{req.duration_ms()} * 1000, NowUs());
      !st.ok()) {
    return st;
  }
  // The block store holds a pinned session's blocks as it would for a tool call of that length.
  if (blocks_ != nullptr) {
    blocks_->SessionToolCallStarted(tenant.name(), req.session_id(),
                                    std::chrono::milliseconds(req.duration_ms()));
  }
  return v1::PinSessionResponse();
}

absl::StatusOr<v1::CloseSessionResponse> SessionOps::Close(const Tenant& tenant,
                                                           const v1::CloseSessionRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  MutexLock lock(&mu_);
  if (absl::Status st = store_->Close(tenant.name(), req.session_id(), NowUs()); !st.ok()) {
    return st;
  }
  --open_[tenant.name()];
  if (blocks_ != nullptr) blocks_->SessionClosed(tenant.name(), req.session_id());
  return v1::CloseSessionResponse();
}

absl::Status SessionOps::CheckSession(const Tenant& tenant, const std::string& session_id) const {
  if (absl::Status st = CheckSessionId(session_id); !st.ok()) return st;
  return store_->Get(tenant.name(), session_id).status();
}

absl::Status SessionOps::Tag(const Tenant& tenant, const std::string& session_id,
                             std::span<const BlockKey> keys) {
  if (absl::Status st = CheckSessionId(session_id); !st.ok()) return st;
  MutexLock lock(&mu_);
  auto session = store_->Get(tenant.name(), session_id);
  if (!session.ok()) return session.status();
  if (session->state == SessionState::kClosed) {
    return absl::FailedPreconditionError(
        fmt::format("session {} is closed; its blocks are no longer its own", session_id));
  }
  if (blocks_ != nullptr) blocks_->TagSession(tenant.name(), tenant.salt(), session_id, keys);
  return absl::OkStatus();
}

std::size_t SessionOps::RestoreBlockState(const TenantRegistry& tenants) {
  if (blocks_ == nullptr) return 0;
  MutexLock lock(&mu_);
  const std::int64_t now_us = NowUs();
  std::size_t told = 0;
  for (const Session& s : store_->List()) {
    if (s.state == SessionState::kClosed) continue;
    const Tenant* tenant = tenants.Find(s.tenant);
    if (tenant == nullptr) continue;
    blocks_->SetSessionChain(tenant->name(), tenant->salt(), s.id, s.keys);
    // Still waiting: the time left of the tool call's expected duration, or of the pin.
    std::int64_t until_us = s.pinned_until_us;
    if (s.state == SessionState::kWaitingTool && s.tool.has_value()) {
      until_us = std::max(until_us, s.tool->started_us + s.tool->expected_us);
    }
    if (until_us > now_us) {
      blocks_->SessionToolCallStarted(tenant->name(), s.id,
                                      std::chrono::milliseconds((until_us - now_us) / 1000));
    }
    ++told;
  }
  return told;
}

void SessionOps::SyncBlocks(const Tenant& tenant, const std::string& session_id) {
  if (blocks_ == nullptr) return;
  auto session = store_->Get(tenant.name(), session_id);
  if (!session.ok()) return;
  blocks_->SetSessionChain(tenant.name(), tenant.salt(), session_id, session->keys);
}

absl::StatusOr<v1::SessionInfo> SessionOps::Get(const Tenant& tenant,
                                                const v1::GetSessionRequest& req) {
  if (absl::Status st = CheckSessionId(req.session_id()); !st.ok()) return st;
  auto session = store_->Get(tenant.name(), req.session_id());
  if (!session.ok()) return session.status();
  v1::SessionInfo info = InfoFromSession(*session);
  if (req.include_tokens()) {
    info.mutable_tokens()->Add(session->tokens.begin(), session->tokens.end());
  }
  std::vector<BlockPlace> places;
  if (blocks_ != nullptr && !session->keys.empty()) {
    places = blocks_->Lookup(tenant.name(), tenant.salt(), session->keys);
  }
  for (std::size_t i = 0; i < session->keys.size(); ++i) {
    v1::BlockLocation* loc = info.add_blocks();
    loc->mutable_key()->set_key(std::string(session->keys[i].Bytes()));
    if (i >= places.size()) continue;
    for (tiers::TierKind t :
         {tiers::TierKind::kHbm, tiers::TierKind::kHost, tiers::TierKind::kNvme}) {
      if ((places[i].tiers & TierBit(t)) != 0) loc->add_tiers(TierToProto(t));
    }
    loc->set_codec(static_cast<v1::Codec>(static_cast<int>(places[i].codec)));
  }
  return info;
}

absl::StatusOr<v1::ListSessionsResponse> SessionOps::List(
    const Tenant& tenant, const v1::ListSessionsRequest& req) const {
  if (!v1::SessionState_IsValid(req.state())) {
    return absl::InvalidArgumentError(
        fmt::format("state: {} is not a SessionState", static_cast<int>(req.state())));
  }
  if (req.page_token().size() > kMaxIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("page_token: {} bytes, at most {}", req.page_token().size(), kMaxIdBytes));
  }
  const std::uint32_t limit =
      req.limit() == 0 ? kDefaultListLimit : std::min(req.limit(), kMaxListLimit);
  v1::ListSessionsResponse resp;
  // In id order; a page starts after the last id of the one before.
  for (const Session& s : store_->List(tenant.name())) {
    if (!req.page_token().empty() && s.id <= req.page_token()) continue;
    if (req.state() != v1::SESSION_STATE_UNSPECIFIED &&
        static_cast<int>(s.state) != static_cast<int>(req.state())) {
      continue;
    }
    if (static_cast<std::uint32_t>(resp.sessions_size()) == limit) {
      resp.set_next_page_token(resp.sessions(resp.sessions_size() - 1).session_id());
      break;
    }
    *resp.add_sessions() = InfoFromSession(s);
  }
  return resp;
}

}  // namespace cachesvc
