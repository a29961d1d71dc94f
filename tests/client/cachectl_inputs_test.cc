// cachectl's pieces that need no daemon: token-id files, layouts from TOML, JSON and flags, keys,
// durations, knobs, the /metrics text parser, and the table and number formats the commands print.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "client/cachectl/inputs.h"
#include "client/cachectl/metrics_text.h"
#include "client/cachectl/output.h"
#include "proto/layout.h"

namespace cachesvc::cachectl {
namespace {

using ::testing::HasSubstr;

TEST(TokenIdsTest, WhitespaceCommasAndJson) {
  for (const char* text :
       {"1 2 3", "1,2,3", "1\n2\n3\n", " 1 ,\t2,\r\n3 ", "[1, 2, 3]", "[1,2,3]\n"}) {
    auto ids = ParseTokenIds(text, "t");
    ASSERT_TRUE(ids.ok()) << text << ": " << ids.status();
    EXPECT_EQ(*ids, (std::vector<std::uint32_t>{1, 2, 3})) << text;
  }
  auto big = ParseTokenIds("4294967295", "t");
  ASSERT_TRUE(big.ok());
  EXPECT_EQ((*big)[0], 4294967295u);
  EXPECT_TRUE(ParseTokenIds("", "t")->empty());
}

TEST(TokenIdsTest, ErrorsNameTheValueAndLine) {
  auto word = ParseTokenIds("1 2\n3 x4\n", "prompt.txt");
  ASSERT_FALSE(word.ok());
  EXPECT_EQ(word.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(word.status().message()), HasSubstr("prompt.txt: line 2: 'x4'"));
  EXPECT_FALSE(ParseTokenIds("4294967296", "t").ok());
  EXPECT_FALSE(ParseTokenIds("-1", "t").ok());
  EXPECT_FALSE(ParseTokenIds("1.5", "t").ok());
  auto json = ParseTokenIds("[1, -2]", "t");
  ASSERT_FALSE(json.ok());
  EXPECT_THAT(std::string(json.status().message()), HasSubstr("element 1 is -2"));
  EXPECT_FALSE(ParseTokenIds("[1, 2", "t").ok());
  EXPECT_FALSE(ParseTokenIds("[\"1\"]", "t").ok());
}

ModelLayout Expected() {
  ModelLayout l;
  l.model_id = "llama";
  l.num_layers = 32;
  l.num_kv_heads = 8;
  l.head_dim = 128;
  l.dtype = Dtype::kBf16;
  l.block_tokens = 16;
  return l;
}

// ReadInput reads whole files, binary bytes and empty ones included, and names a file it cannot
// read. (Its stdin path shares ReadAll with files; the release build's -Wnull-dereference is
// what the old istreambuf_iterator version failed.)
TEST(ReadInputTest, WholeFilesEmptyFilesAndMissingOnes) {
  const auto dir =
      std::filesystem::temp_directory_path() / ("cachectl_inputs_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string bytes("a\0b\r\n\xff tail", 11);
  {
    std::ofstream(dir / "bytes", std::ios::binary) << bytes;
    std::ofstream(dir / "empty", std::ios::binary);
  }
  auto full = ReadInput((dir / "bytes").string());
  ASSERT_TRUE(full.ok()) << full.status();
  EXPECT_EQ(*full, bytes);
  auto empty = ReadInput((dir / "empty").string());
  ASSERT_TRUE(empty.ok()) << empty.status();
  EXPECT_EQ(*empty, "");
  auto missing = ReadInput((dir / "missing").string());
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("missing"));
  std::filesystem::remove_all(dir);
}

TEST(LayoutTest, TomlJsonAndFlagsGiveTheSameLayout) {
  const char* toml =
      "model_id = \"llama\"\nnum_layers = 32\nnum_kv_heads = 8\nhead_dim = 128\n"
      "dtype = \"bf16\"\nblock_tokens = 16\n";
  const char* toml_table =
      "[layout]\nmodel_id = \"llama\"\nnum_layers = 32\nnum_kv_heads = 8\nhead_dim = 128\n"
      "dtype = \"bf16\"\nblock_tokens = 16\ntp_rank = 0\ntp_size = 1\nattention = \"mha_gqa\"\n";
  const char* json =
      R"({"model_id": "llama", "num_layers": 32, "num_kv_heads": 8, "head_dim": 128,
          "dtype": "bf16", "block_tokens": 16})";
  LayoutFlags flags;
  flags.model_id = "llama";
  flags.num_layers = 32;
  flags.num_kv_heads = 8;
  flags.head_dim = 128;
  flags.dtype = "bf16";
  flags.block_tokens = 16;
  const std::uint64_t want = Expected().Fingerprint();
  for (const auto& [text, f] : std::vector<std::pair<std::string, LayoutFlags>>{
           {toml, {}}, {toml_table, {}}, {json, {}}, {"", flags}}) {
    auto layout = BuildLayout(text, "layout", f);
    ASSERT_TRUE(layout.ok()) << text << ": " << layout.status();
    EXPECT_EQ(LayoutFingerprint(*layout), want) << text;
    EXPECT_EQ(*ModelLayout::FromProto(*layout), Expected());
  }
}

