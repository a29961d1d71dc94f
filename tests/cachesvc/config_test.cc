#include "cachesvc/config.h"

#include <gtest/gtest.h>

#include <cctype>
#include <filesystem>
#include <fstream>

#include "fmt/format.h"

namespace cachesvc {
namespace {

class ConfigTest : public ::testing::Test {
 protected:
  std::string WriteFile(const std::string& text) {
    const auto path =
        std::filesystem::path(::testing::TempDir()) /
        (std::string(::testing::UnitTest::GetInstance()->current_test_info()->name()) + ".toml");
    std::ofstream(path) << text;
    return path.string();
  }

  static void ExpectError(const absl::StatusOr<Config>& config, const std::string& needle) {
    ASSERT_FALSE(config.ok());
    EXPECT_EQ(config.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(config.status().message().find(needle), std::string::npos)
        << "message '" << config.status().message() << "' lacks '" << needle << "'";
  }
};

TEST_F(ConfigTest, DefaultsAreValid) {
  ConfigOrigins origins;
  auto config = LoadConfig({}, &origins);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "127.0.0.1:50051");
  EXPECT_EQ(config->data_dir, "./cachesvc-data");
  EXPECT_EQ(origins.at("listen"), "default");
}

TEST_F(ConfigTest, PrecedenceIsFlagThenEnvThenFileThenDefault) {
  ConfigInputs in;
  in.file = WriteFile("listen = \"127.0.0.1:1000\"\nlog_level = \"debug\"\ndrain_timeout_s = 3\n");
  in.env = {{"CACHESVC_LISTEN", "127.0.0.1:2000"}, {"CACHESVC_LOG_LEVEL", "warn"}};
  in.flags = {{"listen", "127.0.0.1:3000"}};
  ConfigOrigins origins;
  auto config = LoadConfig(in, &origins);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->listen, "127.0.0.1:3000");  // flag beats env and file
  EXPECT_EQ(config->log_level, "warn");         // env beats file
  EXPECT_EQ(config->drain_timeout_s, 3);        // file beats default
  EXPECT_EQ(config->data_dir, "./cachesvc-data");
  EXPECT_EQ(origins.at("listen"), "flag --listen");
  EXPECT_EQ(origins.at("log_level"), "env CACHESVC_LOG_LEVEL");
  EXPECT_EQ(origins.at("drain_timeout_s"), "file " + *in.file);
  EXPECT_EQ(origins.at("data_dir"), "default");
}

TEST_F(ConfigTest, UnknownFileKeyIsNamed) {
  ConfigInputs in;
  in.file = WriteFile("listen = \"127.0.0.1:1\"\nlisten_port = 5\n");
  ExpectError(LoadConfig(in), "unknown config key 'listen_port'");
}

TEST_F(ConfigTest, UnknownNestedKeyIsNamedWithItsPath) {
  ConfigInputs in;
  in.file = WriteFile("[tiers.host]\nbytes = 5\n");
  ExpectError(LoadConfig(in), "unknown config key 'tiers.host.bytes'");
}

TEST_F(ConfigTest, WrongTypeIsNamed) {
  ConfigInputs in;
  in.file = WriteFile("drain_timeout_s = \"ten\"\n");
  ExpectError(LoadConfig(in), "config key 'drain_timeout_s'");
  ExpectError(LoadConfig(in), "expected an integer, got a string");
  in.file = WriteFile("listen = 50051\n");
  ExpectError(LoadConfig(in), "expected a string, got an integer");
}

TEST_F(ConfigTest, UnreadableFileIsNamed) {
  ConfigInputs in;
  in.file = "/nonexistent/cachesvc.toml";
  ExpectError(LoadConfig(in), "cannot read config file '/nonexistent/cachesvc.toml'");
}

TEST_F(ConfigTest, MalformedTomlGivesLine) {
  ConfigInputs in;
  in.file = WriteFile("listen = \"127.0.0.1:1\"\nlog_level = \n");
  ExpectError(LoadConfig(in), "line 2");
}

TEST_F(ConfigTest, UnknownEnvironmentVariableIsNamed) {
  ConfigInputs in;
  in.env = {{"CACHESVC_LISTN", "x"}};
  ExpectError(LoadConfig(in), "CACHESVC_LISTN");
}

TEST_F(ConfigTest, BadEnvIntegerNamesVariable) {
  ConfigInputs in;
  in.env = {{"CACHESVC_DRAIN_TIMEOUT_S", "5s"}};
  ExpectError(LoadConfig(in), "env CACHESVC_DRAIN_TIMEOUT_S");
}

TEST_F(ConfigTest, InvalidValuesNameKeyAndSource) {
  ConfigInputs in;
  in.flags = {{"listen", "localhost"}};
  ExpectError(LoadConfig(in), "config key 'listen' (flag --listen)");
  in.flags = {{"listen", "127.0.0.1:70000"}};
  ExpectError(LoadConfig(in), "0..65535");
  in.flags = {{"log_level", "loud"}};
  ExpectError(LoadConfig(in), "'loud' is not one of");
  in.flags = {{"drain_timeout_s", "-1"}};
  ExpectError(LoadConfig(in), "out of range");
  in.flags = {{"data_dir", ""}};
  ExpectError(LoadConfig(in), "data_dir");
}

TEST_F(ConfigTest, AcceptsIpv6AndUnixAddresses) {
  for (const char* addr : {"[::1]:50051", "unix:/tmp/cachesvc.sock", "0.0.0.0:0"}) {
    ConfigInputs in;
    in.flags = {{"listen", addr}};
    EXPECT_TRUE(LoadConfig(in).ok()) << addr;
  }
}

TEST_F(ConfigTest, DescribeConfigIsLoadableToml) {
  ConfigInputs in;
  in.flags = {{"log_level", "debug"}};
  ConfigOrigins origins;
  auto config = LoadConfig(in, &origins);
  ASSERT_TRUE(config.ok());
  const std::string described = DescribeConfig(*config, origins);
  EXPECT_NE(described.find("log_level = \"debug\"  # flag --log-level"), std::string::npos)
      << described;
  ConfigInputs again;
  again.file = WriteFile(described);
  auto reloaded = LoadConfig(again);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status();
  EXPECT_EQ(reloaded->log_level, "debug");
}

TEST_F(ConfigTest, TierKeysFromATableWithBooleans) {
  ConfigInputs in;
  in.file = WriteFile(
      "[tiers.host]\ncapacity_bytes = 134217728\nprefault = true\nnuma_node = 0\n"
      "[tiers.nvme]\ncapacity_bytes = 0\ndirect_io = false\n");
  auto config = LoadConfig(in);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->host_capacity_bytes, 134217728);
  EXPECT_TRUE(config->host_prefault);
  EXPECT_EQ(config->host_numa_node, 0);
  EXPECT_EQ(config->nvme_capacity_bytes, 0);
  EXPECT_FALSE(config->nvme_direct_io);
  in.file = WriteFile("[tiers.host]\nprefault = \"yes\"\n");
  ExpectError(LoadConfig(in), "expected a boolean, got a string");
}

