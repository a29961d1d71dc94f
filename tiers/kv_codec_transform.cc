#include "tiers/kv_codec_transform.h"

#include "fmt/format.h"

namespace cachesvc::tiers {
namespace {

[[nodiscard]] absl::Status FromCodec(const kernels::CodecStatus& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code), s.message);
}

}  // namespace

absl::StatusOr<std::unique_ptr<KvCodecTransform>> KvCodecTransform::Create(kernels::CodecId codec,
                                                                           kernels::ValueType type,
                                                                           std::uint32_t head_dim,
                                                                           std::uint64_t seed) {
  if (head_dim == 0 || (codec != kernels::CodecId::kRaw && !kernels::SupportedHeadDim(head_dim))) {
    return absl::InvalidArgumentError(
        fmt::format("codec {} does not support head_dim {}", kernels::CodecName(codec), head_dim));
  }
  return std::unique_ptr<KvCodecTransform>(new KvCodecTransform(codec, type, head_dim, seed));
}

absl::StatusOr<std::uint64_t> KvCodecTransform::Vectors(std::uint64_t raw_bytes) const {
  const std::size_t vector_bytes = kernels::RawBytes(type_, head_dim_, 1);
  if (raw_bytes == 0 || raw_bytes % vector_bytes != 0) {
    return absl::InvalidArgumentError(
        fmt::format("{} transform: a block of {} bytes is not a whole number of {}-byte vectors "
                    "(head_dim {})",
                    kernels::CodecName(codec_), raw_bytes, vector_bytes, head_dim_));
  }
  return raw_bytes / vector_bytes;
}

std::uint64_t KvCodecTransform::MaxEncodedBytes(std::uint64_t raw_bytes) const {
  absl::StatusOr<std::uint64_t> n = Vectors(raw_bytes);
  if (!n.ok()) return raw_bytes;  // Encode will refuse it; any bound does
  return kernels::EncodedBytes(codec_, type_, head_dim_, *n);
}

absl::StatusOr<std::uint64_t> KvCodecTransform::Encode(std::span<const std::byte> raw,
                                                       std::span<std::byte> out) const {
  absl::StatusOr<std::uint64_t> n = Vectors(raw.size());
  if (!n.ok()) return n.status();
  const std::size_t bytes = kernels::EncodedBytes(codec_, type_, head_dim_, *n);
  if (out.size() < bytes) {
    return absl::InvalidArgumentError(
        fmt::format("{} transform: output of {} bytes is shorter than the {}-byte encoding",
                    kernels::CodecName(codec_), out.size(), bytes));
  }
  if (absl::Status s =
          FromCodec(kernels::Encode(codec_, type_, head_dim_, seed_, raw, out.first(bytes)));
      !s.ok()) {
    return s;
  }
  return bytes;
}

absl::Status KvCodecTransform::Decode(std::span<const std::byte> encoded,
                                      std::span<std::byte> raw_out) const {
  if (absl::StatusOr<std::uint64_t> n = Vectors(raw_out.size()); !n.ok()) return n.status();
  return FromCodec(kernels::Decode(codec_, type_, head_dim_, encoded, raw_out));
}

}  // namespace cachesvc::tiers
