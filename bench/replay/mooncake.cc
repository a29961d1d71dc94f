// bench/replay/mooncake.cc: the Mooncake jsonl loader (loaders.h), which also reads the agent
// workload generator's extension fields (session, block size, tool call).
#include <cmath>
#include <limits>

#include "bench/replay/loaders.h"
#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

namespace cachesvc::replay {
namespace {

using internal::GetIdArray;
using internal::GetNumber;
using internal::GetUnsigned;
using nlohmann::json;

constexpr std::uint32_t kMooncakeBlockTokens = 512;
constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();

// An extension field is absent when missing or null.
bool Has(const json& obj, const char* key) { return obj.contains(key) && !obj[key].is_null(); }

// Parses one line into *req; on failure returns the reason (empty on success).
std::string ParseLine(const std::string& line, TraceRequest* req, std::uint32_t* block_tokens) {
  const json obj = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded()) return "not valid JSON";
  if (!obj.is_object()) return "not a JSON object";
  const auto ts_ms = GetNumber(obj, "timestamp");
  if (!ts_ms || *ts_ms < 0) return "'timestamp' missing or not a non-negative number";
  const auto input = GetUnsigned(obj, "input_length");
  if (!input || *input > kMaxU32) return "'input_length' missing or not a 32-bit unsigned integer";
  const auto output = GetUnsigned(obj, "output_length");
  if (!output || *output > kMaxU32)
    return "'output_length' missing or not a 32-bit unsigned integer";
  std::string reason;
  const auto ids = GetIdArray(obj, "hash_ids", &reason);
  if (!ids) return reason;

  *block_tokens = kMooncakeBlockTokens;
  if (Has(obj, "block_size")) {
    const auto b = GetUnsigned(obj, "block_size");
    if (!b || *b == 0 || *b > kMaxU32) return "'block_size' not a positive 32-bit integer";
    *block_tokens = static_cast<std::uint32_t>(*b);
  }
  if (Has(obj, "session_id")) {
    const auto s = GetUnsigned(obj, "session_id");
    if (!s) return "'session_id' not an unsigned integer";
    req->session = *s;
  }
  const bool has_start = Has(obj, "tool_start_ms");
  const bool has_end = Has(obj, "tool_end_ms");
  if (has_start != has_end) return "'tool_start_ms' and 'tool_end_ms' must come together";
  if (has_start) {
    const auto start = GetNumber(obj, "tool_start_ms");
    const auto end = GetNumber(obj, "tool_end_ms");
    if (!start || !end || *end < *start) return "tool times not numbers with start <= end";
    req->tool_start_us = internal::MillisToUs(*start);
    req->tool_end_us = internal::MillisToUs(*end);
  }
  if (Has(obj, "tool_name")) {
    const auto& name = obj["tool_name"];
    if (!name.is_string()) return "'tool_name' not a string";
    req->tool_name = name.get<std::string>();
  }
  req->t_us = internal::MillisToUs(*ts_ms);
  req->input_tokens = static_cast<std::uint32_t>(*input);
  req->output_tokens = static_cast<std::uint32_t>(*output);
  internal::SetFixedBlocks(*ids, *block_tokens, 0, req);
  return {};
}

}  // namespace

absl::StatusOr<Trace> LoadMooncake(const std::string& path, const LoadOptions& options) {
  std::vector<std::string> lines;
  if (auto st = internal::ReadLines(path, &lines); !st.ok()) return st;
  Trace trace;
  trace.name = path;
  internal::BadInput bad(options.strict, &trace);
  std::optional<std::uint32_t> nominal;
  bool mixed = false;
  trace.requests.reserve(lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    TraceRequest req;
    std::uint32_t block_tokens = 0;
    if (std::string reason = ParseLine(lines[i], &req, &block_tokens); !reason.empty()) {
      if (auto st = bad.Report(fmt::format("{}:{}", path, i + 1), reason); !st.ok()) return st;
      continue;
    }
    if (nominal && *nominal != block_tokens) mixed = true;
    nominal = block_tokens;
    trace.requests.push_back(std::move(req));
  }
  bad.Finish();
  trace.nominal_block_tokens = mixed ? 0 : nominal.value_or(kMooncakeBlockTokens);
  internal::SortAndLimit(options.limit, &trace);
  internal::DeriveResumes(&trace);
  return trace;
}

}  // namespace cachesvc::replay
