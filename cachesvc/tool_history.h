// cachesvc/tool_history.h: what the service learns of one tool's call durations, used to plan a
// tool call whose caller gave no expected duration. The session store keeps (and persists) one
// per tool name; the trace replay learns the same way when it runs with learned expectations.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <vector>

namespace cachesvc {

// What has been learned about one tool name.
struct ToolStats {
  std::uint64_t calls = 0;
  std::int64_t p50_us = 0;
  std::int64_t p90_us = 0;
};

struct ToolHistory {
  static constexpr std::size_t kSamples = 256;  // the most recent durations kept
  static constexpr std::int64_t kDefaultExpectationUs = 4'000'000;  // before any call has ended

  std::uint64_t calls = 0;
  std::vector<std::int64_t> recent_us;  // oldest first, at most kSamples

  void Add(std::int64_t duration_us) {
    ++calls;
    recent_us.push_back(duration_us);
    if (recent_us.size() > kSamples) recent_us.erase(recent_us.begin());
  }
  [[nodiscard]] ToolStats Stats() const {
    ToolStats t;
    t.calls = calls;
    if (recent_us.empty()) return t;
    std::vector<std::int64_t> sorted = recent_us;
    std::sort(sorted.begin(), sorted.end());
    t.p50_us = sorted[(sorted.size() - 1) / 2];
    t.p90_us = sorted[(sorted.size() - 1) * 9 / 10];
    return t;
  }
  // The duration to plan a new call with: the median of the recent ones, or the default.
  [[nodiscard]] std::int64_t Expected() const {
    return recent_us.empty() ? kDefaultExpectationUs : Stats().p50_us;
  }
};

}  // namespace cachesvc
