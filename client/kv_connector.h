// client/kv_connector.h: the engine connector: what an inference engine links to so that its
// paged KV cache is saved to and loaded from a cachesvc daemon, block by block.
//
//   KvConnectorOptions opts{.client = {.address = "127.0.0.1:50051", .token = "..."},
//                           .layout = layout, .codec = kernels::CodecId::kTq3};
//   auto conn = KvConnector::Create(opts);                 // connects, registers the layout
//   (*conn)->RegisterPagedCache(cache);                    // the engine's pages (paged.h)
//   auto hit = (*conn)->LookupPrefix(prompt);              // cached tokens (whole blocks)
//   auto got = (*conn)->Load(prompt, page_ids_for_hit);    // into those pages; got->tokens
//   (*conn)->BeginSave(prompt, page_ids, {.first_block = got->blocks, .session_id = "s1"});
//   for (layer...) { run layer; (*conn)->SaveLayer(layer); }
//   auto saved = (*conn)->WaitForSave();
//
// Keys. Block keys follow proto/block_key.h; where the chain is seeded is a KeyMode:
//   - kService (default): the daemon derives them with the tenant's secret salt and returns them
//     from LookupPrefix(tokens) (LookupPrefixResponse.keys); the connector loads and saves under
//     those, so its blocks are the ones the tenant's sessions name (SessionService, TagBlocks).
//     Costs one LookupPrefix RPC per Load and per saved request (the save's runs in the
//     background thread, never in SaveLayer).
//   - kClient: the connector derives them itself from KeyChainSeed("", layout fingerprint), an
//     EMPTY client salt, with no RPC. The daemon still scopes every key it is given by the
//     tenant's salt before indexing it, so tenants never share blocks, but these keys are not the
//     ones sessions derive from tokens: use it only where sessions do not matter.
// Only full blocks have keys; a trailing partial block is neither looked up nor saved.
//
// Load is all-or-prefix and never writes wrong KV: the blocks are read into a host staging
// buffer, each is checked (the daemon's answer, the layout it was saved for, length, XXH3-64
// checksum, codec, and for TQ3/TQ4
// the codec header: codec, dtype, head_dim, vector count), decoded, and only then scattered into
// the pages. The first block that fails any check ends the load: it and every later block are
// reported as not cached (LoadResult::blocks counts only the good prefix, miss_reason says why),
// and their pages are not touched. A block stored under another codec than this connector's
// (another engine saved it) is decoded by what the daemon says it is. A daemon that cannot be
// reached, or dies mid-load, is an error (UNAVAILABLE or DEADLINE_EXCEEDED) bounded by
// BlockClientOptions::rpc_timeout for RPCs and the UCX op timeout (5 s) for the data plane; the
// engine recomputes. The next call reconnects (a new BlockClient and engine registration), so a
// daemon that comes back, or a new one at the same address, is used again.
//
// Save is layer by layer so that it overlaps the forward pass: BeginSave names the blocks (one
// call per request of the step), SaveLayer(l) copies layer l of every named block out of the
// pages into the connector's own canonical buffers (synchronously: when it returns the engine may
// overwrite those pages), and once every layer is copied the step's blocks go to a background
// thread that encodes them (TQ3/TQ4; a block holding NaN/Inf is kept RAW) and saves them with
// BlockClient::Save, then tags them with their session (TagBlocks). WaitForSave waits for that
// thread and reports. A TagBlocks failure (UNIMPLEMENTED from a daemon that serves no sessions,
// NOT_FOUND for a session that is not open) is reported in SaveResult::tag_status and is not a
// save failure.
//
// Thread-safety: Load and LookupPrefix may run on any thread, concurrently with each other and
// with a save in the background. BeginSave/SaveLayer/WaitForSave form one sequence per step and
// must come from one thread at a time (the engine's forward loop). RegisterPagedCache must not
// run concurrently with anything else.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "base/mutex.h"
#include "client/block_client.h"
#include "client/kv_connector_paged.h"
#include "kernels/codec.h"
#include "proto/block_key.h"
#include "proto/layout.h"

