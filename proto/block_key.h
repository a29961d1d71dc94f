// proto/block_key.h: block keys, the contract that names a prefix of a context.
//
// A block holds the KV of `block_tokens` consecutive tokens. Its key is a 128-bit chained hash, so
// one key names the whole prefix that ends with that block (proto/KEYS.md has the bytes and test
// vectors):
//   seed   = XXH3-128("cachesvc/v1" ‖ tenant_salt ‖ layout_fingerprint as 8 bytes LE)
//   key[i] = XXH3-128(key[i-1] ‖ token_ids[i*B .. (i+1)*B) as LE uint32), key[-1] = seed
// Keys travel as the 16-byte XXH3-128 canonical form (big-endian high half, then low half), and
// that same form is what the next link of the chain hashes. Only full blocks have keys.
//
// The service owns tenant salts; engines that hash on their own may pass their own 16-byte keys,
// which the service treats as opaque. Value types and pure functions; thread-safe.
#pragma once

#include <array>
#include <bit>
#include <compare>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cachesvc {

struct BlockKey {
  static constexpr std::size_t kBytes = 16;
  std::array<std::uint8_t, kBytes> bytes{};

  // From the 16-byte wire form; INVALID_ARGUMENT for any other length.
  [[nodiscard]] static absl::StatusOr<BlockKey> FromBytes(std::string_view wire);
  // From 32 hex digits (either case); INVALID_ARGUMENT otherwise.
  [[nodiscard]] static absl::StatusOr<BlockKey> FromHex(std::string_view hex);

  [[nodiscard]] std::string_view Bytes() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  [[nodiscard]] std::string Hex() const;  // 32 lowercase hex digits

  // Ordered as byte strings. Equality and hashing read the key as two 64-bit words: keys are
  // compared and hashed on every index and policy operation, and a memcmp call per comparison
  // was most of the replay's time.
  friend std::strong_ordering operator<=>(const BlockKey& a, const BlockKey& b) {
    // `c != 0` compares an ordering with the literal 0, as the standard specifies; clang-tidy 14
    // mistakes it for a null pointer.
    // NOLINTNEXTLINE(modernize-use-nullptr)
    if (auto c = BigEndianWord(a, 0) <=> BigEndianWord(b, 0); c != 0) return c;
    return BigEndianWord(a, 1) <=> BigEndianWord(b, 1);
  }
  friend bool operator==(const BlockKey& a, const BlockKey& b) {
    return a.Word(0) == b.Word(0) && a.Word(1) == b.Word(1);
  }
  template <typename H>
  friend H AbslHashValue(H h, const BlockKey& key) {
    return H::combine(std::move(h), key.Word(0), key.Word(1));
  }
  // Bytes [8i, 8i + 8) as a native-endian word (i is 0 or 1).
  [[nodiscard]] std::uint64_t Word(std::size_t i) const {
    std::uint64_t w;
    std::memcpy(&w, bytes.data() + 8 * i, sizeof w);
    return w;
  }

 private:
  // Word i read so that comparing words compares bytes in order.
  static std::uint64_t BigEndianWord(const BlockKey& k, std::size_t i) {
    const std::uint64_t w = k.Word(i);
    if constexpr (std::endian::native == std::endian::little) return __builtin_bswap64(w);
    return w;
  }

 public:
};

// The chain's starting point for one tenant and one model layout.
BlockKey KeyChainSeed(std::string_view tenant_salt, std::uint64_t layout_fingerprint);

// The key of the block holding `block_tokens` (one whole block) after the block keyed `prev`.
BlockKey NextBlockKey(const BlockKey& prev, std::span<const std::uint32_t> block_tokens);

// Keys of every full block of `tokens`, chained from `seed`; a trailing partial block gets none.
// INVALID_ARGUMENT if block_tokens is 0.
[[nodiscard]] absl::StatusOr<std::vector<BlockKey>> DeriveBlockKeys(
    const BlockKey& seed, std::span<const std::uint32_t> tokens, std::uint32_t block_tokens);

}  // namespace cachesvc
