// client/grpc_status.h: a gRPC status as an absl::Status, for every client library (the two use
// the same codes; the message is kept).
#pragma once

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace cachesvc::client {

[[nodiscard]] inline absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

}  // namespace cachesvc::client
