// cachesvc/rpc_metrics.h: how the daemon counts a request it answered, whichever way it came
// (gRPC handlers, the local data plane): cachesvc_rpc_requests_total{method, code} and
// cachesvc_rpc_latency_seconds{method}.
#pragma once

#include <chrono>
#include <string>

#include "absl/status/status.h"
#include "cachesvc/metrics.h"

namespace cachesvc {

// The two series one (method, code) pair is counted in; their references live as long as the
// registry, so callers on a hot path may look them up once.
struct RpcSeries {
  metrics::Counter* requests = nullptr;
  metrics::Histogram* latency = nullptr;
};
inline RpcSeries RpcSeriesFor(metrics::Registry& metrics, const char* method,
                              absl::StatusCode code) {
  return RpcSeries{
      &metrics.counter("cachesvc_rpc_requests_total", "RPCs handled, by method and status code",
                       {{"method", method}, {"code", absl::StatusCodeToString(code)}}),
      &metrics.histogram("cachesvc_rpc_latency_seconds", "RPC handling time, by method",
                         {{"method", method}}, metrics::LatencyBucketsSeconds())};
}

inline void RecordRpc(const RpcSeries& series, std::chrono::steady_clock::time_point start) {
  series.requests->Inc();
  series.latency->Observe(
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
}

// Counts one request of `method` that ended with `code`, and its latency since `start`.
// `metrics` may be null.
inline void RecordRpc(metrics::Registry* metrics, const char* method,
                      std::chrono::steady_clock::time_point start, absl::StatusCode code) {
  if (metrics == nullptr) return;
  RecordRpc(RpcSeriesFor(*metrics, method, code), start);
}

}  // namespace cachesvc
