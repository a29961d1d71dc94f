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

grpc::ServerUnaryReactor* AdminServiceImpl::ListTiers(grpc::CallbackServerContext* context,
                                                      const v1::ListTiersRequest* /*request*/,
                                                      v1::ListTiersResponse* response) {
  if (tiers_ != nullptr) {
    for (const tiers::Tier* tier : tiers_->tiers()) {
      const tiers::TierStats s = tier->Stats();
      v1::TierStats* out = response->add_tiers();
      switch (s.kind) {
        case tiers::TierKind::kHbm:
          out->set_kind(v1::TIER_HBM);
          break;
        case tiers::TierKind::kHost:
          out->set_kind(v1::TIER_HOST);
          break;
        case tiers::TierKind::kNvme:
          out->set_kind(v1::TIER_NVME);
          break;
      }
      out->set_name(s.name);
      out->set_capacity_bytes(s.capacity_bytes);
      out->set_used_bytes(s.allocated_bytes);
      out->set_stored_bytes(s.stored_bytes);
      out->set_free_bytes(s.free_bytes);
      out->set_blocks(s.blocks);
      out->set_read_bytes(s.read_bytes);
      out->set_written_bytes(s.write_bytes);
      out->set_checksum_failures(s.checksum_failures);
      out->set_leases_active(s.leases_active);
      out->set_numa_node(tiers_->NumaNode(tier));
      out->set_internal_fragmentation(s.internal_fragmentation);
      out->set_external_fragmentation(s.external_fragmentation);
      // hits, misses and evictions are the service core's to count; it does not run yet.
    }
  }
  auto* reactor = context->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

}  // namespace cachesvc
