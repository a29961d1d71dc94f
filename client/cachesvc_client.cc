// client/cachesvc_client.cc: the C ABI over KvConnector. Every entry point runs its body inside
// Guard(), which turns any exception into a status, so nothing thrown ever crosses into C.
#include "client/cachesvc_client.h"

#include <cstring>
#include <exception>
#include <memory>
#include <new>
#include <string>

#include "client/kv_connector.h"
#include "fmt/format.h"

struct cachesvc_connector {
  std::unique_ptr<cachesvc::client::KvConnector> impl;
};

namespace {

using cachesvc::client::KvConnector;

thread_local std::string last_error;

cachesvc_status Fail(cachesvc_status code, std::string message) {
  last_error = std::move(message);
  return code;
}

cachesvc_status FromStatus(const absl::Status& st) {
  if (st.ok()) return CACHESVC_OK;
  return Fail(static_cast<cachesvc_status>(st.code()), std::string(st.message()));
}

template <typename Body>
cachesvc_status Guard(const char* fn, Body body) noexcept {
  try {
    return body();
  } catch (const std::bad_alloc&) {
    return Fail(CACHESVC_RESOURCE_EXHAUSTED, fmt::format("{}: out of memory", fn));
  } catch (const std::exception& e) {
    return Fail(CACHESVC_INTERNAL, fmt::format("{}: {}", fn, e.what()));
  } catch (...) {
    return Fail(CACHESVC_INTERNAL, fmt::format("{}: unknown exception", fn));
  }
}

#define CACHESVC_REQUIRE(cond, fn, what)                                                  \
  do {                                                                                    \
    if (!(cond)) return Fail(CACHESVC_INVALID_ARGUMENT, fmt::format("{}: {}", fn, what)); \
  } while (0)

// The struct is at least as large as the fields of ABI version 1 (the fields a caller of an older
// header cannot have set are none yet).
template <typename T>
bool SizeOk(const T* s) {
  return s->struct_size >= sizeof(T);
}

[[nodiscard]] absl::StatusOr<cachesvc::ModelLayout> LayoutFromC(const cachesvc_layout* l) {
  if (!SizeOk(l)) {
    return absl::InvalidArgumentError(
        fmt::format("layout: struct_size {} is smaller than {}", l->struct_size, sizeof(*l)));
  }
  cachesvc::ModelLayout layout;
  layout.model_id = l->model_id != nullptr ? l->model_id : "";
  layout.num_layers = l->num_layers;
  layout.num_kv_heads = l->num_kv_heads;
  layout.head_dim = l->head_dim;
  if (l->dtype < CACHESVC_DTYPE_FP16 || l->dtype > CACHESVC_DTYPE_FP32) {
    return absl::InvalidArgumentError(fmt::format("layout: unknown dtype {}", l->dtype));
  }
  layout.dtype = static_cast<cachesvc::Dtype>(l->dtype);
  layout.block_tokens = l->block_tokens;
  layout.tp_rank = l->tp_rank;
  layout.tp_size = l->tp_size == 0 ? 1 : l->tp_size;
  const int attention = l->attention == 0 ? CACHESVC_ATTENTION_MHA_GQA : l->attention;
  if (attention != CACHESVC_ATTENTION_MHA_GQA && attention != CACHESVC_ATTENTION_MLA) {
    return absl::InvalidArgumentError(fmt::format("layout: unknown attention kind {}", attention));
  }
  layout.attention = static_cast<cachesvc::AttentionKind>(attention);
  if (absl::Status st = layout.Validate(); !st.ok()) return st;
  return layout;
}

std::span<const std::uint32_t> Tokens(const std::uint32_t* tokens, std::size_t n) {
  return n == 0 ? std::span<const std::uint32_t>() : std::span(tokens, n);
}

}  // namespace

