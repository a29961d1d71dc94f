// client/block_client.h: the engine connector's C++ API: save and load KV blocks through a
// cachesvc daemon. Control goes over gRPC (cachesvc.v1.BlockService, with the tenant's bearer
// token); payload bytes go over the UCX data plane (client/ucx_transport.h), one leased block per
// request, never through gRPC.
//
//   auto client = BlockClient::Connect({.address = "127.0.0.1:50051", .token = "..."});
//   auto engine = (*client)->RegisterEngine(layout);       // once per layout
//   (*client)->Save(keys, payloads);                        // allocate, write, commit
//   auto n = (*client)->Load(keys, buffers);                // the longest cached prefix
//
// Every payload is checked: Save sends its XXH3-64 with the commit (the daemon verifies it
// against the bytes it received), Load checks each block against the checksum in its lease. A
// load that fails or does not match is a miss: Load returns how many leading blocks it read
// whole, and the engine recomputes the rest.
//
// Thread-safe: one BlockClient may be used by several threads (gRPC channels and the UCX
// transport are).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "client/grpc_status.h"
#include "client/local_transport.h"
#include "client/ucx_transport.h"
#include "proto/block_key.h"
#include "proto/layout.h"

namespace cachesvc::client {

struct BlockClientOptions {
  std::string address;                  // the daemon's gRPC address
  std::string token;                    // bearer token ("" in the daemon's open mode)
  std::string tls_root_pem;             // when set: TLS, trusting these roots
  std::string tls_server_name;          // overrides the name checked in the certificate
  std::string ucx_transports;           // UCX_TLS for the data plane ("" = UCX's default)
  bool ucx_detect_peer_failure = true;  // off to allow shared memory (docs/ucx.md)
  // Load and look up through the daemon's same-host data plane when it offers one and lets this
  // process in (docs/local.md); otherwise, or once it fails, gRPC and UCX as usual.
  bool use_local = true;
  std::chrono::milliseconds rpc_timeout{10000};
};

struct EngineInfo {
  std::string engine_id;
  std::uint64_t layout_fingerprint = 0;
  std::uint64_t raw_block_bytes = 0;
};

class BlockClient {
 public:
  // Creates the channel (no RPC yet). INVALID_ARGUMENT for an empty address.
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<BlockClient>> Connect(
      const BlockClientOptions& options);

  // Registers the layout and connects the data plane the daemon names. Later calls use this
  // engine.
  [[nodiscard]] absl::StatusOr<EngineInfo> RegisterEngine(const ModelLayout& layout);

  // Keys the daemon derives for `tokens` with the tenant's salt are not visible to clients; an
  // engine that hashes on its own passes its keys. How many leading blocks are stored.
  [[nodiscard]] absl::StatusOr<std::size_t> LookupPrefix(std::span<const BlockKey> keys);
  [[nodiscard]] absl::StatusOr<std::size_t> LookupPrefixTokens(
      std::span<const std::uint32_t> tokens);

  // Saves `payloads[i]` as block `keys[i]` (each exactly the codec's block length); blocks already
  // stored are skipped. Returns how many were newly committed. `keys` is best the request's
  // whole chain (the stored prefix is skipped), and `session_id` the session it is for: the
  // daemon's placement keeps a chain in order and knows whose blocks a closed session leaves.
  [[nodiscard]] absl::StatusOr<std::size_t> Save(
      std::span<const BlockKey> keys, std::span<const std::span<const std::byte>> payloads,
      v1::Codec codec = v1::CODEC_RAW, std::string_view session_id = {});
  // Loads the longest stored prefix of `keys` into `out[i]` (each at least the block length);
  // returns how many leading blocks arrived whole and matched their checksums. `session_id` as
  // for Save (the same-host data plane does not carry it).
  [[nodiscard]] absl::StatusOr<std::size_t> Load(std::span<const BlockKey> keys,
                                                 std::span<const std::span<std::byte>> out,
                                                 std::string_view session_id = {});

  // The raw RPCs, for tests and tools that need them.
  v1::BlockService::Stub& stub() { return *stub_; }
  std::unique_ptr<grpc::ClientContext> NewContext() const;
  UcxTransport* data_plane() { return ucx_.get(); }
  // The same-host data plane in use (null when none), and why there is none when the daemon
  // offered one (OK otherwise).
  LocalTransport* local_plane() { return local_.get(); }
  const absl::Status& local_status() const { return local_status_; }
  const EngineInfo& engine() const { return engine_; }

 private:
  explicit BlockClient(BlockClientOptions options) : options_(std::move(options)) {}

  BlockClientOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::BlockService::Stub> stub_;
  std::unique_ptr<UcxTransport> ucx_;
  std::unique_ptr<LocalTransport> local_;  // never reset once set: a broken one reports it
  absl::Status local_status_;
  EngineInfo engine_;

  bool LocalUsable() const { return local_ != nullptr && local_->health().ok(); }
  [[nodiscard]] absl::StatusOr<std::size_t> LoadLocal(std::span<const BlockKey> keys,
                                                      std::span<const std::span<std::byte>> out);
};

}  // namespace cachesvc::client
