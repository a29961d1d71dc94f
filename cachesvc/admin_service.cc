#include "cachesvc/admin_service.h"

namespace cachesvc {

grpc::ServerUnaryReactor* AdminServiceImpl::GetStatus(grpc::CallbackServerContext* context,
                                                      const v1::GetStatusRequest* /*request*/,
                                                      v1::GetStatusResponse* response) {
  response->set_version(info_.version);
  response->set_started_unix_ms(info_.started_unix_ms);
  response->set_draining(draining_.load(std::memory_order_relaxed));
  response->set_gpu_present(info_.gpu_present);
  // Sessions, blocks and leases arrive with the service core; until then there are none.
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace cachesvc
