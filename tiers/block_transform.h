// tiers/block_transform.h: how the mover encodes a block on the way down a tier and decodes it on
// the way up, without tiers/ depending on a particular codec.
//
// A BlockTransform is one codec for one model layout: Encode turns a RAW payload into the codec's
// bytes, Decode turns them back into exactly `raw_bytes` RAW bytes. RawTransform is the identity
// (codec RAW). A real codec (kernels/, TQ3/TQ4) plugs in through FunctionTransform: three
// callables, usually closures over the codec API and the layout, so nothing in tiers/ changes
// when codecs land.
//
// Implementations must be thread-safe for concurrent Encode/Decode calls (the mover runs several
// jobs at once) and must never write past the output span they are given.
#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "absl/status/statusor.h"
#include "kernels/codec.h"

namespace cachesvc::tiers {

class BlockTransform {
 public:
  virtual ~BlockTransform() = default;
  [[nodiscard]] virtual kernels::CodecId codec() const = 0;
  // An upper bound of Encode's output for `raw_bytes` of input.
  [[nodiscard]] virtual std::uint64_t MaxEncodedBytes(std::uint64_t raw_bytes) const = 0;
  // Returns the encoded length written to `out` (at most MaxEncodedBytes(raw.size())).
  // INVALID_ARGUMENT when `raw` is not a whole number of the codec's vectors or `out` is short.
  [[nodiscard]] virtual absl::StatusOr<std::uint64_t> Encode(std::span<const std::byte> raw,
                                                             std::span<std::byte> out) const = 0;
  // Decodes into all of `raw_out` (whose size is the block's raw_bytes). DATA_LOSS or
  // INVALID_ARGUMENT when `encoded` is not a valid encoding of that many bytes.
  [[nodiscard]] virtual absl::Status Decode(std::span<const std::byte> encoded,
                                            std::span<std::byte> raw_out) const = 0;
};

// Codec RAW: a copy.
class RawTransform final : public BlockTransform {
 public:
  [[nodiscard]] kernels::CodecId codec() const override { return kernels::CodecId::kRaw; }
  [[nodiscard]] std::uint64_t MaxEncodedBytes(std::uint64_t raw_bytes) const override {
    return raw_bytes;
  }
  [[nodiscard]] absl::StatusOr<std::uint64_t> Encode(std::span<const std::byte> raw,
                                                     std::span<std::byte> out) const override;
  [[nodiscard]] absl::Status Decode(std::span<const std::byte> encoded,
                                    std::span<std::byte> raw_out) const override;
};

// A codec given as callables (see the header comment).
class FunctionTransform final : public BlockTransform {
 public:
  using MaxEncodedFn = std::function<std::uint64_t(std::uint64_t)>;
  using EncodeFn = std::function<absl::StatusOr<std::uint64_t>(std::span<const std::byte>,
                                                               std::span<std::byte>)>;
  using DecodeFn = std::function<absl::Status(std::span<const std::byte>, std::span<std::byte>)>;

  FunctionTransform(kernels::CodecId codec, MaxEncodedFn max_encoded, EncodeFn encode,
                    DecodeFn decode)
      : codec_(codec),
        max_encoded_(std::move(max_encoded)),
        encode_(std::move(encode)),
        decode_(std::move(decode)) {}

  [[nodiscard]] kernels::CodecId codec() const override { return codec_; }
  [[nodiscard]] std::uint64_t MaxEncodedBytes(std::uint64_t raw_bytes) const override {
    return max_encoded_(raw_bytes);
  }
  [[nodiscard]] absl::StatusOr<std::uint64_t> Encode(std::span<const std::byte> raw,
                                                     std::span<std::byte> out) const override {
    return encode_(raw, out);
  }
  [[nodiscard]] absl::Status Decode(std::span<const std::byte> encoded,
                                    std::span<std::byte> raw_out) const override {
    return decode_(encoded, raw_out);
  }

 private:
  const kernels::CodecId codec_;
  const MaxEncodedFn max_encoded_;
  const EncodeFn encode_;
  const DecodeFn decode_;
};

}  // namespace cachesvc::tiers
