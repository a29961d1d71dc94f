// cachesvc/metrics.cc: the metrics registry, histogram buckets and the Prometheus text rendering
// (format 0.0.4: https://prometheus.io/docs/instrumenting/exposition_formats/).
#include "cachesvc/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <iterator>
#include <limits>
#include <optional>
#include <type_traits>
#include <variant>

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::metrics {
namespace {

enum class Type { kCounter, kGauge, kHistogram };

std::string_view TypeName(Type type) {
  switch (type) {
    case Type::kCounter:
      return "counter";
    case Type::kGauge:
      return "gauge";
    case Type::kHistogram:
      return "histogram";
  }
  return "untyped";
}

template <typename Metric>
constexpr Type TypeOf() {
  if constexpr (std::is_same_v<Metric, Counter>) return Type::kCounter;
  if constexpr (std::is_same_v<Metric, Gauge>) return Type::kGauge;
  return Type::kHistogram;
}

constexpr std::string_view kHistogramSuffixes[] = {"_bucket", "_sum", "_count"};

bool IsAlpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsValidMetricName(std::string_view name) {
  if (name.empty() || !(IsAlpha(name[0]) || name[0] == ':')) return false;
  return std::all_of(name.begin(), name.end(),
                     [](char c) { return IsAlpha(c) || IsDigit(c) || c == ':'; });
}

bool IsValidLabelName(std::string_view name) {
  if (name.empty() || !IsAlpha(name[0]) || name.starts_with("__")) return false;
  return std::all_of(name.begin(), name.end(), [](char c) { return IsAlpha(c) || IsDigit(c); });
}

// "" when `name` may name a metric of `type`, else what is wrong with it.
std::string CheckName(std::string_view name, Type type) {
  if (!IsValidMetricName(name)) {
    return fmt::format("invalid metric name '{}' (want [a-zA-Z_:][a-zA-Z0-9_:]*)", name);
  }
  if (type == Type::kCounter && !name.ends_with("_total")) {
    return fmt::format("counter name '{}' does not end in _total", name);
  }
  return {};
}

// Sorts `in` by label name into `out`; "" when the labels are valid, else what is wrong.
std::string CanonicalLabels(std::string_view name, const Labels& in, Type type, Labels* out) {
  *out = in;
  std::sort(out->begin(), out->end());
  for (size_t i = 0; i < out->size(); ++i) {
    const std::string& key = (*out)[i].first;
    if (!IsValidLabelName(key)) {
      return fmt::format(
          "metric '{}': invalid label name '{}' (want [a-zA-Z_][a-zA-Z0-9_]*, not "
          "starting with __)",
          name, key);
    }
    if (type == Type::kHistogram && key == "le") {
      return fmt::format("histogram '{}' may not have a label named le", name);
    }
    if (i > 0 && (*out)[i - 1].first == key) {
      return fmt::format("metric '{}': label '{}' given twice", name, key);
    }
  }
  return {};
}

// Copies `in` into `out` without a trailing +Inf; "" when the bounds are finite and strictly
// increasing, else what is wrong (and `out` is made usable: finite, sorted, distinct).
std::string CheckBounds(std::string_view name, std::span<const double> in,
                        std::vector<double>* out) {
  out->assign(in.begin(), in.end());
  if (!out->empty() && out->back() == std::numeric_limits<double>::infinity()) out->pop_back();
  std::string problem;
  for (size_t i = 0; i < out->size() && problem.empty(); ++i) {
    if (!std::isfinite((*out)[i]) || (i > 0 && !((*out)[i - 1] < (*out)[i]))) {
      problem = fmt::format(
          "histogram '{}': bucket bounds must be finite and strictly increasing "
          "(bound {} is {})",
          name, i, (*out)[i]);
    }
  }
  if (!problem.empty()) {
    std::erase_if(*out, [](double b) { return !std::isfinite(b); });
    std::sort(out->begin(), out->end());
    out->erase(std::unique(out->begin(), out->end()), out->end());
  }
  return problem;
}

// "" unless `name` (of `type`) and a histogram's _bucket/_sum/_count series would share a name.
// `type_of(n)` is the type of the family named n, if there is one.
template <typename TypeOfFn>
std::string SuffixClash(std::string_view name, Type type, const TypeOfFn& type_of) {
  for (std::string_view suffix : kHistogramSuffixes) {
    if (name.ends_with(suffix)) {
      const std::string_view base = name.substr(0, name.size() - suffix.size());
      if (type_of(base) == Type::kHistogram) {
        return fmt::format("metric '{}' clashes with the series of histogram '{}'", name, base);
      }
    }
    if (type == Type::kHistogram) {
      const std::string series = fmt::format("{}{}", name, suffix);
      if (type_of(series).has_value()) {
        return fmt::format("histogram '{}' clashes with the metric '{}'", name, series);
      }
    }
  }
  return {};
}

// Numbers as Prometheus's parser (Go's strconv.ParseFloat) reads them: the shortest text that
// round-trips, and +Inf, -Inf, NaN spelled its way.
void AppendNumber(fmt::memory_buffer* out, double v) {
  if (std::isnan(v)) {
    fmt::format_to(std::back_inserter(*out), "NaN");
  } else if (std::isinf(v)) {
    fmt::format_to(std::back_inserter(*out), "{}", v > 0 ? "+Inf" : "-Inf");
  } else {
    fmt::format_to(std::back_inserter(*out), "{}", v);
  }
}

// HELP text escapes backslash and newline; label values also the double quote.
void AppendEscaped(fmt::memory_buffer* out, std::string_view s, bool is_label_value) {
  for (char c : s) {
    if (c == '\\') {
      out->append(std::string_view("\\\\"));
    } else if (c == '\n') {
      out->append(std::string_view("\\n"));
    } else if (c == '"' && is_label_value) {
      out->append(std::string_view("\\\""));
    } else {
      out->push_back(c);
    }
  }
}

// `{k="v",...}`, with `le` last when given; nothing at all for no labels.
void AppendLabels(fmt::memory_buffer* out, const Labels& labels,
                  std::optional<double> le = std::nullopt) {
  if (labels.empty() && !le.has_value()) return;
  out->push_back('{');
  bool first = true;
  for (const auto& [key, value] : labels) {
    if (!first) out->push_back(',');
    first = false;
    out->append(key);
    out->append(std::string_view("=\""));
    AppendEscaped(out, value, /*is_label_value=*/true);
    out->push_back('"');
  }
  if (le.has_value()) {
    if (!first) out->push_back(',');
    out->append(std::string_view("le=\""));
    AppendNumber(out, *le);
    out->push_back('"');
  }
  out->push_back('}');
}

// One family as rendered: static metrics and collector samples merged.
using SampleValue = std::variant<uint64_t, double, HistogramSnapshot>;
struct RenderFamily {
  Type type = Type::kCounter;
  std::string help;
  std::map<Labels, SampleValue> series;
};

void AppendFamily(fmt::memory_buffer* out, std::string_view name, const RenderFamily& family) {
  if (!family.help.empty()) {
    fmt::format_to(std::back_inserter(*out), "# HELP {} ", name);
    AppendEscaped(out, family.help, /*is_label_value=*/false);
    out->push_back('\n');
  }
  fmt::format_to(std::back_inserter(*out), "# TYPE {} {}\n", name, TypeName(family.type));
  for (const auto& [labels, value] : family.series) {
    if (const auto* h = std::get_if<HistogramSnapshot>(&value)) {
      for (size_t i = 0; i < h->cumulative.size(); ++i) {
        const double le =
            i < h->bounds.size() ? h->bounds[i] : std::numeric_limits<double>::infinity();
        fmt::format_to(std::back_inserter(*out), "{}_bucket", name);
        AppendLabels(out, labels, le);
        fmt::format_to(std::back_inserter(*out), " {}\n", h->cumulative[i]);
      }
      fmt::format_to(std::back_inserter(*out), "{}_sum", name);
      AppendLabels(out, labels);
      out->push_back(' ');
      AppendNumber(out, h->sum);
      fmt::format_to(std::back_inserter(*out), "\n{}_count", name);
      AppendLabels(out, labels);
      fmt::format_to(std::back_inserter(*out), " {}\n", h->count);
    } else {
      out->append(name);
      AppendLabels(out, labels);
      out->push_back(' ');
      if (const auto* u = std::get_if<uint64_t>(&value)) {
        fmt::format_to(std::back_inserter(*out), "{}", *u);
      } else {
        AppendNumber(out, std::get<double>(value));
      }
      out->push_back('\n');
    }
  }
}

}  // namespace

// ---- Histogram and buckets ----

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)),
      buckets_(std::make_unique<std::atomic<uint64_t>[]>(bounds_.size() + 1)) {}

