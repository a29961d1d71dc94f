// KvConnector against the real daemon: layer-wise save from one engine's pages and load into
// another engine's pages (of another page layout) byte-identical for RAW; TQ3/TQ4 loads equal the
// CPU codec's decode; every kind of bad block is a miss that leaves the pages alone; bad input is
// INVALID_ARGUMENT; a daemon that dies or stops mid-load is an error within the timeouts.
#include <gtest/gtest.h>
#include <signal.h>

#include <chrono>
#include <thread>

#include "client/kv_connector.h"
#include "kernels/tq_codec.h"
#include "tests/client/connector_test_util.h"

namespace cachesvc::testing {
namespace {

using client::KvConnector;
using client::LoadResult;
using client::SaveResult;
using kernels::CodecId;
using namespace std::chrono_literals;

std::unique_ptr<KvConnector> Connect(const ConnectorDaemon& d, CodecId codec = CodecId::kRaw) {
  auto c = KvConnector::Create(d.Options(codec));
  EXPECT_TRUE(c.ok()) << c.status();
  return c.ok() ? std::move(*c) : nullptr;
}

// Saves blocks [first, ids.size()) of `tokens` from `pages` layer by layer, as an engine does.
[[nodiscard]] absl::StatusOr<SaveResult> SaveAll(KvConnector& c,
                                                 std::span<const std::uint32_t> tokens,
                                                 std::span<const std::uint32_t> ids,
                                                 std::size_t first = 0,
                                                 const std::string& session = "") {
  if (absl::Status st = c.BeginSave(tokens, ids, {.first_block = first, .session_id = session});
      !st.ok()) {
    return st;
  }
  for (std::uint32_t l = 0; l < c.layout().num_layers; ++l) {
    if (absl::Status st = c.SaveLayer(l); !st.ok()) return st;
  }
  return c.WaitForSave();
}

// `raw` (a canonical fp16 block) encoded as `codec` with the default seed, as stored.
std::vector<std::byte> Encoded(CodecId codec, const std::vector<std::byte>& raw,
                               kernels::ValueType type = kernels::ValueType::kFp16) {
  std::vector<std::byte> enc(kernels::EncodedBytes(codec, type, 128, raw.size() / 256));
  EXPECT_TRUE(kernels::Encode(codec, type, 128, kernels::kDefaultSignSeed, raw, enc).ok());
  return enc;
}

// What a lossy save and load of `raw` must give: the CPU reference codec's decode.
std::vector<std::byte> CpuRoundTrip(CodecId codec, const std::vector<std::byte>& raw) {
  std::vector<std::byte> dec(raw.size());
  EXPECT_TRUE(kernels::Decode(codec, kernels::ValueType::kFp16, 128, Encoded(codec, raw), dec,
                              kernels::CodecImpl::kScalar)
                  .ok());
  return dec;
}

class ConnectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<ConnectorDaemon>(
        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
  }
  std::unique_ptr<ConnectorDaemon> daemon_;
  const ModelLayout layout_ = ConnectorLayout();
};

TEST_F(ConnectorTest, RawSaveThenLoadIsByteIdenticalAcrossPageLayouts) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 4 + 5, 1);  // 4 full blocks and a tail
  for (PageKind src_kind : {PageKind::kTokenMajor, PageKind::kHeadMajor, PageKind::kSharedKv,
                            PageKind::kPaddedTokenMajor}) {
    SCOPED_TRACE(PageKindName(src_kind));
    // Each source layout saves its own prompt (tokens differ in the last value of block 0).
    std::vector<std::uint32_t> prompt = tokens;
    prompt[15] = static_cast<std::uint32_t>(src_kind);
    EngineCache src(layout_, src_kind, 8);
    src.Fill(100 + static_cast<int>(src_kind));
    auto saver = Connect(*daemon_);
    ASSERT_NE(saver, nullptr);
    ASSERT_TRUE(saver->RegisterPagedCache(src.cache()).ok());
    EXPECT_EQ(*saver->LookupPrefix(prompt), 0u);
    const std::vector<std::uint32_t> src_pages = {6, 1, 4, 2};
    auto saved = SaveAll(*saver, prompt, src_pages);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->blocks_committed, 4u);
    EXPECT_TRUE(saved->tag_status.ok()) << "no session: nothing to tag";
    EXPECT_EQ(*saver->LookupPrefix(prompt), 64u) << "whole blocks only; the tail is not saved";
    EXPECT_EQ(SaveAll(*saver, prompt, src_pages)->blocks_skipped, 4u);

    for (PageKind dst_kind : {PageKind::kHeadMajor, PageKind::kSharedKv, PageKind::kTokenMajor}) {
      SCOPED_TRACE(PageKindName(dst_kind));
      EngineCache dst(layout_, dst_kind, 6);
      dst.Fill(7);
      std::vector<std::byte> expected(dst.bytes().begin(), dst.bytes().end());
      auto loader = Connect(*daemon_);
      ASSERT_NE(loader, nullptr);
      ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
      const std::vector<std::uint32_t> dst_pages = {3, 0, 5, 1};
      auto loaded = loader->Load(prompt, dst_pages);
      ASSERT_TRUE(loaded.ok()) << loaded.status();
      EXPECT_EQ(loaded->blocks, 4u);
      EXPECT_EQ(loaded->tokens, 64u);
      EXPECT_EQ(loaded->miss_reason, "");
      for (std::size_t i = 0; i < 4; ++i) {
        EXPECT_EQ(dst.Canonical(dst_pages[i]), src.Canonical(src_pages[i])) << "block " << i;
        dst.WriteCanonical(expected, dst_pages[i], src.Canonical(src_pages[i]));
      }
      EXPECT_TRUE(std::equal(expected.begin(), expected.end(), dst.bytes().begin()))
          << "pages not loaded, or bytes outside the vectors, changed";
    }
  }
}

