// cachesvc/admin_service.h: cachesvc.v1.AdminService, the operators' API.
//
// Handlers stay thin: they read the daemon's state and answer; policy and storage logic belong to
// the core. Calls this build does not offer yet answer UNIMPLEMENTED (the generated default).
// Thread-safe: gRPC calls handlers concurrently; all state read here is atomic or constant.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

#include "cachesvc/tier_set.h"
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
  // `tiers` may be null (no tiers); it must outlive the service.
  AdminServiceImpl(DaemonInfo info, const TierSet* tiers) : info_(std::move(info)), tiers_(tiers) {}

  // Marks the daemon as draining; GetStatus reports it from then on.
  void SetDraining() { draining_.store(true, std::memory_order_relaxed); }

  grpc::ServerUnaryReactor* GetStatus(grpc::CallbackServerContext* context,
                                      const v1::GetStatusRequest* request,
                                      v1::GetStatusResponse* response) override;
  grpc::ServerUnaryReactor* ListTiers(grpc::CallbackServerContext* context,
                                      const v1::ListTiersRequest* request,
                                      v1::ListTiersResponse* response) override;

 private:
  const DaemonInfo info_;
  const TierSet* const tiers_;
  std::atomic<bool> draining_{false};
};

}  // namespace cachesvc
