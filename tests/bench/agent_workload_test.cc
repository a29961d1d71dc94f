// Tests for the agent workload generator and the Mooncake jsonl writer
// (bench/replay/agent_workload.h): determinism, the shape of the sessions, and an exact round
// trip through LoadMooncake.
#include "bench/replay/agent_workload.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <map>

#include "bench/replay/loaders.h"
#include "tests/bench/replay_test_util.h"

namespace cachesvc::replay {
namespace {

using ::testing::HasSubstr;

using AgentWorkloadTest = testing::ScratchDirTest;

void ExpectSameRequests(const Trace& a, const Trace& b) {
  ASSERT_EQ(a.requests.size(), b.requests.size());
  for (std::size_t i = 0; i < a.requests.size(); ++i) {
    SCOPED_TRACE(i);
    const TraceRequest& x = a.requests[i];
    const TraceRequest& y = b.requests[i];
    EXPECT_EQ(x.t_us, y.t_us);
    EXPECT_EQ(x.session, y.session);
    EXPECT_EQ(x.blocks, y.blocks);
    EXPECT_EQ(x.block_tokens, y.block_tokens);
    EXPECT_EQ(x.input_tokens, y.input_tokens);
    EXPECT_EQ(x.output_tokens, y.output_tokens);
    EXPECT_EQ(x.tool_start_us, y.tool_start_us);
    EXPECT_EQ(x.tool_end_us, y.tool_end_us);
    EXPECT_EQ(x.tool_name, y.tool_name);
    EXPECT_EQ(x.resume, y.resume);
    if (::testing::Test::HasFailure()) return;
  }
}

LoadOptions StrictLoad() {
  LoadOptions o;
  o.strict = true;
  return o;
}

AgentWorkloadParams Small(std::uint64_t seed) {
  AgentWorkloadParams p;
  p.seed = seed;
  p.sessions = 12;
  p.fork_probability = 0.2;
  return p;
}

TEST(AgentWorkloadGenTest, SameSeedSameTrace) {
  auto a = GenerateAgentWorkload(Small(7));
  auto b = GenerateAgentWorkload(Small(7));
  auto c = GenerateAgentWorkload(Small(8));
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  ExpectSameRequests(*a, *b);
  EXPECT_NE(a->requests.size() == c->requests.size() &&
                a->requests.back().t_us == c->requests.back().t_us,
            true);
}

TEST(AgentWorkloadGenTest, SessionsShareThePrefixAndToolsLinkToResumes) {
  auto trace = GenerateAgentWorkload(Small(3));
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->nominal_block_tokens, 64u);
  const std::size_t shared_blocks = (4096 + 12288) / 64;
  std::map<std::uint64_t, std::vector<const TraceRequest*>> by_session;
  std::int64_t last_t = 0;
  std::size_t tools = 0, forks = 0;
  for (const auto& r : trace->requests) {
    EXPECT_GE(r.t_us, last_t);
    last_t = r.t_us;
    EXPECT_EQ(r.t_us % 1000, 0);
    by_session[r.session].push_back(&r);
    ASSERT_GE(r.blocks.size(), shared_blocks);
    for (std::size_t i = 0; i < shared_blocks; ++i) ASSERT_EQ(r.blocks[i], KeyForBlockId(i));
    std::uint64_t tokens = 0;
    for (const auto t : r.block_tokens) tokens += t;
    EXPECT_EQ(tokens, r.input_tokens);
  }
  EXPECT_GT(by_session.size(), 12u);  // sub-agents came on top of the 12 sessions
  for (const auto& [session, reqs] : by_session) {
    EXPECT_FALSE(reqs.front()->resume);
    for (std::size_t i = 0; i < reqs.size(); ++i) {
      const TraceRequest& r = *reqs[i];
      if (!r.tool_start_us) continue;
      ++tools;
      forks += r.tool_name == "subagent" ? 1 : 0;
      ASSERT_LT(i + 1, reqs.size()) << "a tool call ends the session " << session;
      EXPECT_GT(*r.tool_start_us, r.t_us);
      EXPECT_EQ(*r.tool_end_us, reqs[i + 1]->t_us);
      EXPECT_TRUE(reqs[i + 1]->resume);
      // The context grows: the next prompt extends this one's full blocks.
      const TraceRequest& next = *reqs[i + 1];
      ASSERT_GE(next.blocks.size(), r.blocks.size() - 1);
      for (std::size_t b = 0; b + 1 < r.blocks.size(); ++b) EXPECT_EQ(next.blocks[b], r.blocks[b]);
    }
  }
  EXPECT_GT(tools, 20u);
  EXPECT_GT(forks, 0u);
}

TEST(AgentWorkloadGenTest, ForksShareTheParentsPrefix) {
  AgentWorkloadParams p = Small(5);
  p.sessions = 1;
  p.min_turns = p.max_turns = 2;  // one fork, after the first turn
  p.fork_probability = 1;
  p.min_forks = p.max_forks = 2;
  auto trace = GenerateAgentWorkload(p);
  ASSERT_TRUE(trace.ok()) << trace.status();
  const TraceRequest& parent = trace->requests.front();
  ASSERT_EQ(parent.session, 1u);
  ASSERT_EQ(parent.tool_name, "subagent");
  std::map<std::uint64_t, const TraceRequest*> first;
  for (const auto& r : trace->requests) first.try_emplace(r.session, &r);
  ASSERT_EQ(first.size(), 3u);  // depth 1: the children do not fork again
  for (const std::uint64_t child : {2u, 3u}) {
    const TraceRequest& c = *first.at(child);
    EXPECT_EQ(c.t_us, *parent.tool_start_us);
    EXPECT_FALSE(c.resume);
    for (std::size_t b = 0; b + 1 < parent.blocks.size(); ++b)
      EXPECT_EQ(c.blocks[b], parent.blocks[b]);
  }
}

TEST_F(AgentWorkloadTest, JsonlRoundTripsExactly) {
  auto trace = GenerateAgentWorkload(Small(11));
  ASSERT_TRUE(trace.ok()) << trace.status();
  const std::string path = (dir_ / "agent.jsonl").string();
  ASSERT_TRUE(WriteMooncakeJsonl(*trace, path).ok());
  auto back = LoadMooncake(path, StrictLoad());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->nominal_block_tokens, 64u);
  ExpectSameRequests(*trace, *back);

