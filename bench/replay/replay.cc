// Trace replay: runs the service core's CacheEngine (cachesvc/cache_engine.h) with a residency
// policy over a request trace in virtual time and prints one JSON object per policy.
//
//   replay --trace FILE --policy lru-hbm,lru-tiered --hbm-blocks N [--host-blocks N]
//          [--nvme-blocks N] [--limit REQUESTS]
//
// FILE is a Mooncake jsonl trace (timestamp in ms, input_length, hash_ids: one id per 512-token
// block, equal ids = equal prefix blocks). Each request hits on the longest cached prefix of its
// blocks; then all its blocks are cached. Reported per policy: block_hit_rate (prefix-hit blocks /
// blocks), token_hit_rate (tokens in prefix-hit blocks / input tokens), fast_hit_rate (hits served
// from the fastest tier / blocks), modelled TTFT mean and p99 (cachesvc/cost_model.h: loading each
// hit block from its tier plus prefill of the rest; the model's parameters are printed), prefill
// GPU-seconds saved, and refs_per_s (block references replayed per second).
// Malformed lines are reported with their line number and skipped (--strict stops instead).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "cachesvc/cache_engine.h"
#include "cachesvc/cost_model.h"
#include "nlohmann/json.hpp"

namespace {

using cachesvc::BlockKey;

struct Request {
  std::int64_t t_us = 0;
  std::uint32_t input_tokens = 0;
  std::vector<BlockKey> blocks;
  // Tokens in block i: 512, the last block the rest of input_tokens.
  [[nodiscard]] double BlockTokens(std::size_t i) const {
    if (i + 1 < blocks.size()) return 512;
    const double rest = static_cast<double>(input_tokens) - 512.0 * static_cast<double>(i);
    return rest > 0 ? std::min(rest, 512.0) : 1;
  }
};

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

BlockKey KeyForId(std::uint64_t id) {
  BlockKey k;
  for (int i = 0; i < 8; ++i) k.bytes[i] = static_cast<std::uint8_t>(id >> (8 * i));
  return k;
}

bool LoadMooncake(const std::string& path, bool strict, std::size_t limit,
                  std::vector<Request>* out) {
  std::ifstream in(path);
  if (!in) {
    std::cerr << "replay: cannot read " << path << "\n";
    return false;
  }
  std::size_t line_no = 0;
  for (std::string line; std::getline(in, line) && out->size() < limit;) {
    ++line_no;
    if (line.empty()) continue;
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    std::string why;
    if (j.is_discarded()) {
      why = "not JSON";
    } else if (!j.contains("hash_ids") || !j["hash_ids"].is_array()) {
      why = "no hash_ids array";
    } else if (!j.contains("input_length") || !j["input_length"].is_number_unsigned()) {
      why = "no input_length";
    } else if (!j.contains("timestamp") || !j["timestamp"].is_number()) {
      why = "no timestamp";
    }
    if (!why.empty()) {
      std::cerr << "replay: " << path << ":" << line_no << ": " << why
                << (strict ? "" : " (skipped)") << "\n";
      if (strict) return false;
      continue;
    }
    Request r;
    r.t_us = static_cast<std::int64_t>(j["timestamp"].get<double>() * 1000);
    r.input_tokens = j["input_length"].get<std::uint32_t>();
    for (const auto& id : j["hash_ids"]) r.blocks.push_back(KeyForId(id.get<std::uint64_t>()));
    out->push_back(std::move(r));
  }
  return true;
}

std::unique_ptr<cachesvc::ResidencyPolicy> MakePolicy(const std::string& name,
                                                      const std::vector<Request>& requests) {
  if (name == "lru-hbm") return cachesvc::MakeLruPolicy(false);
  if (name == "lru-tiered") return cachesvc::MakeLruPolicy(true);
  if (name == "belady") {
    std::vector<std::vector<BlockKey>> future;
    future.reserve(requests.size());
    for (const Request& r : requests) future.push_back(r.blocks);
    return cachesvc::MakeBeladyPolicy(future);
  }
  return nullptr;
}

int Usage(const std::string& why) {
  std::cerr
      << "replay: " << why
      << "\nusage: replay --trace FILE --policy NAME[,NAME...] --hbm-blocks N [--host-blocks N]"
         " [--nvme-blocks N] [--limit REQUESTS] [--strict]\npolicies: lru-hbm, lru-tiered, belady "
         "(offline bound)\n";
  return 2;
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
  for (const auto& [k, v] : args) {
    if (k != "trace" && k != "policy" && k != "hbm-blocks" && k != "host-blocks" &&
        k != "nvme-blocks" && k != "limit") {
      return Usage("unknown option --" + k);
    }
  }
  if (!args.count("trace") || !args.count("policy") || !args.count("hbm-blocks")) {
    return Usage("--trace, --policy and --hbm-blocks are required");
  }
  cachesvc::TierCapacity capacity;
  try {
    capacity.blocks = {std::stoull(args["hbm-blocks"]),
                       args.count("host-blocks") ? std::stoull(args["host-blocks"]) : 0,
                       args.count("nvme-blocks") ? std::stoull(args["nvme-blocks"]) : 0};
  } catch (const std::exception&) {
    return Usage("block counts must be whole numbers");
  }
  const std::size_t limit = args.count("limit") ? std::stoull(args["limit"]) : SIZE_MAX;
  std::vector<Request> requests;
  if (!LoadMooncake(args["trace"], strict, limit, &requests)) return 1;

  std::stringstream names(args["policy"]);
  for (std::string name; std::getline(names, name, ',');) {
    auto policy = MakePolicy(name, requests);
    if (!policy) return Usage("unknown policy '" + name + "'");
    cachesvc::BlockIndex index(1);
    cachesvc::CacheEngine engine(&index, policy.get(), capacity);
    std::size_t fastest = 0;  // the first tier with capacity: where "fast" hits come from
    while (fastest + 1 < capacity.blocks.size() && capacity.blocks[fastest] == 0) ++fastest;
    const cachesvc::CostModel cost;
    std::uint64_t blocks = 0, hit_blocks = 0, fast_hits = 0, tokens = 0;
    double hit_tokens = 0;
    std::vector<double> ttft_us;
    ttft_us.reserve(requests.size());
    std::vector<std::uint8_t> hit_tiers;
    const auto start = std::chrono::steady_clock::now();
    for (const Request& r : requests) {
      hit_tiers.resize(r.blocks.size());
      const cachesvc::ServeResult s = engine.Serve(r.blocks, r.t_us, hit_tiers);
      blocks += r.blocks.size();
      hit_blocks += s.prefix_hits;
      fast_hits += s.hits_from[fastest];
      tokens += r.input_tokens;
      double ttft = 0, hit = 0;
      for (std::size_t i = 0; i < s.prefix_hits; ++i) {
        const double t = r.BlockTokens(i);
        ttft += cost.LoadUs(static_cast<cachesvc::tiers::TierKind>(hit_tiers[i]), t);
        hit += t;
      }
      hit = std::min(hit, static_cast<double>(r.input_tokens));
      ttft += cost.RecomputeUs(static_cast<double>(r.input_tokens) - hit);
      hit_tokens += hit;
      ttft_us.push_back(ttft);
    }
    const double seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const nlohmann::json out = {
        {"trace", args["trace"].substr(args["trace"].find_last_of('/') + 1)},
        {"policy", name},
        {"hbm_blocks", capacity.blocks[0]},
        {"host_blocks", capacity.blocks[1]},
        {"nvme_blocks", capacity.blocks[2]},
        {"requests", requests.size()},
        {"block_refs", blocks},
        {"block_hit_rate",
         blocks ? static_cast<double>(hit_blocks) / static_cast<double>(blocks) : 0.0},
        {"token_hit_rate", tokens ? hit_tokens / static_cast<double>(tokens) : 0.0},
        {"fast_hit_rate",
         blocks ? static_cast<double>(fast_hits) / static_cast<double>(blocks) : 0.0},
        {"ttft_mean_ms", ttft_us.empty() ? 0.0
                                         : std::accumulate(ttft_us.begin(), ttft_us.end(), 0.0) /
                                               static_cast<double>(ttft_us.size()) / 1e3},
        {"ttft_p99_ms", Percentile(ttft_us, 0.99) / 1e3},
        {"prefill_gpu_s_saved", cost.RecomputeUs(hit_tokens) / 1e6},
        {"cost_model",
         {{"kv_bytes_per_token", cost.kv_bytes_per_token},
          {"prefill_us_per_token", cost.prefill_us_per_token},
          {"host_load_gbps", cost.load_gbps[1]},
          {"nvme_load_gbps", cost.load_gbps[2]}}},
        {"ttft_mean_ms", ttft_us.empty() ? 0.0
                                         : std::accumulate(ttft_us.begin(), ttft_us.end(), 0.0) /
                                               static_cast<double>(ttft_us.size()) / 1e3},
        {"ttft_p99_ms", Percentile(ttft_us, 0.99) / 1e3},
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
