// cachesvc/server_metrics.h: the daemon's metrics that are read from its parts at scrape time
// (tier occupancy and traffic, the block store's leases, hits, evictions and checksum failures,
// tenants' bytes). Per-RPC counters and latency histograms are recorded by the handlers.
#pragma once

#include "cachesvc/block_store.h"
#include "cachesvc/metrics.h"
#include "cachesvc/session_store.h"
#include "cachesvc/tenants.h"
#include "cachesvc/tier_set.h"

namespace cachesvc {

// Everything given must outlive `registry`'s last scrape (`tiers`, `store` may be null).
void RegisterMetrics(metrics::Registry& registry, const TierSet* tiers, const BlockStore* store,
                     const TenantRegistry* tenants, const SessionStore* sessions);

}  // namespace cachesvc
