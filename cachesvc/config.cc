#include "cachesvc/config.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <variant>

#include "fmt/format.h"
#include "toml++/toml.h"

extern char**
    environ;  // NOLINT(readability-redundant-declaration): POSIX, not declared by <unistd.h> in C++

namespace cachesvc {
namespace {

using Field = std::variant<std::string Config::*, std::int64_t Config::*, bool Config::*>;

// Checks a key's value; the message says what is wrong with it, the caller adds which key.
using Check = absl::Status (*)(const Config&);

struct KeySpec {
  std::string_view name;
  std::string_view help;
  Field field;
  Check check;
};

// Whole-string integer parse; false for empty text, junk or overflow.
template <typename Int>
bool ParseInt(std::string_view text, Int& out) {
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), out);
  return err == std::errc() && end == text.data() + text.size() && !text.empty();
}

absl::Status CheckListen(const Config& c) {
  std::string_view addr = c.listen;
  if (addr.starts_with("unix:")) {
    if (addr.size() == 5) return absl::InvalidArgumentError("unix: address needs a path");
    return absl::OkStatus();
  }
  const auto colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' is not host:port, [ipv6]:port or unix:/path", addr));
  }
  int port = 0;
  if (!ParseInt(addr.substr(colon + 1), port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' has no port in 0..65535 after the last ':'", addr));
  }
  return absl::OkStatus();
}

absl::Status CheckDataDir(const Config& c) {
  if (c.data_dir.empty()) return absl::InvalidArgumentError("must not be empty");
  return absl::OkStatus();
}

constexpr std::array<std::string_view, 6> kLogLevels = {"trace", "debug", "info",
                                                        "warn",  "error", "off"};

absl::Status CheckLogLevel(const Config& c) {
  if (std::find(kLogLevels.begin(), kLogLevels.end(), c.log_level) != kLogLevels.end()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      fmt::format("'{}' is not one of trace, debug, info, warn, error, off", c.log_level));
}

absl::Status CheckRange(std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("{} is out of range [{}, {}]", v, lo, hi));
}

bool IsPowerOfTwo(std::int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

absl::Status CheckCapacity(std::int64_t capacity, const Config& c) {
  if (capacity == 0) return absl::OkStatus();
  if (capacity < c.slot_max_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("{} is less than slot_max_bytes ({}); use 0 to leave the tier out", capacity,
                    c.slot_max_bytes));
  }
  return absl::OkStatus();
}

