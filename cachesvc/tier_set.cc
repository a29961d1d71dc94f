#include "cachesvc/tier_set.h"

#include <system_error>

#include "cachesvc/residency_policy.h"
#include "fmt/format.h"

namespace cachesvc {
namespace {

[[nodiscard]] absl::Status Prefixed(std::string_view section, const absl::Status& s) {
  return absl::Status(s.code(), fmt::format("{}: {}", section, std::string(s.message())));
}

tiers::HugePages ParseHugePages(const std::string& text) {
  if (text == "none") return tiers::HugePages::kNone;
  if (text == "hugetlb") return tiers::HugePages::kHugetlb;
  return tiers::HugePages::kTransparent;  // the config only admits these three
}

}  // namespace

absl::StatusOr<std::unique_ptr<TierSet>> TierSet::Open(const Config& config,
                                                       const std::filesystem::path& data_dir,
                                                       Env* env) {
  std::unique_ptr<TierSet> set(new TierSet());
  if (config.host_capacity_bytes > 0) {
    tiers::HostTierOptions o;
    o.name = "host";
    o.capacity_bytes = static_cast<std::uint64_t>(config.host_capacity_bytes);
    o.min_slot_bytes = static_cast<std::uint64_t>(config.slot_min_bytes);
    o.max_slot_bytes = static_cast<std::uint64_t>(config.slot_max_bytes);
    o.numa_node = static_cast<int>(config.host_numa_node);
    o.huge_pages = ParseHugePages(config.host_huge_pages);
    o.prefault = config.host_prefault;
    o.shared = !config.local_socket.empty();  // the local data plane shares the arena
    // The block store pins a leased slot for twice lease_timeout_ms; the tier's default cap
    // (10 min) made every load a miss past 5 min.
    o.slots.max_lease_ttl = 2 * kMaxLeaseTimeout;
    auto host = tiers::HostTier::Create(o, env);
    if (!host.ok()) return Prefixed("tiers.host", host.status());
    set->host_ = std::move(*host);
    set->host_numa_node_ = o.numa_node;
    set->order_.push_back(set->host_.get());
  }
  if (config.nvme_capacity_bytes > 0) {
    const std::filesystem::path dir = data_dir / "nvme";
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    if (ec) {
      return absl::PermissionDeniedError(
          fmt::format("tiers.nvme: cannot create '{}': {}", dir.string(), ec.message()));
    }
    tiers::NvmeTierOptions o;
    o.name = "nvme";
    o.data_path =
        config.nvme_path.empty() ? dir / "blocks.dat" : std::filesystem::path(config.nvme_path);
    o.index_path = dir / "index";
    o.capacity_bytes = static_cast<std::uint64_t>(config.nvme_capacity_bytes);
    o.min_slot_bytes = static_cast<std::uint64_t>(config.slot_min_bytes);
    o.max_slot_bytes = static_cast<std::uint64_t>(config.slot_max_bytes);
    o.queue_depth = static_cast<unsigned>(config.nvme_queue_depth);
    o.direct_io = config.nvme_direct_io;
    auto nvme = tiers::NvmeTier::Open(o, env);
    if (!nvme.ok()) return Prefixed("tiers.nvme", nvme.status());
    set->nvme_ = std::move(*nvme);
    set->order_.push_back(set->nvme_.get());
  }
  return set;
}

std::vector<tiers::TierStats> TierSet::Stats() const {
  std::vector<tiers::TierStats> out;
  out.reserve(order_.size());
  for (const tiers::Tier* t : order_) out.push_back(t->Stats());
  return out;
}

int TierSet::NumaNode(const tiers::Tier* tier) const {
  return tier == host_.get() ? host_numa_node_ : -1;
}

const tiers::NvmeRecovery* TierSet::nvme_recovery() const {
  return nvme_ ? &nvme_->recovery() : nullptr;
}

}  // namespace cachesvc