extern "C" {

int cachesvc_abi_version(void) { return CACHESVC_CLIENT_ABI_VERSION; }

const char* cachesvc_status_name(int status) {
  static const char* const kNames[] = {"OK",
                                       "CANCELLED",
                                       "UNKNOWN",
                                       "INVALID_ARGUMENT",
                                       "DEADLINE_EXCEEDED",
                                       "NOT_FOUND",
                                       "ALREADY_EXISTS",
                                       "PERMISSION_DENIED",
                                       "RESOURCE_EXHAUSTED",
                                       "FAILED_PRECONDITION",
                                       "ABORTED",
                                       "OUT_OF_RANGE",
                                       "UNIMPLEMENTED",
                                       "INTERNAL",
                                       "UNAVAILABLE",
                                       "DATA_LOSS",
                                       "UNAUTHENTICATED"};
  if (status < 0 || status > 16) return "UNKNOWN_STATUS";
  return kNames[status];
}

const char* cachesvc_last_error(void) { return last_error.c_str(); }

cachesvc_status cachesvc_paged_cache_set_strides(const cachesvc_layout* layout,
                                                 cachesvc_page_kind kind,
                                                 cachesvc_paged_cache* cache) {
  return Guard("cachesvc_paged_cache_set_strides", [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(layout != nullptr && cache != nullptr, "cachesvc_paged_cache_set_strides",
                     "layout and cache must not be NULL");
    auto l = LayoutFromC(layout);
    if (!l.ok()) return FromStatus(l.status());
    cachesvc::client::PageStrides s;
    switch (kind) {
      case CACHESVC_PAGES_TOKEN_MAJOR:
        s = cachesvc::client::PageStrides::TokenMajor(*l);
        break;
      case CACHESVC_PAGES_HEAD_MAJOR:
        s = cachesvc::client::PageStrides::HeadMajor(*l);
        break;
      case CACHESVC_PAGES_SHARED_KV_TOKEN:
        s = cachesvc::client::PageStrides::SharedKvTokenMajor(*l);
        break;
      default:
        return Fail(CACHESVC_INVALID_ARGUMENT,
                    fmt::format("cachesvc_paged_cache_set_strides: unknown page kind {}",
                                static_cast<int>(kind)));
    }
    cache->token_stride_bytes = s.token_bytes;
    cache->head_stride_bytes = s.head_bytes;
    cache->part_stride_bytes = s.part_bytes;
    cache->page_bytes = s.page_bytes;
    return CACHESVC_OK;
  });
}

cachesvc_status cachesvc_connector_create(const cachesvc_options* options,
                                          const cachesvc_layout* layout, cachesvc_connector** out) {
  return Guard("cachesvc_connector_create", [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(out != nullptr, "cachesvc_connector_create", "out must not be NULL");
    *out = nullptr;
    CACHESVC_REQUIRE(options != nullptr && layout != nullptr, "cachesvc_connector_create",
                     "options and layout must not be NULL");
    CACHESVC_REQUIRE(SizeOk(options), "cachesvc_connector_create",
                     fmt::format("options: struct_size {} is smaller than {}", options->struct_size,
                                 sizeof(*options)));
    CACHESVC_REQUIRE(options->address != nullptr && options->address[0] != '\0',
                     "cachesvc_connector_create", "options.address is empty");
    auto l = LayoutFromC(layout);
    if (!l.ok()) return FromStatus(l.status());
    cachesvc::client::KvConnectorOptions o;
    o.client.address = options->address;
    if (options->token != nullptr) o.client.token = options->token;
    if (options->tls_root_pem != nullptr) o.client.tls_root_pem = options->tls_root_pem;
    if (options->tls_server_name != nullptr) o.client.tls_server_name = options->tls_server_name;
    if (options->ucx_transports != nullptr) o.client.ucx_transports = options->ucx_transports;
    o.client.ucx_detect_peer_failure = options->ucx_detect_peer_failure != 0;
    if (options->rpc_timeout_ms != 0) {
      o.client.rpc_timeout = std::chrono::milliseconds(options->rpc_timeout_ms);
    }
    const int codec = options->codec == 0 ? CACHESVC_CODEC_RAW : options->codec;
    auto id = cachesvc::kernels::CodecFromId(static_cast<std::uint32_t>(codec));
    CACHESVC_REQUIRE(id.has_value() && codec >= 0, "cachesvc_connector_create",
                     fmt::format("options.codec {} is not RAW (1), TQ3 (3) or TQ4 (4)", codec));
    o.codec = *id;
    CACHESVC_REQUIRE(
        options->key_mode == CACHESVC_KEYS_SERVICE || options->key_mode == CACHESVC_KEYS_CLIENT,
        "cachesvc_connector_create",
        fmt::format("options.key_mode {} is not SERVICE (0) or CLIENT (1)", options->key_mode));
    o.key_mode = options->key_mode == CACHESVC_KEYS_CLIENT ? cachesvc::client::KeyMode::kClient
                                                           : cachesvc::client::KeyMode::kService;
    o.layout = *l;
    auto conn = KvConnector::Create(o);
    if (!conn.ok()) return FromStatus(conn.status());
    *out = new cachesvc_connector{std::move(*conn)};
    return CACHESVC_OK;
  });
}

void cachesvc_connector_destroy(cachesvc_connector* connector) {
  (void)Guard("cachesvc_connector_destroy", [&]() -> cachesvc_status {
    delete connector;
    return CACHESVC_OK;
  });
}

cachesvc_status cachesvc_connector_register_paged_cache(cachesvc_connector* connector,
                                                        const cachesvc_paged_cache* cache) {
  constexpr const char* kFn = "cachesvc_connector_register_paged_cache";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr && cache != nullptr, kFn,
                     "connector and cache must not be NULL");
    CACHESVC_REQUIRE(SizeOk(cache), kFn,
                     fmt::format("cache: struct_size {} is smaller than {}", cache->struct_size,
                                 sizeof(*cache)));
    CACHESVC_REQUIRE(cache->num_blocks > 0 && cache->k_pages != nullptr, kFn,
                     "cache: num_blocks is 0 or k_pages is NULL");
    CACHESVC_REQUIRE(cache->memory == CACHESVC_MEMORY_CPU || cache->memory == CACHESVC_MEMORY_CUDA,
                     kFn, fmt::format("cache: unknown memory kind {}", cache->memory));
    CACHESVC_REQUIRE(cache->dtype >= CACHESVC_DTYPE_FP16 && cache->dtype <= CACHESVC_DTYPE_FP32,
                     kFn, fmt::format("cache: unknown dtype {}", cache->dtype));
    const cachesvc::ModelLayout& layout = connector->impl->layout();
    cachesvc::client::PagedKvCache c;
    c.memory = static_cast<cachesvc::client::KvMemory>(cache->memory);
    c.cuda_device = cache->cuda_device;
    c.dtype = static_cast<cachesvc::Dtype>(cache->dtype);
    c.strides = {cache->token_stride_bytes, cache->head_stride_bytes, cache->part_stride_bytes,
                 cache->page_bytes};
    const std::size_t n = cache->num_blocks;
    c.layers.resize(layout.num_layers);
    for (std::size_t l = 0; l < layout.num_layers; ++l) {
      c.layers[l].k_pages.assign(cache->k_pages + l * n, cache->k_pages + (l + 1) * n);
      if (cache->v_pages != nullptr) {
        c.layers[l].v_pages.assign(cache->v_pages + l * n, cache->v_pages + (l + 1) * n);
      }
    }
    return FromStatus(connector->impl->RegisterPagedCache(std::move(c)));
  });
}