TEST_F(ConnectorTest, APartialPrefixLoadsOnlyWhatIsCached) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 4, 2);
  EngineCache src(layout_, PageKind::kTokenMajor, 4);
  src.Fill(5);
  auto c = Connect(*daemon_);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {0, 1, 2, 3};
  // Only the first two blocks, then blocks 2..3 with first_block = 2 (0..1 are not read again).
  ASSERT_EQ(SaveAll(*c, std::span(tokens).first(32), std::span(ids).first(2))->blocks_committed,
            2u);
  EngineCache dst(layout_, PageKind::kTokenMajor, 4);
  dst.Fill(6);
  const std::vector<std::byte> before = dst.Canonical(2);
  auto loader = Connect(*daemon_);
  ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
  auto loaded = loader->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 2u);
  EXPECT_EQ(loaded->miss_reason, "block 2 is not cached");
  EXPECT_EQ(dst.Canonical(1), src.Canonical(1));
  EXPECT_EQ(dst.Canonical(2), before) << "a block not loaded keeps its page";

  auto more = SaveAll(*c, tokens, ids, /*first=*/2);
  ASSERT_TRUE(more.ok()) << more.status();
  EXPECT_EQ(more->blocks_committed, 2u);
  EXPECT_EQ(more->blocks_skipped, 0u);
  EXPECT_EQ(*loader->LookupPrefix(tokens), 64u);
  // Another prompt sharing the first block shares its key: its lookup finds exactly that block.
  std::vector<std::uint32_t> other = tokens;
  other[20] ^= 1;
  EXPECT_EQ(*loader->LookupPrefix(other), 16u);
}

