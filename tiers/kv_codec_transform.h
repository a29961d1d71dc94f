// tiers/kv_codec_transform.h: the KV codecs of kernels/tq_codec.h (RAW, TQ3, TQ4) as a
// BlockTransform, so the mover compresses blocks on the way down and restores them on the way up.
//
// One transform serves one (codec, dtype, head_dim) — what a model layout fixes. A block is a whole
// number of head_dim vectors (the canonical payload); anything else is INVALID_ARGUMENT. Codec
// errors keep their canonical codes (INVALID_ARGUMENT, UNIMPLEMENTED, DATA_LOSS for a corrupt or
// truncated encoding). Stateless and thread-safe, like the codec API.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/statusor.h"
#include "kernels/tq_codec.h"
#include "tiers/block_transform.h"

namespace cachesvc::tiers {

class KvCodecTransform final : public BlockTransform {
 public:
  // INVALID_ARGUMENT for a head_dim the codec does not support.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KvCodecTransform>> Create(
      kernels::CodecId codec, kernels::ValueType type, std::uint32_t head_dim,
      std::uint64_t seed = kernels::kDefaultSignSeed);

  [[nodiscard]] kernels::CodecId codec() const override { return codec_; }
  [[nodiscard]] std::uint64_t MaxEncodedBytes(std::uint64_t raw_bytes) const override;
  [[nodiscard]] absl::StatusOr<std::uint64_t> Encode(std::span<const std::byte> raw,
                                                     std::span<std::byte> out) const override;
  [[nodiscard]] absl::Status Decode(std::span<const std::byte> encoded,
                                    std::span<std::byte> raw_out) const override;

 private:
  KvCodecTransform(kernels::CodecId codec, kernels::ValueType type, std::uint32_t head_dim,
                   std::uint64_t seed)
      : codec_(codec), type_(type), head_dim_(head_dim), seed_(seed) {}
  // Vectors in a raw block of `raw_bytes`, or INVALID_ARGUMENT when it is not whole vectors.
  [[nodiscard]] absl::StatusOr<std::uint64_t> Vectors(std::uint64_t raw_bytes) const;

  const kernels::CodecId codec_;
  const kernels::ValueType type_;
  const std::uint32_t head_dim_;
  const std::uint64_t seed_;
};

}  // namespace cachesvc::tiers
