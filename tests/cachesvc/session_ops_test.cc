// SessionOps without gRPC: validation naming fields, layouts per tenant, the sessions quota,
// drain, tool statistics per tenant, time that never goes backwards across a restart, paging, and
// GetSession's block locations after blocks are saved into the block store under the session's
// keys (which only the daemon, holding the tenant's salt, can derive: the wire test cannot).
#include "cachesvc/session_ops.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <memory>
#include <vector>

#include "base/env.h"
#include "cachesvc/block_store.h"
#include "cachesvc/config.h"
#include "cachesvc/layouts.h"
#include "cachesvc/session_store.h"
#include "cachesvc/tenants.h"
#include "cachesvc/tier_set.h"
#include "proto/xxh3.h"

namespace cachesvc {
namespace {

using namespace std::chrono_literals;

// 1 layer x 2 (K, V) x 4 tokens x 1 head x 8 dims x 2 bytes = 128 bytes per RAW block.
ModelLayout SmallLayout() {
  ModelLayout l;
  l.model_id = "small";
  l.num_layers = 1;
  l.num_kv_heads = 1;
  l.head_dim = 8;
  l.dtype = Dtype::kFp16;
  l.block_tokens = 4;
  return l;
}

std::vector<std::uint32_t> Tokens(std::uint32_t n, std::uint32_t first = 1) {
  std::vector<std::uint32_t> t(n);
  for (std::uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

class SessionOpsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("session_ops_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    TenantConfig a{"a", {Sha256Hex("token-a")}, {}, "raw"};
    TenantConfig b{"b", {Sha256Hex("token-b")}, {}, "raw"};
    b.quota.sessions = 2;
    auto tenants = TenantRegistry::Open({a, b}, dir_);
    ASSERT_TRUE(tenants.ok()) << tenants.status();
    tenants_ = std::move(*tenants);
    a_ = tenants_->Find("a");
    b_ = tenants_->Find("b");

    Config config;
    config.host_capacity_bytes = 64 << 20;
    config.host_prefault = false;
    config.nvme_capacity_bytes = 0;
    auto tiers = TierSet::Open(config, dir_);
    ASSERT_TRUE(tiers.ok()) << tiers.status();
    tiers_ = std::move(*tiers);
    auto blocks = BlockStore::Open(tiers_->tiers());
    ASSERT_TRUE(blocks.ok()) << blocks.status();
    blocks_ = std::move(*blocks);
    layouts_.Add("a", SmallLayout());
    layouts_.Add("b", SmallLayout());
    Reopen();
  }

  // A fresh SessionOps over a reopened store, as a restarted daemon has.
  void Reopen() {
    ops_.reset();
    store_.reset();
    auto store = SessionStore::Open(dir_ / "sessions");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    ops_ = std::make_unique<SessionOps>(store_.get(), blocks_.get(), &layouts_, &env_);
  }

  std::string Open(const Tenant& t, std::vector<std::uint32_t> tokens = {}) {
    v1::OpenSessionRequest req;
    req.set_layout_fingerprint(SmallLayout().Fingerprint());
    req.mutable_tokens()->Add(tokens.begin(), tokens.end());
    auto r = ops_->Open(t, req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? r->session_id() : "";
  }

  v1::SessionInfo Get(const Tenant& t, const std::string& id) {
    v1::GetSessionRequest req;
    req.set_session_id(id);
    auto r = ops_->Get(t, req);
    EXPECT_TRUE(r.ok()) << r.status();
    return r.ok() ? *r : v1::SessionInfo();
  }

  // Saves `keys` into the block store for `t` as 128-byte RAW blocks.
  void Save(const Tenant& t, const std::vector<BlockKey>& keys) {
    const ModelLayout layout = SmallLayout();
    const std::uint64_t bytes = layout.RawBlockBytes();
    auto leases = blocks_->Allocate(t.name(), t.salt(), keys, kernels::CodecId::kRaw, bytes, bytes,
                                    layout.Fingerprint());
    ASSERT_TRUE(leases.ok()) << leases.status();
    std::vector<CommitRequest> commits;
    for (const WriteLease& l : leases->leases) {
      std::vector<std::byte> payload(bytes, std::byte{0x5a});
      auto grant = blocks_->BeginWrite(l.lease_id, bytes);
      ASSERT_TRUE(grant.ok()) << grant.status();
      std::memcpy(grant->data, payload.data(), bytes);
      blocks_->EndWrite(l.lease_id, absl::OkStatus());
      commits.push_back({l.lease_id, bytes, XXH3_64bits(payload.data(), bytes)});
    }
    auto committed = blocks_->Commit(t.name(), commits);
    ASSERT_TRUE(committed.ok()) << committed.status();
  }

  std::filesystem::path dir_;
  std::unique_ptr<TenantRegistry> tenants_;
  const Tenant* a_ = nullptr;
  const Tenant* b_ = nullptr;
  std::unique_ptr<TierSet> tiers_;
  std::unique_ptr<BlockStore> blocks_;
  KnownLayouts layouts_;
  ManualEnv env_;
  std::unique_ptr<SessionStore> store_;
  std::unique_ptr<SessionOps> ops_;
};

TEST_F(SessionOpsTest, InvalidRequestsNameTheField) {
  const std::string id = Open(*a_);
  auto expect_invalid = [](const absl::Status& st, const std::string& field) {
    EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
    EXPECT_NE(std::string(st.message()).find(field), std::string::npos) << st;
  };
  v1::OpenSessionRequest open;
  expect_invalid(ops_->Open(*a_, open).status(), "layout_fingerprint");
  open.set_layout_fingerprint(SmallLayout().Fingerprint());
  open.set_client_session_id(std::string(SessionOps::kMaxIdBytes + 1, 'x'));
  expect_invalid(ops_->Open(*a_, open).status(), "client_session_id");

  v1::AppendTokensRequest append;
  append.add_tokens(1);
  expect_invalid(ops_->Append(*a_, append).status(), "session_id");
  append.set_session_id(std::string(SessionOps::kMaxIdBytes + 1, 's'));
  expect_invalid(ops_->Append(*a_, append).status(), "session_id");
  append.set_session_id(id);
  append.clear_tokens();
  expect_invalid(ops_->Append(*a_, append).status(), "tokens");

  v1::BeginToolCallRequest begin;
  begin.set_session_id(id);
  expect_invalid(ops_->BeginToolCall(*a_, begin).status(), "tool_name");
  begin.set_tool_name(std::string(SessionOps::kMaxToolNameBytes + 1, 't'));
  expect_invalid(ops_->BeginToolCall(*a_, begin).status(), "tool_name");
  begin.set_tool_name("search");
  begin.set_expected_ms(SessionOps::kMaxDurationMs + 1);
  expect_invalid(ops_->BeginToolCall(*a_, begin).status(), "expected_ms");

  v1::PinSessionRequest pin;
  pin.set_session_id(id);
  pin.set_duration_ms(0xffffffffu);
  expect_invalid(ops_->Pin(*a_, pin).status(), "duration_ms");

  v1::ForkSessionRequest fork;
  fork.set_session_id(id);
  fork.set_client_session_id(std::string(SessionOps::kMaxIdBytes + 1, 'c'));
  expect_invalid(ops_->Fork(*a_, fork).status(), "client_session_id");

  v1::ListSessionsRequest list;
  list.set_state(static_cast<v1::SessionState>(9));
  expect_invalid(ops_->List(*a_, list).status(), "state");
  expect_invalid(ops_->Get(*a_, v1::GetSessionRequest()).status(), "session_id");
  expect_invalid(ops_->EndToolCall(*a_, v1::EndToolCallRequest()).status(), "session_id");
  expect_invalid(ops_->Truncate(*a_, v1::TruncateSessionRequest()).status(), "session_id");
  expect_invalid(ops_->Close(*a_, v1::CloseSessionRequest()).status(), "session_id");
}

TEST_F(SessionOpsTest, ALayoutIsKnownOnlyToTheTenantWhoseEngineRegisteredIt) {
  ModelLayout other = SmallLayout();
  other.model_id = "other";
  layouts_.Add("a", other);
  v1::OpenSessionRequest req;
  req.set_layout_fingerprint(other.Fingerprint());
  EXPECT_TRUE(ops_->Open(*a_, req).ok());
  EXPECT_EQ(ops_->Open(*b_, req).status().code(), absl::StatusCode::kNotFound);
  req.set_layout_fingerprint(other.Fingerprint() ^ 1);
  EXPECT_EQ(ops_->Open(*a_, req).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SessionOpsTest, TheSessionsQuotaCountsSessionsNotClosed) {
  const std::string first = Open(*b_);
  Open(*b_);
  v1::OpenSessionRequest open;
  open.set_layout_fingerprint(SmallLayout().Fingerprint());
  EXPECT_EQ(ops_->Open(*b_, open).status().code(), absl::StatusCode::kResourceExhausted);
  v1::ForkSessionRequest fork;
  fork.set_session_id(first);
  EXPECT_EQ(ops_->Fork(*b_, fork).status().code(), absl::StatusCode::kResourceExhausted);
  fork.set_session_id("no-such-session");
  EXPECT_EQ(ops_->Fork(*b_, fork).status().code(), absl::StatusCode::kNotFound)
      << "an unknown parent is reported before the quota";
  EXPECT_TRUE(ops_->Open(*a_, open).ok()) << "a has no quota";
  EXPECT_EQ(ops_->open_sessions(), 3u);

  v1::CloseSessionRequest close;
  close.set_session_id(first);
  ASSERT_TRUE(ops_->Close(*b_, close).ok());
  EXPECT_EQ(ops_->open_sessions(), 2u);
  EXPECT_TRUE(ops_->Open(*b_, open).ok());
  EXPECT_EQ(ops_->Open(*b_, open).status().code(), absl::StatusCode::kResourceExhausted);

  Reopen();  // the count comes back from the store
  EXPECT_EQ(ops_->open_sessions(), 3u);
  EXPECT_EQ(ops_->Open(*b_, open).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(SessionOpsTest, DrainingRefusesNewSessionsOnly) {
  const std::string id = Open(*a_, Tokens(4));
  ops_->SetDraining();
  v1::OpenSessionRequest open;
  open.set_layout_fingerprint(SmallLayout().Fingerprint());
  EXPECT_EQ(ops_->Open(*a_, open).status().code(), absl::StatusCode::kUnavailable);
  v1::ForkSessionRequest fork;
  fork.set_session_id(id);
  EXPECT_EQ(ops_->Fork(*a_, fork).status().code(), absl::StatusCode::kUnavailable);
  v1::AppendTokensRequest append;
  append.set_session_id(id);
  append.add_tokens(7);
  auto r = ops_->Append(*a_, append);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->context_tokens(), 5u);
  EXPECT_EQ(r->full_blocks(), 1u);
}

TEST_F(SessionOpsTest, ToolDurationsAreLearnedPerTenant) {
  const std::string ida = Open(*a_);
  const std::string idb = Open(*b_);
  v1::BeginToolCallRequest begin;
  begin.set_tool_name("search");
  begin.set_session_id(ida);
  auto expected = ops_->BeginToolCall(*a_, begin);
  ASSERT_TRUE(expected.ok()) << expected.status();
  EXPECT_EQ(expected->expected_ms(), SessionStore::kDefaultToolExpectationUs / 1000);
  const v1::SessionInfo waiting = Get(*a_, ida);
  EXPECT_EQ(waiting.state(), v1::SESSION_WAITING_TOOL);
  EXPECT_EQ(waiting.tool_name(), "search") << "the caller's name, not the store's";
  env_.Advance(1500ms);
  v1::EndToolCallRequest end;
  end.set_session_id(ida);
  auto elapsed = ops_->EndToolCall(*a_, end);
  ASSERT_TRUE(elapsed.ok()) << elapsed.status();
  EXPECT_EQ(elapsed->elapsed_ms(), 1500u);

  EXPECT_EQ(ops_->BeginToolCall(*a_, begin)->expected_ms(), 1500u) << "learned by a";
  begin.set_session_id(idb);
  EXPECT_EQ(ops_->BeginToolCall(*b_, begin)->expected_ms(),
            SessionStore::kDefaultToolExpectationUs / 1000)
      << "b learns nothing from a's calls";
  v1::EndToolCallRequest end_b;
  end_b.set_session_id(idb);
  EXPECT_EQ(ops_->EndToolCall(*b_, end_b)->elapsed_ms(), 0u);
}

TEST_F(SessionOpsTest, BlockLocationsFollowTheBlockStore) {
  const std::vector<std::uint32_t> tokens = Tokens(10);  // two full blocks of 4, and 2 more
  const std::string id = Open(*a_, tokens);
  const auto keys = DeriveBlockKeys(KeyChainSeed(a_->salt(), SmallLayout().Fingerprint()), tokens,
                                    SmallLayout().block_tokens);
  ASSERT_TRUE(keys.ok());
  ASSERT_EQ(keys->size(), 2u);

  v1::SessionInfo info = Get(*a_, id);
  ASSERT_EQ(info.blocks_size(), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(info.blocks(i).key().key(), std::string((*keys)[i].Bytes())) << i;
    EXPECT_EQ(info.blocks(i).tiers_size(), 0) << "nothing saved yet";
  }

  // The second block alone is not a prefix: still nothing to report.
  Save(*a_, {(*keys)[1]});
  info = Get(*a_, id);
  EXPECT_EQ(info.blocks(0).tiers_size(), 0);
  EXPECT_EQ(info.blocks(1).tiers_size(), 0);

  Save(*a_, {(*keys)[0]});
  info = Get(*a_, id);
  for (int i = 0; i < 2; ++i) {
    ASSERT_EQ(info.blocks(i).tiers_size(), 1) << i;
    EXPECT_EQ(info.blocks(i).tiers(0), v1::TIER_HOST);
    EXPECT_EQ(info.blocks(i).codec(), v1::CODEC_RAW);
  }

  // The same key bytes saved by b are b's blocks, not a's session's.
  const std::string idb = Open(*b_, tokens);
  EXPECT_EQ(Get(*b_, idb).blocks(0).tiers_size(), 0) << "b's chain is seeded with b's salt";
}

TEST_F(SessionOpsTest, TimeNeverGoesBackwardsAcrossARestart) {
  // A session last changed an hour ahead of this host's clock (a clock set back since).
  const std::int64_t later_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                    std::chrono::system_clock::now().time_since_epoch() + 1h)
                                    .count();
  OpenSessionArgs args;
  args.tenant = "a";
  args.layout_fingerprint = SmallLayout().Fingerprint();
  args.block_tokens = SmallLayout().block_tokens;
  args.seed = KeyChainSeed(a_->salt(), args.layout_fingerprint);
  auto id = store_->OpenSession(args, later_us);
  ASSERT_TRUE(id.ok()) << id.status();
  Reopen();
  EXPECT_GE(ops_->NowUs(), later_us);
  v1::AppendTokensRequest append;
  append.set_session_id(*id);
  append.add_tokens(1);
  EXPECT_TRUE(ops_->Append(*a_, append).ok());
}

TEST_F(SessionOpsTest, ListPagesInIdOrderAndFiltersByState) {
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(Open(*a_, Tokens(2)));
  Open(*b_);
  v1::CloseSessionRequest close;
  close.set_session_id(ids[2]);
  ASSERT_TRUE(ops_->Close(*a_, close).ok());

  std::vector<std::string> seen;
  v1::ListSessionsRequest req;
  req.set_limit(2);
  for (int page = 0; page < 10; ++page) {
    auto r = ops_->List(*a_, req);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(r->sessions_size(), 2);
    for (const auto& s : r->sessions()) {
      seen.push_back(s.session_id());
      EXPECT_EQ(s.tokens_size(), 0);
      EXPECT_EQ(s.blocks_size(), 0);
    }
    if (r->next_page_token().empty()) break;
    req.set_page_token(r->next_page_token());
  }
  std::vector<std::string> sorted = ids;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(seen, sorted) << "a's five sessions, none of b's";

  v1::ListSessionsRequest closed;
  closed.set_state(v1::SESSION_CLOSED);
  auto r = ops_->List(*a_, closed);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(r->sessions_size(), 1);
  EXPECT_EQ(r->sessions(0).session_id(), ids[2]);
}

}  // namespace
}  // namespace cachesvc
