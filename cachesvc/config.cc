#include "cachesvc/config.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <sstream>
#include <utility>
#include <variant>

#include "base/errno_message.h"
#include "cachesvc/residency_policy.h"
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

// host:port or [ipv6]:port (and unix:/path when `allow_unix`).
[[nodiscard]] absl::Status CheckAddress(std::string_view addr, bool allow_unix) {
  if (addr.starts_with("unix:")) {
    if (!allow_unix) {
      return absl::InvalidArgumentError(
          fmt::format("'{}': a unix: address is not accepted here; give host:port", addr));
    }
    if (addr.size() == 5) return absl::InvalidArgumentError("unix: address needs a path");
    return absl::OkStatus();
  }
  const auto colon = addr.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(fmt::format("'{}' is not host:port, [ipv6]:port{}", addr,
                                                  allow_unix ? " or unix:/path" : ""));
  }
  int port = 0;
  if (!ParseInt(addr.substr(colon + 1), port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' has no port in 0..65535 after the last ':'", addr));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CheckListen(const Config& c) {
  return CheckAddress(c.listen, /*allow_unix=*/true);
}

// An address that may also be "" (the feature turned off).
[[nodiscard]] absl::Status CheckOptionalAddress(const std::string& addr) {
  if (addr.empty()) return absl::OkStatus();
  return CheckAddress(addr, /*allow_unix=*/false);
}

// A UCX_TLS list: comma-separated names, optionally led by '^' (all but these). UCX itself checks
// the names when the data plane starts; this catches what can never be one (spaces, empty items).
[[nodiscard]] absl::Status CheckUcxTransports(const Config& c) {
  std::string_view list = c.ucx_transports;
  if (list.empty()) return absl::OkStatus();
  if (list.starts_with('^')) list.remove_prefix(1);
  const bool chars_ok = std::all_of(list.begin(), list.end(), [](char ch) {
    return std::isalnum(static_cast<unsigned char>(ch)) != 0 || ch == '_' || ch == ',' ||
           ch == '-' || ch == ':';
  });
  const bool items_ok = !list.empty() && !list.starts_with(',') && !list.ends_with(',') &&
                        list.find(",,") == std::string_view::npos;
  if (chars_ok && items_ok) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format(
      "'{}' is not a comma-separated list of UCX transport names (e.g. \"tcp\", \"rc,sm,self\", "
      "\"^ud\")",
      c.ucx_transports));
}

// tls_cert_path and tls_key_path: both or neither, and each a readable PEM file.
[[nodiscard]] absl::Status CheckTlsFile(const std::string& path, std::string_view other_key,
                                        const std::string& other) {
  if (path.empty()) return absl::OkStatus();
  if (other.empty()) {
    return absl::InvalidArgumentError(
        fmt::format("is set but {} is not; give both or neither", other_key));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        fmt::format("cannot read '{}': {}", path, ErrnoMessage(errno)));
  }
  std::stringstream content;
  content << in.rdbuf();
  if (content.str().find("-----BEGIN ") == std::string::npos) {
    return absl::InvalidArgumentError(
        fmt::format("'{}' holds no PEM block (-----BEGIN ...)", path));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CheckDataDir(const Config& c) {
  if (c.data_dir.empty()) return absl::InvalidArgumentError("must not be empty");
  return absl::OkStatus();
}

constexpr std::array<std::string_view, 6> kLogLevels = {"trace", "debug", "info",
                                                        "warn",  "error", "off"};

[[nodiscard]] absl::Status CheckLogLevel(const Config& c) {
  if (std::find(kLogLevels.begin(), kLogLevels.end(), c.log_level) != kLogLevels.end()) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      fmt::format("'{}' is not one of trace, debug, info, warn, error, off", c.log_level));
}

[[nodiscard]] absl::Status CheckRange(std::int64_t v, std::int64_t lo, std::int64_t hi) {
  if (v >= lo && v <= hi) return absl::OkStatus();
  return absl::InvalidArgumentError(fmt::format("{} is out of range [{}, {}]", v, lo, hi));
}

