// base/cli11.h: the one place the project includes CLI11 (header-only, Debian's libcli11-dev).
// Include this, never "CLI/CLI.hpp" directly: GCC 12's -Wnull-dereference false positive in
// CLI11's inline code (CLI::detail::split) is silenced for its headers only
// (base/third_party_warnings.h).
#pragma once

#include "base/third_party_warnings.h"

CACHESVC_THIRD_PARTY_BEGIN
#include "CLI/CLI.hpp"  // IWYU pragma: export
CACHESVC_THIRD_PARTY_END
