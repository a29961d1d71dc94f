// proto/layout.h: the model layout descriptor, the contract naming one engine's KV for one
// tensor-parallel rank.
//
// A layout fixes the shape of a block payload (canonical order [layer][part][token][kv_head]
// [head_dim], part = K,V for MHA/GQA or the single latent for MLA) and, through its fingerprint,
// is bound into every block key: blocks of different models, dtypes or TP ranks never share keys.
// The canonical encoding hashed into the fingerprint is specified byte by byte in proto/KEYS.md.
//
// Plain value type; thread-compatible.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.pb.h"

namespace cachesvc {

// Values equal cachesvc.v1.Dtype (checked in layout.cc).
enum class Dtype : std::uint32_t { kFp16 = 1, kBf16 = 2, kFp8E4M3 = 3, kFp32 = 4 };

// Values equal cachesvc.v1.AttentionKind.
enum class AttentionKind : std::uint32_t { kMhaGqa = 1, kMla = 2 };

std::size_t DtypeBytes(Dtype dtype);
std::string_view DtypeName(Dtype dtype);          // "fp16", "bf16", "fp8_e4m3", "fp32"
std::string_view AttentionName(AttentionKind k);  // "mha_gqa", "mla"

struct ModelLayout {
  // Limits enforced by Validate(); generous for real models, small enough that products fit.
  static constexpr std::size_t kMaxModelIdBytes = 256;
  static constexpr std::uint32_t kMaxLayers = 1024;
  static constexpr std::uint32_t kMaxKvHeads = 1024;
  static constexpr std::uint32_t kMaxHeadDim = 4096;
  static constexpr std::uint32_t kMaxBlockTokens = 65536;

  std::string model_id;
  std::uint32_t num_layers = 0;
  std::uint32_t num_kv_heads = 0;
  std::uint32_t head_dim = 0;
  Dtype dtype = Dtype::kFp16;
  std::uint32_t block_tokens = 0;
  std::uint32_t tp_rank = 0;
  std::uint32_t tp_size = 1;
  AttentionKind attention = AttentionKind::kMhaGqa;

  // OK, or INVALID_ARGUMENT naming the first field out of range.
  [[nodiscard]] absl::Status Validate() const;

  // Tensors per layer in the payload: 2 (K and V) for MHA/GQA, 1 (the latent) for MLA.
  [[nodiscard]] std::uint32_t PartsPerLayer() const {
    return attention == AttentionKind::kMla ? 1 : 2;
  }

  // Values in one (token, head) vector times vectors in a block.
  [[nodiscard]] std::uint64_t ValuesPerBlock() const;

  // Bytes of one block's RAW payload (no header). Requires Validate().ok().
  [[nodiscard]] std::uint64_t RawBlockBytes() const { return ValuesPerBlock() * DtypeBytes(dtype); }

  // The canonical byte encoding of proto/KEYS.md, and its XXH3-64: the layout's name on the wire.
  [[nodiscard]] std::string CanonicalEncoding() const;
  [[nodiscard]] std::uint64_t Fingerprint() const;

  // Conversion from the wire message validates: an unspecified or unknown enum value, or any
  // field out of range, is INVALID_ARGUMENT naming it.
  [[nodiscard]] static absl::StatusOr<ModelLayout> FromProto(const v1::ModelLayout& msg);
  [[nodiscard]] v1::ModelLayout ToProto() const;

  friend bool operator==(const ModelLayout&, const ModelLayout&) = default;
};

}  // namespace cachesvc
