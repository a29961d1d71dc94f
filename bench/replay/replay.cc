// Trace replay: runs the service core's CacheEngine (cachesvc/cache_engine.h) with each residency
// policy over a request trace in virtual time and prints one JSON object per policy.
//
//   replay (--trace FILE | --workload agent [--seed S] [--sessions N]) --policy NAME[,NAME...]
//          --hbm-blocks N [--host-blocks N] [--nvme-blocks N] [--users N] [--stagger-s S]
//          [--limit REQUESTS] [--strict] [--write-workload FILE] [--tool-estimate exact|learned]
//
// --tool-estimate: what the policy is told to expect of each tool call: `exact` (the default: the
// agent framework gives the duration, and it is right) or `learned` (no duration given; the
// median of the tool name's durations so far, 4 s before any has ended: what the service's
// session store does, cachesvc/tool_history.h).
//
// FILE: a Mooncake-format jsonl (also the generator's output), a RAGPulse 0_trace.jsonl (name
// contains "ragpulse"), or the kv-cache-tester v8 tarball (.tar.xz, extracted beside it) or its
// folder, of which `--users` conversations run at once with starts `--stagger-s` apart
// (bench/replay/loaders.h; docs/replay-workloads.md). Each request hits on the longest cached
// prefix of its blocks; then its other blocks are computed and saved (CacheEngine's load, reserve
// and commit steps, as the daemon runs them), told in time order by bench/replay/driver.h (a
// tool call starts when its response ends). Per policy: block_hit_rate, token_hit_rate,
// fast_hit_rate (hits served from the fastest tier / blocks), modelled TTFT mean and p99 and
// resume TTFT p99 (requests that follow a tool call; cachesvc/cost_model.h, parameters printed),
// prefill GPU-seconds saved, and refs_per_s (block references replayed per second).
#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "bench/replay/agent_workload.h"
#include "bench/replay/driver.h"
#include "bench/replay/loaders.h"
#include "cachesvc/cache_engine.h"
#include "cachesvc/cost_model.h"
#include "nlohmann/json.hpp"

namespace {

using cachesvc::replay::Trace;
using cachesvc::replay::TraceRequest;

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

double Mean(const std::vector<double>& v) {
  return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / static_cast<double>(v.size());
}

std::unique_ptr<cachesvc::ResidencyPolicy> MakePolicy(const std::string& name, const Trace& trace) {
  if (name == "belady") {
    std::vector<std::vector<cachesvc::BlockKey>> future;
    future.reserve(trace.requests.size());
    for (const TraceRequest& r : trace.requests) future.push_back(r.blocks);
    return cachesvc::MakeBeladyPolicy(future);
  }
  // The daemon's registry: ttl-pin pins for 10 s (Continuum-style), cachesvc prefetches 1 s ahead.
  auto policy = cachesvc::MakeResidencyPolicy(name, cachesvc::PolicyParams{});
  return policy.ok() ? std::move(*policy) : nullptr;
}

int Usage(const std::string& why) {
  std::cerr
      << "replay: " << why
      << "\nusage: replay (--trace FILE | --workload agent [--seed S] [--sessions N])"
         " --policy NAME[,NAME...] --hbm-blocks N [--host-blocks N] [--nvme-blocks N]"
         " [--users N] [--stagger-s S] [--limit REQUESTS] [--strict] [--write-workload FILE]\n"
         "policies: lru-hbm, lru-tiered, ttl-pin, cachesvc, belady (offline bound)\n";
  return 2;
}

absl::StatusOr<Trace> Load(std::map<std::string, std::string>& args, bool strict) {
  cachesvc::replay::LoadOptions load;
  load.strict = strict;
  load.limit = args.count("limit") ? std::stoull(args["limit"]) : 0;
  if (args.count("workload")) {
    if (args["workload"] != "agent") return absl::InvalidArgumentError("--workload takes 'agent'");
    cachesvc::replay::AgentWorkloadParams p;
    if (args.count("seed")) p.seed = std::stoull(args["seed"]);
    if (args.count("sessions"))
      p.sessions = static_cast<std::uint32_t>(std::stoul(args["sessions"]));
    auto trace = cachesvc::replay::GenerateAgentWorkload(p);
    if (trace.ok() && args.count("write-workload")) {
      if (absl::Status s = cachesvc::replay::WriteMooncakeJsonl(*trace, args["write-workload"]);
          !s.ok()) {
        return s;
      }
    }
    return trace;
  }
  const std::string path = args["trace"];
  if (path.ends_with(".tar.xz") || std::filesystem::is_directory(path)) {
    std::string folder = path;
    if (path.ends_with(".tar.xz")) {
      // Beside the tarball may be read-only (CI's shared/ copy): extract under the temp folder.
      const std::string dest =
          (std::filesystem::temp_directory_path() /
           ("cachesvc-replay-" + std::filesystem::path(path).filename().string() + ".d"))
              .string();
      auto extracted = cachesvc::replay::ExtractKvCacheTesterTarball(path, dest);
      if (!extracted.ok()) return extracted.status();
      folder = *extracted;
    }
    cachesvc::replay::KvCacheTesterOptions o;
    o.users = args.count("users") ? std::stoull(args["users"]) : 64;
    if (args.count("stagger-s")) o.stagger_s = std::stod(args["stagger-s"]);
    o.load = load;
    return cachesvc::replay::LoadKvCacheTester(folder, o);
  }
  if (path.find("ragpulse") != std::string::npos) return cachesvc::replay::LoadRagPulse(path, load);
  return cachesvc::replay::LoadMooncake(path, load);
}

}  // namespace

