// tests/cachesvc/metrics_test.cc: the metrics registry (get-or-create, lock-free updates under
// threads, collectors, misuse handling), its Prometheus text output (exact golden text, escaping,
// a format check standing in for promtool, which is not installed) and the /metrics HTTP exporter.
#include "cachesvc/metrics.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <httplib.h>

#include <cmath>
#include <limits>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cachesvc/metrics_http.h"

namespace cachesvc::metrics {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

constexpr double kInf = std::numeric_limits<double>::infinity();

Registry::Options Lenient() { return Registry::Options{.abort_on_misuse = false}; }

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

// What promtool would check, in small: every line is a HELP/TYPE comment or a sample
// `name{label="value",...} number`; each sample belongs to the family of the TYPE line above it
// (histograms: name_bucket with an `le` label, name_sum, name_count); no series appears twice; the
// text ends in a newline. Returns the problems found.
std::vector<std::string> FormatProblems(const std::string& text) {
  static const std::regex kSample(
      R"(^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*")"
      R"((?:,[a-zA-Z_][a-zA-Z0-9_]*="(?:\\[\\"n]|[^"\\\n])*")*\})? )"
      R"(([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?|[-+]Inf|NaN)$)");
  static const std::regex kHelp(R"(^# HELP [a-zA-Z_:][a-zA-Z0-9_:]* .*$)");
  static const std::regex kType(R"(^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (counter|gauge|histogram)$)");
  std::vector<std::string> problems;
  if (!text.empty() && text.back() != '\n') problems.push_back("no final newline");
  std::string family;
  std::string type;
  std::set<std::string> families_seen;
  std::set<std::string> series_seen;
  for (const std::string& line : Lines(text)) {
    std::smatch m;
    if (line.starts_with("#")) {
      if (std::regex_match(line, m, kType)) {
        family = m[1];
        type = m[2];
        if (!families_seen.insert(family).second) problems.push_back("family twice: " + line);
      } else if (!std::regex_match(line, kHelp)) {
        problems.push_back("bad comment: " + line);
      }
      continue;
    }
    if (!std::regex_match(line, m, kSample)) {
      problems.push_back("bad sample: " + line);
      continue;
    }
    const std::string name = m[1];
    const std::string labels = m[2];
    bool belongs = name == family;
    if (type == "histogram") {
      belongs = name == family + "_sum" || name == family + "_count" ||
                (name == family + "_bucket" && labels.find("le=\"") != std::string::npos);
    }
    if (!belongs) problems.push_back("sample outside its family '" + family + "': " + line);
    if (!series_seen.insert(name + labels).second) problems.push_back("series twice: " + line);
  }
  return problems;
}

// ---- rendering ----

TEST(MetricsRender, GoldenText) {
  Registry registry;
  registry.counter("cachesvc_rpc_total", "RPCs handled.", {{"method", "Lookup"}, {"code", "OK"}})
      .Inc(3);
  registry
      .counter("cachesvc_rpc_total", "RPCs handled.", {{"method", "Lookup"}, {"code", "NOT_FOUND"}})
      .Inc();
  registry.gauge("cachesvc_mover_queue_depth", "Jobs queued in the mover.").Set(2.5);
  Histogram& latency =
      registry.histogram("cachesvc_rpc_latency_seconds", "RPC latency.", {{"method", "Lookup"}},
                         std::vector<double>{0.0005, 0.25, 1});
  for (double v : {0.125, 0.25, 2.0, 8.0}) latency.Observe(v);

  EXPECT_EQ(registry.Render(),
            "# HELP cachesvc_mover_queue_depth Jobs queued in the mover.\n"
            "# TYPE cachesvc_mover_queue_depth gauge\n"
            "cachesvc_mover_queue_depth 2.5\n"
            "# HELP cachesvc_rpc_latency_seconds RPC latency.\n"
            "# TYPE cachesvc_rpc_latency_seconds histogram\n"
            "cachesvc_rpc_latency_seconds_bucket{method=\"Lookup\",le=\"0.0005\"} 0\n"
            "cachesvc_rpc_latency_seconds_bucket{method=\"Lookup\",le=\"0.25\"} 2\n"
            "cachesvc_rpc_latency_seconds_bucket{method=\"Lookup\",le=\"1\"} 2\n"
            "cachesvc_rpc_latency_seconds_bucket{method=\"Lookup\",le=\"+Inf\"} 4\n"
            "cachesvc_rpc_latency_seconds_sum{method=\"Lookup\"} 10.375\n"
            "cachesvc_rpc_latency_seconds_count{method=\"Lookup\"} 4\n"
            "# HELP cachesvc_rpc_total RPCs handled.\n"
            "# TYPE cachesvc_rpc_total counter\n"
            "cachesvc_rpc_total{code=\"NOT_FOUND\",method=\"Lookup\"} 1\n"
            "cachesvc_rpc_total{code=\"OK\",method=\"Lookup\"} 3\n");
}

