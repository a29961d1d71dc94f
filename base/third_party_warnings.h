// base/third_party_warnings.h: the one place that silences a warning for a third-party library's
// headers. GCC 12 at -O2 reports -Wnull-dereference inside CLI11's and pybind11's own inline code
// once it is inlined into a translation unit (libstdc++ relocation and hashing code, reported
// even though the headers are system headers). Wrap only the library's #includes:
//
//   CACHESVC_THIRD_PARTY_BEGIN
//   #include <pybind11/pybind11.h>
//   CACHESVC_THIRD_PARTY_END
//
// The project's own code stays under -Wnull-dereference -Werror (cmake/CachesvcWarnings.cmake).
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#define CACHESVC_THIRD_PARTY_BEGIN \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wnull-dereference\"")
#define CACHESVC_THIRD_PARTY_END _Pragma("GCC diagnostic pop")
#else
#define CACHESVC_THIRD_PARTY_BEGIN
#define CACHESVC_THIRD_PARTY_END
#endif
