// Checks the published vectors in proto/KEYS.md against the C++ implementation. The file is read
// at test time, so the document and the code cannot drift apart.
#include <gtest/gtest.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "proto/block_key.h"
#include "proto/layout.h"

namespace cachesvc {
namespace {

using Section = std::map<std::string, std::string>;

std::string Trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  return s.substr(b, s.find_last_not_of(" \t") - b + 1);
}

template <typename Int>
bool ParseInt(const std::string& text, Int& out, int base = 10) {
  auto [end, err] = std::from_chars(text.data(), text.data() + text.size(), out, base);
  return err == std::errc() && end == text.data() + text.size() && !text.empty();
}

std::string BytesToHex(const std::string& bytes) {
  std::string out;
  char buf[3];
  for (unsigned char c : bytes) {
    std::snprintf(buf, sizeof(buf), "%02x", c);
    out += buf;
  }
  return out;
}

bool HexToBytes(const std::string& hex, std::string& out) {
  if (hex.size() % 2 != 0) return false;
  out.clear();
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    unsigned value = 0;
    if (!ParseInt(hex.substr(i, 2), value, 16)) return false;
    out.push_back(static_cast<char>(value));
  }
  return true;
}

struct Vectors {
  std::map<int, Section> layouts;
  std::map<int, Section> keys;
};

Vectors ReadVectors() {
  std::ifstream in(CACHESVC_SOURCE_DIR "/proto/KEYS.md");
  EXPECT_TRUE(in) << "cannot open proto/KEYS.md";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const std::string begin = "<!-- vectors:begin -->\n```text\n";
  const auto start = doc.find(begin);
  const auto stop = doc.find("```\n<!-- vectors:end -->");
  EXPECT_NE(start, std::string::npos);
  EXPECT_NE(stop, std::string::npos);
  Vectors v;
  Section* current = nullptr;
  std::istringstream block(doc.substr(start + begin.size(), stop - start - begin.size()));
  for (std::string line; std::getline(block, line);) {
    line = Trim(line);
    if (line.empty()) continue;
    if (line.front() == '[') {
      std::istringstream head(line.substr(1, line.size() - 2));
      std::string kind;
      int n = 0;
      EXPECT_TRUE(head >> kind >> n) << line;
      current = kind == "layout" ? &v.layouts[n] : &v.keys[n];
      continue;
    }
    const auto eq = line.find('=');
    EXPECT_NE(eq, std::string::npos) << line;
    EXPECT_NE(current, nullptr) << line;
    (*current)[Trim(line.substr(0, eq))] = Trim(line.substr(eq + 1));
  }
  return v;
}

uint32_t U32(const Section& s, const std::string& field) {
  uint32_t v = 0;
  EXPECT_TRUE(ParseInt(s.at(field), v)) << field;
  return v;
}

ModelLayout LayoutOf(const Section& s) {
  ModelLayout l;
  l.model_id = s.at("model_id");
  l.num_layers = U32(s, "num_layers");
  l.num_kv_heads = U32(s, "num_kv_heads");
  l.head_dim = U32(s, "head_dim");
  const std::map<std::string, Dtype> dtypes = {{"fp16", Dtype::kFp16},
                                               {"bf16", Dtype::kBf16},
                                               {"fp8_e4m3", Dtype::kFp8E4M3},
                                               {"fp32", Dtype::kFp32}};
  l.dtype = dtypes.at(s.at("dtype"));
  l.block_tokens = U32(s, "block_tokens");
  l.tp_rank = U32(s, "tp_rank");
  l.tp_size = U32(s, "tp_size");
  l.attention = s.at("attention") == "mla" ? AttentionKind::kMla : AttentionKind::kMhaGqa;
  return l;
}

std::string FingerprintHex(uint64_t fp) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(fp));
  return buf;
}

TEST(KeyVectorsTest, DocumentHasVectors) {
  const Vectors v = ReadVectors();
  EXPECT_GE(v.layouts.size(), 3u);
  EXPECT_GE(v.keys.size(), 5u);
}

TEST(KeyVectorsTest, LayoutEncodingsAndFingerprints) {
  for (const auto& [n, section] : ReadVectors().layouts) {
    SCOPED_TRACE("layout " + std::to_string(n));
    const ModelLayout layout = LayoutOf(section);
    ASSERT_TRUE(layout.Validate().ok()) << layout.Validate();
    EXPECT_EQ(BytesToHex(layout.CanonicalEncoding()), section.at("encoding"));
    EXPECT_EQ(FingerprintHex(layout.Fingerprint()), section.at("fingerprint"));
  }
}

TEST(KeyVectorsTest, SeedsAndBlockKeys) {
  const Vectors v = ReadVectors();
  for (const auto& [n, section] : v.keys) {
    SCOPED_TRACE("keys " + std::to_string(n));
    const ModelLayout layout = LayoutOf(v.layouts.at(static_cast<int>(U32(section, "layout"))));
    std::string salt;
    ASSERT_TRUE(HexToBytes(section.at("tenant_salt"), salt));
    std::vector<uint32_t> tokens;
    std::istringstream token_text(section.at("tokens"));
    for (std::string t; token_text >> t;) {
      uint32_t id = 0;
      ASSERT_TRUE(ParseInt(t, id)) << t;
      tokens.push_back(id);
    }
    const BlockKey seed = KeyChainSeed(salt, layout.Fingerprint());
    EXPECT_EQ(seed.Hex(), section.at("seed"));

    absl::StatusOr<std::vector<BlockKey>> keys = DeriveBlockKeys(seed, tokens, layout.block_tokens);
    ASSERT_TRUE(keys.ok()) << keys.status();
    std::vector<std::string> expected;
    for (std::size_t j = 0; section.count("key." + std::to_string(j)) != 0; ++j) {
      expected.push_back(section.at("key." + std::to_string(j)));
    }
    if (expected.empty()) {
      EXPECT_EQ(section.at("keys"), "none");
    }
    // Full blocks only: the vector lists exactly floor(n / B) keys.
    EXPECT_EQ(expected.size(), tokens.size() / layout.block_tokens);
    ASSERT_EQ(keys->size(), expected.size());
    for (std::size_t j = 0; j < expected.size(); ++j) EXPECT_EQ((*keys)[j].Hex(), expected[j]) << j;
  }
}

}  // namespace
}  // namespace cachesvc
