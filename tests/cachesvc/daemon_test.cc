// Starts the real cachesvc binary and talks to it with real gRPC clients: health, reflection and
// AdminService, shutdown on SIGTERM/SIGINT, and the exit code and one-line message for bad
// configuration, a port in use and a data folder in use.
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "absl/strings/str_split.h"
#include "client/admin_client.h"
#include "grpcpp/grpcpp.h"
#include "nlohmann/json.hpp"
#include "support/reflection_subset.grpc.pb.h"
#include "tests/support/daemon.h"
#include "tests/support/subprocess.h"

namespace cachesvc {
namespace {

using ::cachesvc::testing::RunningDaemon;
using ::cachesvc::testing::RunToCompletion;
using ::cachesvc::testing::Subprocess;
using ::grpc::health::v1::HealthCheckResponse;
using namespace std::chrono_literals;

std::filesystem::path FreshDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("daemon_test_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// Small tiers for test daemons: one 64 MiB chunk each, so a test run does not reserve gigabytes.
// The metrics endpoint on a free port, so that test daemons running at once do not collide.
const std::vector<std::string> kSmallTiers = {"--tiers-host-capacity-bytes",
                                              "67108864",
                                              "--tiers-nvme-capacity-bytes",
                                              "67108864",
                                              "--metrics-listen",
                                              "127.0.0.1:0"};

// Lines of output that are not blank.
std::vector<std::string> Lines(const std::string& output) {
  return absl::StrSplit(output, '\n', absl::SkipEmpty());
}

// A running daemon on a free port with its own data folder.
class Daemon {
 public:
  // `extra` flags follow the address and data folder; by default, small tiers.
  explicit Daemon(const std::string& name, std::vector<std::string> extra = kSmallTiers)
      : data_dir_(FreshDir(name) / "data") {
    std::vector<std::string> argv = {CACHESVC_BIN, "--listen", "127.0.0.1:0", "--data-dir",
                                     data_dir_.string()};
    argv.insert(argv.end(), extra.begin(), extra.end());
    if (std::find(extra.begin(), extra.end(), "--metrics-listen") == extra.end()) {
      // Never the default port: test daemons run at once.
      argv.insert(argv.end(), {"--metrics-listen", "127.0.0.1:0"});
    }
    process_ = std::make_unique<Subprocess>(argv);
    if (auto line = process_->WaitForLine("listening on ", 20s)) {
      const auto at = line->find("listening on ") + 13;
      address_ = line->substr(at, line->find(' ', at) - at);
    }
  }
  const std::string& address() const { return address_; }
  const std::filesystem::path& data_dir() const { return data_dir_; }
  Subprocess& process() { return *process_; }

 private:
  std::filesystem::path data_dir_;
  std::unique_ptr<Subprocess> process_;
  std::string address_;
};

std::vector<std::string> ListServices(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  auto stub = grpc::reflection::v1alpha::ServerReflection::NewStub(channel);
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + 5s);
  auto stream = stub->ServerReflectionInfo(&ctx);
  grpc::reflection::v1alpha::ServerReflectionRequest request;
  request.set_list_services("");
  EXPECT_TRUE(stream->Write(request));
  stream->WritesDone();
  grpc::reflection::v1alpha::ServerReflectionResponse response;
  std::vector<std::string> names;
  while (stream->Read(&response)) {
    for (const auto& s : response.list_services_response().service()) names.push_back(s.name());
  }
  EXPECT_TRUE(stream->Finish().ok());
  return names;
}

TEST(DaemonTest, VersionPrintsVersion) {
  auto r = RunToCompletion({CACHESVC_BIN, "--version"});
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.output.starts_with("cachesvc 0.")) << r.output;
}

TEST(DaemonTest, ServesHealthReflectionAndStatusThenExitsZeroOnSigterm) {
  Daemon daemon("sigterm");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();

  client::AdminClient client(daemon.address());
  auto health = client.CheckHealth(5s);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthCheckResponse::SERVING);

