#include "cachesvc/session_store.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <numeric>

namespace cachesvc {
namespace {

class SessionStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("session_store_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    Reopen();
  }
  void TearDown() override {
    store_.reset();
    std::filesystem::remove_all(dir_);
  }
  void Reopen() {
    store_.reset();
    auto s = SessionStore::Open(dir_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = std::move(*s);
  }
  static std::vector<std::uint32_t> Tokens(std::size_t n, std::uint32_t start = 0) {
    std::vector<std::uint32_t> t(n);
    std::iota(t.begin(), t.end(), start);
    return t;
  }
  OpenSessionArgs Args(std::vector<std::uint32_t> tokens = {}) const {
    OpenSessionArgs a;
    a.tenant = "acme";
    a.layout_fingerprint = 42;
    a.block_tokens = 16;
    a.seed = KeyChainSeed("acme-salt", 42);
    a.tokens = std::move(tokens);
    return a;
  }
  std::string OpenOk(std::vector<std::uint32_t> tokens = {}, std::int64_t now = 10) {
    auto id = store_->OpenSession(Args(std::move(tokens)), now);
    EXPECT_TRUE(id.ok()) << id.status();
    return id.value_or("");
  }

  std::filesystem::path dir_;
  std::unique_ptr<SessionStore> store_;
};

TEST_F(SessionStoreTest, AppendDerivesKeysForFullBlocksOnly) {
  const std::string id = OpenOk(Tokens(20));
  auto s = store_->Get("acme", id);
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(s->keys.size(), 1u);
  EXPECT_EQ(s->state, SessionState::kRunning);
  auto added = store_->Append("acme", id, Tokens(30, 20), 11);  // 50 tokens: 3 full blocks
  ASSERT_TRUE(added.ok()) << added.status();
  EXPECT_EQ(added->size(), 2u);
  s = store_->Get("acme", id);
  EXPECT_EQ(s->tokens.size(), 50u);
  // The same keys as deriving the whole context at once: appends chain on correctly.
  EXPECT_EQ(s->keys, *DeriveBlockKeys(Args().seed, Tokens(50), 16));
}

TEST_F(SessionStoreTest, ToolCallsMoveStateAndLearnDurations) {
  const std::string id = OpenOk(Tokens(16));
  auto expected = store_->BeginToolCall("acme", id, "web_search", 0, 100);
  ASSERT_TRUE(expected.ok());
  EXPECT_EQ(*expected, SessionStore::kDefaultToolExpectationUs) << "nothing learned yet";
  EXPECT_EQ(store_->Get("acme", id)->state, SessionState::kWaitingTool);
  EXPECT_EQ(store_->Get("acme", id)->tool->tool_name, "web_search");
  EXPECT_EQ(store_->BeginToolCall("acme", id, "web_search", 0, 101).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Append("acme", id, Tokens(1), 101).status().code(),
            absl::StatusCode::kFailedPrecondition);
  auto elapsed = store_->EndToolCall("acme", id, 2'100'100);
  ASSERT_TRUE(elapsed.ok());
  EXPECT_EQ(*elapsed, 2'100'000);
  EXPECT_EQ(store_->Get("acme", id)->state, SessionState::kIdle);
  EXPECT_EQ(store_->EndToolCall("acme", id, 2'100'200).status().code(),
            absl::StatusCode::kFailedPrecondition);
  // Learned: the next call without an estimate plans with the median of what was seen.
  for (std::int64_t d : {1'000'000, 3'000'000}) {
    const std::int64_t t0 = store_->Get("acme", id)->last_active_us;
    ASSERT_TRUE(store_->BeginToolCall("acme", id, "web_search", 0, t0).ok());
    ASSERT_TRUE(store_->EndToolCall("acme", id, t0 + d).ok());
  }
  const ToolStats stats = store_->Tool("web_search");
  EXPECT_EQ(stats.calls, 3u);
  EXPECT_EQ(stats.p50_us, 2'100'000);
  EXPECT_EQ(*store_->BeginToolCall("acme", id, "web_search", 0, 9'000'000), 2'100'000);
  EXPECT_EQ(*store_->EndToolCall("acme", id, 9'500'000), 500'000);
  EXPECT_EQ(*store_->BeginToolCall("acme", id, "python", 7'000, 9'600'000), 7'000)
      << "caller's estimate wins";
}

TEST_F(SessionStoreTest, ForksOfForksShareTheParentsContext) {
  const std::string root = OpenOk(Tokens(40));
  auto a = store_->Fork("acme", root, "sub-agent-1", 20);
  ASSERT_TRUE(a.ok());
  auto b = store_->Fork("acme", *a, "", 21);
  ASSERT_TRUE(b.ok());
  auto c = store_->Fork("acme", *b, "", 22);
  ASSERT_TRUE(c.ok()) << "a fork of a fork of a fork must work";
  ASSERT_TRUE(store_->Append("acme", *c, Tokens(8, 1000), 23).ok());
  const Session sc = *store_->Get("acme", *c), sr = *store_->Get("acme", root);
  EXPECT_EQ(sc.parent_id, *b);
  EXPECT_EQ(std::vector<BlockKey>(sc.keys.begin(), sc.keys.begin() + 2), sr.keys)
      << "shared blocks";
  EXPECT_EQ(sc.keys.size(), 3u);
  EXPECT_EQ(sr.tokens.size(), 40u) << "the parent is untouched";
}

TEST_F(SessionStoreTest, TruncateRewindsAndRefusesThePastEnd) {
  const std::string id = OpenOk(Tokens(50));
  EXPECT_EQ(store_->Truncate("acme", id, 51, 11).code(), absl::StatusCode::kOutOfRange);
  ASSERT_TRUE(store_->Truncate("acme", id, 33, 11).ok());
  const Session s = *store_->Get("acme", id);
  EXPECT_EQ(s.tokens.size(), 33u);
  EXPECT_EQ(s.keys.size(), 2u);
  ASSERT_TRUE(store_->Append("acme", id, Tokens(20, 500), 12).ok());
  std::vector<std::uint32_t> all = Tokens(33);
  const auto extra = Tokens(20, 500);
  all.insert(all.end(), extra.begin(), extra.end());
  EXPECT_EQ(store_->Get("acme", id)->keys, *DeriveBlockKeys(Args().seed, all, 16));
}

TEST_F(SessionStoreTest, TenantsCannotSeeEachOthersSessions) {
  const std::string id = OpenOk(Tokens(16));
  EXPECT_EQ(store_->Get("other", id).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Append("other", id, Tokens(1), 20).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Close("other", id, 20).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Get("acme", "s-does-not-exist").status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->List("other").size(), 0u);
  EXPECT_EQ(store_->List("acme").size(), 1u);
}

TEST_F(SessionStoreTest, ClosedSessionsRefuseChangesAndTimeMustNotGoBack) {
  const std::string id = OpenOk(Tokens(16), 100);
  EXPECT_EQ(store_->Append("acme", id, Tokens(1), 99).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Get("acme", id)->tokens.size(), 16u) << "a refused call changes nothing";
  ASSERT_TRUE(store_->Pin("acme", id, 5'000'000, 100).ok());
  EXPECT_EQ(store_->Get("acme", id)->pinned_until_us, 5'000'100);
  ASSERT_TRUE(store_->Close("acme", id, 101).ok());
  EXPECT_EQ(store_->Get("acme", id)->state, SessionState::kClosed);
  EXPECT_EQ(store_->Get("acme", id)->pinned_until_us, 0);
  EXPECT_EQ(store_->Append("acme", id, Tokens(1), 102).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Fork("acme", id, "", 102).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Close("acme", id, 102).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SessionStoreTest, BadArgumentsAreRefused) {
  OpenSessionArgs a = Args();
  a.block_tokens = 0;
  EXPECT_EQ(store_->OpenSession(a, 1).status().code(), absl::StatusCode::kInvalidArgument);
  a = Args();
  a.client_session_id.assign(300, 'x');
  EXPECT_EQ(store_->OpenSession(a, 1).status().code(), absl::StatusCode::kInvalidArgument);
  const std::string id = OpenOk();
  EXPECT_EQ(store_->BeginToolCall("acme", id, "", 0, 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->BeginToolCall("acme", id, "t", -1, 20).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Pin("acme", id, -5, 20).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(SessionStoreTest, EverythingSurvivesAReopen) {
  const std::string id = OpenOk(Tokens(40));
  ASSERT_TRUE(store_->BeginToolCall("acme", id, "code_exec", 0, 50).ok());
  auto child = store_->Fork("acme", id, "child", 60);
  ASSERT_TRUE(child.ok());
  ASSERT_TRUE(store_->EndToolCall("acme", id, 3'000'050).ok());
  ASSERT_TRUE(store_->BeginToolCall("acme", *child, "grep", 1234, 70).ok());
  const Session before = *store_->Get("acme", id);
  const Session child_before = *store_->Get("acme", *child);
  Reopen();
  const Session after = *store_->Get("acme", id);
  EXPECT_EQ(after.tokens, before.tokens);
  EXPECT_EQ(after.keys, before.keys) << "keys are derived again from the stored tokens";
  EXPECT_EQ(after.state, SessionState::kIdle);
  const Session child_after = *store_->Get("acme", *child);
  EXPECT_EQ(child_after.state, SessionState::kWaitingTool);
  EXPECT_EQ(child_after.tool->tool_name, "grep");
  EXPECT_EQ(child_after.tool->expected_us, 1234);
  EXPECT_EQ(child_after.parent_id, id);
  EXPECT_EQ(child_after.keys, child_before.keys);
  EXPECT_EQ(store_->Tool("code_exec").calls, 1u);
  EXPECT_EQ(store_->Tool("code_exec").p50_us, 3'000'000);
  // New ids after a reopen do not collide with old ones.
  const std::string fresh = OpenOk({}, 4'000'000);
  EXPECT_NE(fresh, id);
  EXPECT_NE(fresh, *child);
}

}  // namespace
}  // namespace cachesvc
