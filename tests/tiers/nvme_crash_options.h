// tests/tiers/nvme_crash_options.h: the NVMe tier geometry the crash test and its child share.
// Both sides must open the tier identically: a reopen with another geometry starts cold, which
// would hide exactly the recovery the test checks.
#pragma once

#include <filesystem>

#include "tiers/nvme_tier.h"

namespace cachesvc::tiers::testing {

inline NvmeTierOptions CrashOptions(const std::filesystem::path& dir) {
  NvmeTierOptions o;
  o.name = "nvme-crash";
  o.data_path = dir / "slots.dat";
  o.index_path = dir / "index";
  o.capacity_bytes = 32 << 20;
  o.min_slot_bytes = 16 << 10;
  o.max_slot_bytes = 1 << 20;
  o.queue_depth = 8;
  return o;
}

}  // namespace cachesvc::tiers::testing