TEST_F(ConfigTest, TierValuesAreChecked) {
  ConfigInputs in;
  in.env = {{"CACHESVC_TIERS_HOST_CAPACITY_BYTES", "1000"}};
  ExpectError(LoadConfig(in),
              "config key 'tiers.host.capacity_bytes' (env CACHESVC_TIERS_HOST_CAPACITY_BYTES)");
  in.env = {{"CACHESVC_TIERS_SLOT_MIN_BYTES", "5000"}};
  ExpectError(LoadConfig(in), "not a power of two");
  in.env = {{"CACHESVC_TIERS_SLOT_MAX_BYTES", "8192"}, {"CACHESVC_TIERS_SLOT_MIN_BYTES", "16384"}};
  ExpectError(LoadConfig(in), ">= slot_min_bytes");
  in.env = {{"CACHESVC_TIERS_NVME_DIRECT_IO", "1"}};
  ExpectError(LoadConfig(in), "expected true or false");
  in.env = {{"CACHESVC_TIERS_HOST_HUGE_PAGES", "hugetlb"}};
  EXPECT_TRUE(LoadConfig(in).ok());
}

TEST_F(ConfigTest, ServingKeyDefaults) {
  auto config = LoadConfig({});
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics_listen, "127.0.0.1:9464");
  EXPECT_EQ(config->ucx_listen, "127.0.0.1:0");
  EXPECT_EQ(config->ucx_transports, "");
  EXPECT_EQ(config->lease_timeout_ms, 30000);
  EXPECT_EQ(config->tls_cert_path, "");
  EXPECT_EQ(config->tls_key_path, "");
  EXPECT_TRUE(config->keep_volatile_on_exit);
  EXPECT_TRUE(config->tenants.empty());
}

