/* client/cachesvc_client.h: the engine connector's stable C ABI (libcachesvc_client.so), for
 * engines not written in C++. It wraps cachesvc::client::KvConnector (client/kv_connector.h);
 * docs/connector.md has the semantics and a full example.
 *
 * Contract:
 *   - Pure C (C99). Handles are opaque; the library allocates and frees them.
 *   - Every function returns a cachesvc_status (0 = OK, otherwise the gRPC canonical code:
 *     INVALID_ARGUMENT for bad input, UNAVAILABLE / DEADLINE_EXCEEDED when the daemon cannot be
 *     reached or went away, ...). After a failure, cachesvc_last_error() returns a message saying
 *     what was wrong; it is per thread and valid until that thread's next call into the library.
 *   - No C++ exception ever crosses this boundary: every entry point catches everything and turns
 *     it into CACHESVC_INTERNAL (CACHESVC_RESOURCE_EXHAUSTED for out-of-memory).
 *   - Structs passed in begin with `struct_size` (set it to sizeof the struct): later versions add
 *     fields at the end and read only what the caller's size covers.
 *   - Thread-safety: as KvConnector: load and lookup from any thread; begin_save / save_layer /
 *     wait_for_save as one sequence from one thread at a time; register_paged_cache and destroy
 *     alone.
 *   - A failed or mismatched block is a miss, never a load: cachesvc_connector_load reports only
 *     the leading blocks that arrived whole and passed every check.
 */
#ifndef CACHESVC_CLIENT_H_
#define CACHESVC_CLIENT_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CACHESVC_CLIENT_ABI_VERSION 1

typedef enum cachesvc_status {
  CACHESVC_OK = 0,
  CACHESVC_CANCELLED = 1,
  CACHESVC_UNKNOWN = 2,
  CACHESVC_INVALID_ARGUMENT = 3,
  CACHESVC_DEADLINE_EXCEEDED = 4,
  CACHESVC_NOT_FOUND = 5,
  CACHESVC_ALREADY_EXISTS = 6,
  CACHESVC_PERMISSION_DENIED = 7,
  CACHESVC_RESOURCE_EXHAUSTED = 8,
  CACHESVC_FAILED_PRECONDITION = 9,
  CACHESVC_ABORTED = 10,
  CACHESVC_OUT_OF_RANGE = 11,
  CACHESVC_UNIMPLEMENTED = 12,
  CACHESVC_INTERNAL = 13,
  CACHESVC_UNAVAILABLE = 14,
  CACHESVC_DATA_LOSS = 15,
  CACHESVC_UNAUTHENTICATED = 16
} cachesvc_status;

/* Values equal cachesvc.v1.Dtype / Codec / AttentionKind. */
typedef enum cachesvc_dtype {
  CACHESVC_DTYPE_FP16 = 1,
  CACHESVC_DTYPE_BF16 = 2,
  CACHESVC_DTYPE_FP8_E4M3 = 3,
  CACHESVC_DTYPE_FP32 = 4
} cachesvc_dtype;

typedef enum cachesvc_codec {
  CACHESVC_CODEC_RAW = 1,
  CACHESVC_CODEC_TQ3 = 3,
  CACHESVC_CODEC_TQ4 = 4
} cachesvc_codec;

typedef enum cachesvc_attention {
  CACHESVC_ATTENTION_MHA_GQA = 1,
  CACHESVC_ATTENTION_MLA = 2
} cachesvc_attention;

typedef enum cachesvc_memory { CACHESVC_MEMORY_CPU = 0, CACHESVC_MEMORY_CUDA = 1 } cachesvc_memory;

/* Common page layouts, for cachesvc_paged_cache_set_strides. */
typedef enum cachesvc_page_kind {
  CACHESVC_PAGES_TOKEN_MAJOR = 1,    /* K and V pages apart, each [token][head][dim] (vLLM) */
  CACHESVC_PAGES_HEAD_MAJOR = 2,     /* K and V pages apart, each [head][token][dim] */
  CACHESVC_PAGES_SHARED_KV_TOKEN = 3 /* one page [2][token][head][dim]; v_pages = NULL */
} cachesvc_page_kind;

/* Where block keys come from (docs/connector.md, "Keys"). */
typedef enum cachesvc_key_mode {
  CACHESVC_KEYS_SERVICE =
      0,                   /* the daemon derives them with the tenant's salt (sessions see them) */
  CACHESVC_KEYS_CLIENT = 1 /* derived here with an empty client salt, no RPC */
} cachesvc_key_mode;

typedef struct cachesvc_connector cachesvc_connector; /* opaque */

typedef struct cachesvc_layout {
  uint32_t struct_size;
  const char* model_id;
  uint32_t num_layers;
  uint32_t num_kv_heads;
  uint32_t head_dim;
  int32_t dtype; /* cachesvc_dtype */
  uint32_t block_tokens;
  uint32_t tp_rank;
  uint32_t tp_size;  /* 0 is read as 1 */
  int32_t attention; /* cachesvc_attention; 0 is read as MHA/GQA */
} cachesvc_layout;

