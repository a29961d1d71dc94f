// base/cli11.h: the one place the project includes CLI11 (header-only, Debian's
// libcli11-dev). Include this, never "CLI/CLI.hpp" directly.
//
// Why a wrapper: GCC 12 at -O2 reports -Wnull-dereference inside CLI11's own inline code
// (CLI::detail::split's vector<string>::emplace_back, through libstdc++'s _M_realloc_insert) once
// it is inlined into a translation unit. The warning is a known false positive of GCC's
// flow-sensitive null-dereference pass on libstdc++ relocation code; it is issued even though the
// header is a system header, because the middle end attributes it after inlining. The pragma
// silences it for the library's code only: the project's own code stays under the project's
// -Wnull-dereference -Werror (cmake/CachesvcWarnings.cmake), which the release build checks.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wnull-dereference"
#endif
#include "CLI/CLI.hpp"  // IWYU pragma: export
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif
