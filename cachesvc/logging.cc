#include "cachesvc/logging.h"

#include "spdlog/sinks/stdout_sinks.h"
#include "spdlog/spdlog.h"

namespace cachesvc {

absl::Status SetUpLogging(std::string_view level) {
  const auto parsed = spdlog::level::from_str(std::string(level));
  // from_str maps anything it does not know to "off"; only "off" itself may mean that.
  if (parsed == spdlog::level::off && level != "off") {
    return absl::InvalidArgumentError(fmt::format("unknown log level '{}'", level));
  }
  if (auto existing = spdlog::get("cachesvc")) {  // a reload: only the level changes
    existing->set_level(parsed);
    return absl::OkStatus();
  }
  auto logger = spdlog::stderr_logger_mt("cachesvc");
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(parsed);
  logger->flush_on(spdlog::level::trace);  // stderr: every line is written when logged
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace cachesvc
