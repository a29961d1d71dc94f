#include "client/kv_connector.h"

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <utility>

#include "fmt/format.h"
#include "kernels/tq_codec.h"
#include "proto/codec.h"
#include "proto/xxh3.h"

namespace cachesvc::client {
namespace {

// Blocks per BlockClient::Save call: bounds one AllocateBlocks reservation and one UCX batch
// (which must finish within the transport's 5 s op timeout on a slow link).
constexpr std::size_t kSaveChunkBlocks = 32;

kernels::ValueType ValueTypeOf(Dtype dtype) {
  return dtype == Dtype::kBf16 ? kernels::ValueType::kBf16 : kernels::ValueType::kFp16;
}

// Vectors of head_dim values in one block.
std::uint64_t VectorsPerBlock(const ModelLayout& layout) {
  return layout.ValuesPerBlock() / layout.head_dim;
}

// The codec can store blocks of `layout` (TQ needs fp16/bf16 and a supported head_dim).
[[nodiscard]] absl::Status CheckCodec(const ModelLayout& layout, kernels::CodecId codec) {
  if (codec == kernels::CodecId::kRaw) return absl::OkStatus();
  if (layout.dtype != Dtype::kFp16 && layout.dtype != Dtype::kBf16) {
    return absl::InvalidArgumentError(fmt::format("codec {} needs an fp16 or bf16 layout, not {}",
                                                  std::string(kernels::CodecName(codec)),
                                                  std::string(DtypeName(layout.dtype))));
  }
  if (!kernels::SupportedHeadDim(layout.head_dim)) {
    return absl::InvalidArgumentError(fmt::format("codec {} does not support head_dim {}",
                                                  std::string(kernels::CodecName(codec)),
                                                  layout.head_dim));
  }
  return absl::OkStatus();
}

// The stored length of one block of `layout` in `codec`, or an error when the codec cannot hold
// this layout.
[[nodiscard]] absl::StatusOr<std::uint64_t> ExpectedLength(const ModelLayout& layout,
                                                           kernels::CodecId codec) {
  if (absl::Status st = CheckCodec(layout, codec); !st.ok()) return st;
  if (codec == kernels::CodecId::kRaw) return layout.RawBlockBytes();
  return kernels::EncodedBytes(codec, ValueTypeOf(layout.dtype), layout.head_dim,
                               VectorsPerBlock(layout));
}

}  // namespace

absl::StatusOr<std::shared_ptr<KvConnector::Connection>> KvConnector::OpenConnection(
    const BlockClientOptions& options, const ModelLayout& layout) {
  auto client = BlockClient::Connect(options);
  if (!client.ok()) return client.status();
  auto engine = (*client)->RegisterEngine(layout);
  if (!engine.ok()) return engine.status();
  if (engine->layout_fingerprint != layout.Fingerprint() ||
      engine->raw_block_bytes != layout.RawBlockBytes()) {
    return absl::FailedPreconditionError(fmt::format(
        "the daemon registered the layout as fingerprint {:016x} with {}-byte blocks; this "
        "connector computes {:016x} and {} bytes (version skew?)",
        engine->layout_fingerprint, engine->raw_block_bytes, layout.Fingerprint(),
        layout.RawBlockBytes()));
  }
  if ((*client)->data_plane() == nullptr) {
    return absl::FailedPreconditionError("the daemon named no UCX data plane");
  }
  auto conn = std::make_shared<Connection>();
  conn->client = std::move(*client);
  conn->engine = *engine;
  return conn;
}

absl::StatusOr<std::unique_ptr<KvConnector>> KvConnector::Create(
    const KvConnectorOptions& options) {
  if (absl::Status st = options.layout.Validate(); !st.ok()) return st;
  if (!kernels::CodecFromId(static_cast<std::uint32_t>(options.codec))) {
    return absl::InvalidArgumentError(
        fmt::format("unknown codec id {}", static_cast<int>(options.codec)));
  }
  if (absl::Status st = CheckCodec(options.layout, options.codec); !st.ok()) return st;
  if (options.key_mode != KeyMode::kService && options.key_mode != KeyMode::kClient) {
    return absl::InvalidArgumentError(
        fmt::format("unknown key mode {}", static_cast<int>(options.key_mode)));
  }
  auto conn = OpenConnection(options.client, options.layout);
  if (!conn.ok()) return conn.status();
  return std::unique_ptr<KvConnector>(new KvConnector(options, std::move(*conn)));
}

KvConnector::KvConnector(const KvConnectorOptions& options, std::shared_ptr<Connection> connection)
    : layout_(options.layout),
      codec_(options.codec),
      key_mode_(options.key_mode),
      seed_(KeyChainSeed("", options.layout.Fingerprint())),
      raw_block_bytes_(options.layout.RawBlockBytes()),
      client_options_(options.client),
      conn_(std::move(connection)) {
  saver_ = std::thread([this] { SaveLoop(); });
}

absl::StatusOr<std::shared_ptr<KvConnector::Connection>> KvConnector::CurrentConnection() {
  MutexLock lock(&conn_mu_);
  if (!conn_->broken.load() && conn_->client->data_plane()->health().ok()) return conn_;
  // Held while reconnecting: concurrent callers wait for this attempt rather than start their
  // own (each is bounded by the connect and RPC timeouts).
  auto fresh = OpenConnection(client_options_, layout_);
  if (!fresh.ok()) {
    return absl::Status(fresh.status().code(),
                        fmt::format("reconnecting to {}: {}", client_options_.address,
                                    std::string(fresh.status().message())));
  }
  conn_ = std::move(*fresh);
  return conn_;
}

absl::Status KvConnector::Note(Connection& conn, absl::Status st) {
  if (st.code() == absl::StatusCode::kUnavailable ||
      st.code() == absl::StatusCode::kDeadlineExceeded ||
      st.code() == absl::StatusCode::kNotFound) {
    conn.broken.store(true);
  }
  return st;
}

EngineInfo KvConnector::engine() const {
  MutexLock lock(&conn_mu_);
  return conn_->engine;
}

BlockClient& KvConnector::block_client() {
  MutexLock lock(&conn_mu_);
  return *conn_->client;
}

KvConnector::~KvConnector() {
  {
    MutexLock lock(&mu_);
    stop_ = true;
  }
  cv_.SignalAll();
  saver_.join();
}

absl::Status KvConnector::RegisterPagedCache(PagedKvCache cache) {
  if (!open_.items.empty()) {
    return absl::FailedPreconditionError("RegisterPagedCache: a save step is open");
  }
  if (absl::Status st = ValidatePagedKv(layout_, cache); !st.ok()) return st;
  cache_ = std::move(cache);
  return absl::OkStatus();
}

absl::StatusOr<std::vector<BlockKey>> KvConnector::Keys(Connection& conn,
                                                        std::span<const std::uint32_t> tokens,
                                                        std::size_t* cached_blocks) {
  const std::size_t full = tokens.size() / layout_.block_tokens;
  tokens = tokens.first(full * layout_.block_tokens);
  if (key_mode_ == KeyMode::kClient) {
    // DeriveBlockKeys fails only for block_tokens 0, which Validate() excluded.
    std::vector<BlockKey> keys = *DeriveBlockKeys(seed_, tokens, layout_.block_tokens);
    if (cached_blocks != nullptr) {
      *cached_blocks = 0;
      if (!keys.empty()) {
        auto n = conn.client->LookupPrefix(keys);
        if (!n.ok()) return Note(conn, n.status());
        *cached_blocks = *n;
      }
    }
    return keys;
  }
  if (full == 0) {
    if (cached_blocks != nullptr) *cached_blocks = 0;
    return std::vector<BlockKey>();
  }
  if (LocalTransport* local = conn.client->local_plane();
      local != nullptr && local->health().ok()) {
    auto derived = local->Keys(tokens);
    if (derived.ok() && derived->keys.size() == full) {
      if (cached_blocks != nullptr) *cached_blocks = derived->cached_blocks;
      return std::move(derived->keys);
    }
    if (derived.ok()) {
      return absl::InternalError(
          fmt::format("the daemon derived {} keys for {} full blocks", derived->keys.size(), full));
    }
    if (local->health().ok()) return Note(conn, derived.status());
    // The local connection broke: ask over gRPC.
  }
  v1::LookupPrefixRequest req;
  req.set_engine_id(conn.engine.engine_id);
  req.mutable_tokens()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  v1::LookupPrefixResponse resp;
  auto ctx = conn.client->NewContext();
  if (absl::Status st = FromGrpc(conn.client->stub().LookupPrefix(ctx.get(), req, &resp));
      !st.ok()) {
    return Note(conn, st);
  }
  if (static_cast<std::size_t>(resp.keys_size()) != full) {
    return absl::FailedPreconditionError(
        fmt::format("the daemon returned {} keys for {} full blocks (a daemon without "
                    "LookupPrefixResponse.keys? use KeyMode::kClient)",
                    resp.keys_size(), full));
  }
  std::vector<BlockKey> keys;
  keys.reserve(full);
  for (const v1::BlockKey& k : resp.keys()) {
    auto key = BlockKey::FromBytes(k.key());
    if (!key.ok())
      return absl::InternalError(
          fmt::format("the daemon sent a bad key: {}", std::string(key.status().message())));
    keys.push_back(*key);
  }
  if (cached_blocks != nullptr) *cached_blocks = resp.cached_blocks();
  return keys;
}

absl::StatusOr<std::vector<BlockKey>> KvConnector::BlockKeys(
    std::span<const std::uint32_t> tokens) {
  auto conn = CurrentConnection();
  if (!conn.ok()) return conn.status();
  return Keys(**conn, tokens, nullptr);
}

absl::StatusOr<std::size_t> KvConnector::LookupPrefix(std::span<const std::uint32_t> tokens) {
  auto conn = CurrentConnection();
  if (!conn.ok()) return conn.status();
  std::size_t cached = 0;
  if (auto keys = Keys(**conn, tokens, &cached); !keys.ok()) return keys.status();
  return cached * layout_.block_tokens;
}

absl::Status KvConnector::CheckBlockIds(std::span<const std::uint32_t> tokens,
                                        std::span<const std::uint32_t> ids) const {
  if (!cache_.has_value()) {
    return absl::FailedPreconditionError("no paged KV cache registered (RegisterPagedCache)");
  }
  const std::size_t full = tokens.size() / layout_.block_tokens;
  if (ids.size() > full) {
    return absl::InvalidArgumentError(
        fmt::format("{} page ids for {} tokens, which make {} full blocks of {}", ids.size(),
                    tokens.size(), full, layout_.block_tokens));
  }
  std::vector<bool> seen(cache_->num_blocks(), false);
  for (std::size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] >= cache_->num_blocks()) {
      return absl::InvalidArgumentError(
          fmt::format("page id {} (block {}) is out of range: the cache has {} pages", ids[i], i,
                      cache_->num_blocks()));
    }
    if (seen[ids[i]]) {
      return absl::InvalidArgumentError(
          fmt::format("page id {} is named twice (block {})", ids[i], i));
    }
    seen[ids[i]] = true;
  }
  return absl::OkStatus();
}