TEST(MetricsRender, EmptyRegistryRendersNothing) {
  Registry registry;
  EXPECT_EQ(registry.Render(), "");
}

TEST(MetricsRender, EscapesLabelValuesAndHelp) {
  Registry registry;
  registry.gauge("g", "help with \\ and \"quotes\"\nsecond line", {{"path", "a\\b\"c\nd"}}).Set(1);
  EXPECT_EQ(registry.Render(),
            "# HELP g help with \\\\ and \"quotes\"\\nsecond line\n"
            "# TYPE g gauge\n"
            "g{path=\"a\\\\b\\\"c\\nd\"} 1\n");
}

TEST(MetricsRender, NumbersAreSpelledAsPrometheusParsesThem) {
  Registry registry;
  const std::vector<std::pair<double, std::string>> cases = {
      {0, "0"},        {-0.5, "-0.5"},           {5e-05, "5e-05"}, {0.0005, "0.0005"},
      {1e21, "1e+21"}, {123456789, "123456789"}, {0.1, "0.1"},     {kInf, "+Inf"},
      {-kInf, "-Inf"}, {std::nan(""), "NaN"}};
  for (size_t i = 0; i < cases.size(); ++i) {
    registry.gauge("value", "", {{"case", std::to_string(i)}}).Set(cases[i].first);
  }
  registry.counter("big_total", "").Inc(18446744073709551615ull);
  const std::string text = registry.Render();
  for (size_t i = 0; i < cases.size(); ++i) {
    EXPECT_THAT(text,
                HasSubstr("value{case=\"" + std::to_string(i) + "\"} " + cases[i].second + "\n"));
  }
  EXPECT_THAT(text, HasSubstr("big_total 18446744073709551615\n"));
  // An empty help text leaves out the HELP line.
  EXPECT_THAT(text, Not(HasSubstr("# HELP")));
  EXPECT_THAT(FormatProblems(text), ::testing::IsEmpty()) << text;
}

TEST(MetricsRender, PassesTheFormatCheck) {
  Registry registry;
  registry.counter("a_total", "A.", {{"x", "1"}}).Inc(7);
  registry.counter("a_total", "A.", {{"x", "quote\" back\\ nl\n"}}).Inc();
  registry.gauge("b:ratio", "B.").Set(0.25);
  Histogram& h = registry.histogram("c_seconds", "C.", {{"rpc", "Get"}}, LatencyBucketsSeconds());
  h.Observe(0.003);
  h.Observe(20);
  registry.histogram("c_seconds", "C.", {{"rpc", "Put"}}, LatencyBucketsSeconds());
  registry.histogram("d_bytes", "D.", {}, ByteSizeBuckets()).Observe(4096);
  registry.gauge_fn("e", "E.", {{"tier", "host"}}, [] { return 1.5; });
  registry.AddCollector([](Collector& out) {
    out.AddCounter("f_total", "F.", {{"state", "open"}}, 3);
    out.AddGauge("b:ratio", "B.", {{"k", "v"}}, -kInf);
  });
  const std::string text = registry.Render();
  EXPECT_THAT(FormatProblems(text), ::testing::IsEmpty()) << text;
  // The checker itself catches what it is meant to catch.
  EXPECT_THAT(FormatProblems("x{a=\"b} 1\n"), ::testing::SizeIs(1));
  EXPECT_THAT(FormatProblems("# TYPE x gauge\nx 1\nx 2\n"), ::testing::SizeIs(1));
  EXPECT_THAT(FormatProblems("# TYPE x gauge\ny 1\n"), ::testing::SizeIs(1));
  EXPECT_THAT(FormatProblems("# TYPE x gauge\nx inf\n"), ::testing::SizeIs(1));
}

// ---- histograms and buckets ----