typedef struct cachesvc_options {
  uint32_t struct_size;
  const char* address;             /* the daemon's gRPC address, "host:port" (required) */
  const char* token;               /* bearer token; NULL or "" in the daemon's open mode */
  const char* tls_root_pem;        /* NULL: plaintext */
  const char* tls_server_name;     /* NULL: the address's host */
  const char* ucx_transports;      /* UCX_TLS for the data plane; NULL: UCX's default */
  int32_t ucx_detect_peer_failure; /* nonzero (recommended): a dead daemon fails calls soon */
  uint32_t rpc_timeout_ms;         /* 0: 10000 */
  int32_t codec;                   /* cachesvc_codec for new blocks; 0 is read as RAW */
  int32_t key_mode;                /* cachesvc_key_mode; 0 = CACHESVC_KEYS_SERVICE */
} cachesvc_options;

/* The engine's paged KV cache. Page b of layer l: k_pages[l * num_blocks + b] (and v_pages the
 * same; NULL when K and V share a page or for MLA). Inside a page, the (token, head) vector starts
 * at part * part_stride_bytes + token * token_stride_bytes + head * head_stride_bytes, head_dim
 * values contiguous. The pointer arrays are copied; the pages are not. */
typedef struct cachesvc_paged_cache {
  uint32_t struct_size;
  int32_t memory; /* cachesvc_memory */
  int32_t cuda_device;
  int32_t dtype; /* cachesvc_dtype of the pages; must equal the layout's */
  int64_t token_stride_bytes;
  int64_t head_stride_bytes;
  int64_t part_stride_bytes;
  uint64_t page_bytes;
  uint32_t num_blocks; /* pages per layer */
  void* const* k_pages;
  void* const* v_pages;
} cachesvc_paged_cache;

typedef struct cachesvc_load_result {
  size_t blocks;         /* leading blocks now in the pages */
  size_t tokens;         /* blocks * block_tokens */
  char miss_reason[256]; /* why it stopped early ("" when everything asked for was loaded) */
} cachesvc_load_result;

typedef struct cachesvc_save_result {
  size_t blocks_committed; /* newly stored */
  size_t blocks_skipped;   /* already stored, or no room for them */
  size_t blocks_kept_raw;  /* lossy codec asked for, NaN/Inf found: stored RAW */
  int32_t tag_status;      /* cachesvc_status of tagging blocks with sessions (not a save
                              error); when not OK, cachesvc_last_error() says why */
} cachesvc_save_result;

/* CACHESVC_CLIENT_ABI_VERSION of the library actually loaded. */
int cachesvc_abi_version(void);
/* "OK", "INVALID_ARGUMENT", ...; "UNKNOWN_STATUS" for other values. Static storage. */
const char* cachesvc_status_name(int status);
/* The message of this thread's last failed call ("" if none). */
const char* cachesvc_last_error(void);

/* Fills strides and page_bytes of `cache` for one of the common layouts of `layout`. */
cachesvc_status cachesvc_paged_cache_set_strides(const cachesvc_layout* layout,
                                                 cachesvc_page_kind kind,
                                                 cachesvc_paged_cache* cache);

/* Connects and registers the layout. On success *out is a handle to free with
 * cachesvc_connector_destroy; on failure *out is NULL. */
cachesvc_status cachesvc_connector_create(const cachesvc_options* options,
                                          const cachesvc_layout* layout, cachesvc_connector** out);
/* Waits for a save in progress, then frees. NULL is a no-op. */
void cachesvc_connector_destroy(cachesvc_connector* connector);

cachesvc_status cachesvc_connector_register_paged_cache(cachesvc_connector* connector,
                                                        const cachesvc_paged_cache* cache);

/* Cached leading tokens of tokens[0..num_tokens) (a multiple of block_tokens). */
cachesvc_status cachesvc_connector_lookup_prefix(cachesvc_connector* connector,
                                                 const uint32_t* tokens, size_t num_tokens,
                                                 size_t* cached_tokens);

/* Loads block i of `tokens` into page dst_block_ids[i] for i < num_blocks. */
cachesvc_status cachesvc_connector_load(cachesvc_connector* connector, const uint32_t* tokens,
                                        size_t num_tokens, const uint32_t* dst_block_ids,
                                        size_t num_blocks, cachesvc_load_result* result);

/* Names blocks [first_block, num_blocks) of one request for saving in this step (block i of
 * `tokens` is in page block_ids[i]); session_id may be NULL. */
cachesvc_status cachesvc_connector_begin_save(cachesvc_connector* connector, const uint32_t* tokens,
                                              size_t num_tokens, const uint32_t* block_ids,
                                              size_t num_blocks, size_t first_block,
                                              const char* session_id);
/* Copies layer `layer` of the named blocks out of the pages (call after the layer's KV is
 * written); after the last layer the blocks are saved in the background. */
cachesvc_status cachesvc_connector_save_layer(cachesvc_connector* connector, uint32_t layer);
/* Waits for the background saves; `result` may be NULL. */
cachesvc_status cachesvc_connector_wait_for_save(cachesvc_connector* connector,
                                                 cachesvc_save_result* result);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* CACHESVC_CLIENT_H_ */
