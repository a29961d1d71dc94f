#include "tiers/tier.h"

#include "fmt/format.h"

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

}  // namespace cachesvc::tiers