absl::Status CheckOneOf(const std::string& value, std::initializer_list<std::string_view> allowed) {
  for (std::string_view a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  std::string list;
  for (std::string_view a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
  return absl::InvalidArgumentError(fmt::format("'{}' is not one of {}", value, list));
}

const std::array<KeySpec, 15> kKeys = {{
    {"listen",
     "gRPC listen address: host:port, [ipv6]:port or unix:/path; port 0 picks a free port",
     &Config::listen, CheckListen},
    {"data_dir", "folder holding every file the daemon writes; created if missing",
     &Config::data_dir, CheckDataDir},
    {"log_level", "least severe log level printed: trace, debug, info, warn, error or off",
     &Config::log_level, CheckLogLevel},
    {"drain_timeout_s",
     "seconds shutdown waits for calls in flight before cancelling them (0..3600)",
     &Config::drain_timeout_s,
     [](const Config& c) { return CheckRange(c.drain_timeout_s, 0, 3600); }},
    {"max_message_bytes", "largest gRPC message received or sent, in bytes (4096..1073741824)",
     &Config::max_message_bytes,
     [](const Config& c) { return CheckRange(c.max_message_bytes, 4096, std::int64_t{1} << 30); }},
    {"tiers.host.capacity_bytes",
     "bytes of host (or CXL) memory for blocks, rounded down to whole slot_max_bytes chunks; 0 "
     "leaves the tier out",
     &Config::host_capacity_bytes,
     [](const Config& c) { return CheckCapacity(c.host_capacity_bytes, c); }},
    {"tiers.host.numa_node",
     "NUMA node to bind the host arena to (a CXL expander is a CPU-less node); -1: no binding",
     &Config::host_numa_node,
     [](const Config& c) { return CheckRange(c.host_numa_node, -1, 1023); }},
    {"tiers.host.huge_pages", "huge pages for the host arena: none, transparent or hugetlb",
     &Config::host_huge_pages,
     [](const Config& c) {
       return CheckOneOf(c.host_huge_pages, {"none", "transparent", "hugetlb"});
     }},
    {"tiers.host.prefault", "touch every page of the host arena at start (true or false)",
     &Config::host_prefault, [](const Config&) { return absl::OkStatus(); }},
    {"tiers.nvme.capacity_bytes",
     "bytes of the NVMe data file to preallocate (a raw device: 0 is not allowed, give its size "
     "or less); 0 leaves the tier out",
     &Config::nvme_capacity_bytes,
     [](const Config& c) { return CheckCapacity(c.nvme_capacity_bytes, c); }},
    {"tiers.nvme.path",
     "NVMe data file or raw block device; empty: <data_dir>/nvme/blocks.dat (the index is always "
     "under <data_dir>/nvme/index)",
     &Config::nvme_path, [](const Config&) { return absl::OkStatus(); }},
    {"tiers.nvme.queue_depth", "io_uring requests in flight per batch (1..4096)",
     &Config::nvme_queue_depth,
     [](const Config& c) { return CheckRange(c.nvme_queue_depth, 1, 4096); }},
    {"tiers.nvme.direct_io",
     "O_DIRECT for the NVMe tier where the file system accepts it (true or false)",
     &Config::nvme_direct_io, [](const Config&) { return absl::OkStatus(); }},
    {"tiers.slot_min_bytes", "smallest slot size class of every tier, a power of two (4096..)",
     &Config::slot_min_bytes,
     [](const Config& c) {
       if (!IsPowerOfTwo(c.slot_min_bytes) || c.slot_min_bytes < 4096) {
         return absl::InvalidArgumentError(
             fmt::format("{} is not a power of two >= 4096", c.slot_min_bytes));
       }
       return absl::OkStatus();
     }},
    {"tiers.slot_max_bytes",
     "largest slot size class of every tier (and its chunk size), a power of two >= slot_min_bytes",
     &Config::slot_max_bytes,
     [](const Config& c) {
       if (!IsPowerOfTwo(c.slot_max_bytes) || c.slot_max_bytes < c.slot_min_bytes) {
         return absl::InvalidArgumentError(
             fmt::format("{} is not a power of two >= slot_min_bytes ({})", c.slot_max_bytes,
                         c.slot_min_bytes));
       }
       return absl::OkStatus();
     }},
}};

std::string EnvName(std::string_view key) {
  std::string env = fmt::format("CACHESVC_{}", key);
  for (char& c : env)
    c = c == '.' ? '_' : static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return env;
}

std::string FlagName(std::string_view key) {
  std::string flag = fmt::format("--{}", key);
  std::replace(flag.begin(), flag.end(), '_', '-');
  std::replace(flag.begin(), flag.end(), '.', '-');
  return flag;
}

const KeySpec* FindKey(std::string_view name) {
  for (const KeySpec& k : kKeys) {
    if (k.name == name) return &k;
  }
  return nullptr;
}

absl::Status KeyError(std::string_view key, std::string_view origin, std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("config key '{}' ({}): {}", key, origin, what));
}

// Sets a key from flag or environment text.
absl::Status SetFromText(Config& config, const KeySpec& key, const std::string& text) {
  if (auto* str = std::get_if<std::string Config::*>(&key.field)) {
    config.*(*str) = text;
    return absl::OkStatus();
  }
  if (auto* flag = std::get_if<bool Config::*>(&key.field)) {
    if (text != "true" && text != "false") {
      return absl::InvalidArgumentError(fmt::format("expected true or false, got '{}'", text));
    }
    config.*(*flag) = text == "true";
    return absl::OkStatus();
  }
  std::int64_t value = 0;
  if (!ParseInt(text, value)) {
    return absl::InvalidArgumentError(fmt::format("expected an integer, got '{}'", text));
  }
  config.*std::get<std::int64_t Config::*>(key.field) = value;
  return absl::OkStatus();
}

std::string_view TomlTypeName(const toml::node& node) {
  switch (node.type()) {
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a float";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    default:
      return "a date or time";
  }
}

absl::Status SetFromToml(Config& config, const KeySpec& key, const toml::node& node) {
  if (auto* str = std::get_if<std::string Config::*>(&key.field)) {
    const auto* v = node.as_string();
    if (v == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("expected a string, got {}", TomlTypeName(node)));
    }
    config.*(*str) = v->get();
    return absl::OkStatus();
  }
  if (auto* flag = std::get_if<bool Config::*>(&key.field)) {
    const auto* v = node.as_boolean();
    if (v == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("expected a boolean, got {}", TomlTypeName(node)));
    }
    config.*(*flag) = v->get();
    return absl::OkStatus();
  }
  const auto* v = node.as_integer();
  if (v == nullptr) {
    return absl::InvalidArgumentError(
        fmt::format("expected an integer, got {}", TomlTypeName(node)));
  }
  config.*std::get<std::int64_t Config::*>(key.field) = v->get();
  return absl::OkStatus();
}

