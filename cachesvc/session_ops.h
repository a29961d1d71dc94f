// cachesvc/session_ops.h: the SessionService operations, network-free: what SessionServiceImpl
// (cachesvc/session_service.h) and the session calls of AdminService run once the caller's tenant
// is known. Each takes the wire request, validates it (INVALID_ARGUMENT naming the field), applies
// the service's rules, delegates to the SessionStore (cachesvc/session_store.h) with the current
// time, and builds the wire response.
//
// Rules kept here rather than in the store:
//   - Tenancy: every call acts on the calling tenant's sessions only; another tenant's session id
//     is NOT_FOUND (the store's rule, passed on).
//   - Layouts: a session is opened for a layout an engine of the same tenant registered
//     (cachesvc/layouts.h); its block size comes from that layout and its key chain is seeded
//     with KeyChainSeed(tenant salt, fingerprint), so its keys are the ones BlockService derives
//     for the same tokens. An unknown fingerprint is NOT_FOUND.
//   - Quota: a tenant holds at most Tenant::quota().sessions sessions that are not closed (0 = no
//     limit); opening or forking past it is RESOURCE_EXHAUSTED.
//   - Drain: once SetDraining() is called, opening and forking are UNAVAILABLE; the rest works.
//   - Tool statistics are learned per tenant: the store sees the tool name as "<tenant>/<name>"
//     (tenant names hold no '/'), so no tenant learns another's tool durations; responses show the
//     caller's own name.
//   - Time: the store wants microseconds that never go backwards. NowUs() is a steady clock
//     mapped onto wall time at construction, and never earlier than the latest change the store
//     already holds (so a wall clock set back across a restart cannot make every stored session
//     refuse changes). Pinned-until times are reported on that scale, i.e. Unix time while the
//     wall clock is right.
//   - Block locations (GetSession): where the session's blocks are, from BlockStore::Lookup with
//     the tenant's salt. Lookup reports the longest stored prefix, so blocks after the first one
//     missing are listed with no tiers (an engine cannot use them without the prefix anyway);
//     each GetSession whose blocks are not all stored counts one miss in the store's statistics.
//
// Thread-safe. Changes are serialized by one mutex, held from taking the time to the store's
// write, so concurrent calls on one session never present the store with time going backwards,
// and the quota check and the open it guards are one step. Sessions change at agent speed.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <string>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "base/mutex.h"
#include "cachesvc/block_store.h"
#include "cachesvc/layouts.h"
#include "cachesvc/session_store.h"
#include "cachesvc/tenants.h"
#include "cachesvc/v1/cachesvc.pb.h"

namespace cachesvc {

class SessionOps {
 public:
  // Tells the block store what the session store holds after a restart: every open session's
  // chain, and how long a session waiting on a tool call (or pinned) still expects to wait, so
  // placement and prefetch treat them as before the restart. Sessions of tenants no longer
  // configured are skipped. Returns how many sessions were told.
  std::size_t RestoreBlockState(const TenantRegistry& tenants);

  // Longest session id, client_session_id and tool name accepted (bytes).
  static constexpr std::size_t kMaxIdBytes = SessionStore::kMaxClientIdBytes;
  static constexpr std::size_t kMaxToolNameBytes = 256;
  // Longest tool expectation and pin: a day. Longer is a caller's bug, not a plan.
  static constexpr std::uint32_t kMaxDurationMs = 24 * 3600 * 1000;
  // Most tokens one session's context may hold (16 MiB of token ids: a GetSession with tokens
  // still fits the default 64 MiB message limit); one call may carry all of them.
  static constexpr std::size_t kMaxContextTokens = std::size_t{1} << 22;
  // ListSessions page size: when the request gives 0, and the most it may ask for.
  static constexpr std::uint32_t kDefaultListLimit = 100;
  static constexpr std::uint32_t kMaxListLimit = 1000;

