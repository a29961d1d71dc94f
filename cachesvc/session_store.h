// cachesvc/session_store.h: agent sessions, their context and state, persisted.
//
// A session belongs to one tenant and one model layout. It holds the token ids of its context (the
// tail that does not fill a block included) and the ordered keys of its full blocks, derived with
// the tenant's key chain (proto/block_key.h) as tokens arrive. Its state moves between running,
// waiting on a tool call (tool name, start, expected duration: given by the caller, or learned
// from that tool's past calls), idle, and closed. Operations: open, append, begin/end a tool call,
// fork (the child starts with the parent's context, so it shares the parent's blocks), truncate
// to a token count, pin for a while, close.
//
// Every change is written to a RocksDB store before the call returns, so a restarted daemon comes
// back with its sessions and with what it learned of tool durations (the most recent 256 calls of
// each tool name). Keys are not stored; they are derived again from tokens at open.
//
// Errors: a session id unknown to the calling tenant is NOT_FOUND (another tenant's sessions do
// not exist for it); changing a closed session is FAILED_PRECONDITION, as are tool-call
// operations in the wrong state; a truncate past the end is OUT_OF_RANGE; a `now_us` earlier than
// the session's last change is INVALID_ARGUMENT (time must not go backwards); a failed write
// leaves the session as it was. Times are the caller's clock in microseconds.
//
// Thread-safe (one mutex; sessions change at agent speed, not token speed).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "cachesvc/tool_history.h"
#include "proto/block_key.h"

namespace rocksdb {
class DB;
}  // namespace rocksdb

namespace cachesvc {

// Values equal cachesvc.v1.SessionState.
enum class SessionState : int { kRunning = 1, kWaitingTool = 2, kIdle = 3, kClosed = 4 };
const char* SessionStateName(SessionState s);

struct ToolCall {
  std::string tool_name;
  std::int64_t started_us = 0;
  std::int64_t expected_us = 0;  // the duration the service plans with
};

struct Session {
  std::string id;
  std::string tenant;
  std::string client_session_id;
  std::uint64_t layout_fingerprint = 0;
  std::uint32_t block_tokens = 0;
  BlockKey seed;
  std::vector<std::uint32_t> tokens;  // the whole context
  std::vector<BlockKey> keys;         // one per full block of `tokens`
  SessionState state = SessionState::kIdle;
  std::optional<ToolCall> tool;  // while kWaitingTool
  std::string parent_id;         // set for a fork
  std::int64_t pinned_until_us = 0;
  std::int64_t opened_us = 0;
  std::int64_t last_active_us = 0;
};

struct OpenSessionArgs {
  std::string tenant;
  std::string client_session_id;  // optional, <= 256 bytes
  std::uint64_t layout_fingerprint = 0;
  std::uint32_t block_tokens = 0;     // > 0
  BlockKey seed;                      // KeyChainSeed(tenant salt, layout fingerprint)
  std::vector<std::uint32_t> tokens;  // initial context, may be empty
};

class SessionStore {
 public:
  // Opens (creating if needed) the store at `path` and loads every session in it. A store that
  // cannot be read is an error (never silently emptied): DATA_LOSS naming what is wrong.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<SessionStore>> Open(
      const std::filesystem::path& path);
  ~SessionStore();
  SessionStore(const SessionStore&) = delete;
  SessionStore& operator=(const SessionStore&) = delete;

  // The new session's id.
  [[nodiscard]] absl::StatusOr<std::string> OpenSession(const OpenSessionArgs& args,
                                                        std::int64_t now_us);
  // Appends tokens; the session is running afterwards. Returns the new full-block keys.
  [[nodiscard]] absl::StatusOr<std::vector<BlockKey>> Append(const std::string& tenant,
                                                             const std::string& id,
                                                             std::span<const std::uint32_t> tokens,
                                                             std::int64_t now_us);
  // Starts a tool call; `expected_us` 0 asks for the learned p50 of `tool_name` (or a default of
  // 4 s before any call of it has ended). Returns the expectation the service plans with.
  [[nodiscard]] absl::StatusOr<std::int64_t> BeginToolCall(const std::string& tenant,
                                                           const std::string& id,
                                                           const std::string& tool_name,
                                                           std::int64_t expected_us,
                                                           std::int64_t now_us);
  // Ends the tool call, learns its duration, leaves the session idle. Returns the duration.
  [[nodiscard]] absl::StatusOr<std::int64_t> EndToolCall(const std::string& tenant,
                                                         const std::string& id,
                                                         std::int64_t now_us);
  // A new session with the parent's context (any depth of forks of forks).
  [[nodiscard]] absl::StatusOr<std::string> Fork(const std::string& tenant, const std::string& id,
                                                 const std::string& client_session_id,
                                                 std::int64_t now_us);
  // Cuts the context to its first `keep_tokens` tokens (and their full blocks).
  [[nodiscard]] absl::Status Truncate(const std::string& tenant, const std::string& id,
                                      std::uint64_t keep_tokens, std::int64_t now_us);
  // Keeps the session's blocks in a fast tier until now + duration (0 unpins).
  [[nodiscard]] absl::Status Pin(const std::string& tenant, const std::string& id,
                                 std::int64_t duration_us, std::int64_t now_us);
  [[nodiscard]] absl::Status Close(const std::string& tenant, const std::string& id,
                                   std::int64_t now_us);

  [[nodiscard]] absl::StatusOr<Session> Get(const std::string& tenant, const std::string& id) const;
  // Sessions of `tenant` (all tenants when empty), in id order.
  std::vector<Session> List(const std::string& tenant = "") const;
  // How many sessions are in each state (all tenants).
  std::map<SessionState, std::size_t> CountByState() const;
  ToolStats Tool(const std::string& tool_name) const;

  static constexpr std::int64_t kDefaultToolExpectationUs = ToolHistory::kDefaultExpectationUs;
  static constexpr std::size_t kToolSamples = ToolHistory::kSamples;
  static constexpr std::size_t kMaxClientIdBytes = 256;

 private:
  explicit SessionStore(std::unique_ptr<rocksdb::DB> db);
  // The caller's session, or the error for a missing one / another tenant's / a closed one.
  [[nodiscard]] absl::StatusOr<Session*> Find(const std::string& tenant, const std::string& id,
                                              bool allow_closed) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Writes `s` (and `tool`, if given) to the store; on success replaces the in-memory copy.
  [[nodiscard]] absl::Status Commit(const Session& s, const ToolHistory* tool = nullptr,
                                    const std::string* tool_name = nullptr)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  std::string NewId() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  mutable Mutex mu_;
  std::unique_ptr<rocksdb::DB> db_;
  std::map<std::string, Session> sessions_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, ToolHistory> tools_ ABSL_GUARDED_BY(mu_);
  std::uint64_t id_counter_ ABSL_GUARDED_BY(mu_) = 0;
  std::uint64_t id_nonce_ = 0;
};

}  // namespace cachesvc