TEST(MetricsHistogram, BucketsAreCumulativeWithSumAndCount) {
  Histogram h({1, 2, 4});
  for (double v : {0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, -1.0}) h.Observe(v);
  h.Observe(std::nan(""));  // dropped
  const HistogramSnapshot snap = h.Snapshot();
  EXPECT_EQ(snap.bounds, (std::vector<double>{1, 2, 4}));
  // le=1: 0.5, 1, -1; le=2: +1.5, 2; le=4: +3, 4; +Inf: +5. Bounds are inclusive.
  EXPECT_EQ(snap.cumulative, (std::vector<uint64_t>{3, 5, 7, 8}));
  EXPECT_EQ(snap.count, 8u);
  EXPECT_EQ(snap.sum, 16.0);
}

TEST(MetricsHistogram, NoBoundsIsJustInf) {
  Histogram h({});
  h.Observe(3);
  EXPECT_EQ(h.Snapshot().cumulative, (std::vector<uint64_t>{1}));
}

TEST(MetricsHistogram, TrailingInfBoundIsIgnored) {
  Registry registry;
  Histogram& h = registry.histogram("h", "H.", {}, std::vector<double>{1, kInf});
  EXPECT_EQ(h.bounds(), (std::vector<double>{1}));
  EXPECT_EQ(registry.misuse_count(), 0u);
}

TEST(MetricsBuckets, DefaultSets) {
  const std::vector<double> latency = LatencyBucketsSeconds();
  ASSERT_EQ(latency.size(), 17u);
  EXPECT_EQ(latency.front(), 50e-6);
  EXPECT_EQ(latency.back(), 10.0);
  EXPECT_TRUE(std::is_sorted(latency.begin(), latency.end()));
  EXPECT_TRUE(std::adjacent_find(latency.begin(), latency.end()) == latency.end());

  const std::vector<double> bytes = ByteSizeBuckets();
  ASSERT_EQ(bytes.size(), 12u);
  EXPECT_EQ(bytes.front(), 256.0);
  EXPECT_EQ(bytes.back(), 1024.0 * 1024 * 1024);

  EXPECT_EQ(ExponentialBuckets(1, 2, 4), (std::vector<double>{1, 2, 4, 8}));
  EXPECT_TRUE(ExponentialBuckets(0, 2, 4).empty());
  EXPECT_TRUE(ExponentialBuckets(1, 1, 4).empty());
  EXPECT_TRUE(ExponentialBuckets(1, 2, 0).empty());
}

// ---- get-or-create ----

TEST(MetricsRegistry, GetOrCreateReturnsTheSameObject) {
  Registry registry;
  Counter& a = registry.counter("x_total", "X.", {{"a", "1"}, {"b", "2"}});
  EXPECT_EQ(&registry.counter("x_total", "X.", {{"a", "1"}, {"b", "2"}}), &a);
  EXPECT_EQ(&registry.counter("x_total", "X.", {{"b", "2"}, {"a", "1"}}), &a);  // order-free
  EXPECT_NE(&registry.counter("x_total", "X.", {{"a", "1"}, {"b", "3"}}), &a);
  EXPECT_NE(&registry.counter("x_total", "X."), &a);

  Gauge& g = registry.gauge("y", "Y.");
  EXPECT_EQ(&registry.gauge("y", "Y."), &g);
  Histogram& h = registry.histogram("z", "Z.", {{"m", "Get"}}, LatencyBucketsSeconds());
  EXPECT_EQ(&registry.histogram("z", "Z.", {{"m", "Get"}}, LatencyBucketsSeconds()), &h);
  EXPECT_EQ(registry.misuse_count(), 0u);
}

