// client/ucx_transport.h: the client side of the UCX data plane: a connection to one daemon's
// UcxDataPlane.
//
// The block protocol (docs/ucx.md, "The block protocol"): Read/Write and the batched
// ReadMany/WriteMany name a lease (granted over the gRPC control plane) and move its bytes with
// UCX active messages; the daemon checks the lease and sends the block from, or receives it into,
// the memory the lease grants. Large blocks go rendezvous: the bytes land straight in the
// caller's buffer (read) or are taken straight from it (write), with no staging copy in this
// library. Every op gets the daemon's own answer (its status code and message); a batch issues
// every op, then waits once.
//
// One-sided RMA (ImportRkey, Get/Put, GetMany/PutMany, RegisterLocal): reads and writes of the
// daemon's registered memory by address, for RDMA NICs. The daemon serves it only when started
// with UcxOptions::enable_rma, which it is not on TCP and shared memory (docs/ucx.md).
//
// Completion: Read returns once the bytes are in the caller's buffer; Write once the daemon has
// them (its EndWrite ran) and this library no longer reads the source buffer. Get returns once
// the bytes are in the local buffer; Put once they are visible in the daemon's memory (every put
// batch ends with an endpoint flush). Every wait is bounded by UcxTransportOptions::op_timeout.
// An operation that times out is DEADLINE_EXCEEDED, and the connection is then closed by force
// (UCX cancels whatever is still in flight, or, where it cannot, the connection's worker is never
// progressed again, so a local buffer is never written after the call that used it returns);
// every later call is UNAVAILABLE: reconnect. A failed transfer (server gone, transport error) is
// UNAVAILABLE and likewise ends the connection, because UCX puts the endpoint into its failed
// state. An error the daemon answers (NOT_FOUND lease, OUT_OF_RANGE length, ...) fails only that
// op; the connection stays usable.
//
// Range checks (RMA only): UCX does not check remote ranges on TCP or shared-memory transports.
// So a RemoteKey carries the remote range it was issued for, and every operation outside it is
// OUT_OF_RANGE before anything is sent. This protects against bugs, not against a malicious
// client, which can bypass this library (docs/ucx.md). The block protocol needs no such check
// here: the daemon checks every lease itself.
//
// Thread-safety: a UcxTransport may be shared by threads. One mutex serializes calls into UCX;
// a waiting call takes it only while it progresses the worker, so several threads' transfers are
// in flight together (any thread's progress completes any thread's transfers). One UcxTransport
// per thread also works (no shared worker), at the cost of one connection each.
//
// Lifetime: RemoteKey and LocalRegion keep the connection's UCX state alive (UCX requires rkeys
// and memory handles to be released before their endpoint and worker), so they may outlive the
// UcxTransport; the connection closes when the last of them is gone.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

// UCX handle types, declared here so that users of this header need not include <ucp/api/ucp.h>.
struct ucp_rkey;
struct ucp_mem;

namespace cachesvc::client {

namespace ucx_internal {
class Connection;  // context, worker, endpoint and their mutex (client/ucx_transport.cc)
}  // namespace ucx_internal

struct UcxTransportOptions {
  // UCX_TLS for this client's context ("tcp", "sm,self,tcp", ...); empty keeps UCX's default. It
  // must cover the network device the server's address is reached through ("tcp" for loopback).
  std::string transports;
  // UCP_ERR_HANDLING_MODE_PEER: a dead or vanished server fails calls with UNAVAILABLE soon.
  // UCX 1.13 then excludes shared-memory transports (they cannot detect a dead peer). false
  // allows them; a server that vanishes without closing its sockets is then noticed only by
  // op_timeout (DEADLINE_EXCEEDED). Must match the server's UcxOptions::detect_peer_failure.
  bool detect_peer_failure = true;
  // Bound on establishing the connection.
  std::chrono::milliseconds connect_timeout{5000};
  // Bound on each call's wait (a whole batch counts as one call). Size it for the largest batch
  // at the slowest transport: 64 MiB over loopback TCP takes tens of milliseconds.
  std::chrono::milliseconds op_timeout{5000};
  // Bound on closing the connection gracefully when the last handle goes.
  std::chrono::milliseconds close_timeout{1000};
};

// A remote key unpacked for one connection, with the remote range it may be used for. Move-only;
// destroying it releases the UCX rkey.
class RemoteKey {
 public:
  RemoteKey() = default;
  ~RemoteKey();
  RemoteKey(RemoteKey&& other) noexcept;
  RemoteKey& operator=(RemoteKey&& other) noexcept;
  RemoteKey(const RemoteKey&) = delete;
  RemoteKey& operator=(const RemoteKey&) = delete;

  bool valid() const { return rkey_ != nullptr; }
  std::uint64_t remote_base() const { return base_; }
  std::uint64_t remote_length() const { return length_; }

 private:
  friend class UcxTransport;
  void Reset();

  std::shared_ptr<ucx_internal::Connection> connection_;
  ucp_rkey* rkey_ = nullptr;
  std::uint64_t base_ = 0;
  std::uint64_t length_ = 0;
};

// Local memory registered with this connection's UCX context (ucp_mem_map), so transfers from or
// into it skip UCX's own registration (pinning on RDMA) per call. Move-only; destroying it
// unregisters. The memory stays the caller's and must outlive the LocalRegion.
class LocalRegion {
 public:
  LocalRegion() = default;
  ~LocalRegion();
  LocalRegion(LocalRegion&& other) noexcept;
  LocalRegion& operator=(LocalRegion&& other) noexcept;
  LocalRegion(const LocalRegion&) = delete;
  LocalRegion& operator=(const LocalRegion&) = delete;

  bool valid() const { return memh_ != nullptr; }
  void* base() const { return base_; }
  std::size_t length() const { return length_; }

 private:
  friend class UcxTransport;
  void Reset();

  std::shared_ptr<ucx_internal::Connection> connection_;
  ucp_mem* memh_ = nullptr;
  void* base_ = nullptr;
  std::size_t length_ = 0;
};

// One read of [remote_addr, remote_addr + length) into `local`. `local_region`, when set, must
// contain the local range.
struct GetOp {
  void* local = nullptr;
  std::size_t length = 0;
  std::uint64_t remote_addr = 0;
  const RemoteKey* rkey = nullptr;
  const LocalRegion* local_region = nullptr;
};

// One write of `local` into [remote_addr, remote_addr + length).
struct PutOp {
  const void* local = nullptr;
  std::size_t length = 0;
  std::uint64_t remote_addr = 0;
  const RemoteKey* rkey = nullptr;
  const LocalRegion* local_region = nullptr;
};

// One block-protocol read: the block of lease `lease_id` into [dst, dst + capacity). The daemon
// refuses (OUT_OF_RANGE) a block larger than `capacity`.
struct ReadOp {
  std::uint64_t lease_id = 0;
  void* dst = nullptr;
  std::size_t capacity = 0;
  std::size_t* received = nullptr;  // optional: the block's length, on success
  absl::Status* status = nullptr;   // optional: this op's own result
};

// One block-protocol write of [src, src + length) to lease `lease_id`.
struct WriteOp {
  std::uint64_t lease_id = 0;
  const void* src = nullptr;
  std::size_t length = 0;
  absl::Status* status = nullptr;  // optional: this op's own result
};

class UcxTransport {
 public:
  // Connects to a UcxDataPlane at "host:port" ("[ipv6]:port" too) and waits until the endpoint
  // is up. UNAVAILABLE when the server cannot be reached or refuses (no common transport),
  // DEADLINE_EXCEEDED after connect_timeout, INVALID_ARGUMENT for a malformed address or
  // transports string.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<UcxTransport>> Connect(
      const std::string& server_address, const UcxTransportOptions& options = {});

