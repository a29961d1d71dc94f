#include "proto/layout.h"

#include "proto/xxh3.h"

#include "fmt/format.h"

namespace cachesvc {
namespace {

static_assert(static_cast<int>(Dtype::kFp16) == v1::DTYPE_FP16);
static_assert(static_cast<int>(Dtype::kBf16) == v1::DTYPE_BF16);
static_assert(static_cast<int>(Dtype::kFp8E4M3) == v1::DTYPE_FP8_E4M3);
static_assert(static_cast<int>(Dtype::kFp32) == v1::DTYPE_FP32);
static_assert(static_cast<int>(AttentionKind::kMhaGqa) == v1::ATTENTION_MHA_GQA);
static_assert(static_cast<int>(AttentionKind::kMla) == v1::ATTENTION_MLA);

constexpr std::string_view kLayoutDomain = "cachesvc/layout/v1";

void AppendU32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xffU));
}

[[nodiscard]] absl::Status RangeError(std::string_view field, std::uint64_t value, std::uint64_t lo,
                                      std::uint64_t hi) {
  return absl::InvalidArgumentError(
      fmt::format("layout.{} = {} is out of range [{}, {}]", field, value, lo, hi));
}

}  // namespace

std::size_t DtypeBytes(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFp16:
    case Dtype::kBf16:
      return 2;
    case Dtype::kFp8E4M3:
      return 1;
    case Dtype::kFp32:
      return 4;
  }
  return 0;
}

std::string_view DtypeName(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFp16:
      return "fp16";
    case Dtype::kBf16:
      return "bf16";
    case Dtype::kFp8E4M3:
      return "fp8_e4m3";
    case Dtype::kFp32:
      return "fp32";
  }
  return "unknown";
}

std::string_view AttentionName(AttentionKind k) {
  switch (k) {
    case AttentionKind::kMhaGqa:
      return "mha_gqa";
    case AttentionKind::kMla:
      return "mla";
  }
  return "unknown";
}

absl::Status ModelLayout::Validate() const {
  if (model_id.empty() || model_id.size() > kMaxModelIdBytes) {
    return absl::InvalidArgumentError(fmt::format("layout.model_id must be 1..{} bytes, got {}",
                                                  kMaxModelIdBytes, model_id.size()));
  }
  if (num_layers < 1 || num_layers > kMaxLayers) {
    return RangeError("num_layers", num_layers, 1, kMaxLayers);
  }
  if (num_kv_heads < 1 || num_kv_heads > kMaxKvHeads) {
    return RangeError("num_kv_heads", num_kv_heads, 1, kMaxKvHeads);
  }
  if (head_dim < 1 || head_dim > kMaxHeadDim)
    return RangeError("head_dim", head_dim, 1, kMaxHeadDim);
  if (DtypeBytes(dtype) == 0) {
    return absl::InvalidArgumentError(
        fmt::format("layout.dtype = {} is not a known dtype", static_cast<std::uint32_t>(dtype)));
  }
  if (block_tokens < 1 || block_tokens > kMaxBlockTokens) {
    return RangeError("block_tokens", block_tokens, 1, kMaxBlockTokens);
  }
  if (tp_size < 1) return RangeError("tp_size", tp_size, 1, UINT32_MAX);
  if (tp_rank >= tp_size) return RangeError("tp_rank", tp_rank, 0, tp_size - 1);
  if (attention != AttentionKind::kMhaGqa && attention != AttentionKind::kMla) {
    return absl::InvalidArgumentError(fmt::format("layout.attention = {} is not a known kind",
                                                  static_cast<std::uint32_t>(attention)));
  }
  if (attention == AttentionKind::kMla && num_kv_heads != 1) {
    return absl::InvalidArgumentError(fmt::format(
        "layout.num_kv_heads must be 1 for MLA (the latent is one vector per token), got {}",
        num_kv_heads));
  }
  return absl::OkStatus();
}

std::uint64_t ModelLayout::ValuesPerBlock() const {
  return std::uint64_t{num_layers} * PartsPerLayer() * block_tokens * num_kv_heads * head_dim;
}

std::string ModelLayout::CanonicalEncoding() const {
  std::string out(kLayoutDomain);
  AppendU32(out, static_cast<std::uint32_t>(model_id.size()));
  out.append(model_id);
  for (std::uint32_t v : {num_layers, num_kv_heads, head_dim, static_cast<std::uint32_t>(dtype),
                          block_tokens, tp_rank, tp_size, static_cast<std::uint32_t>(attention)}) {
    AppendU32(out, v);
  }
  return out;
}

std::uint64_t ModelLayout::Fingerprint() const {
  const std::string encoding = CanonicalEncoding();
  return XXH3_64bits(encoding.data(), encoding.size());
}

absl::StatusOr<ModelLayout> ModelLayout::FromProto(const v1::ModelLayout& msg) {
  ModelLayout layout;
  layout.model_id = msg.model_id();
  layout.num_layers = msg.num_layers();
  layout.num_kv_heads = msg.num_kv_heads();
  layout.head_dim = msg.head_dim();
  layout.dtype = static_cast<Dtype>(msg.dtype());
  layout.block_tokens = msg.block_tokens();
  layout.tp_rank = msg.tp_rank();
  layout.tp_size = msg.tp_size();
  layout.attention = static_cast<AttentionKind>(msg.attention());
  if (absl::Status s = layout.Validate(); !s.ok()) return s;
  return layout;
}

v1::ModelLayout ModelLayout::ToProto() const {
  v1::ModelLayout msg;
  msg.set_model_id(model_id);
  msg.set_num_layers(num_layers);
  msg.set_num_kv_heads(num_kv_heads);
  msg.set_head_dim(head_dim);
  msg.set_dtype(static_cast<v1::Dtype>(dtype));
  msg.set_block_tokens(block_tokens);
  msg.set_tp_rank(tp_rank);
  msg.set_tp_size(tp_size);
  msg.set_attention(static_cast<v1::AttentionKind>(attention));
  return msg;
}

}  // namespace cachesvc