absl::StatusOr<LoadResult> KvConnector::Load(std::span<const std::uint32_t> tokens,
                                             std::span<const std::uint32_t> dst_block_ids) {
  if (absl::Status st = CheckBlockIds(tokens, dst_block_ids); !st.ok()) return st;
  LoadResult result;
  const std::size_t n = dst_block_ids.size();
  if (n == 0) return result;
  auto conn_or = CurrentConnection();
  if (!conn_or.ok()) return conn_or.status();
  Connection& conn = **conn_or;
  BlockClient& client = *conn.client;
  auto keys_or = Keys(conn, tokens.first(n * std::size_t{layout_.block_tokens}), nullptr);
  if (!keys_or.ok()) return keys_or.status();
  const std::vector<BlockKey>& keys = *keys_or;
  UcxTransport* ucx = client.data_plane();

  // Leases from the same-host data plane when the daemon offers it (docs/local.md), else over
  // gRPC. Local leases are put in the same form; their bytes are then copied out of the mapping.
  LocalTransport* local = client.local_plane();
  if (local != nullptr && !local->health().ok()) local = nullptr;
  std::vector<local::Lease> local_leases;
  v1::LeaseBlocksResponse leases;
  if (local != nullptr) {
    auto granted_local = local->Lease(keys);
    if (!granted_local.ok()) return Note(conn, granted_local.status());
    local_leases = std::move(*granted_local);
    for (std::size_t i = 0; i < local_leases.size(); ++i) {
      const local::Lease& l = local_leases[i];
      v1::Lease* out = leases.add_leases();
      out->set_lease_id(l.lease_id);
      out->mutable_key()->set_key(std::string(keys[i].Bytes()));
      out->set_length(l.length);
      out->set_codec(CodecToProto(static_cast<kernels::CodecId>(l.codec)));
      out->set_checksum(l.checksum);
      out->set_layout_fingerprint(l.layout_fingerprint);
    }
  } else {
    v1::LeaseBlocksRequest req;
    req.set_engine_id(conn.engine.engine_id);
    for (const BlockKey& k : keys) req.add_keys()->set_key(std::string(k.Bytes()));
    auto ctx = client.NewContext();
    if (absl::Status st = FromGrpc(client.stub().LeaseBlocks(ctx.get(), req, &leases)); !st.ok()) {
      return Note(conn, st);
    }
  }
  // Every lease ends here, whatever happens below (otherwise they would pin the daemon's slots
  // until they time out).
  auto release = [&] {
    if (leases.leases_size() == 0) return;
    if (local != nullptr) {
      std::vector<std::uint64_t> ids;
      for (const local::Lease& l : local_leases) ids.push_back(l.lease_id);
      local->Release(ids);
      return;
    }
    v1::ReleaseLeasesRequest rel;
    for (const v1::Lease& l : leases.leases()) rel.add_lease_ids(l.lease_id());
    v1::ReleaseLeasesResponse released;
    auto ctx = client.NewContext();
    (void)client.stub().ReleaseLeases(ctx.get(), rel, &released);
  };
  const std::size_t granted =
      std::min<std::size_t>(static_cast<std::size_t>(leases.leases_size()), n);
  if (granted < n) result.miss_reason = fmt::format("block {} is not cached", granted);
  if (before_read_hook_) before_read_hook_();

  // What each block claims to be, checked before anything is read.
  std::size_t readable = 0;
  std::vector<kernels::CodecId> codecs;
  std::vector<std::size_t> offsets;
  std::size_t staging_bytes = 0;
  for (; readable < granted; ++readable) {
    const v1::Lease& lease = leases.leases(static_cast<int>(readable));
    if (lease.key().key() != keys[readable].Bytes()) {
      result.miss_reason = fmt::format("block {}: the daemon leased another key", readable);
      break;
    }
    if (lease.layout_fingerprint() != 0 && lease.layout_fingerprint() != layout_.Fingerprint()) {
      result.miss_reason =
          fmt::format("block {}: saved for layout {:016x}, this engine's is {:016x}", readable,
                      lease.layout_fingerprint(), layout_.Fingerprint());
      break;
    }
    auto codec = CodecFromProto(lease.codec());
    if (!codec.ok()) {
      result.miss_reason =
          fmt::format("block {}: {}", readable, std::string(codec.status().message()));
      break;
    }
    auto expected = ExpectedLength(layout_, *codec);
    if (!expected.ok()) {
      result.miss_reason =
          fmt::format("block {}: {}", readable, std::string(expected.status().message()));
      break;
    }
    if (lease.length() != *expected) {
      result.miss_reason =
          fmt::format("block {}: stored as {} bytes of {}, the layout makes {}", readable,
                      lease.length(), std::string(kernels::CodecName(*codec)), *expected);
      break;
    }
    codecs.push_back(*codec);
    offsets.push_back(staging_bytes);
    staging_bytes += lease.length();
  }

  // Read into staging; nothing reaches the pages before it is checked.
  auto staging =
      std::make_unique_for_overwrite<std::byte[]>(std::max<std::size_t>(staging_bytes, 1));
  std::vector<ReadOp> reads(readable);
  std::vector<std::size_t> received(readable, 0);
  std::vector<absl::Status> statuses(readable);
  for (std::size_t i = 0; i < readable; ++i) {
    const v1::Lease& lease = leases.leases(static_cast<int>(i));
    reads[i] = ReadOp{lease.lease_id(), staging.get() + offsets[i], lease.length(), &received[i],
                      &statuses[i]};
  }
  if (local != nullptr) {
    // Copied out of the mapping; checked below like a UCX read.
    for (std::size_t i = 0; i < readable; ++i) {
      statuses[i] = local->Copy(local_leases[i],
                                std::span(staging.get() + offsets[i], local_leases[i].length));
      if (statuses[i].ok()) received[i] = local_leases[i].length;
    }
  } else if (absl::Status st = ucx->ReadMany(reads); !st.ok() && !ucx->health().ok()) {
    // The data plane is gone (daemon died or stopped answering): an error, not a miss.
    conn.broken.store(true);
    release();
    return absl::Status(st.code(),
                        fmt::format("Load: data plane failed: {}", std::string(st.message())));
  }

  if (after_read_hook_) {
    for (std::size_t i = 0; i < readable; ++i) {
      after_read_hook_(i, std::span(staging.get() + offsets[i], received[i]));
    }
  }
  std::size_t good = 0;
  std::vector<std::vector<std::byte>> decoded(readable);  // TQ blocks decoded on the CPU
  const bool gpu = cache_->memory == KvMemory::kCuda;
  const bool gpu_decode = gpu && PagesAreCanonicalSlabs(layout_, *cache_);
  // TQ blocks of the first TQ block's codec and seed decode on the GPU (one kernel launch).
  std::optional<std::pair<kernels::CodecId, std::uint64_t>> gpu_kind;
  for (; good < readable; ++good) {
    const v1::Lease& lease = leases.leases(static_cast<int>(good));
    const std::span<const std::byte> bytes(staging.get() + offsets[good], received[good]);
    if (!statuses[good].ok()) {
      result.miss_reason = fmt::format("block {}: {}", good, std::string(statuses[good].message()));
      break;
    }
    if (received[good] != lease.length()) {
      result.miss_reason =
          fmt::format("block {}: received {} of {} bytes", good, received[good], lease.length());
      break;
    }
    if (XXH3_64bits(bytes.data(), bytes.size()) != lease.checksum()) {
      result.miss_reason = fmt::format("block {}: checksum mismatch", good);
      break;
    }
    if (codecs[good] == kernels::CodecId::kRaw) continue;
    kernels::BlockHeader header;
    if (kernels::CodecStatus cs = kernels::ReadHeader(bytes, &header); !cs.ok()) {
      result.miss_reason = fmt::format("block {}: {}", good, cs.message);
      break;
    }
    if (header.codec != codecs[good] || header.type != ValueTypeOf(layout_.dtype) ||
        header.head_dim != layout_.head_dim || header.num_vectors != VectorsPerBlock(layout_)) {
      result.miss_reason = fmt::format(
          "block {}: header says {} {} head_dim {} x {} vectors, expected {} {} head_dim {} x {}",
          good, std::string(kernels::CodecName(header.codec)), static_cast<int>(header.type),
          header.head_dim, header.num_vectors, std::string(kernels::CodecName(codecs[good])),
          static_cast<int>(ValueTypeOf(layout_.dtype)), layout_.head_dim, VectorsPerBlock(layout_));
      break;
    }
    if (gpu_decode && !gpu_kind) gpu_kind.emplace(header.codec, header.seed);
    if (gpu_decode && *gpu_kind == std::make_pair(header.codec, header.seed)) continue;
    decoded[good].resize(raw_block_bytes_);
    if (kernels::CodecStatus cs = kernels::Decode(codecs[good], ValueTypeOf(layout_.dtype),
                                                  layout_.head_dim, bytes, decoded[good]);
        !cs.ok()) {
      result.miss_reason = fmt::format("block {}: {}", good, cs.message);
      break;
    }
  }
  release();

  // Scatter the checked prefix. On the GPU, TQ blocks with the common seed decode straight into
  // canonical-slab pages; everything else goes through host canonical bytes.
  std::vector<std::uint32_t> host_ids;
  std::vector<std::span<const std::byte>> host_blocks;
  std::vector<std::uint32_t> gpu_ids;
  std::vector<std::span<const std::byte>> gpu_blocks;
  for (std::size_t i = 0; i < good; ++i) {
    const std::span<const std::byte> stored(staging.get() + offsets[i], received[i]);
    if (codecs[i] == kernels::CodecId::kRaw) {
      host_ids.push_back(dst_block_ids[i]);
      host_blocks.push_back(stored);
    } else if (!decoded[i].empty()) {
      host_ids.push_back(dst_block_ids[i]);
      host_blocks.push_back(decoded[i]);
    } else {
      gpu_ids.push_back(dst_block_ids[i]);
      gpu_blocks.push_back(stored);
    }
  }
  if (absl::Status st = ScatterBlocks(host_ids, host_blocks); !st.ok()) return st;
  if (!gpu_blocks.empty()) {
    auto ok_blocks = DecodeIntoPagesCuda(layout_, *cache_, gpu_kind->first, gpu_kind->second,
                                         gpu_blocks, gpu_ids);
    if (!ok_blocks.ok()) return ok_blocks.status();
    if (*ok_blocks < gpu_blocks.size()) {
      // The CPU checked these headers, so this is a kernel fault; the pages of the refused block
      // hold NaN: report it and everything after it as not loaded.
      const std::uint32_t bad_page = gpu_ids[*ok_blocks];
      const auto it = std::find(dst_block_ids.begin(), dst_block_ids.end(), bad_page);
      good = static_cast<std::size_t>(it - dst_block_ids.begin());
      result.miss_reason = fmt::format("block {}: the GPU decoder refused it", good);
    }
  }
  result.blocks = good;
  result.tokens = good * layout_.block_tokens;
  return result;
}

