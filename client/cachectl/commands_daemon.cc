// health, status, tiers, drain and hash-token: the daemon as a whole.
#include <openssl/evp.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <iostream>

#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/cachectl/commands.h"
#include "fmt/format.h"

namespace cachesvc::cachectl {

int Health(const Globals& g) {
  client::AdminClient client = NewClient(g);
  auto status = client.CheckHealth();
  if (!status.ok()) return ReportError(g, status.status());
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (g.json) {
    PrintJson({{"address", g.address}, {"status", name}});
  } else {
    std::cout << name << "\n";
  }
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? kExitOk : kExitNotFound;
}

int Status(const Globals& g) {
  client::AdminClient client = NewClient(g);
  auto status = client.GetStatus();
  if (!status.ok()) return ReportError(g, status.status());
  const absl::Duration uptime = absl::Now() - absl::FromUnixMillis(status->started_unix_ms());
  if (g.json) {
    PrintJson({{"address", g.address},
               {"version", status->version()},
               {"started_unix_ms", status->started_unix_ms()},
               {"uptime_s", absl::ToInt64Seconds(uptime)},
               {"draining", status->draining()},
               {"gpu_present", status->gpu_present()},
               {"sessions_open", status->sessions_open()},
               {"blocks_indexed", status->blocks_indexed()},
               {"leases_outstanding", status->leases_outstanding()}});
    return kExitOk;
  }
  std::cout << "address      " << g.address << "\n"
            << "version      " << status->version() << "\n"
            << "uptime       " << Millis(absl::ToInt64Milliseconds(uptime)) << "\n"
            << "state        " << (status->draining() ? "draining" : "serving") << "\n"
            << "gpu          " << (status->gpu_present() ? "present" : "none") << "\n"
            << "sessions     " << status->sessions_open() << " open\n"
            << "blocks       " << status->blocks_indexed() << "\n"
            << "leases       " << status->leases_outstanding() << "\n";
  return kExitOk;
}

int Tiers(const Globals& g) {
  client::AdminClient client = NewClient(g);
  auto tiers = client.ListTiers();
  if (!tiers.ok()) return ReportError(g, tiers.status());
  if (g.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : tiers->tiers()) out.push_back(ToJson(t));
    PrintJson({{"address", g.address}, {"tiers", out}});
    return kExitOk;
  }
  // The first columns keep a fixed width so scripts that cut them keep working.
  Table table({{"NAME", false, 8},
               {"KIND", false, 10},
               {"CAPACITY", true, 12},
               {"USED", true, 12},
               {"USE%", true, 5},
               {"STORED", true, 10},
               {"BLOCKS", true, 10},
               {"LEASES", true, 6},
               {"NUMA", true, 6},
               {"CHECKSUM", true, 9}},
              /*gap=*/1);
  for (const auto& t : tiers->tiers()) {
    const double use = t.capacity_bytes() == 0 ? 0.0
                                               : 100.0 * static_cast<double>(t.used_bytes()) /
                                                     static_cast<double>(t.capacity_bytes());
    table.AddRow({t.name(), v1::TierKind_Name(t.kind()), Bytes(t.capacity_bytes()),
                  Bytes(t.used_bytes()), fmt::format("{:.1f}", use), Bytes(t.stored_bytes()),
                  std::to_string(t.blocks()), std::to_string(t.leases_active()),
                  t.numa_node() < 0 ? std::string("-") : std::to_string(t.numa_node()),
                  std::to_string(t.checksum_failures())});
  }
  table.Print(std::cout);
  return kExitOk;
}

int Drain(const Globals& g, const std::string& timeout) {
  std::uint32_t timeout_ms = 0;
  if (!timeout.empty()) {
    auto ms = ParseDurationMs(timeout, 3600 * 1000);
    if (!ms.ok()) return UsageError(g, ms.status());
    timeout_ms = *ms;
  }
  client::AdminClient client = NewClient(g);
  if (absl::Status st = client.Drain(timeout_ms); !st.ok()) return ReportError(g, st);
  if (g.json) {
    PrintJson({{"address", g.address}, {"draining", true}, {"timeout_ms", timeout_ms}});
  } else {
    std::cout << "draining " << g.address
              << ": new sessions are refused from now on (this is not undone); send the daemon "
                 "SIGTERM to finish\n";
  }
  return kExitOk;
}

namespace {

// Lowercase hex SHA-256, as cachesvc/tenants.h Sha256Hex computes it (cachectl does not link the
// service core; tests pin both to the same vectors). libcrypto comes with gRPC.
std::string Sha256Hex(const std::string& data) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), md.data(), &len, EVP_sha256(), nullptr) != 1) return "";
  std::string hex;
  for (unsigned int i = 0; i < len; ++i) hex += fmt::format("{:02x}", md[i]);
  return hex;
}

}  // namespace

// Reads one line from stdin (without echo when it is a terminal) and prints its SHA-256 for the
// `token_sha256` list of a tenant. The token itself is never printed.
int HashToken() {
  const bool tty = ::isatty(STDIN_FILENO) == 1;
  termios saved{};
  if (tty && ::tcgetattr(STDIN_FILENO, &saved) == 0) {
    termios quiet = saved;
    quiet.c_lflag &= ~static_cast<tcflag_t>(ECHO);
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    std::cerr << "token: " << std::flush;
  }
  std::string token;
  std::getline(std::cin, token);
  if (tty) {
    ::tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    std::cerr << "\n";
  }
  if (!token.empty() && token.back() == '\r') token.pop_back();
  if (token.empty()) {
    std::cerr << "cachectl: hash-token: no token on stdin (give it as one line)\n";
    return kExitUsage;
  }
  // The daemon accepts only printable ASCII without spaces after "Bearer "; a hash of anything
  // else would never match.
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c > ' ' && c < 0x7f; })) {
    std::cerr << "cachectl: hash-token: the token holds spaces or control characters, which a "
                 "bearer token cannot\n";
    return kExitUsage;
  }
  const std::string hex = Sha256Hex(token);
  if (hex.empty()) {
    std::cerr << "cachectl: hash-token: OpenSSL SHA-256 failed\n";
    return kExitNotFound;
  }
  std::cout << hex << "\n";
  return kExitOk;
}

}  // namespace cachesvc::cachectl
