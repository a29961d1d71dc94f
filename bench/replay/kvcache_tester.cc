// bench/replay/kvcache_tester.cc: the kv-cache-tester v8 loader and tarball helper (loaders.h).
//
// Timing, measured on the v8 files: a top-level request's `t` is seconds from the conversation's
// start; a sub-agent entry's `t` is when it *finished* (t - duration_ms/1000 lands within ~1 s of
// the end of the parent response that spawned it, on all 63 sub-agents), and its nested requests'
// `t` count from the sub-agent's start. So a sub-agent starts at t - duration_ms/1000.
// Blocks: every v8 request has floor(in/64) hash ids (the partial tail has none), so all blocks
// hold 64 tokens; SetFixedBlocks still gives a partial last block to a file that has one.
#include <spawn.h>
#include <sys/wait.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "base/errno_message.h"
#include "bench/replay/loaders.h"
#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

extern char** environ;  // NOLINT: POSIX, for posix_spawnp

namespace cachesvc::replay {
namespace {

namespace fs = std::filesystem;
using internal::GetNumber;
using internal::GetUnsigned;
using nlohmann::json;

constexpr std::uint32_t kBlockTokens = 64;
constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
constexpr int kSubagentBits = 20;  // session = (conversation + 1) << 20 | sub-agent number

struct Parsed {
  TraceRequest req;
  double api_s = 0;
  bool tool_use = false;
  std::string spawned;  // sub-agent type when a sub-agent entry follows this request
};

// One conversation file being loaded.
struct Conversation {
  std::string file;
  std::uint64_t id_offset = 0;
  std::uint64_t session_base = 0;
  std::uint64_t next_subagent = 1;
  internal::BadInput* bad = nullptr;
  std::vector<TraceRequest>* out = nullptr;
};

std::string ParseRequest(const json& r, std::int64_t base_us, const Conversation& conv, Parsed* p) {
  const auto t = GetNumber(r, "t");
  if (!t || *t < 0) return "'t' missing or not a non-negative number";
  const auto in = GetUnsigned(r, "in");
  if (!in || *in > kMaxU32) return "'in' missing or not a 32-bit unsigned integer";
  const auto out = GetUnsigned(r, "out");
  if (!out || *out > kMaxU32) return "'out' missing or not a 32-bit unsigned integer";
  std::string reason;
  const auto ids = internal::GetIdArray(r, "hash_ids", &reason);
  if (!ids) return reason;
  for (const auto id : *ids) {
    if (id > kMaxU32) return fmt::format("hash id {} does not fit the per-file 32-bit space", id);
  }
  if (r.contains("api_time")) {
    const auto api = GetNumber(r, "api_time");
    if (!api || *api < 0) return "'api_time' not a non-negative number";
    p->api_s = *api;
  }
  if (r.contains("stop")) {
    if (!r["stop"].is_string()) return "'stop' not a string";
    p->tool_use = r["stop"].get<std::string>() == "tool_use";
  }
  p->req.t_us = base_us + internal::SecondsToUs(*t);
  p->req.input_tokens = static_cast<std::uint32_t>(*in);
  p->req.output_tokens = static_cast<std::uint32_t>(*out);
  internal::SetFixedBlocks(*ids, kBlockTokens, conv.id_offset, &p->req);
  return {};
}

// Loads the request list `reqs` of one session (the conversation, or one sub-agent) starting at
// base_us, recursing into sub-agents, and derives the session's tool calls.
[[nodiscard]] absl::Status LoadSession(const json& reqs, const std::string& where,
                                       std::int64_t base_us, std::uint64_t session,
                                       Conversation* conv) {
  std::vector<Parsed> parsed;
  for (std::size_t i = 0; i < reqs.size(); ++i) {
    const json& r = reqs[i];
    const std::string at = fmt::format("{}requests[{}]", where, i);
    const bool subagent =
        r.is_object() && r.contains("type") && r["type"].is_string() && r["type"] == "subagent";
    if (!subagent) {
      Parsed p;
      if (std::string reason = ParseRequest(r, base_us, *conv, &p); !reason.empty()) {
        if (auto st = conv->bad->Report(fmt::format("{}: {}", conv->file, at), reason); !st.ok()) {
          return st;
        }
        continue;
      }
      p.req.session = session;
      parsed.push_back(std::move(p));
      continue;
    }
    const auto t = GetNumber(r, "t");
    const auto duration_ms = r.contains("duration_ms") ? GetNumber(r, "duration_ms") : 0.0;
    std::string reason;
    if (!t || *t < 0) reason = "sub-agent 't' missing or not a non-negative number";
    if (!duration_ms || *duration_ms < 0) reason = "sub-agent 'duration_ms' not a number >= 0";
    if (!r.contains("requests") || !r["requests"].is_array())
      reason = "sub-agent has no requests[]";
    if (conv->next_subagent >= (std::uint64_t{1} << kSubagentBits)) reason = "too many sub-agents";
    if (!reason.empty()) {
      if (auto st = conv->bad->Report(fmt::format("{}: {}", conv->file, at), reason); !st.ok()) {
        return st;
      }
      continue;
    }
    const double start_s = std::max(0.0, *t - *duration_ms / 1000);
    if (!parsed.empty() && parsed.back().spawned.empty()) {
      const auto& type = r.contains("subagent_type") ? r["subagent_type"] : json();
      parsed.back().spawned = type.is_string() ? type.get<std::string>() : "agent";
    }
    const std::uint64_t sub_session = conv->session_base | conv->next_subagent++;
    if (auto st = LoadSession(r["requests"], at + ".", base_us + internal::SecondsToUs(start_s),
                              sub_session, conv);
        !st.ok()) {
      return st;
    }
  }
  std::stable_sort(parsed.begin(), parsed.end(),
                   [](const Parsed& a, const Parsed& b) { return a.req.t_us < b.req.t_us; });
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    TraceRequest& req = parsed[i].req;
    if (!parsed[i].tool_use || i + 1 == parsed.size()) continue;
    const std::int64_t start = req.t_us + internal::SecondsToUs(parsed[i].api_s);
    TraceRequest& next = parsed[i + 1].req;
    if (next.t_us <= start) continue;
    req.tool_start_us = start;
    req.tool_end_us = next.t_us;
    req.tool_name = parsed[i].spawned.empty() ? "tool" : "subagent:" + parsed[i].spawned;
    next.resume = true;
  }
  for (auto& p : parsed) conv->out->push_back(std::move(p.req));
  return absl::OkStatus();
}

// Reads and parses one file; a syntax error names its line.
[[nodiscard]] absl::Status LoadFile(const fs::path& path, std::size_t index, std::int64_t start_us,
                                    internal::BadInput* bad, Trace* trace) {
  Conversation conv;
  conv.file = path.string();
  conv.id_offset = std::uint64_t{index} << 32;
  conv.session_base = (std::uint64_t{index} + 1) << kSubagentBits;
  conv.bad = bad;
  conv.out = &trace->requests;
  std::ifstream in(path);
  if (!in) return bad->Report(conv.file, "cannot open");
  std::stringstream buf;
  buf << in.rdbuf();
  const std::string text = buf.str();
  json obj;
  try {  // the exception stays here: it is how nlohmann reports the error's position
    obj = json::parse(text);
  } catch (const json::parse_error& e) {
    const auto end = text.begin() + static_cast<std::ptrdiff_t>(std::min(e.byte, text.size()));
    const auto line = 1 + std::count(text.begin(), end, '\n');
    return bad->Report(fmt::format("{}:{}", conv.file, line), "not valid JSON");
  }
  if (!obj.is_object() || !obj.contains("requests") || !obj["requests"].is_array()) {
    return bad->Report(conv.file, "not a conversation object with requests[]");
  }
  if (obj.contains("block_size") && GetUnsigned(obj, "block_size") != kBlockTokens) {
    return bad->Report(conv.file, fmt::format("block_size {} is not 64", obj["block_size"].dump()));
  }
  return LoadSession(obj["requests"], "", start_us, conv.session_base, &conv);
}

bool IsTraceFile(const fs::directory_entry& e) {
  const std::string name = e.path().filename().string();
  return e.is_regular_file() && name.starts_with("trace_") && name.ends_with(".json");
}

}  // namespace