absl::Status KvConnector::ScatterBlocks(std::span<const std::uint32_t> block_ids,
                                        std::span<const std::span<const std::byte>> canonical) {
  const std::size_t layer_bytes = CanonicalLayerBytes(layout_);
  if (cache_->memory == KvMemory::kCpu) {
    for (std::size_t i = 0; i < block_ids.size(); ++i) {
      for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
        ScatterLayerCpu(layout_, *cache_, l, block_ids[i],
                        canonical[i].subspan(l * layer_bytes, layer_bytes));
      }
    }
    return absl::OkStatus();
  }
  std::vector<std::span<const std::byte>> layers(block_ids.size());
  for (std::uint32_t l = 0; l < layout_.num_layers; ++l) {
    for (std::size_t i = 0; i < block_ids.size(); ++i) {
      layers[i] = canonical[i].subspan(l * layer_bytes, layer_bytes);
    }
    if (absl::Status st = ScatterLayerCuda(layout_, *cache_, l, block_ids, layers); !st.ok()) {
      return st;
    }
  }
  return absl::OkStatus();
}

// ---- Save ----------------------------------------------------------------------------------

absl::Status KvConnector::BeginSave(std::span<const std::uint32_t> tokens,
                                    std::span<const std::uint32_t> block_ids,
                                    const SaveOptions& options) {
  if (absl::Status st = CheckBlockIds(tokens, block_ids); !st.ok()) return st;
  if (options.first_block > block_ids.size()) {
    return absl::InvalidArgumentError(
        fmt::format("BeginSave: first_block {} is past the {} blocks named", options.first_block,
                    block_ids.size()));
  }
  if (!open_.items.empty() && open_.layers_left != layout_.num_layers) {
    return absl::FailedPreconditionError(
        "BeginSave: this step's layers are being saved; call it before the first SaveLayer");
  }
  if (open_.items.empty()) {
    open_.layer_done.assign(layout_.num_layers, false);
    open_.layers_left = layout_.num_layers;
  }
  SaveItem item;
  const auto request_tokens = tokens.first(block_ids.size() * std::size_t{layout_.block_tokens});
  item.tokens.assign(request_tokens.begin(), request_tokens.end());
  item.block_ids.assign(block_ids.begin() + static_cast<std::ptrdiff_t>(options.first_block),
                        block_ids.end());
  item.first_block = options.first_block;
  item.session_id = options.session_id;
  item.raw.resize(item.block_ids.size());
  for (auto& r : item.raw) r.resize(raw_block_bytes_);
  open_.items.push_back(std::move(item));
  return absl::OkStatus();
}

