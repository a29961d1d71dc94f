#include "bench/replay/driver.h"

namespace cachesvc::replay {

ReplayDriver::ReplayDriver(const Trace& trace, ToolEstimate estimate)
    : trace_(trace), estimate_(estimate), closes_(trace.requests.size(), false) {
  absl::flat_hash_map<std::uint64_t, std::size_t> last;
  for (std::size_t i = 0; i < trace.requests.size(); ++i) {
    if (trace.requests[i].session != 0) last[trace.requests[i].session] = i;
  }
  for (const auto& [session, i] : last) closes_[i] = true;
}

void ReplayDriver::DeliverStartsUntil(std::int64_t t_us, ReplayTarget& target) {
  while (!starts_.empty() && starts_.begin()->first <= t_us) {
    const auto [start_us, s] = *starts_.begin();
    starts_.erase(starts_.begin());
    const TraceRequest& r = trace_.requests[s.request];
    std::int64_t expected_end = *r.tool_end_us;
    if (estimate_ == ToolEstimate::kLearned) {
      expected_end = start_us + learned_[r.tool_name].Expected();
      in_flight_[r.session] = {r.tool_name, start_us};
    }
    target.ToolCallStarted(r.session, r.blocks, start_us, expected_end);
  }
}

ServeResult ReplayDriver::Step(std::size_t ri, ReplayTarget& target,
                               std::span<std::uint8_t> hit_tiers) {
  const TraceRequest& r = trace_.requests[ri];
  DeliverStartsUntil(r.t_us, target);
  // Prefetches due by now first: the daemon runs them on a timer, at their due time.
  target.Prefetch(r.t_us);
  if (r.resume) {
    target.ToolCallEnded(r.session, r.t_us);
    if (auto it = in_flight_.find(r.session); it != in_flight_.end()) {
      learned_[it->second.first].Add(r.t_us - it->second.second);
      in_flight_.erase(it);
    }
  }
  const ServeResult s = target.Serve(r, r.t_us, hit_tiers);
  if (closes_[ri]) {
    target.SessionClosed(r.session, r.blocks, r.t_us);
  } else if (r.tool_start_us && r.tool_end_us) {
    starts_.emplace(*r.tool_start_us, Start{ri});
  }
  return s;
}

}  // namespace cachesvc::replay
