// bench/replay/agent_workload.cc: the agent workload generator (agent_workload.h).
#include "bench/replay/agent_workload.h"

#include <algorithm>
#include <cmath>
#include <numbers>
#include <random>

#include "bench/replay/trace_internal.h"
#include "fmt/format.h"

namespace cachesvc::replay {

std::vector<ToolProfile> DefaultAgentTools() {
  return {
      {"read_file", 0.2, 0.6, 4, 1500},  {"grep", 0.5, 0.8, 3, 600},
      {"edit_file", 0.3, 0.5, 3, 200},   {"bash", 4.0, 1.2, 3, 800},
      {"run_tests", 45.0, 0.7, 1, 2000}, {"web_fetch", 6.0, 0.8, 1, 3000},
  };
}

absl::Status ValidateAgentWorkloadParams(const AgentWorkloadParams& p) {
  auto bad = [](const std::string& what) { return absl::InvalidArgumentError(what); };
  auto range = [&](const char* name, std::uint32_t lo, std::uint32_t hi) -> absl::Status {
    if (lo > hi) return bad(fmt::format("min_{0} {1} > max_{0} {2}", name, lo, hi));
    return absl::OkStatus();
  };
  for (auto st : {range("turns", p.min_turns, p.max_turns),
                  range("task_tokens", p.min_task_tokens, p.max_task_tokens),
                  range("output_tokens", p.min_output_tokens, p.max_output_tokens),
                  range("user_tokens", p.min_user_tokens, p.max_user_tokens),
                  range("forks", p.min_forks, p.max_forks),
                  range("subagent_turns", p.min_subagent_turns, p.max_subagent_turns)}) {
    if (!st.ok()) return st;
  }
  if (p.block_tokens == 0) return bad("block_tokens must be > 0");
  if (p.min_turns == 0 || p.min_subagent_turns == 0) return bad("turns must be >= 1");
  if (p.min_output_tokens == 0) return bad("min_output_tokens must be >= 1");
  if (!(p.session_rate_per_s > 0)) return bad("session_rate_per_s must be > 0");
  if (!(p.decode_tokens_per_s > 0)) return bad("decode_tokens_per_s must be > 0");
  if (!(p.user_think_mean_s >= 0)) return bad("user_think_mean_s must be >= 0");
  for (const double prob : {p.tool_call_probability, p.fork_probability}) {
    if (!(prob >= 0 && prob <= 1)) return bad(fmt::format("probability {} outside [0, 1]", prob));
  }
  double weights = 0;
  for (const auto& t : p.tools) {
    if (!(t.median_s > 0) || !(t.sigma >= 0) || !(t.weight >= 0)) {
      return bad(fmt::format("tool '{}': median_s > 0, sigma >= 0, weight >= 0", t.name));
    }
    weights += t.weight;
  }
  if (p.tool_call_probability > 0 && !(weights > 0)) {
    return bad("tool_call_probability > 0 needs tools with a positive total weight");
  }
  const std::uint64_t shared = std::uint64_t{p.system_prompt_tokens} + p.tool_definition_tokens;
  if (shared + p.max_task_tokens >= p.max_context_tokens) {
    return bad("max_context_tokens leaves no room after the shared prefix and the task");
  }
  return absl::OkStatus();
}

namespace {

class Generator {
 public:
  explicit Generator(const AgentWorkloadParams& p) : p_(p), rng_(p.seed) {}

  Trace Run() {
    const std::uint64_t shared_tokens =
        std::uint64_t{p_.system_prompt_tokens} + p_.tool_definition_tokens;
    Context shared;
    for (std::uint64_t i = 0; i < shared_tokens / p_.block_tokens; ++i) shared.full.push_back(i);
    shared.tail = static_cast<std::uint32_t>(shared_tokens % p_.block_tokens);
    next_id_ = shared.full.size();
    double arrival_ms = 0;
    for (std::uint32_t s = 0; s < p_.sessions; ++s) {
      if (s > 0) arrival_ms += Exponential(1000.0 / p_.session_rate_per_s);
      Context ctx = shared;
      Append(&ctx, Uniform(p_.min_task_tokens, p_.max_task_tokens));
      RunSession(std::move(ctx), std::llround(arrival_ms), Uniform(p_.min_turns, p_.max_turns), 0);
    }
    trace_.name = fmt::format("agent seed={} sessions={}", p_.seed, p_.sessions);
    trace_.nominal_block_tokens = p_.block_tokens;
    internal::SortAndLimit(0, &trace_);
    return std::move(trace_);
  }

 private:
  struct Context {
    std::vector<std::uint64_t> full;  // ids of the full blocks
    std::uint32_t tail = 0;           // tokens after them
    [[nodiscard]] std::uint64_t tokens(std::uint32_t block) const {
      return full.size() * std::uint64_t{block} + tail;
    }
  };

