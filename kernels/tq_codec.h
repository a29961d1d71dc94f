// kernels/tq_codec.h: the codec API used by tiers/ and client/ to compress KV blocks.
//
// A block is `num_vectors` vectors of `head_dim` values (fp16 or bf16), contiguous: exactly the
// canonical payload [layer][part][token][kv_head][head_dim] of DESIGN.md viewed as vectors. TQ3 and
// TQ4 turn it into the self-describing byte layout of kernels/FORMAT.md (header, fp16 norms, packed
// codes); RAW is the identity (no header). Every implementation (scalar reference, AVX2, AVX-512,
// CUDA) produces the same bytes; Encode/Decode pick the fastest one this CPU has unless told.
//
// Errors never throw and never leave a silent wrong result: a buffer of the wrong size, an
// unsupported head_dim or dtype, or a header that is corrupt, truncated, of an unknown version or
// codec fails with a CodecStatus saying what. NaN/Inf inputs are not errors: such a vector decodes
// to NaN in every coordinate (FORMAT.md "Special values"), and EncodeStats counts it so the caller
// can keep the block RAW instead.
//
// Stateless and thread-safe; no allocation except the message of a failed call.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "kernels/codec.h"

namespace cachesvc::kernels {

// Element type of the uncompressed vectors. Values equal cachesvc.v1.Dtype.
enum class ValueType : std::uint8_t { kFp16 = 1, kBf16 = 2 };

// Canonical-code subset (values equal absl::StatusCode / gRPC codes, so callers convert by cast).
enum class CodecCode : int {
  kOk = 0,
  kInvalidArgument = 3,  // caller's mistake: sizes, head_dim, dtype, codec, expectation mismatch
  kUnimplemented = 12,   // a format version or implementation this build does not have
  kDataLoss = 15,        // the encoded bytes are corrupt or truncated
};

struct [[nodiscard]] CodecStatus {
  CodecCode code = CodecCode::kOk;
  std::string message;
  bool ok() const { return code == CodecCode::kOk; }
};

// Which implementation runs. kBest = the fastest this machine supports.
enum class CodecImpl : std::uint8_t { kBest, kScalar, kAvx2, kAvx512 };
const char* CodecImplName(CodecImpl impl);
// Whether this CPU and build can run `impl` (kBest and kScalar always can).
bool CodecImplAvailable(CodecImpl impl);
// What kBest resolves to here.
CodecImpl BestCodecImpl();

// The seed used when a caller has no reason to pick another. Stored in every block's header, so
// blocks encoded with other seeds decode all the same.
inline constexpr std::uint64_t kDefaultSignSeed = 0x6361636865737663ull;  // "cachesvc"

struct CodecInfo {
  CodecId id;
  const char* name;
  int bits_per_code;  // 0 for RAW
  bool lossy;
};
CodecInfo GetCodecInfo(CodecId id);

// head_dim values TQ3/TQ4 support: 64, 128, 256.
bool SupportedHeadDim(std::uint32_t head_dim);

// Bytes of an encoded block; 0 when the arguments are unsupported (check with Validate...).
std::size_t EncodedBytes(CodecId codec, ValueType type, std::uint32_t head_dim,
                         std::uint64_t num_vectors);
// Bytes of the uncompressed block.
std::size_t RawBytes(ValueType type, std::uint32_t head_dim, std::uint64_t num_vectors);

struct EncodeStats {
  std::uint64_t zero_vectors = 0;       // all-zero input vectors (decode to zeros)
  std::uint64_t nonfinite_vectors = 0;  // NaN/Inf input, or norm beyond fp16 (decode to NaN)
};

// Encodes `raw` (RawBytes of the block) into `out` (exactly EncodedBytes).
CodecStatus Encode(CodecId codec, ValueType type, std::uint32_t head_dim, std::uint64_t seed,
                   std::span<const std::byte> raw, std::span<std::byte> out,
                   EncodeStats* stats = nullptr, CodecImpl impl = CodecImpl::kBest);

// What a block's header says (TQ codecs only).
struct BlockHeader {
  std::uint8_t version = 0;
  CodecId codec = CodecId::kRaw;
  ValueType type = ValueType::kFp16;
  std::uint32_t head_dim = 0;
  std::uint64_t seed = 0;
  std::uint32_t num_vectors = 0;
};
// Parses and checks the header of an encoded TQ block of `encoded.size()` bytes.
CodecStatus ReadHeader(std::span<const std::byte> encoded, BlockHeader* header);

// Decodes `encoded` into `raw_out`. The caller states what it expects (from its model layout);
// a block of another codec, dtype or head_dim, or whose size does not match, is an error, never a
// reinterpretation. For RAW, `encoded` is copied after a size check.
CodecStatus Decode(CodecId codec, ValueType type, std::uint32_t head_dim,
                   std::span<const std::byte> encoded, std::span<std::byte> raw_out,
                   CodecImpl impl = CodecImpl::kBest);

}  // namespace cachesvc::kernels
