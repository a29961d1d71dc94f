// tests/cachesvc/ucx_test_support.cc: what every binary that runs UCX under the sanitizers needs
// (the UCX tests and their child process). Linked into ucx_test, ucx_am_test and ucx_am_child.
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

// GCC says __SANITIZE_THREAD__; Clang says __has_feature(thread_sanitizer).
#if defined(__SANITIZE_THREAD__)
#define CACHESVC_UNDER_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CACHESVC_UNDER_TSAN 1
#endif
#endif
#if defined(CACHESVC_UNDER_TSAN)
// ThreadSanitizer suppressions (TSan calls __tsan_default_suppressions at start-up). UCX is a
// prebuilt, uninstrumented library with its own threads and locks: TSan sees only the libc calls
// it makes (memcpy, pthread_spin_lock, send, close) and none of its atomics, so it reports
// UCX-internal "races", "double locks" of its recursive spinlocks, and lock-order cycles through
// them, and it cannot see the hand-offs through shared-memory rings and sockets that order UCX's
// copies into the test's buffers (a put landing in the server's region) with the test's reads.
// Interceptors called from the UCX libraries are therefore not checked. The data plane's own
// code (its mutexes, bookkeeping, callbacks, threads) is still checked, and a race there halts
// the test.
extern "C" const char* __tsan_default_suppressions();
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libucs.so.0\n"
         "called_from_lib:libucm.so.0\n"
         "called_from_lib:libuct.so.0\n"
         "called_from_lib:libucp.so.0\n"
         "called_from_lib:libuct_cma.so.0\n"
         // At exit, their destructors (run by ld.so, so the caller TSan sees is _dl_call_fini)
         // unlock mutexes that TSan, told to ignore them, never saw locked.
         "mutex:_dl_call_fini\n"
         // Likewise UCX's fork handlers (libucs), run by libc when a test forks a child.
         "mutex:__run_prefork_handlers\n";
}

namespace {
// UCX's memory-event hooks (libucm patches mmap/munmap/madvise) run inside glibc's thread exit,
// after ThreadSanitizer has torn the thread down, and crash there. They serve UCX's registration
// cache, which these tests do not need. libucm reads UCX_MEM_EVENTS when it is loaded, before
// any code here runs, so under TSan the binary re-executes itself once with it set (an explicit
// UCX_MEM_EVENTS in the environment is left alone; child processes inherit it).
[[maybe_unused]] const bool kUcxMemEventsOff = [] {
  if (std::getenv("UCX_MEM_EVENTS") != nullptr) return true;
  setenv("UCX_MEM_EVENTS", "no", 1);
  std::ifstream cmdline("/proc/self/cmdline", std::ios::binary);
  std::vector<std::string> args;
  for (std::string arg; std::getline(cmdline, arg, '\0');) args.push_back(arg);
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);
  execv("/proc/self/exe", argv.data());
  return false;  // exec failed: run on (and crash in UCX as described)
}();
}  // namespace
#endif