// KeyMode::kClient derives keys locally (empty client salt, no RPC): they follow the contract
// exactly, round-trip through the daemon, and name other blocks than the tenant-salted keys of
// KeyMode::kService.
TEST_F(ConnectorTest, ClientDerivedKeysFollowTheContractAndAreSeparateFromServiceKeys) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 3 + 2, 12);
  EngineCache src(layout_, PageKind::kTokenMajor, 3);
  src.Fill(8);
  auto opts = daemon_->Options();
  opts.key_mode = client::KeyMode::kClient;
  auto c = KvConnector::Create(opts);
  ASSERT_TRUE(c.ok()) << c.status();
  auto service = Connect(*daemon_);
  const std::vector<BlockKey> client_keys = *(*c)->BlockKeys(tokens);
  EXPECT_EQ(client_keys, *DeriveBlockKeys(KeyChainSeed("", layout_.Fingerprint()),
                                          std::span(tokens).first(48), 16));
  const std::vector<BlockKey> service_keys = *service->BlockKeys(tokens);
  ASSERT_EQ(service_keys.size(), 3u);
  EXPECT_NE(service_keys[0], client_keys[0]) << "the daemon seeds with the tenant's salt";

  ASSERT_TRUE((*c)->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {1, 2, 0};
  auto saved = SaveAll(**c, tokens, ids);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->blocks_committed, 3u);
  EXPECT_EQ(*(*c)->LookupPrefix(tokens), 48u);
  EXPECT_EQ(*service->LookupPrefix(tokens), 0u);
  EngineCache dst(layout_, PageKind::kSharedKv, 3);
  ASSERT_TRUE((*c)->RegisterPagedCache(dst.cache()).ok());
  auto loaded = (*c)->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 3u) << loaded->miss_reason;
  for (std::uint32_t id : ids) EXPECT_EQ(dst.Canonical(id), src.Canonical(id));
}

TEST_F(ConnectorTest, LossyLoadsEqualTheCpuCodecsDecode) {
  for (CodecId codec : {CodecId::kTq3, CodecId::kTq4}) {
    SCOPED_TRACE(kernels::CodecName(codec));
    std::vector<std::uint32_t> tokens = Tokens(16 * 3, 3);
    tokens[0] = static_cast<std::uint32_t>(codec);
    EngineCache src(layout_, PageKind::kTokenMajor, 3);
    src.Fill(40 + static_cast<int>(codec));
    auto c = Connect(*daemon_, codec);
    ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
    const std::vector<std::uint32_t> ids = {2, 0, 1};
    auto saved = SaveAll(*c, tokens, ids);
    ASSERT_TRUE(saved.ok()) << saved.status();
    EXPECT_EQ(saved->blocks_committed, 3u);
    EXPECT_EQ(saved->blocks_kept_raw, 0u);

    // The daemon holds them as this codec.
    v1::LookupPrefixRequest req;
    req.set_engine_id(c->engine().engine_id);
    const std::vector<BlockKey> keys = *c->BlockKeys(tokens);
    for (const BlockKey& k : keys) req.mutable_keys()->add_keys()->set_key(std::string(k.Bytes()));
    v1::LookupPrefixResponse resp;
    auto ctx = c->block_client().NewContext();
    ASSERT_TRUE(c->block_client().stub().LookupPrefix(ctx.get(), req, &resp).ok());
    ASSERT_EQ(resp.blocks_size(), 3);
    for (const auto& b : resp.blocks())
      EXPECT_EQ(static_cast<int>(b.codec()), static_cast<int>(codec));

    // A RAW connector (another engine) loads them into head-major pages.
    EngineCache dst(layout_, PageKind::kHeadMajor, 3);
    auto loader = Connect(*daemon_, CodecId::kRaw);
    ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
    const std::vector<std::uint32_t> dst_ids = {1, 2, 0};
    auto loaded = loader->Load(tokens, dst_ids);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    ASSERT_EQ(loaded->blocks, 3u) << loaded->miss_reason;
    for (std::size_t i = 0; i < 3; ++i) {
      const std::vector<std::byte> raw = src.Canonical(ids[i]);
      const std::vector<std::byte> dec = CpuRoundTrip(codec, raw);
      EXPECT_EQ(dst.Canonical(dst_ids[i]), dec) << "block " << i;
      EXPECT_NE(dst.Canonical(dst_ids[i]), raw) << "lossy: the decode is not the input";
    }
  }
}

TEST_F(ConnectorTest, ABlockWithNanIsKeptRawUnderALossyCodec) {
  const std::vector<std::uint32_t> tokens = Tokens(32, 4);
  EngineCache src(layout_, PageKind::kTokenMajor, 2);
  src.Fill(9);
  const std::uint16_t nan = 0x7e00;
  std::memcpy(src.cache().layers[1].v_pages[1], &nan, 2);  // block 1 only
  auto c = Connect(*daemon_, CodecId::kTq3);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {0, 1};
  auto saved = SaveAll(*c, tokens, ids);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->blocks_committed, 2u);
  EXPECT_EQ(saved->blocks_kept_raw, 1u);
  EngineCache dst(layout_, PageKind::kTokenMajor, 2);
  auto loader = Connect(*daemon_);
  ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
  auto loaded = loader->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->blocks, 2u) << loaded->miss_reason;
  EXPECT_EQ(dst.Canonical(1), src.Canonical(1)) << "the RAW block comes back exactly";

  EXPECT_NE(dst.Canonical(0), src.Canonical(0)) << "the other went through TQ3";
}