absl::StatusOr<Trace> LoadKvCacheTester(const std::string& folder,
                                        const KvCacheTesterOptions& options) {
  fs::path dir(folder);
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    return absl::NotFoundError(fmt::format("kv-cache-tester folder {} not found", folder));
  }
  std::vector<fs::path> files;
  for (int attempt = 0; attempt < 2 && files.empty(); ++attempt) {
    for (const auto& e : fs::directory_iterator(dir, ec)) {
      if (IsTraceFile(e)) files.push_back(e.path());
    }
    if (ec) return absl::NotFoundError(fmt::format("cannot list {}: {}", folder, ec.message()));
    if (files.empty() && fs::is_directory(dir / "traces", ec)) dir /= "traces";
  }
  if (files.empty()) {
    return absl::NotFoundError(fmt::format("no trace_*.json files in {}", folder));
  }
  std::sort(files.begin(), files.end());
  if (!(options.stagger_s >= 0)) {
    return absl::InvalidArgumentError(fmt::format("stagger_s {} < 0", options.stagger_s));
  }
  Trace trace;
  std::size_t users = options.users == 0 ? files.size() : options.users;
  if (users > files.size()) {
    trace.warnings.push_back(fmt::format("asked for {} users; {} has only {} conversations", users,
                                         dir.string(), files.size()));
    users = files.size();
  }
  trace.name = fmt::format("kvcachetester-v8 users={} stagger_s={}", users, options.stagger_s);
  trace.nominal_block_tokens = kBlockTokens;
  internal::BadInput bad(options.load.strict, &trace);
  for (std::size_t k = 0; k < users; ++k) {
    const std::int64_t start_us = internal::SecondsToUs(static_cast<double>(k) * options.stagger_s);
    if (auto st = LoadFile(files[k], k, start_us, &bad, &trace); !st.ok()) return st;
  }
  bad.Finish();
  internal::SortAndLimit(options.load.limit, &trace);
  return trace;
}

absl::StatusOr<std::string> ExtractKvCacheTesterTarball(const std::string& tarball,
                                                        const std::string& dest_dir) {
  std::error_code ec;
  fs::create_directories(dest_dir, ec);
  if (ec) return absl::InternalError(fmt::format("cannot create {}: {}", dest_dir, ec.message()));
  std::vector<std::string> args = {"tar", "-xJf", tarball, "-C", dest_dir};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid = 0;
  if (const int rc = posix_spawnp(&pid, "tar", nullptr, nullptr, argv.data(), environ); rc != 0) {
    return absl::InternalError(fmt::format("cannot start tar: {}", ErrnoMessage(rc)));
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return absl::InternalError("waitpid on tar failed");
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    return absl::InternalError(fmt::format("tar -xJf {} -C {} failed", tarball, dest_dir));
  }
  const fs::path traces = fs::path(dest_dir) / "traces";
  return fs::is_directory(traces, ec) ? traces.string() : dest_dir;
}

}  // namespace cachesvc::replay