// Applies every leaf of `table` (keys may be dotted through sub-tables) and rejects unknown ones.
absl::Status ApplyTable(Config& config, ConfigOrigins& origins, const toml::table& table,
                        const std::string& prefix, const std::string& origin) {
  for (const auto& [k, node] : table) {
    const std::string name =
        prefix.empty() ? std::string(k.str()) : fmt::format("{}.{}", prefix, k.str());
    if (const KeySpec* key = FindKey(name)) {
      if (absl::Status s = SetFromToml(config, *key, node); !s.ok()) {
        return KeyError(name, origin, std::string(s.message()));
      }
      origins[std::string(key->name)] = origin;
    } else if (const auto* sub = node.as_table()) {
      if (absl::Status s = ApplyTable(config, origins, *sub, name, origin); !s.ok()) return s;
    } else {
      return absl::InvalidArgumentError(fmt::format("unknown config key '{}' in {}", name, origin));
    }
  }
  return absl::OkStatus();
}

absl::Status ApplyFile(Config& config, ConfigOrigins& origins, const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        fmt::format("cannot read config file '{}': {}", path, std::strerror(errno)));
  }
  std::stringstream content;
  content << in.rdbuf();
  toml::table table;
  try {
    table = toml::parse(content.str(), path);
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    return absl::InvalidArgumentError(fmt::format("config file '{}' line {} column {}: {}", path,
                                                  where.line, where.column, e.description()));
  }
  return ApplyTable(config, origins, table, "", fmt::format("file {}", path));
}

std::string TomlQuote(std::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out.push_back('\\');
    out.push_back(c);
  }
  out.push_back('"');
  return out;
}

}  // namespace

std::vector<ConfigKeyInfo> ConfigKeys() {
  std::vector<ConfigKeyInfo> keys;
  for (const KeySpec& k : kKeys)
    keys.push_back({k.name, k.help, EnvName(k.name), FlagName(k.name)});
  return keys;
}

void ReadEnvironment(ConfigInputs& inputs) {
  for (char** e = environ; *e != nullptr; ++e) {
    std::string_view var(*e);
    const auto eq = var.find('=');
    if (eq == std::string_view::npos || !var.starts_with("CACHESVC_")) continue;
    std::string name(var.substr(0, eq));
    std::string value(var.substr(eq + 1));
    if (name == kConfigFileEnv) {
      if (!inputs.file) inputs.file = value;
    } else {
      inputs.env[name] = value;
    }
  }
}

absl::StatusOr<Config> LoadConfig(const ConfigInputs& inputs, ConfigOrigins* origins_out) {
  Config config;
  ConfigOrigins origins;
  for (const KeySpec& k : kKeys) origins[std::string(k.name)] = "default";

  if (inputs.file) {
    if (absl::Status s = ApplyFile(config, origins, *inputs.file); !s.ok()) return s;
  }
  for (const auto& [var, text] : inputs.env) {
    const KeySpec* key = nullptr;
    for (const KeySpec& k : kKeys) {
      if (EnvName(k.name) == var) key = &k;
    }
    if (key == nullptr) {
      return absl::InvalidArgumentError(
          fmt::format("unknown environment variable {} (no config key of that name)", var));
    }
    const std::string origin = fmt::format("env {}", var);
    if (absl::Status s = SetFromText(config, *key, text); !s.ok()) {
      return KeyError(key->name, origin, std::string(s.message()));
    }
    origins[std::string(key->name)] = origin;
  }
  for (const auto& [name, text] : inputs.flags) {
    const KeySpec* key = FindKey(name);
    if (key == nullptr)
      return absl::InvalidArgumentError(fmt::format("unknown config key '{}'", name));
    const std::string origin = fmt::format("flag {}", FlagName(name));
    if (absl::Status s = SetFromText(config, *key, text); !s.ok()) {
      return KeyError(key->name, origin, std::string(s.message()));
    }
    origins[std::string(key->name)] = origin;
  }

  for (const KeySpec& k : kKeys) {
    if (absl::Status s = k.check(config); !s.ok()) {
      return KeyError(k.name, origins[std::string(k.name)], std::string(s.message()));
    }
  }
  if (origins_out != nullptr) *origins_out = std::move(origins);
  return config;
}

std::string DescribeConfig(const Config& config, const ConfigOrigins& origins) {
  std::string out;
  for (const KeySpec& k : kKeys) {
    std::string value;
    if (auto* str = std::get_if<std::string Config::*>(&k.field)) {
      value = TomlQuote(config.*(*str));
    } else if (auto* flag = std::get_if<bool Config::*>(&k.field)) {
      value = config.*(*flag) ? "true" : "false";
    } else {
      value = fmt::format("{}", config.*std::get<std::int64_t Config::*>(k.field));
    }
    auto it = origins.find(k.name);
    out +=
        fmt::format("{} = {}  # {}\n", k.name, value, it == origins.end() ? "default" : it->second);
  }
  return out;
}

}  // namespace cachesvc
