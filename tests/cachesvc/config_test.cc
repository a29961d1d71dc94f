#include "cachesvc/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

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

TEST_F(ConfigTest, EveryKeyHasEnvAndFlag) {
  for (const ConfigKeyInfo& key : ConfigKeys()) {
    EXPECT_TRUE(key.env.starts_with("CACHESVC_")) << key.name;
    EXPECT_TRUE(key.flag.starts_with("--")) << key.name;
    EXPECT_FALSE(key.help.empty()) << key.name;
  }
}

}  // namespace
}  // namespace cachesvc
