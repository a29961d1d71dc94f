/* tests/client/c_abi_test.c: the connector's C ABI from a C program, against a running daemon.
 * Usage: c_abi_test ADDRESS TOKEN. Exits 0 when every check passed; prints each failed check.
 * Run by connector_c_abi_test, which starts the daemon. Compiled as C11, linked only against
 * libcachesvc_client.so. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/cachesvc_client.h"

static int failures = 0;

#define CHECK(cond)                                                                            \
  do {                                                                                         \
    if (!(cond)) {                                                                             \
      ++failures;                                                                              \
      fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #cond, \
              cachesvc_last_error());                                                          \
    }                                                                                          \
  } while (0)

#define CHECK_STATUS(call, want)                                                                 \
  do {                                                                                           \
    cachesvc_status got_ = (call);                                                               \
    if (got_ != (want)) {                                                                        \
      ++failures;                                                                                \
      fprintf(stderr, "%s:%d: %s returned %s, wanted %s (last error: %s)\n", __FILE__, __LINE__, \
              #call, cachesvc_status_name(got_), cachesvc_status_name(want),                     \
              cachesvc_last_error());                                                            \
    }                                                                                            \
  } while (0)

enum { kLayers = 2, kHeads = 2, kHeadDim = 64, kBlockTokens = 8, kPages = 4 };

/* One engine's pages: K and V tensors per layer, kPages token-major pages each. */
typedef struct {
  unsigned char* memory;
  size_t page_bytes;
  void* k[kLayers * kPages];
  void* v[kLayers * kPages];
} pages_t;

static void pages_init(pages_t* p, size_t page_bytes, unsigned seed) {
  size_t i;
  int l, b;
  p->page_bytes = page_bytes;
  p->memory = (unsigned char*)aligned_alloc(64, 2 * kLayers * kPages * page_bytes);
  srand(seed);
  for (i = 0; i < 2 * kLayers * kPages * page_bytes; ++i) p->memory[i] = (unsigned char)rand();
  for (l = 0; l < kLayers; ++l) {
    for (b = 0; b < kPages; ++b) {
      p->k[l * kPages + b] = p->memory + ((size_t)(2 * l) * kPages + b) * page_bytes;
      p->v[l * kPages + b] = p->memory + ((size_t)(2 * l + 1) * kPages + b) * page_bytes;
    }
  }
}

static int page_equal(const pages_t* a, int page_a, const pages_t* b, int page_b) {
  int l;
  for (l = 0; l < kLayers; ++l) {
    if (memcmp(a->k[l * kPages + page_a], b->k[l * kPages + page_b], a->page_bytes) != 0 ||
        memcmp(a->v[l * kPages + page_a], b->v[l * kPages + page_b], a->page_bytes) != 0) {
      return 0;
    }
  }
  return 1;
}

