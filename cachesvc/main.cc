// cachesvc: the daemon. Parses flags, loads and validates the configuration, takes the data
// folder, serves gRPC until SIGTERM or SIGINT, then drains and exits 0.
//
// Exit codes: 0 after a clean shutdown (or --help/--version/--print-config), 2 for bad flags or
// configuration or when the address or data folder cannot be had, 1 for anything else.
#include <signal.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <optional>

#include "absl/time/clock.h"
#include "base/cli11.h"
#include "cachesvc/config.h"
#include "cachesvc/logging.h"
#include "cachesvc/server.h"
#include "cachesvc/tier_set.h"
#include "cachesvc/version.h"
#include "fmt/format.h"
#include "kernels/gpu.h"
#include "spdlog/spdlog.h"
#include "tiers/data_dir.h"

namespace {

constexpr int kExitUsage = 2;

int Fail(int code, std::string_view message) {
  std::cerr << "cachesvc: " << message << "\n";
  return code;
}

std::string VersionLine() {
  return fmt::format("cachesvc {} (commit {}, cuda {})", cachesvc::kVersion, cachesvc::kGitCommit,
                     cachesvc::kernels::QueryGpus().built_with_cuda ? "yes" : "no");
}

int Run(int argc, char** argv) {
  // Block the stop signals before anything starts a thread (the NVMe tier's write pipeline and
  // RocksDB start theirs while the tiers open, gRPC later), so that every thread inherits the mask
  // and SIGTERM/SIGINT wait for the sigwait below instead of killing the process in whichever
  // thread the kernel picks. A signal that arrives during start-up is taken once serving.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);  // reload, taken by the same sigwait
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  CLI::App app{"cachesvc: agent-aware KV-cache service for LLM inference", "cachesvc"};
  app.set_version_flag("--version", VersionLine());
  cachesvc::ConfigInputs inputs;
  std::optional<std::string> config_file;
  bool print_config = false;
  app.add_option("--config", config_file, "TOML configuration file (env CACHESVC_CONFIG)");
  app.add_flag("--print-config", print_config,
               "print the effective configuration, with where each value came from, and exit");
  std::map<std::string, std::optional<std::string>> flag_values;
  for (const cachesvc::ConfigKeyInfo& key : cachesvc::ConfigKeys()) {
    app.add_option(key.flag, flag_values[std::string(key.name)],
                   fmt::format("{} (env {})", key.help, key.env));
  }
  app.footer(
      "Precedence: flag > CACHESVC_* environment > --config file > default.\n"
      "Every key is described in docs/configuration.md.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    return Fail(kExitUsage, fmt::format("{} (see --help)", e.what()));
  }
  inputs.file = config_file;
  cachesvc::ReadEnvironment(inputs);
  for (const auto& [name, value] : flag_values) {
    if (value) inputs.flags[name] = *value;
  }

  cachesvc::ConfigOrigins origins;
  absl::StatusOr<cachesvc::Config> config = cachesvc::LoadConfig(inputs, &origins);
  if (!config.ok()) return Fail(kExitUsage, std::string(config.status().message()));
  if (print_config) {
    std::cout << cachesvc::DescribeConfig(*config, origins);
    return 0;
  }
  if (absl::Status s = cachesvc::SetUpLogging(config->log_level); !s.ok()) {
    return Fail(kExitUsage, std::string(s.message()));
  }
  cachesvc::RouteGrpcLogging();

  // Everything that can refuse the start is checked before anything is written or logged.
  if (absl::Status s = cachesvc::ProbeListenAddress(config->listen); !s.ok()) {
    return Fail(kExitUsage, std::string(s.message()));
  }
  absl::StatusOr<cachesvc::DataDir> data_dir = cachesvc::DataDir::Open(config->data_dir);
  if (!data_dir.ok()) return Fail(kExitUsage, std::string(data_dir.status().message()));
  auto tiers = cachesvc::TierSet::Open(*config, data_dir->path());
  if (!tiers.ok()) return Fail(kExitUsage, std::string(tiers.status().message()));
  const cachesvc::kernels::GpuInventory gpus = cachesvc::kernels::QueryGpus();

  cachesvc::DaemonInfo info{fmt::format("{} ({})", cachesvc::kVersion, cachesvc::kGitCommit),
                            absl::ToUnixMillis(absl::Now()), !gpus.devices.empty()};
  auto server = cachesvc::Server::Start(*config, std::move(info), tiers->get(), data_dir->path());
  if (!server.ok()) return Fail(kExitUsage, std::string(server.status().message()));
  for (const auto& gpu : gpus.devices) {
    spdlog::info("gpu {}: {} (sm_{}, {} MiB)", gpu.index, gpu.name, gpu.compute_capability,
                 gpu.memory_bytes >> 20);
  }
  if (gpus.devices.empty()) spdlog::info("no GPU in use: {}", gpus.note);
  for (const cachesvc::tiers::TierStats& s : (*tiers)->Stats()) {
    spdlog::info("tier {} ({}): {} MiB, {} blocks held", s.name,
                 cachesvc::tiers::TierKindName(s.kind), s.capacity_bytes >> 20, s.blocks);
  }
  if (const auto* r = (*tiers)->nvme_recovery(); r != nullptr && r->started_cold) {
    spdlog::warn("tier nvme started cold: {}", r->cold_reason);
  }
  spdlog::info("cachesvc {} listening on {} (data_dir {}, ucx {}, metrics {})", cachesvc::kVersion,
               (*server)->address(), data_dir->path().string(),
               (*server)->ucx_address().empty() ? "off" : (*server)->ucx_address(),
               (*server)->metrics_address().empty() ? "off" : (*server)->metrics_address());

  int signal_number = 0;
  for (;;) {
    sigwait(&stop_signals, &signal_number);
    if (signal_number != SIGHUP) break;
    // SIGHUP: reload what can change live (log level, tenants' tokens, quotas, codecs); say what
    // could not (everything else needs a restart).
    absl::StatusOr<cachesvc::Config> fresh = cachesvc::LoadConfig(inputs);
    if (!fresh.ok()) {
      spdlog::error("SIGHUP: configuration not reloaded: {}",
                    std::string(fresh.status().message()));
      continue;
    }
    if (absl::Status s = cachesvc::SetUpLogging(fresh->log_level); !s.ok()) {
      spdlog::error("SIGHUP: log_level: {}", std::string(s.message()));
    }
    auto changes = (*server)->Reload(*fresh);
    if (!changes.ok()) {
      spdlog::error("SIGHUP: tenants not reloaded: {}", std::string(changes.status().message()));
    } else {
      spdlog::info("SIGHUP: reloaded (log_level {}; tenants: {})", fresh->log_level, *changes);
    }
    cachesvc::Config live = *fresh;  // the keys that did not change live
    live.log_level = config->log_level;
    live.tenants = config->tenants;
    if (cachesvc::DescribeConfig(live, {}) != cachesvc::DescribeConfig(*config, {})) {
      spdlog::warn("SIGHUP: other keys changed too; they take effect only after a restart");
    }
    config->log_level = fresh->log_level;
    config->tenants = fresh->tenants;
  }
  spdlog::info("received {}: draining (up to {} s)",
               signal_number == SIGTERM ? "SIGTERM" : "SIGINT", config->drain_timeout_s);
  (*server)->Shutdown(std::chrono::seconds(config->drain_timeout_s));
  spdlog::info("stopped");
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    return Fail(1, fmt::format("fatal: {}", e.what()));
  }
}
