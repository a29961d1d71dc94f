// bench/replay/trace.cc: KeyForBlockId and the helpers the loaders share (trace_internal.h).
#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <map>

#include "bench/replay/trace.h"
#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

namespace cachesvc::replay {

BlockKey KeyForBlockId(std::uint64_t id) {
  BlockKey key;
  for (std::size_t i = 0; i < 8; ++i) key.bytes[i] = static_cast<std::uint8_t>(id >> (8 * i));
  return key;
}

namespace internal {

absl::Status BadInput::Report(const std::string& where, const std::string& reason) {
  std::string text = fmt::format("{}: {}", where, reason);
  if (strict_) return absl::InvalidArgumentError(text);
  if (count_ < kMaxListed) trace_->warnings.push_back(std::move(text));
  ++count_;
  return absl::OkStatus();
}

void BadInput::Finish() {
  if (count_ > kMaxListed) {
    trace_->warnings.push_back(
        fmt::format("... and {} more malformed entries not listed", count_ - kMaxListed));
  }
}

absl::Status ReadLines(const std::string& path, std::vector<std::string>* lines) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("cannot open trace file {}", path));
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines->push_back(std::move(line));
  }
  if (in.bad()) return absl::DataLossError(fmt::format("read error in {}", path));
  return absl::OkStatus();
}

std::optional<std::uint64_t> GetUnsigned(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  const auto it = obj.find(key);
  if (it == obj.end()) return std::nullopt;
  if (it->is_number_unsigned()) return it->get<std::uint64_t>();
  if (it->is_number_integer()) {
    const auto v = it->get<std::int64_t>();
    if (v >= 0) return static_cast<std::uint64_t>(v);
  }
  return std::nullopt;
}

std::optional<double> GetNumber(const nlohmann::json& obj, const char* key) {
  if (!obj.is_object()) return std::nullopt;
  const auto it = obj.find(key);
  if (it == obj.end() || !it->is_number()) return std::nullopt;
  const auto v = it->get<double>();
  if (!std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<std::vector<std::uint64_t>> GetIdArray(const nlohmann::json& obj, const char* key,
                                                     std::string* reason) {
  const auto it = obj.is_object() ? obj.find(key) : obj.end();
  if (it == obj.end() || !it->is_array()) {
    *reason = fmt::format("'{}' missing or not an array", key);
    return std::nullopt;
  }
  std::vector<std::uint64_t> ids;
  ids.reserve(it->size());
  for (const auto& v : *it) {
    if (v.is_number_unsigned()) {
      ids.push_back(v.get<std::uint64_t>());
    } else if (v.is_number_integer() && v.get<std::int64_t>() >= 0) {
      ids.push_back(static_cast<std::uint64_t>(v.get<std::int64_t>()));
    } else {
      *reason = fmt::format("'{}' holds {}, not a non-negative integer id", key, v.dump());
      return std::nullopt;
    }
  }
  return ids;
}

namespace {
std::int64_t RoundToUs(double us) {
  constexpr double kMax = static_cast<double>(std::numeric_limits<std::int64_t>::max() / 2);
  return static_cast<std::int64_t>(std::llround(std::clamp(us, -kMax, kMax)));
}
}  // namespace

std::int64_t SecondsToUs(double s) { return RoundToUs(s * 1e6); }
std::int64_t MillisToUs(double ms) { return RoundToUs(ms * 1e3); }

void SetFixedBlocks(const std::vector<std::uint64_t>& ids, std::uint32_t block_tokens,
                    std::uint64_t id_offset, TraceRequest* req) {
  req->blocks.clear();
  req->block_tokens.clear();
  req->blocks.reserve(ids.size());
  req->block_tokens.reserve(ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) {
    req->blocks.push_back(KeyForBlockId(id_offset + ids[i]));
    std::uint64_t tokens = block_tokens;
    if (i + 1 == ids.size()) {
      const std::uint64_t before = std::uint64_t{block_tokens} * i;
      tokens = req->input_tokens > before ? req->input_tokens - before : 1;
      tokens = std::clamp<std::uint64_t>(tokens, 1, block_tokens);
    }
    req->block_tokens.push_back(static_cast<std::uint32_t>(tokens));
  }
}

void SortAndLimit(std::size_t limit, Trace* trace) {
  std::stable_sort(trace->requests.begin(), trace->requests.end(),
                   [](const TraceRequest& a, const TraceRequest& b) { return a.t_us < b.t_us; });
  if (limit != 0 && trace->requests.size() > limit) trace->requests.resize(limit);
}

void DeriveResumes(Trace* trace) {
  std::map<std::uint64_t, bool> after_tool;  // session -> its last request had a tool call
  for (auto& req : trace->requests) {
    if (req.session == 0) continue;
    const auto it = after_tool.try_emplace(req.session, false).first;
    req.resume = it->second;
    it->second = req.tool_start_us.has_value();
  }
}

std::uint64_t SessionHash(std::string_view s) {
  std::uint64_t h = 0xcbf29ce484222325ULL;
  for (const char c : s) {
    h ^= static_cast<std::uint8_t>(c);
    h *= 0x100000001b3ULL;
  }
  return h == 0 ? 1 : h;
}

}  // namespace internal
}  // namespace cachesvc::replay
