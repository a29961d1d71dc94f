// ThreadSanitizer suppressions for the tier tests, compiled into the test binaries (TSan calls
// __tsan_default_suppressions at start-up; other builds never call it).
//
// Debian's RocksDB is a prebuilt library without TSan instrumentation: its atomics-based
// synchronization is invisible to TSan, which then reports races between RocksDB's own threads
// (block cache readers, background flushes). Those reports are about RocksDB internals, not about
// the tiers, so they are suppressed; races in tiers/ code still halt the test.
extern "C" const char* __tsan_default_suppressions();
extern "C" const char* __tsan_default_suppressions() { return "race:rocksdb::\n"; }
