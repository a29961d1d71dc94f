// bench/replay/agent_workload.h: the project's own agent workload generator for replay sweeps,
// and the writer that saves any fixed-block Trace as Mooncake jsonl plus session and tool fields
// (LoadMooncake in loaders.h reads it back, exactly).
//
// The model: sessions arrive as a Poisson process. Every session's context starts with the same
// system prompt and tool definitions (so their blocks are shared by all sessions), then a task
// unique to the session. Each turn sends the whole context so far as the prompt; the response
// (output tokens) is appended, and then the turn ends in one of: a tool call (a named tool with a
// lognormal duration; its result is appended and the next turn is a resume), a fork of parallel
// sub-agents (each a new session starting from a copy of the parent's context, so they share the
// parent's prefix; the parent resumes 1 ms after the last one finishes), or a user reply after
// an exponential think time. Block ids follow content: a full block keeps its id for the rest of
// the session and in its forks; a partial last block gets a fresh id on every request, since its
// content changes when tokens are appended. Every time is a whole millisecond.
// Deterministic: the same parameters (seed included) give the same trace on every platform (the
// distributions are computed here from std::mt19937_64's raw output, not by <random>'s
// implementation-defined distributions). Parameters are documented in docs/replay-workloads.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "bench/replay/trace.h"

namespace cachesvc::replay {

struct ToolProfile {
  std::string name;
  double median_s = 1;                // lognormal duration: median ...
  double sigma = 0.5;                 // ... and the standard deviation of ln(duration)
  double weight = 1;                  // relative frequency among tool calls
  std::uint32_t result_tokens = 500;  // mean tokens the result appends (uniform 0.5x..1.5x)
};

// A few coding-agent tools, from sub-second file reads to minute-long test runs.
std::vector<ToolProfile> DefaultAgentTools();

struct AgentWorkloadParams {
  std::uint64_t seed = 1;
  std::uint32_t sessions = 64;      // top-level sessions (sub-agents come on top)
  double session_rate_per_s = 0.2;  // Poisson arrivals of top-level sessions
  std::uint32_t min_turns = 4;      // turns per top-level session, uniform in [min, max]
  std::uint32_t max_turns = 24;
  std::uint32_t system_prompt_tokens = 4096;     // shared by every session, first in the context
  std::uint32_t tool_definition_tokens = 12288;  // shared, right after the system prompt
  std::uint32_t min_task_tokens = 200;           // the session's own first message, uniform
  std::uint32_t max_task_tokens = 2000;
  std::uint32_t min_output_tokens = 50;  // each response, uniform; appended to the context
  std::uint32_t max_output_tokens = 800;
  double decode_tokens_per_s = 60;      // response time = output tokens / this
  double tool_call_probability = 0.85;  // a non-final turn ends in a tool call ...
  double user_think_mean_s = 20;        // ... else a user reply after an exponential wait
  std::uint32_t min_user_tokens = 20;   // the user's reply, uniform
  std::uint32_t max_user_tokens = 400;
  std::vector<ToolProfile> tools = DefaultAgentTools();
  double fork_probability = 0.05;  // a non-final turn forks sub-agents instead
  std::uint32_t min_forks = 2;     // parallel sub-agents per fork, uniform
  std::uint32_t max_forks = 4;
  std::uint32_t max_fork_depth = 1;      // sub-agents fork again only below this depth
  std::uint32_t min_subagent_turns = 2;  // turns per sub-agent, uniform
  std::uint32_t max_subagent_turns = 8;
  std::uint32_t subagent_task_tokens = 400;    // appended to a sub-agent's copy of the context
  std::uint32_t subagent_result_tokens = 800;  // appended to the parent per sub-agent, at join
  std::uint32_t max_context_tokens = 200000;   // a session ends once its context passes this
  std::uint32_t block_tokens = 64;
};

// INVALID_ARGUMENT naming the parameter when the parameters make no sense (min > max, a rate or
// block size of 0, probabilities outside [0, 1], no tools with a tool-call probability > 0, ...).
[[nodiscard]] absl::Status ValidateAgentWorkloadParams(const AgentWorkloadParams& params);

// The trace: requests sorted by t_us, sessions numbered from 1 in generation order, tool calls
// with tool_start_us/tool_end_us/tool_name, resumes marked; nominal_block_tokens = block_tokens.
[[nodiscard]] absl::StatusOr<Trace> GenerateAgentWorkload(const AgentWorkloadParams& params);

// Writes `trace` as Mooncake jsonl: per line timestamp (ms), input_length, output_length,
// hash_ids, then session_id (when not 0), block_size (when not 512), and tool_name, tool_start_ms,
// tool_end_ms on lines whose response ends in a tool call. Resumes are not written: LoadMooncake
// derives them. INVALID_ARGUMENT if the trace does not fit the format (nominal_block_tokens 0, a
// block size that LoadMooncake would not rebuild, a key that KeyForBlockId did not make);
// INTERNAL if the file cannot be written.
[[nodiscard]] absl::Status WriteMooncakeJsonl(const Trace& trace, const std::string& path);

}  // namespace cachesvc::replay
