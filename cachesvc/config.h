// cachesvc/config.h: the daemon's configuration, where it comes from and what makes it valid.
//
// Every key has one name (`listen`), one environment variable (`CACHESVC_LISTEN`) and one flag
// (`--listen`), all derived from the name, and takes its value from, in order of precedence:
//   flag > environment > TOML file > built-in default.
// Loading never falls back silently: an unknown key (in the file, or a CACHESVC_* variable), a
// value of the wrong type, an unreadable or malformed file, or a value out of range is an
// INVALID_ARGUMENT whose message names the key and where the value came from.
// docs/configuration.md lists every key; keep it in step with kKeys in config.cc.
//
// Tenants are the one exception to "one name, one variable, one flag": they are a list of tables
// (`[[tenants]]`) and come only from the file; a CACHESVC_TENANTS* variable or a `tenants` flag is
// refused. Each tenant's keys are checked like any other (`tenants[i].key` names the bad one).
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"
#include "cachesvc/tenants.h"

namespace cachesvc {

struct Config {
  std::string listen = "127.0.0.1:50051";  // gRPC address: host:port, [v6]:port or unix:/path
  std::string data_dir = "./cachesvc-data";
  std::string log_level = "info";     // trace, debug, info, warn, error, off
  std::int64_t drain_timeout_s = 10;  // how long shutdown waits for calls in flight
  std::int64_t max_message_bytes = 64 << 20;
  std::string metrics_listen = "127.0.0.1:9464";  // Prometheus /metrics over HTTP; "" = off
  std::string ucx_listen = "127.0.0.1:0";         // UCX data plane listener; "" = off
  std::string ucx_transports;                     // UCX_TLS for the data plane; "" = UCX's default
  bool ucx_detect_peer_failure = true;            // off allows shared memory and cma (docs/ucx.md)
  std::string local_socket;  // Unix socket of the same-host data plane (docs/local.md); "" = off
  std::int64_t local_busy_poll_us = 0;    // keep polling this long after a local request; 0 = off
  std::int64_t lease_timeout_ms = 30000;  // a lease not renewed this long is released
  std::string policy = "cachesvc";        // block placement: cachesvc, lru-tiered, ttl-pin
  std::int64_t prefetch_lead_ms = 1000;   // cachesvc: stage a waiting session's blocks this early
  std::string tls_cert_path;  // PEM certificate chain; with tls_key_path, gRPC serves TLS only
  std::string tls_key_path;   // PEM private key; both or neither
  bool keep_volatile_on_exit = true;  // on SIGTERM, write the host tier's blocks to NVMe first

  // Tiers (docs/tiers.md). A capacity of 0 leaves that tier out.
  std::int64_t host_capacity_bytes = std::int64_t{1} << 30;
  std::int64_t host_numa_node = -1;             // -1: not bound
  std::string host_huge_pages = "transparent";  // none, transparent, hugetlb
  bool host_prefault = false;                   // touch every page at start
  std::int64_t nvme_capacity_bytes = std::int64_t{1} << 30;
  std::string nvme_path;  // "" = <data_dir>/nvme/blocks.dat
  std::int64_t nvme_queue_depth = 32;
  bool nvme_direct_io = true;
  std::int64_t slot_min_bytes = 16 << 10;  // smallest slot size class
  std::int64_t slot_max_bytes = 64 << 20;  // largest slot size class (and chunk size)

  // `[[tenants]]` from the file only; empty = open mode (cachesvc/tenants.h).
  std::vector<TenantConfig> tenants;
};

// What one key is, for flag registration, help text and docs.
struct ConfigKeyInfo {
  std::string_view name;
  std::string_view help;
  std::string env;   // CACHESVC_<NAME>
  std::string flag;  // --<name with '-'>
};
std::vector<ConfigKeyInfo> ConfigKeys();

// The raw inputs, before any parsing. Keeping the loader free of getenv/argv makes it testable.
struct ConfigInputs {
  std::optional<std::string> file;           // TOML path (from --config / CACHESVC_CONFIG)
  std::map<std::string, std::string> env;    // every CACHESVC_* variable but CACHESVC_CONFIG
  std::map<std::string, std::string> flags;  // key name -> flag text, for flags given
};

// The environment variable naming the config file; not itself a key.
inline constexpr std::string_view kConfigFileEnv = "CACHESVC_CONFIG";

// Collects CACHESVC_* variables from `environ` into inputs.env (and the file path from
// CACHESVC_CONFIG into inputs.file unless one is already set).
void ReadEnvironment(ConfigInputs& inputs);

// Where each key's value came from: "default", "file <path>", "env CACHESVC_X" or "flag --x".
using ConfigOrigins = std::map<std::string, std::string, std::less<>>;

// Applies the inputs over the defaults in precedence order and validates the result. When
// `origins` is given it receives, for every key, where the value in force came from.
[[nodiscard]] absl::StatusOr<Config> LoadConfig(const ConfigInputs& inputs,
                                                ConfigOrigins* origins = nullptr);

// The effective configuration as TOML, each key followed by a comment saying where it came from.
std::string DescribeConfig(const Config& config, const ConfigOrigins& origins);

}  // namespace cachesvc