  // `store` and `layouts` must outlive this; `blocks` too, or null (GetSession then lists no
  // locations); `env` is the time source (tests pass a ManualEnv).
  SessionOps(SessionStore* store, BlockStore* blocks, const KnownLayouts* layouts,
             Env* env = Env::Default());

  [[nodiscard]] absl::StatusOr<v1::OpenSessionResponse> Open(const Tenant& tenant,
                                                             const v1::OpenSessionRequest& req);
  [[nodiscard]] absl::StatusOr<v1::AppendTokensResponse> Append(const Tenant& tenant,
                                                                const v1::AppendTokensRequest& req);
  [[nodiscard]] absl::StatusOr<v1::BeginToolCallResponse> BeginToolCall(
      const Tenant& tenant, const v1::BeginToolCallRequest& req);
  [[nodiscard]] absl::StatusOr<v1::EndToolCallResponse> EndToolCall(
      const Tenant& tenant, const v1::EndToolCallRequest& req);
  [[nodiscard]] absl::StatusOr<v1::ForkSessionResponse> Fork(const Tenant& tenant,
                                                             const v1::ForkSessionRequest& req);
  [[nodiscard]] absl::StatusOr<v1::TruncateSessionResponse> Truncate(
      const Tenant& tenant, const v1::TruncateSessionRequest& req);
  [[nodiscard]] absl::StatusOr<v1::PinSessionResponse> Pin(const Tenant& tenant,
                                                           const v1::PinSessionRequest& req);
  [[nodiscard]] absl::StatusOr<v1::CloseSessionResponse> Close(const Tenant& tenant,
                                                               const v1::CloseSessionRequest& req);
  [[nodiscard]] absl::StatusOr<v1::SessionInfo> Get(const Tenant& tenant,
                                                    const v1::GetSessionRequest& req);
  // The tenant's session exists (open or closed): OK, else NOT_FOUND (or INVALID_ARGUMENT for a
  // malformed id).
  [[nodiscard]] absl::Status CheckSession(const Tenant& tenant,
                                          const std::string& session_id) const;
  // Records that the engine's `keys` (its own, as given to BlockService) hold the session's
  // context (TagBlocks): they count as the session's blocks for placement and eviction.
  // NOT_FOUND for another tenant's or an unknown session, FAILED_PRECONDITION for a closed one.
  [[nodiscard]] absl::Status Tag(const Tenant& tenant, const std::string& session_id,
                                 std::span<const BlockKey> keys);
  // The tenant's sessions in id order, without tokens or block locations (GetSession has them).
  // page_token is the last id of the previous page.
  [[nodiscard]] absl::StatusOr<v1::ListSessionsResponse> List(
      const Tenant& tenant, const v1::ListSessionsRequest& req) const;

  // From now on Open and Fork are UNAVAILABLE. Not undone (the daemon is on its way out).
  void SetDraining() { draining_.store(true, std::memory_order_relaxed); }
  [[nodiscard]] bool draining() const { return draining_.load(std::memory_order_relaxed); }
  // Sessions not closed, all tenants together.
  [[nodiscard]] std::uint64_t open_sessions() const;
  // The time the next change would be stamped with (microseconds, see the header comment).
  [[nodiscard]] std::int64_t NowUs() const;

 private:
  // RESOURCE_EXHAUSTED when the tenant may not hold one more open session.
  [[nodiscard]] absl::Status CheckQuota(const Tenant& tenant) const
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Tells the block store the session's chain as it is now (after a change).
  void SyncBlocks(const Tenant& tenant, const std::string& session_id)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  SessionStore* const store_;
  BlockStore* const blocks_;
  const KnownLayouts* const layouts_;
  Env* const env_;
  // Constant after construction: NowUs() = base_us_ + (env_->Now() - base_steady_).
  Env::TimePoint base_steady_;
  std::int64_t base_us_ = 0;
  std::atomic<bool> draining_{false};

  mutable Mutex mu_;
  // Sessions not closed, per tenant: counted from the store at construction, then kept by the
  // changes made here (every open, fork and close of the daemon goes through this object).
  std::map<std::string, std::int64_t> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace cachesvc