  ~UcxTransport();
  UcxTransport(const UcxTransport&) = delete;
  UcxTransport& operator=(const UcxTransport&) = delete;

  // Unpacks a key packed by UcxDataPlane::PackedRkey, to be used for
  // [remote_base, remote_base + remote_length) only (the block or region the daemon granted).
  // INVALID_ARGUMENT for bytes too short to be a packed key or an empty range; UCX cannot tell
  // a well-formed key of another region from the right one (see docs/ucx.md).
  [[nodiscard]] absl::StatusOr<RemoteKey> ImportRkey(std::string_view packed,
                                                     std::uint64_t remote_base,
                                                     std::uint64_t remote_length);

  // Registers local memory for zero-copy transfers (GetOp/PutOp::local_region).
  [[nodiscard]] absl::StatusOr<LocalRegion> RegisterLocal(void* base, std::size_t length);

  // One transfer; see the batched forms.
  [[nodiscard]] absl::Status Get(void* local, std::size_t length, std::uint64_t remote_addr,
                                 const RemoteKey& rkey, const LocalRegion* local_region = nullptr);
  [[nodiscard]] absl::Status Put(const void* local, std::size_t length, std::uint64_t remote_addr,
                                 const RemoteKey& rkey, const LocalRegion* local_region = nullptr);

  // Checks every op (INVALID_ARGUMENT for a key of another connection or a local range outside
  // its region, OUT_OF_RANGE for a remote range outside its key's), then issues them all and
  // waits once. On error some of the ops may have been done: treat every destination as
  // undefined. OK with no ops.
  [[nodiscard]] absl::Status GetMany(std::span<const GetOp> ops);
  [[nodiscard]] absl::Status PutMany(std::span<const PutOp> ops);

  // The block protocol. Read: the block of `lease_id` into `dst` (at most `capacity` bytes);
  // `received` (optional) gets its length. Write: `length` bytes from `src` to `lease_id`. The
  // result is the daemon's answer as it sent it (code and message: NOT_FOUND for an unknown
  // lease, OUT_OF_RANGE when the block does not fit, ...), or a transport error as above.
  [[nodiscard]] absl::Status Read(std::uint64_t lease_id, void* dst, std::size_t capacity,
                                  std::size_t* received = nullptr);
  [[nodiscard]] absl::Status Write(std::uint64_t lease_id, const void* src, std::size_t length);

  // Issue every op, then wait once (one op_timeout for the whole batch). Returns OK when every op
  // succeeded, else the first failing op's status with "op INDEX: " before its message; each
  // op's own status goes to its `status` pointer when set. A daemon's refusal of one op does not
  // stop the others. INVALID_ARGUMENT (nothing sent) for a null buffer with a non-zero size.
  [[nodiscard]] absl::Status ReadMany(std::span<const ReadOp> ops);
  [[nodiscard]] absl::Status WriteMany(std::span<const WriteOp> ops);

  // OK while the connection is usable; otherwise why it is not.
  [[nodiscard]] absl::Status health() const;

  // UCX's description of the endpoint (ucp_ep_print_info): its lanes, i.e. which transport
  // carries active messages, rendezvous data and RMA. For logs, and for tests that must know
  // which transport ran. Empty once the connection is closed.
  std::string DescribeLanes() const;

 private:
  explicit UcxTransport(std::shared_ptr<ucx_internal::Connection> connection);
  template <typename Op>
  [[nodiscard]] absl::Status CheckOp(const Op& op, std::size_t index) const;
  template <typename Op>
  [[nodiscard]] absl::Status Transfer(std::span<const Op> ops);
  template <typename Op>
  [[nodiscard]] absl::Status BlockTransfer(std::span<const Op> ops);

  std::shared_ptr<ucx_internal::Connection> connection_;
};

}  // namespace cachesvc::client