// Every way a block can be wrong: it and all later blocks are not cached, their pages untouched.
TEST_F(ConnectorTest, AMismatchedOrCorruptBlockIsAMissNeverALoad) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 4, 5);
  EngineCache src(layout_, PageKind::kTokenMajor, 4);
  src.Fill(10);
  auto c = Connect(*daemon_, CodecId::kTq3);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {0, 1, 2, 3};
  ASSERT_EQ(SaveAll(*c, std::span(tokens).first(32), std::span(ids).first(2))->blocks_committed,
            2u);
  const std::vector<BlockKey> keys = *c->BlockKeys(tokens);
  auto expect_two_blocks = [&](KvConnector& loader, const std::string& reason_has) {
    EngineCache dst(layout_, PageKind::kTokenMajor, 4);
    dst.Fill(77);
    const std::vector<std::byte> untouched = dst.Canonical(2), untouched3 = dst.Canonical(3);
    ASSERT_TRUE(loader.RegisterPagedCache(dst.cache()).ok());
    auto loaded = loader.Load(tokens, ids);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->blocks, 2u);
    EXPECT_NE(loaded->miss_reason.find(reason_has), std::string::npos) << loaded->miss_reason;
    EXPECT_EQ(dst.Canonical(1), CpuRoundTrip(CodecId::kTq3, src.Canonical(1)));
    EXPECT_EQ(dst.Canonical(2), untouched) << "a bad block never reaches the pages";
    EXPECT_EQ(dst.Canonical(3), untouched3);
  };

  // Block 2: a TQ3 block whose header is not TQ3 of this layout (bf16 values): the right length,
  // a correct checksum, and still a miss. Block 3 (good) is after it and is not loaded either.
  {
    const std::vector<std::byte> bf16 =
        Encoded(CodecId::kTq3, src.Canonical(2), kernels::ValueType::kBf16);
    const std::vector<std::span<const std::byte>> payload = {bf16};
    ASSERT_EQ(*c->block_client().Save(std::span(keys).subspan(2, 1), payload, v1::CODEC_TQ3), 1u);
    const std::vector<std::byte> good3 = Encoded(CodecId::kTq3, src.Canonical(3));
    const std::vector<std::span<const std::byte>> payload3 = {good3};
    ASSERT_EQ(*c->block_client().Save(std::span(keys).subspan(3, 1), payload3, v1::CODEC_TQ3), 1u);
    EXPECT_EQ(*c->LookupPrefix(tokens), 64u) << "the daemon has all four";
    auto loader = Connect(*daemon_);
    expect_two_blocks(*loader, "header says");
  }
  // Corrupted in transit (after the daemon sent it): the checksum catches it.
  {
    auto loader = Connect(*daemon_);
    loader->TEST_SetAfterReadHook([](std::size_t block, std::span<std::byte> bytes) {
      if (block == 2) bytes[bytes.size() / 2] ^= std::byte{1};
    });
    expect_two_blocks(*loader, "checksum");
  }
}

// The same loads through the same-host data plane (docs/local.md): the connector copies blocks out
// of the daemon's mapped host memory instead of reading them over UCX, with the same checks.
class LocalConnectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    daemon_ = std::make_unique<ConnectorDaemon>(
        ::testing::UnitTest::GetInstance()->current_test_info()->name(), "127.0.0.1:0", true);
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
  }
  double Count(const std::string& method) const {
    return std::max(
        0.0, daemon_->Metric("cachesvc_rpc_requests_total{code=\"OK\",method=\"" + method + "\"}"));
  }
  std::unique_ptr<ConnectorDaemon> daemon_;
  const ModelLayout layout_ = ConnectorLayout();
};

