#include "cachesvc/server_metrics.h"

#include <string>

#include "cachesvc/logging.h"

namespace cachesvc {

void RegisterMetrics(metrics::Registry& registry, const TierSet* tiers, const BlockStore* store,
                     const TenantRegistry* tenants, const SessionStore* sessions) {
  registry.AddCollector([tiers, store, tenants, sessions](metrics::Collector& c) {
    c.AddCounter("cachesvc_log_lines_dropped_total",
                 "Log lines dropped because stderr could not take them (its reader stopped "
                 "draining it)",
                 {}, static_cast<double>(LogLinesDropped()));
    if (sessions != nullptr) {
      const auto counts = sessions->CountByState();
      const std::pair<SessionState, const char*> states[] = {
          {SessionState::kRunning, "running"},
          {SessionState::kWaitingTool, "waiting_tool"},
          {SessionState::kIdle, "idle"},
          {SessionState::kClosed, "closed"}};
      for (const auto& [state, name] : states) {
        auto it = counts.find(state);
        c.AddGauge("cachesvc_sessions", "Sessions by state", {{"state", name}},
                   it == counts.end() ? 0.0 : static_cast<double>(it->second));
      }
    }
    if (tiers != nullptr) {
      for (const tiers::TierStats& s : tiers->Stats()) {
        const metrics::Labels tier{{"tier", tiers::TierKindName(s.kind)}};
        c.AddGauge("cachesvc_tier_capacity_bytes", "Usable bytes of the tier", tier,
                   static_cast<double>(s.capacity_bytes));
        c.AddGauge("cachesvc_tier_allocated_bytes", "Bytes in allocated slots", tier,
                   static_cast<double>(s.allocated_bytes));
        c.AddGauge("cachesvc_tier_stored_bytes", "Payload bytes of stored blocks", tier,
                   static_cast<double>(s.stored_bytes));
        c.AddGauge("cachesvc_tier_blocks", "Blocks stored in the tier", tier,
                   static_cast<double>(s.blocks));
        c.AddGauge("cachesvc_tier_leases", "Tier leases outstanding", tier,
                   static_cast<double>(s.leases_active));
        c.AddCounter("cachesvc_tier_read_bytes_total", "Bytes read from the tier", tier,
                     static_cast<double>(s.read_bytes));
        c.AddCounter("cachesvc_tier_write_bytes_total", "Bytes written to the tier", tier,
                     static_cast<double>(s.write_bytes));
        c.AddCounter("cachesvc_tier_checksum_failures_total",
                     "Reads whose bytes failed their checksum (block dropped)", tier,
                     static_cast<double>(s.checksum_failures));
        c.AddCounter("cachesvc_tier_allocations_reclaimed_total",
                     "Slots allocated but never written, reclaimed at their timeout", tier,
                     static_cast<double>(s.allocations_reclaimed));
      }
    }
    if (store != nullptr) {
      const BlockStoreStats s = store->Stats();
      c.AddGauge("cachesvc_leases_outstanding", "Leases handed to clients and not yet ended",
                 {{"kind", "read"}}, static_cast<double>(s.leases_read));
      c.AddGauge("cachesvc_leases_outstanding", "Leases handed to clients and not yet ended",
                 {{"kind", "write"}}, static_cast<double>(s.leases_write));
      c.AddCounter("cachesvc_leases_expired_total", "Leases that timed out before release", {},
                   static_cast<double>(s.leases_expired));
      c.AddCounter("cachesvc_block_hits_total", "Blocks leased for loading, by tier served from",
                   {{"tier", "host"}}, static_cast<double>(s.hits));
      c.AddCounter("cachesvc_block_misses_total",
                   "Lookups and leases that stopped at a missing "
                   "block",
                   {}, static_cast<double>(s.misses));
      c.AddCounter("cachesvc_block_commits_total", "Blocks saved", {},
                   static_cast<double>(s.commits));
      c.AddCounter("cachesvc_evictions_total", "Blocks that left a tier, by reason",
                   {{"reason", "demoted"}}, static_cast<double>(s.demoted));
      c.AddCounter("cachesvc_evictions_total", "Blocks that left a tier, by reason",
                   {{"reason", "dropped"}}, static_cast<double>(s.dropped));
      c.AddCounter("cachesvc_evictions_total", "Blocks that left a tier, by reason",
                   {{"reason", "admin"}}, static_cast<double>(s.evicted_admin));
      c.AddCounter("cachesvc_blocks_prefetched_total",
                   "Blocks staged from NVMe to host ahead of a session's expected return", {},
                   static_cast<double>(s.prefetched));
      c.AddCounter("cachesvc_blocks_staged_total", "Blocks copied from NVMe to host for a load", {},
                   static_cast<double>(s.staged));
      c.AddCounter("cachesvc_stage_no_room_total",
                   "Loads of NVMe blocks that missed because host memory had no free slot (all "
                   "taken by leases)",
                   {}, static_cast<double>(s.stage_no_room));
      c.AddCounter("cachesvc_checksum_failures_total",
                   "Commits whose bytes did not match their checksum, and failed NVMe reads", {},
                   static_cast<double>(s.checksum_failures));
      c.AddCounter("cachesvc_dataplane_bytes_total", "Payload bytes moved over the data plane",
                   {{"direction", "load"}}, static_cast<double>(s.bytes_read));
      c.AddCounter("cachesvc_dataplane_bytes_total", "Payload bytes moved over the data plane",
                   {{"direction", "save"}}, static_cast<double>(s.bytes_written));
      c.AddGauge("cachesvc_blocks", "Blocks the daemon holds in any tier", {},
                 static_cast<double>(store->Blocks()));
      if (tenants != nullptr) {
        for (const Tenant* t : tenants->List()) {
          for (tiers::TierKind k : {tiers::TierKind::kHost, tiers::TierKind::kNvme}) {
            c.AddGauge("cachesvc_tenant_bytes", "Slot bytes a tenant's blocks use, by tier",
                       {{"tenant", t->name()}, {"tier", tiers::TierKindName(k)}},
                       static_cast<double>(store->TenantBytes(t->name(), k)));
          }
        }
      }
    }
  });
}

}  // namespace cachesvc