bool IsPowerOfTwo(std::int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

[[nodiscard]] absl::Status CheckCapacity(std::int64_t capacity, const Config& c) {
  if (capacity == 0) return absl::OkStatus();
  if (capacity < c.slot_max_bytes) {
    return absl::InvalidArgumentError(
        fmt::format("{} is less than slot_max_bytes ({}); use 0 to leave the tier out", capacity,
                    c.slot_max_bytes));
  }
  return absl::OkStatus();
}

[[nodiscard]] absl::Status CheckOneOf(const std::string& value,
                                      std::initializer_list<std::string_view> allowed) {
  for (std::string_view a : allowed) {
    if (value == a) return absl::OkStatus();
  }
  std::string list;
  for (std::string_view a : allowed) list += fmt::format("{}{}", list.empty() ? "" : ", ", a);
  return absl::InvalidArgumentError(fmt::format("'{}' is not one of {}", value, list));
}

const std::array<KeySpec, 27> kKeys = {{
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
    {"metrics_listen",
     "address of the Prometheus /metrics HTTP endpoint, host:port or [ipv6]:port; empty: no "
     "endpoint",
     &Config::metrics_listen,
     [](const Config& c) { return CheckOptionalAddress(c.metrics_listen); }},
    {"ucx_listen",
     "address of the UCX data plane listener, ip:port or [ipv6]:port (port 0 picks one); empty: "
     "no UCX data plane",
     &Config::ucx_listen, [](const Config& c) { return CheckOptionalAddress(c.ucx_listen); }},
    {"ucx_transports",
     "UCX transports of the data plane (UCX_TLS syntax, e.g. tcp or rc,sm,self); empty: UCX's "
     "default",
     &Config::ucx_transports, CheckUcxTransports},
    {"ucx_detect_peer_failure",
     "UCX endpoints detect a dead peer and transfers are cancelled at their deadline (true); "
     "false lets UCX use shared memory and cma on one host, whose transfers cannot be cancelled "
     "(docs/ucx.md). Clients must use the same setting",
     &Config::ucx_detect_peer_failure, [](const Config&) { return absl::OkStatus(); }},
    {"local_socket",
     "path of the Unix socket of the same-host data plane: engines of the daemon's user map the "
     "host tier read-only and load without gRPC or UCX (docs/local.md); empty: off",
     &Config::local_socket,
     [](const Config& c) {
       if (c.local_socket.size() > 107) {
         return absl::InvalidArgumentError(
             fmt::format("local_socket: {} bytes; a Unix socket path holds at most 107",
                         c.local_socket.size()));
       }
       return absl::OkStatus();
     }},
    {"local_busy_poll_us",
     "microseconds the same-host data plane's thread keeps polling after a request before it "
     "sleeps (0..100000): faster answers for an engine loading back to back, for a core while it "
     "does (docs/local.md); 0: off",
     &Config::local_busy_poll_us,
     [](const Config& c) { return CheckRange(c.local_busy_poll_us, 0, 100'000); }},
    {"lease_timeout_ms",
     "milliseconds after which a client's lease on a block lapses unless renewed (1..86400000)",
     &Config::lease_timeout_ms,
     [](const Config& c) { return CheckRange(c.lease_timeout_ms, 1, kMaxLeaseTimeout.count()); }},
    {"policy",
     "block placement policy: cachesvc (agent-aware), lru-tiered or ttl-pin; AdminService "
     "SetPolicy changes it at run time",
     &Config::policy, [](const Config& c) { return CheckPolicyName(c.policy); }},
    {"prefetch_lead_ms",
     "cachesvc policy: stage a session's blocks from NVMe this many milliseconds before its tool "
     "call is expected back (0..600000)",
     &Config::prefetch_lead_ms,
     [](const Config& c) { return CheckRange(c.prefetch_lead_ms, 0, kMaxPrefetchLead.count()); }},
    {"tls_cert_path",
     "PEM certificate chain for the gRPC port; with tls_key_path the port serves TLS only; empty: "
     "plaintext",
     &Config::tls_cert_path,
     [](const Config& c) { return CheckTlsFile(c.tls_cert_path, "tls_key_path", c.tls_key_path); }},
    {"tls_key_path", "PEM private key for tls_cert_path (both or neither)", &Config::tls_key_path,
     [](const Config& c) {
       return CheckTlsFile(c.tls_key_path, "tls_cert_path", c.tls_cert_path);
     }},
    {"keep_volatile_on_exit",
     "on SIGTERM/SIGINT write the host tier's blocks to NVMe before exiting (true or false)",
     &Config::keep_volatile_on_exit, [](const Config&) { return absl::OkStatus(); }},
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

[[nodiscard]] absl::Status KeyError(std::string_view key, std::string_view origin,
                                    std::string_view what) {
  return absl::InvalidArgumentError(fmt::format("config key '{}' ({}): {}", key, origin, what));
}

// Sets a key from flag or environment text.
[[nodiscard]] absl::Status SetFromText(Config& config, const KeySpec& key,
                                       const std::string& text) {
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

[[nodiscard]] absl::Status SetFromToml(Config& config, const KeySpec& key, const toml::node& node) {
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

constexpr std::string_view kTenantsKey = "tenants";

// The quota keys of a tenant table and the field each sets.
constexpr std::array<std::pair<std::string_view, std::int64_t TenantQuota::*>, 4> kQuotaKeys = {{
    {"quota_hbm_bytes", &TenantQuota::hbm_bytes},
    {"quota_host_bytes", &TenantQuota::host_bytes},
    {"quota_nvme_bytes", &TenantQuota::nvme_bytes},
    {"quota_sessions", &TenantQuota::sessions},
}};

std::string TenantKey(std::size_t i, std::string_view key) {
  return fmt::format("{}[{}].{}", kTenantsKey, i, key);
}

// Reads and checks the i-th `[[tenants]]` table.
[[nodiscard]] absl::StatusOr<TenantConfig> ReadTenant(const toml::table& table, std::size_t i,
                                                      const std::string& origin) {
  TenantConfig tenant;
  bool has_name = false, has_tokens = false;
  for (const auto& [k, node] : table) {
    const std::string_view key = k.str();
    const std::string name = TenantKey(i, key);
    auto type_error = [&](std::string_view want, const toml::node& got) {
      return KeyError(name, origin, fmt::format("expected {}, got {}", want, TomlTypeName(got)));
    };
    const auto quota = std::find_if(kQuotaKeys.begin(), kQuotaKeys.end(),
                                    [key](const auto& q) { return q.first == key; });
    if (key == "name" || key == "codec") {
      const auto* v = node.as_string();
      if (v == nullptr) return type_error("a string", node);
      const absl::Status s = key == "name" ? CheckTenantName(v->get()) : CheckTenantCodec(v->get());
      if (!s.ok()) return KeyError(name, origin, std::string(s.message()));
      (key == "name" ? tenant.name : tenant.codec) = v->get();
      has_name = has_name || key == "name";
    } else if (key == "token_sha256") {
      const auto* list = node.as_array();
      if (list == nullptr) return type_error("an array of strings", node);
      for (std::size_t j = 0; j < list->size(); ++j) {
        const auto* v = (*list)[j].as_string();
        if (v == nullptr) {
          return KeyError(
              name, origin,
              fmt::format("element {}: expected a string, got {}", j, TomlTypeName((*list)[j])));
        }
        if (absl::Status s = CheckTokenSha256(v->get()); !s.ok()) {
          return KeyError(name, origin, fmt::format("element {}: {}", j, std::string(s.message())));
        }
        std::string hex = v->get();
        for (char& c : hex) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        if (std::find(tenant.token_sha256.begin(), tenant.token_sha256.end(), hex) !=
            tenant.token_sha256.end()) {
          return KeyError(name, origin, fmt::format("element {}: '{}' is listed twice", j, hex));
        }
        tenant.token_sha256.push_back(std::move(hex));
      }
      if (tenant.token_sha256.empty()) {
        return KeyError(name, origin,
                        "is empty; a tenant needs at least one token hash (`cachectl hash-token`)");
      }
      has_tokens = true;
    } else if (quota != kQuotaKeys.end()) {
      const auto* v = node.as_integer();
      if (v == nullptr) return type_error("an integer", node);
      if (absl::Status s = CheckTenantQuota(v->get()); !s.ok()) {
        return KeyError(name, origin, std::string(s.message()));
      }
      tenant.quota.*(quota->second) = v->get();
    } else {
      return absl::InvalidArgumentError(fmt::format(
          "unknown config key '{}' in {} (a tenant takes name, token_sha256, quota_hbm_bytes, "
          "quota_host_bytes, quota_nvme_bytes, quota_sessions, codec)",
          name, origin));
    }
  }
  if (!has_name) return KeyError(TenantKey(i, "name"), origin, "missing; every tenant needs one");
  if (!has_tokens) {
    return KeyError(TenantKey(i, "token_sha256"), origin,
                    "missing; a tenant needs at least one token hash (`cachectl hash-token`)");
  }
  return tenant;
}

// `tenants`: an array of tables, each a tenant; names unique and no token shared by two tenants.
[[nodiscard]] absl::Status ApplyTenants(Config& config, ConfigOrigins& origins,
                                        const toml::node& node, const std::string& origin) {
  const auto* list = node.as_array();
  if (list == nullptr) {
    return KeyError(
        kTenantsKey, origin,
        fmt::format("expected an array of tables ([[tenants]]), got {}", TomlTypeName(node)));
  }
  std::vector<TenantConfig> tenants;
  for (std::size_t i = 0; i < list->size(); ++i) {
    const auto* table = (*list)[i].as_table();
    if (table == nullptr) {
      return KeyError(fmt::format("{}[{}]", kTenantsKey, i), origin,
                      fmt::format("expected a table, got {}", TomlTypeName((*list)[i])));
    }
    absl::StatusOr<TenantConfig> tenant = ReadTenant(*table, i, origin);
    if (!tenant.ok()) return tenant.status();
    for (std::size_t j = 0; j < tenants.size(); ++j) {
      if (tenants[j].name == tenant->name) {
        return KeyError(TenantKey(i, "name"), origin,
                        fmt::format("'{}' is also the name of tenants[{}]", tenant->name, j));
      }
      for (const std::string& hex : tenant->token_sha256) {
        if (std::find(tenants[j].token_sha256.begin(), tenants[j].token_sha256.end(), hex) !=
            tenants[j].token_sha256.end()) {
          return KeyError(TenantKey(i, "token_sha256"), origin,
                          fmt::format("'{}' is also a token of tenants[{}] ('{}'); a token must "
                                      "name one tenant",
                                      hex, j, tenants[j].name));
        }
      }
    }
    tenants.push_back(*std::move(tenant));
  }
  config.tenants = std::move(tenants);
  origins[std::string(kTenantsKey)] = origin;
  return absl::OkStatus();
}

// Tenants have no environment or flag form; say so instead of "unknown key".
[[nodiscard]] absl::Status TenantsOnlyFromFile(std::string_view where) {
  return absl::InvalidArgumentError(fmt::format(
      "{}: tenants are configured only in the config file, as [[tenants]] tables", where));
}

// Applies every leaf of `table` (keys may be dotted through sub-tables) and rejects unknown ones.
[[nodiscard]] absl::Status ApplyTable(Config& config, ConfigOrigins& origins,
                                      const toml::table& table, const std::string& prefix,
                                      const std::string& origin) {
  for (const auto& [k, node] : table) {
    const std::string name =
        prefix.empty() ? std::string(k.str()) : fmt::format("{}.{}", prefix, k.str());
    if (prefix.empty() && k.str() == kTenantsKey) {
      if (absl::Status s = ApplyTenants(config, origins, node, origin); !s.ok()) return s;
    } else if (const KeySpec* key = FindKey(name)) {
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

[[nodiscard]] absl::Status ApplyFile(Config& config, ConfigOrigins& origins,
                                     const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        fmt::format("cannot read config file '{}': {}", path, ErrnoMessage(errno)));
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
  keys.reserve(std::size(kKeys));
  for (const KeySpec& k : kKeys) {
    keys.push_back({k.name, k.help, EnvName(k.name), FlagName(k.name)});
  }
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
  origins[std::string(kTenantsKey)] = "default";

  if (inputs.file) {
    if (absl::Status s = ApplyFile(config, origins, *inputs.file); !s.ok()) return s;
  }
  for (const auto& [var, text] : inputs.env) {
    if (var.starts_with("CACHESVC_TENANTS")) {
      return TenantsOnlyFromFile(fmt::format("environment variable {}", var));
    }
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
    if (name.starts_with(kTenantsKey)) return TenantsOnlyFromFile(fmt::format("flag --{}", name));
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
  // Last: after a [[tenants]] header every key belongs to that table.
  auto it = origins.find(kTenantsKey);
  const std::string origin = it == origins.end() ? "default" : it->second;
  if (config.tenants.empty()) {
    out += fmt::format(
        "# tenants: none (open mode: one implicit tenant 'default', no token needed)  # {}\n",
        origin);
  }
  for (const TenantConfig& t : config.tenants) {
    std::string tokens;
    for (const std::string& hex : t.token_sha256) {
      tokens += fmt::format("{}{}", tokens.empty() ? "" : ", ", TomlQuote(hex));
    }
    out += fmt::format("[[tenants]]  # {}\nname = {}\ntoken_sha256 = [{}]\n", origin,
                       TomlQuote(t.name), tokens);
    for (const auto& [key, field] : kQuotaKeys)
      out += fmt::format("{} = {}\n", key, t.quota.*field);
    out += fmt::format("codec = {}\n", TomlQuote(t.codec));
  }
  return out;
}

}  // namespace cachesvc
