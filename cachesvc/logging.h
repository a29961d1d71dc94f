// cachesvc/logging.h: the process-wide logger setup shared by the daemon and cachectl.
//
// Log lines go to stderr as "<UTC time> <level> <message>", one event per line, so that
// journald and log shippers can split them. Call once, early in main, before threads start.
//
// Logging never blocks the caller on stderr: a line that stderr cannot take right now (a pipe its
// reader stopped draining) is dropped and counted (LogLinesDropped), so a stuck log reader
// cannot stall a request that logs.
#pragma once

#include <cstdint>
#include <string_view>

#include "absl/status/status.h"

namespace cachesvc {

// `level` is one of trace, debug, info, warn, error, off (config key log_level). Called again
// (SIGHUP), it changes the level only.
[[nodiscard]] absl::Status SetUpLogging(std::string_view level);

// Lines dropped so far because stderr could not take them (metric
// cachesvc_log_lines_dropped_total).
std::uint64_t LogLinesDropped();

}  // namespace cachesvc
