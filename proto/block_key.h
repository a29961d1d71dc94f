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
#include <compare>
#include <cstdint>
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
  static absl::StatusOr<BlockKey> FromBytes(std::string_view wire);
  // From 32 hex digits (either case); INVALID_ARGUMENT otherwise.
  static absl::StatusOr<BlockKey> FromHex(std::string_view hex);

  [[nodiscard]] std::string_view Bytes() const {
    return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
  }
  [[nodiscard]] std::string Hex() const;  // 32 lowercase hex digits

  friend auto operator<=>(const BlockKey&, const BlockKey&) = default;
  template <typename H>
  friend H AbslHashValue(H h, const BlockKey& key) {
    return H::combine_contiguous(std::move(h), key.bytes.data(), key.bytes.size());
  }
};

// The chain's starting point for one tenant and one model layout.
BlockKey KeyChainSeed(std::string_view tenant_salt, std::uint64_t layout_fingerprint);

// The key of the block holding `block_tokens` (one whole block) after the block keyed `prev`.
BlockKey NextBlockKey(const BlockKey& prev, std::span<const std::uint32_t> block_tokens);

// Keys of every full block of `tokens`, chained from `seed`; a trailing partial block gets none.
// INVALID_ARGUMENT if block_tokens is 0.
absl::StatusOr<std::vector<BlockKey>> DeriveBlockKeys(const BlockKey& seed,
                                                      std::span<const std::uint32_t> tokens,
                                                      std::uint32_t block_tokens);

}  // namespace cachesvc