int main(int argc, char** argv) {
  cachesvc_layout layout;
  cachesvc_options options;
  cachesvc_paged_cache cache;
  cachesvc_connector* conn = NULL;
  cachesvc_connector* other = NULL;
  cachesvc_load_result loaded;
  cachesvc_save_result saved;
  pages_t src, dst;
  uint32_t tokens[3 * kBlockTokens + 3];
  const uint32_t src_ids[3] = {3, 0, 2};
  const uint32_t dst_ids[3] = {1, 2, 3};
  size_t cached = 99;
  uint32_t i;

  if (argc != 3) {
    fprintf(stderr, "usage: %s ADDRESS TOKEN\n", argv[0]);
    return 2;
  }
  CHECK(cachesvc_abi_version() == CACHESVC_CLIENT_ABI_VERSION);
  CHECK(strcmp(cachesvc_status_name(CACHESVC_INVALID_ARGUMENT), "INVALID_ARGUMENT") == 0);
  CHECK(strcmp(cachesvc_status_name(99), "UNKNOWN_STATUS") == 0);
  for (i = 0; i < sizeof tokens / sizeof tokens[0]; ++i) tokens[i] = 1000 + i * 7;

  memset(&layout, 0, sizeof layout);
  layout.struct_size = sizeof layout;
  layout.model_id = "c-abi-model";
  layout.num_layers = kLayers;
  layout.num_kv_heads = kHeads;
  layout.head_dim = kHeadDim;
  layout.dtype = CACHESVC_DTYPE_FP16;
  layout.block_tokens = kBlockTokens;

  memset(&options, 0, sizeof options);
  options.struct_size = sizeof options;
  options.address = argv[1];
  options.token = argv[2];
  options.ucx_detect_peer_failure = 1;
  options.rpc_timeout_ms = 5000;

  /* Bad input: clear errors, no handle. */
  CHECK_STATUS(cachesvc_connector_create(NULL, &layout, &conn), CACHESVC_INVALID_ARGUMENT);
  CHECK(conn == NULL);
  CHECK(strstr(cachesvc_last_error(), "NULL") != NULL);
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, NULL), CACHESVC_INVALID_ARGUMENT);
  layout.dtype = 42;
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_INVALID_ARGUMENT);
  CHECK(strstr(cachesvc_last_error(), "dtype") != NULL);
  layout.dtype = CACHESVC_DTYPE_FP16;
  layout.struct_size = 4;
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_INVALID_ARGUMENT);
  layout.struct_size = sizeof layout;
  options.codec = 2;
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_INVALID_ARGUMENT);
  options.codec = CACHESVC_CODEC_RAW;
  options.key_mode = 7;
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_INVALID_ARGUMENT);
  CHECK(strstr(cachesvc_last_error(), "key_mode") != NULL);
  options.key_mode = CACHESVC_KEYS_SERVICE;
  options.token = "wrong-token";
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_UNAUTHENTICATED);
  CHECK(conn == NULL);
  options.token = argv[2];

  /* Two engines: one saves from its pages, the other loads into its own. */
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &conn), CACHESVC_OK);
  CHECK_STATUS(cachesvc_connector_create(&options, &layout, &other), CACHESVC_OK);
  if (conn == NULL || other == NULL) return 1;

  memset(&cache, 0, sizeof cache);
  cache.struct_size = sizeof cache;
  cache.memory = CACHESVC_MEMORY_CPU;
  cache.dtype = CACHESVC_DTYPE_FP16;
  cache.num_blocks = kPages;
  CHECK_STATUS(cachesvc_paged_cache_set_strides(&layout, CACHESVC_PAGES_TOKEN_MAJOR, &cache),
               CACHESVC_OK);
  CHECK(cache.page_bytes == (uint64_t)kBlockTokens * kHeads * kHeadDim * 2);
  CHECK(cache.head_stride_bytes == kHeadDim * 2);
  pages_init(&src, cache.page_bytes, 1);
  pages_init(&dst, cache.page_bytes, 2);

  /* No cache registered yet. */
  CHECK_STATUS(cachesvc_connector_load(other, tokens, 24, dst_ids, 3, &loaded),
               CACHESVC_FAILED_PRECONDITION);
  /* A cache of the wrong shape: pages too small. */
  cache.k_pages = src.k;
  cache.v_pages = src.v;
  cache.page_bytes -= 2;
  CHECK_STATUS(cachesvc_connector_register_paged_cache(conn, &cache), CACHESVC_INVALID_ARGUMENT);
  CHECK(strstr(cachesvc_last_error(), "page_bytes") != NULL);
  cache.page_bytes += 2;
  CHECK_STATUS(cachesvc_connector_register_paged_cache(conn, &cache), CACHESVC_OK);
  cache.k_pages = dst.k;
  cache.v_pages = dst.v;
  CHECK_STATUS(cachesvc_connector_register_paged_cache(other, &cache), CACHESVC_OK);

  CHECK_STATUS(cachesvc_connector_lookup_prefix(conn, tokens, 27, &cached), CACHESVC_OK);
  CHECK(cached == 0);

  /* Save 3 full blocks layer by layer (the 3 tail tokens are no block). */
  CHECK_STATUS(cachesvc_connector_begin_save(conn, tokens, 27, src_ids, 3, 0, "c-session"),
               CACHESVC_OK);
  for (i = 0; i < kLayers; ++i) CHECK_STATUS(cachesvc_connector_save_layer(conn, i), CACHESVC_OK);
  CHECK_STATUS(cachesvc_connector_save_layer(conn, kLayers), CACHESVC_INVALID_ARGUMENT);
  CHECK_STATUS(cachesvc_connector_wait_for_save(conn, &saved), CACHESVC_OK);
  CHECK(saved.blocks_committed == 3);
  CHECK(saved.tag_status == CACHESVC_OK || saved.tag_status == CACHESVC_UNIMPLEMENTED ||
        saved.tag_status == CACHESVC_NOT_FOUND);

  CHECK_STATUS(cachesvc_connector_lookup_prefix(other, tokens, 27, &cached), CACHESVC_OK);
  CHECK(cached == 24);

  /* Load into other pages, byte-identical. */
  CHECK_STATUS(cachesvc_connector_load(other, tokens, 27, dst_ids, 3, &loaded), CACHESVC_OK);
  CHECK(loaded.blocks == 3 && loaded.tokens == 24);
  CHECK(loaded.miss_reason[0] == '\0');
  for (i = 0; i < 3; ++i) CHECK(page_equal(&src, (int)src_ids[i], &dst, (int)dst_ids[i]));

  /* A prompt that diverges in block 1: only block 0 is cached. */
  tokens[kBlockTokens + 1] ^= 1u;
  CHECK_STATUS(cachesvc_connector_load(other, tokens, 24, dst_ids, 3, &loaded), CACHESVC_OK);
  CHECK(loaded.blocks == 1 && loaded.tokens == kBlockTokens);
  CHECK(strstr(loaded.miss_reason, "not cached") != NULL);
  tokens[kBlockTokens + 1] ^= 1u;

  /* Bad block ids and NULLs. */
  {
    const uint32_t bad[2] = {0, kPages};
    const uint32_t twice[2] = {1, 1};
    CHECK_STATUS(cachesvc_connector_load(other, tokens, 24, bad, 2, &loaded),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK(strstr(cachesvc_last_error(), "out of range") != NULL);
    CHECK_STATUS(cachesvc_connector_load(other, tokens, 24, twice, 2, &loaded),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK_STATUS(cachesvc_connector_load(other, tokens, 8, dst_ids, 3, &loaded),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK_STATUS(cachesvc_connector_load(other, NULL, 24, dst_ids, 3, &loaded),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK_STATUS(cachesvc_connector_load(NULL, tokens, 24, dst_ids, 3, &loaded),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK_STATUS(cachesvc_connector_lookup_prefix(other, tokens, 24, NULL),
                 CACHESVC_INVALID_ARGUMENT);
    CHECK_STATUS(cachesvc_connector_wait_for_save(NULL, NULL), CACHESVC_INVALID_ARGUMENT);
  }

  cachesvc_connector_destroy(conn);
  cachesvc_connector_destroy(other);
  cachesvc_connector_destroy(NULL);
  free(src.memory);
  free(dst.memory);
  if (failures != 0) {
    fprintf(stderr, "%d checks failed\n", failures);
    return 1;
  }
  printf("c_abi_test: all checks passed\n");
  return 0;
}
