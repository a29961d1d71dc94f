// bench/replay/trace.h: request traces for the replay benchmark, in one in-memory form whatever
// the source (Mooncake jsonl, kv-cache-tester v8 agent sessions, RAGPulse, the project's agent
// workload generator). The replay (bench/replay/replay.cc) feeds these to the service core's
// CacheEngine in virtual time.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "proto/block_key.h"

namespace cachesvc::replay {

// One request as the engine sees it.
struct TraceRequest {
  std::int64_t t_us = 0;                    // arrival, virtual microseconds from the trace's start
  std::uint64_t session = 0;                // conversation / agent id; 0 when the trace has none
  std::vector<BlockKey> blocks;             // the prompt's blocks in order (prefix chain)
  std::vector<std::uint32_t> block_tokens;  // tokens in each block (the last may be partial)
  std::uint32_t input_tokens = 0;
  std::uint32_t output_tokens = 0;
  // Set when this request's response ends in a tool call: when the call starts (end of the
  // response) and when the session's next request arrives (the tool's return). The policy is told
  // the start and (as its expectation) the tool's duration; the next request of the session is a
  // "resume".
  std::optional<std::int64_t> tool_start_us;
  std::optional<std::int64_t> tool_end_us;
  std::string tool_name;  // when known
  bool resume = false;    // this request follows a tool call of its session
};

struct Trace {
  std::string name;                        // file or generator name, for the JSON
  std::uint32_t nominal_block_tokens = 0;  // 512 (Mooncake), 64 (kv-cache-tester), 0 = varies
  std::vector<TraceRequest> requests;      // sorted by t_us
  std::vector<std::string> warnings;       // malformed lines skipped, with line numbers
};

// The key the replay uses for a trace's block id: ids are opaque per trace (and already offset per
// file where a trace mixes files).
BlockKey KeyForBlockId(std::uint64_t id);

}  // namespace cachesvc::replay
