// proto/codec.h: codec ids on the wire. The ids themselves are defined in kernels/codec.h (kernels/
// builds without protobuf); this header converts to and from cachesvc.v1.Codec and checks at
// compile time that both agree.
#pragma once

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.pb.h"
#include "fmt/format.h"
#include "kernels/codec.h"

namespace cachesvc {

static_assert(static_cast<int>(kernels::CodecId::kRaw) == v1::CODEC_RAW);
static_assert(static_cast<int>(kernels::CodecId::kTq3) == v1::CODEC_TQ3);
static_assert(static_cast<int>(kernels::CodecId::kTq4) == v1::CODEC_TQ4);

// INVALID_ARGUMENT for CODEC_UNSPECIFIED or a value this build does not know.
[[nodiscard]] inline absl::StatusOr<kernels::CodecId> CodecFromProto(v1::Codec codec) {
  if (auto id = kernels::CodecFromId(static_cast<std::uint32_t>(codec))) return *id;
  return absl::InvalidArgumentError(fmt::format("unknown codec id {}", static_cast<int>(codec)));
}

inline v1::Codec CodecToProto(kernels::CodecId id) { return static_cast<v1::Codec>(id); }

}  // namespace cachesvc