  // Fractional milliseconds survive too.
  Trace odd = *trace;
  odd.requests.resize(3);
  odd.requests[0].t_us = 1234567;
  odd.requests[1].t_us = 1234568;
  const std::string odd_path = (dir_ / "odd.jsonl").string();
  ASSERT_TRUE(WriteMooncakeJsonl(odd, odd_path).ok());
  auto odd_back = LoadMooncake(odd_path, StrictLoad());
  ASSERT_TRUE(odd_back.ok()) << odd_back.status();
  EXPECT_EQ(odd_back->requests[0].t_us, 1234567);
  EXPECT_EQ(odd_back->requests[1].t_us, 1234568);
}

TEST_F(AgentWorkloadTest, WriterRefusesWhatItCannotRebuild) {
  Trace varying;
  varying.nominal_block_tokens = 0;
  EXPECT_EQ(WriteMooncakeJsonl(varying, (dir_ / "a").string()).code(),
            absl::StatusCode::kInvalidArgument);
  Trace odd_blocks;
  odd_blocks.nominal_block_tokens = 64;
  TraceRequest r;
  r.input_tokens = 100;
  r.blocks = {KeyForBlockId(1), KeyForBlockId(2)};
  r.block_tokens = {50, 50};
  odd_blocks.requests.push_back(r);
  EXPECT_EQ(WriteMooncakeJsonl(odd_blocks, (dir_ / "b").string()).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(AgentWorkloadGenTest, BadParametersAreRefused) {
  AgentWorkloadParams p;
  p.min_turns = 5;
  p.max_turns = 2;
  auto st = GenerateAgentWorkload(p).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(st.message()), HasSubstr("min_turns 5 > max_turns 2"));
  p = {};
  p.session_rate_per_s = 0;
  EXPECT_EQ(GenerateAgentWorkload(p).status().code(), absl::StatusCode::kInvalidArgument);
  p = {};
  p.tools.clear();
  EXPECT_EQ(GenerateAgentWorkload(p).status().code(), absl::StatusCode::kInvalidArgument);
  p.tool_call_probability = 0;
  EXPECT_TRUE(GenerateAgentWorkload(p).ok());
}

}  // namespace
}  // namespace cachesvc::replay
