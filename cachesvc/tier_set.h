// cachesvc/tier_set.h: the tiers a daemon runs with, built from its configuration.
//
// Opens, fastest first, the host/CXL tier and the NVMe tier that the config asks for (a capacity
// of 0 leaves one out), with their files under the daemon's data folder: the NVMe data file at
// <data_dir>/nvme/blocks.dat unless `tiers.nvme.path` names another file or a raw device, and its
// RocksDB index at <data_dir>/nvme/index. The HBM tier joins when the daemon gets a GPU to use
// (a later change). The set owns the tiers; they live as long as it does.
//
// Thread-safe after Open (the tiers are).
#pragma once

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/status/statusor.h"
#include "base/env.h"
#include "cachesvc/config.h"
#include "tiers/host_tier.h"
#include "tiers/nvme_tier.h"
#include "tiers/tier.h"

namespace cachesvc {

class TierSet {
 public:
  // INVALID_ARGUMENT / RESOURCE_EXHAUSTED / PERMISSION_DENIED from the tier that could not be
  // opened, its message prefixed with the config section ("tiers.nvme: ..."). The tiers keep
  // their deadlines on `env`'s clock (it must outlive the set).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<TierSet>> Open(
      const Config& config, const std::filesystem::path& data_dir, Env* env = Env::Default());

  // Fastest first.
  [[nodiscard]] const std::vector<tiers::Tier*>& tiers() const { return order_; }
  [[nodiscard]] std::vector<tiers::TierStats> Stats() const;
  // NUMA node of a tier's memory, -1 when unbound or not a memory tier.
  [[nodiscard]] int NumaNode(const tiers::Tier* tier) const;
  // What the NVMe tier found at start; nullptr without an NVMe tier.
  [[nodiscard]] const tiers::NvmeRecovery* nvme_recovery() const;

  // The host tier (null when the config leaves it out).
  tiers::HostTier* host() const { return host_.get(); }

 private:
  TierSet() = default;

  std::unique_ptr<tiers::HostTier> host_;
  int host_numa_node_ = -1;
  std::unique_ptr<tiers::NvmeTier> nvme_;
  std::vector<tiers::Tier*> order_;
};

}  // namespace cachesvc
