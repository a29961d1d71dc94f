// cachectl as a user runs it: the real cachectl binary, as a child process, against a real daemon
// (two tenants, host and NVMe tiers, /metrics) whose state the test makes through the real RPCs:
// sessions opened and put in a tool call through SessionService, their blocks saved by an engine
// (client/block_client.h). Every command is run for its table and its --json (parsed, with stdout
// holding nothing else), and every exit code is provoked: 0, 1 (not found, bad token, not
// offered), 2 (usage) and 3 (nothing listening).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "cachesvc/tenants.h"
#include "cachesvc/v1/cachesvc.grpc.pb.h"
#include "client/block_client.h"
#include "fmt/format.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "tests/support/daemon.h"
#include "tests/support/subprocess.h"

namespace cachesvc {
namespace {

using ::cachesvc::testing::RunningDaemon;
using ::cachesvc::testing::RunToCompletion;
using namespace std::chrono_literals;

constexpr char kTokenA[] = "cachectl-token-of-tenant-a";
constexpr char kTokenB[] = "cachectl-token-of-tenant-b";
constexpr std::uint32_t kBlockTokens = 16;

// 2 layers x 2 (K, V) x 16 tokens x 2 heads x 64 dims x 2 bytes = 16 KiB per RAW block.
ModelLayout TestLayout() {
  ModelLayout l;
  l.model_id = "cachectl-test-model";
  l.num_layers = 2;
  l.num_kv_heads = 2;
  l.head_dim = 64;
  l.dtype = Dtype::kFp16;
  l.block_tokens = kBlockTokens;
  return l;
}

// The same layout as cachectl's flags and as a TOML file.
const std::vector<std::string> kLayoutFlags = {
    "--model", "cachectl-test-model", "--layers", "2", "--kv-heads", "2", "--head-dim",
    "64",      "--block-tokens",      "16"};
constexpr char kLayoutToml[] =
    "model_id = \"cachectl-test-model\"\nnum_layers = 2\nnum_kv_heads = 2\nhead_dim = 64\n"
    "dtype = \"fp16\"\nblock_tokens = 16\n";

std::vector<std::uint32_t> Tokens(std::uint32_t n, std::uint32_t first) {
  std::vector<std::uint32_t> t(n);
  for (std::uint32_t i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

std::unique_ptr<grpc::ClientContext> Ctx(const std::string& token) {
  auto ctx = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) ctx->AddMetadata("authorization", "Bearer " + token);
  ctx->set_deadline(std::chrono::system_clock::now() + 10s);
  return ctx;
}

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
int UnusedPort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(addr);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return 1;  // port 1 on loopback: nothing listens there either
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// One cachectl run: exit code, stdout and stderr apart, and stdout parsed as JSON when it is.
struct Ctl {
  int code = -1;
  std::string out;
  std::string err;
  nlohmann::json json;  // discarded unless stdout is one JSON document
  std::string Both() const { return "stdout:\n" + out + "\nstderr:\n" + err; }
};

class CachectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("cachectl_test_" +
            std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
    std::ofstream(dir_ / "cachesvc.toml")
        << "lease_timeout_ms = 5000\n"
        << "[[tenants]]\nname = \"a\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenA) << "\"]\n"
        << "[[tenants]]\nname = \"b\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenB) << "\"]\n";
    daemon_ = std::make_unique<RunningDaemon>(std::vector<std::string>{
        CACHESVC_BIN, "--config", (dir_ / "cachesvc.toml").string(), "--listen", "127.0.0.1:0",
        "--data-dir", (dir_ / "data").string(), "--metrics-listen", "127.0.0.1:0",
        "--drain-timeout-s", "5", "--tiers-host-capacity-bytes", "67108864",
        "--tiers-nvme-capacity-bytes", "67108864"});
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
    ASSERT_FALSE(daemon_->metrics_address().empty()) << daemon_->process().output();
    auto channel = grpc::CreateChannel(daemon_->address(), grpc::InsecureChannelCredentials());
    sessions_ = v1::SessionService::NewStub(channel);

    // An engine of tenant a registers the layout; two sessions: "agent-1" with 40 tokens (2
    // full blocks, both saved) and "agent-2" waiting on a tool.
    client::BlockClientOptions options;
    options.address = daemon_->address();
    options.token = kTokenA;
    auto engine = client::BlockClient::Connect(options);
    ASSERT_TRUE(engine.ok()) << engine.status();
    engine_ = std::move(*engine);
    auto registered = engine_->RegisterEngine(TestLayout());
    ASSERT_TRUE(registered.ok()) << registered.status();
    fingerprint_ = registered->layout_fingerprint;

    prompt_ = Tokens(40, 1000);
    agent1_ = Open(prompt_, "agent-1");
    agent2_ = Open(Tokens(20, 5000), "agent-2");
    v1::BeginToolCallRequest begin;
    begin.set_session_id(agent2_);
    begin.set_tool_name("web_search");
    begin.set_expected_ms(4000);
    v1::BeginToolCallResponse begun;
    ASSERT_TRUE(sessions_->BeginToolCall(Ctx(kTokenA).get(), begin, &begun).ok());

    v1::GetSessionRequest get;
    get.set_session_id(agent1_);
    v1::SessionInfo info;
    ASSERT_TRUE(sessions_->GetSession(Ctx(kTokenA).get(), get, &info).ok());
    ASSERT_EQ(info.blocks_size(), 2);
    std::vector<BlockKey> keys;
    for (const auto& b : info.blocks()) {
      keys.push_back(*BlockKey::FromBytes(b.key().key()));
      key_hex_.push_back(keys.back().Hex());
    }
    std::vector<std::vector<std::byte>> payloads(2, std::vector<std::byte>(16 << 10, std::byte{7}));
    std::vector<std::span<const std::byte>> views(payloads.begin(), payloads.end());
    auto saved = engine_->Save(keys, views);
    ASSERT_TRUE(saved.ok()) << saved.status();
    ASSERT_EQ(*saved, 2u);

    std::ofstream(dir_ / "prompt.txt") << "1000 1001 1002\n"
                                       <<
        [&] {
          std::string rest;
          for (std::size_t i = 3; i < prompt_.size(); ++i) rest += std::to_string(prompt_[i]) + ",";
          return rest;
        }() << "\n";
    std::ofstream(dir_ / "layout.toml") << kLayoutToml;
  }

  std::string Open(const std::vector<std::uint32_t>& tokens, const std::string& name) {
    v1::OpenSessionRequest req;
    req.set_layout_fingerprint(fingerprint_);
    req.set_client_session_id(name);
    req.mutable_tokens()->Add(tokens.begin(), tokens.end());
    v1::OpenSessionResponse resp;
    grpc::Status st = sessions_->OpenSession(Ctx(kTokenA).get(), req, &resp);
    EXPECT_TRUE(st.ok()) << st.error_message();
    return resp.session_id();
  }

  // cachectl ARGS against the daemon as tenant a (`token` overrides; "" sends none), with
  // stderr kept apart so stdout can be checked to be nothing but JSON.
  Ctl Run(std::vector<std::string> args, const std::string& token = kTokenA,
          const std::string& address = "") {
    const std::filesystem::path err = dir_ / "stderr.txt";
    std::vector<std::string> argv = {
        "/bin/sh",    "-c",     "exec \"$0\" \"$@\" 2>\"$CTL_STDERR\"",
        CACHECTL_BIN, "--addr", address.empty() ? daemon_->address() : address};
    argv.insert(argv.end(), args.begin(), args.end());
    // CACHESVC_TOKEN, set or empty, so a caller's environment never leaks into the test.
    auto r = RunToCompletion(argv, {{"CTL_STDERR", err.string()}, {"CACHESVC_TOKEN", token}}, 60s);
    Ctl ctl;
    ctl.code = r.exit_code;
    ctl.out = r.output;
    ctl.err = ReadFile(err);
    ctl.json = nlohmann::json::parse(ctl.out, nullptr, /*allow_exceptions=*/false);
    return ctl;
  }

  // Whether the daemon does not offer an admin call yet; checks that cachectl then says so and
  // exits 1.
  static bool NotOffered(const Ctl& r) {
    if (r.err.find("(UNIMPLEMENTED)") == std::string::npos) return false;
    EXPECT_EQ(r.code, 1) << r.Both();
    EXPECT_NE(r.err.find("does not offer the call"), std::string::npos) << r.Both();
    return true;
  }

  std::filesystem::path dir_;
  std::unique_ptr<RunningDaemon> daemon_;
  std::unique_ptr<v1::SessionService::Stub> sessions_;
  std::unique_ptr<client::BlockClient> engine_;
  std::uint64_t fingerprint_ = 0;
  std::vector<std::uint32_t> prompt_;
  std::string agent1_;
  std::string agent2_;
  std::vector<std::string> key_hex_;
};

TEST_F(CachectlTest, StatusAndTiers) {
  auto table = Run({"status"});
  ASSERT_EQ(table.code, 0) << table.Both();
  EXPECT_NE(table.out.find("state        serving\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("sessions     2 open\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("blocks       2\n"), std::string::npos) << table.out;

  auto json = Run({"status", "--json"});
  ASSERT_EQ(json.code, 0) << json.Both();
  ASSERT_TRUE(json.json.is_object()) << json.Both();
  EXPECT_EQ(json.json["sessions_open"], 2);
  EXPECT_EQ(json.json["blocks_indexed"], 2);
  EXPECT_EQ(json.json["draining"], false);

  auto tiers = Run({"tiers"});
  ASSERT_EQ(tiers.code, 0) << tiers.Both();
  EXPECT_TRUE(tiers.out.starts_with("NAME     KIND           CAPACITY         USED  USE%"))
      << tiers.out;
  EXPECT_NE(tiers.out.find("host     TIER_HOST      64.0 MiB"), std::string::npos) << tiers.out;

  auto tiers_json = Run({"--json", "tiers"});
  ASSERT_EQ(tiers_json.code, 0) << tiers_json.Both();
  ASSERT_TRUE(tiers_json.json.is_object()) << tiers_json.Both();
  ASSERT_EQ(tiers_json.json["tiers"].size(), 2u);
  EXPECT_EQ(tiers_json.json["tiers"][0]["name"], "host");
  EXPECT_EQ(tiers_json.json["tiers"][0]["blocks"], 2);
  EXPECT_EQ(tiers_json.json["tiers"][0]["capacity_bytes"], 64u << 20);

  auto health = Run({"health"}, "");
  EXPECT_EQ(health.code, 0) << health.Both();
  EXPECT_EQ(health.out, "SERVING\n");
}

TEST_F(CachectlTest, SessionsListAndShow) {
  auto ls = Run({"sessions", "ls"});
  ASSERT_EQ(ls.code, 0) << ls.Both();
  EXPECT_TRUE(ls.out.starts_with("SESSION")) << ls.out;
  std::istringstream lines(ls.out);
  std::map<std::string, std::string> rows;  // client name -> its line
  for (std::string line; std::getline(lines, line);) {
    if (line.find(agent1_) != std::string::npos) rows["agent-1"] = line;
    if (line.find(agent2_) != std::string::npos) rows["agent-2"] = line;
  }
  ASSERT_EQ(rows.size(), 2u) << ls.out;
  EXPECT_NE(rows["agent-1"].find(" running "), std::string::npos) << ls.out;
  EXPECT_NE(rows["agent-1"].find(" 40 "), std::string::npos) << ls.out;
  EXPECT_NE(rows["agent-2"].find(" waiting_tool "), std::string::npos) << ls.out;
  EXPECT_NE(rows["agent-2"].find("web_search (4s)"), std::string::npos) << ls.out;

  auto json = Run({"sessions", "ls", "--json"});
  ASSERT_EQ(json.code, 0) << json.Both();
  ASSERT_TRUE(json.json.is_object()) << json.Both();
  ASSERT_EQ(json.json["sessions"].size(), 2u) << json.out;
  for (const auto& s : json.json["sessions"]) {
    if (s["session_id"] == agent2_) {
      EXPECT_EQ(s["state"], "SESSION_WAITING_TOOL");
      EXPECT_EQ(s["tool_name"], "web_search");
      EXPECT_EQ(s["expected_ms"], 4000);
    } else {
      EXPECT_EQ(s["session_id"], agent1_);
      EXPECT_EQ(s["client_session_id"], "agent-1");
      EXPECT_EQ(s["context_tokens"], 40);
    }
  }
  auto waiting = Run({"sessions", "ls", "--state", "waiting_tool", "--json"});
  ASSERT_EQ(waiting.code, 0) << waiting.Both();
  ASSERT_EQ(waiting.json["sessions"].size(), 1u) << waiting.out;
  EXPECT_EQ(waiting.json["sessions"][0]["session_id"], agent2_);
  EXPECT_EQ(Run({"sessions", "ls", "--state", "sleeping"}).code, 2);
  // Tenant b sees none of tenant a's sessions.
  auto other = Run({"sessions", "ls", "--json"}, kTokenB);
  ASSERT_EQ(other.code, 0) << other.Both();
  EXPECT_EQ(other.json["sessions"].size(), 0u) << other.out;

  auto show = Run({"sessions", "show", agent1_});
  ASSERT_EQ(show.code, 0) << show.Both();
  EXPECT_NE(show.out.find("name         agent-1\n"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("blocks       2 full, 2 cached\n"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find(key_hex_[0] + "  host   raw"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find(key_hex_[1] + "  host   raw"), std::string::npos) << show.out;

  auto show_json = Run({"--json", "sessions", "show", agent1_, "--tokens"});
  ASSERT_EQ(show_json.code, 0) << show_json.Both();
  ASSERT_TRUE(show_json.json.is_object()) << show_json.Both();
  ASSERT_EQ(show_json.json["blocks"].size(), 2u);
  EXPECT_EQ(show_json.json["blocks"][1]["key"], key_hex_[1]);
  EXPECT_EQ(show_json.json["blocks"][1]["tiers"], nlohmann::json::array({"TIER_HOST"}));
  EXPECT_EQ(show_json.json["blocks"][1]["codec"], "CODEC_RAW");
  EXPECT_EQ(show_json.json["tokens"], nlohmann::json(prompt_));
  EXPECT_EQ(show_json.json["layout_fingerprint"], fmt::format("{:016x}", fingerprint_));

  // Not found: an unknown id, and tenant a's session asked for with tenant b's token.
  auto missing = Run({"sessions", "show", "no-such-session"});
  EXPECT_EQ(missing.code, 1) << missing.Both();
  EXPECT_NE(missing.err.find("(NOT_FOUND)"), std::string::npos) << missing.Both();
  EXPECT_TRUE(missing.out.empty()) << missing.out;
  auto missing_json = Run({"sessions", "show", "no-such-session", "--json"});
  EXPECT_EQ(missing_json.code, 1);
  ASSERT_TRUE(missing_json.json.is_object()) << missing_json.Both();
  EXPECT_EQ(missing_json.json["error"]["code"], "NOT_FOUND");
  EXPECT_EQ(missing_json.json["error"]["exit_code"], 1);
  EXPECT_EQ(Run({"sessions", "show", agent1_}, kTokenB).code, 1);
}

TEST_F(CachectlTest, SessionsPinAndClose) {
  auto pin = Run({"sessions", "pin", agent1_, "--for", "90s"});
  ASSERT_EQ(pin.code, 0) << pin.Both();
  EXPECT_EQ(pin.out, "pinned " + agent1_ + " for 1m30s\n");
  auto shown = Run({"sessions", "show", agent1_, "--json"});
  const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  EXPECT_GT(shown.json["pinned_until_unix_ms"].get<std::int64_t>(), now_ms + 60000) << shown.out;
  auto table = Run({"sessions", "show", agent1_});
  EXPECT_NE(table.out.find(" left\n"), std::string::npos) << table.out;

  auto unpin = Run({"sessions", "pin", agent1_, "--for", "0", "--json"});
  ASSERT_EQ(unpin.code, 0) << unpin.Both();
  EXPECT_EQ(unpin.json["pinned"], false);
  EXPECT_LE(
      Run({"sessions", "show", agent1_, "--json"}).json["pinned_until_unix_ms"].get<std::int64_t>(),
      now_ms + 1000);

  EXPECT_EQ(Run({"sessions", "pin", agent1_, "--for", "soon"}).code, 2);
  EXPECT_EQ(Run({"sessions", "pin", agent1_}).code, 2);  // --for is required
  EXPECT_EQ(Run({"sessions", "pin", "no-such-session", "--for", "1s"}).code, 1);

  auto close = Run({"sessions", "close", agent2_});
  ASSERT_EQ(close.code, 0) << close.Both();
  EXPECT_EQ(close.out, "closed " + agent2_ + "\n");
  EXPECT_EQ(Run({"sessions", "show", agent2_, "--json"}).json["state"], "SESSION_CLOSED");
  EXPECT_EQ(Run({"sessions", "close", "no-such-session"}).code, 1);
  auto closed = Run({"sessions", "ls", "--state", "closed", "--json"});
  ASSERT_EQ(closed.json["sessions"].size(), 1u) << closed.out;
}

TEST_F(CachectlTest, PrefixShowsWhichBlocksOfAPromptAreCached) {
  // The layout from a TOML file.
  auto table = Run({"prefix", "--tokens", (dir_ / "prompt.txt").string(), "--layout",
                    (dir_ / "layout.toml").string()});
  ASSERT_EQ(table.code, 0) << table.Both();
  EXPECT_NE(table.out.find("2 of 2 full blocks cached: tokens [0, 32) of 40 need no prefill; the "
                           "last 8 fill no block\n"),
            std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("0  0..15   " + key_hex_[0] + "  host   raw"), std::string::npos)
      << table.out;
  EXPECT_NE(table.out.find("1  16..31  " + key_hex_[1] + "  host   raw"), std::string::npos)
      << table.out;

  // The layout from flags; JSON; a prompt that shares only the first block.
  std::vector<std::uint32_t> forked = prompt_;
  forked[20] = 7;
  forked.resize(64);
  std::ofstream(dir_ / "forked.json") << nlohmann::json(forked).dump();
  std::vector<std::string> args = {"prefix", "--json", "--tokens", (dir_ / "forked.json").string()};
  args.insert(args.end(), kLayoutFlags.begin(), kLayoutFlags.end());
  auto json = Run(args);
  ASSERT_EQ(json.code, 0) << json.Both();
  ASSERT_TRUE(json.json.is_object()) << json.Both();
  EXPECT_EQ(json.json["cached_blocks"], 1);
  EXPECT_EQ(json.json["full_blocks"], 4);
  EXPECT_EQ(json.json["cached_tokens"], 16);
  EXPECT_EQ(json.json["tail_tokens"], 0);
  EXPECT_EQ(json.json["layout_fingerprint"], fmt::format("{:016x}", fingerprint_));
  ASSERT_GE(json.json["blocks"].size(), 1u);
  EXPECT_EQ(json.json["blocks"][0]["key"], key_hex_[0]);
  EXPECT_EQ(json.json["blocks"][0]["cached"], true);
  EXPECT_EQ(json.json["blocks"][0]["tiers"], nlohmann::json::array({"TIER_HOST"}));
  if (json.json["blocks"].size() > 1) {  // a daemon that names the keys it did not find
    ASSERT_EQ(json.json["blocks"].size(), 4u);
    EXPECT_EQ(json.json["blocks"][1]["cached"], false);
    EXPECT_NE(json.json["blocks"][1]["key"], key_hex_[1]);
  }

  // Another tenant's salt makes other keys: nothing of tenant a's is cached for tenant b.
  auto other = Run({"prefix", "--json", "--tokens", (dir_ / "prompt.txt").string(), "--layout",
                    (dir_ / "layout.toml").string()},
                   kTokenB);
  ASSERT_EQ(other.code, 0) << other.Both();
  EXPECT_EQ(other.json["cached_blocks"], 0);

  // A flag overrides the file: another block size is another layout, so nothing is cached.
  auto resized = Run({"prefix", "--json", "--tokens", (dir_ / "prompt.txt").string(), "--layout",
                      (dir_ / "layout.toml").string(), "--block-tokens", "8"});
  ASSERT_EQ(resized.code, 0) << resized.Both();
  EXPECT_EQ(resized.json["full_blocks"], 5);
  EXPECT_EQ(resized.json["cached_blocks"], 0);

  // Usage errors: bad token ids, an incomplete layout, a file that is not there, no --tokens.
  std::ofstream(dir_ / "bad.txt") << "1 2 three\n";
  auto bad = Run({"prefix", "--tokens", (dir_ / "bad.txt").string(), "--layout",
                  (dir_ / "layout.toml").string()});
  EXPECT_EQ(bad.code, 2) << bad.Both();
  EXPECT_NE(bad.err.find("'three' is not a token id"), std::string::npos) << bad.err;
  auto incomplete = Run({"prefix", "--json", "--tokens", (dir_ / "prompt.txt").string(), "--model",
                         "m", "--layers", "2"});
  EXPECT_EQ(incomplete.code, 2) << incomplete.Both();
  EXPECT_NE(incomplete.err.find("layout."), std::string::npos) << incomplete.err;
  EXPECT_EQ(incomplete.json["error"]["code"], "USAGE") << incomplete.out;
  EXPECT_EQ(Run({"prefix", "--tokens", (dir_ / "absent.txt").string(), "--layout",
                 (dir_ / "layout.toml").string()})
                .code,
            2);
  EXPECT_EQ(Run({"prefix", "--layout", (dir_ / "layout.toml").string()}).code, 2);
}

TEST_F(CachectlTest, BlocksShow) {
  auto table = Run({"blocks", "show", key_hex_[0]});
  // Usage is checked by cachectl itself, whatever the daemon offers.
  EXPECT_EQ(Run({"blocks", "show", "xyz"}).code, 2);
  EXPECT_EQ(Run({"blocks", "show"}).code, 2);
  if (NotOffered(table)) GTEST_SKIP() << "the daemon answers GetBlock UNIMPLEMENTED: " << table.err;
  ASSERT_EQ(table.code, 0) << table.Both();
  EXPECT_NE(table.out.find("key          " + key_hex_[0] + "\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("tiers        host\n"), std::string::npos) << table.out;
  EXPECT_NE(table.out.find("codec        raw\n"), std::string::npos) << table.out;

  auto json = Run({"blocks", "show", key_hex_[1], "--json"});
  ASSERT_EQ(json.code, 0) << json.Both();
  ASSERT_TRUE(json.json.is_object()) << json.Both();
  EXPECT_EQ(json.json["key"], key_hex_[1]);
  EXPECT_EQ(json.json["tiers"], nlohmann::json::array({"TIER_HOST"}));
  EXPECT_EQ(json.json["codec"], "CODEC_RAW");
  EXPECT_GE(json.json["length"].get<std::uint64_t>(), 16u << 10);
  EXPECT_EQ(json.json["layout_fingerprint"], fmt::format("{:016x}", fingerprint_));

  // An unknown key, and tenant a's key asked for by tenant b: not found.
  auto missing = Run({"blocks", "show", std::string(32, '0'), "--json"});
  EXPECT_EQ(missing.code, 1) << missing.Both();
  EXPECT_EQ(missing.json["error"]["code"], "NOT_FOUND") << missing.out;
  EXPECT_EQ(Run({"blocks", "show", key_hex_[0]}, kTokenB).code, 1);
}

TEST_F(CachectlTest, Evict) {
  // Usage first: exactly one target, a known tier, a well-formed key.
  EXPECT_EQ(Run({"evict"}).code, 2);
  EXPECT_EQ(Run({"evict", "--all", "--session", agent1_}).code, 2);
  EXPECT_EQ(Run({"evict", "--all", "--tier", "tape"}).code, 2);
  EXPECT_EQ(Run({"evict", "--key", "not-a-key"}).code, 2);

  auto one = Run({"evict", "--key", key_hex_[1]});
  if (NotOffered(one)) GTEST_SKIP() << "the daemon answers Evict UNIMPLEMENTED: " << one.err;
  ASSERT_EQ(one.code, 0) << one.Both();
  EXPECT_EQ(one.out.rfind("evicted 1 block (", 0), 0u) << one.out;
  auto shown = Run({"sessions", "show", agent1_, "--json"});
  ASSERT_EQ(shown.json["blocks"].size(), 2u) << shown.out;
  EXPECT_EQ(shown.json["blocks"][0]["tiers"], nlohmann::json::array({"TIER_HOST"}));
  EXPECT_EQ(shown.json["blocks"][1]["tiers"], nlohmann::json::array()) << shown.out;

  // Tenant b cannot evict tenant a's block; the same key again is gone.
  EXPECT_EQ(Run({"evict", "--key", key_hex_[0]}, kTokenB).code, 1);
  EXPECT_EQ(Run({"evict", "--key", key_hex_[1]}).code, 1);

  auto all = Run({"evict", "--all", "--json"});
  ASSERT_EQ(all.code, 0) << all.Both();
  ASSERT_TRUE(all.json.is_object()) << all.Both();
  EXPECT_EQ(all.json["blocks_evicted"], 1);
  EXPECT_GE(all.json["bytes_freed"].get<std::uint64_t>(), 16u << 10);
  auto status = Run({"status", "--json"});
  EXPECT_EQ(status.json["blocks_indexed"], 0) << status.out;
  auto session = Run({"evict", "--session", agent1_, "--tier", "host", "--json"});
  ASSERT_EQ(session.code, 0) << session.Both();
  EXPECT_EQ(session.json["blocks_evicted"], 0);
}

TEST_F(CachectlTest, PolicyGetAndSet) {
  auto get = Run({"policy", "get"});
  // A malformed assignment never reaches the daemon.
  EXPECT_EQ(Run({"policy", "set", "no_equals_sign"}).code, 2);
  EXPECT_EQ(Run({"policy", "set"}).code, 2);
  if (NotOffered(get)) GTEST_SKIP() << "the daemon answers GetPolicy UNIMPLEMENTED: " << get.err;
  ASSERT_EQ(get.code, 0) << get.Both();
  EXPECT_TRUE(get.out.starts_with("policy ")) << get.out;
  EXPECT_NE(get.out.find("KNOB"), std::string::npos) << get.out;

  auto json = Run({"policy", "get", "--json"});
  ASSERT_EQ(json.code, 0) << json.Both();
  ASSERT_TRUE(json.json.is_object()) << json.Both();
  EXPECT_FALSE(json.json["policy"].get<std::string>().empty());
  ASSERT_FALSE(json.json["knobs"].empty()) << json.out;
  const auto knob = json.json["knobs"][0];
  const std::string name = knob["name"];
  const std::string value = knob["value"];

  // Setting a knob to its own value succeeds and answers the knobs after the change.
  auto set = Run({"policy", "set", name + "=" + value, "--json"});
  ASSERT_EQ(set.code, 0) << set.Both();
  bool seen = false;
  for (const auto& k : set.json["knobs"]) seen |= k["name"] == name && k["value"] == value;
  EXPECT_TRUE(seen) << set.out;
  // An unknown knob is refused whole (INVALID_ARGUMENT: a usage error), and nothing changes.
  auto bad = Run({"policy", "set", name + "=" + value, "no_such_knob=1"});
  EXPECT_EQ(bad.code, 2) << bad.Both();
  EXPECT_NE(bad.err.find("no_such_knob"), std::string::npos) << bad.err;
  EXPECT_EQ(Run({"policy", "get", "--json"}).json["knobs"], json.json["knobs"]);
}

TEST_F(CachectlTest, DrainRefusesNewSessions) {
  auto drain = Run({"drain"});
  ASSERT_EQ(drain.code, 0) << drain.Both();
  EXPECT_TRUE(drain.out.starts_with("draining " + daemon_->address())) << drain.out;
  auto status = Run({"status", "--json"});
  EXPECT_EQ(status.json["draining"], true) << status.out;
  EXPECT_NE(Run({"status"}).out.find("state        draining\n"), std::string::npos);
  auto again = Run({"drain", "--json", "--grace", "2s"});
  EXPECT_EQ(again.code, 0) << again.Both();
  EXPECT_EQ(again.json["timeout_ms"], 2000);
  EXPECT_EQ(Run({"drain", "--grace", "later"}).code, 2);
  EXPECT_EQ(Run({"drain"}, "").code, 1);  // a tenant's token is needed
}

TEST_F(CachectlTest, TokensAndUnreachableDaemon) {
  // No token, a wrong token: the daemon answers UNAUTHENTICATED, exit 1.
  auto none = Run({"sessions", "ls"}, "");
  EXPECT_EQ(none.code, 1) << none.Both();
  EXPECT_NE(none.err.find("(UNAUTHENTICATED)"), std::string::npos) << none.err;
  auto wrong = Run({"sessions", "ls", "--json"}, "not-a-known-token");
  EXPECT_EQ(wrong.code, 1) << wrong.Both();
  EXPECT_EQ(wrong.json["error"]["code"], "UNAUTHENTICATED") << wrong.out;
  EXPECT_EQ(wrong.err.find("not-a-known-token"), std::string::npos) << wrong.err;
  // --token and --token-file instead of the environment.
  EXPECT_EQ(Run({"--token", kTokenA, "sessions", "ls"}, "").code, 0);
  std::ofstream(dir_ / "a.token") << kTokenA << "\n";
  EXPECT_EQ(Run({"--token-file", (dir_ / "a.token").string(), "sessions", "ls"}, "").code, 0);
  EXPECT_EQ(Run({"--token-file", (dir_ / "absent.token").string(), "sessions", "ls"}, "").code, 2);
  EXPECT_EQ(Run({"--token", "x", "--token-file", (dir_ / "a.token").string(), "status"}).code, 2);
  // A TLS root given to a plaintext daemon: the handshake fails, nothing is reachable.
  std::ofstream(dir_ / "root.pem") << "not a certificate\n";
  EXPECT_EQ(
      Run({"--tls-root", (dir_ / "root.pem").string(), "--timeout-ms", "2000", "status"}).code, 3);

  // Nothing listening: exit 3 for every command that calls the daemon, JSON error on stdout.
  const std::string nobody = "127.0.0.1:" + std::to_string(UnusedPort());
  for (const std::vector<std::string>& cmd :
       std::vector<std::vector<std::string>>{{"health"},
                                             {"status"},
                                             {"tiers"},
                                             {"sessions", "ls"},
                                             {"sessions", "show", agent1_},
                                             {"blocks", "show", key_hex_[0]},
                                             {"evict", "--all"},
                                             {"policy", "get"},
                                             {"drain"},
                                             {"top", "--once"}}) {
    std::vector<std::string> args = cmd;
    args.push_back("--json");
    auto r = Run(args, kTokenA, nobody);
    EXPECT_EQ(r.code, 3) << cmd[0] << ": " << r.Both();
    EXPECT_TRUE(r.err.starts_with("cachectl: " + nobody + ": ")) << r.err;
    EXPECT_EQ(r.json["error"]["code"], "UNAVAILABLE") << cmd[0] << ": " << r.out;
  }
}

TEST_F(CachectlTest, UsageAndHelp) {
  EXPECT_EQ(Run({}).code, 2);
  EXPECT_EQ(Run({"frobnicate"}).code, 2);
  EXPECT_EQ(Run({"sessions"}).code, 2);
  EXPECT_EQ(Run({"sessions", "show"}).code, 2);
  EXPECT_EQ(Run({"--timeout-ms", "0", "status"}).code, 2);
  auto help = Run({"--help"});
  EXPECT_EQ(help.code, 0);
  for (const char* cmd : {"status", "tiers", "sessions", "blocks", "prefix", "evict", "policy",
                          "drain", "top", "completion", "Examples:", "Exit codes:"}) {
    EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd << "\n" << help.out;
  }
  for (const char* cmd : {"sessions", "prefix", "evict", "policy", "top", "completion"}) {
    auto sub = Run({cmd, "--help"});
    EXPECT_EQ(sub.code, 0) << cmd;
    EXPECT_NE(sub.out.find("Examples:"), std::string::npos) << cmd << "\n" << sub.out;
  }
}

// The bash script completes commands, subcommands and flag values when sourced into bash.
TEST_F(CachectlTest, ShellCompletion) {
  auto bash = Run({"completion", "bash"});
  ASSERT_EQ(bash.code, 0) << bash.Both();
  std::ofstream(dir_ / "cachectl.bash") << bash.out;
  auto complete = [&](const std::string& words, int cword) {
    auto r = RunToCompletion({"/bin/bash", "-c",
                              "source \"$0\"; COMP_WORDS=(" + words + "); COMP_CWORD=" +
                                  std::to_string(cword) + "; _cachectl; echo \"${COMPREPLY[*]}\"",
                              (dir_ / "cachectl.bash").string()});
    EXPECT_EQ(r.exit_code, 0) << r.output;
    return r.output;
  };
  EXPECT_EQ(complete("cachectl se ''", 1), "sessions\n");
  const std::string subs = complete("cachectl --json sessions ''", 3);
  for (const char* w : {"ls", "show", "pin", "close", "--addr", "--json"}) {
    EXPECT_NE(subs.find(w), std::string::npos) << w << ": " << subs;
  }
  EXPECT_EQ(complete("cachectl evict --tier ''", 3), "hbm host nvme all\n");
  EXPECT_EQ(complete("cachectl sessions ls --st", 3), "--state\n");
  EXPECT_EQ(complete("cachectl top --on", 2), "--once\n");

  auto zsh = Run({"completion", "zsh"});
  ASSERT_EQ(zsh.code, 0);
  EXPECT_TRUE(zsh.out.starts_with("#compdef cachectl\n")) << zsh.out;
  EXPECT_EQ(Run({"completion", "fish"}).code, 2);
}

TEST_F(CachectlTest, TopFrames) {
  // With /metrics: daemon-wide sessions by state, hits, RPC rates.
  auto once = Run({"top", "--once", "--metrics", daemon_->metrics_address()});
  ASSERT_EQ(once.code, 0) << once.Both();
  EXPECT_TRUE(once.out.starts_with("cachectl top  " + daemon_->address())) << once.out;
  EXPECT_NE(once.out.find("sessions  running 1  waiting_tool 1  idle 0  closed 0  (all tenants)"),
            std::string::npos)
      << once.out;
  EXPECT_NE(once.out.find("hits      "), std::string::npos) << once.out;
  EXPECT_NE(once.out.find("host  "), std::string::npos) << once.out;
  EXPECT_NE(once.out.find("OpenSession"), std::string::npos) << once.out;
  EXPECT_EQ(once.out.find('\x1b'), std::string::npos) << "no escapes when not a terminal";

  // JSON: one object per frame; the second has rates.
  auto frames = Run({"top", "--json", "--iterations", "2", "--interval-ms", "300", "--metrics",
                     daemon_->metrics_address()});
  ASSERT_EQ(frames.code, 0) << frames.Both();
  std::istringstream lines(frames.out);
  std::vector<nlohmann::json> docs;
  for (std::string line; std::getline(lines, line);) {
    docs.push_back(nlohmann::json::parse(line, nullptr, false));
    ASSERT_FALSE(docs.back().is_discarded()) << line;
  }
  ASSERT_EQ(docs.size(), 2u) << frames.out;
  EXPECT_EQ(docs[0]["sessions"]["waiting_tool"], 1);
  EXPECT_EQ(docs[0]["sessions_scope"], "daemon");
  EXPECT_EQ(docs[0]["tiers"][0]["blocks"], 2);
  EXPECT_TRUE(docs[0]["tiers"][0]["read_bytes_per_s"].is_null());
  EXPECT_TRUE(docs[1]["tiers"][0]["read_bytes_per_s"].is_number()) << docs[1].dump();
  ASSERT_TRUE(docs[1]["rpc"].is_object()) << docs[1].dump();
  EXPECT_TRUE(docs[1]["rpc"].begin().value()["per_s"].is_number()) << docs[1].dump();

  // In place: the cursor goes home and each line is cleared, once per frame.
  auto ansi = Run({"top", "--ansi", "--iterations", "2", "--interval-ms", "100"});
  ASSERT_EQ(ansi.code, 0) << ansi.Both();
  std::size_t homes = 0;
  for (std::size_t at = 0; (at = ansi.out.find("\x1b[H", at)) != std::string::npos; ++at) ++homes;
  EXPECT_EQ(homes, 2u) << ansi.out;
  EXPECT_NE(ansi.out.find("\x1b[K\n"), std::string::npos);
  EXPECT_NE(ansi.out.find("\x1b[?25h"), std::string::npos) << "the cursor is shown again";

  // Without /metrics: the token's tenant's sessions, from ListSessions.
  auto plain = Run({"top", "--once"});
  ASSERT_EQ(plain.code, 0) << plain.Both();
  EXPECT_NE(plain.out.find("running 1  waiting_tool 1  idle 0  closed 0  (this token's tenant)"),
            std::string::npos)
      << plain.out;
  EXPECT_NE(plain.out.find("give --metrics"), std::string::npos) << plain.out;
  EXPECT_EQ(Run({"top", "--once", "--iterations", "2"}).code, 2);
}

}  // namespace
}  // namespace cachesvc
