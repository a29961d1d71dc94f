// client/cachectl/metrics_text.h: reading the daemon's Prometheus /metrics for `cachectl top`:
// one HTTP GET, and a parser for the text exposition format (version 0.0.4) that keeps each
// sample's name, labels and value. Comments (# HELP, # TYPE) and timestamps are skipped. Pure
// functions apart from FetchMetrics; thread-compatible.
#pragma once

#include <chrono>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cachesvc::cachectl {

struct MetricSample {
  std::string name;                           // e.g. cachesvc_rpc_requests_total
  std::map<std::string, std::string> labels;  // unescaped values
  double value = 0;
};

// The samples of a text exposition; INVALID_ARGUMENT naming the line for one that is not a sample.
[[nodiscard]] absl::StatusOr<std::vector<MetricSample>> ParseMetricsText(std::string_view text);

// The body of GET http://ADDRESS/metrics (ADDRESS is host:port, or a URL with http://);
// UNAVAILABLE when nothing answers in `timeout`, INTERNAL for a status other than 200.
[[nodiscard]] absl::StatusOr<std::string> FetchMetrics(const std::string& address,
                                                       std::chrono::milliseconds timeout);

// The sum of the samples named `name` whose labels include every pair of `match`.
double SumMetric(const std::vector<MetricSample>& samples, std::string_view name,
                 const std::map<std::string, std::string>& match = {});

// The sums of `name` grouped by the value of label `by`.
std::map<std::string, double> SumMetricBy(const std::vector<MetricSample>& samples,
                                          std::string_view name, const std::string& by);

}  // namespace cachesvc::cachectl