TEST(LayoutTest, FlagsOverrideTheFile) {
  LayoutFlags flags;
  flags.block_tokens = 32;
  flags.tp_size = 2;
  flags.tp_rank = 1;
  auto layout = BuildLayout(
      "model_id = \"llama\"\nnum_layers = 32\nnum_kv_heads = 8\nhead_dim = 128\n"
      "dtype = \"bf16\"\nblock_tokens = 16\n",
      "f.toml", flags);
  ASSERT_TRUE(layout.ok()) << layout.status();
  EXPECT_EQ(layout->block_tokens(), 32u);
  EXPECT_EQ(layout->tp_rank(), 1u);
  EXPECT_EQ(layout->tp_size(), 2u);
  EXPECT_EQ(layout->num_layers(), 32u);
}

TEST(LayoutTest, MistakesAreFoundBeforeAnyCall) {
  LayoutFlags none;
  auto missing = BuildLayout("model_id = \"m\"\nnum_layers = 2\n", "f.toml", none);
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(std::string(missing.status().message()), HasSubstr("layout."));
  auto typo = BuildLayout("model = \"m\"\n", "f.toml", none);
  ASSERT_FALSE(typo.ok());
  EXPECT_THAT(std::string(typo.status().message()), HasSubstr("unknown layout field 'model'"));
  auto type = BuildLayout(R"({"num_layers": "two"})", "f.json", none);
  ASSERT_FALSE(type.ok());
  EXPECT_THAT(std::string(type.status().message()), HasSubstr("num_layers"));
  auto syntax = BuildLayout("model_id = \n", "f.toml", none);
  ASSERT_FALSE(syntax.ok());
  EXPECT_THAT(std::string(syntax.status().message()), HasSubstr("f.toml: line 1"));
  LayoutFlags dtype;
  dtype.dtype = "fp64";
  auto bad_dtype = BuildLayout(R"({"model_id": "m"})", "f.json", dtype);
  ASSERT_FALSE(bad_dtype.ok());
  EXPECT_THAT(std::string(bad_dtype.status().message()), HasSubstr("fp64"));
}

TEST(KeyHexTest, ThirtyTwoHexDigits) {
  auto key = ParseKeyHex("000102030405060708090A0B0C0D0E0f");
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_EQ(key->size(), 16u);
  EXPECT_EQ((*key)[15], '\x0f');
  EXPECT_EQ(KeyHex(*key), "000102030405060708090a0b0c0d0e0f");
  EXPECT_TRUE(ParseKeyHex("0x000102030405060708090a0b0c0d0e0f").ok());
  EXPECT_FALSE(ParseKeyHex("00010203").ok());
  EXPECT_FALSE(ParseKeyHex("000102030405060708090a0b0c0d0e0g").ok());
  EXPECT_FALSE(ParseKeyHex(std::string(34, '0')).ok());
}

TEST(DurationTest, UnitsAndLimits) {
  EXPECT_EQ(*ParseDurationMs("30s", 100000), 30000u);
  EXPECT_EQ(*ParseDurationMs("1500ms", 100000), 1500u);
  EXPECT_EQ(*ParseDurationMs("1m30s", 100000), 90000u);
  EXPECT_EQ(*ParseDurationMs("0", 100000), 0u);
  EXPECT_FALSE(ParseDurationMs("30", 100000).ok());  // a unit is required
  EXPECT_FALSE(ParseDurationMs("-1s", 100000).ok());
  EXPECT_FALSE(ParseDurationMs("2m", 100000).ok());  // over the limit
  EXPECT_FALSE(ParseDurationMs("soon", 100000).ok());
}

TEST(KnobsTest, NameEqualsValue) {
  auto knobs = ParseKnobs({"a=1", "b=", "c=x=y"});
  ASSERT_TRUE(knobs.ok()) << knobs.status();
  ASSERT_EQ(knobs->size(), 3u);
  EXPECT_EQ((*knobs)[0].name(), "a");
  EXPECT_EQ((*knobs)[1].value(), "");
  EXPECT_EQ((*knobs)[2].value(), "x=y");
  EXPECT_FALSE(ParseKnobs({"=1"}).ok());
  EXPECT_FALSE(ParseKnobs({"a"}).ok());
  EXPECT_FALSE(ParseKnobs({}).ok());
}