cachesvc_status cachesvc_connector_lookup_prefix(cachesvc_connector* connector,
                                                 const uint32_t* tokens, size_t num_tokens,
                                                 size_t* cached_tokens) {
  constexpr const char* kFn = "cachesvc_connector_lookup_prefix";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr && cached_tokens != nullptr, kFn,
                     "connector and cached_tokens must not be NULL");
    CACHESVC_REQUIRE(tokens != nullptr || num_tokens == 0, kFn, "tokens is NULL");
    *cached_tokens = 0;
    auto n = connector->impl->LookupPrefix(Tokens(tokens, num_tokens));
    if (!n.ok()) return FromStatus(n.status());
    *cached_tokens = *n;
    return CACHESVC_OK;
  });
}

cachesvc_status cachesvc_connector_load(cachesvc_connector* connector, const uint32_t* tokens,
                                        size_t num_tokens, const uint32_t* dst_block_ids,
                                        size_t num_blocks, cachesvc_load_result* result) {
  constexpr const char* kFn = "cachesvc_connector_load";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr && result != nullptr, kFn,
                     "connector and result must not be NULL");
    CACHESVC_REQUIRE(tokens != nullptr || num_tokens == 0, kFn, "tokens is NULL");
    CACHESVC_REQUIRE(dst_block_ids != nullptr || num_blocks == 0, kFn, "dst_block_ids is NULL");
    std::memset(result, 0, sizeof(*result));
    auto r = connector->impl->Load(Tokens(tokens, num_tokens), Tokens(dst_block_ids, num_blocks));
    if (!r.ok()) return FromStatus(r.status());
    result->blocks = r->blocks;
    result->tokens = r->tokens;
    const std::size_t len = std::min(r->miss_reason.size(), sizeof(result->miss_reason) - 1);
    std::memcpy(result->miss_reason, r->miss_reason.data(), len);
    result->miss_reason[len] = '\0';
    return CACHESVC_OK;
  });
}

