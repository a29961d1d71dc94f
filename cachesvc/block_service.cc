#include "cachesvc/block_service.h"

#include <sys/random.h>

#include "cachesvc/grpc_util.h"
#include "cachesvc/session_ops.h"
#include "cachesvc/wire.h"
#include "fmt/format.h"
#include "kernels/tq_codec.h"

namespace cachesvc {
namespace {

// The payload length of one block of `layout` stored as `codec`.
[[nodiscard]] absl::StatusOr<std::uint64_t> BlockLength(const ModelLayout& layout,
                                                        kernels::CodecId codec) {
  if (codec == kernels::CodecId::kRaw) return layout.RawBlockBytes();
  kernels::ValueType type;
  if (layout.dtype == Dtype::kFp16) {
    type = kernels::ValueType::kFp16;
  } else if (layout.dtype == Dtype::kBf16) {
    type = kernels::ValueType::kBf16;
  } else {
    return absl::InvalidArgumentError(fmt::format("codec {} needs an fp16 or bf16 layout, not {}",
                                                  static_cast<int>(codec),
                                                  std::string(DtypeName(layout.dtype))));
  }
  if (!kernels::SupportedHeadDim(layout.head_dim)) {
    return absl::InvalidArgumentError(fmt::format("codec {} does not support head_dim {}",
                                                  static_cast<int>(codec), layout.head_dim));
  }
  return kernels::EncodedBytes(codec, type, layout.head_dim,
                               layout.ValuesPerBlock() / layout.head_dim);
}

std::string NewEngineId() {
  std::array<std::uint8_t, 16> bytes{};
  if (getrandom(bytes.data(), bytes.size(), 0) != static_cast<ssize_t>(bytes.size())) {
    bytes[0] ^= 1;  // practically unreachable; ids stay unique through the map check
  }
  std::string out;
  for (std::uint8_t b : bytes) out += fmt::format("{:02x}", b);
  return out;
}

}  // namespace

BlockServiceImpl::BlockServiceImpl(BlockStore* store, const TenantRegistry* tenants,
                                   std::string ucx_address, std::string local_socket,
                                   metrics::Registry* metrics, KnownLayouts* layouts,
                                   SessionOps* sessions)
    : store_(store),
      tenants_(tenants),
      ucx_address_(std::move(ucx_address)),
      local_socket_(std::move(local_socket)),
      metrics_(metrics),
      layouts_(layouts),
      sessions_(sessions) {}

grpc::ServerUnaryReactor* BlockServiceImpl::Finish(grpc::CallbackServerContext* context,
                                                   const char* method,
                                                   std::chrono::steady_clock::time_point start,
                                                   const absl::Status& status) {
  return FinishRpc(context, metrics_, method, start, status);
}

absl::StatusOr<BlockServiceImpl::Engine> BlockServiceImpl::EngineById(
    std::string_view engine_id) const {
  MutexLock lock(&mu_);
  auto it = engines_.find(std::string(engine_id));
  if (it == engines_.end()) {
    return absl::NotFoundError(fmt::format("engine '{}' is not registered", engine_id));
  }
  return it->second;
}

absl::StatusOr<BlockServiceImpl::Engine> BlockServiceImpl::FindEngine(
    const Tenant& tenant, const std::string& engine_id) const {
  auto engine = EngineById(engine_id);
  // Another tenant's engine is NOT_FOUND, never revealed.
  if (engine.ok() && engine->tenant != tenant.name()) {
    return absl::NotFoundError(fmt::format("engine '{}' is not registered", engine_id));
  }
  return engine;
}

grpc::ServerUnaryReactor* BlockServiceImpl::RegisterEngine(grpc::CallbackServerContext* context,
                                                           const v1::RegisterEngineRequest* req,
                                                           v1::RegisterEngineResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "RegisterEngine", start, tenant.status());
  auto layout = ModelLayout::FromProto(req->layout());
  if (!layout.ok()) return Finish(context, "RegisterEngine", start, layout.status());
  Engine engine{(*tenant)->name(), *layout, layout->Fingerprint()};
  std::string id;
  {
    MutexLock lock(&mu_);
    // One engine id per tenant and layout: engines restart and tools (cachectl prefix) register
    // for one call, and an id per registration would pile up until the daemon restarts.
    const auto key = std::make_pair(engine.tenant, engine.fingerprint);
    if (auto it = engine_by_layout_.find(key); it != engine_by_layout_.end()) {
      id = it->second;
    } else {
      do {
        id = NewEngineId();
      } while (engines_.contains(id));
      engines_.emplace(id, engine);
      engine_by_layout_.emplace(key, id);
    }
  }
  if (layouts_ != nullptr) layouts_->Add(engine.tenant, engine.layout);
  resp->set_engine_id(id);
  resp->set_layout_fingerprint(engine.fingerprint);
  resp->set_raw_block_bytes(layout->RawBlockBytes());
  resp->set_ucx_server_address(ucx_address_);
  resp->set_local_socket(local_socket_);
  return Finish(context, "RegisterEngine", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* BlockServiceImpl::LookupPrefix(grpc::CallbackServerContext* context,
                                                         const v1::LookupPrefixRequest* req,
                                                         v1::LookupPrefixResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "LookupPrefix", start, tenant.status());
  auto engine = FindEngine(**tenant, req->engine_id());
  if (!engine.ok()) return Finish(context, "LookupPrefix", start, engine.status());
  std::vector<BlockKey> keys;
  if (req->has_tokens()) {
    const auto& t = req->tokens().tokens();
    auto derived = DeriveBlockKeys(KeyChainSeed((*tenant)->salt(), engine->fingerprint),
                                   std::span<const std::uint32_t>(t.data(), t.size()),
                                   engine->layout.block_tokens);
    if (!derived.ok()) return Finish(context, "LookupPrefix", start, derived.status());
    keys = std::move(*derived);
  } else if (req->has_keys()) {
    auto parsed = KeysFromProto(req->keys().keys(), "keys");
    if (!parsed.ok()) return Finish(context, "LookupPrefix", start, parsed.status());
    keys = std::move(*parsed);
  } else {
    return Finish(context, "LookupPrefix", start,
                  absl::InvalidArgumentError("prefix: give tokens or keys"));
  }
  const auto places = store_->Lookup((*tenant)->name(), (*tenant)->salt(), keys);
  resp->set_cached_blocks(static_cast<std::uint32_t>(places.size()));
  if (req->has_tokens()) {
    for (const BlockKey& k : keys) resp->add_keys()->set_key(std::string(k.Bytes()));
  }
  for (const BlockPlace& p : places) {
    v1::BlockLocation* loc = resp->add_blocks();
    loc->mutable_key()->set_key(std::string(p.key.Bytes()));
    for (tiers::TierKind t :
         {tiers::TierKind::kHbm, tiers::TierKind::kHost, tiers::TierKind::kNvme}) {
      if ((p.tiers & TierBit(t)) != 0) loc->add_tiers(TierToProto(t));
    }
    loc->set_codec(CodecToProto(p.codec));
  }
  return Finish(context, "LookupPrefix", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* BlockServiceImpl::LeaseBlocks(grpc::CallbackServerContext* context,
                                                        const v1::LeaseBlocksRequest* req,
                                                        v1::LeaseBlocksResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "LeaseBlocks", start, tenant.status());
  auto engine = FindEngine(**tenant, req->engine_id());
  if (!engine.ok()) return Finish(context, "LeaseBlocks", start, engine.status());
  auto keys = KeysFromProto(req->keys(), "keys");
  if (!keys.ok()) return Finish(context, "LeaseBlocks", start, keys.status());
  auto leases = store_->Lease((*tenant)->name(), (*tenant)->salt(), *keys, /*one_read=*/true,
                              req->session_id());
  if (!leases.ok()) return Finish(context, "LeaseBlocks", start, leases.status());
  for (const ReadLease& l : *leases) {
    v1::Lease* out = resp->add_leases();
    out->set_lease_id(l.lease_id);
    out->mutable_key()->set_key(std::string(l.key.Bytes()));
    out->set_tier(TierToProto(l.tier));
    out->set_length(l.length);
    out->set_codec(CodecToProto(l.codec));
    out->set_expires_unix_ms(l.expires_unix_ms);
    out->set_checksum(l.checksum);
    out->set_ends_after_read(l.ends_after_read);
    out->set_layout_fingerprint(l.layout_fingerprint);
  }
  return Finish(context, "LeaseBlocks", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* BlockServiceImpl::ReleaseLeases(grpc::CallbackServerContext* context,
                                                          const v1::ReleaseLeasesRequest* req,
                                                          v1::ReleaseLeasesResponse*) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "ReleaseLeases", start, tenant.status());
  std::vector<std::uint64_t> ids(req->lease_ids().begin(), req->lease_ids().end());
  return Finish(context, "ReleaseLeases", start, store_->Release((*tenant)->name(), ids));
}

grpc::ServerUnaryReactor* BlockServiceImpl::AllocateBlocks(grpc::CallbackServerContext* context,
                                                           const v1::AllocateBlocksRequest* req,
                                                           v1::AllocateBlocksResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "AllocateBlocks", start, tenant.status());
  auto engine = FindEngine(**tenant, req->engine_id());
  if (!engine.ok()) return Finish(context, "AllocateBlocks", start, engine.status());
  auto keys = KeysFromProto(req->keys(), "keys");
  if (!keys.ok()) return Finish(context, "AllocateBlocks", start, keys.status());
  auto codec = CodecFromProto(req->codec());
  if (!codec.ok()) return Finish(context, "AllocateBlocks", start, codec.status());
  auto length = BlockLength(engine->layout, *codec);
  if (!length.ok()) return Finish(context, "AllocateBlocks", start, length.status());
  auto result = store_->Allocate((*tenant)->name(), (*tenant)->salt(), *keys, *codec, *length,
                                 engine->layout.RawBlockBytes(), engine->fingerprint,
                                 static_cast<std::uint64_t>((*tenant)->quota().host_bytes),
                                 req->session_id());
  if (!result.ok()) return Finish(context, "AllocateBlocks", start, result.status());
  for (const WriteLease& l : result->leases) {
    v1::Lease* out = resp->add_leases();
    out->set_lease_id(l.lease_id);
    out->mutable_key()->set_key(std::string(l.key.Bytes()));
    out->set_tier(v1::TIER_HOST);
    out->set_length(l.length);
    out->set_codec(CodecToProto(l.codec));
    out->set_expires_unix_ms(l.expires_unix_ms);
  }
  for (const BlockKey& k : result->already_stored) {
    resp->add_already_stored()->set_key(std::string(k.Bytes()));
  }
  return Finish(context, "AllocateBlocks", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* BlockServiceImpl::CommitBlocks(grpc::CallbackServerContext* context,
                                                         const v1::CommitBlocksRequest* req,
                                                         v1::CommitBlocksResponse* resp) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "CommitBlocks", start, tenant.status());
  if (req->commits_size() > kMaxKeys) {
    return Finish(context, "CommitBlocks", start,
                  absl::InvalidArgumentError(fmt::format("commits: at most {}", kMaxKeys)));
  }
  std::vector<CommitRequest> commits;
  for (const auto& c : req->commits()) commits.push_back({c.lease_id(), c.length(), c.checksum()});
  auto committed = store_->Commit((*tenant)->name(), commits);
  if (!committed.ok()) return Finish(context, "CommitBlocks", start, committed.status());
  for (const BlockKey& k : *committed) resp->add_committed()->set_key(std::string(k.Bytes()));
  return Finish(context, "CommitBlocks", start, absl::OkStatus());
}

grpc::ServerUnaryReactor* BlockServiceImpl::TagBlocks(grpc::CallbackServerContext* context,
                                                      const v1::TagBlocksRequest* req,
                                                      v1::TagBlocksResponse* /*resp*/) {
  const auto start = std::chrono::steady_clock::now();
  auto tenant = CallerTenant(context, *tenants_);
  if (!tenant.ok()) return Finish(context, "TagBlocks", start, tenant.status());
  if (sessions_ == nullptr) {
    return Finish(context, "TagBlocks", start,
                  absl::UnimplementedError("TagBlocks: this daemon serves no sessions"));
  }
  auto keys = KeysFromProto(req->keys(), "keys");
  if (!keys.ok()) return Finish(context, "TagBlocks", start, keys.status());
  return Finish(context, "TagBlocks", start, sessions_->Tag(**tenant, req->session_id(), *keys));
}

}  // namespace cachesvc
