#include "tiers/nvme_tier.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <csignal>
#include <filesystem>
#include <fstream>
#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

using testing::AlignedBuffer;
using testing::FileSizeLimit;
using testing::FillPayload;
using testing::Key;
using testing::Meta;
using testing::PayloadMatches;
constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

class NvmeTierTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scoped_ = std::make_unique<testing::ScopedDir>(testing::TestName());
    dir_ = scoped_->path();
    options_.name = "nvme-test";
    options_.data_path = dir_ / "slots.dat";
    options_.index_path = dir_ / "index";
    options_.capacity_bytes = 16 * kMiB;
    options_.min_slot_bytes = 16 * kKiB;
    options_.max_slot_bytes = 1 * kMiB;
    options_.queue_depth = 8;
  }

  std::unique_ptr<NvmeTier> Open() {
    auto tier = NvmeTier::Open(options_);
    EXPECT_TRUE(tier.ok()) << tier.status();
    return tier.ok() ? std::move(*tier) : nullptr;
  }

  // Writes a block of `bytes` whose content and key derive from `seed`.
  SlotId Put(NvmeTier& tier, std::uint64_t seed, std::uint64_t bytes) {
    AlignedBuffer buf(bytes);
    FillPayload(seed, buf.span());
    auto slot = tier.Allocate(bytes);
    EXPECT_TRUE(slot.ok()) << slot.status();
    const absl::Status s = tier.Write(*slot, Meta(seed, bytes), buf.cspan());
    EXPECT_TRUE(s.ok()) << s;
    return *slot;
  }

  // Reads the block in `slot` and checks it is seed's payload.
  void ExpectBlock(NvmeTier& tier, SlotId slot, std::uint64_t seed) {
    auto info = tier.Info(slot);
    ASSERT_TRUE(info.ok()) << info.status();
    AlignedBuffer buf(info->stored_bytes);
    auto read = tier.Read(slot, buf.span());
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->meta.key, Key(seed));
    EXPECT_TRUE(PayloadMatches(seed, buf.cspan())) << "seed " << seed;
  }

  void FlipByteOnDisk(std::uint64_t offset) {
    const int fd = ::open(options_.data_path.c_str(), O_RDWR);
    ASSERT_GE(fd, 0);
    unsigned char b = 0;
    ASSERT_EQ(::pread(fd, &b, 1, static_cast<off_t>(offset)), 1);
    b ^= 0x40;
    ASSERT_EQ(::pwrite(fd, &b, 1, static_cast<off_t>(offset)), 1);
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
  }

  std::unique_ptr<testing::ScopedDir> scoped_;
  std::filesystem::path dir_;
  NvmeTierOptions options_;
};

TEST_F(NvmeTierTest, OptionsValidationNamesTheField) {
  NvmeTierOptions o = options_;
  o.data_path.clear();
  EXPECT_NE(o.Validate().message().find("data_path"), absl::string_view::npos);
  o = options_;
  o.index_path.clear();
  EXPECT_NE(o.Validate().message().find("index_path"), absl::string_view::npos);
  o = options_;
  o.queue_depth = 0;
  EXPECT_NE(o.Validate().message().find("queue_depth"), absl::string_view::npos);
  o = options_;
  o.rings = 0;
  EXPECT_NE(o.Validate().message().find("rings"), absl::string_view::npos);
  o = options_;
  o.capacity_bytes = 512 * kKiB;
  EXPECT_NE(o.Validate().message().find("capacity_bytes"), absl::string_view::npos);
  o = options_;
  o.min_slot_bytes = 1000;
  EXPECT_NE(o.Validate().message().find("min_slot_bytes"), absl::string_view::npos);
}

