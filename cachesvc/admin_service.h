// cachesvc/admin_service.h: cachesvc.v1.AdminService, the operators' API.
//
// Handlers stay thin: they read the daemon's state and answer; policy and storage logic belong to
// the core. Calls this build does not offer yet answer UNIMPLEMENTED (the generated default).
// Thread-safe: gRPC calls handlers concurrently; all state read here is atomic or constant.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "cachesvc/v1/cachesvc.grpc.pb.h"

namespace cachesvc {

// Facts about this daemon fixed at start.
struct DaemonInfo {
  std::string version;  // "0.1.0 (commit)"
  std::int64_t started_unix_ms = 0;
  bool gpu_present = false;
};

class AdminServiceImpl final : public v1::AdminService::CallbackService {
 public:
  explicit AdminServiceImpl(DaemonInfo info) : info_(std::move(info)) {}

  // Marks the daemon as draining; GetStatus reports it from then on.
  void SetDraining() { draining_.store(true, std::memory_order_relaxed); }

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;

 private:
  const DaemonInfo info_;
  std::atomic<bool> draining_{false};
};

}  // namespace cachesvc