TEST_F(LocalConnectorTest, RawAndTq3LoadThroughTheMappingLikeOverUcx) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 3, 21);
  EngineCache src(layout_, PageKind::kTokenMajor, 3);
  src.Fill(5);
  const std::vector<std::uint32_t> ids = {2, 0, 1};
  for (CodecId codec : {CodecId::kRaw, CodecId::kTq3}) {
    SCOPED_TRACE(static_cast<int>(codec));
    std::vector<std::uint32_t> prompt = tokens;
    prompt[0] = static_cast<std::uint32_t>(codec);  // a prompt per codec
    auto saver = Connect(*daemon_, codec);
    ASSERT_TRUE(saver->RegisterPagedCache(src.cache()).ok());
    ASSERT_EQ(SaveAll(*saver, prompt, ids)->blocks_committed, 3u);
    EngineCache dst(layout_, PageKind::kHeadMajor, 3);
    dst.Fill(9);
    auto loader = Connect(*daemon_);
    ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
    ASSERT_NE(loader->block_client().local_plane(), nullptr)
        << loader->block_client().local_status();
    EXPECT_EQ(*loader->LookupPrefix(prompt), 48u);
    const std::vector<std::uint32_t> dst_ids = {1, 2, 0};
    auto loaded = loader->Load(prompt, dst_ids);
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(loaded->blocks, 3u) << loaded->miss_reason;
    for (std::size_t i = 0; i < 3; ++i) {
      const std::vector<std::byte> want = codec == CodecId::kRaw
                                              ? src.Canonical(ids[i])
                                              : CpuRoundTrip(codec, src.Canonical(ids[i]));
      EXPECT_EQ(dst.Canonical(dst_ids[i]), want) << "block " << i;
    }
  }
  EXPECT_EQ(Count("local.Lease"), 2);
  EXPECT_EQ(Count("LeaseBlocks"), 0) << "no load went over gRPC";
  EXPECT_EQ(Count("LookupPrefix"), 0) << "keys came from the daemon over the local socket";
}

TEST_F(LocalConnectorTest, ACorruptCopyIsAMissAndItsLeasesEnd) {
  const std::vector<std::uint32_t> tokens = Tokens(16 * 3, 22);
  EngineCache src(layout_, PageKind::kTokenMajor, 3);
  src.Fill(6);
  const std::vector<std::uint32_t> ids = {0, 1, 2};
  auto c = Connect(*daemon_);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  ASSERT_EQ(SaveAll(*c, tokens, ids)->blocks_committed, 3u);
  EngineCache dst(layout_, PageKind::kTokenMajor, 3);
  dst.Fill(8);
  const std::vector<std::byte> untouched = dst.Canonical(1), untouched2 = dst.Canonical(2);
  auto loader = Connect(*daemon_);
  ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
  loader->TEST_SetAfterReadHook([](std::size_t block, std::span<std::byte> bytes) {
    if (block == 1) bytes[7] ^= std::byte{1};
  });
  auto loaded = loader->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 1u);
  EXPECT_NE(loaded->miss_reason.find("checksum"), std::string::npos) << loaded->miss_reason;
  EXPECT_EQ(dst.Canonical(0), src.Canonical(0));
  EXPECT_EQ(dst.Canonical(1), untouched) << "a bad block never reaches the pages";
  EXPECT_EQ(dst.Canonical(2), untouched2);
  EXPECT_EQ(Count("local.Lease"), 1);
  for (int i = 0; i < 100 && daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}") != 0;
       ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 0);
}

