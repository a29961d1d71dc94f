#include "cachesvc/logging.h"

#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <mutex>

#include "spdlog/sinks/base_sink.h"
#include "spdlog/spdlog.h"

namespace cachesvc {
namespace {

std::atomic<std::uint64_t> g_dropped{0};

// Writes each line to stderr only when stderr can take it now. A pipe that reports POLLOUT has a
// free page, so a write of at most PIPE_BUF bytes then completes without blocking; a longer line
// is cut to that. A file or terminal is always writable. Lines are written in order, whole.
class NonBlockingStderrSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t line;
    formatter_->format(msg, line);
    std::size_t n = line.size();
    if (n > PIPE_BUF) {
      n = PIPE_BUF;
      line[n - 1] = '\n';
    }
    pollfd p{STDERR_FILENO, POLLOUT, 0};
    if (::poll(&p, 1, 0) != 1 || (p.revents & POLLOUT) == 0) {
      g_dropped.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    for (std::size_t done = 0; done < n;) {
      const ssize_t w = ::write(STDERR_FILENO, line.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        g_dropped.fetch_add(1, std::memory_order_relaxed);
        return;
      }
      done += static_cast<std::size_t>(w);
    }
  }
  void flush_() override {}  // every line is written (or dropped) when logged
};

}  // namespace

std::uint64_t LogLinesDropped() { return g_dropped.load(std::memory_order_relaxed); }

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
  auto logger =
      std::make_shared<spdlog::logger>("cachesvc", std::make_shared<NonBlockingStderrSink>());
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%eZ %l %v", spdlog::pattern_time_type::utc);
  logger->set_level(parsed);
  spdlog::register_logger(logger);
  spdlog::set_default_logger(std::move(logger));
  return absl::OkStatus();
}

}  // namespace cachesvc
