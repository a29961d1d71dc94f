#include "tiers/io_ring.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <vector>

#include "tests/tiers/test_util.h"

namespace cachesvc::tiers {
namespace {

using testing::AlignedBuffer;
using testing::FillPayload;
using testing::PayloadMatches;

class IoRingTest : public ::testing::TestWithParam<bool> {  // param: synchronous fallback
 protected:
  void SetUp() override {
    dir_ = std::make_unique<testing::ScopedDir>(testing::TestName());
    path_ = (dir_->path() / "file").string();
    fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_DIRECT, 0644);
    ASSERT_GE(fd_, 0) << "O_DIRECT refused in the test temp folder";
    ASSERT_EQ(::ftruncate(fd_, 8 << 20), 0);
    auto ring =
        GetParam() ? IoRing::TEST_CreateSynchronous(fd_, true, 4) : IoRing::Create(fd_, true, 4);
    ASSERT_TRUE(ring.ok());
    ring_ = std::move(*ring);
    EXPECT_EQ(ring_->uses_io_uring(), !GetParam());
  }
  void TearDown() override {
    ring_.reset();
    if (fd_ >= 0) ::close(fd_);
  }

  std::unique_ptr<testing::ScopedDir> dir_;
  std::string path_;
  int fd_ = -1;
  std::unique_ptr<IoRing> ring_;
};

TEST_P(IoRingTest, OddLengthsGoThroughBouncePagesAndRoundTrip) {
  // More ops than the queue depth (4), most with a partial last page.
  const std::uint64_t sizes[] = {1, 4095, 4096, 4097, 10'000, 65'536, 70'001, 131'071, 5, 8192};
  std::vector<std::unique_ptr<AlignedBuffer>> in, out;
  std::vector<IoRing::Op> writes, reads;
  std::uint64_t offset = 0;
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    in.push_back(std::make_unique<AlignedBuffer>(sizes[i]));
    out.push_back(std::make_unique<AlignedBuffer>(sizes[i]));
    FillPayload(i, in.back()->span());
    writes.push_back({true, in.back()->data(), sizes[i], offset, i % 2 == 0});  // some RWF_DSYNC
    reads.push_back({false, out.back()->data(), sizes[i], offset});
    offset += 256 << 10;
  }
  std::vector<int> results(writes.size(), -1);
  ring_->Run(writes, results);
  for (int r : results) ASSERT_EQ(r, 0);
  ring_->Run(reads, results);
  for (int r : results) ASSERT_EQ(r, 0);
  for (std::size_t i = 0; i < std::size(sizes); ++i) {
    EXPECT_TRUE(PayloadMatches(i, out[i]->cspan())) << sizes[i];
  }
  // The padding after a partial page is zero on disk, and a read never writes past the
  // caller's length.
  AlignedBuffer page(4096);
  ASSERT_EQ(::pread(fd_, page.data(), 4096, 256 << 10), 4096);  // op 1: 4095 bytes
  EXPECT_EQ(page.data()[4095], std::byte{0});
  std::vector<std::byte> guard(8192, std::byte{0xee});
  AlignedBuffer two(8192);
  std::memcpy(two.data(), guard.data(), guard.size());
  IoRing::Op one{false, two.data(), 5, 8 * (256 << 10)};  // op 8: 5 bytes
  int r = -1;
  ring_->Run(std::span<const IoRing::Op>(&one, 1), std::span<int>(&r, 1));
  ASSERT_EQ(r, 0);
  EXPECT_EQ(two.data()[5], std::byte{0xee});
}

TEST_P(IoRingTest, ErrorsComeBackPerOp) {
  AlignedBuffer buf(4096);
  std::vector<IoRing::Op> ops = {
      {false, buf.data(), 4096, 0},
      {false, buf.data(), 4096, 64ull << 20},  // past the end of the file: 0 bytes
  };
  std::vector<int> results(2, 1);
  ring_->Run(ops, results);
  EXPECT_EQ(results[0], 0);
  EXPECT_EQ(results[1], -EIO);
}

INSTANTIATE_TEST_SUITE_P(Paths, IoRingTest, ::testing::Values(false, true),
                         [](const auto& p) { return p.param ? "pread" : "io_uring"; });

}  // namespace
}  // namespace cachesvc::tiers