  // Raw draws from mt19937_64, so the trace does not depend on the standard library.
  double Unit() { return static_cast<double>(rng_() >> 11) * 0x1.0p-53; }  // [0, 1)
  std::uint32_t Uniform(std::uint32_t lo, std::uint32_t hi) {
    return lo + static_cast<std::uint32_t>(rng_() % (std::uint64_t{hi} - lo + 1));
  }
  double Exponential(double mean) { return -mean * std::log1p(-Unit()); }
  double Normal() {  // Box-Muller
    const double u1 = 1.0 - Unit();
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * std::numbers::pi * Unit());
  }
  static std::int64_t AtLeast1(double ms) { return std::max<std::int64_t>(1, std::llround(ms)); }

  void Append(Context* ctx, std::uint64_t tokens) {
    tokens += ctx->tail;
    for (; tokens >= p_.block_tokens; tokens -= p_.block_tokens) ctx->full.push_back(next_id_++);
    ctx->tail = static_cast<std::uint32_t>(tokens);
  }

  // Emits one request with the whole context as its prompt; returns its index.
  std::size_t Emit(const Context& ctx, std::uint64_t session, std::int64_t t_ms,
                   std::uint32_t output_tokens, bool resume) {
    TraceRequest req;
    req.t_us = t_ms * 1000;
    req.session = session;
    req.input_tokens = static_cast<std::uint32_t>(ctx.tokens(p_.block_tokens));
    req.output_tokens = output_tokens;
    req.resume = resume;
    for (const auto id : ctx.full) {
      req.blocks.push_back(KeyForBlockId(id));
      req.block_tokens.push_back(p_.block_tokens);
    }
    if (ctx.tail > 0) {
      req.blocks.push_back(KeyForBlockId(next_id_++));
      req.block_tokens.push_back(ctx.tail);
    }
    trace_.requests.push_back(std::move(req));
    return trace_.requests.size() - 1;
  }

  const ToolProfile& PickTool() {
    double total = 0;
    for (const auto& t : p_.tools) total += t.weight;
    double x = Unit() * total;
    for (const auto& t : p_.tools) {
      if (x < t.weight) return t;
      x -= t.weight;
    }
    return p_.tools.back();
  }

  // Runs one session from start_ms; returns when its last response ends.
  std::int64_t RunSession(Context ctx, std::int64_t start_ms, std::uint32_t turns,
                          std::uint32_t depth) {
    const std::uint64_t session = next_session_++;
    std::int64_t t = start_ms;
    bool resume = false;
    for (std::uint32_t turn = 0;; ++turn) {
      const std::uint32_t output = Uniform(p_.min_output_tokens, p_.max_output_tokens);
      const std::size_t index = Emit(ctx, session, t, output, resume);
      const std::int64_t response_end = t + AtLeast1(1000.0 * output / p_.decode_tokens_per_s);
      Append(&ctx, output);
      if (turn + 1 >= turns || ctx.tokens(p_.block_tokens) >= p_.max_context_tokens) {
        return response_end;
      }
      const bool fork = depth < p_.max_fork_depth && Unit() < p_.fork_probability;
      const bool tool = !fork && Unit() < p_.tool_call_probability;
      std::string tool_name;
      if (fork) {
        const std::uint32_t children = Uniform(p_.min_forks, p_.max_forks);
        std::int64_t join = response_end;
        for (std::uint32_t c = 0; c < children; ++c) {
          Context child = ctx;
          Append(&child, p_.subagent_task_tokens);
          const std::uint32_t child_turns = Uniform(p_.min_subagent_turns, p_.max_subagent_turns);
          join = std::max(join, RunSession(std::move(child), response_end, child_turns, depth + 1));
        }
        t = join + 1;
        tool_name = "subagent";
        Append(&ctx, std::uint64_t{p_.subagent_result_tokens} * children);
      } else if (tool) {
        const ToolProfile& profile = PickTool();
        t = response_end + AtLeast1(1000.0 * profile.median_s * std::exp(profile.sigma * Normal()));
        tool_name = profile.name;
        Append(&ctx, std::llround(profile.result_tokens * (0.5 + Unit())));
      } else {
        t = response_end + AtLeast1(Exponential(1000.0 * p_.user_think_mean_s));
        Append(&ctx, Uniform(p_.min_user_tokens, p_.max_user_tokens));
      }
      resume = fork || tool;
      if (resume) {
        TraceRequest& req = trace_.requests[index];
        req.tool_start_us = response_end * 1000;
        req.tool_end_us = t * 1000;
        req.tool_name = std::move(tool_name);
      }
    }
  }

  const AgentWorkloadParams& p_;
  std::mt19937_64 rng_;
  std::uint64_t next_id_ = 0;
  std::uint64_t next_session_ = 1;
  Trace trace_;
};

}  // namespace

absl::StatusOr<Trace> GenerateAgentWorkload(const AgentWorkloadParams& params) {
  if (auto st = ValidateAgentWorkloadParams(params); !st.ok()) return st;
  return Generator(params).Run();
}

}  // namespace cachesvc::replay