int main(int argc, char** argv) {
  std::map<std::string, std::string> args;
  bool strict = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--strict") {
      strict = true;
    } else if (a.starts_with("--") && i + 1 < argc) {
      args[a.substr(2)] = argv[++i];
    } else {
      return Usage("unexpected argument '" + a + "'");
    }
  }
  static const char* kKnown[] = {"trace",        "workload",   "seed",        "sessions",
                                 "policy",       "hbm-blocks", "host-blocks", "nvme-blocks",
                                 "users",        "stagger-s",  "limit",       "write-workload",
                                 "tool-estimate"};
  for (const auto& [k, v] : args) {
    if (std::find(std::begin(kKnown), std::end(kKnown), k) == std::end(kKnown)) {
      return Usage("unknown option --" + k);
    }
  }
  if (args.count("trace") == args.count("workload"))
    return Usage("give one of --trace and --workload");
  if (!args.count("policy") || !args.count("hbm-blocks"))
    return Usage("--policy and --hbm-blocks are required");
  const std::string estimate = args.count("tool-estimate") ? args["tool-estimate"] : "exact";
  if (estimate != "exact" && estimate != "learned")
    return Usage("--tool-estimate is exact or learned");
  cachesvc::TierCapacity capacity;
  absl::StatusOr<Trace> trace = absl::UnknownError("not loaded");
  try {
    capacity.blocks = {std::stoull(args["hbm-blocks"]),
                       args.count("host-blocks") ? std::stoull(args["host-blocks"]) : 0,
                       args.count("nvme-blocks") ? std::stoull(args["nvme-blocks"]) : 0};
    trace = Load(args, strict);
  } catch (const std::exception&) {
    return Usage("numeric options take numbers");
  }
  if (!trace.ok()) {
    std::cerr << "replay: " << trace.status().message() << "\n";
    return 1;
  }
  for (const std::string& w : trace->warnings) std::cerr << "replay: " << w << "\n";

  std::stringstream names(args["policy"]);
  for (std::string name; std::getline(names, name, ',');) {
    auto policy = MakePolicy(name, *trace);
    if (!policy) return Usage("unknown policy '" + name + "'");
    cachesvc::BlockIndex index(1);
    // Every block the tiers can hold, plus one request's worth: the index never rehashes while
    // the replay is timed.
    index.Reserve(capacity.blocks[0] + capacity.blocks[1] + capacity.blocks[2] + 65536);
    cachesvc::CacheEngine engine(&index, policy.get(), capacity);
    std::size_t fastest = 0;  // the first tier with capacity: where "fast" hits come from
    while (fastest + 1 < capacity.blocks.size() && capacity.blocks[fastest] == 0) ++fastest;
    const cachesvc::CostModel cost;
    std::uint64_t blocks = 0, hit_blocks = 0, fast_hits = 0;
    double tokens = 0, hit_tokens = 0;
    std::vector<double> ttft_us, resume_ttft_us;
    ttft_us.reserve(trace->requests.size());
    std::vector<std::uint8_t> hit_tiers;
    cachesvc::replay::ReplayDriver driver(*trace, estimate == "learned"
                                                      ? cachesvc::replay::ToolEstimate::kLearned
                                                      : cachesvc::replay::ToolEstimate::kExact);
    cachesvc::replay::EngineTarget target(&engine);
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t ri = 0; ri < trace->requests.size(); ++ri) {
      const TraceRequest& r = trace->requests[ri];
      hit_tiers.resize(r.blocks.size());
      const cachesvc::ServeResult s = driver.Step(ri, target, hit_tiers);
      blocks += r.blocks.size();
      hit_blocks += s.prefix_hits;
      fast_hits += s.hits_from[fastest];
      double ttft = 0, hit = 0;
      for (std::size_t i = 0; i < s.prefix_hits; ++i) {
        const double t = i < r.block_tokens.size() ? r.block_tokens[i] : 0;
        ttft += cost.LoadUs(static_cast<cachesvc::tiers::TierKind>(hit_tiers[i]), t);
        hit += t;
      }
      const double input = std::max<double>(r.input_tokens, hit);
      ttft += cost.RecomputeUs(input - hit);
      tokens += input;
      hit_tokens += hit;
      ttft_us.push_back(ttft);
      if (r.resume) resume_ttft_us.push_back(ttft);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const nlohmann::json out = {
        {"trace", std::filesystem::path(trace->name).filename().string()},
        {"policy", name},
        {"tool_estimate", estimate},
        {"hbm_blocks", capacity.blocks[0]},
        {"host_blocks", capacity.blocks[1]},
        {"nvme_blocks", capacity.blocks[2]},
        {"requests", trace->requests.size()},
        {"resumes", resume_ttft_us.size()},
        {"block_refs", blocks},
        {"block_hit_rate",
         blocks ? static_cast<double>(hit_blocks) / static_cast<double>(blocks) : 0.0},
        {"token_hit_rate", tokens > 0 ? hit_tokens / tokens : 0.0},
        {"fast_hit_rate",
         blocks ? static_cast<double>(fast_hits) / static_cast<double>(blocks) : 0.0},
        {"ttft_mean_ms", Mean(ttft_us) / 1e3},
        {"ttft_p99_ms", Percentile(ttft_us, 0.99) / 1e3},
        {"resume_ttft_p99_ms", Percentile(resume_ttft_us, 0.99) / 1e3},
        {"prefill_gpu_s_saved", cost.RecomputeUs(hit_tokens) / 1e6},
        {"cost_model",
         {{"kv_bytes_per_token", cost.kv_bytes_per_token},
          {"prefill_us_per_token", cost.prefill_us_per_token},
          {"host_load_gbps", cost.load_gbps[1]},
          {"nvme_load_gbps", cost.load_gbps[2]}}},
        {"refs_per_s", seconds > 0 ? static_cast<double>(blocks) / seconds : 0.0}};
    std::cout << out.dump() << "\n";
  }
  return 0;
}
