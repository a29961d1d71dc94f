// cachesvc/config.h: the daemon's configuration, where it comes from and what makes it valid.
//
// Every key has one name (`listen`), one environment variable (`CACHESVC_LISTEN`) and one flag
// (`--listen`), all derived from the name, and takes its value from, in order of precedence:
//   flag > environment > TOML file > built-in default.
// Loading never falls back silently: an unknown key (in the file, or a CACHESVC_* variable), a
// value of the wrong type, an unreadable or malformed file, or a value out of range is an
// INVALID_ARGUMENT whose message names the key and where the value came from.
// docs/configuration.md lists every key; keep it in step with kKeys in config.cc.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace cachesvc {

struct Config {
  std::string listen = "127.0.0.1:50051";  // gRPC address: host:port, [v6]:port or unix:/path
  std::string data_dir = "./cachesvc-data";
  std::string log_level = "info";     // trace, debug, info, warn, error, off
  std::int64_t drain_timeout_s = 10;  // how long shutdown waits for calls in flight
  std::int64_t max_message_bytes = 64 << 20;

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
absl::StatusOr<Config> LoadConfig(const ConfigInputs& inputs, ConfigOrigins* origins = nullptr);

// The effective configuration as TOML, each key followed by a comment saying where it came from.
std::string DescribeConfig(const Config& config, const ConfigOrigins& origins);

}  // namespace cachesvc