  const std::vector<std::string> services = ListServices(daemon.address());
  for (const char* want : {"grpc.health.v1.Health", "cachesvc.v1.AdminService"}) {
    EXPECT_NE(std::find(services.begin(), services.end(), want), services.end()) << want;
  }

  auto status = client.GetStatus(5s);
  ASSERT_TRUE(status.ok()) << status.status();
  EXPECT_TRUE(status->version().starts_with("0.")) << status->version();
  EXPECT_FALSE(status->draining());
  EXPECT_GT(status->started_unix_ms(), 0);

  daemon.process().Signal(SIGTERM);
  EXPECT_EQ(daemon.process().Wait(20s), 0) << daemon.process().output();
  EXPECT_NE(daemon.process().output().find("received SIGTERM: draining"), std::string::npos);
  // Once stopped, nothing answers, and the data folder is free for the next daemon.
  EXPECT_FALSE(client.CheckHealth(500ms).ok());
}

// A log reader that stops draining stderr (a full pipe) must not stall requests: lines that
// cannot be written are dropped and counted. Here gRPC's API tracing logs every call, and this
// test never reads the daemon's output after its "listening on" line.
TEST(DaemonTest, AStderrNobodyReadsNeverStallsRequests) {
  const auto dir = FreshDir("stderr_full");
  RunningDaemon daemon(
      {CACHESVC_BIN, "--listen", "127.0.0.1:0", "--data-dir", (dir / "data").string(),
       "--metrics-listen", "127.0.0.1:0", "--log-level", "trace", "--tiers-host-capacity-bytes",
       "0", "--tiers-nvme-capacity-bytes", "0"},
      {{"GRPC_VERBOSITY", "DEBUG"}, {"GRPC_TRACE", "api"}});
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  client::AdminClient client(daemon.address());
  for (int i = 0; i < 400; ++i) {
    auto health = client.CheckHealth(5s);
    ASSERT_TRUE(health.ok()) << "call " << i << ": " << health.status();
  }
  EXPECT_GT(daemon.Metric("cachesvc_log_lines_dropped_total"), 0)
      << "the pipe never filled: the test proves nothing";
  daemon.process().Signal(SIGTERM);
  EXPECT_EQ(daemon.process().Wait(20s), 0);
}

TEST(DaemonTest, SigintAlsoDrainsAndExitsZero) {
  Daemon daemon("sigint");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  daemon.process().Signal(SIGINT);
  EXPECT_EQ(daemon.process().Wait(20s), 0) << daemon.process().output();
}

// Regression: the NVMe tier starts threads (write pipeline, RocksDB) while the tiers open; the stop
// signals used to be blocked only afterwards, so a signal could land in one of those threads and
// kill the daemon (exit 128 + signal) instead of draining it. Several quick rounds make the race
// likely to show if it comes back.
TEST(DaemonTest, StopSignalsNeverKillEvenRightAfterStart) {
  for (int round = 0; round < 6; ++round) {
    Daemon daemon("signal_race_" + std::to_string(round));
    ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
    daemon.process().Signal(round % 2 == 0 ? SIGINT : SIGTERM);
    EXPECT_EQ(daemon.process().Wait(20s), 0) << "round " << round << "\n"
                                             << daemon.process().output();
  }
}