namespace cachesvc::client {

enum class KeyMode : std::uint8_t { kService, kClient };

struct KvConnectorOptions {
  BlockClientOptions client;
  KeyMode key_mode = KeyMode::kService;
  ModelLayout layout;
  // How new blocks are stored. TQ3/TQ4 need an fp16 or bf16 layout with head_dim 64, 128 or 256.
  kernels::CodecId codec = kernels::CodecId::kRaw;
};

struct LoadResult {
  std::size_t blocks = 0;  // leading blocks now in the engine's pages
  std::size_t tokens = 0;  // blocks * block_tokens
  // Why the load stopped before the requested blocks (a block not cached, or which check a block
  // failed); empty when every requested block was loaded.
  std::string miss_reason;
};

struct SaveOptions {
  // Leading blocks not to save (already cached, e.g. just loaded); their pages are not read, but
  // their tokens still chain the keys of the blocks after them.
  std::size_t first_block = 0;
  // The session that produced these blocks ("" = none): the blocks are tagged with it.
  std::string session_id;
};

struct SaveResult {
  std::size_t blocks_committed = 0;  // newly stored
  std::size_t blocks_skipped = 0;    // the daemon already had them, or had no room for them
  std::size_t blocks_kept_raw = 0;   // lossy codec asked for, but NaN/Inf in the block
  // The outcome of tagging blocks with their sessions (OK when nothing needed tagging). Not part
  // of whether the save succeeded.
  absl::Status tag_status;
};

class KvConnector {
 public:
  // Validates the layout and codec (INVALID_ARGUMENT), connects, and registers the layout with
  // the daemon (its errors as it answered them: UNAUTHENTICATED, UNAVAILABLE, ...).
  [[nodiscard]] static absl::StatusOr<std::unique_ptr<KvConnector>> Create(
      const KvConnectorOptions& options);
  ~KvConnector();  // waits for a save in progress
  KvConnector(const KvConnector&) = delete;
  KvConnector& operator=(const KvConnector&) = delete;

  // The engine's paged KV cache. INVALID_ARGUMENT (from ValidatePagedKv) if it does not fit the
  // layout; FAILED_PRECONDITION while a save step is open.
  [[nodiscard]] absl::Status RegisterPagedCache(PagedKvCache cache);

  // Keys of the full blocks of `tokens` (block_tokens each), per the KeyMode (kService asks the
  // daemon; FAILED_PRECONDITION if it returns no keys, as daemons before that field did).
  [[nodiscard]] absl::StatusOr<std::vector<BlockKey>> BlockKeys(
      std::span<const std::uint32_t> tokens);

  // How many leading tokens of `tokens` are cached: a multiple of block_tokens.
  [[nodiscard]] absl::StatusOr<std::size_t> LookupPrefix(std::span<const std::uint32_t> tokens);

  // Loads the cached prefix of `tokens` into the pages: block i goes to page dst_block_ids[i],
  // for i < dst_block_ids.size(). INVALID_ARGUMENT when dst_block_ids names more blocks than
  // `tokens` has full blocks, a page id out of range, or one page twice; FAILED_PRECONDITION with
  // no paged cache. A block that is missing or fails a check is a miss (see the file comment).
  [[nodiscard]] absl::StatusOr<LoadResult> Load(std::span<const std::uint32_t> tokens,
                                                std::span<const std::uint32_t> dst_block_ids);

  // Names the full blocks of one request to be saved in this step: block i of `tokens` is in page
  // block_ids[i]; blocks [options.first_block, block_ids.size()) are saved. Checks as Load;
  // FAILED_PRECONDITION once SaveLayer has run in this step.
  [[nodiscard]] absl::Status BeginSave(std::span<const std::uint32_t> tokens,
                                       std::span<const std::uint32_t> block_ids,
                                       const SaveOptions& options = {});
  // Copies layer `layer` of every block named in this step out of the pages. OK and nothing to do
  // when no block is named. INVALID_ARGUMENT for a layer out of range; FAILED_PRECONDITION for a
  // layer already copied in this step. After the last layer, the step is handed to the
  // background save.
  [[nodiscard]] absl::Status SaveLayer(std::uint32_t layer);
  // Waits until every step handed over has been saved; returns their totals since the last call,
  // or the first error of one of them (the engine just loses those blocks from the cache).
  // FAILED_PRECONDITION if a step is open with layers still to copy: that step is dropped.
  [[nodiscard]] absl::StatusOr<SaveResult> WaitForSave();

  [[nodiscard]] const ModelLayout& layout() const { return layout_; }
  // The engine as the daemon registered it (a new one after a reconnect).
  [[nodiscard]] EngineInfo engine() const;
  [[nodiscard]] kernels::CodecId codec() const { return codec_; }
  // The current connection's client, for tools and tests that need the raw RPCs; replaced when
  // the connector reconnects.
  BlockClient& block_client();

