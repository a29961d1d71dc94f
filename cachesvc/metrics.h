// cachesvc/metrics.h: the daemon's metrics (counters, gauges, histograms) and their rendering in
// the Prometheus text exposition format 0.0.4.
//
// A Registry creates and owns every metric. Creation is get-or-create by (name, labels) and takes
// a mutex; do it once (at start-up, or the first time a label value is seen) and keep the
// reference: it stays valid for the Registry's lifetime. The hot-path operations (Counter::Inc,
// Gauge::Set/Add, Histogram::Observe) are lock-free relaxed atomics, safe from any number of
// threads. Values read from elsewhere at scrape time (tier occupancy, sessions by state, leases
// outstanding) come from collectors: callbacks that Render() runs, which emit gauges or counters.
//
// Naming rules, checked at creation: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*; counter names
// end in `_total` (the name is the family name in `# TYPE`); label names match
// [a-zA-Z_][a-zA-Z0-9_]* and do not start with `__`; histograms may not use the label `le`; one
// name has one type, one help text and (histograms) one set of bucket bounds; no name may collide
// with a histogram's `_bucket`/`_sum`/`_count` series. Label order does not matter: labels are
// sorted by name, so {a,b} and {b,a} are the same series. Label values may be any UTF-8.
//
// Breaking a rule is a programming error ("misuse"). It is logged (spdlog error) and, with
// Options::abort_on_misuse (the default in debug builds), aborts. Otherwise the process goes on:
// a type clash or an invalid name/label returns a detached metric that works but is never
// rendered; a help text or bucket mismatch returns the existing metric unchanged; a bad sample
// from a collector is dropped from that scrape.
//
// Thread-safety: every member of Registry may be called from any thread. Render() runs the
// collectors one scrape at a time; a collector must not call back into its Registry's
// AddCollector/RemoveCollector/gauge_fn/Render (it would deadlock).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "base/mutex.h"

namespace cachesvc::metrics {

// (label name, label value) pairs; order is irrelevant.
using Labels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing integer count (requests, bytes, errors).
class Counter {
 public:
  Counter() = default;
  Counter(const Counter&) = delete;
  Counter& operator=(const Counter&) = delete;

  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  [[nodiscard]] uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  // Own cache line: counters bumped by many threads must not also slow their neighbours.
  alignas(64) std::atomic<uint64_t> value_{0};
};

// A value that goes up and down (queue depth, bytes in flight).
class Gauge {
 public:
  Gauge() = default;
  Gauge(const Gauge&) = delete;
  Gauge& operator=(const Gauge&) = delete;

