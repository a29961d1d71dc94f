#include "client/block_client.h"

#include <grpcpp/grpcpp.h>

#include "client/grpc_channel.h"
#include "fmt/format.h"
#include "proto/xxh3.h"

namespace cachesvc::client {

absl::StatusOr<std::unique_ptr<BlockClient>> BlockClient::Connect(
    const BlockClientOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("BlockClient: no address");
  std::unique_ptr<BlockClient> c(new BlockClient(options));
  c->channel_ = MakeChannel(options.address, options.tls_root_pem, options.tls_server_name);
  c->stub_ = v1::BlockService::NewStub(c->channel_);
  return c;
}

std::unique_ptr<grpc::ClientContext> BlockClient::NewContext() const {
  auto ctx = std::make_unique<grpc::ClientContext>();
  ctx->set_deadline(std::chrono::system_clock::now() + options_.rpc_timeout);
  if (!options_.token.empty()) ctx->AddMetadata("authorization", "Bearer " + options_.token);
  return ctx;
}

absl::StatusOr<EngineInfo> BlockClient::RegisterEngine(const ModelLayout& layout) {
  v1::RegisterEngineRequest req;
  *req.mutable_layout() = layout.ToProto();
  req.add_transports(v1::TRANSPORT_UCX);
  v1::RegisterEngineResponse resp;
  auto ctx = NewContext();
  if (auto st = FromGrpc(stub_->RegisterEngine(ctx.get(), req, &resp)); !st.ok()) return st;
  engine_ = EngineInfo{resp.engine_id(), resp.layout_fingerprint(), resp.raw_block_bytes()};
  if (ucx_ == nullptr && !resp.ucx_server_address().empty()) {
    UcxTransportOptions ucx;
    ucx.transports = options_.ucx_transports;
    ucx.detect_peer_failure = options_.ucx_detect_peer_failure;
    auto t = UcxTransport::Connect(resp.ucx_server_address(), ucx);
    if (!t.ok()) return t.status();
    ucx_ = std::move(*t);
  }
  if (options_.use_local && local_ == nullptr && !resp.local_socket().empty()) {
    auto local =
        LocalTransport::Connect(resp.local_socket(), engine_.engine_id, options_.rpc_timeout);
    if (local.ok()) {
      local_ = std::move(*local);
    } else {
      local_status_ = local.status();  // another host or another user: UCX serves instead
    }
  }
  return engine_;
}

absl::StatusOr<std::size_t> BlockClient::LookupPrefix(std::span<const BlockKey> keys) {
  if (LocalUsable()) {
    auto n = local_->Lookup(keys);
    if (n.ok() || local_->health().ok()) return n;  // else the connection broke: ask over gRPC
  }
  v1::LookupPrefixRequest req;
  req.set_engine_id(engine_.engine_id);
  for (const BlockKey& k : keys) req.mutable_keys()->add_keys()->set_key(std::string(k.Bytes()));
  v1::LookupPrefixResponse resp;
  auto ctx = NewContext();
  if (auto st = FromGrpc(stub_->LookupPrefix(ctx.get(), req, &resp)); !st.ok()) return st;
  return resp.cached_blocks();
}

absl::StatusOr<std::size_t> BlockClient::LookupPrefixTokens(std::span<const std::uint32_t> tokens) {
  if (LocalUsable()) {
    auto keys = local_->Keys(tokens);
    if (keys.ok()) return keys->cached_blocks;
    if (local_->health().ok()) return keys.status();  // else the connection broke: ask over gRPC
  }
  v1::LookupPrefixRequest req;
  req.set_engine_id(engine_.engine_id);
  req.mutable_tokens()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  v1::LookupPrefixResponse resp;
  auto ctx = NewContext();
  if (auto st = FromGrpc(stub_->LookupPrefix(ctx.get(), req, &resp)); !st.ok()) return st;
  return resp.cached_blocks();
}

absl::StatusOr<std::size_t> BlockClient::Save(std::span<const BlockKey> keys,
                                              std::span<const std::span<const std::byte>> payloads,
                                              v1::Codec codec, std::string_view session_id) {
  if (keys.size() != payloads.size()) {
    return absl::InvalidArgumentError(
        fmt::format("Save: {} keys but {} payloads", keys.size(), payloads.size()));
  }
  if (ucx_ == nullptr) return absl::FailedPreconditionError("Save: no data plane (RegisterEngine)");
  v1::AllocateBlocksRequest alloc;
  alloc.set_engine_id(engine_.engine_id);
  alloc.set_codec(codec);
  alloc.set_session_id(std::string(session_id));
  for (const BlockKey& k : keys) alloc.add_keys()->set_key(std::string(k.Bytes()));
  v1::AllocateBlocksResponse leases;
  {
    auto ctx = NewContext();
    if (auto st = FromGrpc(stub_->AllocateBlocks(ctx.get(), alloc, &leases)); !st.ok()) return st;
  }
  if (leases.leases_size() == 0) return 0;
  // Leases come in key order, skipping blocks already stored.
  std::vector<WriteOp> writes;
  v1::CommitBlocksRequest commit;
  std::size_t next = 0;
  for (const v1::Lease& lease : leases.leases()) {
    while (next < keys.size() && keys[next].Bytes() != lease.key().key()) ++next;
    if (next == keys.size()) return absl::InternalError("AllocateBlocks answered an unknown key");
    const std::span<const std::byte> payload = payloads[next];
    if (payload.size() != lease.length()) {
      return absl::InvalidArgumentError(
          fmt::format("Save: block {} is {} bytes, the layout and codec make {}", next,
                      payload.size(), lease.length()));
    }
    writes.push_back(WriteOp{lease.lease_id(), payload.data(), payload.size(), nullptr});
    auto* c = commit.add_commits();
    c->set_lease_id(lease.lease_id());
    c->set_length(payload.size());
    c->set_checksum(XXH3_64bits(payload.data(), payload.size()));
  }
  if (absl::Status st = ucx_->WriteMany(writes); !st.ok()) {
    // Give the slots back now rather than when the leases time out.
    v1::ReleaseLeasesRequest release;
    for (const WriteOp& w : writes) release.add_lease_ids(w.lease_id);
    v1::ReleaseLeasesResponse released;
    auto ctx = NewContext();
    (void)stub_->ReleaseLeases(ctx.get(), release, &released);
    return st;
  }
  v1::CommitBlocksResponse committed;
  auto ctx = NewContext();
  if (auto st = FromGrpc(stub_->CommitBlocks(ctx.get(), commit, &committed)); !st.ok()) return st;
  return static_cast<std::size_t>(committed.committed_size());
}

absl::StatusOr<std::size_t> BlockClient::Load(std::span<const BlockKey> keys,
                                              std::span<const std::span<std::byte>> out,
                                              std::string_view session_id) {
  if (keys.size() != out.size()) {
    return absl::InvalidArgumentError(
        fmt::format("Load: {} keys but {} buffers", keys.size(), out.size()));
  }
  if (LocalUsable()) {
    auto n = LoadLocal(keys, out);
    if (n.ok() || local_->health().ok()) return n;  // else the connection broke: load over UCX
  }
  if (ucx_ == nullptr) return absl::FailedPreconditionError("Load: no data plane (RegisterEngine)");
  v1::LeaseBlocksRequest req;
  req.set_engine_id(engine_.engine_id);
  req.set_session_id(std::string(session_id));
  for (const BlockKey& k : keys) req.add_keys()->set_key(std::string(k.Bytes()));
  v1::LeaseBlocksResponse leases;
  {
    auto ctx = NewContext();
    if (auto st = FromGrpc(stub_->LeaseBlocks(ctx.get(), req, &leases)); !st.ok()) return st;
  }
  const std::size_t n = static_cast<std::size_t>(leases.leases_size());
  std::vector<ReadOp> reads(n);
  std::vector<std::size_t> received(n, 0);
  std::vector<absl::Status> statuses(n);
  for (std::size_t i = 0; i < n; ++i) {
    reads[i] = ReadOp{leases.leases(static_cast<int>(i)).lease_id(), out[i].data(), out[i].size(),
                      &received[i], &statuses[i]};
  }
  (void)ucx_->ReadMany(reads);  // per-op statuses below
  std::size_t whole = 0;
  while (whole < n) {
    const v1::Lease& lease = leases.leases(static_cast<int>(whole));
    if (!statuses[whole].ok() || received[whole] != lease.length() ||
        XXH3_64bits(out[whole].data(), received[whole]) != lease.checksum()) {
      break;
    }
    ++whole;
  }
  // Leases the daemon did not end itself (reads that failed, or a daemon whose leases outlive the
  // read) go back now; they would time out otherwise.
  v1::ReleaseLeasesRequest release;
  for (std::size_t i = 0; i < n; ++i) {
    const v1::Lease& lease = leases.leases(static_cast<int>(i));
    if (!lease.ends_after_read() || !statuses[i].ok()) release.add_lease_ids(lease.lease_id());
  }
  if (release.lease_ids_size() > 0) {
    v1::ReleaseLeasesResponse released;
    auto ctx = NewContext();
    (void)stub_->ReleaseLeases(ctx.get(), release, &released);
  }
  return whole;
}

absl::StatusOr<std::size_t> BlockClient::LoadLocal(std::span<const BlockKey> keys,
                                                   std::span<const std::span<std::byte>> out) {
  auto leases = local_->Lease(keys);
  if (!leases.ok()) return leases.status();
  std::size_t whole = 0;
  while (whole < leases->size() && local_->Read((*leases)[whole], out[whole]).ok()) ++whole;
  std::vector<std::uint64_t> ids;
  ids.reserve(leases->size());
  for (const local::Lease& l : *leases) ids.push_back(l.lease_id);
  local_->Release(ids);
  return whole;
}

}  // namespace cachesvc::client
