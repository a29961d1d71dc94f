// client/cachectl/output.h: what every cachectl command shares: the global options, the exit
// codes and how a failed call maps to one, the aligned text tables, and the names and JSON forms
// of the wire types.
//
// Output contract (docs/cachectl.md): without --json a command prints a human table on stdout;
// with --json it prints exactly one JSON document on stdout (`top` prints one per frame, one per
// line) and nothing else, also on failure, when the document is {"error": {...}}. Diagnostics go to
// stderr, always starting "cachectl: ".
#pragma once

#include <cstdint>
#include <iosfwd>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "cachesvc/v1/cachesvc.pb.h"
#include "client/admin_client.h"
#include "nlohmann/json.hpp"

namespace cachesvc::cachectl {

// Exit codes. 1 is also what a daemon that does not offer a call (UNIMPLEMENTED), refuses the
// token (UNAUTHENTICATED) or refuses the state of an object (FAILED_PRECONDITION) gives: the daemon
// answered, and the answer is no. The --json error object carries the exact gRPC code.
inline constexpr int kExitOk = 0;
inline constexpr int kExitNotFound = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitUnreachable = 3;

// Options every command takes (before or after the command's name).
struct Globals {
  std::string address = "127.0.0.1:50051";
  std::string token;         // --token, --token-file or CACHESVC_TOKEN
  std::string tls_root_pem;  // contents of --tls-root (read by main); empty: plaintext
  std::string tls_server_name;
  std::string metrics_address;  // host:port of /metrics (top); empty: not used
  int timeout_ms = 3000;
  bool json = false;
};

// The exit code for a failed call: 3 for UNAVAILABLE and DEADLINE_EXCEEDED (nothing answered in
// time, or the daemon said it cannot serve now), 2 for INVALID_ARGUMENT (the daemon refused a value
// given on the command line), 1 for every other answer.
int ExitCodeFor(const absl::Status& status);

// Prints a failed call: "cachectl: ADDRESS: MESSAGE (CODE)" on stderr, and with --json the error
// object on stdout. Returns ExitCodeFor(status).
int ReportError(const Globals& g, const absl::Status& status);

// A usage error found after parsing (a malformed key, a bad token file): the message on stderr,
// with --json the error object (code "USAGE") on stdout. Returns kExitUsage.
int UsageError(const Globals& g, const std::string& message);
int UsageError(const Globals& g, const absl::Status& status);

// A client with the global options (no RPC yet).
client::AdminClient NewClient(const Globals& g);

// Prints `doc` on stdout, one line.
void PrintJson(const nlohmann::json& doc);

// A text table: columns padded to their widest cell (at least `min_width`), separated by `gap`
// spaces; numbers are right-aligned.
class Table {
 public:
  struct Column {
    Column(std::string header_text, bool right_aligned = false, std::size_t min = 0)
        : header(std::move(header_text)), right(right_aligned), min_width(min) {}
    std::string header;
    bool right;
    std::size_t min_width;
  };
  explicit Table(std::vector<Column> columns, std::size_t gap = 2);
  void AddRow(std::vector<std::string> cells);
  void Print(std::ostream& out) const;
  std::size_t rows() const { return rows_.size(); }

 private:
  std::vector<Column> columns_;
  std::size_t gap_;
  std::vector<std::vector<std::string>> rows_;
};

// "512 B", "16.0 KiB", "1.5 GiB".
std::string Bytes(std::uint64_t bytes);
// "1h2m3s" (whole seconds) for a span of milliseconds; "0s" for 0 and below.
std::string Millis(std::int64_t ms);
// 32 lowercase hex digits of a key's 16 wire bytes (any other length: the bytes in hex).
std::string KeyHex(const std::string& key_bytes);

// Short names for tables and flags: "running", "waiting_tool", "idle", "closed"; "host", "nvme",
// "hbm"; "raw", "tq3", "tq4". JSON uses the proto enum names (SESSION_RUNNING, TIER_HOST, ...).
std::string StateName(v1::SessionState state);
std::string TierName(v1::TierKind kind);
std::string CodecName(v1::Codec codec);
// "host,nvme", or "-" when no tier holds the block.
std::string TierList(const google::protobuf::RepeatedField<int>& tiers);

// JSON forms of the wire types (field names as in cachesvc.proto).
nlohmann::json ToJson(const v1::SessionInfo& s);
nlohmann::json ToJson(const v1::BlockLocation& b);
nlohmann::json ToJson(const v1::TierStats& t);
nlohmann::json ToJson(const v1::GetBlockResponse& b);
nlohmann::json ToJson(const v1::PolicyKnob& k);

}  // namespace cachesvc::cachectl
