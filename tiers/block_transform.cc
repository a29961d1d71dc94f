#include "tiers/block_transform.h"

#include <cstring>

#include "fmt/format.h"

namespace cachesvc::tiers {

absl::StatusOr<std::uint64_t> RawTransform::Encode(std::span<const std::byte> raw,
                                                   std::span<std::byte> out) const {
  if (out.size() < raw.size()) {
    return absl::InvalidArgumentError(
        fmt::format("raw encode: output of {} bytes is shorter than the {}-byte input", out.size(),
                    raw.size()));
  }
  std::memcpy(out.data(), raw.data(), raw.size());
  return raw.size();
}

absl::Status RawTransform::Decode(std::span<const std::byte> encoded,
                                  std::span<std::byte> raw_out) const {
  if (encoded.size() != raw_out.size()) {
    return absl::InvalidArgumentError(
        fmt::format("raw decode: {} encoded bytes cannot decode to {} raw bytes", encoded.size(),
                    raw_out.size()));
  }
  std::memcpy(raw_out.data(), encoded.data(), encoded.size());
  return absl::OkStatus();
}

}  // namespace cachesvc::tiers
