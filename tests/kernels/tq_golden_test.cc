// The golden vectors of kernels/testdata/golden.txt (written by the independent Python
// implementation in kernels/tools/tq_reference.py) reproduced byte for byte by every CPU
// implementation this machine can run.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/tq_codec.h"

namespace cachesvc::kernels {
namespace {

struct Golden {
  int number = 0;
  CodecId codec = CodecId::kTq3;
  ValueType type = ValueType::kFp16;
  std::uint32_t head_dim = 0;
  std::uint64_t seed = 0;
  std::vector<std::byte> input, encoded, decoded;
};

std::vector<std::byte> FromHex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

std::vector<Golden> LoadGolden() {
  std::ifstream in(KERNELS_GOLDEN_FILE);
  EXPECT_TRUE(in) << KERNELS_GOLDEN_FILE;
  std::vector<Golden> all;
  std::map<std::string, std::string> fields;
  auto flush = [&] {
    if (fields.empty()) return;
    Golden g;
    g.number = static_cast<int>(all.size()) + 1;
    g.codec = fields["codec"] == "tq3" ? CodecId::kTq3 : CodecId::kTq4;
    g.type = fields["type"] == "fp16" ? ValueType::kFp16 : ValueType::kBf16;
    g.head_dim = static_cast<std::uint32_t>(std::stoul(fields["head_dim"]));
    g.seed = std::stoull(fields["seed"], nullptr, 16);
    g.input = FromHex(fields["input"]);
    g.encoded = FromHex(fields["encoded"]);
    g.decoded = FromHex(fields["decoded"]);
    all.push_back(std::move(g));
    fields.clear();
  };
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    if (line[0] == '[') {
      flush();
      continue;
    }
    const auto eq = line.find(" = ");
    if (eq != std::string::npos) fields[line.substr(0, eq)] = line.substr(eq + 3);
  }
  flush();
  return all;
}

std::string FirstDifference(const std::vector<std::byte>& got, const std::vector<std::byte>& want) {
  if (got.size() != want.size()) return "sizes differ";
  for (std::size_t i = 0; i < got.size(); ++i) {
    if (got[i] != want[i]) {
      char buf[96];
      std::snprintf(buf, sizeof(buf), "first difference at byte %zu: got %02x, want %02x", i,
                    static_cast<unsigned>(got[i]), static_cast<unsigned>(want[i]));
      return buf;
    }
  }
  return "";
}

class GoldenTest : public ::testing::TestWithParam<CodecImpl> {};

TEST_P(GoldenTest, ReproducesEncodedAndDecodedBytes) {
  if (!CodecImplAvailable(GetParam()))
    GTEST_SKIP() << CodecImplName(GetParam()) << " not available";
  const std::vector<Golden> all = LoadGolden();
  ASSERT_EQ(all.size(), 12u);
  for (const Golden& g : all) {
    SCOPED_TRACE("golden " + std::to_string(g.number));
    std::vector<std::byte> encoded(
        EncodedBytes(g.codec, g.type, g.head_dim, g.input.size() / 2 / g.head_dim));
    EncodeStats stats;
    ASSERT_TRUE(
        Encode(g.codec, g.type, g.head_dim, g.seed, g.input, encoded, &stats, GetParam()).ok());
    EXPECT_EQ(FirstDifference(encoded, g.encoded), "");
    // Every block holds one zero vector and three that decode to NaN (NaN, Inf, norm overflow).
    EXPECT_EQ(stats.zero_vectors, 1u);
    EXPECT_EQ(stats.nonfinite_vectors, 3u);
    std::vector<std::byte> decoded(g.input.size());
    ASSERT_TRUE(Decode(g.codec, g.type, g.head_dim, g.encoded, decoded, GetParam()).ok());
    EXPECT_EQ(FirstDifference(decoded, g.decoded), "");
  }
}

INSTANTIATE_TEST_SUITE_P(Impls, GoldenTest, ::testing::Values(CodecImpl::kScalar, CodecImpl::kAvx2),
                         [](const auto& param_info) { return CodecImplName(param_info.param); });

}  // namespace
}  // namespace cachesvc::kernels