TEST(MetricsRegistry, MisuseGivesDetachedOrExistingMetrics) {
  Registry registry(Lenient());
  Counter& c = registry.counter("ops_total", "Ops.");
  c.Inc();

  // Same name, other type: a detached gauge that works but is not rendered.
  Gauge& detached = registry.gauge("ops_total", "Ops.");
  detached.Set(42);
  EXPECT_EQ(detached.Value(), 42);
  EXPECT_EQ(registry.misuse_count(), 1u);

  // Other help: the existing counter.
  EXPECT_EQ(&registry.counter("ops_total", "Other help."), &c);
  EXPECT_EQ(registry.misuse_count(), 2u);

  // Broken names and labels: detached.
  registry.counter("ops", "No _total.").Inc();
  registry.gauge("9lives", "Bad name.").Set(1);
  registry.gauge("g", "Bad label.", {{"bad-label", "x"}}).Set(1);
  registry.gauge("g", "Reserved label.", {{"__name", "x"}}).Set(1);
  registry.gauge("g", "Label twice.", {{"a", "1"}, {"a", "2"}}).Set(1);
  registry.histogram("h", "le label.", {{"le", "1"}}, std::vector<double>{1}).Observe(1);
  Histogram& unsorted = registry.histogram("h2", "Bounds.", {}, std::vector<double>{2, 1, 1});
  EXPECT_EQ(unsorted.bounds(), (std::vector<double>{1, 2}));  // detached, made usable
  EXPECT_EQ(registry.misuse_count(), 9u);

  // Histogram with other bounds than its first series: the existing one.
  Histogram& first = registry.histogram("lat", "Lat.", {{"m", "a"}}, std::vector<double>{1});
  EXPECT_EQ(&registry.histogram("lat", "Lat.", {{"m", "a"}}, std::vector<double>{2}), &first);
  EXPECT_EQ(registry.misuse_count(), 10u);

  // Names clashing with a histogram's series.
  registry.gauge("lat_count", "Clash.").Set(1);
  registry.histogram("ops_total_sum_x", "ok", {}, std::vector<double>{1});
  registry.gauge("q_bucket", "Fine: no histogram q.").Set(1);
  registry.histogram("q", "Clash with q_bucket.", {}, std::vector<double>{1});
  EXPECT_EQ(registry.misuse_count(), 12u);

  const std::string text = registry.Render();
  EXPECT_EQ(registry.misuse_count(), 12u);
  EXPECT_THAT(text, HasSubstr("# HELP ops_total Ops.\n# TYPE ops_total counter\nops_total 1\n"));
  for (std::string_view absent : {"42", "9lives", "bad-label", "__name", "le=\"1\"} 1", "h2",
                                  "# TYPE lat_count", "No _total", "# TYPE q "}) {
    EXPECT_THAT(text, Not(HasSubstr(absent)));
  }
  EXPECT_THAT(FormatProblems(text), ::testing::IsEmpty()) << text;
}

TEST(MetricsRegistryDeathTest, MisuseAbortsWhenAsked) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(
      {
        Registry registry(Registry::Options{.abort_on_misuse = true});
        registry.counter("requests", "No _total suffix.");
      },
      "");
}

// ---- threads ----

TEST(MetricsRegistry, ConcurrentUpdatesGiveExactTotals) {
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50000;
  Registry registry;
  Counter& shared = registry.counter("shared_total", "Shared.");
  Gauge& gauge = registry.gauge("in_flight", "In flight.");
  Histogram& hist =
      registry.histogram("lat_seconds", "Latency.", {}, std::vector<double>{0.5, 1.5, 2.5});

  std::atomic<bool> stop_scraping{false};
  std::thread scraper([&] {  // renders and creates metrics while the workers count
    for (int i = 0; !stop_scraping.load(); ++i) {
      registry.gauge("scrapes", "Scrapes.", {{"n", std::to_string(i % 4)}}).Add(1);
      EXPECT_THAT(FormatProblems(registry.Render()), ::testing::IsEmpty());
    }
  });
  std::vector<std::thread> workers;
  for (int t = 0; t < kThreads; ++t) {
    workers.emplace_back([&, t] {
      // Each thread also looks its own series up, as a handler would on first use.
      Counter& own =
          registry.counter("per_thread_total", "Per thread.", {{"thread", std::to_string(t)}});
      for (int i = 0; i < kPerThread; ++i) {
        shared.Inc();
        own.Inc(2);
        gauge.Add(1);
        hist.Observe(static_cast<double>(i % 3));  // 0, 1, 2: one per finite bucket
      }
    });
  }
  for (std::thread& w : workers) w.join();
  stop_scraping.store(true);
  scraper.join();

  constexpr uint64_t kTotal = uint64_t{kThreads} * kPerThread;
  EXPECT_EQ(shared.Value(), kTotal);
  EXPECT_EQ(gauge.Value(), static_cast<double>(kTotal));
  for (int t = 0; t < kThreads; ++t) {
    EXPECT_EQ(registry.counter("per_thread_total", "Per thread.", {{"thread", std::to_string(t)}})
                  .Value(),
              2u * kPerThread);
  }
  const HistogramSnapshot snap = hist.Snapshot();
  EXPECT_EQ(snap.count, kTotal);
  // i % 3 over 50000 values: 16667 zeros, 16667 ones, 16666 twos per thread.
  EXPECT_EQ(snap.cumulative,
            (std::vector<uint64_t>{16667u * kThreads, 33334u * kThreads, kTotal, kTotal}));
  EXPECT_EQ(snap.sum, (16667.0 + 2 * 16666.0) * kThreads);  // integers: exact in a double
  EXPECT_THAT(registry.Render(), HasSubstr("shared_total 400000\n"));
}

