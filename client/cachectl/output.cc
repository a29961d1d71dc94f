#include "client/cachectl/output.h"

#include <algorithm>
#include <chrono>
#include <iostream>

#include "fmt/format.h"

namespace cachesvc::cachectl {

int ExitCodeFor(const absl::Status& status) {
  if (status.ok()) return kExitOk;
  if (absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) return kExitUnreachable;
  if (absl::IsInvalidArgument(status)) return kExitUsage;
  return kExitNotFound;
}

int ReportError(const Globals& g, const absl::Status& status) {
  const std::string code = absl::StatusCodeToString(status.code());
  std::cerr << "cachectl: " << g.address << ": " << status.message() << " (" << code << ")\n";
  if (absl::IsUnimplemented(status)) {
    std::cerr << "cachectl: this daemon does not offer the call; upgrade it\n";
  }
  const int exit_code = ExitCodeFor(status);
  if (g.json) {
    PrintJson({{"error",
                {{"code", code},
                 {"message", std::string{status.message()}},
                 {"address", g.address},
                 {"exit_code", exit_code}}}});
  }
  return exit_code;
}

int UsageError(const Globals& g, const std::string& message) {
  std::cerr << "cachectl: " << message << " (see --help)\n";
  if (g.json) {
    PrintJson({{"error", {{"code", "USAGE"}, {"message", message}, {"exit_code", kExitUsage}}}});
  }
  return kExitUsage;
}

int UsageError(const Globals& g, const absl::Status& status) {
  return UsageError(g, std::string{status.message()});
}

client::AdminClient NewClient(const Globals& g) {
  client::AdminClientOptions options;
  options.address = g.address;
  options.token = g.token;
  options.tls_root_pem = g.tls_root_pem;
  options.tls_server_name = g.tls_server_name;
  options.timeout = std::chrono::milliseconds(g.timeout_ms);
  return client::AdminClient(options);
}

void PrintJson(const nlohmann::json& doc) {
  // Invalid UTF-8 (a client_session_id is bytes to the daemon) is replaced, never thrown on.
  std::cout << doc.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
}

Table::Table(std::vector<Column> columns, std::size_t gap)
    : columns_(std::move(columns)), gap_(gap) {}

void Table::AddRow(std::vector<std::string> cells) {
  cells.resize(columns_.size());
  rows_.push_back(std::move(cells));
}

void Table::Print(std::ostream& out) const {
  std::vector<std::size_t> width(columns_.size());
  for (std::size_t c = 0; c < columns_.size(); ++c) {
    width[c] = std::max(columns_[c].min_width, columns_[c].header.size());
    for (const auto& row : rows_) width[c] = std::max(width[c], row[c].size());
  }
  auto line = [&](const std::vector<std::string>& cells) {
    std::string text;
    for (std::size_t c = 0; c < columns_.size(); ++c) {
      if (c > 0) text.append(gap_, ' ');
      const std::size_t pad = width[c] - std::min(width[c], cells[c].size());
      if (columns_[c].right) text.append(pad, ' ');
      text += cells[c];
      // No trailing blanks after the last column.
      if (!columns_[c].right && c + 1 < columns_.size()) text.append(pad, ' ');
    }
    out << text << "\n";
  };
  std::vector<std::string> headers;
  for (const auto& c : columns_) headers.push_back(c.header);
  line(headers);
  for (const auto& row : rows_) line(row);
}

std::string Bytes(std::uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 5) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, units[u]);
}

std::string Millis(std::int64_t ms) {
  if (ms <= 0) return "0s";
  std::int64_t s = ms / 1000;
  if (s == 0) return fmt::format("{}ms", ms);
  std::string out;
  if (s >= 86400) out += fmt::format("{}d", s / 86400), s %= 86400;
  if (s >= 3600) out += fmt::format("{}h", s / 3600), s %= 3600;
  if (s >= 60) out += fmt::format("{}m", s / 60), s %= 60;
  if (s > 0 || out.empty()) out += fmt::format("{}s", s);
  return out;
}

std::string KeyHex(const std::string& key_bytes) {
  std::string hex;
  hex.reserve(key_bytes.size() * 2);
  for (unsigned char c : key_bytes) hex += fmt::format("{:02x}", c);
  return hex;
}

std::string StateName(v1::SessionState state) {
  switch (state) {
    case v1::SESSION_RUNNING:
      return "running";
    case v1::SESSION_WAITING_TOOL:
      return "waiting_tool";
    case v1::SESSION_IDLE:
      return "idle";
    case v1::SESSION_CLOSED:
      return "closed";
    default:
      return fmt::format("state_{}", static_cast<int>(state));
  }
}

