#include "tiers/tier.h"

#include "fmt/format.h"
#include "spdlog/spdlog.h"

namespace cachesvc::tiers {

std::string BlockIdHex(const BlockId& id) {
  std::string out;
  out.reserve(32);
  for (std::uint8_t b : id) out += fmt::format("{:02x}", b);
  return out;
}

const char* TierKindName(TierKind kind) {
  switch (kind) {
    case TierKind::kHbm:
      return "hbm";
    case TierKind::kHost:
      return "host";
    case TierKind::kNvme:
      return "nvme";
  }
  return "unknown";
}

bool FreeOrWarn(Tier& tier, SlotId slot, std::string_view context) {
  const absl::Status st = tier.Free(slot);
  if (!st.ok()) {
    spdlog::warn("tier '{}': freeing the slot at offset {} ({}): {}", tier.name(), slot.offset,
                 context, std::string(st.message()));
  }
  return st.ok();
}

bool ReleaseLeaseOrWarn(Tier& tier, LeaseId lease, std::string_view context) {
  const absl::Status st = tier.ReleaseLease(lease);
  if (!st.ok() && !absl::IsNotFound(st)) {
    spdlog::warn("tier '{}': releasing a lease ({}): {}", tier.name(), context,
                 std::string(st.message()));
  }
  return st.ok();
}

}  // namespace cachesvc::tiers
