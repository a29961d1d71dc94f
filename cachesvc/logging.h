// cachesvc/logging.h: the process-wide logger setup shared by the daemon and cachectl.
//
// Log lines go to stderr as "<UTC time> <level> <message>", one event per line, so that
// journald and log shippers can split them. Call once, early in main, before threads start.
#pragma once

#include <string_view>

#include "absl/status/status.h"

namespace cachesvc {

// `level` is one of trace, debug, info, warn, error, off (config key log_level). Called again
// (SIGHUP), it changes the level only.
absl::Status SetUpLogging(std::string_view level);

}  // namespace cachesvc
