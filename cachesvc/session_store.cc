#include "cachesvc/session_store.h"

#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <random>

#include "cachesvc/internal/session_record.pb.h"
#include "fmt/format.h"

namespace cachesvc {
namespace {

constexpr std::string_view kSessionPrefix = "s/";
constexpr std::string_view kToolPrefix = "t/";

[[nodiscard]] absl::Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return absl::OkStatus();
  const std::string message = fmt::format("session store {}: {}", what, s.ToString());
  if (s.IsNoSpace()) return absl::ResourceExhaustedError(message);
  if (s.IsCorruption()) return absl::DataLossError(message);
  return absl::UnavailableError(message);
}

internal::SessionRecord ToRecord(const Session& s) {
  internal::SessionRecord r;
  r.set_id(s.id);
  r.set_tenant(s.tenant);
  r.set_client_session_id(s.client_session_id);
  r.set_layout_fingerprint(s.layout_fingerprint);
  r.set_block_tokens(s.block_tokens);
  r.set_seed(std::string(s.seed.Bytes()));
  r.mutable_tokens()->Add(s.tokens.begin(), s.tokens.end());
  r.set_state(static_cast<int>(s.state));
  if (s.tool) {
    r.set_tool_name(s.tool->tool_name);
    r.set_tool_started_us(s.tool->started_us);
    r.set_tool_expected_us(s.tool->expected_us);
  }
  r.set_parent_id(s.parent_id);
  r.set_pinned_until_us(s.pinned_until_us);
  r.set_last_active_us(s.last_active_us);
  r.set_opened_us(s.opened_us);
  return r;
}

[[nodiscard]] absl::StatusOr<Session> FromRecord(const internal::SessionRecord& r) {
  Session s;
  s.id = r.id();
  s.tenant = r.tenant();
  s.client_session_id = r.client_session_id();
  s.layout_fingerprint = r.layout_fingerprint();
  s.block_tokens = r.block_tokens();
  auto seed = BlockKey::FromBytes(r.seed());
  if (!seed.ok() || s.block_tokens == 0 || r.state() < 1 || r.state() > 4) {
    return absl::DataLossError(
        fmt::format("session store: record of session '{}' is malformed", r.id()));
  }
  s.seed = *seed;
  s.tokens.assign(r.tokens().begin(), r.tokens().end());
  s.keys = *DeriveBlockKeys(s.seed, s.tokens, s.block_tokens);
  s.state = static_cast<SessionState>(r.state());
  if (s.state == SessionState::kWaitingTool) {
    s.tool = ToolCall{r.tool_name(), r.tool_started_us(), r.tool_expected_us()};
  }
  s.parent_id = r.parent_id();
  s.pinned_until_us = r.pinned_until_us();
  s.last_active_us = r.last_active_us();
  s.opened_us = r.opened_us();
  return s;
}

[[nodiscard]] absl::Status CheckTime(const Session& s, std::int64_t now_us) {
  if (now_us < s.last_active_us) {
    return absl::InvalidArgumentError(fmt::format(
        "time went backwards for session '{}': {} us is before its last change at {} us", s.id,
        now_us, s.last_active_us));
  }
  return absl::OkStatus();
}

}  // namespace

const char* SessionStateName(SessionState s) {
  switch (s) {
    case SessionState::kRunning:
      return "running";
    case SessionState::kWaitingTool:
      return "waiting_tool";
    case SessionState::kIdle:
      return "idle";
    case SessionState::kClosed:
      return "closed";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<SessionStore>> SessionStore::Open(
    const std::filesystem::path& path) {
  rocksdb::Options options;
  options.create_if_missing = true;
  options.paranoid_checks = true;
  options.max_background_jobs = 1;
  options.keep_log_file_num = 2;
  options.stats_dump_period_sec = 0;
  options.stats_persist_period_sec = 0;
  rocksdb::DB* raw = nullptr;
  if (absl::Status s = FromRocks(rocksdb::DB::Open(options, path.string(), &raw), "open");
      !s.ok()) {
    return s;
  }
  std::unique_ptr<SessionStore> store(new SessionStore(std::unique_ptr<rocksdb::DB>(raw)));
  MutexLock lock(&store->mu_);
  std::unique_ptr<rocksdb::Iterator> it(store->db_->NewIterator(rocksdb::ReadOptions()));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    const std::string key = it->key().ToString();
    if (key.starts_with(kSessionPrefix)) {
      internal::SessionRecord r;
      if (!r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError(fmt::format("session store: cannot parse '{}'", key));
      }
      auto session = FromRecord(r);
      if (!session.ok()) return session.status();
      store->sessions_[session->id] = std::move(*session);
    } else if (key.starts_with(kToolPrefix)) {
      internal::ToolRecord r;
      if (!r.ParseFromArray(it->value().data(), static_cast<int>(it->value().size()))) {
        return absl::DataLossError(fmt::format("session store: cannot parse '{}'", key));
      }
      ToolHistory& h = store->tools_[r.tool_name()];
      h.calls = r.calls();
      h.recent_us.assign(r.recent_us().begin(), r.recent_us().end());
    }
  }
  if (absl::Status s = FromRocks(it->status(), "scan"); !s.ok()) return s;
  return store;
}

SessionStore::SessionStore(std::unique_ptr<rocksdb::DB> db) : db_(std::move(db)) {
  std::random_device rd;
  id_nonce_ = (static_cast<std::uint64_t>(rd()) << 32) ^ rd();
}

SessionStore::~SessionStore() = default;

std::string SessionStore::NewId() {
  // Unique within a store across restarts: a per-open random nonce plus a counter.
  return fmt::format("s-{:016x}-{}", id_nonce_, ++id_counter_);
}

absl::StatusOr<Session*> SessionStore::Find(const std::string& tenant, const std::string& id,
                                            bool allow_closed) {
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.tenant != tenant) {
    return absl::NotFoundError(fmt::format("no session '{}'", id));
  }
  if (!allow_closed && it->second.state == SessionState::kClosed) {
    return absl::FailedPreconditionError(fmt::format("session '{}' is closed", id));
  }
  return &it->second;
}

absl::Status SessionStore::Commit(const Session& s, const ToolHistory* tool,
                                  const std::string* tool_name) {
  rocksdb::WriteBatch batch;
  batch.Put(fmt::format("{}{}", kSessionPrefix, s.id), ToRecord(s).SerializeAsString());
  if (tool != nullptr) {
    internal::ToolRecord r;
    r.set_tool_name(*tool_name);
    r.set_calls(tool->calls);
    r.mutable_recent_us()->Add(tool->recent_us.begin(), tool->recent_us.end());
    batch.Put(fmt::format("{}{}", kToolPrefix, *tool_name), r.SerializeAsString());
  }
  if (absl::Status st = FromRocks(db_->Write(rocksdb::WriteOptions(), &batch), "write"); !st.ok()) {
    return st;
  }
  sessions_[s.id] = s;
  if (tool != nullptr) tools_[*tool_name] = *tool;
  return absl::OkStatus();
}

absl::StatusOr<std::string> SessionStore::OpenSession(const OpenSessionArgs& args,
                                                      std::int64_t now_us) {
  if (args.block_tokens == 0) return absl::InvalidArgumentError("block_tokens must be at least 1");
  if (args.client_session_id.size() > kMaxClientIdBytes) {
    return absl::InvalidArgumentError(
        fmt::format("client_session_id is {} bytes, at most {} allowed",
                    args.client_session_id.size(), kMaxClientIdBytes));
  }
  MutexLock lock(&mu_);
  Session s;
  s.id = NewId();
  s.tenant = args.tenant;
  s.client_session_id = args.client_session_id;
  s.layout_fingerprint = args.layout_fingerprint;
  s.block_tokens = args.block_tokens;
  s.seed = args.seed;
  s.tokens = args.tokens;
  s.keys = *DeriveBlockKeys(s.seed, s.tokens, s.block_tokens);
  s.state = s.tokens.empty() ? SessionState::kIdle : SessionState::kRunning;
  s.opened_us = s.last_active_us = now_us;
  if (absl::Status st = Commit(s); !st.ok()) return st;
  return s.id;
}

absl::StatusOr<std::vector<BlockKey>> SessionStore::Append(const std::string& tenant,
                                                           const std::string& id,
                                                           std::span<const std::uint32_t> tokens,
                                                           std::int64_t now_us) {
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  if (s.state == SessionState::kWaitingTool) {
    return absl::FailedPreconditionError(fmt::format(
        "session '{}' is waiting on tool '{}'; end the tool call first", id, s.tool->tool_name));
  }
  const std::size_t old_keys = s.keys.size();
  s.tokens.insert(s.tokens.end(), tokens.begin(), tokens.end());
  // Only the blocks completed by this append are new: chain on from the last full block.
  const std::size_t full = s.tokens.size() / s.block_tokens;
  BlockKey prev = s.keys.empty() ? s.seed : s.keys.back();
  for (std::size_t b = old_keys; b < full; ++b) {
    prev = NextBlockKey(prev, std::span(s.tokens).subspan(b * s.block_tokens, s.block_tokens));
    s.keys.push_back(prev);
  }
  s.state = SessionState::kRunning;
  s.last_active_us = now_us;
  if (absl::Status st = Commit(s); !st.ok()) return st;
  return std::vector<BlockKey>(s.keys.begin() + static_cast<std::ptrdiff_t>(old_keys),
                               s.keys.end());
}