TEST_F(ConfigTest, ServingKeysFromFileEnvAndFlags) {
  ConfigInputs in;
  in.file = WriteFile(
      "metrics_listen = \"\"\nucx_listen = \"[::1]:7000\"\nucx_transports = \"rc,sm,self\"\n"
      "lease_timeout_ms = 5000\nkeep_volatile_on_exit = false\n");
  in.env = {{"CACHESVC_UCX_TRANSPORTS", "^ud"}, {"CACHESVC_LEASE_TIMEOUT_MS", "1"}};
  in.flags = {{"metrics_listen", "0.0.0.0:9100"}, {"ucx_listen", ""}};
  ConfigOrigins origins;
  auto config = LoadConfig(in, &origins);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->metrics_listen, "0.0.0.0:9100");
  EXPECT_EQ(config->ucx_listen, "");  // "" turns the UCX data plane off
  EXPECT_EQ(config->ucx_transports, "^ud");
  EXPECT_EQ(config->lease_timeout_ms, 1);
  EXPECT_FALSE(config->keep_volatile_on_exit);
  EXPECT_EQ(origins.at("ucx_listen"), "flag --ucx-listen");
  EXPECT_EQ(origins.at("keep_volatile_on_exit"), "file " + *in.file);

  in = {};
  in.env = {{"CACHESVC_KEEP_VOLATILE_ON_EXIT", "false"}, {"CACHESVC_METRICS_LISTEN", ""}};
  config = LoadConfig(in);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_FALSE(config->keep_volatile_on_exit);
  EXPECT_EQ(config->metrics_listen, "");
}

TEST_F(ConfigTest, ServingKeysAreChecked) {
  ConfigInputs in;
  in.flags = {{"metrics_listen", "localhost"}};
  ExpectError(LoadConfig(in), "config key 'metrics_listen' (flag --metrics-listen)");
  in.flags = {{"metrics_listen", "unix:/tmp/m.sock"}};
  ExpectError(LoadConfig(in), "unix: address is not accepted");
  in.flags = {{"ucx_listen", "127.0.0.1:99999"}};
  ExpectError(LoadConfig(in), "config key 'ucx_listen'");
  in.flags = {{"ucx_transports", "rc, tcp"}};
  ExpectError(LoadConfig(in), "config key 'ucx_transports'");
  in.flags = {{"ucx_transports", "tcp,,sm"}};
  ExpectError(LoadConfig(in), "UCX transport names");
  in.flags = {{"lease_timeout_ms", "0"}};
  ExpectError(LoadConfig(in), "config key 'lease_timeout_ms' (flag --lease-timeout-ms)");
  in.flags = {{"lease_timeout_ms", "-5"}};
  ExpectError(LoadConfig(in), "out of range");
  in.flags = {{"keep_volatile_on_exit", "yes"}};
  ExpectError(LoadConfig(in), "expected true or false");
  in.flags = {{"local_socket", std::string(108, 'x')}};
  ExpectError(LoadConfig(in), "a Unix socket path holds at most 107");
  in.flags = {{"local_busy_poll_us", "100001"}};
  ExpectError(LoadConfig(in), "config key 'local_busy_poll_us' (flag --local-busy-poll-us)");
  in.flags = {};
  in.file = WriteFile("lease_timeout_ms = \"30s\"\n");
  ExpectError(LoadConfig(in), "expected an integer, got a string");
}

TEST_F(ConfigTest, TlsNeedsBothReadablePemFiles) {
  const auto dir = std::filesystem::path(::testing::TempDir());
  const std::string cert = (dir / "config_test_cert.pem").string();
  const std::string key = (dir / "config_test_key.pem").string();
  const std::string junk = (dir / "config_test_junk.der").string();
  std::ofstream(cert) << "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
  std::ofstream(key) << "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n";
  std::ofstream(junk) << "\x30\x82\x01\x0a";

  ConfigInputs in;
  in.flags = {{"tls_cert_path", cert}, {"tls_key_path", key}};
  auto config = LoadConfig(in);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_EQ(config->tls_cert_path, cert);
  EXPECT_EQ(config->tls_key_path, key);

  in.flags = {{"tls_cert_path", cert}};
  ExpectError(LoadConfig(in),
              "config key 'tls_cert_path' (flag --tls-cert-path): is set but "
              "tls_key_path is not");
  in.flags = {{"tls_key_path", key}};
  ExpectError(LoadConfig(in), "config key 'tls_key_path'");
  in.flags = {{"tls_cert_path", "/nonexistent/cert.pem"}, {"tls_key_path", key}};
  ExpectError(LoadConfig(in), "cannot read '/nonexistent/cert.pem'");
  in.flags = {{"tls_cert_path", cert}, {"tls_key_path", junk}};
  ExpectError(LoadConfig(in), "holds no PEM block");
  in.flags = {};
  in.env = {{"CACHESVC_TLS_CERT_PATH", cert}, {"CACHESVC_TLS_KEY_PATH", "/nonexistent/key.pem"}};
  ExpectError(LoadConfig(in), "config key 'tls_key_path' (env CACHESVC_TLS_KEY_PATH)");
}

