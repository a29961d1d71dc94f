#include "client/cachectl/metrics_text.h"

#include <cmath>
#include <cstdlib>

#include "fmt/format.h"
#include "httplib.h"

namespace cachesvc::cachectl {
namespace {

bool IsNameChar(char c, bool first) {
  const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
  return alpha || (!first && c >= '0' && c <= '9');
}

// Prometheus values: a float, or +Inf, -Inf, NaN.
bool ParseValue(std::string_view text, double* value) {
  if (text == "+Inf" || text == "Inf") {
    *value = HUGE_VAL;
    return true;
  }
  if (text == "-Inf") {
    *value = -HUGE_VAL;
    return true;
  }
  if (text == "NaN") {
    *value = std::nan("");
    return true;
  }
  const std::string s(text);
  char* end = nullptr;
  *value = std::strtod(s.c_str(), &end);
  return !s.empty() && end == s.c_str() + s.size();
}

}  // namespace

absl::StatusOr<std::vector<MetricSample>> ParseMetricsText(std::string_view text) {
  std::vector<MetricSample> samples;
  std::size_t line_no = 0;
  while (!text.empty()) {
    ++line_no;
    const std::size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    while (!line.empty() && line.front() == ' ') line.remove_prefix(1);
    if (line.empty() || line.front() == '#') continue;
    auto bad = [&](std::string_view why) {
      return absl::InvalidArgumentError(fmt::format("/metrics line {}: {}: '{}'", line_no, why,
                                                    std::string(line.substr(0, 120))));
    };
    MetricSample sample;
    std::size_t i = 0;
    while (i < line.size() && IsNameChar(line[i], i == 0)) ++i;
    if (i == 0) return bad("no metric name");
    sample.name = std::string(line.substr(0, i));
    if (i < line.size() && line[i] == '{') {
      ++i;
      while (true) {
        while (i < line.size() && (line[i] == ' ' || line[i] == ',')) ++i;
        if (i < line.size() && line[i] == '}') {
          ++i;
          break;
        }
        const std::size_t name_start = i;
        while (i < line.size() && IsNameChar(line[i], i == name_start)) ++i;
        if (i == name_start || i + 1 >= line.size() || line[i] != '=' || line[i + 1] != '"') {
          return bad("malformed label");
        }
        const std::string label(line.substr(name_start, i - name_start));
        i += 2;
        std::string value;
        while (i < line.size() && line[i] != '"') {
          if (line[i] == '\\' && i + 1 < line.size()) {
            ++i;
            value += line[i] == 'n' ? '\n' : line[i];
          } else {
            value += line[i];
          }
          ++i;
        }
        if (i >= line.size()) return bad("unterminated label value");
        ++i;  // the closing quote
        sample.labels[label] = std::move(value);
      }
    }
    while (i < line.size() && line[i] == ' ') ++i;
    std::string_view rest = line.substr(i);
    // A timestamp may follow the value.
    const std::size_t space = rest.find(' ');
    if (!ParseValue(rest.substr(0, space), &sample.value)) return bad("no value");
    samples.push_back(std::move(sample));
  }
  return samples;
}

absl::StatusOr<std::string> FetchMetrics(const std::string& address,
                                         std::chrono::milliseconds timeout) {
  const std::string url = address.find("://") == std::string::npos ? "http://" + address : address;
  httplib::Client http(url);
  http.set_connection_timeout(timeout);
  http.set_read_timeout(timeout);
  auto response = http.Get("/metrics");
  if (!response) {
    return absl::UnavailableError(
        fmt::format("GET {}/metrics: {}", url, httplib::to_string(response.error())));
  }
  if (response->status != 200) {
    return absl::InternalError(fmt::format("GET {}/metrics: HTTP {}", url, response->status));
  }
  return response->body;
}

double SumMetric(const std::vector<MetricSample>& samples, std::string_view name,
                 const std::map<std::string, std::string>& match) {
  double sum = 0;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    bool all = true;
    for (const auto& [k, v] : match) {
      auto it = s.labels.find(k);
      if (it == s.labels.end() || it->second != v) {
        all = false;
        break;
      }
    }
    if (all) sum += s.value;
  }
  return sum;
}

std::map<std::string, double> SumMetricBy(const std::vector<MetricSample>& samples,
                                          std::string_view name, const std::string& by) {
  std::map<std::string, double> out;
  for (const auto& s : samples) {
    if (s.name != name) continue;
    auto it = s.labels.find(by);
    out[it == s.labels.end() ? std::string() : it->second] += s.value;
  }
  return out;
}

}  // namespace cachesvc::cachectl
