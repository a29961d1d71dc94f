// bench/replay/ragpulse.cc: the RAGPulse loader (loaders.h). Part ids are disjoint across the five
// part files in the published data (checked: no id appears in two files), so a part id is used as
// the block id as it is; each part is one block of its own token length (up to 512).
#include <array>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <unordered_map>

#include "bench/replay/loaders.h"
#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

namespace cachesvc::replay {
namespace {

using internal::GetUnsigned;
using nlohmann::json;

constexpr std::uint64_t kMaxU32 = std::numeric_limits<std::uint32_t>::max();
constexpr std::string_view kTraceSuffix = "0_trace.jsonl";

struct PartKind {
  const char* file_suffix;  // after the shared prefix, e.g. "1_sys_prompt.jsonl"
  const char* id_field;     // the id's field in that file
  const char* trace_key;    // the key under hash_ids in 0_trace.jsonl
};

// In prompt order: system prompt, passages, history, web search, user input.
constexpr std::array<PartKind, 5> kParts = {{
    {"1_sys_prompt.jsonl", "sys_prompt_id", "sys_prompt"},
    {"2_passages.jsonl", "passage_id", "passages_ids"},
    {"3_history.jsonl", "history_id", "history"},
    {"5_web_search.jsonl", "web_search_id", "web_search"},
    {"4_user_input.jsonl", "user_input_id", "user_input"},
}};

using PartLengths = std::unordered_map<std::uint64_t, std::uint32_t>;

[[nodiscard]] absl::Status LoadPartFile(const std::string& path, const PartKind& kind,
                                        internal::BadInput* bad, PartLengths* lengths) {
  std::vector<std::string> lines;
  if (auto st = internal::ReadLines(path, &lines); !st.ok()) return st;
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;
    const json obj = json::parse(lines[i], nullptr, /*allow_exceptions=*/false);
    const auto id = GetUnsigned(obj, kind.id_field);
    const auto tokens = GetUnsigned(obj, "token_length");
    std::string reason;
    if (obj.is_discarded() || !obj.is_object()) {
      reason = "not a JSON object";
    } else if (!id) {
      reason = fmt::format("'{}' missing or not an unsigned integer", kind.id_field);
    } else if (!tokens || *tokens == 0 || *tokens > kMaxU32) {
      reason = "'token_length' missing or not a positive 32-bit integer";
    }
    if (!reason.empty()) {
      if (auto st = bad->Report(fmt::format("{}:{}", path, i + 1), reason); !st.ok()) return st;
      continue;
    }
    (*lengths)[*id] = static_cast<std::uint32_t>(*tokens);
  }
  return absl::OkStatus();
}

// Seconds as a decimal string ("82") or a number.
std::optional<double> ParseSeconds(const json& obj) {
  const auto it = obj.find("timestamp");
  if (it == obj.end()) return std::nullopt;
  if (it->is_number()) return it->get<double>();
  if (!it->is_string()) return std::nullopt;
  const std::string s = it->get<std::string>();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size() || errno != 0) return std::nullopt;
  return v;
}

std::string ParseLine(const std::string& line, const std::array<PartLengths, 5>& lengths,
                      TraceRequest* req) {
  const json obj = json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (obj.is_discarded() || !obj.is_object()) return "not a JSON object";
  const auto seconds = ParseSeconds(obj);
  if (!seconds || !std::isfinite(*seconds) || *seconds < 0) {
    return "'timestamp' missing or not non-negative seconds";
  }
  const auto input = GetUnsigned(obj, "input_length");
  if (!input || *input > kMaxU32) return "'input_length' missing or not a 32-bit unsigned integer";
  const auto output = GetUnsigned(obj, "output_length");
  if (!output || *output > kMaxU32)
    return "'output_length' missing or not a 32-bit unsigned integer";
  const auto session = obj.find("session_id");
  if (session == obj.end() || !session->is_string()) return "'session_id' missing or not a string";
  const auto parts = obj.find("hash_ids");
  if (parts == obj.end() || !parts->is_object()) return "'hash_ids' missing or not an object";
  for (std::size_t k = 0; k < kParts.size(); ++k) {
    if (!parts->contains(kParts[k].trace_key)) continue;
    std::string reason;
    const auto ids = internal::GetIdArray(*parts, kParts[k].trace_key, &reason);
    if (!ids) return reason;
    for (const auto id : *ids) {
      const auto it = lengths[k].find(id);
      if (it == lengths[k].end()) {
        return fmt::format("{} id {} not in {}", kParts[k].trace_key, id, kParts[k].file_suffix);
      }
      req->blocks.push_back(KeyForBlockId(id));
      req->block_tokens.push_back(it->second);
    }
  }
  req->t_us = internal::SecondsToUs(*seconds);
  req->session = internal::SessionHash(session->get<std::string>());
  req->input_tokens = static_cast<std::uint32_t>(*input);
  req->output_tokens = static_cast<std::uint32_t>(*output);
  return {};
}

}  // namespace

absl::StatusOr<Trace> LoadRagPulse(const std::string& trace_path, const LoadOptions& options) {
  if (!trace_path.ends_with(kTraceSuffix)) {
    return absl::InvalidArgumentError(
        fmt::format("RAGPulse trace {} does not end in {}", trace_path, kTraceSuffix));
  }
  const std::string prefix = trace_path.substr(0, trace_path.size() - kTraceSuffix.size());
  Trace trace;
  trace.name = trace_path;
  trace.nominal_block_tokens = 0;  // parts are content chunks of varying length
  internal::BadInput bad(options.strict, &trace);
  std::array<PartLengths, 5> lengths;
  for (std::size_t k = 0; k < kParts.size(); ++k) {
    if (auto st = LoadPartFile(prefix + kParts[k].file_suffix, kParts[k], &bad, &lengths[k]);
        !st.ok()) {
      return st;
    }
  }
  std::vector<std::string> lines;
  if (auto st = internal::ReadLines(trace_path, &lines); !st.ok()) return st;
  trace.requests.reserve(lines.size());
  for (std::size_t i = 0; i < lines.size(); ++i) {
    if (lines[i].find_first_not_of(" \t") == std::string::npos) continue;  // files end blank
    TraceRequest req;
    if (std::string reason = ParseLine(lines[i], lengths, &req); !reason.empty()) {
      if (auto st = bad.Report(fmt::format("{}:{}", trace_path, i + 1), reason); !st.ok()) {
        return st;
      }
      continue;
    }
    trace.requests.push_back(std::move(req));
  }
  bad.Finish();
  internal::SortAndLimit(options.limit, &trace);
  return trace;
}

}  // namespace cachesvc::replay
