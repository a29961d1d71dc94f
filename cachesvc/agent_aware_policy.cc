// The agent-aware policy ("cachesvc"): LRU plus what it knows of sessions (chain order, exclusive
// tiers, pins of waiting sessions ordered by expected return, prefetch ahead of the return, a
// closed session's blocks first out), on the LRU family's parts (cachesvc/lru_policy.h).
// docs/policy.md says what each part buys, measured by bench/run replay.
#include <map>

#include "cachesvc/lru_policy.h"

namespace cachesvc {
namespace {

using policy_internal::LruPolicy;

class AgentAwarePolicy final : public LruPolicy {
 public:
  AgentAwarePolicy(std::int64_t lead_us, tiers::TierKind fastest)
      : LruPolicy({.cascade = true,
                   .chain_order = true,
                   .exclusive = true,
                   .pinned_by_return = true,
                   .evict_pinned_beyond_us = 2 * lead_us,
                   .unpin_on_use = true,
                   .closed_first = true,
                   .fastest = fastest}),
        lead_us_(lead_us) {}
  std::string_view Name() const override { return "cachesvc"; }

  // Pins the chain until the session is back (ToolCallEnded), or at most for three times the
  // expected duration past the expected return (a session that never comes back lets go), and
  // plans the prefetch `lead_us` before the expected return.
  void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                       std::int64_t start_us, std::int64_t expected_end_us) override {
    EndWait(session, start_us);
    const std::int64_t expected = std::max<std::int64_t>(expected_end_us - start_us, 0);
    const std::int64_t until = expected_end_us + 3 * expected + lead_us_;
    Pin(chain, start_us, expected_end_us, until);
    Waiting& w = waiting_[session];
    w.chain.assign(chain.begin(), chain.end());
    w.until_us = until;
    w.due = due_.emplace(expected_end_us - lead_us_, session);
  }
  void ToolCallEnded(std::uint64_t session, std::int64_t now_us) override {
    EndWait(session, now_us);
  }
  void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain,
                     std::int64_t now_us) override {
    EndWait(session, now_us);
    LruPolicy::SessionClosed(session, chain, now_us);
  }
  std::vector<BlockKey> Prefetch(std::int64_t now_us) override {
    lists_[kFast].BeginRun();  // for PrefetchFound: the chains keep their order
    std::vector<BlockKey> out;
    while (!due_.empty() && due_.begin()->first <= now_us) {
      auto w = waiting_.find(due_.begin()->second);
      out.insert(out.end(), w->second.chain.begin(), w->second.chain.end());
      w->second.due = due_.end();
      due_.erase(due_.begin());
    }
    return out;
  }

 private:
  struct Waiting {
    std::vector<BlockKey> chain;
    std::int64_t until_us = 0;
    std::multimap<std::int64_t, std::uint64_t>::iterator due;  // due_.end() once prefetched
  };
  // The session's wait (if any) is over: its pins end, its prefetch is off.
  void EndWait(std::uint64_t session, std::int64_t now_us) {
    auto it = waiting_.find(session);
    if (it == waiting_.end()) return;
    Unpin(it->second.chain, it->second.until_us, now_us);
    if (it->second.due != due_.end()) due_.erase(it->second.due);
    waiting_.erase(it);
  }

  const std::int64_t lead_us_;
  std::multimap<std::int64_t, std::uint64_t> due_;  // prefetch time -> waiting session
  std::map<std::uint64_t, Waiting> waiting_;        // sessions waiting on a tool call
};

}  // namespace

std::unique_ptr<ResidencyPolicy> MakeAgentAwarePolicy(std::int64_t lead_us,
                                                      tiers::TierKind fastest) {
  return std::make_unique<AgentAwarePolicy>(lead_us, fastest);
}

}  // namespace cachesvc
