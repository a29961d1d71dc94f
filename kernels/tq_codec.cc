#include "kernels/tq_codec.h"

#if defined(__x86_64__)
#include <cpuid.h>
#endif

#include <cstring>
#include <string>

#include "kernels/tq_format.h"
#include "kernels/tq_math.h"

namespace cachesvc::kernels {
namespace {

using tq::kHeaderBytes;

CodecStatus Error(CodecCode code, std::string message) { return {code, std::move(message)}; }

int BitsOf(CodecId codec) {
  switch (codec) {
    case CodecId::kTq3:
      return 3;
    case CodecId::kTq4:
      return 4;
    case CodecId::kRaw:
      return 0;
  }
  return -1;
}

bool KnownType(ValueType t) { return t == ValueType::kFp16 || t == ValueType::kBf16; }

const char* TypeName(ValueType t) { return t == ValueType::kFp16 ? "fp16" : "bf16"; }

CodecStatus CheckArgs(CodecId codec, ValueType type, std::uint32_t head_dim) {
  if (BitsOf(codec) < 0) {
    return Error(CodecCode::kInvalidArgument,
                 "unknown codec id " + std::to_string(static_cast<int>(codec)));
  }
  if (!KnownType(type)) {
    return Error(CodecCode::kInvalidArgument, "unsupported value type " +
                                                  std::to_string(static_cast<int>(type)) +
                                                  " (TQ codecs take fp16 or bf16)");
  }
  if (codec != CodecId::kRaw && !SupportedHeadDim(head_dim)) {
    return Error(CodecCode::kInvalidArgument, "unsupported head_dim " + std::to_string(head_dim) +
                                                  " (TQ codecs take 64, 128 or 256)");
  }
  if (head_dim == 0) return Error(CodecCode::kInvalidArgument, "head_dim must be positive");
  return {};
}

CodecStatus CheckImpl(CodecImpl impl) {
  if (!CodecImplAvailable(impl)) {
    return Error(CodecCode::kUnimplemented, std::string("codec implementation ") +
                                                CodecImplName(impl) + " is not available here");
  }
  return {};
}

CodecImpl Resolve(CodecImpl impl) { return impl == CodecImpl::kBest ? BestCodecImpl() : impl; }

std::uint32_t Load32(const std::uint8_t* p) {
  return p[0] | (p[1] << 8) | (p[2] << 16) | (static_cast<std::uint32_t>(p[3]) << 24);
}

}  // namespace

namespace tq {

std::uint32_t HeaderCheck(const std::uint8_t* header) {
  std::uint32_t h = 2166136261u;
  for (std::size_t i = 0; i < 28; ++i) {
    h ^= header[i];
    h *= 16777619u;
  }
  return h;
}

void WriteHeader(const BlockHeader& h, std::uint8_t* out) {
  std::memset(out, 0, kHeaderBytes);
  std::memcpy(out, kMagic, 4);
  out[4] = h.version;
  out[5] = static_cast<std::uint8_t>(h.codec);
  out[6] = static_cast<std::uint8_t>(h.type);
  out[7] = static_cast<std::uint8_t>(__builtin_ctz(h.head_dim));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<std::uint8_t>(h.seed >> (8 * i));
  for (int i = 0; i < 4; ++i) out[16 + i] = static_cast<std::uint8_t>(h.num_vectors >> (8 * i));
  const std::uint32_t check = HeaderCheck(out);
  for (int i = 0; i < 4; ++i) out[28 + i] = static_cast<std::uint8_t>(check >> (8 * i));
}

}  // namespace tq

const char* CodecImplName(CodecImpl impl) {
  switch (impl) {
    case CodecImpl::kBest:
      return "best";
    case CodecImpl::kScalar:
      return "scalar";
    case CodecImpl::kAvx2:
      return "avx2";
    case CodecImpl::kAvx512:
      return "avx512";
  }
  return "unknown";
}

#if defined(__x86_64__)
namespace {
// F16C (CPUID.1:ECX bit 29) read directly: Clang's __builtin_cpu_supports does not know "f16c".
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}
}  // namespace
#endif

bool CodecImplAvailable(CodecImpl impl) {
  switch (impl) {
    case CodecImpl::kBest:
    case CodecImpl::kScalar:
      return true;
    case CodecImpl::kAvx2:
#if defined(__x86_64__)
      return __builtin_cpu_supports("avx2") && CpuHasF16c();
#else
      return false;
#endif
    case CodecImpl::kAvx512:
#if defined(__x86_64__)
      return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
             __builtin_cpu_supports("avx2") && CpuHasF16c();
#else
      return false;
#endif
  }
  return false;
}

CodecImpl BestCodecImpl() {
  static const CodecImpl best = CodecImplAvailable(CodecImpl::kAvx512) ? CodecImpl::kAvx512
                                : CodecImplAvailable(CodecImpl::kAvx2) ? CodecImpl::kAvx2
                                                                       : CodecImpl::kScalar;
  return best;
}