TEST_F(ConnectorTest, ABlockOfAnotherLayoutUnderTheKeyIsAMiss) {
  // An engine that hashes on its own stores blocks of a smaller layout under this prompt's keys.
  const std::vector<std::uint32_t> tokens = Tokens(32, 6);
  auto c = Connect(*daemon_);
  EngineCache dst(layout_, PageKind::kTokenMajor, 2);
  dst.Fill(1);
  const std::vector<std::byte> before = dst.Canonical(0);
  ASSERT_TRUE(c->RegisterPagedCache(dst.cache()).ok());
  auto other = client::BlockClient::Connect(daemon_->Options().client);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->RegisterEngine(ConnectorLayout(/*block_tokens=*/8)).ok());
  const std::vector<BlockKey> keys = *c->BlockKeys(tokens);
  std::vector<std::byte> small(ConnectorLayout(8).RawBlockBytes(), std::byte{5});
  const std::vector<std::span<const std::byte>> payloads = {small, small};
  ASSERT_EQ(*(*other)->Save(keys, payloads), 2u);
  EXPECT_EQ(*c->LookupPrefix(tokens), 32u) << "the daemon has something under both keys";
  const std::vector<std::uint32_t> ids = {0, 1};
  auto loaded = c->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 0u);
  EXPECT_NE(loaded->miss_reason.find("saved for layout"), std::string::npos) << loaded->miss_reason;
  EXPECT_EQ(dst.Canonical(0), before);
}

TEST_F(ConnectorTest, ABlockOfAnotherModelOfTheSameShapeIsAMiss) {
  // Same sizes, so the length check cannot tell; the lease's layout fingerprint does.
  const std::vector<std::uint32_t> tokens = Tokens(32, 7);
  auto c = Connect(*daemon_);
  EngineCache dst(layout_, PageKind::kTokenMajor, 2);
  dst.Fill(1);
  const std::vector<std::byte> before = dst.Canonical(0);
  ASSERT_TRUE(c->RegisterPagedCache(dst.cache()).ok());
  ModelLayout twin = layout_;
  twin.model_id += "-other";
  auto other = client::BlockClient::Connect(daemon_->Options().client);
  ASSERT_TRUE(other.ok());
  ASSERT_TRUE((*other)->RegisterEngine(twin).ok());
  const std::vector<BlockKey> keys = *c->BlockKeys(tokens);
  std::vector<std::byte> same(layout_.RawBlockBytes(), std::byte{5});
  const std::vector<std::span<const std::byte>> payloads = {same, same};
  ASSERT_EQ(*(*other)->Save(keys, payloads), 2u);
  const std::vector<std::uint32_t> ids = {0, 1};
  auto loaded = c->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 0u);
  EXPECT_NE(loaded->miss_reason.find("saved for layout"), std::string::npos) << loaded->miss_reason;
  EXPECT_EQ(dst.Canonical(0), before) << "wrong KV never reaches the pages";
}

