// cachesvc/local_protocol.h: the wire format of the local data plane, the same-host fast path
// between client::LocalTransport and LocalDataPlane over a Unix stream socket (docs/local.md).
// Header-only and free of socket code, so that both sides and the tests share one definition.
//
// Every message is one frame: u32 body length, then the body, little-endian field by field. A
// body starts with u32 type. Requests are answered in order, one reply each, except RELEASE,
// which has none. A reply's body: u32 type (kReply), u32 code (gRPC canonical code, 0 = OK),
// u32 message length, the UTF-8 message (errors only), then the request type's fields (OK only).
//
//   HELLO   u32 version, u32 id length, engine id     -> u64 arena bytes; the arena's fd is
//                                                        attached (SCM_RIGHTS, read-only)
//   LOOKUP  u32 n, n x 16-byte key                    -> u32 leading blocks stored
//   LEASE   u32 n, n x 16-byte key                    -> u32 m (m <= n, the leased prefix),
//                                                        m x lease (kLeaseBytes)
//   RELEASE u32 n, n x u64 lease id                   (no reply)
//   KEYS    u32 n, n x u32 token                      -> u32 leading blocks stored, u32 m,
//                                                        m x 16-byte key (the keys of the m
//                                                        full blocks, derived by the daemon
//                                                        with the tenant's salt)
//
// A lease: u64 lease id, u64 offset in the arena, u64 length, u64 XXH3-64 of the payload,
// u64 layout fingerprint, u32 codec (kernels::CodecId), u32 reserved (0).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace cachesvc::local {

inline constexpr std::uint32_t kVersion = 1;

enum MessageType : std::uint32_t {
  kHello = 1,
  kLookup = 2,
  kLease = 3,
  kRelease = 4,
  kReply = 5,
  kKeys = 6,
};

// Longest body either side accepts: 65536 leases of kLeaseBytes fit, with room for the header.
inline constexpr std::uint32_t kMaxBody = 4u << 20;
// Most keys, lease ids or tokens' blocks in one request (as on gRPC, wire.h's
// kMaxKeysPerRequest).
inline constexpr std::uint32_t kMaxItems = 65536;
inline constexpr std::size_t kKeyBytes = 16;
inline constexpr std::size_t kLeaseBytes = 48;
inline constexpr std::size_t kMaxMessage = 256;  // longest error message sent (longer ones cut)

struct Lease {
  std::uint64_t lease_id = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  std::uint64_t checksum = 0;
  std::uint64_t layout_fingerprint = 0;
  std::uint32_t codec = 0;
};

// Appends little-endian fields to a frame; Finish() writes the body length in front.
class Writer {
 public:
  Writer() { out_.resize(4); }
  Writer& U32(std::uint32_t v) { return Put(v, 4); }
  Writer& U64(std::uint64_t v) { return Put(v, 8); }
  Writer& Bytes(std::string_view b) {
    out_.append(b);
    return *this;
  }
  std::string Finish() {
    const auto body = static_cast<std::uint32_t>(out_.size() - 4);
    for (int i = 0; i < 4; ++i) out_[i] = static_cast<char>(body >> (8 * i));
    return std::move(out_);
  }

 private:
  Writer& Put(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_.push_back(static_cast<char>(v >> (8 * i)));
    return *this;
  }
  std::string out_;
};

// Reads fields from a body; every read fails (nullopt) past the end, and stays failed.
class Reader {
 public:
  explicit Reader(std::string_view body) : in_(body) {}
  explicit Reader(std::string&&) = delete;  // would read a destroyed temporary
  std::optional<std::uint32_t> U32() {
    auto v = Get(4);
    if (!v) return std::nullopt;
    return static_cast<std::uint32_t>(*v);
  }
  std::optional<std::uint64_t> U64() { return Get(8); }
  std::optional<std::string_view> Bytes(std::size_t n) {
    if (failed_ || in_.size() - pos_ < n) {
      failed_ = true;
      return std::nullopt;
    }
    std::string_view out = in_.substr(pos_, n);
    pos_ += n;
    return out;
  }
  std::size_t remaining() const { return failed_ ? 0 : in_.size() - pos_; }

 private:
  std::optional<std::uint64_t> Get(int bytes) {
    auto b = Bytes(static_cast<std::size_t>(bytes));
    if (!b) return std::nullopt;
    std::uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) {
      v |= static_cast<std::uint64_t>(static_cast<std::uint8_t>((*b)[static_cast<std::size_t>(i)]))
           << (8 * i);
    }
    return v;
  }
  std::string_view in_;
  std::size_t pos_ = 0;
  bool failed_ = false;
};

inline void PutLease(Writer& w, const Lease& l) {
  w.U64(l.lease_id).U64(l.offset).U64(l.length).U64(l.checksum).U64(l.layout_fingerprint);
  w.U32(l.codec).U32(0);
}

inline std::optional<Lease> GetLease(Reader& r) {
  Lease l;
  auto id = r.U64(), off = r.U64(), len = r.U64(), sum = r.U64(), fp = r.U64();
  auto codec = r.U32(), reserved = r.U32();
  if (!id || !off || !len || !sum || !fp || !codec || !reserved) return std::nullopt;
  l.lease_id = *id;
  l.offset = *off;
  l.length = *len;
  l.checksum = *sum;
  l.layout_fingerprint = *fp;
  l.codec = *codec;
  return l;
}

// The start of a reply frame: type, code, message (cut to kMaxMessage).
inline Writer ReplyHeader(std::uint32_t code, std::string_view message) {
  Writer w;
  message = message.substr(0, kMaxMessage);
  w.U32(kReply).U32(code).U32(static_cast<std::uint32_t>(message.size())).Bytes(message);
  return w;
}

}  // namespace cachesvc::local
