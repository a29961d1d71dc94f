// bench/replay/driver.h: the replay's driver. It turns a trace into what a daemon would be told,
// in time order: a tool call's start when the response ends (not when its request arrived),
// the prefetches due by each arrival, a resume's tool-call end, the request itself, and a
// session's close after its last request. The replay tells CacheEngine (EngineTarget, on
// SimulatedTiers); tests tell the daemon's BlockStore through the same driver, so both get the
// same calls at the same times.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "bench/replay/trace.h"
#include "cachesvc/cache_engine.h"
#include "cachesvc/tool_history.h"

namespace cachesvc::replay {

// What the driver tells: the placement core, or a daemon's store.
class ReplayTarget {
 public:
  virtual ~ReplayTarget() = default;
  virtual void Prefetch(std::int64_t now_us) = 0;
  virtual void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                               std::int64_t start_us, std::int64_t expected_end_us) = 0;
  virtual void ToolCallEnded(std::uint64_t session, std::int64_t now_us) = 0;
  // Serves `r` at `now_us`; `hit_tiers` as CacheEngine::Serve.
  virtual ServeResult Serve(const TraceRequest& r, std::int64_t now_us,
                            std::span<std::uint8_t> hit_tiers) = 0;
  virtual void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain,
                             std::int64_t now_us) = 0;
};

// The replay's target: the engine itself.
class EngineTarget final : public ReplayTarget {
 public:
  explicit EngineTarget(CacheEngine* engine) : engine_(engine) {}
  void Prefetch(std::int64_t now_us) override { engine_->Prefetch(now_us); }
  void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                       std::int64_t start_us, std::int64_t expected_end_us) override {
    engine_->ToolCallStarted(session, chain, start_us, expected_end_us);
  }
  void ToolCallEnded(std::uint64_t session, std::int64_t now_us) override {
    engine_->ToolCallEnded(session, now_us);
  }
  ServeResult Serve(const TraceRequest& r, std::int64_t now_us,
                    std::span<std::uint8_t> hit_tiers) override {
    return engine_->Serve(r.blocks, now_us, hit_tiers, r.session);
  }
  void SessionClosed(std::uint64_t session, std::span<const BlockKey> chain,
                     std::int64_t now_us) override {
    engine_->SessionClosed(session, chain, now_us);
  }

 private:
  CacheEngine* const engine_;
};

// What the policy is told to expect of a tool call: its real duration (an oracle), or what the
// calls of that tool that ended so far took (ToolHistory, what a deployment has).
enum class ToolEstimate { kExact, kLearned };

class ReplayDriver {
 public:
  // `trace` must outlive the driver.
  ReplayDriver(const Trace& trace, ToolEstimate estimate);

  // Runs request `ri` (0, 1, ... in order) against `target`: the tool calls that started by its
  // arrival, the prefetches due, its tool-call end (a resume), the request, its own tool call
  // (told when it starts), and its session's close (after the session's last request, which
  // then starts no tool call).
  ServeResult Step(std::size_t ri, ReplayTarget& target, std::span<std::uint8_t> hit_tiers);

 private:
  struct Start {
    std::size_t request;  // whose response ends in the call
  };
  void DeliverStartsUntil(std::int64_t t_us, ReplayTarget& target);

  const Trace& trace_;
  const ToolEstimate estimate_;
  std::vector<bool> closes_;  // a session's last request closes it
  // Tool calls not started yet, by start time (then request order).
  std::multimap<std::int64_t, Start> starts_;
  // Tool calls in flight (session -> tool name, start) and what each tool's ended calls took.
  absl::flat_hash_map<std::uint64_t, std::pair<std::string, std::int64_t>> in_flight_;
  absl::flat_hash_map<std::string, ToolHistory> learned_;
};

}  // namespace cachesvc::replay