TEST(DaemonTest, DefaultsServeOn50051AndWriteOnlyUnderDataDir) {
  // The README's start command runs the daemon with no flags at all; so does this test, in an
  // empty working folder. It needs the default port free.
  const int probe = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(50051);
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const int one = 1;
  ::setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  const bool port_free = ::bind(probe, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0;
  ::close(probe);
  if (!port_free) GTEST_SKIP() << "127.0.0.1:50051 is in use on this machine";

  const auto cwd = FreshDir("defaults");
  Subprocess daemon({CACHESVC_BIN}, {}, cwd.string());
  ASSERT_TRUE(daemon.WaitForLine("listening on 127.0.0.1:50051", 20s)) << daemon.output();
  client::AdminClient client("127.0.0.1:50051");
  auto health = client.CheckHealth(5s);
  ASSERT_TRUE(health.ok()) << health.status();
  EXPECT_EQ(*health, HealthCheckResponse::SERVING);
  daemon.Signal(SIGTERM);
  EXPECT_EQ(daemon.Wait(20s), 0) << daemon.output();

  std::vector<std::string> entries;
  for (const auto& e : std::filesystem::directory_iterator(cwd))
    entries.push_back(e.path().filename());
  EXPECT_EQ(entries, std::vector<std::string>{"cachesvc-data"});
  // The default tiers: 1 GiB of host memory and a 1 GiB NVMe file inside the data folder.
  EXPECT_EQ(std::filesystem::file_size(cwd / "cachesvc-data" / "nvme" / "blocks.dat"), 1u << 30);
  EXPECT_TRUE(std::filesystem::is_directory(cwd / "cachesvc-data" / "nvme" / "index"));
  std::filesystem::remove_all(cwd);
}

TEST(DaemonTest, PortInUseExitsTwoWithOneLine) {
  Daemon first("port_first");
  ASSERT_FALSE(first.address().empty()) << first.process().output();
  const auto dir = FreshDir("port_second");
  auto r =
      RunToCompletion({CACHESVC_BIN, "--listen", first.address(), "--data-dir",
                       (dir / "data").string(), "--log-level", "warn",
                       "--tiers-host-capacity-bytes", "0", "--tiers-nvme-capacity-bytes", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  ASSERT_EQ(Lines(r.output).size(), 1u) << r.output;
  EXPECT_NE(r.output.find("cannot listen on " + first.address() + ": Address already in use"),
            std::string::npos)
      << r.output;
  // The first daemon is untouched.
  client::AdminClient client(first.address());
  EXPECT_TRUE(client.CheckHealth(5s).ok());
}

TEST(DaemonTest, DataDirInUseExitsTwo) {
  Daemon first("datadir");
  ASSERT_FALSE(first.address().empty()) << first.process().output();
  auto r = RunToCompletion({CACHESVC_BIN, "--listen", "127.0.0.1:0", "--data-dir",
                            first.data_dir().string(), "--tiers-host-capacity-bytes", "0",
                            "--tiers-nvme-capacity-bytes", "0"});
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("is in use by another cachesvc"), std::string::npos) << r.output;
}

struct BadStart {
  std::string name;
  std::vector<std::string> args;  // after the binary
  std::map<std::string, std::string> env;
  std::string config;  // written to a file passed with --config, if set
  std::string needle;  // must appear in the one line printed
  friend void PrintTo(const BadStart& c, std::ostream* os) { *os << c.name; }
};

class DaemonBadStartTest : public ::testing::TestWithParam<BadStart> {};

TEST_P(DaemonBadStartTest, ExitsTwoWithOneLineNamingTheProblem) {
  const BadStart& c = GetParam();
  const auto dir = FreshDir("bad_" + c.name);
  std::vector<std::string> argv = {CACHESVC_BIN, "--data-dir", (dir / "data").string()};
  argv.insert(argv.end(), c.args.begin(), c.args.end());
  if (!c.config.empty()) {
    std::ofstream(dir / "cachesvc.toml") << c.config;
    argv.push_back("--config");
    argv.push_back((dir / "cachesvc.toml").string());
  }
  auto r = RunToCompletion(argv, c.env);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  ASSERT_EQ(Lines(r.output).size(), 1u) << r.output;
  EXPECT_TRUE(r.output.starts_with("cachesvc: ")) << r.output;
  EXPECT_NE(r.output.find(c.needle), std::string::npos) << r.output;
  EXPECT_FALSE(std::filesystem::exists(dir / "data")) << "wrote to data_dir before refusing";
}

INSTANTIATE_TEST_SUITE_P(
    Cases, DaemonBadStartTest,
    ::testing::Values(
        BadStart{
            "UnknownKey", {}, {}, "listen = \"127.0.0.1:0\"\ncache_size = 5\n", "'cache_size'"},
        BadStart{"WrongType", {}, {}, "drain_timeout_s = \"soon\"\n", "'drain_timeout_s'"},
        BadStart{"BadToml", {}, {}, "listen = [\n", "line "},
        BadStart{"UnreadableFile",
                 {"--config", "/nonexistent/c.toml"},
                 {},
                 "",
                 "cannot read config file"},
        BadStart{"UnknownFlag", {"--cache-size", "5"}, {}, "", "--cache-size"},
        BadStart{"BadFlagValue",
                 {"--log-level", "loud"},
                 {},
                 "",
                 "config key 'log_level' (flag --log-level)"},
        BadStart{"BadEnvValue", {}, {{"CACHESVC_LISTEN", "nowhere"}}, "", "env CACHESVC_LISTEN"},
        BadStart{"UnknownEnv", {}, {{"CACHESVC_LISTN", "127.0.0.1:1"}}, "", "CACHESVC_LISTN"},
        BadStart{"UnresolvableHost",
                 {"--listen", "no-such-host.invalid:50051"},
                 {},
                 "",
                 "cannot listen on no-such-host.invalid:50051"},
        BadStart{"TierSmallerThanAChunk",
                 {"--tiers-nvme-capacity-bytes", "1000"},
                 {},
                 "",
                 "config key 'tiers.nvme.capacity_bytes' (flag --tiers-nvme-capacity-bytes)"},
        BadStart{"BadBool",
                 {},
                 {{"CACHESVC_TIERS_NVME_DIRECT_IO", "yes"}},
                 "",
                 "expected true or false, got 'yes'"},
        BadStart{"BadHugePages",
                 {},
                 {},
                 "[tiers.host]\nhuge_pages = \"always\"\n",
                 "'always' is not one of none, transparent, hugetlb"}),
    [](const auto& param_info) { return param_info.param.name; });

TEST(DaemonTest, PrintConfigShowsOrigins) {
  auto r = RunToCompletion({CACHESVC_BIN, "--print-config", "--log-level", "debug"},
                           {{"CACHESVC_DRAIN_TIMEOUT_S", "7"}});
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("log_level = \"debug\"  # flag --log-level"), std::string::npos)
      << r.output;
  EXPECT_NE(r.output.find("drain_timeout_s = 7  # env CACHESVC_DRAIN_TIMEOUT_S"),
            std::string::npos);
  EXPECT_NE(r.output.find("listen = \"127.0.0.1:50051\"  # default"), std::string::npos);
}

TEST(DaemonTest, OpensConfiguredTiersAndListsThem) {
  Daemon daemon("tiers");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  EXPECT_TRUE(std::filesystem::exists(daemon.data_dir() / "nvme" / "blocks.dat"));
  auto r = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "--json", "tiers"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto json = nlohmann::json::parse(r.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(json.is_discarded()) << r.output;
  ASSERT_EQ(json["tiers"].size(), 2u) << r.output;
  EXPECT_EQ(json["tiers"][0]["name"], "host");
  EXPECT_EQ(json["tiers"][0]["kind"], "TIER_HOST");
  EXPECT_EQ(json["tiers"][0]["capacity_bytes"], 64u << 20);
  EXPECT_EQ(json["tiers"][1]["name"], "nvme");
  EXPECT_EQ(json["tiers"][1]["kind"], "TIER_NVME");
  EXPECT_EQ(json["tiers"][1]["blocks"], 0u);
  auto table = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "tiers"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find("nvme     TIER_NVME      64.0 MiB"), std::string::npos)
      << table.output;
  daemon.process().Signal(SIGTERM);
  EXPECT_EQ(daemon.process().Wait(20s), 0) << daemon.process().output();
}

TEST(DaemonTest, TiersCanBeLeftOut) {
  Daemon daemon("no_tiers",
                {"--tiers-host-capacity-bytes", "0", "--tiers-nvme-capacity-bytes", "0"});
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  auto r = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "--json", "tiers"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(nlohmann::json::parse(r.output)["tiers"].size(), 0u);
  EXPECT_FALSE(std::filesystem::exists(daemon.data_dir() / "nvme"));
}

TEST(CachectlTest, HealthStatusAndExitCodes) {
  Daemon daemon("cachectl");
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();

  auto health = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "health"});
  EXPECT_EQ(health.exit_code, 0) << health.output;
  EXPECT_EQ(health.output, "SERVING\n");

  auto status = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "--json", "status"});
  EXPECT_EQ(status.exit_code, 0) << status.output;
  auto json = nlohmann::json::parse(status.output, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(json.is_discarded()) << status.output;
  EXPECT_EQ(json["address"], daemon.address());
  EXPECT_EQ(json["draining"], false);

  auto table = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "status"});
  EXPECT_EQ(table.exit_code, 0);
  EXPECT_NE(table.output.find("state        serving"), std::string::npos) << table.output;

  auto usage = RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "no-such-command"});
  EXPECT_EQ(usage.exit_code, 2) << usage.output;

  daemon.process().Signal(SIGTERM);
  ASSERT_EQ(daemon.process().Wait(20s), 0);
  auto unreachable =
      RunToCompletion({CACHECTL_BIN, "--addr", daemon.address(), "--timeout-ms", "1000", "health"});
  EXPECT_EQ(unreachable.exit_code, 3) << unreachable.output;
  EXPECT_TRUE(unreachable.output.starts_with("cachectl: " + daemon.address()))
      << unreachable.output;
}

