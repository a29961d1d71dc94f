// BlockStore on its injected Env: leases end on the virtual clock (no test sleeps), the times a
// client is shown are the Env's wall time, and a lease past its deadline is refused by every call
// that could use it, whether or not the reaper has run yet.
#include "cachesvc/block_store.h"

#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <memory>
#include <vector>

#include "base/env.h"
#include "proto/xxh3.h"
#include "tiers/host_tier.h"

namespace cachesvc {
namespace {

using namespace std::chrono_literals;

constexpr std::uint64_t kBytes = 4096;

BlockKey Key(std::uint8_t n) {
  BlockKey k;
  k.bytes.fill(n);
  return k;
}

class BlockStoreEnvTest : public ::testing::Test {
 protected:
  void SetUp() override {
    tiers::HostTierOptions o;
    o.capacity_bytes = 4 << 20;
    o.min_slot_bytes = 4096;
    o.max_slot_bytes = 1 << 20;
    o.prefault = false;
    auto host = tiers::HostTier::Create(o, &env_);
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = std::move(*host);
    PlacementPolicy placement;
    placement.lease_timeout = 1000ms;
    auto store = BlockStore::Open({host_.get()}, placement, &env_);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
  }

  // A write lease for `key`, its payload written (not committed).
  WriteLease Write(const BlockKey& key, std::byte fill) {
    auto r = store_->Allocate("t", "salt", std::span(&key, 1), kernels::CodecId::kRaw, kBytes,
                              kBytes, 7);
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok() || r->leases.size() != 1) return {};
    const WriteLease lease = r->leases[0];
    auto grant = store_->BeginWrite(lease.lease_id, kBytes);
    EXPECT_TRUE(grant.ok()) << grant.status();
    if (grant.ok()) std::memset(grant->data, static_cast<int>(fill), kBytes);
    store_->EndWrite(lease.lease_id, absl::OkStatus());
    return lease;
  }

  absl::Status Commit(const WriteLease& lease, std::byte fill) {
    std::vector<std::byte> payload(kBytes, fill);
    const CommitRequest c{lease.lease_id, kBytes, XXH3_64bits(payload.data(), kBytes)};
    return store_->Commit("t", std::span(&c, 1)).status();
  }

  ManualEnv env_;
  std::unique_ptr<tiers::HostTier> host_;
  std::unique_ptr<BlockStore> store_;
};

TEST_F(BlockStoreEnvTest, WriteLeaseEndsOnTheVirtualClockAndItsSlotIsReclaimed) {
  const std::int64_t granted_unix_us = env_.NowUnixMicros();
  const WriteLease lease = Write(Key(1), std::byte{1});
  EXPECT_EQ(lease.expires_unix_ms, granted_unix_us / 1000 + 1000);
  EXPECT_EQ(host_->Stats().slots_in_use, 1u);

  env_.Advance(999ms);
  EXPECT_EQ(store_->ExpireLeases(), 0u);
  EXPECT_TRUE(store_->BeginWrite(lease.lease_id, kBytes).ok());  // still live: write again
  store_->EndWrite(lease.lease_id, absl::OkStatus());

  env_.Advance(1ms);  // at the deadline
  EXPECT_EQ(store_->BeginWrite(lease.lease_id, kBytes).status().code(),
            absl::StatusCode::kNotFound);
  // Not reaped yet, and still refused: a late commit must not publish the block.
  EXPECT_EQ(Commit(lease, std::byte{1}).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ExpireLeases(), 1u);
  EXPECT_EQ(store_->Stats().leases_write, 0u);
  EXPECT_EQ(store_->Stats().leases_expired, 1u);
  EXPECT_EQ(host_->Stats().slots_in_use, 0u);
  EXPECT_EQ(store_->Blocks(), 0u);
}

TEST_F(BlockStoreEnvTest, ReadLeaseEndsOnTheVirtualClockAndTheBlockStays) {
  const BlockKey key = Key(2);
  ASSERT_TRUE(Commit(Write(key, std::byte{2}), std::byte{2}).ok());

  env_.Advance(5s);
  const std::int64_t load_unix_us = env_.NowUnixMicros();
  auto leases = store_->Lease("t", "salt", std::span(&key, 1));
  ASSERT_TRUE(leases.ok()) << leases.status();
  ASSERT_EQ(leases->size(), 1u);
  const ReadLease read = (*leases)[0];
  EXPECT_EQ(read.expires_unix_ms, load_unix_us / 1000 + 1000);
  auto described = store_->Describe("t", "salt", key);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->last_access_unix_ms, load_unix_us / 1000);
  EXPECT_EQ(described->leases, 1u);