TEST(NamesTest, StatesAndTiers) {
  EXPECT_EQ(*ParseState("waiting"), v1::SESSION_WAITING_TOOL);
  EXPECT_EQ(*ParseState("all"), v1::SESSION_STATE_UNSPECIFIED);
  EXPECT_FALSE(ParseState("asleep").ok());
  EXPECT_EQ(*ParseTier("nvme"), v1::TIER_NVME);
  EXPECT_FALSE(ParseTier("tape").ok());
  for (auto s :
       {v1::SESSION_RUNNING, v1::SESSION_WAITING_TOOL, v1::SESSION_IDLE, v1::SESSION_CLOSED}) {
    EXPECT_EQ(*ParseState(StateName(s)), s);
  }
}

TEST(MetricsTextTest, SamplesLabelsAndSums) {
  const char* text =
      "# HELP cachesvc_rpc_requests_total RPCs handled\n"
      "# TYPE cachesvc_rpc_requests_total counter\n"
      "cachesvc_rpc_requests_total{method=\"OpenSession\",code=\"OK\"} 3\n"
      "cachesvc_rpc_requests_total{method=\"OpenSession\",code=\"NOT_FOUND\"} 2\n"
      "cachesvc_rpc_requests_total{method=\"GetSession\",code=\"OK\"} 7 1700000000000\n"
      "cachesvc_sessions{state=\"running\"} 1\n"
      "weird{l=\"a \\\"quoted\\\" \\\\ value\"} +Inf\n"
      "cachesvc_blocks 12\r\n"
      "\n";
  auto samples = ParseMetricsText(text);
  ASSERT_TRUE(samples.ok()) << samples.status();
  ASSERT_EQ(samples->size(), 6u);
  EXPECT_EQ(SumMetric(*samples, "cachesvc_rpc_requests_total"), 12);
  EXPECT_EQ(SumMetric(*samples, "cachesvc_rpc_requests_total", {{"code", "OK"}}), 10);
  EXPECT_EQ(SumMetric(*samples, "cachesvc_blocks"), 12);
  EXPECT_EQ(SumMetric(*samples, "absent"), 0);
  auto by = SumMetricBy(*samples, "cachesvc_rpc_requests_total", "method");
  EXPECT_EQ(by["OpenSession"], 5);
  EXPECT_EQ(by["GetSession"], 7);
  EXPECT_EQ((*samples)[4].labels.at("l"), "a \"quoted\" \\ value");
  EXPECT_TRUE(std::isinf((*samples)[4].value));

  EXPECT_FALSE(ParseMetricsText("m{l=\"x} 1\n").ok());
  EXPECT_FALSE(ParseMetricsText("m{l=x} 1\n").ok());
  EXPECT_FALSE(ParseMetricsText("m one\n").ok());
  EXPECT_FALSE(ParseMetricsText("{l=\"x\"} 1\n").ok());
}

TEST(OutputTest, TablesAndNumbers) {
  Table t({{"NAME"}, {"COUNT", true}, {"NOTE"}});
  t.AddRow({"a", "1", "x"});
  t.AddRow({"longer", "12345", "y"});
  std::ostringstream out;
  t.Print(out);
  EXPECT_EQ(out.str(),
            "NAME    COUNT  NOTE\n"
            "a           1  x\n"
            "longer  12345  y\n");
  EXPECT_EQ(Bytes(512), "512 B");
  EXPECT_EQ(Bytes(16 << 10), "16.0 KiB");
  EXPECT_EQ(Bytes(3ull << 29), "1.5 GiB");
  EXPECT_EQ(Millis(0), "0s");
  EXPECT_EQ(Millis(250), "250ms");
  EXPECT_EQ(Millis(90000), "1m30s");
  EXPECT_EQ(Millis(3600000), "1h");
  EXPECT_EQ(Millis(90061000), "1d1h1m1s");
  EXPECT_EQ(ExitCodeFor(absl::NotFoundError("")), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::UnimplementedError("")), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::UnauthenticatedError("")), kExitNotFound);
  EXPECT_EQ(ExitCodeFor(absl::InvalidArgumentError("")), kExitUsage);
  EXPECT_EQ(ExitCodeFor(absl::UnavailableError("")), kExitUnreachable);
  EXPECT_EQ(ExitCodeFor(absl::DeadlineExceededError("")), kExitUnreachable);
  EXPECT_EQ(ExitCodeFor(absl::OkStatus()), kExitOk);
}

}  // namespace
}  // namespace cachesvc::cachectl