CodecInfo GetCodecInfo(CodecId id) {
  switch (id) {
    case CodecId::kRaw:
      return {id, "raw", 0, false};
    case CodecId::kTq3:
      return {id, "tq3", 3, true};
    case CodecId::kTq4:
      return {id, "tq4", 4, true};
  }
  return {id, "unknown", 0, false};
}

bool SupportedHeadDim(std::uint32_t head_dim) {
  return head_dim == 64 || head_dim == 128 || head_dim == 256;
}

std::size_t RawBytes(ValueType type, std::uint32_t head_dim, std::uint64_t num_vectors) {
  (void)type;  // both supported types are 2 bytes
  return static_cast<std::size_t>(num_vectors) * head_dim * 2;
}

std::size_t EncodedBytes(CodecId codec, ValueType type, std::uint32_t head_dim,
                         std::uint64_t num_vectors) {
  if (!CheckArgs(codec, type, head_dim).ok()) return 0;
  if (codec == CodecId::kRaw) return RawBytes(type, head_dim, num_vectors);
  return tq::CodesOffset(num_vectors) +
         static_cast<std::size_t>(num_vectors) *
             tq::CodeBytesPerVector(static_cast<int>(head_dim), BitsOf(codec));
}

CodecStatus Encode(CodecId codec, ValueType type, std::uint32_t head_dim, std::uint64_t seed,
                   std::span<const std::byte> raw, std::span<std::byte> out, EncodeStats* stats,
                   CodecImpl impl) {
  if (CodecStatus s = CheckArgs(codec, type, head_dim); !s.ok()) return s;
  if (CodecStatus s = CheckImpl(impl); !s.ok()) return s;
  const std::size_t value_bytes = 2;
  if (raw.size() % (head_dim * value_bytes) != 0) {
    return Error(CodecCode::kInvalidArgument,
                 "input of " + std::to_string(raw.size()) + " bytes is not a whole number of " +
                     std::to_string(head_dim) + "-value " + TypeName(type) + " vectors");
  }
  const std::uint64_t n = raw.size() / (head_dim * value_bytes);
  if (n > UINT32_MAX) {
    return Error(CodecCode::kInvalidArgument, "a block holds at most 2^32-1 vectors");
  }
  const std::size_t need = EncodedBytes(codec, type, head_dim, n);
  if (out.size() != need) {
    return Error(CodecCode::kInvalidArgument, "output buffer is " + std::to_string(out.size()) +
                                                  " bytes, the encoded block needs " +
                                                  std::to_string(need));
  }
  if (codec == CodecId::kRaw) {
    if (n > 0) std::memcpy(out.data(), raw.data(), raw.size());
    return {};
  }
  if (reinterpret_cast<std::uintptr_t>(raw.data()) % 2 != 0 ||
      reinterpret_cast<std::uintptr_t>(out.data()) % 2 != 0) {
    return Error(CodecCode::kInvalidArgument, "buffers must be 2-byte aligned");
  }
  auto* dst = reinterpret_cast<std::uint8_t*>(out.data());
  const BlockHeader header{tq::kFormatVersion, codec, type,
                           head_dim,           seed,  static_cast<std::uint32_t>(n)};
  tq::WriteHeader(header, dst);
  std::memset(dst + tq::NormsOffset(), 0, tq::CodesOffset(n) - tq::NormsOffset());
  std::uint64_t sign_words[tq::kMaxHeadDim / 64];
  tq::SignWords(seed, static_cast<int>(head_dim), sign_words);
  const int bits = BitsOf(codec);
  static_assert(tq::NormsOffset() % 2 == 0);
  auto* norms = reinterpret_cast<std::uint16_t*>(dst + tq::NormsOffset());
  const tq::EncodeArgs args{static_cast<int>(head_dim),
                            bits,
                            type,
                            n,
                            sign_words,
                            tq::Centroids(static_cast<int>(head_dim), bits),
                            tq::Thresholds(static_cast<int>(head_dim), bits),
                            reinterpret_cast<const std::uint16_t*>(raw.data()),
                            norms,
                            dst + tq::CodesOffset(n)};
  EncodeStats local;
#if defined(__x86_64__)
  if (Resolve(impl) == CodecImpl::kAvx512) {
    tq::EncodeBlockAvx512(args, &local);
  } else if (Resolve(impl) == CodecImpl::kAvx2) {
    tq::EncodeBlockAvx2(args, &local);
  } else {
    tq::EncodeBlockScalar(args, &local);
  }
#else
  tq::EncodeBlockScalar(args, &local);
#endif
  if (stats != nullptr) *stats = local;
  return {};
}

