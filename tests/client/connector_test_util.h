// tests/client/connector_test_util.h: a real cachesvc daemon for the connector tests: one tenant
// in a fresh temp dir, metrics on a free port, and connector options that reach it.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "cachesvc/tenants.h"
#include "client/kv_connector.h"
#include "tests/client/connector_pages_util.h"
#include "tests/support/daemon.h"

namespace cachesvc::testing {

inline constexpr char kConnectorToken[] = "connector-test-token";

inline std::filesystem::path FreshTestDir(const std::string& name) {
  auto dir = std::filesystem::path(::testing::TempDir()) / ("connector_test_" + name);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

// The daemon: one tenant "t" with kConnectorToken, 64 MiB host + NVMe in 1 MiB slot chunks,
// metrics on a free port.
class ConnectorDaemon {
 public:
  // `listen`: the gRPC address ("127.0.0.1:0" picks a free port). `local`: also serve the
  // same-host data plane (docs/local.md), which the connector then loads through.
  explicit ConnectorDaemon(const std::string& name, const std::string& listen = "127.0.0.1:0",
                           bool local = false)
      : dir_(FreshTestDir(name)) {
    std::ofstream(dir_ / "cachesvc.toml")
        << "lease_timeout_ms = 5000\n"
        << "[[tenants]]\nname = \"t\"\ntoken_sha256 = [\"" << Sha256Hex(kConnectorToken) << "\"]\n";
    daemon_ = std::make_unique<RunningDaemon>(std::vector<std::string>{
        CACHESVC_BIN, "--config", (dir_ / "cachesvc.toml").string(), "--listen", listen,
        "--data-dir", (dir_ / "data").string(), "--metrics-listen", "127.0.0.1:0",
        "--tiers-host-capacity-bytes", "67108864", "--tiers-nvme-capacity-bytes", "67108864",
        // 1 MiB slot chunks: RAW and TQ blocks are different slot sizes, and with the default
        // (one 64 MiB chunk = the whole tier) the second size would evict the first.
        "--tiers-slot-max-bytes", "1048576", "--local-socket",
        local ? (dir_ / "local.sock").string() : std::string()});
  }
  double Metric(const std::string& sample) const { return daemon_->Metric(sample); }
  const std::string& address() const { return daemon_->address(); }
  Subprocess& process() { return daemon_->process(); }

  client::KvConnectorOptions Options(kernels::CodecId codec = kernels::CodecId::kRaw,
                                     const ModelLayout& layout = ConnectorLayout()) const {
    client::KvConnectorOptions o;
    o.client.address = address();
    o.client.token = kConnectorToken;
    o.client.rpc_timeout = std::chrono::milliseconds(3000);
    o.layout = layout;
    o.codec = codec;
    return o;
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<RunningDaemon> daemon_;
};

}  // namespace cachesvc::testing