void Histogram::Observe(double v) {
  if (std::isnan(v)) return;
  // First bound >= v: buckets are upper-inclusive (`le`). Past the end is the +Inf bucket.
  const auto index = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  buckets_[static_cast<size_t>(index)].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

HistogramSnapshot Histogram::Snapshot() const {
  HistogramSnapshot snap;
  snap.bounds = bounds_;
  snap.cumulative.resize(bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    snap.cumulative[i] = running;
  }
  snap.count = running;
  snap.sum = sum_.load(std::memory_order_relaxed);
  return snap;
}

std::vector<double> LatencyBucketsSeconds() {
  return {50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3,
          50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};
}

std::vector<double> ByteSizeBuckets() { return ExponentialBuckets(256, 4, 12); }

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  std::vector<double> bounds;
  if (!(start > 0) || !(factor > 1) || count < 1) return bounds;  // only the +Inf bucket
  bounds.reserve(static_cast<size_t>(count));
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

// ---- Collector ----

void Collector::AddGauge(std::string_view name, std::string_view help, const Labels& labels,
                         double value) {
  samples_.push_back(Sample{std::string(name), std::string(help), false, labels, value});
}

void Collector::AddCounter(std::string_view name, std::string_view help, const Labels& labels,
                           double value) {
  samples_.push_back(Sample{std::string(name), std::string(help), true, labels, value});
}

// ---- Registry ----

struct Registry::Family {
  Type type = Type::kCounter;
  std::string help;
  std::vector<double> bounds;  // histograms only
  std::map<Labels, std::unique_ptr<Counter>> counters;
  std::map<Labels, std::unique_ptr<Gauge>> gauges;
  std::map<Labels, std::unique_ptr<Histogram>> histograms;

  template <typename Metric>
  Metric& Series(const Labels& labels) {
    auto& series = [this]() -> std::map<Labels, std::unique_ptr<Metric>>& {
      if constexpr (std::is_same_v<Metric, Counter>) {
        return counters;
      } else if constexpr (std::is_same_v<Metric, Gauge>) {
        return gauges;
      } else {
        return histograms;
      }
    }();
    std::unique_ptr<Metric>& slot = series[labels];
    if (slot == nullptr) {
      if constexpr (std::is_same_v<Metric, Histogram>) {
        slot = std::make_unique<Histogram>(bounds);
      } else {
        slot = std::make_unique<Metric>();
      }
    }
    return *slot;
  }
};

Registry::Registry(Options options) : options_(options) {}
Registry::~Registry() = default;

void Registry::Misuse(const std::string& message) const {
  misuse_count_.fetch_add(1, std::memory_order_relaxed);
  spdlog::error("metrics: {}", message);
  if (options_.abort_on_misuse) {
    spdlog::default_logger()->flush();
    std::abort();
  }
}

template <typename Metric>
Metric& Registry::GetOrCreate(std::string_view name, std::string_view help, const Labels& labels,
                              std::span<const double> bounds_in) {
  constexpr Type kType = TypeOf<Metric>();
  Labels sorted;
  std::vector<double> bounds;
  std::string problem = CheckName(name, kType);
  if (problem.empty()) problem = CanonicalLabels(name, labels, kType, &sorted);
  if constexpr (kType == Type::kHistogram) {
    std::string bounds_problem = CheckBounds(name, bounds_in, &bounds);
    if (problem.empty()) problem = std::move(bounds_problem);
  }

  MutexLock lock(&mu_);
  if (problem.empty()) {
    auto it = families_.find(name);
    if (it == families_.end()) {
      // Runs within this call, under mu_, which the analysis cannot see through a lambda.
      const auto type_of = [this](std::string_view n)
                               ABSL_NO_THREAD_SAFETY_ANALYSIS -> std::optional<Type> {
        auto found = families_.find(n);
        if (found == families_.end()) return std::nullopt;
        return found->second->type;
      };
      problem = SuffixClash(name, kType, type_of);
      if (problem.empty()) {
        auto family = std::make_unique<Family>();
        family->type = kType;
        family->help = std::string(help);
        family->bounds = bounds;
        it = families_.emplace(std::string(name), std::move(family)).first;
      }
    } else if (it->second->type != kType) {
      problem = fmt::format("metric '{}' is a {}, asked for as a {}", name,
                            TypeName(it->second->type), TypeName(kType));
    }
    if (problem.empty()) {
      Family& family = *it->second;
      if (family.help != help) {
        Misuse(
            fmt::format("metric '{}' asked for with help '{}', has '{}'", name, help, family.help));
      }
      if (kType == Type::kHistogram && family.bounds != bounds) {
        Misuse(fmt::format("histogram '{}' asked for with other bucket bounds than it has", name));
      }
      return family.Series<Metric>(sorted);
    }
  }

  Misuse(problem);
  auto family = std::make_unique<Family>();
  family->type = kType;
  family->bounds = std::move(bounds);
  Metric& metric = family->Series<Metric>(labels);
  detached_.push_back(std::move(family));
  return metric;
}

Counter& Registry::counter(std::string_view name, std::string_view help, const Labels& labels) {
  return GetOrCreate<Counter>(name, help, labels, {});
}

Gauge& Registry::gauge(std::string_view name, std::string_view help, const Labels& labels) {
  return GetOrCreate<Gauge>(name, help, labels, {});
}

Histogram& Registry::histogram(std::string_view name, std::string_view help, const Labels& labels,
                               std::span<const double> bounds) {
  return GetOrCreate<Histogram>(name, help, labels, bounds);
}

Registry::CollectorId Registry::AddCollector(std::function<void(Collector&)> collect) {
  MutexLock lock(&collectors_mu_);
  const CollectorId id = next_collector_id_++;
  collectors_.emplace(id, std::move(collect));
  return id;
}

Registry::CollectorId Registry::gauge_fn(std::string_view name, std::string_view help,
                                         const Labels& labels, std::function<double()> read) {
  // Checked here, where the caller's stack says who got it wrong; Render checks again.
  Labels sorted;
  std::string problem = CheckName(name, Type::kGauge);
  if (problem.empty()) problem = CanonicalLabels(name, labels, Type::kGauge, &sorted);
  if (!problem.empty()) {
    Misuse(problem);
    return 0;
  }
  return AddCollector(
      [name = std::string(name), help = std::string(help), sorted = std::move(sorted),
       read = std::move(read)](Collector& out) { out.AddGauge(name, help, sorted, read()); });
}

void Registry::RemoveCollector(CollectorId id) {
  MutexLock lock(&collectors_mu_);
  collectors_.erase(id);
}

std::vector<Collector::Sample> Registry::RunCollectors() const {
  std::vector<Collector::Sample> samples;
  MutexLock lock(&collectors_mu_);
  for (const auto& [id, collect] : collectors_) {
    Collector collector;
    collect(collector);
    std::move(collector.samples_.begin(), collector.samples_.end(), std::back_inserter(samples));
  }
  return samples;
}

std::string Registry::Render() const {
  // Collectors first and outside mu_: they may be slow, and creating metrics must not wait.
  std::vector<Collector::Sample> samples = RunCollectors();

  std::map<std::string, RenderFamily, std::less<>> families;
  {
    MutexLock lock(&mu_);
    for (const auto& [name, family] : families_) {
      RenderFamily& out = families[name];
      out.type = family->type;
      out.help = family->help;
      for (const auto& [labels, c] : family->counters) out.series.emplace(labels, c->Value());
      for (const auto& [labels, g] : family->gauges) out.series.emplace(labels, g->Value());
      for (const auto& [labels, h] : family->histograms) out.series.emplace(labels, h->Snapshot());
    }
  }

  for (Collector::Sample& sample : samples) {
    const Type type = sample.is_counter ? Type::kCounter : Type::kGauge;
    Labels sorted;
    std::string problem = CheckName(sample.name, type);
    if (problem.empty()) problem = CanonicalLabels(sample.name, sample.labels, type, &sorted);
    auto it = families.find(sample.name);
    if (problem.empty() && it == families.end()) {
      problem = SuffixClash(sample.name, type, [&families](std::string_view n) {
        auto found = families.find(n);
        return found == families.end() ? std::nullopt : std::optional<Type>(found->second.type);
      });
      if (problem.empty()) {
        it = families.emplace(sample.name, RenderFamily{type, sample.help, {}}).first;
      }
    }
    if (problem.empty() && it->second.type != type) {
      problem = fmt::format("collector sample '{}' is a {}, the metric is a {}", sample.name,
                            TypeName(type), TypeName(it->second.type));
    }
    if (problem.empty() && !it->second.series.emplace(std::move(sorted), sample.value).second) {
      problem = fmt::format("collector sample '{}' duplicates a series", sample.name);
    }
    if (!problem.empty()) {
      Misuse(fmt::format("{} (dropped from this scrape)", problem));
    } else if (it->second.help != sample.help) {
      Misuse(fmt::format("collector sample '{}' has help '{}', the metric has '{}'", sample.name,
                         sample.help, it->second.help));
    }
  }

  fmt::memory_buffer out;
  for (const auto& [name, family] : families) AppendFamily(&out, name, family);
  return fmt::to_string(out);
}

}  // namespace cachesvc::metrics
