#include "proto/layout.h"

#include <gtest/gtest.h>

#include <functional>
#include <set>

#include "proto/codec.h"

namespace cachesvc {
namespace {

ModelLayout Llama8b() {
  ModelLayout l;
  l.model_id = "llama-3.1-8b";
  l.num_layers = 32;
  l.num_kv_heads = 8;
  l.head_dim = 128;
  l.dtype = Dtype::kBf16;
  l.block_tokens = 16;
  return l;
}

TEST(LayoutTest, RawBlockBytes) {
  // 32 layers x (K,V) x 16 tokens x 8 heads x 128 dims x 2 bytes.
  EXPECT_EQ(Llama8b().RawBlockBytes(), 32u * 2 * 16 * 8 * 128 * 2);
  ModelLayout mla = Llama8b();
  mla.attention = AttentionKind::kMla;
  mla.num_kv_heads = 1;
  mla.head_dim = 576;
  EXPECT_EQ(mla.RawBlockBytes(), 32u * 1 * 16 * 1 * 576 * 2);
}

TEST(LayoutTest, EveryFieldChangesTheFingerprint) {
  const std::vector<std::function<void(ModelLayout&)>> changes = {
      [](ModelLayout& l) { l.model_id = "llama-3.1-8b-instruct"; },
      [](ModelLayout& l) { l.num_layers = 31; },
      [](ModelLayout& l) { l.num_kv_heads = 4; },
      [](ModelLayout& l) { l.head_dim = 64; },
      [](ModelLayout& l) { l.dtype = Dtype::kFp16; },
      [](ModelLayout& l) { l.block_tokens = 32; },
      [](ModelLayout& l) { l.tp_size = 2; },
      [](ModelLayout& l) { l.tp_size = 2, l.tp_rank = 1; },
      [](ModelLayout& l) { l.attention = AttentionKind::kMla, l.num_kv_heads = 1; },
  };
  std::set<uint64_t> seen = {Llama8b().Fingerprint()};
  for (std::size_t i = 0; i < changes.size(); ++i) {
    ModelLayout l = Llama8b();
    changes[i](l);
    ASSERT_TRUE(l.Validate().ok()) << i << ": " << l.Validate();
    EXPECT_TRUE(seen.insert(l.Fingerprint()).second) << "change " << i << " kept the fingerprint";
  }
}

struct BadLayout {
  std::string name;
  std::function<void(ModelLayout&)> change;
  std::string field;  // must appear in the message
  friend void PrintTo(const BadLayout& c, std::ostream* os) { *os << c.name; }
};

class LayoutValidateTest : public ::testing::TestWithParam<BadLayout> {};

TEST_P(LayoutValidateTest, NamesTheBadField) {
  ModelLayout l = Llama8b();
  GetParam().change(l);
  const absl::Status s = l.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find(GetParam().field), std::string::npos) << s;
}

INSTANTIATE_TEST_SUITE_P(
    Fields, LayoutValidateTest,
    ::testing::Values(
        BadLayout{"EmptyModel", [](ModelLayout& l) { l.model_id.clear(); }, "model_id"},
        BadLayout{"LongModel", [](ModelLayout& l) { l.model_id.assign(257, 'm'); }, "model_id"},
        BadLayout{"NoLayers", [](ModelLayout& l) { l.num_layers = 0; }, "num_layers"},
        BadLayout{"ManyLayers", [](ModelLayout& l) { l.num_layers = 1025; }, "num_layers"},
        BadLayout{"NoHeads", [](ModelLayout& l) { l.num_kv_heads = 0; }, "num_kv_heads"},
        BadLayout{"NoHeadDim", [](ModelLayout& l) { l.head_dim = 0; }, "head_dim"},
        BadLayout{"BadDtype", [](ModelLayout& l) { l.dtype = static_cast<Dtype>(9); }, "dtype"},
        BadLayout{"NoBlock", [](ModelLayout& l) { l.block_tokens = 0; }, "block_tokens"},
        BadLayout{"NoTp", [](ModelLayout& l) { l.tp_size = 0; }, "tp_size"},
        BadLayout{"RankPastSize", [](ModelLayout& l) { l.tp_rank = 1; }, "tp_rank"},
        BadLayout{"BadAttention",
                  [](ModelLayout& l) { l.attention = static_cast<AttentionKind>(0); }, "attention"},
        BadLayout{"MlaWithHeads", [](ModelLayout& l) { l.attention = AttentionKind::kMla; },
                  "num_kv_heads"}),
    [](const auto& param_info) { return param_info.param.name; });

TEST(LayoutTest, ProtoRoundTrip) {
  const ModelLayout l = Llama8b();
  auto back = ModelLayout::FromProto(l.ToProto());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(*back, l);
  EXPECT_EQ(back->Fingerprint(), l.Fingerprint());
}

TEST(LayoutTest, ProtoWithUnspecifiedEnumsIsRejected) {
  v1::ModelLayout msg = Llama8b().ToProto();
  msg.set_dtype(v1::DTYPE_UNSPECIFIED);
  EXPECT_EQ(ModelLayout::FromProto(msg).status().code(), absl::StatusCode::kInvalidArgument);
  msg = Llama8b().ToProto();
  msg.set_attention(v1::ATTENTION_UNSPECIFIED);
  EXPECT_EQ(ModelLayout::FromProto(msg).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(CodecIdTest, WireValuesAndNames) {
  EXPECT_EQ(*CodecFromProto(v1::CODEC_RAW), kernels::CodecId::kRaw);
  EXPECT_EQ(*CodecFromProto(v1::CODEC_TQ3), kernels::CodecId::kTq3);
  EXPECT_EQ(*CodecFromProto(v1::CODEC_TQ4), kernels::CodecId::kTq4);
  EXPECT_FALSE(CodecFromProto(v1::CODEC_UNSPECIFIED).ok());
  EXPECT_FALSE(CodecFromProto(static_cast<v1::Codec>(2)).ok());
  EXPECT_EQ(CodecToProto(kernels::CodecId::kTq3), v1::CODEC_TQ3);
  EXPECT_EQ(kernels::CodecFromName("tq4"), kernels::CodecId::kTq4);
  EXPECT_FALSE(kernels::CodecFromName("tq5").has_value());
}

}  // namespace
}  // namespace cachesvc
