// The golden vectors of kernels/testdata/golden.txt (written by the independent Python
// implementation in kernels/tools/tq_reference.py) reproduced byte for byte by every CPU
// implementation this machine can run.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "kernels/tq_codec.h"
#include "kernels/tq_format.h"
#include "kernels/tq_math.h"

namespace cachesvc::kernels {
namespace {

struct Digest {
  int number = 0;
  CodecId codec = CodecId::kTq3;
  ValueType type = ValueType::kFp16;
  std::uint32_t head_dim = 0;
  std::uint32_t vectors = 0;
  std::uint64_t fnv64 = 0;
};

struct Golden {
  int number = 0;
  CodecId codec = CodecId::kTq3;
  ValueType type = ValueType::kFp16;
  std::uint32_t head_dim = 0;
  std::uint64_t seed = 0;
  std::vector<std::byte> input, encoded, decoded;
  std::vector<std::uint32_t> alpha_bits;  // per vector, fp32 bits of the scale before rounding
};

std::vector<std::byte> FromHex(const std::string& hex) {
  std::vector<std::byte> out(hex.size() / 2);
  for (std::size_t i = 0; i < out.size(); ++i) {
    out[i] = static_cast<std::byte>(std::stoul(hex.substr(2 * i, 2), nullptr, 16));
  }
  return out;
}

struct GoldenFile {
  std::vector<Golden> blocks;
  std::vector<Digest> digests;
};

GoldenFile LoadGoldenFile() {
  std::ifstream in(KERNELS_GOLDEN_FILE);
  EXPECT_TRUE(in) << KERNELS_GOLDEN_FILE;
  GoldenFile file;
  std::vector<Golden>& all = file.blocks;
  std::map<std::string, std::string> fields;
  auto flush = [&] {
    if (fields.empty()) return;
    if (fields.count("fnv64") != 0) {
      Digest g;
      g.number = static_cast<int>(file.digests.size()) + 1;
      g.codec = fields["codec"] == "tq3" ? CodecId::kTq3 : CodecId::kTq4;
      g.type = fields["type"] == "fp16" ? ValueType::kFp16 : ValueType::kBf16;
      g.head_dim = static_cast<std::uint32_t>(std::stoul(fields["head_dim"]));
      g.vectors = static_cast<std::uint32_t>(std::stoul(fields["vectors"]));
      g.fnv64 = std::stoull(fields["fnv64"], nullptr, 16);
      file.digests.push_back(g);
      fields.clear();
      return;
    }
    Golden g;
    g.number = static_cast<int>(all.size()) + 1;
    g.codec = fields["codec"] == "tq3" ? CodecId::kTq3 : CodecId::kTq4;
    g.type = fields["type"] == "fp16" ? ValueType::kFp16 : ValueType::kBf16;
    g.head_dim = static_cast<std::uint32_t>(std::stoul(fields["head_dim"]));
    g.seed = std::stoull(fields["seed"], nullptr, 16);
    g.input = FromHex(fields["input"]);
    g.encoded = FromHex(fields["encoded"]);
    g.decoded = FromHex(fields["decoded"]);
    std::istringstream alphas(fields["alpha"]);
    for (std::string a; alphas >> a;)
      g.alpha_bits.push_back(static_cast<std::uint32_t>(std::stoul(a, nullptr, 16)));
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
  return file;
}

std::vector<Golden> LoadGolden() { return LoadGoldenFile().blocks; }

// digest_inputs() of kernels/tools/tq_reference.py.
std::vector<std::uint16_t> DigestInputs(int number, ValueType type, std::uint32_t d,
                                        std::uint32_t vectors) {
  std::vector<std::uint16_t> out(std::size_t{vectors} * d);
  std::uint64_t state = 0xD16E57u + static_cast<std::uint64_t>(number);
  for (auto& v : out) {
    const std::uint64_t u = tq::SplitMix64(state);
    const double x = (static_cast<double>((u >> 40) & 0xffffff) - 8388608.0) / 8388608.0 *
                     std::ldexp(1.0, static_cast<int>((u >> 32) & 7) - 3);
    const auto f = static_cast<float>(x);  // exact
    v = type == ValueType::kFp16 ? tq::FloatToFp16(f) : tq::FloatToBf16(f);
  }
  return out;
}

std::uint64_t Fnv1a64(std::span<const std::byte> data, std::uint64_t h = 0xcbf29ce484222325ull) {
  for (std::byte b : data) h = (h ^ static_cast<std::uint8_t>(b)) * 0x100000001b3ull;
  return h;
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

// The scalar reference's fp32 scale before fp16 rounding equals the Python implementation's: a
// one-ulp difference in any reduction or operation order shows here, while the fp16 norm field
// would hide most of them.
TEST(GoldenScaleTest, ReferenceScalesMatchBitForBit) {
  for (const Golden& g : LoadGolden()) {
    SCOPED_TRACE("golden " + std::to_string(g.number));
    const int bits = g.codec == CodecId::kTq3 ? 3 : 4;
    const int d = static_cast<int>(g.head_dim);
    std::uint64_t signs[4];
    tq::SignWords(g.seed, d, signs);
    const std::size_t n = g.input.size() / 2 / g.head_dim;
    ASSERT_EQ(g.alpha_bits.size(), n);
    const auto* values = reinterpret_cast<const std::uint16_t*>(g.input.data());
    for (std::size_t i = 0; i < n; ++i) {
      float x[256];
      for (int j = 0; j < d; ++j) {
        const std::uint16_t v = values[i * g.head_dim + static_cast<std::size_t>(j)];
        x[j] = g.type == ValueType::kFp16 ? tq::Fp16ToFloat(v) : tq::Bf16ToFloat(v);
      }
      float alpha = 0;
      std::uint16_t norm = 0;
      std::uint8_t codes[128];
      tq::DispatchShape(d, bits, [&]<int D, int kBits>() {
        tq::EncodeVector<D, kBits>(x, signs, tq::Centroids(D, kBits), tq::Thresholds(D, kBits),
                                   &norm, codes, &alpha);
      });
      const std::uint32_t got = std::isnan(alpha) ? 0x7fc00000u : tq::FloatBits(alpha);
      EXPECT_EQ(got, g.alpha_bits[i]) << "vector " << i;
    }
  }
}

TEST_P(GoldenTest, ReproducesDigestsOfLargerBlocks) {
  if (!CodecImplAvailable(GetParam()))
    GTEST_SKIP() << CodecImplName(GetParam()) << " not available";
  const std::vector<Digest> digests = LoadGoldenFile().digests;
  ASSERT_EQ(digests.size(), 12u);
  for (const Digest& g : digests) {
    SCOPED_TRACE("digest " + std::to_string(g.number));
    const auto input = DigestInputs(g.number, g.type, g.head_dim, g.vectors);
    std::vector<std::byte> encoded(EncodedBytes(g.codec, g.type, g.head_dim, g.vectors));
    ASSERT_TRUE(Encode(g.codec, g.type, g.head_dim, kDefaultSignSeed,
                       std::as_bytes(std::span(input)), encoded, nullptr, GetParam())
                    .ok());
    std::vector<std::uint16_t> decoded(input.size());
    ASSERT_TRUE(Decode(g.codec, g.type, g.head_dim, encoded,
                       std::as_writable_bytes(std::span(decoded)), GetParam())
                    .ok());
    EXPECT_EQ(Fnv1a64(std::as_bytes(std::span(decoded)), Fnv1a64(encoded)), g.fnv64);
  }
}

INSTANTIATE_TEST_SUITE_P(Impls, GoldenTest,
                         ::testing::Values(CodecImpl::kScalar, CodecImpl::kAvx2,
                                           CodecImpl::kAvx512),
                         [](const auto& param_info) { return CodecImplName(param_info.param); });

}  // namespace
}  // namespace cachesvc::kernels
