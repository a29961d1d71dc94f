// Tests for the replay trace loaders (bench/replay/loaders.h): hand-written files for each format,
// bad input in lenient and strict mode, and a smoke test over the real traces when present.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <set>

#include "bench/replay/loaders.h"
#include "bench/replay/trace_internal.h"
#include "tests/bench/replay_test_util.h"

namespace cachesvc::replay {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

using LoadersTest = testing::ScratchDirTest;

BlockKey Key(std::uint64_t id) { return KeyForBlockId(id); }

// Options spelled out (designated initializers that skip fields trip -Wmissing-field-initializers).
LoadOptions Strict() {
  LoadOptions o;
  o.strict = true;
  return o;
}
KvCacheTesterOptions Users(std::size_t users, double stagger_s, bool strict = false) {
  KvCacheTesterOptions o;
  o.users = users;
  o.stagger_s = stagger_s;
  o.load.strict = strict;
  return o;
}

bool Sorted(const Trace& t) {
  return std::is_sorted(
      t.requests.begin(), t.requests.end(),
      [](const TraceRequest& a, const TraceRequest& b) { return a.t_us < b.t_us; });
}

TEST(KeyForBlockIdTest, LittleEndianIdThenZeros) {
  const BlockKey key = KeyForBlockId(0x0102030405060708ULL);
  EXPECT_EQ(key.Hex(), "08070605040302010000000000000000");
  EXPECT_EQ(KeyForBlockId(0).Hex(), std::string(32, '0'));
  EXPECT_NE(KeyForBlockId(1), KeyForBlockId(std::uint64_t{1} << 32));
}

TEST_F(LoadersTest, MooncakeBlocksTimesAndSorting) {
  const auto path = Write("m.jsonl",
                          "{\"timestamp\": 7, \"input_length\": 1100, \"output_length\": 3, "
                          "\"hash_ids\": [1, 2, 3]}\n"
                          "{\"timestamp\": 2, \"input_length\": 100, \"output_length\": 4, "
                          "\"hash_ids\": [5]}\n"
                          "\n"
                          "{\"timestamp\": 7, \"input_length\": 10, \"output_length\": 5, "
                          "\"hash_ids\": [1, 2]}\n"
                          "{\"timestamp\": 9.5, \"input_length\": 2000, \"output_length\": 6, "
                          "\"hash_ids\": [9]}\n");
  auto trace = LoadMooncake(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_TRUE(trace->warnings.empty());
  EXPECT_EQ(trace->nominal_block_tokens, 512u);
  ASSERT_EQ(trace->requests.size(), 4u);
  const auto& r = trace->requests;
  EXPECT_EQ(r[0].t_us, 2000);  // sorted; the two at 7 ms keep file order
  EXPECT_EQ(r[1].output_tokens, 3u);
  EXPECT_EQ(r[2].output_tokens, 5u);
  EXPECT_EQ(r[3].t_us, 9500);
  EXPECT_THAT(r[1].blocks, ElementsAre(Key(1), Key(2), Key(3)));
  EXPECT_THAT(r[1].block_tokens, ElementsAre(512, 512, 76));
  EXPECT_THAT(r[0].block_tokens, ElementsAre(100));
  EXPECT_THAT(r[2].block_tokens, ElementsAre(512, 1));  // more ids than tokens: clamped to 1
  EXPECT_THAT(r[3].block_tokens, ElementsAre(512));     // fewer: clamped to the block size
  for (const auto& req : r) {
    EXPECT_EQ(req.session, 0u);
    EXPECT_FALSE(req.tool_start_us.has_value());
    EXPECT_FALSE(req.resume);
  }
  auto limited = LoadMooncake(path, {.strict = false, .limit = 2});
  ASSERT_TRUE(limited.ok());
  EXPECT_EQ(limited->requests.size(), 2u);
}

TEST_F(LoadersTest, MooncakeMalformedLinesWarnOrStop) {
  const auto path = Write("bad.jsonl",
                          "{\"timestamp\": 1, \"input_length\": 5, \"output_length\": 1, "
                          "\"hash_ids\": [1]}\n"
                          "{not json\n"
                          "{\"timestamp\": 2, \"input_length\": 5, \"output_length\": 1}\n"
                          "{\"timestamp\": 3, \"input_length\": 5, \"output_length\": 1, "
                          "\"hash_ids\": [-4]}\n"
                          "{\"timestamp\": 4, \"input_length\": 5, \"output_length\": 1, "
                          "\"hash_ids\": [2], \"tool_start_ms\": 5}\n"
                          "[1, 2]\n"
                          "{\"timestamp\": 5, \"input_length\": 5, \"output_length\": 1, "
                          "\"hash_ids\": [3]}\n");
  auto trace = LoadMooncake(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->requests.size(), 2u);
  ASSERT_EQ(trace->warnings.size(), 5u);
  EXPECT_THAT(trace->warnings[0], HasSubstr("bad.jsonl:2: not valid JSON"));
  EXPECT_THAT(trace->warnings[1], HasSubstr("bad.jsonl:3: 'hash_ids'"));
  EXPECT_THAT(trace->warnings[2], HasSubstr("bad.jsonl:4:"));
  EXPECT_THAT(trace->warnings[3], HasSubstr("bad.jsonl:5: 'tool_start_ms' and 'tool_end_ms'"));
  EXPECT_THAT(trace->warnings[4], HasSubstr("bad.jsonl:6: not a JSON object"));

  auto strict = LoadMooncake(path, Strict());
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("bad.jsonl:2: not valid JSON"));

  EXPECT_EQ(LoadMooncake((dir_ / "missing.jsonl").string()).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(LoadersTest, MooncakeExtensionFieldsAndResumes) {
  const auto path = Write("ext.jsonl",
                          "{\"timestamp\": 0, \"input_length\": 70, \"output_length\": 1, "
                          "\"hash_ids\": [0, 1], \"session_id\": 4, \"block_size\": 64, "
                          "\"tool_name\": \"grep\", \"tool_start_ms\": 2, \"tool_end_ms\": 9}\n"
                          "{\"timestamp\": 1, \"input_length\": 10, \"output_length\": 1, "
                          "\"hash_ids\": [7], \"session_id\": 5, \"block_size\": 64}\n"
                          "{\"timestamp\": 9, \"input_length\": 80, \"output_length\": 1, "
                          "\"hash_ids\": [0, 2], \"session_id\": 4, \"block_size\": 64, "
                          "\"tool_name\": null, \"tool_start_ms\": null, \"tool_end_ms\": null}\n");
  auto trace = LoadMooncake(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  ASSERT_EQ(trace->requests.size(), 3u);
  EXPECT_EQ(trace->nominal_block_tokens, 64u);
  const auto& r = trace->requests;
  EXPECT_THAT(r[0].block_tokens, ElementsAre(64, 6));
  EXPECT_EQ(r[0].tool_start_us, 2000);
  EXPECT_EQ(r[0].tool_end_us, 9000);
  EXPECT_EQ(r[0].tool_name, "grep");
  EXPECT_FALSE(r[1].resume);  // another session
  EXPECT_TRUE(r[2].resume);
  EXPECT_FALSE(r[2].tool_start_us.has_value());
}

// A conversation with a tool chain, a sub-agent (t = its end; nested t from its start), a tool
// call too short to reach the next request, and a final tool_use with no next request.
constexpr const char* kConversation0 = R"({"id": "trace_0000", "block_size": 64, "requests": [
  {"t": 0.0, "type": "n", "in": 130, "out": 5, "hash_ids": [1, 2], "stop": "tool_use",
   "api_time": 1.5, "think_time": 0},
  {"t": 4.0, "type": "n", "in": 200, "out": 6, "hash_ids": [1, 2, 3], "stop": "tool_use",
   "api_time": 0.5},
  {"t": 20.0, "type": "subagent", "subagent_type": "Explore", "duration_ms": 15000,
   "requests": [
     {"t": 0.0, "type": "n", "in": 64, "out": 1, "hash_ids": [7], "stop": "tool_use",
      "api_time": 1.0},
     {"t": 3.0, "type": "n", "in": 128, "out": 1, "hash_ids": [7, 8], "stop": "end_turn",
      "api_time": 1.0}]},
  {"t": 21.0, "type": "s", "in": 300, "out": 7, "hash_ids": [1, 2, 3, 4], "stop": ""},
  {"t": 30.0, "type": "n", "in": 70, "out": 8, "hash_ids": [1], "stop": "tool_use",
   "api_time": 2}
]})";

constexpr const char* kConversation1 = R"({"id": "trace_0001", "requests": [
  {"t": 0.0, "type": "n", "in": 128, "out": 1, "hash_ids": [1, 2], "stop": "tool_use",
   "api_time": 5.0},
  {"t": 3.0, "type": "n", "in": 128, "out": 1, "hash_ids": [1, 2], "stop": "tool_use"},
  {"t": 4.0, "type": "n", "in": "abc", "out": 1, "hash_ids": [1], "stop": "tool_use"}
]})";