absl::Status KvConnector::SaveLayer(std::uint32_t layer) {
  if (layer >= layout_.num_layers) {
    return absl::InvalidArgumentError(
        fmt::format("SaveLayer: layer {} of a {}-layer model", layer, layout_.num_layers));
  }
  if (open_.items.empty()) return absl::OkStatus();
  if (open_.layer_done[layer]) {
    return absl::FailedPreconditionError(
        fmt::format("SaveLayer: layer {} was already saved in this step", layer));
  }
  const std::size_t layer_bytes = CanonicalLayerBytes(layout_);
  for (SaveItem& item : open_.items) {
    if (cache_->memory == KvMemory::kCpu) {
      for (std::size_t i = 0; i < item.block_ids.size(); ++i) {
        GatherLayerCpu(layout_, *cache_, layer, item.block_ids[i],
                       std::span(item.raw[i]).subspan(layer * layer_bytes, layer_bytes));
      }
    } else {
      std::vector<std::span<std::byte>> dst;
      for (auto& r : item.raw)
        dst.push_back(std::span(r).subspan(layer * layer_bytes, layer_bytes));
      if (absl::Status st = GatherLayerCuda(layout_, *cache_, layer, item.block_ids, dst);
          !st.ok()) {
        open_ = SaveStep{};  // a step with a hole is never saved
        return st;
      }
    }
  }
  open_.layer_done[layer] = true;
  if (--open_.layers_left == 0) {
    {
      MutexLock lock(&mu_);
      queue_.push_back(std::move(open_));
    }
    open_ = SaveStep{};
    cv_.SignalAll();
  }
  return absl::OkStatus();
}