// Token hashes as `cachectl hash-token` prints them.
const std::string kAlice = Sha256Hex("alice-token");
const std::string kAlice2 = Sha256Hex("alice-token-2");
const std::string kBob = Sha256Hex("bob-token");

TEST_F(ConfigTest, TenantsFromTheFile) {
  ConfigInputs in;
  std::string upper = kBob;
  for (char& c : upper) c = static_cast<char>(std::toupper(c));
  in.file = WriteFile(fmt::format(
      "listen = \"127.0.0.1:1\"\n"
      "[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"{}\", \"{}\"]\nquota_hbm_bytes = 1\n"
      "quota_host_bytes = 2\nquota_nvme_bytes = 3\nquota_sessions = 4\ncodec = \"tq3\"\n"
      "[[tenants]]\nname = \"bob_2-x\"\ntoken_sha256 = [\"{}\"]\n",
      kAlice, kAlice2, upper));
  ConfigOrigins origins;
  auto config = LoadConfig(in, &origins);
  ASSERT_TRUE(config.ok()) << config.status();
  ASSERT_EQ(config->tenants.size(), 2u);
  const TenantConfig& alice = config->tenants[0];
  EXPECT_EQ(alice.name, "alice");
  EXPECT_EQ(alice.token_sha256, (std::vector<std::string>{kAlice, kAlice2}));
  EXPECT_EQ(alice.quota,
            (TenantQuota{.hbm_bytes = 1, .host_bytes = 2, .nvme_bytes = 3, .sessions = 4}));
  EXPECT_EQ(alice.codec, "tq3");
  const TenantConfig& bob = config->tenants[1];
  EXPECT_EQ(bob.name, "bob_2-x");
  EXPECT_EQ(bob.token_sha256, std::vector<std::string>{kBob});  // stored lower case
  EXPECT_EQ(bob.quota, TenantQuota{});
  EXPECT_EQ(bob.codec, "raw");
  EXPECT_EQ(origins.at("tenants"), "file " + *in.file);
  EXPECT_EQ(config->listen, "127.0.0.1:1");

  // An empty array is open mode, like no tenants at all.
  in.file = WriteFile("tenants = []\n");
  config = LoadConfig(in);
  ASSERT_TRUE(config.ok()) << config.status();
  EXPECT_TRUE(config->tenants.empty());
}

