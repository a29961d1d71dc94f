// kernels/codec.h: codec identifiers shared by every codec implementation.
//
// The numeric values are part of the wire contract: they appear in payload headers and equal the
// cachesvc.v1.Codec enum (proto/codec.h checks this at compile time). kernels/ builds alone (CUDA
// and GoogleTest only), so this header depends on nothing but the standard library.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace cachesvc::kernels {

enum class CodecId : std::uint8_t {
  kRaw = 1,  // bytes as the engine wrote them
  kTq3 = 3,  // rotated 3-bit Lloyd-Max codes + fp16 norm per vector
  kTq4 = 4,  // rotated 4-bit Lloyd-Max codes + fp16 norm per vector
};

// "raw", "tq3", "tq4".
constexpr std::string_view CodecName(CodecId id) {
  switch (id) {
    case CodecId::kRaw:
      return "raw";
    case CodecId::kTq3:
      return "tq3";
    case CodecId::kTq4:
      return "tq4";
  }
  return "unknown";
}

// The codec with this numeric id, or nullopt for an id no codec has (0, 2, 5...).
constexpr std::optional<CodecId> CodecFromId(std::uint32_t id) {
  switch (id) {
    case static_cast<std::uint32_t>(CodecId::kRaw):
      return CodecId::kRaw;
    case static_cast<std::uint32_t>(CodecId::kTq3):
      return CodecId::kTq3;
    case static_cast<std::uint32_t>(CodecId::kTq4):
      return CodecId::kTq4;
    default:
      return std::nullopt;
  }
}

// The codec named `name` (as CodecName spells it), or nullopt.
constexpr std::optional<CodecId> CodecFromName(std::string_view name) {
  for (CodecId id : {CodecId::kRaw, CodecId::kTq3, CodecId::kTq4}) {
    if (CodecName(id) == name) return id;
  }
  return std::nullopt;
}

}  // namespace cachesvc::kernels
