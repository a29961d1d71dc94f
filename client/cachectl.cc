// cachectl: the operators' command-line client of a running cachesvc.
//
// Exit codes: 0 success; 1 the daemon answered but the thing asked about is not there or not
// serving; 2 usage error; 3 the daemon cannot be reached.
#include <openssl/evp.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <iostream>
#include <string>

#include "CLI/CLI.hpp"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cachesvc/version.h"
#include "client/admin_client.h"
#include "fmt/format.h"
#include "nlohmann/json.hpp"

namespace {

constexpr int kExitNotFound = 1;
constexpr int kExitUsage = 2;
constexpr int kExitUnreachable = 3;

struct Options {
  std::string address = "127.0.0.1:50051";
  int timeout_ms = 3000;
  bool json = false;
};

// Prints a failed call's status to stderr and picks the exit code for it.
int ReportError(const Options& opt, const absl::Status& status) {
  std::cerr << "cachectl: " << opt.address << ": " << status.message() << " ("
            << absl::StatusCodeToString(status.code()) << ")\n";
  if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) return kExitUnreachable;
  if (absl::IsNotFound(status)) return kExitNotFound;
  return EXIT_FAILURE;
}

int Health(const Options& opt) {
  cachesvc::client::AdminClient client(opt.address);
  auto status = client.CheckHealth(std::chrono::milliseconds(opt.timeout_ms));
  if (!status.ok()) return ReportError(opt, status.status());
  const std::string name = grpc::health::v1::HealthCheckResponse::ServingStatus_Name(*status);
  if (opt.json) {
    std::cout << nlohmann::json{{"address", opt.address}, {"status", name}}.dump() << "\n";
  } else {
    std::cout << name << "\n";
  }
  return *status == grpc::health::v1::HealthCheckResponse::SERVING ? 0 : kExitNotFound;
}

int Status(const Options& opt) {
  cachesvc::client::AdminClient client(opt.address);
  auto status = client.GetStatus(std::chrono::milliseconds(opt.timeout_ms));
  if (!status.ok()) return ReportError(opt, status.status());
  const absl::Duration uptime = absl::Now() - absl::FromUnixMillis(status->started_unix_ms());
  if (opt.json) {
    std::cout << nlohmann::json{{"address", opt.address},
                                {"version", status->version()},
                                {"started_unix_ms", status->started_unix_ms()},
                                {"uptime_s", absl::ToInt64Seconds(uptime)},
                                {"draining", status->draining()},
                                {"gpu_present", status->gpu_present()},
                                {"sessions_open", status->sessions_open()},
                                {"blocks_indexed", status->blocks_indexed()},
                                {"leases_outstanding", status->leases_outstanding()}}
                     .dump()
              << "\n";
    return 0;
  }
  std::cout << "address      " << opt.address << "\n"
            << "version      " << status->version() << "\n"
            << "uptime       " << absl::FormatDuration(absl::Trunc(uptime, absl::Seconds(1)))
            << "\n"
            << "state        " << (status->draining() ? "draining" : "serving") << "\n"
            << "gpu          " << (status->gpu_present() ? "present" : "none") << "\n"
            << "sessions     " << status->sessions_open() << "\n"
            << "blocks       " << status->blocks_indexed() << "\n"
            << "leases       " << status->leases_outstanding() << "\n";
  return 0;
}

std::string Bytes(std::uint64_t b) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(b);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", b) : fmt::format("{:.1f} {}", v, units[u]);
}

int Tiers(const Options& opt) {
  cachesvc::client::AdminClient client(opt.address);
  auto tiers = client.ListTiers(std::chrono::milliseconds(opt.timeout_ms));
  if (!tiers.ok()) return ReportError(opt, tiers.status());
  if (opt.json) {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& t : tiers->tiers()) {
      out.push_back({{"name", t.name()},
                     {"kind", cachesvc::v1::TierKind_Name(t.kind())},
                     {"capacity_bytes", t.capacity_bytes()},
                     {"used_bytes", t.used_bytes()},
                     {"stored_bytes", t.stored_bytes()},
                     {"free_bytes", t.free_bytes()},
                     {"blocks", t.blocks()},
                     {"read_bytes", t.read_bytes()},
                     {"written_bytes", t.written_bytes()},
                     {"leases_active", t.leases_active()},
                     {"checksum_failures", t.checksum_failures()},
                     {"numa_node", t.numa_node()}});
    }
    std::cout << nlohmann::json{{"address", opt.address}, {"tiers", out}}.dump() << "\n";
    return 0;
  }
  std::cout << fmt::format("{:<8} {:<10} {:>12} {:>12} {:>10} {:>6} {:>9}\n", "NAME", "KIND",
                           "CAPACITY", "USED", "BLOCKS", "NUMA", "CHECKSUM");
  for (const auto& t : tiers->tiers()) {
    std::cout << fmt::format("{:<8} {:<10} {:>12} {:>12} {:>10} {:>6} {:>9}\n", t.name(),
                             cachesvc::v1::TierKind_Name(t.kind()), Bytes(t.capacity_bytes()),
                             Bytes(t.used_bytes()), t.blocks(),
                             t.numa_node() < 0 ? std::string("-") : std::to_string(t.numa_node()),
                             t.checksum_failures());
  }
  return 0;
}

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
    return EXIT_FAILURE;
  }
  std::cout << hex << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cachectl: inspect and control a running cachesvc daemon", "cachectl"};
  app.set_version_flag("--version", fmt::format("cachectl {} (commit {})", cachesvc::kVersion,
                                                cachesvc::kGitCommit));
  Options opt;
  if (const char* env = std::getenv("CACHESVC_ADDR")) opt.address = env;
  app.add_option("--addr", opt.address,
                 "daemon address, host:port or unix:/path (env CACHESVC_ADDR)")
      ->capture_default_str();
  app.add_option("--timeout-ms", opt.timeout_ms, "deadline of each call in milliseconds")
      ->check(CLI::Range(1, 3600000))
      ->capture_default_str();
  app.add_flag("--json", opt.json, "print one JSON object instead of a table");
  app.require_subcommand(1);
  auto* health =
      app.add_subcommand("health", "ask whether the daemon is SERVING (exit 0) or not (1)");
  auto* status = app.add_subcommand("status", "version, uptime and state of the daemon");
  auto* tiers = app.add_subcommand("tiers", "each tier's capacity, use, blocks and faults");
  auto* hash_token = app.add_subcommand(
      "hash-token",
      "read a bearer token (one line) from stdin and print its SHA-256 for a tenant's "
      "token_sha256 in the daemon's config; talks to no daemon");
  app.footer(
      "Examples:\n"
      "  cachectl health\n"
      "  cachectl --addr 10.0.0.5:50051 --json status\n"
      "  cachectl tiers\n"
      "  openssl rand -hex 32 | tee token.txt | cachectl hash-token\n"
      "Exit codes: 0 ok, 1 not found / not serving, 2 usage, 3 cannot reach the daemon.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::cerr << "cachectl: " << e.what() << " (see --help)\n";
    return kExitUsage;
  }
  if (health->parsed()) return Health(opt);
  if (status->parsed()) return Status(opt);
  if (tiers->parsed()) return Tiers(opt);
  if (hash_token->parsed()) return HashToken();
  return kExitUsage;
}