// hash-token talks to no daemon: it hashes one line of stdin (fed here through /bin/sh, since
// Subprocess gives the child no stdin) for a tenant's token_sha256.
TEST(CachectlTest, HashTokenPrintsSha256OfOneStdinLine) {
  auto hash = [](const std::string& input) {
    return RunToCompletion(
        {"/bin/sh", "-c", "printf '" + input + "' | \"$0\" hash-token", CACHECTL_BIN});
  };
  // SHA-256("abc"), FIPS 180-2; tenants_test pins the daemon's Sha256Hex to the same vector.
  const std::string abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\n";
  for (const char* input : {"abc\\n", "abc", "abc\\r\\n"}) {
    auto r = hash(input);
    EXPECT_EQ(r.exit_code, 0) << input << ": " << r.output;
    EXPECT_EQ(r.output, abc) << input;
  }
  auto empty = hash("\\n");
  EXPECT_EQ(empty.exit_code, 2) << empty.output;
  EXPECT_TRUE(empty.output.starts_with("cachectl: hash-token: ")) << empty.output;
  auto spaced = hash("my token\\n");
  EXPECT_EQ(spaced.exit_code, 2) << spaced.output;
  EXPECT_EQ(spaced.output.find("my token"), std::string::npos) << spaced.output;
}

}  // namespace
}  // namespace cachesvc

namespace cachesvc {
namespace {

// Regression: a start that failed after the tiers opened (here the session store, whose folder is
// a file) crashed in the server's teardown instead of exiting 2 with the reason.
TEST(DaemonTest, AStartThatFailsLateExitsTwoWithTheReason) {
  const auto dir = FreshDir("late_failure") / "data";
  std::filesystem::create_directories(dir);
  std::ofstream(dir / "sessions") << "not a folder\n";
  std::vector<std::string> argv = {CACHESVC_BIN, "--listen", "127.0.0.1:0", "--data-dir",
                                   dir.string()};
  argv.insert(argv.end(), kSmallTiers.begin(), kSmallTiers.end());
  auto r = RunToCompletion(argv);
  EXPECT_EQ(r.exit_code, 2) << r.output;
  EXPECT_NE(r.output.find("sessions"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace cachesvc