TEST_F(LoadersTest, KvCacheTesterSessionsToolsAndOffsets) {
  Write("kv/trace_0000.json", kConversation0);
  Write("kv/trace_0001.json", kConversation1);
  Write("kv/trace_0002.json", "{\"requests\": [\n{\"t\": 0,\n  oops\n]}");
  Write("kv/notes.txt", "not a trace");
  auto trace = LoadKvCacheTester((dir_ / "kv").string(), Users(2, 10));
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->name, "kvcachetester-v8 users=2 stagger_s=10");
  EXPECT_EQ(trace->nominal_block_tokens, 64u);
  ASSERT_EQ(trace->warnings.size(), 1u);
  EXPECT_THAT(trace->warnings[0], HasSubstr("trace_0001.json: requests[2]: 'in'"));
  ASSERT_EQ(trace->requests.size(), 8u);
  EXPECT_TRUE(Sorted(*trace));

  constexpr std::uint64_t kParent0 = std::uint64_t{1} << 20, kSub0 = kParent0 | 1;
  constexpr std::uint64_t kParent1 = std::uint64_t{2} << 20;
  std::vector<std::pair<std::int64_t, std::uint64_t>> order;
  for (const auto& r : trace->requests) order.emplace_back(r.t_us, r.session);
  EXPECT_THAT(order, ElementsAre(std::pair<std::int64_t, std::uint64_t>{0, kParent0},
                                 std::pair<std::int64_t, std::uint64_t>{4'000'000, kParent0},
                                 std::pair<std::int64_t, std::uint64_t>{5'000'000, kSub0},
                                 std::pair<std::int64_t, std::uint64_t>{8'000'000, kSub0},
                                 std::pair<std::int64_t, std::uint64_t>{10'000'000, kParent1},
                                 std::pair<std::int64_t, std::uint64_t>{13'000'000, kParent1},
                                 std::pair<std::int64_t, std::uint64_t>{21'000'000, kParent0},
                                 std::pair<std::int64_t, std::uint64_t>{30'000'000, kParent0}));
  const auto& r = trace->requests;
  EXPECT_EQ(r[0].tool_start_us, 1'500'000);  // arrival + api_time
  EXPECT_EQ(r[0].tool_end_us, 4'000'000);    // the session's next arrival
  EXPECT_EQ(r[0].tool_name, "tool");
  EXPECT_FALSE(r[0].resume);
  EXPECT_TRUE(r[1].resume);
  EXPECT_EQ(r[1].tool_start_us, 4'500'000);
  EXPECT_EQ(r[1].tool_end_us, 21'000'000);  // the sub-agent ran in between
  EXPECT_EQ(r[1].tool_name, "subagent:Explore");
  EXPECT_FALSE(r[2].resume);  // a sub-agent's first request
  EXPECT_EQ(r[2].tool_start_us, 6'000'000);
  EXPECT_EQ(r[2].tool_end_us, 8'000'000);
  EXPECT_TRUE(r[3].resume);
  EXPECT_FALSE(r[3].tool_start_us.has_value());  // end_turn
  EXPECT_FALSE(r[4].tool_start_us.has_value());  // api_time 5 s passes the next request at 3 s
  EXPECT_FALSE(r[5].resume);
  EXPECT_TRUE(r[6].resume);
  EXPECT_FALSE(r[7].resume);                     // stop "" before it
  EXPECT_FALSE(r[7].tool_start_us.has_value());  // tool_use but no next request
  // Ids: one namespace per file (parent and sub-agent share it), offset by file index << 32.
  EXPECT_THAT(r[0].blocks, ElementsAre(Key(1), Key(2)));
  EXPECT_THAT(r[2].blocks, ElementsAre(Key(7)));
  EXPECT_THAT(r[4].blocks, ElementsAre(Key((1ULL << 32) | 1), Key((1ULL << 32) | 2)));
  EXPECT_THAT(r[1].block_tokens, ElementsAre(64, 64, 64));
  EXPECT_EQ(r[1].input_tokens, 200u);
  EXPECT_EQ(r[6].input_tokens, 300u);

  auto all = LoadKvCacheTester((dir_ / "kv").string(), Users(5, 0));
  ASSERT_TRUE(all.ok()) << all.status();
  ASSERT_EQ(all->warnings.size(), 3u);
  EXPECT_THAT(all->warnings[0], HasSubstr("asked for 5 users"));
  EXPECT_THAT(all->warnings[2], HasSubstr("trace_0002.json:3: not valid JSON"));
  EXPECT_EQ(all->requests.size(), 8u);

  auto strict = LoadKvCacheTester((dir_ / "kv").string(), Users(2, 30, true));
  ASSERT_FALSE(strict.ok());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(strict.status().message()), HasSubstr("trace_0001.json: requests[2]"));

  // The folder the tarball extracts to (holding traces/) works too.
  Write("up/traces/trace_0000.json", kConversation0);
  auto up = LoadKvCacheTester((dir_ / "up").string());
  ASSERT_TRUE(up.ok()) << up.status();
  EXPECT_EQ(up->requests.size(), 6u);
  EXPECT_EQ(LoadKvCacheTester((dir_ / "none").string()).status().code(),
            absl::StatusCode::kNotFound);
}

