// Starts the real cachesvc binary with two tenants and talks to it as an agent framework does:
// gRPC SessionService (open, append, tool calls, forks of forks, truncate, pin, get, close), the
// session calls of AdminService, and an engine (client/block_client.h) that registers the layout
// and saves the session's blocks, after which GetSession shows where they are. Tenants isolated,
// bad tokens refused, closed sessions frozen, sessions kept across a restart, drain refusing new
// sessions, and the admin calls the core cannot serve yet answering UNIMPLEMENTED.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cachesvc/tenants.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "client/block_client.h"
#include "grpcpp/grpcpp.h"
#include "tests/support/daemon.h"
#include "tests/support/subprocess.h"

namespace cachesvc {
namespace {

using ::cachesvc::client::BlockClient;
using ::cachesvc::client::BlockClientOptions;
using ::cachesvc::testing::RunningDaemon;
using ::cachesvc::testing::Subprocess;
using namespace std::chrono_literals;

constexpr char kTokenA[] = "session-token-of-tenant-a";
constexpr char kTokenB[] = "session-token-of-tenant-b";

// 2 layers x 2 (K, V) x 16 tokens x 2 heads x 64 dims x 2 bytes = 16 KiB per RAW block.
ModelLayout TestLayout() {
  ModelLayout l;
  l.model_id = "session-test-model";
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.dtype = Dtype::kFp16;
  l.block_tokens = 16;
  return l;
}

std::vector<std::uint32_t> Tokens(std::uint32_t n, std::uint32_t first) {
  std::vector<std::uint32_t> t(n);
  for (std::uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

std::filesystem::path FreshDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("session_api_test_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A daemon with tenants a (no quota) and b (at most 2 open sessions) over `dir`, which a later
// daemon may reuse.
class Daemon {
 public:
  explicit Daemon(const std::filesystem::path& dir) {
    std::ofstream(dir / "cachesvc.toml")
        << "lease_timeout_ms = 5000\n"
        << "[[tenants]]\nname = \"a\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenA) << "\"]\n"
        << "[[tenants]]\nname = \"b\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenB) << "\"]\n"
        << "quota_sessions = 2\n";
    daemon_ = std::make_unique<RunningDaemon>(std::vector<std::string>{
        CACHESVC_BIN, "--config", (dir / "cachesvc.toml").string(), "--listen", "127.0.0.1:0",
        "--data-dir", (dir / "data").string(), "--metrics-listen", "127.0.0.1:0",
        "--drain-timeout-s", "5", "--tiers-host-capacity-bytes", "67108864",
        "--tiers-nvme-capacity-bytes", "67108864"});
    auto channel = grpc::CreateChannel(address(), grpc::InsecureChannelCredentials());
    sessions_ = v1::SessionService::NewStub(channel);
    admin_ = v1::AdminService::NewStub(channel);
  }
  const std::string& address() const { return daemon_->address(); }
  double Metric(const std::string& sample) const { return daemon_->Metric(sample); }
  Subprocess& process() { return daemon_->process(); }
  v1::SessionService::Stub& sessions() { return *sessions_; }
  v1::AdminService::Stub& admin() { return *admin_; }

  // SIGTERM, and the exit code of the drain. This test's channels close first: an idle open
  // channel holds the daemon's drain for the whole drain_timeout_s.
  std::optional<int> Stop() {
    sessions_.reset();
    admin_.reset();
    daemon_->process().Signal(SIGTERM);
    return daemon_->process().Wait(30s);
  }

  std::unique_ptr<BlockClient> Engine(const std::string& token) const {
    BlockClientOptions options;
    options.address = address();
    options.token = token;
    auto c = BlockClient::Connect(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }

 private:
  std::unique_ptr<RunningDaemon> daemon_;
  std::unique_ptr<v1::SessionService::Stub> sessions_;
  std::unique_ptr<v1::AdminService::Stub> admin_;
};

// A call context carrying `token` (none when empty) and a deadline.
std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + 10s);
  return ctx;
}

// Calls `method` of `stub` with `req` as `token`, returning the status and filling `resp`.
#define CALL(stub, method, token, req, resp) (stub).method(Ctx(token).get(), (req), &(resp))

class SessionApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    Start();
  }
  void Start() {
    daemon_ = std::make_unique<Daemon>(dir_);
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
    engine_a_ = daemon_->Engine(kTokenA);
    auto engine = engine_a_->RegisterEngine(TestLayout());
    ASSERT_TRUE(engine.ok()) << engine.status();
    fingerprint_ = engine->layout_fingerprint;
    ASSERT_EQ(fingerprint_, TestLayout().Fingerprint());
  }

  v1::SessionService::Stub& S() { return daemon_->sessions(); }
  v1::AdminService::Stub& A() { return daemon_->admin(); }

  std::string Open(const std::string& token, const std::vector<std::uint32_t>& tokens,
                   const std::string& client_id = "") {
    v1::OpenSessionRequest req;
    req.set_layout_fingerprint(fingerprint_);
    req.set_client_session_id(client_id);
    req.mutable_tokens()->Add(tokens.begin(), tokens.end());
    v1::OpenSessionResponse resp;
    grpc::Status st = CALL(S(), OpenSession, token, req, resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.session_id();
  }
  grpc::Status Get(const std::string& token, const std::string& id, v1::SessionInfo* info,
                   bool include_tokens = true) {
    v1::GetSessionRequest req;
    req.set_session_id(id);
    req.set_include_tokens(include_tokens);
    return S().GetSession(Ctx(token).get(), req, info);
  }
  grpc::Status Append(const std::string& token, const std::string& id,
                      const std::vector<std::uint32_t>& tokens,
                      v1::AppendTokensResponse* resp = nullptr) {
    v1::AppendTokensRequest req;
    req.set_session_id(id);
    req.mutable_tokens()->Add(tokens.begin(), tokens.end());
    v1::AppendTokensResponse ignored;
    return S().AppendTokens(Ctx(token).get(), req, resp != nullptr ? resp : &ignored);
  }
  grpc::Status Begin(const std::string& token, const std::string& id, const std::string& tool,
                     std::uint32_t expected_ms, std::uint32_t* planned = nullptr) {
    v1::BeginToolCallRequest req;
    req.set_session_id(id);
    req.set_tool_name(tool);
    req.set_expected_ms(expected_ms);
    v1::BeginToolCallResponse resp;
    grpc::Status st = CALL(S(), BeginToolCall, token, req, resp);
    if (planned != nullptr) *planned = resp.expected_ms();
    return st;
  }
  grpc::Status End(const std::string& token, const std::string& id,
                   std::uint32_t* elapsed = nullptr) {
    v1::EndToolCallRequest req;
    req.set_session_id(id);
    v1::EndToolCallResponse resp;
    grpc::Status st = CALL(S(), EndToolCall, token, req, resp);
    if (elapsed != nullptr) *elapsed = resp.elapsed_ms();
    return st;
  }
  grpc::Status Fork(const std::string& token, const std::string& id, std::string* child) {
    v1::ForkSessionRequest req;
    req.set_session_id(id);
    v1::ForkSessionResponse resp;
    grpc::Status st = CALL(S(), ForkSession, token, req, resp);
    if (child != nullptr) *child = resp.session_id();
    return st;
  }
  grpc::Status Truncate(const std::string& token, const std::string& id, std::uint64_t keep) {
    v1::TruncateSessionRequest req;
    req.set_session_id(id);
    req.set_keep_tokens(keep);
    v1::TruncateSessionResponse resp;
    grpc::Status st = CALL(S(), TruncateSession, token, req, resp);
    if (st.ok()) {
      EXPECT_EQ(resp.context_tokens(), keep);
    }
    return st;
  }
  grpc::Status Pin(const std::string& token, const std::string& id, std::uint32_t ms) {
    v1::PinSessionRequest req;
    req.set_session_id(id);
    req.set_duration_ms(ms);
    v1::PinSessionResponse resp;
    return CALL(S(), PinSession, token, req, resp);
  }
  grpc::Status Close(const std::string& token, const std::string& id) {
    v1::CloseSessionRequest req;
    req.set_session_id(id);
    v1::CloseSessionResponse resp;
    return CALL(S(), CloseSession, token, req, resp);
  }
  v1::GetStatusResponse Status() {
    v1::GetStatusResponse resp;
    grpc::Status st = CALL(A(), GetStatus, "", v1::GetStatusRequest(), resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp;
  }

  std::filesystem::path dir_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<BlockClient> engine_a_;
  std::uint64_t fingerprint_ = 0;
};

std::vector<std::uint32_t> TokensOf(const v1::SessionInfo& info) {
  return {info.tokens().begin(), info.tokens().end()};
}

TEST_F(SessionApiTest, ASessionFromOpenToClose) {
  const auto prompt = Tokens(40, 1000);  // two full blocks of 16, and 8 more
  const std::string id = Open(kTokenA, prompt, "agent-1");
  ASSERT_FALSE(id.empty());

  v1::SessionInfo info;
  ASSERT_TRUE(Get(kTokenA, id, &info).ok());
  EXPECT_EQ(info.session_id(), id);
  EXPECT_EQ(info.client_session_id(), "agent-1");
  EXPECT_EQ(info.layout_fingerprint(), fingerprint_);
  EXPECT_EQ(info.state(), v1::SESSION_RUNNING);
  EXPECT_EQ(info.context_tokens(), 40u);
  EXPECT_EQ(TokensOf(info), prompt);
  ASSERT_EQ(info.blocks_size(), 2);
  for (const auto& b : info.blocks()) EXPECT_EQ(b.tiers_size(), 0) << "nothing saved yet";
  EXPECT_EQ(Status().sessions_open(), 1u);

  // The engine derives the same keys from the same tokens (BlockService, tenant salt), and saves
  // the session's blocks under the keys GetSession names: GetSession then shows them on host.
  EXPECT_EQ(*engine_a_->LookupPrefixTokens(prompt), 0u);
  std::vector<BlockKey> keys;
  for (const auto& b : info.blocks()) keys.push_back(*BlockKey::FromBytes(b.key().key()));
  std::vector<std::vector<std::byte>> payloads(2, std::vector<std::byte>(16 << 10, std::byte{7}));
  std::vector<std::span<const std::byte>> views(payloads.begin(), payloads.end());
  auto saved = engine_a_->Save(keys, views);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(*saved, 2u);
  EXPECT_EQ(*engine_a_->LookupPrefixTokens(prompt), 2u) << "the session's keys are BlockService's";
  ASSERT_TRUE(Get(kTokenA, id, &info).ok());
  for (const auto& b : info.blocks()) {
    ASSERT_EQ(b.tiers_size(), 1);
    EXPECT_EQ(b.tiers(0), v1::TIER_HOST);
    EXPECT_EQ(b.codec(), v1::CODEC_RAW);
  }

  // Append: 50 tokens, three full blocks.
  v1::AppendTokensResponse appended;
  ASSERT_TRUE(Append(kTokenA, id, Tokens(10, 2000), &appended).ok());
  EXPECT_EQ(appended.context_tokens(), 50u);
  EXPECT_EQ(appended.full_blocks(), 3u);

  // A tool call with a given expectation, then one with the learned one.
  std::uint32_t planned = 0;
  ASSERT_TRUE(Begin(kTokenA, id, "web_search", 700, &planned).ok());
  EXPECT_EQ(planned, 700u);
  ASSERT_TRUE(Get(kTokenA, id, &info, false).ok());
  EXPECT_EQ(info.state(), v1::SESSION_WAITING_TOOL);
  EXPECT_EQ(info.tool_name(), "web_search");
  EXPECT_EQ(info.expected_ms(), 700u);
  EXPECT_EQ(info.tokens_size(), 0) << "tokens only when asked for";
  EXPECT_EQ(Append(kTokenA, id, {1}).error_code(), grpc::FAILED_PRECONDITION)
      << "no appends while waiting on a tool";
  EXPECT_EQ(Begin(kTokenA, id, "web_search", 0).error_code(), grpc::FAILED_PRECONDITION);
  std::this_thread::sleep_for(300ms);
  std::uint32_t elapsed = 0;
  ASSERT_TRUE(End(kTokenA, id, &elapsed).ok());
  EXPECT_GE(elapsed, 300u);
  EXPECT_LT(elapsed, 5000u);
  ASSERT_TRUE(Get(kTokenA, id, &info).ok());
  EXPECT_EQ(info.state(), v1::SESSION_IDLE);
  EXPECT_EQ(End(kTokenA, id).error_code(), grpc::FAILED_PRECONDITION) << "no tool call to end";
  ASSERT_TRUE(Begin(kTokenA, id, "web_search", 0, &planned).ok());
  EXPECT_NEAR(planned, elapsed, 1.0) << "learned from the one call that ended";
  ASSERT_TRUE(End(kTokenA, id).ok());

  // A fork of a fork of a fork has the context; changing it leaves its ancestors alone.
  std::string f1, f2, f3;
  ASSERT_TRUE(Fork(kTokenA, id, &f1).ok());
  ASSERT_TRUE(Fork(kTokenA, f1, &f2).ok());
  ASSERT_TRUE(Fork(kTokenA, f2, &f3).ok());
  EXPECT_NE(f3, f2);
  ASSERT_TRUE(Get(kTokenA, f3, &info).ok());
  EXPECT_EQ(info.parent_session_id(), f2);
  EXPECT_EQ(info.context_tokens(), 50u);
  ASSERT_EQ(info.blocks_size(), 3);
  EXPECT_EQ(info.blocks(0).tiers_size(), 1) << "shares the parent's saved blocks";
  ASSERT_TRUE(Append(kTokenA, f3, Tokens(5, 3000)).ok());
  ASSERT_TRUE(Get(kTokenA, f2, &info).ok());
  EXPECT_EQ(info.context_tokens(), 50u);
  EXPECT_EQ(Status().sessions_open(), 4u);

  // Truncate: to 20 tokens (one block); past the end is OUT_OF_RANGE.
  ASSERT_TRUE(Truncate(kTokenA, f3, 20).ok());
  ASSERT_TRUE(Get(kTokenA, f3, &info).ok());
  EXPECT_EQ(info.context_tokens(), 20u);
  EXPECT_EQ(info.blocks_size(), 1);
  EXPECT_EQ(std::vector<std::uint32_t>(info.tokens().begin(), info.tokens().end()),
            std::vector<std::uint32_t>(prompt.begin(), prompt.begin() + 20));
  EXPECT_EQ(Truncate(kTokenA, f3, 21).error_code(), grpc::OUT_OF_RANGE);

  // Pin for 10 s: reported in Unix milliseconds.
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  ASSERT_TRUE(Pin(kTokenA, id, 10000).ok());
  ASSERT_TRUE(Get(kTokenA, id, &info).ok());
  EXPECT_GE(info.pinned_until_unix_ms(), now_ms + 9000);
  EXPECT_LE(info.pinned_until_unix_ms(), now_ms + 11000);

  // Close: the session stays readable and takes no more changes.
  ASSERT_TRUE(Close(kTokenA, id).ok());
  ASSERT_TRUE(Get(kTokenA, id, &info).ok());
  EXPECT_EQ(info.state(), v1::SESSION_CLOSED);
  EXPECT_EQ(info.pinned_until_unix_ms(), 0);
  EXPECT_EQ(Append(kTokenA, id, {1}).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Begin(kTokenA, id, "t", 10).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(End(kTokenA, id).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Fork(kTokenA, id, nullptr).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Truncate(kTokenA, id, 0).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Pin(kTokenA, id, 10).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Close(kTokenA, id).error_code(), grpc::FAILED_PRECONDITION);
  EXPECT_EQ(Status().sessions_open(), 3u);
  EXPECT_EQ(Get(kTokenA, "s-0000000000000000-1", &info).error_code(), grpc::NOT_FOUND);

  // Counted per method and code, like BlockService.
  EXPECT_EQ(daemon_->Metric(R"(cachesvc_rpc_requests_total{code="OK",method="OpenSession"})"), 1);
  EXPECT_EQ(daemon_->Metric(R"(cachesvc_rpc_requests_total{code="NOT_FOUND",method="GetSession"})"),
            1);
  EXPECT_GT(daemon_->Metric(R"(cachesvc_rpc_latency_seconds_count{method="AppendTokens"})"), 0);
}

TEST_F(SessionApiTest, TenantsAndTokens) {
  const std::string id = Open(kTokenA, Tokens(20, 1));
  v1::SessionInfo info;
  // b: a's session does not exist, whatever the call; a's layout is not b's either.
  EXPECT_EQ(Get(kTokenB, id, &info).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Append(kTokenB, id, {1}).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Begin(kTokenB, id, "t", 10).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Fork(kTokenB, id, nullptr).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Close(kTokenB, id).error_code(), grpc::NOT_FOUND);
  {
    v1::GetSessionRequest req;
    req.set_session_id(id);
    EXPECT_EQ(CALL(A(), GetSession, kTokenB, req, info).error_code(), grpc::NOT_FOUND);
  }
  {
    v1::OpenSessionRequest req;
    req.set_layout_fingerprint(fingerprint_);
    v1::OpenSessionResponse resp;
    EXPECT_EQ(CALL(S(), OpenSession, kTokenB, req, resp).error_code(), grpc::NOT_FOUND)
        << "no engine of b registered the layout";
  }
  // Bad or missing tokens.
  for (const char* token : {"", "not-a-known-token"}) {
    grpc::Status st = Get(token, id, &info);
    EXPECT_EQ(st.error_code(), grpc::UNAUTHENTICATED) << token;
    EXPECT_EQ(st.error_message().find("not-a-known-token"), std::string::npos);
    v1::OpenSessionRequest req;
    req.set_layout_fingerprint(fingerprint_);
    v1::OpenSessionResponse resp;
    EXPECT_EQ(CALL(S(), OpenSession, token, req, resp).error_code(), grpc::UNAUTHENTICATED);
    v1::ListSessionsResponse list;
    EXPECT_EQ(CALL(A(), ListSessions, token, v1::ListSessionsRequest(), list).error_code(),
              grpc::UNAUTHENTICATED);
  }

  // The admin view is per tenant: a sees its session, b none.
  v1::ListSessionsResponse list;
  ASSERT_TRUE(CALL(A(), ListSessions, kTokenA, v1::ListSessionsRequest(), list).ok());
  ASSERT_EQ(list.sessions_size(), 1);
  EXPECT_EQ(list.sessions(0).session_id(), id);
  EXPECT_EQ(list.sessions(0).context_tokens(), 20u);
  ASSERT_TRUE(CALL(A(), ListSessions, kTokenB, v1::ListSessionsRequest(), list).ok());
  EXPECT_EQ(list.sessions_size(), 0);

  // Admin pin and close act like SessionService's.
  {
    v1::PinSessionRequest req;
    req.set_session_id(id);
    req.set_duration_ms(5000);
    v1::PinSessionResponse resp;
    EXPECT_EQ(CALL(A(), PinSession, kTokenB, req, resp).error_code(), grpc::NOT_FOUND);
    EXPECT_TRUE(CALL(A(), PinSession, kTokenA, req, resp).ok());
    v1::GetSessionRequest get;
    get.set_session_id(id);
    ASSERT_TRUE(CALL(A(), GetSession, kTokenA, get, info).ok());
    EXPECT_GT(info.pinned_until_unix_ms(), 0);
    v1::CloseSessionRequest close;
    close.set_session_id(id);
    v1::CloseSessionResponse closed;
    EXPECT_TRUE(CALL(A(), CloseSession, kTokenA, close, closed).ok());
    ASSERT_TRUE(Get(kTokenA, id, &info).ok());
    EXPECT_EQ(info.state(), v1::SESSION_CLOSED);
  }
}

TEST_F(SessionApiTest, MalformedRequestsAreInvalidArguments) {
  const std::string id = Open(kTokenA, {});
  v1::SessionInfo info;
  EXPECT_EQ(Get(kTokenA, "", &info).error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(Append(kTokenA, id, {}).error_code(), grpc::INVALID_ARGUMENT);
  grpc::Status st = Begin(kTokenA, id, "t", 24 * 3600 * 1000 + 1);
  EXPECT_EQ(st.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("expected_ms"), std::string::npos) << st.error_message();
  v1::OpenSessionRequest req;
  req.set_layout_fingerprint(fingerprint_);
  req.set_client_session_id(std::string(257, 'x'));
  v1::OpenSessionResponse resp;
  st = CALL(S(), OpenSession, kTokenA, req, resp);
  EXPECT_EQ(st.error_code(), grpc::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("client_session_id"), std::string::npos);
  req.set_client_session_id("");
  req.set_layout_fingerprint(0);
  EXPECT_EQ(CALL(S(), OpenSession, kTokenA, req, resp).error_code(), grpc::INVALID_ARGUMENT);
}

TEST_F(SessionApiTest, QuotaAndDrain) {
  // b's quota is two open sessions.
  auto engine_b = daemon_->Engine(kTokenB);
  ASSERT_TRUE(engine_b->RegisterEngine(TestLayout()).ok());
  const std::string b1 = Open(kTokenB, Tokens(3, 1));
  Open(kTokenB, {});
  v1::OpenSessionRequest req;
  req.set_layout_fingerprint(fingerprint_);
  v1::OpenSessionResponse resp;
  EXPECT_EQ(CALL(S(), OpenSession, kTokenB, req, resp).error_code(), grpc::RESOURCE_EXHAUSTED);
  EXPECT_EQ(Fork(kTokenB, b1, nullptr).error_code(), grpc::RESOURCE_EXHAUSTED);
  ASSERT_TRUE(Close(kTokenB, b1).ok());
  EXPECT_TRUE(CALL(S(), OpenSession, kTokenB, req, resp).ok());

  // Drain: reported, new sessions refused, the rest goes on.
  const std::string a1 = Open(kTokenA, {});
  EXPECT_FALSE(Status().draining());
  v1::DrainResponse drained;
  EXPECT_EQ(CALL(A(), Drain, "", v1::DrainRequest(), drained).error_code(), grpc::UNAUTHENTICATED);
  ASSERT_TRUE(CALL(A(), Drain, kTokenA, v1::DrainRequest(), drained).ok());
  EXPECT_TRUE(Status().draining());
  EXPECT_EQ(Status().sessions_open(), 3u);
  EXPECT_EQ(CALL(S(), OpenSession, kTokenA, req, resp).error_code(), grpc::UNAVAILABLE);
  EXPECT_EQ(Fork(kTokenA, a1, nullptr).error_code(), grpc::UNAVAILABLE);
  EXPECT_TRUE(Append(kTokenA, a1, {1, 2, 3}).ok());
  EXPECT_TRUE(Close(kTokenA, a1).ok());
}

// The block and policy calls need a tenant's token like the session calls (what they do:
// serving_admin_test).
TEST_F(SessionApiTest, AdminBlockAndPolicyCallsNeedAToken) {
  v1::GetBlockRequest get_block;
  get_block.mutable_key()->set_key(std::string(16, 'k'));
  v1::GetBlockResponse block;
  EXPECT_EQ(CALL(A(), GetBlock, "", get_block, block).error_code(), grpc::UNAUTHENTICATED);
  EXPECT_EQ(CALL(A(), GetBlock, kTokenA, get_block, block).error_code(), grpc::NOT_FOUND);
  v1::EvictRequest evict;
  evict.set_all(true);
  v1::EvictResponse evicted;
  EXPECT_EQ(CALL(A(), Evict, "bad", evict, evicted).error_code(), grpc::UNAUTHENTICATED);
  EXPECT_TRUE(CALL(A(), Evict, kTokenA, evict, evicted).ok());
  v1::GetPolicyResponse policy;
  EXPECT_EQ(CALL(A(), GetPolicy, "", v1::GetPolicyRequest(), policy).error_code(),
            grpc::UNAUTHENTICATED);
  EXPECT_TRUE(CALL(A(), GetPolicy, kTokenA, v1::GetPolicyRequest(), policy).ok());
  v1::SetPolicyResponse set;
  EXPECT_EQ(CALL(A(), SetPolicy, "", v1::SetPolicyRequest(), set).error_code(),
            grpc::UNAUTHENTICATED);
}

TEST_F(SessionApiTest, SessionsSurviveARestart) {
  const std::string id = Open(kTokenA, Tokens(35, 500), "survivor");
  ASSERT_TRUE(Begin(kTokenA, id, "code_exec", 2500).ok());
  std::string child;
  ASSERT_TRUE(Fork(kTokenA, id, &child).ok());
  v1::SessionInfo before;
  ASSERT_TRUE(Get(kTokenA, id, &before).ok());

  engine_a_.reset();
  ASSERT_EQ(daemon_->Stop(), 0) << daemon_->process().output();
  daemon_.reset();
  Start();  // same data folder; the engine registers again
  if (HasFatalFailure()) return;

  v1::SessionInfo after;
  ASSERT_TRUE(Get(kTokenA, id, &after).ok());
  EXPECT_EQ(after.client_session_id(), "survivor");
  EXPECT_EQ(after.state(), v1::SESSION_WAITING_TOOL);
  EXPECT_EQ(after.tool_name(), "code_exec");
  EXPECT_EQ(after.expected_ms(), 2500u);
  EXPECT_EQ(TokensOf(after), TokensOf(before));
  ASSERT_EQ(after.blocks_size(), before.blocks_size());
  for (int i = 0; i < after.blocks_size(); ++i) {
    EXPECT_EQ(after.blocks(i).key().key(), before.blocks(i).key().key()) << i;
  }
  EXPECT_EQ(Get(kTokenB, id, &after).error_code(), grpc::NOT_FOUND);
  EXPECT_EQ(Status().sessions_open(), 2u);
  // Time goes on from where it was: the tool call ends, the child takes changes.
  std::uint32_t elapsed = 0;
  ASSERT_TRUE(End(kTokenA, id, &elapsed).ok());
  EXPECT_LT(elapsed, 60000u);
  EXPECT_TRUE(Append(kTokenA, child, {9}).ok());
}

}  // namespace
}  // namespace cachesvc