TEST_F(NvmeTierTest, WritesReadsAndRestartsWarm) {
  const std::uint64_t sizes[] = {1, 4096, 5000, 16 * kKiB, 100'003, 256 * kKiB, 1 * kMiB};
  std::vector<std::pair<SlotId, std::uint64_t>> stored;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    EXPECT_FALSE(tier->recovery().started_cold);
    EXPECT_TRUE(tier->direct_io());  // the test folder is on a disk file system
    std::uint64_t seed = 100;
    for (std::uint64_t n : sizes) stored.emplace_back(Put(*tier, ++seed, n), seed);
    for (auto& [slot, seed_of] : stored) ExpectBlock(*tier, slot, seed_of);
    ASSERT_TRUE(tier->Free(stored.back().first).ok());
    stored.pop_back();
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_FALSE(tier->recovery().started_cold);
  EXPECT_EQ(tier->recovery().blocks_restored, stored.size());
  EXPECT_EQ(tier->recovery().entries_dropped, 0u);
  for (auto& [slot, seed] : stored) {
    auto found = tier->Lookup(Key(seed));
    ASSERT_TRUE(found.ok());
    EXPECT_EQ(*found, slot);
    ExpectBlock(*tier, slot, seed);
  }
  EXPECT_EQ(tier->Lookup(Key(100 + std::size(sizes))).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(tier->Blocks().size(), stored.size());
  // The restored slots are taken; new writes go elsewhere and do not disturb them.
  const SlotId fresh = Put(*tier, 999, 1 * kMiB);
  for (auto& [slot, seed] : stored) EXPECT_NE(slot.offset, fresh.offset);
  for (auto& [slot, seed] : stored) ExpectBlock(*tier, slot, seed);
}

TEST_F(NvmeTierTest, DsyncWritesRestartWarmToo) {
  options_.dsync_writes = true;
  std::vector<std::pair<SlotId, std::uint64_t>> stored;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    for (std::uint64_t seed : {1, 2, 3}) stored.emplace_back(Put(*tier, seed, 70'000 * seed), seed);
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, 3u);
  for (auto& [slot, seed] : stored) ExpectBlock(*tier, slot, seed);
}

TEST_F(NvmeTierTest, FlippedPayloadByteIsDataLossAndTheBlockIsDropped) {
  std::vector<SlotId> slots;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    for (std::uint64_t i = 0; i < 5; ++i) slots.push_back(Put(*tier, i, 200 * kKiB + i));
    FlipByteOnDisk(slots[2].offset + 150'000);
    AlignedBuffer buf(256 * kKiB);
    auto read = tier->Read(slots[2], buf.span());
    ASSERT_EQ(read.status().code(), absl::StatusCode::kDataLoss) << read.status();
    EXPECT_NE(read.status().message().find(BlockIdHex(Key(2))), absl::string_view::npos);
    EXPECT_EQ(tier->Stats().checksum_failures, 1u);
    EXPECT_EQ(tier->Lookup(Key(2)).status().code(), absl::StatusCode::kNotFound);
    EXPECT_FALSE(tier->Read(slots[2], buf.span()).ok());  // never served afterwards
    for (std::uint64_t i : {0, 1, 3, 4}) ExpectBlock(*tier, slots[i], i);
    EXPECT_EQ(tier->Stats().blocks, 4u);
  }
  // The drop is persistent.
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, 4u);
  EXPECT_EQ(tier->Lookup(Key(2)).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(NvmeTierTest, CorruptionFoundAfterRestartIsAlsoDataLoss) {
  SlotId slot;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    slot = Put(*tier, 7, 64 * kKiB);
    Put(*tier, 8, 64 * kKiB);
  }
  FlipByteOnDisk(slot.offset + 3);
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  AlignedBuffer buf(64 * kKiB);
  EXPECT_EQ(tier->Read(slot, buf.span()).status().code(), absl::StatusCode::kDataLoss);
  ExpectBlock(*tier, *tier->Lookup(Key(8)), 8);
}

TEST_F(NvmeTierTest, CorruptIndexStartsColdAndReclaimsTheSpace) {
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    for (std::uint64_t i = 0; i < 4; ++i) Put(*tier, i, 1 * kMiB);
  }
  for (const auto& entry : std::filesystem::directory_iterator(options_.index_path)) {
    if (entry.path().filename().string().starts_with("MANIFEST")) {
      std::ofstream(entry.path(), std::ios::trunc) << "this is not a manifest";
    }
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_TRUE(tier->recovery().started_cold);
  EXPECT_NE(tier->recovery().cold_reason.find("cannot be opened"), std::string::npos)
      << tier->recovery().cold_reason;
  EXPECT_TRUE(std::filesystem::exists(dir_ / "index.corrupt"));
  EXPECT_EQ(tier->Stats().blocks, 0u);
  EXPECT_EQ(tier->Stats().free_bytes, 16 * kMiB);
  EXPECT_EQ(tier->Lookup(Key(0)).status().code(), absl::StatusCode::kNotFound);
  const SlotId slot = Put(*tier, 50, 1 * kMiB);
  ExpectBlock(*tier, slot, 50);
}

TEST_F(NvmeTierTest, MissingIndexStartsCold) {
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    Put(*tier, 1, 1 * kMiB);
  }
  std::filesystem::remove_all(options_.index_path);
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_TRUE(tier->recovery().started_cold);
  EXPECT_NE(tier->recovery().cold_reason.find("no index"), std::string::npos);
  EXPECT_EQ(tier->Stats().blocks, 0u);
}

TEST_F(NvmeTierTest, ChangedGeometryStartsCold) {
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    Put(*tier, 1, 1 * kMiB);
  }
  options_.max_slot_bytes = 2 * kMiB;
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_TRUE(tier->recovery().started_cold);
  EXPECT_NE(tier->recovery().cold_reason.find("another data file layout"), std::string::npos);
  EXPECT_EQ(tier->Stats().blocks, 0u);
}

TEST_F(NvmeTierTest, EntriesTheIndexCannotVouchForAreDropped) {
  SlotId good;
  SlotId stale_target;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    good = Put(*tier, 1, 64 * kKiB);
    stale_target = Put(*tier, 2, 64 * kKiB);
  }
  {
    auto index =
        NvmeIndex::Open(options_.index_path, NvmeGeometry{16 * kMiB, 16 * kKiB, 1 * kMiB}, false);
    ASSERT_TRUE(index.ok()) << index.status();
    ASSERT_TRUE((*index)->TEST_PutRaw(NvmeIndex::KeyFor(Key(10)), "garbage").ok());
    IndexEntry outside{SlotId{64 * kMiB, 64 * kKiB}, BlockInfo{Meta(11, 10), 10, 1, 1}};
    IndexEntry stale{stale_target, BlockInfo{Meta(12, 10), 10, 1, 0}};  // older generation
    IndexEntry misfit{SlotId{good.offset, 64 * kKiB}, BlockInfo{Meta(13, 100), 100'000, 1, 0}};
    const IndexEntry planted[] = {outside, stale, misfit};
    ASSERT_TRUE((*index)->Put(planted).ok());
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_FALSE(tier->recovery().started_cold);
  EXPECT_EQ(tier->recovery().blocks_restored, 2u);
  EXPECT_EQ(tier->recovery().entries_dropped, 4u);
  ExpectBlock(*tier, good, 1);
  ExpectBlock(*tier, stale_target, 2);
  for (std::uint64_t k : {10, 11, 12, 13}) {
    EXPECT_EQ(tier->Lookup(Key(k)).status().code(), absl::StatusCode::kNotFound) << k;
  }
}

TEST_F(NvmeTierTest, BadInputIsRefusedAndLosesNothing) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  const SlotId a = Put(*tier, 1, 64 * kKiB);
  // The same key cannot live in two slots.
  auto b = tier->Allocate(64 * kKiB);
  ASSERT_TRUE(b.ok());
  AlignedBuffer buf(64 * kKiB);
  FillPayload(1, buf.span());
  const absl::Status dup = tier->Write(*b, Meta(1, buf.size()), buf.cspan());
  EXPECT_EQ(dup.code(), absl::StatusCode::kAlreadyExists) << dup;
  // O_DIRECT needs aligned buffers; the error names the rule.
  const absl::Status unaligned =
      tier->Write(*b, Meta(2, 100), std::span<const std::byte>(buf.data() + 1, 100));
  EXPECT_EQ(unaligned.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(unaligned.message().find("aligned"), absl::string_view::npos);
  // Too long for the slot.
  AlignedBuffer big(64 * kKiB + 1);
  EXPECT_EQ(tier->Write(*b, Meta(3, big.size()), big.cspan()).code(),
            absl::StatusCode::kInvalidArgument);
  // Unknown slot; buffer too small; no memory access.
  EXPECT_EQ(tier->Read(SlotId{15 * kMiB, 64 * kKiB}, buf.span()).status().code(),
            absl::StatusCode::kInvalidArgument);
  AlignedBuffer small(4096);
  EXPECT_EQ(tier->Read(a, small.span()).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(tier->Memory(a).status().code(), absl::StatusCode::kUnimplemented);
  EXPECT_EQ(tier->Allocate(2 * kMiB).status().code(), absl::StatusCode::kInvalidArgument);
  ExpectBlock(*tier, a, 1);
}

TEST_F(NvmeTierTest, DataPathThatIsAFolderOrIndexThatCannotBeCreatedIsAnError) {
  NvmeTierOptions o = options_;
  o.data_path = dir_;
  auto tier = NvmeTier::Open(o);
  EXPECT_EQ(tier.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tier.status().message().find("is a folder"), absl::string_view::npos);
  std::ofstream(dir_ / "plain") << "x";
  o = options_;
  o.index_path = dir_ / "plain" / "index";
  tier = NvmeTier::Open(o);
  EXPECT_FALSE(tier.ok());
  EXPECT_NE(tier.status().message().find("index"), absl::string_view::npos) << tier.status();
}

TEST_F(NvmeTierTest, DiskFullMidWriteIsResourceExhaustedAndLosesNothing) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  std::vector<SlotId> before;
  for (std::uint64_t i = 0; i < 3; ++i) before.push_back(Put(*tier, i, 1 * kMiB));
  SlotId failed_slot;
  absl::Status failure;
  {
    FileSizeLimit limit(4 * kMiB);
    AlignedBuffer buf(1 * kMiB);
    for (std::uint64_t i = 10; i < 20 && failure.ok(); ++i) {
      FillPayload(i, buf.span());
      auto slot = tier->Allocate(buf.size());
      ASSERT_TRUE(slot.ok());
      failure = tier->Write(*slot, Meta(i, buf.size()), buf.cspan());
      failed_slot = *slot;
    }
  }
  ASSERT_EQ(failure.code(), absl::StatusCode::kResourceExhausted) << failure;
  EXPECT_GE(failed_slot.offset, 4 * kMiB);
  EXPECT_EQ(tier->Info(failed_slot).status().code(), absl::StatusCode::kFailedPrecondition);
  for (std::uint64_t i = 0; i < 3; ++i) ExpectBlock(*tier, before[i], i);
  // With room again, the same slot takes a block.
  AlignedBuffer buf(1 * kMiB);
  FillPayload(42, buf.span());
  ASSERT_TRUE(tier->Write(failed_slot, Meta(42, buf.size()), buf.cspan()).ok());
  ExpectBlock(*tier, failed_slot, 42);
}

TEST_F(NvmeTierTest, DataFileThatCannotGrowIsResourceExhausted) {
  options_.capacity_bytes = 64 * kMiB;
  FileSizeLimit limit(8 * kMiB);
  auto tier = NvmeTier::Open(options_);
  ASSERT_EQ(tier.status().code(), absl::StatusCode::kResourceExhausted) << tier.status();
  EXPECT_NE(tier.status().message().find("cannot preallocate"), absl::string_view::npos);
}

TEST_F(NvmeTierTest, BatchesLargerThanTheQueueDepth) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  constexpr int kBlocks = 40;
  std::vector<std::unique_ptr<AlignedBuffer>> bufs;
  std::vector<NvmeTier::WriteOp> writes;
  for (int i = 0; i < kBlocks; ++i) {
    const std::uint64_t bytes = 100 * kKiB + static_cast<std::uint64_t>(i) * 777;
    bufs.push_back(std::make_unique<AlignedBuffer>(bytes));
    FillPayload(static_cast<std::uint64_t>(i), bufs.back()->span());
    auto slot = tier->Allocate(bytes);
    ASSERT_TRUE(slot.ok());
    writes.push_back({*slot, Meta(static_cast<std::uint64_t>(i), bytes), bufs.back()->cspan()});
  }
  for (const absl::Status& s : tier->WriteBatch(writes)) ASSERT_TRUE(s.ok()) << s;
  std::vector<std::unique_ptr<AlignedBuffer>> outs;
  std::vector<NvmeTier::ReadOp> reads;
  for (const auto& w : writes) {
    outs.push_back(std::make_unique<AlignedBuffer>(160 * kKiB));
    reads.push_back({w.slot, outs.back()->span()});
  }
  auto results = tier->ReadBatch(reads);
  for (int i = 0; i < kBlocks; ++i) {
    ASSERT_TRUE(results[static_cast<std::size_t>(i)].ok())
        << results[static_cast<std::size_t>(i)].status();
    EXPECT_TRUE(PayloadMatches(
        static_cast<std::uint64_t>(i),
        std::span<const std::byte>(outs[static_cast<std::size_t>(i)]->data(),
                                   results[static_cast<std::size_t>(i)]->stored_bytes)));
  }
}

// Where O_DIRECT is refused (tmpfs before Linux 6.6) the tier falls back to buffered I/O on its
// own; where tmpfs accepts it, the same buffered path is taken by asking for it (direct_io=false).
TEST_F(NvmeTierTest, BufferedIoWhereODirectIsRefusedOrNotWanted) {
  struct statfs fs {};
  if (::statfs("/dev/shm", &fs) != 0 || fs.f_type != 0x01021994 /* TMPFS_MAGIC */) {
    GTEST_SKIP() << "no tmpfs at /dev/shm";
  }
  const auto shm =
      std::filesystem::path("/dev/shm") / ("cachesvc_tiers_test_" + std::to_string(::getpid()));
  std::filesystem::remove_all(shm);
  std::filesystem::create_directories(shm);
  options_.data_path = shm / "slots.dat";
  const int probe = ::open((shm / "probe").c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644);
  const bool tmpfs_refuses_direct = probe < 0 && errno == EINVAL;
  if (probe >= 0) ::close(probe);
  if (!tmpfs_refuses_direct) options_.direct_io = false;
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    EXPECT_FALSE(tier->direct_io());
    // Buffered I/O takes unaligned buffers.
    std::vector<std::byte> unaligned(70'001 + 1);
    FillPayload(5, std::span<std::byte>(unaligned.data() + 1, 70'001));
    auto slot = tier->Allocate(70'001);
    ASSERT_TRUE(slot.ok());
    const absl::Status s = tier->Write(*slot, Meta(5, 70'001),
                                       std::span<const std::byte>(unaligned.data() + 1, 70'001));
    ASSERT_TRUE(s.ok()) << s;
    ExpectBlock(*tier, *slot, 5);
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, 1u);
  tier.reset();
  std::filesystem::remove_all(shm);
}

}  // namespace
}  // namespace cachesvc::tiers
