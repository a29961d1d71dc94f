// tiers/clock.h: the time source tiers use for lease and allocation deadlines.
//
// Injected like LevelDB's Env so that tests (and the trace-replay benchmark) can run leases in
// virtual time: RealClock reads std::chrono::steady_clock; ManualClock only moves when told to.
// Both are thread-safe. A tier does not own its clock; the clock must outlive it.
#pragma once

#include <atomic>
#include <chrono>

namespace cachesvc::tiers {

class Clock {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Clock() = default;
  [[nodiscard]] virtual TimePoint Now() const = 0;
};

class RealClock final : public Clock {
 public:
  [[nodiscard]] TimePoint Now() const override { return std::chrono::steady_clock::now(); }
  // The process-wide real clock (stateless, so sharing it is harmless).
  static Clock* Default() {
    static RealClock clock;
    return &clock;
  }
};

class ManualClock final : public Clock {
 public:
  [[nodiscard]] TimePoint Now() const override {
    return TimePoint(std::chrono::nanoseconds(now_ns_.load(std::memory_order_acquire)));
  }
  void Advance(std::chrono::nanoseconds by) {
    now_ns_.fetch_add(by.count(), std::memory_order_acq_rel);
  }

 private:
  std::atomic<std::int64_t> now_ns_{1'000'000'000};
};

}  // namespace cachesvc::tiers
