// base/env.h: the service's environment, injected in the manner of LevelDB's Env/EnvWrapper:
// time, sleeping and threads. Everything that reads the clock or waits for time to pass asks the
// Env it was given, so tests and the trace replay run the same code in virtual time (ManualEnv),
// and fault injection wraps an Env (EnvWrapper) instead of adding hooks to each class.
//
// One time scale: NowMicros() is microseconds on a monotonic clock whose epoch is arbitrary (but
// the same for every caller of one Env). Whatever a block or a lease records (last access,
// deadlines) is in it; NowUnixMicros() is for what people and clients are shown.
//
// All functions are thread-safe. An Env is not owned by what uses it and must outlive it;
// Env::Default() lives for the whole process.
#pragma once

#include <pthread.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <thread>
#include <utility>

#include "base/mutex.h"

namespace cachesvc {

class Env {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  virtual ~Env() = default;

  // Microseconds on this Env's monotonic clock (never goes backwards).
  [[nodiscard]] virtual std::int64_t NowMicros() const = 0;
  // Microseconds since the Unix epoch (the wall clock; may jump when the system clock is set).
  [[nodiscard]] virtual std::int64_t NowUnixMicros() const = 0;
  // Blocks the calling thread for `d` of this Env's time.
  virtual void SleepFor(std::chrono::microseconds d) = 0;
  // Starts a thread running `fn`; `name` (at most 15 characters kept) is shown by ps and gdb.
  [[nodiscard]] virtual std::thread StartThread(std::string name, std::function<void()> fn) = 0;

  // NowMicros() as a time point, for deadlines kept as std::chrono values.
  [[nodiscard]] TimePoint Now() const { return TimePoint(std::chrono::microseconds(NowMicros())); }
  // A time of this Env's monotonic clock, as Unix milliseconds now (for leases' expiry times).
  [[nodiscard]] std::int64_t ToUnixMillis(std::int64_t micros) const {
    return (NowUnixMicros() + (micros - NowMicros())) / 1000;
  }

  // The real environment: std::chrono::steady_clock and system_clock, std::thread.
  static Env* Default();
};

// Forwards every call to another Env; override what a test or a fault injector changes.
class EnvWrapper : public Env {
 public:
  explicit EnvWrapper(Env* target) : target_(target) {}
  [[nodiscard]] Env* target() const { return target_; }

  [[nodiscard]] std::int64_t NowMicros() const override { return target_->NowMicros(); }
  [[nodiscard]] std::int64_t NowUnixMicros() const override { return target_->NowUnixMicros(); }
  void SleepFor(std::chrono::microseconds d) override { target_->SleepFor(d); }
  [[nodiscard]] std::thread StartThread(std::string name, std::function<void()> fn) override {
    return target_->StartThread(std::move(name), std::move(fn));
  }

 private:
  Env* const target_;
};

// Virtual time: the clock moves only when Advance() is called. SleepFor waits until the clock
// has been advanced past its deadline. Threads are real.
class ManualEnv final : public Env {
 public:
  // The clock starts at `start_micros` (monotonic) and `unix_start_micros` (wall).
  explicit ManualEnv(std::int64_t start_micros = 1'000'000,
                     std::int64_t unix_start_micros = 1'767'225'600'000'000)  // 2026-01-01
      : now_(start_micros), unix_offset_(unix_start_micros - start_micros) {}

  [[nodiscard]] std::int64_t NowMicros() const override {
    MutexLock lock(&mu_);
    return now_;
  }
  [[nodiscard]] std::int64_t NowUnixMicros() const override {
    MutexLock lock(&mu_);
    return now_ + unix_offset_;
  }
  void SleepFor(std::chrono::microseconds d) override {
    MutexLock lock(&mu_);
    const std::int64_t until = now_ + std::max<std::int64_t>(d.count(), 0);
    advanced_.Wait(&mu_, [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return now_ >= until; });
  }
  [[nodiscard]] std::thread StartThread(std::string name, std::function<void()> fn) override;

  // Moves the clock forward by `d` (negative durations are ignored) and wakes sleepers due.
  void Advance(std::chrono::microseconds d) {
    {
      MutexLock lock(&mu_);
      now_ += std::max<std::int64_t>(d.count(), 0);
    }
    advanced_.SignalAll();
  }

 private:
  mutable Mutex mu_;
  CondVar advanced_;
  std::int64_t now_ ABSL_GUARDED_BY(mu_);
  const std::int64_t unix_offset_;
};

namespace env_internal {
inline std::thread StartNamedThread(std::string name, std::function<void()> fn) {
  return std::thread([name = std::move(name), fn = std::move(fn)] {
    pthread_setname_np(pthread_self(), name.substr(0, 15).c_str());
    fn();
  });
}
}  // namespace env_internal

inline std::thread ManualEnv::StartThread(std::string name, std::function<void()> fn) {
  return env_internal::StartNamedThread(std::move(name), std::move(fn));
}

namespace env_internal {
class RealEnv final : public Env {
 public:
  [[nodiscard]] std::int64_t NowMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  [[nodiscard]] std::int64_t NowUnixMicros() const override {
    return std::chrono::duration_cast<std::chrono::microseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  void SleepFor(std::chrono::microseconds d) override { std::this_thread::sleep_for(d); }
  [[nodiscard]] std::thread StartThread(std::string name, std::function<void()> fn) override {
    return StartNamedThread(std::move(name), std::move(fn));
  }
};
}  // namespace env_internal

inline Env* Env::Default() {
  static env_internal::RealEnv env;  // stateless: sharing it is harmless
  return &env;
}

}  // namespace cachesvc
