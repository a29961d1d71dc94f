// cachesvc/cost_model.h: what a cache hit saves, in time: loading a block's KV from a tier versus
// recomputing its tokens' prefill. Used to model time to first token (TTFT) in the replay and,
// next, by the policy to never load what is cheaper to recompute.
//
// Defaults describe Llama-3-8B in fp16 on one H100 with PCIe Gen5 and one NVMe Gen4 drive:
// KV per token = 2 (K, V) x 32 layers x 8 KV heads x 128 dims x 2 bytes = 128 KiB; prefill about
// 25k tokens/s (40 us per token); host -> GPU 25 GB/s effective; NVMe reads 6 GB/s. HBM hits cost
// nothing (the KV is where attention reads it). Loads and prefill are modelled as serial, a
// pessimistic bound for engines that overlap them layer by layer. Plain value type.
#pragma once

#include <array>
#include <cstdint>

#include "cachesvc/block_index.h"

namespace cachesvc {

struct CostModel {
  double kv_bytes_per_token = 131072;
  double prefill_us_per_token = 40;
  std::array<double, kTierKinds> load_gbps = {0, 25, 6};  // by tiers::TierKind; 0 = free
  double compression = 1;  // stored bytes / raw bytes in host and NVMe tiers (TQ3: 0.195)

  [[nodiscard]] double LoadUs(tiers::TierKind tier, double tokens) const {
    const double gbps = load_gbps[static_cast<unsigned>(tier)];
    if (gbps <= 0) return 0;
    const double bytes =
        tokens * kv_bytes_per_token * (tier == tiers::TierKind::kHbm ? 1 : compression);
    return bytes / (gbps * 1e3);  // GB/s = 1e3 bytes per us
  }
  [[nodiscard]] double RecomputeUs(double tokens) const { return tokens * prefill_us_per_token; }
};

}  // namespace cachesvc