TEST_F(ConfigTest, TenantErrorsNameTheTenantKeyAndTheFile) {
  struct Case {
    std::string toml;
    std::string needle;
  };
  const std::string tok = fmt::format("token_sha256 = [\"{}\"]\n", kAlice);
  const std::vector<Case> cases = {
      {"[[tenants]]\n" + tok, "config key 'tenants[0].name'"},  // missing name
      {"[[tenants]]\nname = \"alice\"\n", "config key 'tenants[0].token_sha256'"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = []\n", "at least one token hash"},
      {"[[tenants]]\nname = \"Alice\"\n" + tok, "config key 'tenants[0].name'"},
      {"[[tenants]]\nname = \"" + std::string(65, 'a') + "\"\n" + tok, "1 to 64"},
      {"[[tenants]]\nname = \"a.b\"\n" + tok, "'a.b' is not"},
      {"[[tenants]]\nname = 7\n" + tok, "expected a string, got an integer"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "[[tenants]]\nname = \"alice\"\n" +
           fmt::format("token_sha256 = [\"{}\"]\n", kBob),
       "config key 'tenants[1].name'"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"abc\"]\n", "not a SHA-256 in hex"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"" + std::string(64, 'g') + "\"]\n",
       "config key 'tenants[0].token_sha256'"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = \"" + kAlice + "\"\n",
       "expected an array of strings, got a string"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = [1]\n",
       "element 0: expected a string, got an integer"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"" + kAlice + "\", \"" + kAlice + "\"]\n",
       "listed twice"},
      {"[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"" + Sha256Hex("") + "\"]\n",
       "empty token"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "[[tenants]]\nname = \"bob\"\n" + tok,
       "config key 'tenants[1].token_sha256'"},  // one token, two tenants
      {"[[tenants]]\nname = \"alice\"\n" + tok + "quota_host_bytes = -1\n",
       "config key 'tenants[0].quota_host_bytes'"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "quota_sessions = \"5\"\n",
       "config key 'tenants[0].quota_sessions'"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "quota_hbm_bytes = 1.5\n",
       "expected an integer, got a float"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "quota_nvme_bytes = -7\n", "-7 is negative"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "codec = \"zstd\"\n",
       "config key 'tenants[0].codec'"},
      {"[[tenants]]\nname = \"alice\"\n" + tok + "salt = \"x\"\n",
       "unknown config key 'tenants[0].salt'"},
      {"[tenants]\nname = \"alice\"\n", "expected an array of tables ([[tenants]]), got a table"},
      {"tenants = [\"alice\"]\n", "config key 'tenants[0]'"},
  };
  for (const Case& c : cases) {
    ConfigInputs in;
    in.file = WriteFile(c.toml);
    auto config = LoadConfig(in);
    ExpectError(config, c.needle);
    if (!config.ok()) {
      EXPECT_NE(config.status().message().find(*in.file), std::string::npos)
          << config.status().message();
    }
  }
}

TEST_F(ConfigTest, TenantsHaveNoEnvOrFlagForm) {
  ConfigInputs in;
  in.env = {{"CACHESVC_TENANTS", "alice"}};
  ExpectError(LoadConfig(in), "tenants are configured only in the config file");
  in.env = {};
  in.flags = {{"tenants", "alice"}};
  ExpectError(LoadConfig(in), "tenants are configured only in the config file");
  for (const ConfigKeyInfo& key : ConfigKeys()) EXPECT_NE(key.name, "tenants");
}

TEST_F(ConfigTest, DescribeConfigPrintsTenantsAsLoadableToml) {
  ConfigInputs in;
  in.file = WriteFile(fmt::format(
      "[[tenants]]\nname = \"alice\"\ntoken_sha256 = [\"{}\", \"{}\"]\nquota_sessions = 9\n"
      "codec = \"tq4\"\n[[tenants]]\nname = \"bob\"\ntoken_sha256 = [\"{}\"]\n",
      kAlice, kAlice2, kBob));
  in.flags = {{"lease_timeout_ms", "777"}};
  ConfigOrigins origins;
  auto config = LoadConfig(in, &origins);
  ASSERT_TRUE(config.ok()) << config.status();
  const std::string described = DescribeConfig(*config, origins);
  EXPECT_NE(described.find("[[tenants]]  # file " + *in.file), std::string::npos) << described;
  EXPECT_NE(described.find(kAlice2), std::string::npos) << described;
  EXPECT_NE(described.find("lease_timeout_ms = 777  # flag --lease-timeout-ms"), std::string::npos)
      << described;
  EXPECT_NE(described.find("keep_volatile_on_exit = true  # default"), std::string::npos)
      << described;
  ConfigInputs again;
  again.file = WriteFile(described);
  auto reloaded = LoadConfig(again);
  ASSERT_TRUE(reloaded.ok()) << reloaded.status() << "\n" << described;
  ASSERT_EQ(reloaded->tenants.size(), 2u);
  EXPECT_EQ(reloaded->tenants[0].token_sha256, config->tenants[0].token_sha256);
  EXPECT_EQ(reloaded->tenants[0].quota.sessions, 9);
  EXPECT_EQ(reloaded->tenants[0].codec, "tq4");
  EXPECT_EQ(reloaded->tenants[1].name, "bob");
  EXPECT_EQ(reloaded->lease_timeout_ms, 777);

  // Without tenants the description says open mode and still loads.
  auto open = LoadConfig({}, &origins);
  ASSERT_TRUE(open.ok());
  const std::string open_text = DescribeConfig(*open, origins);
  EXPECT_NE(open_text.find("open mode"), std::string::npos) << open_text;
  again.file = WriteFile(open_text);
  EXPECT_TRUE(LoadConfig(again).ok());
}

TEST_F(ConfigTest, EveryKeyHasEnvAndFlag) {
  for (const ConfigKeyInfo& key : ConfigKeys()) {
    EXPECT_TRUE(key.env.starts_with("CACHESVC_")) << key.name;
    EXPECT_TRUE(key.flag.starts_with("--")) << key.name;
    EXPECT_FALSE(key.help.empty()) << key.name;
  }
}

}  // namespace
}  // namespace cachesvc