// ---- collectors ----

TEST(MetricsCollectors, EvaluatedAtRenderTime) {
  Registry registry;
  double occupancy = 0.25;
  registry.gauge_fn("tier_occupancy_ratio", "Occupancy.", {{"tier", "host"}},
                    [&occupancy] { return occupancy; });
  int calls = 0;
  std::map<std::string, int> sessions = {{"active", 2}, {"waiting_tool", 1}};
  const Registry::CollectorId id = registry.AddCollector([&](Collector& out) {
    ++calls;
    for (const auto& [state, n] : sessions) {
      out.AddGauge("sessions", "Sessions by state.", {{"state", state}}, n);
    }
    out.AddCounter("evictions_total", "Evictions.", {}, 10);
  });
  EXPECT_EQ(calls, 0);

  std::string text = registry.Render();
  EXPECT_EQ(calls, 1);
  EXPECT_THAT(text, HasSubstr("tier_occupancy_ratio{tier=\"host\"} 0.25\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE sessions gauge\nsessions{state=\"active\"} 2\n"
                              "sessions{state=\"waiting_tool\"} 1\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE evictions_total counter\nevictions_total 10\n"));

  occupancy = 0.75;
  sessions["active"] = 5;
  text = registry.Render();
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(text, HasSubstr("tier_occupancy_ratio{tier=\"host\"} 0.75\n"));
  EXPECT_THAT(text, HasSubstr("sessions{state=\"active\"} 5\n"));

  registry.RemoveCollector(id);
  registry.RemoveCollector(12345);  // unknown: ignored
  text = registry.Render();
  EXPECT_EQ(calls, 2);
  EXPECT_THAT(text, Not(HasSubstr("sessions")));
  EXPECT_THAT(text, HasSubstr("tier_occupancy_ratio"));
  EXPECT_EQ(registry.misuse_count(), 0u);
}

TEST(MetricsCollectors, MergeWithRegisteredFamiliesAndDropBadSamples) {
  Registry registry(Lenient());
  registry.gauge("leases", "Leases outstanding.", {{"tier", "hbm"}}).Set(3);
  registry.counter("hits_total", "Hits.").Inc();
  registry.AddCollector([](Collector& out) {
    out.AddGauge("leases", "Leases outstanding.", {{"tier", "host"}}, 4);    // merged
    out.AddGauge("leases", "Leases outstanding.", {{"tier", "hbm"}}, 9);     // duplicate: dropped
    out.AddCounter("leases", "Leases outstanding.", {{"tier", "nvme"}}, 1);  // no _total: dropped
    out.AddGauge("bad name", "x", {}, 1);                                    // dropped
    out.AddGauge("other", "x", {{"x", "1"}, {"x", "2"}}, 1);                 // dropped
    out.AddGauge("hits_total", "Hits.", {{"a", "b"}}, 1);         // a counter already: dropped
    out.AddGauge("leases", "Other help.", {{"tier", "cxl"}}, 2);  // kept, the help is the family's
  });
  const std::string text = registry.Render();
  EXPECT_THAT(text, HasSubstr("# HELP leases Leases outstanding.\n# TYPE leases gauge\n"
                              "leases{tier=\"cxl\"} 2\nleases{tier=\"hbm\"} 3\n"
                              "leases{tier=\"host\"} 4\n"));
  EXPECT_THAT(text, HasSubstr("# TYPE hits_total counter\nhits_total 1\n"));
  EXPECT_THAT(text, Not(HasSubstr("Other help")));
  EXPECT_THAT(text, Not(HasSubstr("nvme")));
  EXPECT_THAT(text, Not(HasSubstr("bad name")));
  EXPECT_THAT(text, Not(HasSubstr("other")));
  EXPECT_EQ(registry.misuse_count(), 6u);
  EXPECT_THAT(FormatProblems(text), ::testing::IsEmpty()) << text;
}

// ---- HTTP exporter ----

