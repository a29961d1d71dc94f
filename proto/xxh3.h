// proto/xxh3.h: include this, not xxhash.h, to hash payloads. On x86-64 it maps XXH3_64bits and
// XXH3_64bits_update to libxxhash's runtime-dispatched versions, which use AVX2 or AVX-512 when
// the CPU has them; the plain ones are built for SSE2 by Debian. Same values, about 4x faster:
// 2 MiB hashed in 45 us instead of 179 us on the development machine (AMD EPYC, AVX-512), which
// was most of a shared-memory load's time (docs/bench/dataplane.md).
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#if defined(__x86_64__)
#include "xxh_x86dispatch.h"  // includes xxhash.h
#else
#include "xxhash.h"
#endif