TEST_F(ConnectorTest, BadInputIsInvalidArgumentWithAClearMessage) {
  auto c = Connect(*daemon_);
  const std::vector<std::uint32_t> tokens = Tokens(40, 7);  // 2 full blocks
  const std::vector<std::uint32_t> two = {0, 1};
  EXPECT_EQ(c->Load(tokens, two).status().code(), absl::StatusCode::kFailedPrecondition)
      << "no paged cache yet";

  // A paged cache of the wrong shape or dtype.
  ModelLayout wrong = layout_;
  wrong.block_tokens = 8;  // pages half the size the layout needs
  EngineCache small(wrong, PageKind::kTokenMajor, 2);
  absl::Status st = c->RegisterPagedCache(small.cache());
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument) << st;
  EXPECT_NE(st.message().find("page_bytes"), std::string::npos) << st;
  ModelLayout bf16 = layout_;
  bf16.dtype = Dtype::kBf16;
  EngineCache other_dtype(bf16, PageKind::kTokenMajor, 2);
  EXPECT_EQ(c->RegisterPagedCache(other_dtype.cache()).code(), absl::StatusCode::kInvalidArgument);

  EngineCache pages(layout_, PageKind::kTokenMajor, 3);
  ASSERT_TRUE(c->RegisterPagedCache(pages.cache()).ok());
  const std::vector<std::uint32_t> three = {0, 1, 2};
  st = c->Load(tokens, three).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("2 full blocks"), std::string::npos) << st;
  const std::vector<std::uint32_t> out_of_range = {0, 3};
  st = c->Load(tokens, out_of_range).status();
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(st.message().find("out of range"), std::string::npos) << st;
  const std::vector<std::uint32_t> twice = {1, 1};
  EXPECT_EQ(c->BeginSave(tokens, twice).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->BeginSave(tokens, two, {.first_block = 3, .session_id = ""}).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(c->SaveLayer(layout_.num_layers).code(), absl::StatusCode::kInvalidArgument);

  // The save sequence: a layer twice, BeginSave after a layer, a step left unfinished.
  ASSERT_TRUE(c->BeginSave(tokens, two).ok());
  ASSERT_TRUE(c->SaveLayer(0).ok());
  EXPECT_EQ(c->SaveLayer(0).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->BeginSave(tokens, two).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(c->WaitForSave().status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(*c->LookupPrefix(tokens), 0u) << "a step with layers missing saves nothing";
  EXPECT_TRUE(c->SaveLayer(1).ok()) << "no step open: nothing to do";

  // Options the connector refuses before connecting, and a daemon that refuses the token.
  auto opts = daemon_->Options(CodecId::kTq3);
  opts.layout.dtype = Dtype::kFp32;
  EXPECT_EQ(KvConnector::Create(opts).status().code(), absl::StatusCode::kInvalidArgument);
  opts = daemon_->Options(CodecId::kTq4);
  opts.layout.head_dim = 96;
  EXPECT_EQ(KvConnector::Create(opts).status().code(), absl::StatusCode::kInvalidArgument);
  opts = daemon_->Options();
  opts.layout.block_tokens = 0;
  EXPECT_EQ(KvConnector::Create(opts).status().code(), absl::StatusCode::kInvalidArgument);
  opts = daemon_->Options();
  opts.client.token = "not-the-token";
  EXPECT_EQ(KvConnector::Create(opts).status().code(), absl::StatusCode::kUnauthenticated);
}

TEST_F(ConnectorTest, SessionTaggingIsReportedApartFromTheSave) {
  const std::vector<std::uint32_t> tokens = Tokens(32, 8);
  EngineCache src(layout_, PageKind::kTokenMajor, 2);
  src.Fill(2);
  auto c = Connect(*daemon_);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {0, 1};
  auto saved = SaveAll(*c, tokens, ids, 0, "session-1");
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->blocks_committed, 2u);
  // TagBlocks is UNIMPLEMENTED in daemons that do not wire sessions to blocks yet, NOT_FOUND for
  // a session that was never opened once they do; either way the blocks are saved.
  EXPECT_TRUE(saved->tag_status.ok() ||
              saved->tag_status.code() == absl::StatusCode::kUnimplemented ||
              saved->tag_status.code() == absl::StatusCode::kNotFound)
      << saved->tag_status;
  if (!saved->tag_status.ok()) {
    EXPECT_NE(saved->tag_status.message().find("session-1"), std::string::npos);
  }
  EXPECT_EQ(*c->LookupPrefix(tokens), 32u);
}

// The daemon dies (SIGKILL) or freezes (SIGSTOP) after granting the leases and before the bytes
// move: Load returns an error within the timeouts, and the pages are untouched; once a frozen
// daemon runs again, the connector reconnects.
TEST_F(ConnectorTest, ADaemonThatGoesAwayMidLoadIsAnErrorNotAHang) {
  for (int sig : {SIGSTOP, SIGKILL}) {
    SCOPED_TRACE(sig == SIGSTOP ? "SIGSTOP" : "SIGKILL");
    if (sig == SIGKILL) {  // a fresh daemon: the stopped one was killed
      daemon_.reset();
      daemon_ = std::make_unique<ConnectorDaemon>("ADaemonThatGoesAwayMidLoad_kill");
      ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
    }
    const std::vector<std::uint32_t> tokens = Tokens(16 * 8, 9);
    EngineCache src(layout_, PageKind::kTokenMajor, 8);
    src.Fill(3);
    auto c = Connect(*daemon_);
    ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
    const std::vector<std::uint32_t> ids = {0, 1, 2, 3, 4, 5, 6, 7};
    ASSERT_EQ(SaveAll(*c, tokens, ids)->blocks_committed, 8u);

    EngineCache dst(layout_, PageKind::kTokenMajor, 8);
    dst.Fill(4);
    const std::vector<std::byte> before(dst.bytes().begin(), dst.bytes().end());
    auto loader = Connect(*daemon_);
    ASSERT_TRUE(loader->RegisterPagedCache(dst.cache()).ok());
    Subprocess& proc = daemon_->process();
    // Signal() returns before the daemon has stopped; the read must start after it has, or a
    // daemon still running for a moment serves it.
    loader->TEST_SetBeforeReadHook([&proc, sig] {
      proc.Signal(sig);
      EXPECT_TRUE(sig == SIGSTOP ? proc.WaitUntilStopped(5s) : proc.WaitUntilDead(5s));
    });
    const auto start = std::chrono::steady_clock::now();
    auto loaded = loader->Load(tokens, ids);
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(loaded.ok()) << "loaded " << loaded->blocks << " blocks from a dead daemon ("
                              << loaded->miss_reason << ")";
    EXPECT_TRUE(loaded.status().code() == absl::StatusCode::kUnavailable ||
                loaded.status().code() == absl::StatusCode::kDeadlineExceeded)
        << loaded.status();
    // UCX's op timeout (5 s) plus the lease release RPC (3 s here), with slack for a busy machine.
    EXPECT_LT(took, 15s);
    EXPECT_TRUE(std::equal(before.begin(), before.end(), dst.bytes().begin()));
    // Later calls try to reconnect, and fail within the timeouts too, rather than hang.
    loader->TEST_SetBeforeReadHook(nullptr);
    const auto again = std::chrono::steady_clock::now();
    EXPECT_FALSE(loader->Load(tokens, ids).ok());
    EXPECT_FALSE(loader->LookupPrefix(tokens).ok());
    EXPECT_LT(std::chrono::steady_clock::now() - again, 15s);
    if (sig == SIGSTOP) {
      // The daemon comes back: the connector reconnects and loads again.
      proc.Signal(SIGCONT);
      auto back = loader->Load(tokens, ids);
      ASSERT_TRUE(back.ok()) << back.status();
      EXPECT_EQ(back->blocks, 8u) << back->miss_reason;
      for (std::uint32_t id : ids) EXPECT_EQ(dst.Canonical(id), src.Canonical(id));
    }
  }
}

// A daemon restarted at the same address (it forgets engines and leases): the connector's next
// call finds its engine unknown or its data plane gone, reconnects, and works again.
TEST_F(ConnectorTest, ADaemonRestartedAtTheSameAddressIsUsedAgain) {
  const std::string address = daemon_->address();
  const std::vector<std::uint32_t> tokens = Tokens(32, 13);
  EngineCache src(layout_, PageKind::kTokenMajor, 2);
  src.Fill(13);
  auto c = Connect(*daemon_);
  ASSERT_TRUE(c->RegisterPagedCache(src.cache()).ok());
  const std::vector<std::uint32_t> ids = {0, 1};
  ASSERT_EQ(SaveAll(*c, tokens, ids)->blocks_committed, 2u);
  const std::string engine_before = c->engine().engine_id;

  daemon_->process().Signal(SIGKILL);
  daemon_->process().Wait(5s);
  EXPECT_FALSE(c->LookupPrefix(tokens).ok()) << "nobody at the address";
  auto restarted = std::make_unique<ConnectorDaemon>("ADaemonRestarted_second", address);
  ASSERT_EQ(restarted->address(), address) << restarted->process().output();

  // The first call after the restart may fail (the old connection is found broken by it); within
  // a few calls the connector is back.
  absl::StatusOr<std::size_t> n = absl::UnavailableError("not tried");
  for (int i = 0; i < 3 && !n.ok(); ++i) n = c->LookupPrefix(tokens);
  ASSERT_TRUE(n.ok()) << n.status();
  EXPECT_EQ(*n, 0u) << "a fresh data dir holds nothing";
  EXPECT_NE(c->engine().engine_id, engine_before) << "registered again";
  auto saved = SaveAll(*c, tokens, ids);
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(saved->blocks_committed, 2u);
  EngineCache dst(layout_, PageKind::kHeadMajor, 2);
  ASSERT_TRUE(c->RegisterPagedCache(dst.cache()).ok());
  auto loaded = c->Load(tokens, ids);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->blocks, 2u) << loaded->miss_reason;
  EXPECT_EQ(dst.Canonical(1), src.Canonical(1));
}

}  // namespace
}  // namespace cachesvc::testing