std::string TierName(v1::TierKind kind) {
  switch (kind) {
    case v1::TIER_HBM:
      return "hbm";
    case v1::TIER_HOST:
      return "host";
    case v1::TIER_NVME:
      return "nvme";
    default:
      return fmt::format("tier_{}", static_cast<int>(kind));
  }
}

std::string CodecName(v1::Codec codec) {
  switch (codec) {
    case v1::CODEC_RAW:
      return "raw";
    case v1::CODEC_TQ3:
      return "tq3";
    case v1::CODEC_TQ4:
      return "tq4";
    case v1::CODEC_UNSPECIFIED:
      return "-";
    default:
      return fmt::format("codec_{}", static_cast<int>(codec));
  }
}

std::string TierList(const google::protobuf::RepeatedField<int>& tiers) {
  std::string out;
  for (int t : tiers) {
    if (!out.empty()) out += ",";
    out += TierName(static_cast<v1::TierKind>(t));
  }
  return out.empty() ? "-" : out;
}

namespace {

nlohmann::json TierNames(const google::protobuf::RepeatedField<int>& tiers) {
  nlohmann::json out = nlohmann::json::array();
  for (int t : tiers) out.push_back(v1::TierKind_Name(t));
  return out;
}

}  // namespace

nlohmann::json ToJson(const v1::BlockLocation& b) {
  return {{"key", KeyHex(b.key().key())},
          {"tiers", TierNames(b.tiers())},
          {"codec", v1::Codec_Name(b.codec())}};
}

nlohmann::json ToJson(const v1::SessionInfo& s) {
  nlohmann::json out{{"session_id", s.session_id()},
                     {"client_session_id", s.client_session_id()},
                     {"layout_fingerprint", fmt::format("{:016x}", s.layout_fingerprint())},
                     {"state", v1::SessionState_Name(s.state())},
                     {"context_tokens", s.context_tokens()},
                     {"parent_session_id", s.parent_session_id()},
                     {"pinned_until_unix_ms", s.pinned_until_unix_ms()}};
  if (s.state() == v1::SESSION_WAITING_TOOL) {
    out["tool_name"] = s.tool_name();
    out["expected_ms"] = s.expected_ms();
  }
  if (s.tokens_size() > 0)
    out["tokens"] = std::vector<std::uint32_t>(s.tokens().begin(), s.tokens().end());
  if (s.blocks_size() > 0) {
    nlohmann::json blocks = nlohmann::json::array();
    for (const auto& b : s.blocks()) blocks.push_back(ToJson(b));
    out["blocks"] = std::move(blocks);
  }
  return out;
}

nlohmann::json ToJson(const v1::TierStats& t) {
  return {{"name", t.name()},
          {"kind", v1::TierKind_Name(t.kind())},
          {"capacity_bytes", t.capacity_bytes()},
          {"used_bytes", t.used_bytes()},
          {"stored_bytes", t.stored_bytes()},
          {"free_bytes", t.free_bytes()},
          {"blocks", t.blocks()},
          {"hits", t.hits()},
          {"misses", t.misses()},
          {"read_bytes", t.read_bytes()},
          {"written_bytes", t.written_bytes()},
          {"evictions", t.evictions()},
          {"leases_active", t.leases_active()},
          {"checksum_failures", t.checksum_failures()},
          {"numa_node", t.numa_node()},
          {"internal_fragmentation", t.internal_fragmentation()},
          {"external_fragmentation", t.external_fragmentation()}};
}

nlohmann::json ToJson(const v1::GetBlockResponse& b) {
  return {{"key", KeyHex(b.key().key())},
          {"layout_fingerprint", fmt::format("{:016x}", b.layout_fingerprint())},
          {"tiers", TierNames(b.tiers())},
          {"codec", v1::Codec_Name(b.codec())},
          {"length", b.length()},
          {"checksum", fmt::format("{:016x}", b.checksum())},
          {"sessions", b.sessions()},
          {"leases", b.leases()},
          {"last_access_unix_ms", b.last_access_unix_ms()},
          {"accesses", b.accesses()}};
}

nlohmann::json ToJson(const v1::PolicyKnob& k) {
  return {{"name", k.name()}, {"value", k.value()}, {"help", k.help()}};
}

}  // namespace cachesvc::cachectl