absl::StatusOr<std::int64_t> SessionStore::BeginToolCall(const std::string& tenant,
                                                         const std::string& id,
                                                         const std::string& tool_name,
                                                         std::int64_t expected_us,
                                                         std::int64_t now_us) {
  if (tool_name.empty()) return absl::InvalidArgumentError("tool_name must not be empty");
  if (expected_us < 0) return absl::InvalidArgumentError("expected duration must not be negative");
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  if (s.state == SessionState::kWaitingTool) {
    return absl::FailedPreconditionError(
        fmt::format("session '{}' is already waiting on tool '{}'", id, s.tool->tool_name));
  }
  if (expected_us == 0) {
    auto t = tools_.find(tool_name);
    expected_us = t == tools_.end() ? kDefaultToolExpectationUs : t->second.Expected();
  }
  s.state = SessionState::kWaitingTool;
  s.tool = ToolCall{tool_name, now_us, expected_us};
  s.last_active_us = now_us;
  if (absl::Status st = Commit(s); !st.ok()) return st;
  return expected_us;
}

absl::StatusOr<std::int64_t> SessionStore::EndToolCall(const std::string& tenant,
                                                       const std::string& id, std::int64_t now_us) {
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  if (s.state != SessionState::kWaitingTool) {
    return absl::FailedPreconditionError(fmt::format("session '{}' is not waiting on a tool", id));
  }
  const std::int64_t elapsed = now_us - s.tool->started_us;
  const std::string tool_name = s.tool->tool_name;
  ToolHistory history = tools_[tool_name];
  history.Add(elapsed);
  s.state = SessionState::kIdle;
  s.tool.reset();
  s.last_active_us = now_us;
  if (absl::Status st = Commit(s, &history, &tool_name); !st.ok()) return st;
  return elapsed;
}

absl::StatusOr<std::string> SessionStore::Fork(const std::string& tenant, const std::string& id,
                                               const std::string& client_session_id,
                                               std::int64_t now_us) {
  if (client_session_id.size() > kMaxClientIdBytes) {
    return absl::InvalidArgumentError("client_session_id is too long");
  }
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  if (absl::Status st = CheckTime(**found, now_us); !st.ok()) return st;
  Session child = **found;
  child.id = NewId();
  child.client_session_id = client_session_id;
  child.parent_id = id;
  child.state = child.tokens.empty() ? SessionState::kIdle : SessionState::kRunning;
  child.tool.reset();
  child.pinned_until_us = 0;
  child.opened_us = child.last_active_us = now_us;
  if (absl::Status st = Commit(child); !st.ok()) return st;
  return child.id;
}

absl::Status SessionStore::Truncate(const std::string& tenant, const std::string& id,
                                    std::uint64_t keep_tokens, std::int64_t now_us) {
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  if (keep_tokens > s.tokens.size()) {
    return absl::OutOfRangeError(fmt::format("session '{}' holds {} tokens; cannot keep {}", id,
                                             s.tokens.size(), keep_tokens));
  }
  s.tokens.resize(keep_tokens);
  s.keys.resize(keep_tokens / s.block_tokens);
  s.last_active_us = now_us;
  return Commit(s);
}

absl::Status SessionStore::Pin(const std::string& tenant, const std::string& id,
                               std::int64_t duration_us, std::int64_t now_us) {
  if (duration_us < 0) return absl::InvalidArgumentError("pin duration must not be negative");
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  s.pinned_until_us = duration_us == 0 ? 0 : now_us + duration_us;
  s.last_active_us = now_us;
  return Commit(s);
}

absl::Status SessionStore::Close(const std::string& tenant, const std::string& id,
                                 std::int64_t now_us) {
  MutexLock lock(&mu_);
  auto found = Find(tenant, id, false);
  if (!found.ok()) return found.status();
  Session s = **found;
  if (absl::Status st = CheckTime(s, now_us); !st.ok()) return st;
  s.state = SessionState::kClosed;
  s.tool.reset();
  s.pinned_until_us = 0;
  s.last_active_us = now_us;
  return Commit(s);
}

absl::StatusOr<Session> SessionStore::Get(const std::string& tenant, const std::string& id) const {
  MutexLock lock(&mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.tenant != tenant) {
    return absl::NotFoundError(fmt::format("no session '{}'", id));
  }
  return it->second;
}

std::vector<Session> SessionStore::List(const std::string& tenant) const {
  MutexLock lock(&mu_);
  std::vector<Session> out;
  for (const auto& [id, s] : sessions_) {
    if (tenant.empty() || s.tenant == tenant) out.push_back(s);
  }
  return out;
}

std::map<SessionState, std::size_t> SessionStore::CountByState() const {
  MutexLock lock(&mu_);
  std::map<SessionState, std::size_t> out;
  for (const auto& [id, s] : sessions_) ++out[s.state];
  return out;
}

ToolStats SessionStore::Tool(const std::string& tool_name) const {
  MutexLock lock(&mu_);
  auto it = tools_.find(tool_name);
  return it == tools_.end() ? ToolStats{} : it->second.Stats();
}

}  // namespace cachesvc