cachesvc_status cachesvc_connector_begin_save(cachesvc_connector* connector, const uint32_t* tokens,
                                              size_t num_tokens, const uint32_t* block_ids,
                                              size_t num_blocks, size_t first_block,
                                              const char* session_id) {
  constexpr const char* kFn = "cachesvc_connector_begin_save";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr, kFn, "connector is NULL");
    CACHESVC_REQUIRE(tokens != nullptr || num_tokens == 0, kFn, "tokens is NULL");
    CACHESVC_REQUIRE(block_ids != nullptr || num_blocks == 0, kFn, "block_ids is NULL");
    cachesvc::client::SaveOptions options;
    options.first_block = first_block;
    if (session_id != nullptr) options.session_id = session_id;
    return FromStatus(connector->impl->BeginSave(Tokens(tokens, num_tokens),
                                                 Tokens(block_ids, num_blocks), options));
  });
}

cachesvc_status cachesvc_connector_save_layer(cachesvc_connector* connector, uint32_t layer) {
  constexpr const char* kFn = "cachesvc_connector_save_layer";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr, kFn, "connector is NULL");
    return FromStatus(connector->impl->SaveLayer(layer));
  });
}

cachesvc_status cachesvc_connector_wait_for_save(cachesvc_connector* connector,
                                                 cachesvc_save_result* result) {
  constexpr const char* kFn = "cachesvc_connector_wait_for_save";
  return Guard(kFn, [&]() -> cachesvc_status {
    CACHESVC_REQUIRE(connector != nullptr, kFn, "connector is NULL");
    if (result != nullptr) std::memset(result, 0, sizeof(*result));
    auto r = connector->impl->WaitForSave();
    if (!r.ok()) return FromStatus(r.status());
    if (result != nullptr) {
      result->blocks_committed = r->blocks_committed;
      result->blocks_skipped = r->blocks_skipped;
      result->blocks_kept_raw = r->blocks_kept_raw;
      result->tag_status = static_cast<int32_t>(r->tag_status.code());
      if (!r->tag_status.ok()) last_error = std::string(r->tag_status.message());
    }
    return CACHESVC_OK;
  });
}

}  // extern "C"