CodecStatus ReadHeader(std::span<const std::byte> encoded, BlockHeader* header) {
  const auto* p = reinterpret_cast<const std::uint8_t*>(encoded.data());
  if (encoded.size() < kHeaderBytes) {
    return Error(CodecCode::kDataLoss, "encoded block of " + std::to_string(encoded.size()) +
                                           " bytes is shorter than its 32-byte header");
  }
  if (std::memcmp(p, tq::kMagic, 4) != 0) {
    return Error(CodecCode::kDataLoss, "not a TQ block (bad magic)");
  }
  if (Load32(p + 28) != tq::HeaderCheck(p)) {
    return Error(CodecCode::kDataLoss, "TQ block header is corrupt (check mismatch)");
  }
  if (p[4] != tq::kFormatVersion) {
    return Error(CodecCode::kUnimplemented, "TQ format version " + std::to_string(p[4]) +
                                                " is not supported (this build reads 1)");
  }
  BlockHeader h;
  h.version = p[4];
  const auto codec = CodecFromId(p[5]);
  if (!codec || *codec == CodecId::kRaw) {
    return Error(CodecCode::kDataLoss, "TQ block names codec id " + std::to_string(p[5]));
  }
  h.codec = *codec;
  h.type = static_cast<ValueType>(p[6]);
  if (!KnownType(h.type)) {
    return Error(CodecCode::kDataLoss, "TQ block names value type " + std::to_string(p[6]));
  }
  if (p[7] < 6 || p[7] > 8) {
    return Error(CodecCode::kDataLoss, "TQ block names head_dim 2^" + std::to_string(p[7]));
  }
  h.head_dim = 1u << p[7];
  for (int i = 0; i < 8; ++i) h.seed |= static_cast<std::uint64_t>(p[8 + i]) << (8 * i);
  h.num_vectors = Load32(p + 16);
  if (Load32(p + 20) != 0 || Load32(p + 24) != 0) {
    return Error(CodecCode::kDataLoss, "TQ block has non-zero reserved header bytes");
  }
  const std::size_t need = EncodedBytes(h.codec, h.type, h.head_dim, h.num_vectors);
  if (encoded.size() != need) {
    return Error(CodecCode::kDataLoss, "TQ block is " + std::to_string(encoded.size()) +
                                           " bytes, its header says " + std::to_string(need));
  }
  *header = h;
  return {};
}

CodecStatus Decode(CodecId codec, ValueType type, std::uint32_t head_dim,
                   std::span<const std::byte> encoded, std::span<std::byte> raw_out,
                   CodecImpl impl) {
  if (CodecStatus s = CheckArgs(codec, type, head_dim); !s.ok()) return s;
  if (CodecStatus s = CheckImpl(impl); !s.ok()) return s;
  if (codec == CodecId::kRaw) {
    if (encoded.size() != raw_out.size()) {
      return Error(CodecCode::kInvalidArgument, "RAW block is " + std::to_string(encoded.size()) +
                                                    " bytes, output buffer " +
                                                    std::to_string(raw_out.size()));
    }
    if (!encoded.empty()) std::memcpy(raw_out.data(), encoded.data(), encoded.size());
    return {};
  }
  BlockHeader h;
  if (CodecStatus s = ReadHeader(encoded, &h); !s.ok()) return s;
  if (h.codec != codec || h.type != type || h.head_dim != head_dim) {
    return Error(CodecCode::kInvalidArgument,
                 std::string("block is ") + GetCodecInfo(h.codec).name + "/" + TypeName(h.type) +
                     "/head_dim " + std::to_string(h.head_dim) + ", caller expected " +
                     GetCodecInfo(codec).name + "/" + TypeName(type) + "/head_dim " +
                     std::to_string(head_dim));
  }
  if (raw_out.size() != RawBytes(type, head_dim, h.num_vectors)) {
    return Error(CodecCode::kInvalidArgument,
                 "output buffer is " + std::to_string(raw_out.size()) +
                     " bytes, the block decodes to " +
                     std::to_string(RawBytes(type, head_dim, h.num_vectors)));
  }
  if (reinterpret_cast<std::uintptr_t>(encoded.data()) % 2 != 0 ||
      reinterpret_cast<std::uintptr_t>(raw_out.data()) % 2 != 0) {
    return Error(CodecCode::kInvalidArgument, "buffers must be 2-byte aligned");
  }
  std::uint64_t sign_words[tq::kMaxHeadDim / 64];
  tq::SignWords(h.seed, static_cast<int>(head_dim), sign_words);
  const int bits = BitsOf(codec);
  const auto* src = reinterpret_cast<const std::uint8_t*>(encoded.data());
  const tq::DecodeArgs args{static_cast<int>(head_dim),
                            bits,
                            type,
                            h.num_vectors,
                            sign_words,
                            tq::Centroids(static_cast<int>(head_dim), bits),
                            reinterpret_cast<const std::uint16_t*>(src + tq::NormsOffset()),
                            src + tq::CodesOffset(h.num_vectors),
                            reinterpret_cast<std::uint16_t*>(raw_out.data())};
#if defined(__x86_64__)
  if (Resolve(impl) == CodecImpl::kAvx512) {
    tq::DecodeBlockAvx512(args);
  } else if (Resolve(impl) == CodecImpl::kAvx2) {
    tq::DecodeBlockAvx2(args);
  } else {
    tq::DecodeBlockScalar(args);
  }
#else
  tq::DecodeBlockScalar(args);
#endif
  return {};
}

}  // namespace cachesvc::kernels
