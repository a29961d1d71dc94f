#include "tiers/nvme_index.h"

#include <gtest/gtest.h>

#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

using testing::Key;

TEST(NvmeIndexTest, EntryEncodingRoundTrips) {
  IndexEntry e{SlotId{123 << 14, 1 << 20},
               BlockInfo{BlockMeta{Key(5), 0x0102030405060708ull, kernels::CodecId::kTq3, 999'999},
                         300'001, 0xdeadbeefcafef00dull, 77}};
  const std::string value = NvmeIndex::EncodeEntry(e);
  auto d = NvmeIndex::DecodeEntry(Key(5), value);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->slot, e.slot);
  EXPECT_EQ(d->info.meta.key, Key(5));
  EXPECT_EQ(d->info.meta.layout_fingerprint, e.info.meta.layout_fingerprint);
  EXPECT_EQ(d->info.meta.codec, kernels::CodecId::kTq3);
  EXPECT_EQ(d->info.meta.raw_bytes, 999'999u);
  EXPECT_EQ(d->info.stored_bytes, 300'001u);
  EXPECT_EQ(d->info.checksum, 0xdeadbeefcafef00dull);
  EXPECT_EQ(d->info.generation, 77u);
}

TEST(NvmeIndexTest, MalformedValuesAreDataLoss) {
  EXPECT_EQ(NvmeIndex::DecodeEntry(Key(1), "short").status().code(), absl::StatusCode::kDataLoss);
  IndexEntry e{SlotId{0, 1 << 14}, BlockInfo{BlockMeta{Key(1)}, 10, 1, 1}};
  std::string value = NvmeIndex::EncodeEntry(e);
  value[0] = 9;  // unknown version
  EXPECT_EQ(NvmeIndex::DecodeEntry(Key(1), value).status().code(), absl::StatusCode::kDataLoss);
  value = NvmeIndex::EncodeEntry(e);
  value[33] = 2;  // codec id 2 does not exist
  const auto bad = NvmeIndex::DecodeEntry(Key(1), value);
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_NE(bad.status().message().find("codec"), absl::string_view::npos);
}

TEST(NvmeIndexTest, PutDeleteAndScanPersist) {
  const testing::ScopedDir scoped("nvme_index");
  const auto& dir = scoped.path();
  const NvmeGeometry g{1 << 24, 1 << 14, 1 << 20};
  {
    auto index = NvmeIndex::Open(dir / "idx", g, true);
    ASSERT_TRUE(index.ok()) << index.status();
    EXPECT_TRUE((*index)->created());
    EXPECT_TRUE((*index)->cold_reason().empty());
    std::vector<IndexEntry> entries;
    for (std::uint64_t i = 0; i < 10; ++i) {
      entries.push_back(IndexEntry{SlotId{i << 14, 1 << 14},
                                   BlockInfo{BlockMeta{Key(i)}, 100 + i, i * 3, i + 1}});
    }
    ASSERT_TRUE((*index)->Put(entries).ok());
    const BlockId gone[] = {Key(3), Key(4)};
    ASSERT_TRUE((*index)->Delete(gone).ok());
  }
  auto index = NvmeIndex::Open(dir / "idx", g, true);
  ASSERT_TRUE(index.ok());
  EXPECT_FALSE((*index)->created());
  std::size_t n = 0;
  ASSERT_TRUE((*index)
                  ->ForEach([&](const BlockId& key, const absl::StatusOr<IndexEntry>& e) {
                    ASSERT_TRUE(e.ok());
                    EXPECT_NE(key, Key(3));
                    EXPECT_NE(key, Key(4));
                    EXPECT_EQ(e->info.stored_bytes, 100 + e->slot.offset / (1 << 14));
                    ++n;
                  })
                  .ok());
  EXPECT_EQ(n, 8u);
}

}  // namespace
}  // namespace cachesvc::tiers
