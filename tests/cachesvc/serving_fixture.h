// tests/cachesvc/serving_fixture.h: what the daemon's integration tests share: a daemon with
// tenants a and b (64 MiB of host and NVMe, short leases) started from the real binary
// (CACHESVC_BIN), connector clients for it, and blocks of random keys and bytes.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "cachesvc/tenants.h"
#include "client/block_client.h"
#include "proto/layout.h"
#include "tests/support/daemon.h"

namespace cachesvc {
namespace {

using ::cachesvc::client::BlockClient;
using ::cachesvc::client::BlockClientOptions;
using ::cachesvc::testing::RunningDaemon;
using ::cachesvc::testing::Subprocess;
using namespace std::chrono_literals;

constexpr char kTokenA[] = "token-of-tenant-a";
constexpr char kTokenB[] = "token-of-tenant-b";

// 8 layers x 2 (K, V) x 16 tokens x 4 heads x 128 dims x 2 bytes = 256 KiB per RAW block.
ModelLayout TestLayout() {
  ModelLayout l;
  l.model_id = "test-model";
  l.num_layers = 8;
  l.num_kv_heads = 4;
  l.head_dim = 128;
  l.dtype = Dtype::kFp16;
  l.block_tokens = 16;
  return l;
}

std::filesystem::path FreshDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("serving_test_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// A daemon with tenants a and b, 64 MiB of host and NVMe, and short leases.
class Daemon {
 public:
  Daemon(const std::filesystem::path& dir, std::vector<std::string> extra = {}) : dir_(dir) {
    std::ofstream(dir / "cachesvc.toml")
        << "lease_timeout_ms = 1500\n"
        << "[[tenants]]\nname = \"a\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenA) << "\"]\n"
        << "[[tenants]]\nname = \"b\"\ntoken_sha256 = [\"" << Sha256Hex(kTokenB) << "\"]\n";
    std::vector<std::string> argv = {
        CACHESVC_BIN,  "--config",   (dir / "cachesvc.toml").string(), "--listen",
        "127.0.0.1:0", "--data-dir", (dir / "data").string(),          "--metrics-listen",
        "127.0.0.1:0"};
    if (std::find(extra.begin(), extra.end(), "--tiers-host-capacity-bytes") == extra.end()) {
      extra.insert(extra.end(), {"--tiers-host-capacity-bytes", "67108864",
                                 "--tiers-nvme-capacity-bytes", "67108864"});
    }
    argv.insert(argv.end(), extra.begin(), extra.end());
    daemon_ = std::make_unique<RunningDaemon>(argv);
  }
  const std::string& address() const { return daemon_->address(); }
  double Metric(const std::string& sample) const { return daemon_->Metric(sample); }
  Subprocess& process() { return daemon_->process(); }

  std::unique_ptr<BlockClient> Client(const std::string& token) const {
    BlockClientOptions options;
    options.address = address();
    options.token = token;
    auto c = BlockClient::Connect(options);
    EXPECT_TRUE(c.ok()) << c.status();
    return std::move(*c);
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<RunningDaemon> daemon_;
};

// `n` distinct keys and payloads of `bytes` each, from `seed`.
struct Blocks {
  std::vector<BlockKey> keys;
  std::vector<std::vector<std::byte>> data;
  Blocks(std::size_t n, std::size_t bytes, std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (std::size_t i = 0; i < n; ++i) {
      BlockKey k;
      for (auto& b : k.bytes) b = static_cast<std::uint8_t>(rng());
      keys.push_back(k);
      std::vector<std::byte> d(bytes);
      for (auto& b : d) b = static_cast<std::byte>(rng());
      data.push_back(std::move(d));
    }
  }
  std::vector<std::span<const std::byte>> Views() const {
    std::vector<std::span<const std::byte>> v;
    for (const auto& d : data) v.emplace_back(d);
    return v;
  }
};

struct Buffers {
  std::vector<std::vector<std::byte>> data;
  Buffers(std::size_t n, std::size_t bytes) : data(n, std::vector<std::byte>(bytes)) {}
  std::vector<std::span<std::byte>> Views() {
    std::vector<std::span<std::byte>> v;
    for (auto& d : data) v.emplace_back(d);
    return v;
  }
};

class ServingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<Daemon>(
        FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name()));
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
    a_ = daemon_->Client(kTokenA);
    auto engine = a_->RegisterEngine(TestLayout());
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_EQ(engine->raw_block_bytes, 256u << 10);
  }
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<BlockClient> a_;
};

}  // namespace
}  // namespace cachesvc