// RAGPulse: string timestamps out of order, parts in prompt order, a blank last line.
TEST_F(LoadersTest, RagPulseSortsPartsAndSessions) {
  Write("rp-1_sys_prompt.jsonl",
        "{\"sys_prompt_id\": 100, \"token_length\": 512}\n"
        "{\"sys_prompt_id\": 101, \"token_length\": 37}\n\n");
  Write("rp-2_passages.jsonl", "{\"passage_id\": 0, \"token_length\": 84}\n\n");
  Write("rp-3_history.jsonl", "{\"history_id\": 200, \"token_length\": 11}\nbroken\n\n");
  Write("rp-4_user_input.jsonl", "{\"user_input_id\": 300, \"token_length\": 9}\n\n");
  Write("rp-5_web_search.jsonl", "{\"web_search_id\": 250, \"token_length\": 60}\n\n");
  const std::string parts =
      "\"hash_ids\": {\"sys_prompt\": [100, 101], \"passages_ids\": [0], \"history\": [200], "
      "\"web_search\": [250], \"user_input\": [300]}";
  const auto path =
      Write("rp-0_trace.jsonl",
            "{\"timestamp\": \"20\", \"input_length\": 720, \"output_length\": 1, " + parts +
                ", \"session_id\": \"a\"}\n"
                "{\"timestamp\": \"5\", \"input_length\": 720, \"output_length\": 2, " +
                parts +
                ", \"session_id\": \"b\"}\n"
                "{\"timestamp\": \"12.5\", \"input_length\": 720, \"output_length\": 3, " +
                parts +
                ", \"session_id\": \"a\"}\n"
                "{\"timestamp\": \"5\", \"input_length\": 720, \"output_length\": 4, " +
                parts +
                ", \"session_id\": \"c\"}\n"
                "{\"timestamp\": \"x\", \"input_length\": 1, \"output_length\": 1, " +
                parts +
                ", \"session_id\": \"c\"}\n"
                "{\"timestamp\": \"6\", \"input_length\": 1, \"output_length\": 1, \"hash_ids\": "
                "{\"sys_prompt\": [999]}, \"session_id\": \"c\"}\n\n");
  auto trace = LoadRagPulse(path);
  ASSERT_TRUE(trace.ok()) << trace.status();
  EXPECT_EQ(trace->nominal_block_tokens, 0u);
  ASSERT_EQ(trace->warnings.size(), 3u);
  EXPECT_THAT(trace->warnings[0], HasSubstr("rp-3_history.jsonl:2:"));
  EXPECT_THAT(trace->warnings[1], HasSubstr("rp-0_trace.jsonl:5: 'timestamp'"));
  EXPECT_THAT(trace->warnings[2], HasSubstr("rp-0_trace.jsonl:6: sys_prompt id 999"));
  ASSERT_EQ(trace->requests.size(), 4u);
  const auto& r = trace->requests;
  std::vector<std::uint32_t> outputs;
  for (const auto& req : r) outputs.push_back(req.output_tokens);
  EXPECT_THAT(outputs, ElementsAre(2, 4, 3, 1));  // by time, ties in file order
  EXPECT_EQ(r[0].t_us, 5'000'000);
  EXPECT_EQ(r[2].t_us, 12'500'000);
  EXPECT_THAT(r[0].blocks, ElementsAre(Key(100), Key(101), Key(0), Key(200), Key(250), Key(300)));
  EXPECT_THAT(r[0].block_tokens, ElementsAre(512, 37, 84, 11, 60, 9));
  EXPECT_EQ(r[0].input_tokens, 720u);
  EXPECT_EQ(r[2].session, r[3].session);  // both "a"
  EXPECT_NE(r[0].session, r[1].session);
  EXPECT_NE(r[0].session, 0u);
  EXPECT_EQ(r[3].session, internal::SessionHash("a"));

  auto strict = LoadRagPulse(path, Strict());
  EXPECT_EQ(strict.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(LoadRagPulse((dir_ / "rp-0_trace.json").string()).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::filesystem::remove(dir_ / "rp-5_web_search.jsonl");
  EXPECT_EQ(LoadRagPulse(path).status().code(), absl::StatusCode::kNotFound);
}

// The published traces, when this checkout has them beside it.
const std::filesystem::path kTraces = CACHESVC_SOURCE_DIR "/../shared/traces";

TEST_F(LoadersTest, RealTracesSmoke) {
  if (!std::filesystem::exists(kTraces / "SOURCES.md")) GTEST_SKIP() << "no " << kTraces;
  auto conv = LoadMooncake((kTraces / "mooncake-conversation_trace.jsonl").string(), Strict());
  ASSERT_TRUE(conv.ok()) << conv.status();
  EXPECT_EQ(conv->requests.size(), 12031u);
  auto synth = LoadMooncake((kTraces / "mooncake-synthetic_trace.jsonl").string());
  ASSERT_TRUE(synth.ok()) << synth.status();
  EXPECT_EQ(synth->requests.size(), 3993u);
  EXPECT_TRUE(synth->warnings.empty());

  auto folder = ExtractKvCacheTesterTarball((kTraces / "kvcachetester-traces-v8.tar.xz").string(),
                                            (dir_ / "kv").string());
  ASSERT_TRUE(folder.ok()) << folder.status();
  auto kv = LoadKvCacheTester(*folder, Users(4, 30, true));
  ASSERT_TRUE(kv.ok()) << kv.status();
  EXPECT_TRUE(Sorted(*kv));
  std::set<std::uint64_t> conversations;
  std::size_t resumes = 0;
  for (const auto& r : kv->requests) {
    conversations.insert(r.session >> 20);
    resumes += r.resume ? 1 : 0;
    EXPECT_EQ(r.blocks.size(), r.input_tokens / 64);
  }
  EXPECT_EQ(conversations.size(), 4u);
  EXPECT_GT(resumes, kv->requests.size() / 2);

  auto rag = LoadRagPulse((kTraces / "ragpulse-0_trace.jsonl").string(), Strict());
  ASSERT_TRUE(rag.ok()) << rag.status();
  EXPECT_EQ(rag->requests.size(), 7106u);
  EXPECT_TRUE(Sorted(*rag));
}

}  // namespace
}  // namespace cachesvc::replay