  // Runs after the daemon granted the read leases of a Load and before the bytes are read (tests
  // kill or stop the daemon there).
  void TEST_SetBeforeReadHook(std::function<void()> hook) { before_read_hook_ = std::move(hook); }
  // Runs on each block's staging bytes right after they were read and before they are checked
  // (tests corrupt them there, as a faulty link or tier would).
  void TEST_SetAfterReadHook(std::function<void(std::size_t block, std::span<std::byte>)> hook) {
    after_read_hook_ = std::move(hook);
  }

 private:
  struct SaveItem {
    std::vector<std::uint32_t> tokens;     // the request's full blocks' tokens, from block 0
    std::vector<std::uint32_t> block_ids;  // pages of the blocks to save
    std::size_t first_block = 0;
    std::string session_id;
    std::vector<std::vector<std::byte>> raw;  // canonical payload of each saved block
  };
  struct SaveStep {
    std::vector<SaveItem> items;
    std::vector<bool> layer_done;
    std::size_t layers_left = 0;
  };

  // One connection to the daemon: a BlockClient and the engine it registered.
  struct Connection {
    std::unique_ptr<BlockClient> client;
    EngineInfo engine;
    // Set when an RPC says the daemon is gone (UNAVAILABLE, DEADLINE_EXCEEDED) or no longer
    // knows the engine (NOT_FOUND: it restarted): the next call opens a new connection.
    std::atomic<bool> broken{false};
  };
  // Returns `st`, marking `conn` broken if `st` says so.
  [[nodiscard]] static absl::Status Note(Connection& conn, absl::Status st);
  [[nodiscard]] static absl::StatusOr<std::shared_ptr<Connection>> OpenConnection(
      const BlockClientOptions& options, const ModelLayout& layout);
  // The connection to use now. When the current one's data plane has failed (the daemon died,
  // restarted or stopped answering), opens a new one first, so a daemon that comes back is used
  // again; an error if that fails too.
  [[nodiscard]] absl::StatusOr<std::shared_ptr<Connection>> CurrentConnection();

  KvConnector(const KvConnectorOptions& options, std::shared_ptr<Connection> connection);
  // Keys of `tokens`' full blocks, and (when asked) how many of them are cached.
  [[nodiscard]] absl::StatusOr<std::vector<BlockKey>> Keys(Connection& conn,
                                                           std::span<const std::uint32_t> tokens,
                                                           std::size_t* cached_blocks);
  [[nodiscard]] absl::Status CheckBlockIds(std::span<const std::uint32_t> tokens,
                                           std::span<const std::uint32_t> ids) const;
  void SaveLoop();
  // Encodes and saves one step's blocks; adds to `result`.
  [[nodiscard]] absl::Status SaveStepNow(SaveStep& step, SaveResult& result);
  [[nodiscard]] absl::Status SaveItemNow(Connection& conn, SaveItem& item, SaveResult& result);
  [[nodiscard]] absl::Status ScatterBlocks(std::span<const std::uint32_t> block_ids,
                                           std::span<const std::span<const std::byte>> canonical);

  // Constant after construction.
  const ModelLayout layout_;
  const kernels::CodecId codec_;
  const KeyMode key_mode_;
  const BlockKey seed_;
  const std::size_t raw_block_bytes_;
  const BlockClientOptions client_options_;

  mutable Mutex conn_mu_;
  std::shared_ptr<Connection> conn_ ABSL_GUARDED_BY(conn_mu_);

  // Set by RegisterPagedCache (not concurrently with anything else).
  std::optional<PagedKvCache> cache_;
  std::function<void()> before_read_hook_;
  std::function<void(std::size_t, std::span<std::byte>)> after_read_hook_;

  // The open step: touched by the engine's save thread only.
  SaveStep open_;

  // Steps handed to the background thread.
  Mutex mu_;
  CondVar cv_;
  std::deque<SaveStep> queue_ ABSL_GUARDED_BY(mu_);
  bool busy_ ABSL_GUARDED_BY(mu_) = false;  // the thread is saving a step
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  SaveResult done_ ABSL_GUARDED_BY(mu_);
  absl::Status first_error_ ABSL_GUARDED_BY(mu_);
  std::thread saver_;
};

}  // namespace cachesvc::client