absl::StatusOr<SaveResult> KvConnector::WaitForSave() {
  absl::Status dropped;
  if (!open_.items.empty()) {
    dropped = absl::FailedPreconditionError(fmt::format(
        "WaitForSave: {} of {} layers were never saved (SaveLayer); that step was dropped",
        open_.layers_left, layout_.num_layers));
    open_ = SaveStep{};
  }
  MutexLock lock(&mu_);
  cv_.Wait(&mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return queue_.empty() && !busy_; });
  SaveResult result = std::move(done_);
  absl::Status error = std::move(first_error_);
  done_ = SaveResult{};
  first_error_ = absl::OkStatus();
  if (!error.ok()) return error;
  if (!dropped.ok()) return dropped;
  return result;
}

void KvConnector::SaveLoop() {
  MutexLock lock(&mu_);
  while (true) {
    cv_.Wait(&mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ and nothing left
    SaveStep step = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    mu_.Unlock();
    SaveResult result;
    absl::Status st;
    try {  // nothing thrown may end the process from this thread (the C ABI promises so)
      st = SaveStepNow(step, result);
    } catch (const std::bad_alloc&) {
      st = absl::ResourceExhaustedError("save: out of memory");
    } catch (const std::exception& e) {
      st = absl::InternalError(fmt::format("save: {}", e.what()));
    }
    mu_.Lock();
    busy_ = false;
    done_.blocks_committed += result.blocks_committed;
    done_.blocks_skipped += result.blocks_skipped;
    done_.blocks_kept_raw += result.blocks_kept_raw;
    if (done_.tag_status.ok()) done_.tag_status = result.tag_status;
    if (first_error_.ok()) first_error_ = st;
    cv_.SignalAll();
  }
}

absl::Status KvConnector::SaveStepNow(SaveStep& step, SaveResult& result) {
  auto conn = CurrentConnection();
  if (!conn.ok()) return conn.status();
  for (SaveItem& item : step.items) {
    if (absl::Status st = SaveItemNow(**conn, item, result); !st.ok()) return st;
  }
  return absl::OkStatus();
}

absl::Status KvConnector::SaveItemNow(Connection& conn, SaveItem& item, SaveResult& result) {
  const bool lossy = codec_ != kernels::CodecId::kRaw;
  const auto type = ValueTypeOf(layout_.dtype);
  auto keys = Keys(conn, item.tokens, nullptr);
  if (!keys.ok()) return keys.status();
  // Payloads by codec: lossy blocks, and blocks kept RAW (all of them for a RAW connector).
  std::vector<BlockKey> coded_keys, raw_keys;
  std::vector<std::vector<std::byte>> coded;
  std::vector<std::span<const std::byte>> coded_views, raw_views;
  coded.reserve(item.raw.size());
  for (std::size_t i = 0; i < item.raw.size(); ++i) {
    const BlockKey& key = (*keys)[item.first_block + i];
    if (lossy) {
      std::vector<std::byte> out(
          kernels::EncodedBytes(codec_, type, layout_.head_dim, VectorsPerBlock(layout_)));
      kernels::EncodeStats stats;
      if (kernels::CodecStatus cs = kernels::Encode(
              codec_, type, layout_.head_dim, kernels::kDefaultSignSeed, item.raw[i], out, &stats);
          !cs.ok()) {
        return absl::Status(static_cast<absl::StatusCode>(cs.code),
                            fmt::format("encoding block {}: {}", item.first_block + i, cs.message));
      }
      if (stats.nonfinite_vectors == 0) {
        coded_keys.push_back(key);
        coded.push_back(std::move(out));
        coded_views.emplace_back(coded.back());
        continue;
      }
      ++result.blocks_kept_raw;  // NaN/Inf would not survive the codec
    }
    raw_keys.push_back(key);
    raw_views.emplace_back(item.raw[i]);
  }
  auto save = [&](std::span<const BlockKey> block_keys,
                  std::span<const std::span<const std::byte>> views,
                  kernels::CodecId codec) -> absl::Status {
    for (std::size_t at = 0; at < block_keys.size(); at += kSaveChunkBlocks) {
      const std::size_t len = std::min(kSaveChunkBlocks, block_keys.size() - at);
      // The session tells the daemon's placement whose blocks these are (a closed session's
      // leave first).
      auto committed = conn.client->Save(block_keys.subspan(at, len), views.subspan(at, len),
                                         CodecToProto(codec), item.session_id);
      if (!committed.ok()) {
        if (!conn.client->data_plane()->health().ok()) conn.broken.store(true);
        return Note(conn, committed.status());
      }
      result.blocks_committed += *committed;
      result.blocks_skipped += len - *committed;
    }
    return absl::OkStatus();
  };
  if (absl::Status st = save(coded_keys, coded_views, codec_); !st.ok()) return st;
  if (absl::Status st = save(raw_keys, raw_views, kernels::CodecId::kRaw); !st.ok()) return st;

  if (!item.session_id.empty() && !keys->empty()) {
    v1::TagBlocksRequest tag;
    tag.set_session_id(item.session_id);
    for (const BlockKey& k : *keys) tag.add_keys()->set_key(std::string(k.Bytes()));
    v1::TagBlocksResponse tagged;
    auto ctx = conn.client->NewContext();
    absl::Status st = FromGrpc(conn.client->stub().TagBlocks(ctx.get(), tag, &tagged));
    if (!st.ok() && result.tag_status.ok()) {
      result.tag_status = absl::Status(
          st.code(),
          fmt::format("TagBlocks(session '{}'): {}", item.session_id, std::string(st.message())));
    }
  }
  return absl::OkStatus();
}

}  // namespace cachesvc::client
