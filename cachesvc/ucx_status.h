// cachesvc/ucx_status.h: what the daemon's data plane (cachesvc/ucx_dataplane.cc) and the
// client's transport (client/ucx_transport.cc) both need around UCX's C API: its status codes as
// absl::Status with the gRPC canonical codes, its error-pointer macros without C casts, and the
// port check for "host:port" addresses. Include only from .cc files that include <ucp/api/ucp.h>.
#pragma once

#include <ucp/api/ucp.h>

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "fmt/format.h"

namespace cachesvc::ucx_util {

// The gRPC canonical code for a UCX status, with UCX's own words in the message.
[[nodiscard]] inline absl::Status UcsError(ucs_status_t status, std::string_view what) {
  std::string message = fmt::format("{}: {}", what, ucs_status_string(status));
  switch (status) {
    case UCS_ERR_INVALID_PARAM:
    case UCS_ERR_INVALID_ADDR:
      return absl::InvalidArgumentError(message);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(message);
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT:
      return absl::DeadlineExceededError(message);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(message);
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_BUSY:
    case UCS_ERR_IO_ERROR:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NOT_CONNECTED:
      return absl::UnavailableError(message);
    case UCS_ERR_UNSUPPORTED:
      return absl::UnimplementedError(message);
    default:
      return absl::InternalError(message);
  }
}

// UCS_PTR_IS_ERR / UCS_PTR_STATUS without their C casts (the project builds with
// -Wold-style-cast).
inline bool IsErrorPtr(void* ptr) {
  return reinterpret_cast<std::uintptr_t>(ptr) >=
         static_cast<std::uintptr_t>(static_cast<std::intptr_t>(UCS_ERR_LAST));
}
inline ucs_status_t PtrStatus(void* ptr) {
  return static_cast<ucs_status_t>(reinterpret_cast<std::intptr_t>(ptr));
}

// getaddrinfo takes "99999" as a port (modulo 65536); ports are checked with this instead.
inline bool IsPort(const std::string& port) {
  if (port.empty() || port.size() > 5) return false;
  for (const char c : port) {
    if (c < '0' || c > '9') return false;
  }
  return std::stoul(port) <= 65535;
}

}  // namespace cachesvc::ucx_util
