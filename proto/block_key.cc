#include "proto/block_key.h"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t and XXH3_INITSTATE
#include "proto/xxh3.h"

#include <bit>

#include <charconv>

#include "fmt/format.h"

namespace cachesvc {
namespace {

constexpr std::string_view kKeyDomain = "cachesvc/v1";

BlockKey FromHash(XXH128_hash_t hash) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  BlockKey key;
  static_assert(sizeof(canonical.digest) == BlockKey::kBytes);
  std::copy(std::begin(canonical.digest), std::end(canonical.digest), key.bytes.begin());
  return key;
}

// Feeds token ids to the hash state as little-endian uint32, whatever the host's byte order.
void UpdateTokens(XXH3_state_t* state, std::span<const std::uint32_t> tokens) {
  if constexpr (std::endian::native == std::endian::little) {
    XXH3_128bits_update(state, tokens.data(), tokens.size_bytes());
  } else {
    std::array<std::uint8_t, 256> buf;
    std::size_t n = 0;
    for (std::uint32_t t : tokens) {
      for (int i = 0; i < 4; ++i) buf[n++] = static_cast<std::uint8_t>(t >> (8 * i));
      if (n == buf.size()) {
        XXH3_128bits_update(state, buf.data(), n);
        n = 0;
      }
    }
    XXH3_128bits_update(state, buf.data(), n);
  }
}

}  // namespace

absl::StatusOr<BlockKey> BlockKey::FromBytes(std::string_view wire) {
  if (wire.size() != kBytes) {
    return absl::InvalidArgumentError(
        fmt::format("a block key is {} bytes, got {}", kBytes, wire.size()));
  }
  BlockKey key;
  std::copy(wire.begin(), wire.end(), key.bytes.begin());
  return key;
}

absl::StatusOr<BlockKey> BlockKey::FromHex(std::string_view hex) {
  BlockKey key;
  bool ok = hex.size() == 2 * kBytes;
  for (std::size_t i = 0; ok && i < kBytes; ++i) {
    const char* first = hex.data() + 2 * i;
    auto [end, err] = std::from_chars(first, first + 2, key.bytes[i], 16);
    ok = err == std::errc() && end == first + 2;
  }
  if (!ok) {
    return absl::InvalidArgumentError(
        fmt::format("a block key is {} hex digits, got '{}'", 2 * kBytes, hex));
  }
  return key;
}

std::string BlockKey::Hex() const {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(2 * kBytes);
  for (std::uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xf]);
  }
  return out;
}

BlockKey KeyChainSeed(std::string_view tenant_salt, std::uint64_t layout_fingerprint) {
  std::string input(kKeyDomain);
  input.append(tenant_salt);
  for (int i = 0; i < 8; ++i) input.push_back(static_cast<char>(layout_fingerprint >> (8 * i)));
  return FromHash(XXH3_128bits(input.data(), input.size()));
}

BlockKey NextBlockKey(const BlockKey& prev, std::span<const std::uint32_t> block_tokens) {
  XXH3_state_t state;
  XXH3_INITSTATE(&state);
  XXH3_128bits_reset(&state);
  XXH3_128bits_update(&state, prev.bytes.data(), prev.bytes.size());
  UpdateTokens(&state, block_tokens);
  return FromHash(XXH3_128bits_digest(&state));
}

absl::StatusOr<std::vector<BlockKey>> DeriveBlockKeys(const BlockKey& seed,
                                                      std::span<const std::uint32_t> tokens,
                                                      std::uint32_t block_tokens) {
  if (block_tokens == 0) return absl::InvalidArgumentError("block_tokens must be at least 1");
  const std::size_t full_blocks = tokens.size() / block_tokens;
  std::vector<BlockKey> keys;
  keys.reserve(full_blocks);
  BlockKey prev = seed;
  for (std::size_t i = 0; i < full_blocks; ++i) {
    prev = NextBlockKey(prev, tokens.subspan(i * block_tokens, block_tokens));
    keys.push_back(prev);
  }
  return keys;
}

}  // namespace cachesvc