  void Set(double v) { value_.store(v, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Sub(double delta) { value_.fetch_sub(delta, std::memory_order_relaxed); }
  [[nodiscard]] double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  alignas(64) std::atomic<double> value_{0.0};
};

// A histogram's state at one instant, as rendered: `cumulative[i]` counts observations
// <= bounds[i]; cumulative.back() (the +Inf bucket) == count.
struct HistogramSnapshot {
  std::vector<double> bounds;
  std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries
  uint64_t count = 0;
  double sum = 0.0;
};

// Counts observations into fixed buckets (upper bounds, inclusive, as Prometheus's `le`) and
// keeps their sum. Observe() is two relaxed atomic adds plus a binary search over the bounds.
// NaN observations are dropped: one would turn `_sum` into NaN for the life of the process.
class Histogram {
 public:
  // `bounds` finite and strictly increasing (the Registry checks); +Inf is implicit.
  explicit Histogram(std::vector<double> bounds);
  Histogram(const Histogram&) = delete;
  Histogram& operator=(const Histogram&) = delete;

  void Observe(double v);
  // Buckets are read one by one, so a snapshot taken during Observe() calls may have a sum that
  // lags or leads the counts by those calls; the counts are always consistent with each other.
  [[nodiscard]] HistogramSnapshot Snapshot() const;
  [[nodiscard]] const std::vector<double>& bounds() const { return bounds_; }

 private:
  const std::vector<double> bounds_;
  // bounds_.size() + 1 per-bucket (not cumulative) counts; the last one is (bounds_.back(), +Inf].
  const std::unique_ptr<std::atomic<uint64_t>[]> buckets_;
  std::atomic<double> sum_{0.0};
};

// RPC latency in seconds, 50us to 10s in 1-2.5-5 steps (17 bounds): a cached-prefix lookup is tens
// of microseconds, an NVMe load of a long context a second or more.
std::vector<double> LatencyBucketsSeconds();
// Sizes in bytes, powers of 4 from 256 B to 1 GiB (12 bounds): a few KV blocks to whole contexts.
std::vector<double> ByteSizeBuckets();
// start, start*factor, ... (`count` bounds). Needs start > 0, factor > 1, count >= 1; otherwise
// returns no bounds (a histogram of only the +Inf bucket).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

// Where a collector puts the values it reads at scrape time. Only valid during the callback.
class Collector {
 public:
  void AddGauge(std::string_view name, std::string_view help, const Labels& labels, double value);
  // A counter kept elsewhere (the name ends in `_total`); the value must not decrease.
  void AddCounter(std::string_view name, std::string_view help, const Labels& labels, double value);

 private:
  friend class Registry;
  struct Sample {
    std::string name;
    std::string help;
    bool is_counter;
    Labels labels;
    double value;
  };
  Collector() = default;
  std::vector<Sample> samples_;
};

class Registry {
 public:
  struct Options {
#ifdef NDEBUG
    bool abort_on_misuse = false;
#else
    bool abort_on_misuse = true;
#endif
  };
  using CollectorId = uint64_t;

  Registry() : Registry(Options{}) {}
  explicit Registry(Options options);
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;
  ~Registry();

  // Get-or-create. The reference lives as long as the Registry. See the header comment for the
  // naming rules and what happens when one is broken.
  Counter& counter(std::string_view name, std::string_view help, const Labels& labels = {});
  Gauge& gauge(std::string_view name, std::string_view help, const Labels& labels = {});
  // `bounds`: finite, strictly increasing upper bounds; a trailing +Inf is accepted and ignored.
  // Every series of one histogram name shares the bounds it was first created with.
  Histogram& histogram(std::string_view name, std::string_view help, const Labels& labels,
                       std::span<const double> bounds);

  // Runs `collect` on every Render(). Returns an id for RemoveCollector.
  CollectorId AddCollector(std::function<void(Collector&)> collect);
  // A gauge whose value is `read()` at each Render(). Same as a collector emitting one gauge; the
  // name and labels are checked now, and a misuse registers nothing and returns 0 (an id
  // RemoveCollector ignores). `read` must be safe to call from the scraping thread.
  CollectorId gauge_fn(std::string_view name, std::string_view help, const Labels& labels,
                       std::function<double()> read);
  // After it returns, the collector is not running and never runs again (so whatever it reads may
  // be destroyed). Unknown ids are ignored.
  void RemoveCollector(CollectorId id);

  // Every metric and collector sample in the text format 0.0.4: families sorted by name, series
  // within a family sorted by labels, each family with its # TYPE line and, unless the help text
  // is empty, its # HELP line. Runs the collectors first (misuses found there count too).
  [[nodiscard]] std::string Render() const;

  // How many misuses were seen (see the header comment); for tests and self-checks.
  [[nodiscard]] uint64_t misuse_count() const {
    return misuse_count_.load(std::memory_order_relaxed);
  }

 private:
  struct Family;

  // Logs `message`, counts it, and aborts when options_.abort_on_misuse.
  void Misuse(const std::string& message) const;
  template <typename Metric>
  Metric& GetOrCreate(std::string_view name, std::string_view help, const Labels& labels,
                      std::span<const double> bounds);
  // Runs every collector (holding collectors_mu_) and returns what they emitted.
  std::vector<Collector::Sample> RunCollectors() const;

  // Constant after construction.
  const Options options_;

  mutable Mutex mu_;
  std::map<std::string, std::unique_ptr<Family>, std::less<>> families_ ABSL_GUARDED_BY(mu_);
  // Metrics handed out after a misuse: they work, are never rendered.
  std::vector<std::unique_ptr<Family>> detached_ ABSL_GUARDED_BY(mu_);

  // Held while collectors run (so scrapes run them one at a time), so that RemoveCollector waits
  // for a running collector.
  mutable Mutex collectors_mu_;
  std::map<CollectorId, std::function<void(Collector&)>> collectors_
      ABSL_GUARDED_BY(collectors_mu_);
  CollectorId next_collector_id_ ABSL_GUARDED_BY(collectors_mu_) = 1;

  mutable std::atomic<uint64_t> misuse_count_{0};
};

}  // namespace cachesvc::metrics
