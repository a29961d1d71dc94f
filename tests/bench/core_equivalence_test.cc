// One placement core: the same trace, told by the replay's driver (bench/replay/driver.h) to the
// replay's engine (CacheEngine on SimulatedTiers, virtual time) and to the daemon's BlockStore
// (real host and NVMe tiers, a ManualEnv clock, blocks saved and loaded through write and read
// leases as a client does), gives every request the same hits, the same evictions in the same
// order, and every block the same tiers, for each policy the daemon runs. Traces: a prefix of
// the Mooncake conversation trace (no sessions) and a generated agent workload (tool calls,
// sessions closing, forks).
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "base/env.h"
#include "bench/replay/agent_workload.h"
#include "bench/replay/driver.h"
#include "bench/replay/loaders.h"
#include "cachesvc/block_store.h"
#include "cachesvc/cache_engine.h"
#include "proto/xxh3.h"
#include "tiers/host_tier.h"
#include "tiers/nvme_tier.h"

namespace cachesvc {
namespace {

using replay::Trace;
using replay::TraceRequest;
using tiers::TierKind;

constexpr std::string_view kTenant = "t";
constexpr std::string_view kSalt = "salt of t";
constexpr std::uint64_t kBlockBytes = 4096;
constexpr std::uint64_t kHostBlocks = 48;   // 3 chunks of 64 KiB
constexpr std::uint64_t kNvmeBlocks = 160;  // 10 chunks
constexpr std::uint64_t kChunk = 64 << 10;

struct Eviction {
  BlockKey key;
  TierKind from;
  bool moved;
  friend bool operator==(const Eviction&, const Eviction&) = default;
};

std::string SessionName(std::uint64_t session) { return "s" + std::to_string(session); }

// The trace as the engine sees it: tenant-scoped keys and the store's session ids.
Trace Scoped(const Trace& raw) {
  Trace t = raw;
  for (TraceRequest& r : t.requests) {
    for (BlockKey& k : r.blocks) k = TenantBlockKey(kSalt, k);
    if (r.session != 0) r.session = BlockStore::SessionId(kTenant, SessionName(r.session));
  }
  return t;
}

// The daemon's store, told what a daemon is told: its clock moved to each call's time first.
class StoreTarget final : public replay::ReplayTarget {
 public:
  StoreTarget(BlockStore* store, ManualEnv* env) : store_(store), env_(env) {}

  void Prefetch(std::int64_t now_us) override {
    To(now_us);
    store_->Prefetch();
  }
  void ToolCallStarted(std::uint64_t session, std::span<const BlockKey> chain,
                       std::int64_t start_us, std::int64_t expected_end_us) override {
    To(start_us);
    ASSERT_EQ((expected_end_us - start_us) % 1000, 0) << "the store takes milliseconds";
    store_->SetSessionChain(kTenant, kSalt, SessionName(session), chain);
    store_->SessionToolCallStarted(kTenant, SessionName(session),
                                   std::chrono::milliseconds((expected_end_us - start_us) / 1000));
  }
  void ToolCallEnded(std::uint64_t session, std::int64_t now_us) override {
    To(now_us);
    store_->SessionToolCallEnded(kTenant, SessionName(session));
  }
  ServeResult Serve(const TraceRequest& r, std::int64_t now_us, std::span<std::uint8_t>) override {
    To(now_us);
    const std::string session = r.session != 0 ? SessionName(r.session) : "";
    if (r.session != 0) store_->SetSessionChain(kTenant, kSalt, session, r.blocks);
    ServeResult out;
    auto leases = store_->Lease(kTenant, kSalt, r.blocks, /*one_read=*/true, session);
    EXPECT_TRUE(leases.ok()) << leases.status();
    if (!leases.ok()) return out;
    out.prefix_hits = static_cast<std::uint32_t>(leases->size());
    std::vector<std::uint64_t> ids;
    for (const ReadLease& l : *leases) ids.push_back(l.lease_id);
    EXPECT_TRUE(store_->Release(kTenant, ids).ok());  // the engine has read them

    auto alloc = store_->Allocate(kTenant, kSalt, r.blocks, kernels::CodecId::kRaw, kBlockBytes,
                                  kBlockBytes, /*layout_fingerprint=*/1, 0, session);
    if (!alloc.ok()) {
      EXPECT_TRUE(absl::IsResourceExhausted(alloc.status())) << alloc.status();
      return out;
    }
    std::vector<CommitRequest> commits;
    std::vector<std::byte> payload(kBlockBytes);
    for (const WriteLease& l : alloc->leases) {
      std::memcpy(payload.data(), l.key.bytes.data(), l.key.bytes.size());
      auto grant = store_->BeginWrite(l.lease_id, kBlockBytes);
      EXPECT_TRUE(grant.ok()) << grant.status();
      if (!grant.ok()) return out;
      std::memcpy(grant->data, payload.data(), kBlockBytes);
      store_->EndWrite(l.lease_id, absl::OkStatus());
      commits.push_back({l.lease_id, kBlockBytes, XXH3_64bits(payload.data(), kBlockBytes)});
    }
    auto committed = store_->Commit(kTenant, commits);
    EXPECT_TRUE(committed.ok()) << committed.status();
    return out;
  }
  void SessionClosed(std::uint64_t session, std::span<const BlockKey>,
                     std::int64_t now_us) override {
    To(now_us);
    store_->SessionClosed(kTenant, SessionName(session));
  }

