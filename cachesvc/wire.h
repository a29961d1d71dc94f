// cachesvc/wire.h: conversions between cachesvc.v1 messages and the core's types that more than
// one service needs (tiers, codecs, keys). Pure functions.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.pb.h"
#include "fmt/format.h"
#include "kernels/codec.h"
#include "proto/block_key.h"
#include "tiers/tier.h"

namespace cachesvc {

// Most keys one request may carry.
inline constexpr int kMaxKeysPerRequest = 65536;

inline v1::TierKind TierToProto(tiers::TierKind t) {
  switch (t) {
    case tiers::TierKind::kHbm:
      return v1::TIER_HBM;
    case tiers::TierKind::kHost:
      return v1::TIER_HOST;
    case tiers::TierKind::kNvme:
      return v1::TIER_NVME;
  }
  return v1::TIER_UNSPECIFIED;
}

// TIER_UNSPECIFIED is nullopt ("every tier"); an unknown value is INVALID_ARGUMENT.
[[nodiscard]] inline absl::StatusOr<std::optional<tiers::TierKind>> TierFromProto(v1::TierKind t) {
  switch (t) {
    case v1::TIER_UNSPECIFIED:
      return std::optional<tiers::TierKind>();
    case v1::TIER_HBM:
      return std::optional(tiers::TierKind::kHbm);
    case v1::TIER_HOST:
      return std::optional(tiers::TierKind::kHost);
    case v1::TIER_NVME:
      return std::optional(tiers::TierKind::kNvme);
    default:
      return absl::InvalidArgumentError(
          fmt::format("tier {} is not HBM, HOST or NVME", static_cast<int>(t)));
  }
}

inline v1::Codec CodecToProto(kernels::CodecId c) {
  return static_cast<v1::Codec>(static_cast<int>(c));
}

[[nodiscard]] inline absl::StatusOr<kernels::CodecId> CodecFromProto(v1::Codec c) {
  switch (c) {
    case v1::CODEC_RAW:
      return kernels::CodecId::kRaw;
    case v1::CODEC_TQ3:
      return kernels::CodecId::kTq3;
    case v1::CODEC_TQ4:
      return kernels::CodecId::kTq4;
    default:
      return absl::InvalidArgumentError(
          fmt::format("codec {} is not RAW, TQ3 or TQ4", static_cast<int>(c)));
  }
}

// One 16-byte key; INVALID_ARGUMENT naming `field` otherwise.
[[nodiscard]] inline absl::StatusOr<BlockKey> KeyFromProto(const v1::BlockKey& key,
                                                           const char* field) {
  auto k = BlockKey::FromBytes(key.key());
  if (!k.ok()) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {}", field, std::string(k.status().message())));
  }
  return *k;
}

// Every key of a request, at most kMaxKeysPerRequest; INVALID_ARGUMENT naming the bad one.
[[nodiscard]] inline absl::StatusOr<std::vector<BlockKey>> KeysFromProto(
    const google::protobuf::RepeatedPtrField<v1::BlockKey>& keys, const char* field) {
  if (keys.size() > kMaxKeysPerRequest) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} keys, at most {}", field, keys.size(), kMaxKeysPerRequest));
  }
  std::vector<BlockKey> out;
  out.reserve(static_cast<std::size_t>(keys.size()));
  for (int i = 0; i < keys.size(); ++i) {
    auto k = BlockKey::FromBytes(keys[i].key());
    if (!k.ok()) {
      return absl::InvalidArgumentError(
          fmt::format("{}[{}]: {}", field, i, std::string(k.status().message())));
    }
    out.push_back(*k);
  }
  return out;
}

}  // namespace cachesvc