TEST(MetricsHttp, ServesMetricsOnLoopback) {
  Registry registry;
  registry.counter("cachesvc_test_requests_total", "Requests.", {{"rpc", "Lookup"}}).Inc(5);
  int scrapes = 0;  // read only on the exporter's worker threads, one scrape at a time
  registry.gauge_fn("cachesvc_test_scrapes", "Scrapes so far.", {},
                    [&scrapes] { return ++scrapes; });

  HttpExporter exporter(&registry, "127.0.0.1:0");
  ASSERT_TRUE(exporter.Start().ok());
  ASSERT_GT(exporter.port(), 0);
  EXPECT_EQ(exporter.address(), "127.0.0.1:" + std::to_string(exporter.port()));

  httplib::Client client("127.0.0.1", exporter.port());
  client.set_connection_timeout(5);
  for (int i = 1; i <= 2; ++i) {
    httplib::Result response = client.Get("/metrics");
    ASSERT_TRUE(response) << httplib::to_string(response.error());
    EXPECT_EQ(response->status, 200);
    EXPECT_EQ(response->get_header_value("Content-Type"), kPrometheusContentType);
    EXPECT_THAT(response->body, HasSubstr("cachesvc_test_requests_total{rpc=\"Lookup\"} 5\n"));
    EXPECT_THAT(response->body, HasSubstr("cachesvc_test_scrapes " + std::to_string(i) + "\n"));
    EXPECT_THAT(FormatProblems(response->body), ::testing::IsEmpty());
  }
  for (const char* path : {"/", "/metrics/x", "/other"}) {
    httplib::Result response = client.Get(path);
    ASSERT_TRUE(response) << path;
    EXPECT_EQ(response->status, 404) << path;
  }

  exporter.Stop();
  EXPECT_EQ(exporter.port(), 0);
  exporter.Stop();  // idempotent
  EXPECT_FALSE(client.Get("/metrics"));

  // A stopped exporter starts again.
  ASSERT_TRUE(exporter.Start().ok());
  httplib::Client again("127.0.0.1", exporter.port());
  httplib::Result response = again.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST(MetricsHttp, PortInUseIsAClearError) {
  Registry registry;
  HttpExporter first(&registry, "127.0.0.1:0");
  ASSERT_TRUE(first.Start().ok());
  const std::string address = "127.0.0.1:" + std::to_string(first.port());

  HttpExporter second(&registry, address);
  const absl::Status status = second.Start();
  EXPECT_EQ(status.code(), absl::StatusCode::kUnavailable) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr(address));
  EXPECT_THAT(std::string(status.message()), HasSubstr("Address already in use"));
  EXPECT_EQ(second.port(), 0);
  second.Stop();  // never started: a no-op

  // The first one is unharmed.
  httplib::Client client("127.0.0.1", first.port());
  httplib::Result response = client.Get("/metrics");
  ASSERT_TRUE(response);
  EXPECT_EQ(response->status, 200);
}

TEST(MetricsHttp, BadAddressesAndDoubleStart) {
  Registry registry;
  for (const char* address :
       {"127.0.0.1", "127.0.0.1:", "127.0.0.1:x", "127.0.0.1:70000", "::1:9100"}) {
    HttpExporter exporter(&registry, address);
    const absl::Status status = exporter.Start();
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << address << ": " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(address));
  }
  HttpExporter unresolvable(&registry, "no-such-host.invalid:0");
  EXPECT_EQ(unresolvable.Start().code(), absl::StatusCode::kUnavailable);

  HttpExporter exporter(&registry, "127.0.0.1:0");
  ASSERT_TRUE(exporter.Start().ok());
  EXPECT_EQ(exporter.Start().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(MetricsHttp, Ipv6Loopback) {
  Registry registry;
  registry.gauge("v6", "V6.").Set(1);
  HttpExporter exporter(&registry, "[::1]:0");
  if (absl::Status s = exporter.Start(); !s.ok()) GTEST_SKIP() << "no IPv6 loopback: " << s;
  EXPECT_EQ(exporter.address(), "[::1]:" + std::to_string(exporter.port()));
  httplib::Client client("::1", exporter.port());
  httplib::Result response = client.Get("/metrics");
  ASSERT_TRUE(response) << httplib::to_string(response.error());
  EXPECT_THAT(response->body, HasSubstr("v6 1\n"));
}

}  // namespace
}  // namespace cachesvc::metrics
