// LRU residency (lru-hbm, lru-tiered) and the TTL pin (ttl-pin), on the LRU family's parts
// (cachesvc/lru_policy.h; see LruPolicy::Options and docs/policy.md), and the one registry of
// policies by name. The agent-aware policy is in agent_aware_policy.cc.
#include "cachesvc/lru_policy.h"
#include "fmt/format.h"

namespace cachesvc {

namespace {

using policy_internal::LruPolicy;

class TtlPinPolicy final : public LruPolicy {
 public:
  TtlPinPolicy(std::int64_t ttl_us, tiers::TierKind fastest)
      : LruPolicy({.cascade = true, .fastest = fastest}), ttl_us_(ttl_us) {}
  std::string_view Name() const override { return "ttl-pin"; }
  void ToolCallStarted(std::uint64_t, std::span<const BlockKey> chain, std::int64_t start_us,
                       std::int64_t) override {
    Pin(chain, start_us, start_us + ttl_us_, start_us + ttl_us_);
  }

 private:
  const std::int64_t ttl_us_;
};

}  // namespace

using policy_internal::LruPolicy;

std::unique_ptr<ResidencyPolicy> MakeTtlPinPolicy(std::int64_t ttl_us, tiers::TierKind fastest) {
  return std::make_unique<TtlPinPolicy>(ttl_us, fastest);
}

std::unique_ptr<ResidencyPolicy> MakeLruPolicy(bool cascade) {
  return std::make_unique<LruPolicy>(LruPolicy::Options{.cascade = cascade});
}

absl::Status CheckPolicyName(std::string_view name) {
  if (name == "cachesvc" || name == "lru-tiered" || name == "ttl-pin") return absl::OkStatus();
  return absl::InvalidArgumentError(
      fmt::format("policy '{}': not one of cachesvc, lru-tiered, ttl-pin", name));
}

absl::StatusOr<std::unique_ptr<ResidencyPolicy>> MakeResidencyPolicy(std::string_view name,
                                                                     const PolicyParams& params) {
  if (name == "lru-hbm") return MakeLruPolicy(/*cascade=*/false);
  if (name == "lru-tiered") return MakeLruPolicy(/*cascade=*/true);
  if (name == "ttl-pin") return MakeTtlPinPolicy(params.pin_ttl_us, params.fastest);
  if (name == "cachesvc") return MakeAgentAwarePolicy(params.prefetch_lead_us, params.fastest);
  return absl::InvalidArgumentError(
      fmt::format("policy '{}': not one of lru-hbm, lru-tiered, ttl-pin, cachesvc", name));
}

}  // namespace cachesvc