  env_.Advance(1s);
  EXPECT_EQ(store_->BeginRead(read.lease_id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->ExpireLeases(), 1u);
  described = store_->Describe("t", "salt", key);
  ASSERT_TRUE(described.ok()) << described.status();
  EXPECT_EQ(described->leases, 0u);
  EXPECT_EQ(store_->Stats().leases_read, 0u);
}

TEST_F(BlockStoreEnvTest, LeaseTimeoutChangesApplyToNewLeasesOnly) {
  const WriteLease first = Write(Key(3), std::byte{3});
  PlacementPolicy p = store_->Policy();
  p.lease_timeout = 10'000ms;
  ASSERT_TRUE(store_->SetPolicy(p).ok());
  const WriteLease second = Write(Key(4), std::byte{4});
  env_.Advance(1s);
  EXPECT_EQ(store_->ExpireLeases(), 1u);  // the first, on its old timeout
  EXPECT_EQ(Commit(first, std::byte{3}).code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Commit(second, std::byte{4}).ok());
  EXPECT_EQ(store_->Blocks(), 1u);
}

}  // namespace
}  // namespace cachesvc

namespace cachesvc {
namespace {

// A write lease longer than the tier's own allocation ttl (30 s here): the tier must not reclaim
// the slot under the lease and hand it to another tenant, whose block the late write would then
// overwrite.
TEST(BlockStoreLeaseTest, ALateWriteNeverLandsInAnotherTenantsBlock) {
  ManualEnv env;
  tiers::HostTierOptions o;
  o.capacity_bytes = 1 << 20;
  o.min_slot_bytes = kBytes;
  o.max_slot_bytes = 1 << 20;
  o.prefault = false;
  ASSERT_EQ(o.slots.allocation_ttl, std::chrono::seconds(30));
  auto host = tiers::HostTier::Create(o, &env);
  ASSERT_TRUE(host.ok()) << host.status();
  PlacementPolicy placement;
  placement.lease_timeout = 60s;
  auto store = BlockStore::Open({host->get()}, placement, &env);
  ASSERT_TRUE(store.ok()) << store.status();

  const BlockKey a = Key(1), b = Key(2);
  auto late = (*store)->Allocate("t1", "salt1", std::span(&a, 1), kernels::CodecId::kRaw, kBytes,
                                 kBytes, 7);
  ASSERT_TRUE(late.ok() && late->leases.size() == 1);
  env.Advance(31s);  // past the tier's allocation ttl, within the lease
  EXPECT_EQ((*store)->ExpireLeases(), 0u);

  // Another tenant saves a block.
  auto other = (*store)->Allocate("t2", "salt2", std::span(&b, 1), kernels::CodecId::kRaw, kBytes,
                                  kBytes, 7);
  ASSERT_TRUE(other.ok() && other->leases.size() == 1);
  std::vector<std::byte> payload(kBytes, std::byte{0x22});
  auto grant = (*store)->BeginWrite(other->leases[0].lease_id, kBytes);
  ASSERT_TRUE(grant.ok()) << grant.status();
  std::memcpy(grant->data, payload.data(), kBytes);
  (*store)->EndWrite(other->leases[0].lease_id, absl::OkStatus());
  const CommitRequest c{other->leases[0].lease_id, kBytes, XXH3_64bits(payload.data(), kBytes)};
  ASSERT_TRUE((*store)->Commit("t2", std::span(&c, 1)).ok());

  // The first tenant's late write goes to its own slot (or is refused), never into t2's block.
  if (auto g = (*store)->BeginWrite(late->leases[0].lease_id, kBytes); g.ok()) {
    std::memset(g->data, 0x11, kBytes);
    (*store)->EndWrite(late->leases[0].lease_id, absl::OkStatus());
  }
  auto read = (*store)->Lease("t2", "salt2", std::span(&b, 1), /*one_read=*/false);
  ASSERT_TRUE(read.ok() && read->size() == 1);
  EXPECT_EQ(std::memcmp(reinterpret_cast<const void*>((*read)[0].address), payload.data(), kBytes),
            0)
      << "another tenant's write landed in this block";
}

}  // namespace
}  // namespace cachesvc