 private:
  void To(std::int64_t t_us) {
    const std::int64_t now = env_->NowMicros();
    if (t_us > now) env_->Advance(std::chrono::microseconds(t_us - now));
  }
  BlockStore* const store_;
  ManualEnv* const env_;
};

class CoreEquivalenceTest : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("core_equivalence_" + std::to_string(::getpid()) + "_" +
            std::to_string(::testing::UnitTest::GetInstance()->random_seed()) + "_" +
            std::get<0>(GetParam()) + "_" + std::get<1>(GetParam()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  [[nodiscard]] absl::StatusOr<Trace> LoadTrace() const {
    if (std::get<0>(GetParam()) == "mooncake") {
      replay::LoadOptions o;
      o.limit = 250;
      return replay::LoadMooncake(
          CACHESVC_SOURCE_DIR "/../shared/traces/mooncake-conversation_trace.jsonl", o);
    }
    replay::AgentWorkloadParams p;
    p.seed = 7;
    p.sessions = 8;
    p.session_rate_per_s = 1;
    p.min_turns = 3;
    p.max_turns = 8;
    p.system_prompt_tokens = 1024;
    p.tool_definition_tokens = 1024;
    p.max_context_tokens = 12000;
    p.block_tokens = 512;
    p.fork_probability = 0.15;
    return replay::GenerateAgentWorkload(p);
  }

  std::filesystem::path dir_;
};

TEST_P(CoreEquivalenceTest, DaemonStoreAndReplayMakeTheSameDecisions) {
  const std::string policy_name = std::get<1>(GetParam());
  auto raw = LoadTrace();
  if (!raw.ok() && std::get<0>(GetParam()) == "mooncake") {
    GTEST_SKIP() << "shared/traces is not beside the checkout: " << raw.status();
  }
  ASSERT_TRUE(raw.ok()) << raw.status();
  ASSERT_GT(raw->requests.size(), 20u);
  const Trace scoped = Scoped(*raw);

  // The replay's side.
  BlockIndex index;
  auto policy = MakeResidencyPolicy(policy_name, PolicyParams{.prefetch_lead_us = 1'000'000,
                                                              .pin_ttl_us = 10'000'000,
                                                              .fastest = TierKind::kHost});
  ASSERT_TRUE(policy.ok()) << policy.status();
  SimulatedTiers simulated({SimulatedTiers::Geometry{},
                            SimulatedTiers::Geometry{kHostBlocks * kBlockBytes, kBlockBytes},
                            SimulatedTiers::Geometry{kNvmeBlocks * kBlockBytes, kBlockBytes}});
  CacheEngine engine(&index, policy->get(), &simulated, simulated.Present());
  engine.set_daemon_clients(true);  // as the store: its clients read and write host memory
  std::vector<Eviction> engine_evictions;
  engine.SetEvictionObserver([&](const BlockKey& k, TierKind from, bool moved) {
    engine_evictions.push_back({k, from, moved});
  });

  // The daemon's side.
  ManualEnv env(/*start_micros=*/0);
  tiers::HostTierOptions h;
  h.capacity_bytes = kHostBlocks * kBlockBytes;
  h.min_slot_bytes = kBlockBytes;
  h.max_slot_bytes = kChunk;
  h.prefault = false;
  auto host = tiers::HostTier::Create(h, &env);
  ASSERT_TRUE(host.ok()) << host.status();
  tiers::NvmeTierOptions n;
  n.data_path = dir_ / "blocks.dat";
  n.index_path = dir_ / "index";
  n.capacity_bytes = kNvmeBlocks * kBlockBytes;
  n.min_slot_bytes = kBlockBytes;
  n.max_slot_bytes = kChunk;
  n.direct_io = false;
  auto nvme = tiers::NvmeTier::Open(n, &env);
  ASSERT_TRUE(nvme.ok()) << nvme.status();
  PlacementPolicy placement;
  placement.name = policy_name;
  placement.prefetch_lead = std::chrono::milliseconds(1000);
  placement.pin_ttl = std::chrono::milliseconds(10'000);
  placement.lease_timeout = std::chrono::seconds(60);  // within the tier's lease cap
  auto store = BlockStore::Open({host->get(), nvme->get()}, placement, &env);
  ASSERT_TRUE(store.ok()) << store.status();
  std::vector<Eviction> store_evictions;
  (*store)->SetEvictionObserver([&](const BlockKey& k, TierKind from, bool moved) {
    store_evictions.push_back({k, from, moved});
  });

  replay::ReplayDriver engine_driver(scoped, replay::ToolEstimate::kExact);
  replay::ReplayDriver store_driver(*raw, replay::ToolEstimate::kExact);
  replay::EngineTarget engine_target(&engine);
  StoreTarget store_target(store->get(), &env);
  std::vector<std::pair<BlockKey, BlockKey>> keys;  // (raw, scoped), each block once
  absl::flat_hash_set<BlockKey> known;
  std::uint64_t hits = 0;
  std::vector<std::uint8_t> hit_tiers;
  for (std::size_t ri = 0; ri < raw->requests.size(); ++ri) {
    SCOPED_TRACE("request " + std::to_string(ri));
    hit_tiers.assign(raw->requests[ri].blocks.size(), 0);
    const ServeResult e = engine_driver.Step(ri, engine_target, hit_tiers);
    const ServeResult s = store_driver.Step(ri, store_target, hit_tiers);
    ASSERT_EQ(s.prefix_hits, e.prefix_hits);
    hits += e.prefix_hits;
    ASSERT_EQ(store_evictions.size(), engine_evictions.size());
    ASSERT_TRUE(store_evictions == engine_evictions) << "the same victims, in the same order";
    for (std::size_t i = 0; i < raw->requests[ri].blocks.size(); ++i) {
      if (known.insert(scoped.requests[ri].blocks[i]).second) {
        keys.emplace_back(raw->requests[ri].blocks[i], scoped.requests[ri].blocks[i]);
      }
    }
    if (ri % 10 != 0 && ri + 1 != raw->requests.size()) continue;
    for (const auto& [raw_key, scoped_key] : keys) {
      auto d = (*store)->Describe(kTenant, kSalt, raw_key);
      const TierMask store_tiers = d.ok() ? d->tiers : 0;
      ASSERT_EQ(store_tiers, index.Tiers(scoped_key)) << "block " << scoped_key.Hex();
    }
  }
  // A trace that neither hits nor evicts proves nothing.
  EXPECT_GT(hits, 0u);
  EXPECT_GT(engine_evictions.size(), 0u);
  bool demoted = false;
  for (const Eviction& ev : engine_evictions) demoted = demoted || ev.moved;
  EXPECT_TRUE(demoted) << "no block went down to NVMe";
}

INSTANTIATE_TEST_SUITE_P(Traces, CoreEquivalenceTest,
                         ::testing::Combine(::testing::Values("mooncake", "agent"),
                                            ::testing::Values("lru-tiered", "ttl-pin", "cachesvc")),
                         [](const auto& test) {
                           std::string name =
                               std::get<0>(test.param) + "_" + std::get<1>(test.param);
                           for (char& c : name) {
                             if (c == '-') c = '_';
                           }
                           return name;
                         });

}  // namespace
}  // namespace cachesvc
