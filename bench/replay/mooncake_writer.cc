// bench/replay/mooncake_writer.cc: WriteMooncakeJsonl (agent_workload.h). Writes only what
// LoadMooncake rebuilds exactly, and refuses the rest rather than writing a lossy file.
#include <fstream>

#include "bench/replay/agent_workload.h"
#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

namespace cachesvc::replay {
namespace {

using nlohmann::ordered_json;  // keeps Mooncake's field order

constexpr std::uint32_t kMooncakeBlockTokens = 512;

// Microseconds as milliseconds: an integer when whole, else a double that reads back exactly.
ordered_json Millis(std::int64_t us) {
  if (us % 1000 == 0) return us / 1000;
  return static_cast<double>(us) / 1000.0;
}

std::optional<std::uint64_t> IdOfKey(const BlockKey& key) {
  for (std::size_t i = 8; i < BlockKey::kBytes; ++i) {
    if (key.bytes[i] != 0) return std::nullopt;
  }
  std::uint64_t id = 0;
  for (std::size_t i = 0; i < 8; ++i) id |= std::uint64_t{key.bytes[i]} << (8 * i);
  return id;
}

}  // namespace

absl::Status WriteMooncakeJsonl(const Trace& trace, const std::string& path) {
  const std::uint32_t block = trace.nominal_block_tokens;
  if (block == 0) {
    return absl::InvalidArgumentError(
        fmt::format("trace {} has no fixed block size; Mooncake jsonl needs one", trace.name));
  }
  std::ofstream out(path, std::ios::trunc);
  if (!out) return absl::InternalError(fmt::format("cannot write {}", path));
  for (std::size_t i = 0; i < trace.requests.size(); ++i) {
    const TraceRequest& req = trace.requests[i];
    std::vector<std::uint64_t> ids;
    ids.reserve(req.blocks.size());
    for (const auto& key : req.blocks) {
      const auto id = IdOfKey(key);
      if (!id) {
        return absl::InvalidArgumentError(
            fmt::format("request {}: key {} is not a KeyForBlockId id", i, key.Hex()));
      }
      ids.push_back(*id);
    }
    TraceRequest rebuilt;
    rebuilt.input_tokens = req.input_tokens;
    internal::SetFixedBlocks(ids, block, 0, &rebuilt);
    if (rebuilt.block_tokens != req.block_tokens) {
      return absl::InvalidArgumentError(
          fmt::format("request {}: block sizes do not follow {}-token blocks of {} input tokens", i,
                      block, req.input_tokens));
    }
    if (req.tool_start_us.has_value() != req.tool_end_us.has_value()) {
      return absl::InvalidArgumentError(fmt::format("request {}: tool start without end", i));
    }
    ordered_json line;
    line["timestamp"] = Millis(req.t_us);
    line["input_length"] = req.input_tokens;
    line["output_length"] = req.output_tokens;
    line["hash_ids"] = ids;
    if (req.session != 0) line["session_id"] = req.session;
    if (block != kMooncakeBlockTokens) line["block_size"] = block;
    if (req.tool_start_us) {
      line["tool_name"] = req.tool_name;
      line["tool_start_ms"] = Millis(*req.tool_start_us);
      line["tool_end_ms"] = Millis(*req.tool_end_us);
    }
    out << line.dump() << '\n';
  }
  out.flush();
  if (!out) return absl::InternalError(fmt::format("write to {} failed", path));
  return absl::OkStatus();
}

}  // namespace cachesvc::replay
