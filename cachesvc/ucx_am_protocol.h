// cachesvc/ucx_am_protocol.h: the wire format of the two-sided block protocol that runs over UCX
// active messages between client::UcxTransport and UcxDataPlane (docs/ucx.md, "The block
// protocol"). Header-only and free of UCX types, so that both sides and the tests share one
// definition.
//
// Every message is one UCX active message (ucp_am_send_nbx) whose AM header is one of the two
// fixed-size headers below, encoded little-endian field by field (never by memcpy of a struct), and
// whose AM payload is the block's bytes (read reply, write request), an error message (replies
// with a non-OK code) or nothing (read request).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>

namespace cachesvc::ucx_am {

// The protocol version this code speaks. A server answers a request of another version with
// FAILED_PRECONDITION (in a version-1 reply header), so both sides must be upgraded together.
inline constexpr std::uint32_t kVersion = 1;

// UCX active-message ids. Small on purpose: UCX sizes a worker's handler table by the largest id.
inline constexpr unsigned kAmRead = 1;        // client -> server: request header, no payload
inline constexpr unsigned kAmReadReply = 2;   // server -> client: reply header, data or message
inline constexpr unsigned kAmWrite = 3;       // client -> server: request header, data
inline constexpr unsigned kAmWriteReply = 4;  // server -> client: reply header, message if error

// Request header, 32 bytes:
//   0  u32 version      kVersion
//   4  u32 flags        0 (reserved; a server ignores it in version 1)
//   8  u64 request_id   chosen by the client, echoed in the reply
//  16  u64 lease_id     the lease (granted over the control plane) whose bytes are read/written
//  24  u64 length       read: capacity of the client's buffer; write: bytes in the payload
inline constexpr std::size_t kRequestSize = 32;
// Reply header, 32 bytes:
//   0  u32 version      kVersion
//   4  u32 code         gRPC canonical status code (absl::StatusCode); 0 = OK
//   8  u64 request_id   the request's
//  16  u64 length       OK read: bytes of data in the payload; OK write: bytes received;
//                       error: bytes of the UTF-8 message in the payload
//  24  u64 reserved     0
inline constexpr std::size_t kReplySize = 32;
// Longest error message a server sends (longer ones are cut).
inline constexpr std::size_t kMaxMessage = 256;

struct Request {
  std::uint32_t version = kVersion;
  std::uint32_t flags = 0;
  std::uint64_t request_id = 0;
  std::uint64_t lease_id = 0;
  std::uint64_t length = 0;
};

struct Reply {
  std::uint32_t version = kVersion;
  std::uint32_t code = 0;
  std::uint64_t request_id = 0;
  std::uint64_t length = 0;
  std::uint64_t reserved = 0;
};

namespace internal {
inline void Store(std::uint8_t* out, std::uint64_t value, int bytes) {
  for (int i = 0; i < bytes; ++i) out[i] = static_cast<std::uint8_t>(value >> (8 * i));
}
inline std::uint64_t Load(const std::uint8_t* in, int bytes) {
  std::uint64_t value = 0;
  for (int i = 0; i < bytes; ++i) value |= static_cast<std::uint64_t>(in[i]) << (8 * i);
  return value;
}
}  // namespace internal

inline std::array<std::uint8_t, kRequestSize> Encode(const Request& r) {
  std::array<std::uint8_t, kRequestSize> out{};
  internal::Store(out.data() + 0, r.version, 4);
  internal::Store(out.data() + 4, r.flags, 4);
  internal::Store(out.data() + 8, r.request_id, 8);
  internal::Store(out.data() + 16, r.lease_id, 8);
  internal::Store(out.data() + 24, r.length, 8);
  return out;
}

inline std::array<std::uint8_t, kReplySize> Encode(const Reply& r) {
  std::array<std::uint8_t, kReplySize> out{};
  internal::Store(out.data() + 0, r.version, 4);
  internal::Store(out.data() + 4, r.code, 4);
  internal::Store(out.data() + 8, r.request_id, 8);
  internal::Store(out.data() + 16, r.length, 8);
  internal::Store(out.data() + 24, r.reserved, 8);
  return out;
}

// Decoders: false when `size` is not exactly the header's size. The version is returned as
// found; callers check it (a version-2 header may be longer, so check the version field first
// when `size` differs: VersionOf).
inline bool Decode(const void* data, std::size_t size, Request* r) {
  if (data == nullptr || size != kRequestSize) return false;
  const auto* in = static_cast<const std::uint8_t*>(data);
  r->version = static_cast<std::uint32_t>(internal::Load(in + 0, 4));
  r->flags = static_cast<std::uint32_t>(internal::Load(in + 4, 4));
  r->request_id = internal::Load(in + 8, 8);
  r->lease_id = internal::Load(in + 16, 8);
  r->length = internal::Load(in + 24, 8);
  return true;
}

inline bool Decode(const void* data, std::size_t size, Reply* r) {
  if (data == nullptr || size != kReplySize) return false;
  const auto* in = static_cast<const std::uint8_t*>(data);
  r->version = static_cast<std::uint32_t>(internal::Load(in + 0, 4));
  r->code = static_cast<std::uint32_t>(internal::Load(in + 4, 4));
  r->request_id = internal::Load(in + 8, 8);
  r->length = internal::Load(in + 16, 8);
  r->reserved = internal::Load(in + 24, 8);
  return true;
}

// The version field of a header of any size (0 when shorter than 4 bytes).
inline std::uint32_t VersionOf(const void* data, std::size_t size) {
  if (data == nullptr || size < 4) return 0;
  return static_cast<std::uint32_t>(internal::Load(static_cast<const std::uint8_t*>(data), 4));
}
// The request id of a request header of any size that holds one (0 otherwise), so that a server
// can address its error reply for a malformed request.
inline std::uint64_t RequestIdOf(const void* data, std::size_t size) {
  if (data == nullptr || size < 16) return 0;
  return internal::Load(static_cast<const std::uint8_t*>(data) + 8, 8);
}

}  // namespace cachesvc::ucx_am
