// base/errno_message.h: the text of an errno value, safe to call from any thread.
//
// std::strerror may return a buffer shared by every thread (glibc does for values it does not
// know), so the daemon's many threads never call it; this uses GNU strerror_r, which returns
// either a static message or one written into the caller's buffer.
#pragma once

#include <string.h>

#include <string>

namespace cachesvc {

inline std::string ErrnoMessage(int err) {
  char buffer[256];
  // _GNU_SOURCE (always defined by g++ and clang++ on glibc) selects the char*-returning form.
  return std::string(::strerror_r(err, buffer, sizeof buffer));
}

}  // namespace cachesvc
