// The NVMe tier's pipelined write path: NvmeWritePipeline on its own (io_uring and the pread/pwrite
// fallback, group fdatasync and RWF_DSYNC), and NvmeTier::WriteAsync on top of it: nothing is
// readable before it is durable and indexed, every callback runs exactly once with its own
// outcome, and shutdown with writes in flight completes every callback and loses nothing
// acknowledged. No timing assertions: waits only guard against hangs.
#include "tiers/nvme_write_pipeline.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <thread>
#include <vector>

#include "base/mutex.h"
#include "tests/tiers/test_util.h"
#include "tiers/nvme_tier.h"

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

// Waits (without a deadline that could flake: the ctest timeout is the guard) until `done()`.
template <typename F>
void WaitUntil(F done) {
  while (!done()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

// Collects outcomes of async writes: exactly-once checks and a wait for all of them.
class Outcomes {
 public:
  explicit Outcomes(std::size_t n) : calls_(n, 0), status_(n) {}
  NvmeTier::WriteCallback For(std::size_t i) {
    return [this, i](absl::Status s) {
      MutexLock lock(&mu_);
      ++calls_[i];
      status_[i] = std::move(s);
      ++done_;
      changed_.SignalAll();
    };
  }
  void WaitAll() {
    MutexLock lock(&mu_);
    changed_.Wait(&mu_, [this]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return done_ >= calls_.size(); });
  }
  void WaitFor(std::size_t i) {
    MutexLock lock(&mu_);
    changed_.Wait(&mu_, [this, i]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return calls_[i] > 0; });
  }
  std::size_t done() {
    MutexLock lock(&mu_);
    return done_;
  }
  int calls(std::size_t i) {
    MutexLock lock(&mu_);
    return calls_[i];
  }
  [[nodiscard]] absl::Status status(std::size_t i) {
    MutexLock lock(&mu_);
    return status_[i];
  }

 private:
  Mutex mu_;
  CondVar changed_;
  std::vector<int> calls_ ABSL_GUARDED_BY(mu_);
  std::vector<absl::Status> status_ ABSL_GUARDED_BY(mu_);
  std::size_t done_ ABSL_GUARDED_BY(mu_) = 0;
};

// ---- The pipeline on its own --------------------------------------------------------------------

struct PipelineCase {
  const char* name;
  bool fallback;
  bool dsync;
};

class NvmeWritePipelineTest : public ::testing::TestWithParam<PipelineCase> {};

TEST_P(NvmeWritePipelineTest, EveryWriteComesBackOnceDurableWithItsBytesOnDisk) {
  const testing::ScopedDir dir(testing::TestName());
  const auto path = dir.path() / "data";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0644);
  bool direct = true;
  if (fd < 0) {
    direct = false;
    fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  }
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 8 * kMiB), 0);
  constexpr int kWrites = 40;
  Mutex mu;
  std::vector<int> seen(kWrites, 0);
  std::vector<int> results(kWrites, 1);
  std::vector<std::unique_ptr<NvmeWritePipeline::Write>> writes;
  std::vector<std::unique_ptr<AlignedBuffer>> buffers;
  {
    NvmeWritePipeline::Options o;
    o.queue_depth = 4;
    o.direct = direct;
    o.dsync = GetParam().dsync;
    o.force_fallback = GetParam().fallback;
    auto pipeline =
        NvmeWritePipeline::Start(fd, o, [&](std::vector<NvmeWritePipeline::Write*> group) {
          MutexLock lock(&mu);
          for (NvmeWritePipeline::Write* w : group) {
            const auto i = static_cast<std::size_t>(w->file_offset / (128 * kKiB));
            ++seen[i];
            results[i] = w->result;
          }
        });
    ASSERT_TRUE(pipeline.ok()) << pipeline.status();
    EXPECT_EQ((*pipeline)->uses_io_uring(), !GetParam().fallback);
    std::vector<NvmeWritePipeline::Write*> raw;
    for (int i = 0; i < kWrites; ++i) {
      // Lengths that are not 4 KiB multiples send their last page through a bounce page.
      const std::uint64_t bytes = 64 * kKiB + static_cast<std::uint64_t>(i) * 1001;
      buffers.push_back(std::make_unique<AlignedBuffer>(bytes));
      FillPayload(static_cast<std::uint64_t>(i), buffers.back()->span());
      auto w = std::make_unique<NvmeWritePipeline::Write>();
      w->buffer = buffers.back()->data();
      w->bytes = bytes;
      w->file_offset = static_cast<std::uint64_t>(i) * 128 * kKiB;
      raw.push_back(w.get());
      writes.push_back(std::move(w));
    }
    ASSERT_TRUE((*pipeline)->Submit(std::span<NvmeWritePipeline::Write* const>(raw).first(10)));
    ASSERT_TRUE((*pipeline)->Submit(std::span<NvmeWritePipeline::Write* const>(raw).subspan(10)));
    WaitUntil([&] {
      MutexLock lock(&mu);
      return std::count(seen.begin(), seen.end(), 1) == kWrites;
    });
    (*pipeline)->Stop();
    EXPECT_FALSE((*pipeline)->Submit(std::span<NvmeWritePipeline::Write* const>(raw).first(1)));
  }
  for (int i = 0; i < kWrites; ++i) {
    EXPECT_EQ(seen[static_cast<std::size_t>(i)], 1) << i;
    EXPECT_EQ(results[static_cast<std::size_t>(i)], 0) << i;
    // Whole pages into an aligned buffer (the file may be O_DIRECT).
    const std::size_t bytes = buffers[static_cast<std::size_t>(i)]->size();
    const std::size_t pages = (bytes + 4095) / 4096 * 4096;
    AlignedBuffer back(pages);
    ASSERT_EQ(::pread(fd, back.data(), pages, static_cast<off_t>(i * 128 * kKiB)),
              static_cast<ssize_t>(pages));
    EXPECT_TRUE(PayloadMatches(static_cast<std::uint64_t>(i), back.cspan().first(bytes))) << i;
    // The bounce page was zero-padded.
    for (std::size_t b = bytes; b < pages; ++b) ASSERT_EQ(back.data()[b], std::byte{0}) << i;
  }
  ::close(fd);
}

INSTANTIATE_TEST_SUITE_P(Paths, NvmeWritePipelineTest,
                         ::testing::Values(PipelineCase{"ring_fdatasync", false, false},
                                           PipelineCase{"ring_dsync", false, true},
                                           PipelineCase{"fallback_fdatasync", true, false},
                                           PipelineCase{"fallback_dsync", true, true}),
                         [](const ::testing::TestParamInfo<PipelineCase>& param_info) {
                           return param_info.param.name;
                         });

// ---- NvmeTier::WriteAsync
// ------------------------------------------------------------------------

class NvmeAsyncWriteTest : public ::testing::Test {
 protected:
  void SetUp() override {
    scoped_ = std::make_unique<testing::ScopedDir>(testing::TestName());
    options_.name = "nvme-async";
    options_.data_path = scoped_->path() / "slots.dat";
    options_.index_path = scoped_->path() / "index";
    options_.capacity_bytes = 16 * kMiB;
    options_.min_slot_bytes = 16 * kKiB;
    options_.max_slot_bytes = 1 * kMiB;
    options_.queue_depth = 4;
  }

  std::unique_ptr<NvmeTier> Open() {
    auto tier = NvmeTier::Open(options_);
    EXPECT_TRUE(tier.ok()) << tier.status();
    return tier.ok() ? std::move(*tier) : nullptr;
  }

  void ExpectBlock(NvmeTier& tier, SlotId slot, std::uint64_t seed) {
    auto info = tier.Info(slot);
    ASSERT_TRUE(info.ok()) << info.status();
    AlignedBuffer buf(info->stored_bytes);
    auto read = tier.Read(slot, buf.span());
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->meta.key, Key(seed));
    EXPECT_TRUE(PayloadMatches(seed, buf.cspan())) << "seed " << seed;
  }

  std::unique_ptr<testing::ScopedDir> scoped_;
  NvmeTierOptions options_;
};

TEST_F(NvmeAsyncWriteTest, SyncGroupOptionIsValidated) {
  options_.sync_group_writes = 0;
  auto tier = NvmeTier::Open(options_);
  ASSERT_EQ(tier.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(tier.status().message().find("sync_group_writes"), absl::string_view::npos);
}

// A large sync group never delays a writer with nothing queued behind it, and a queue deeper than
// the lanes is grouped without losing or reordering any outcome.
TEST_F(NvmeAsyncWriteTest, LargeSyncGroupsStillCompleteEveryWrite) {
  options_.queue_depth = 1;
  options_.sync_group_writes = 64;
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  constexpr std::size_t kWrites = 20;
  std::vector<std::unique_ptr<AlignedBuffer>> buffers(kWrites);
  std::vector<SlotId> slots(kWrites);
  Outcomes outcomes(kWrites);
  for (std::size_t i = 0; i < kWrites; ++i) {
    buffers[i] = std::make_unique<AlignedBuffer>(20 * kKiB + i);
    FillPayload(500 + i, buffers[i]->span());
    auto slot = tier->Allocate(buffers[i]->size());
    ASSERT_TRUE(slot.ok());
    slots[i] = *slot;
  }
  // One lone write: acknowledged although the group is far from full.
  tier->WriteAsync({slots[0], Meta(500, buffers[0]->size()), buffers[0]->cspan()}, outcomes.For(0));
  outcomes.WaitFor(0);
  ASSERT_TRUE(outcomes.status(0).ok()) << outcomes.status(0);
  for (std::size_t i = 1; i < kWrites; ++i) {
    tier->WriteAsync({slots[i], Meta(500 + i, buffers[i]->size()), buffers[i]->cspan()},
                     outcomes.For(i));
  }
  outcomes.WaitAll();
  for (std::size_t i = 0; i < kWrites; ++i) {
    EXPECT_EQ(outcomes.calls(i), 1);
    ASSERT_TRUE(outcomes.status(i).ok()) << i << ": " << outcomes.status(i);
    ExpectBlock(*tier, slots[i], 500 + i);
  }
}

TEST_F(NvmeAsyncWriteTest, NothingIsReadableBeforeItsSyncAndIndexWrite) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  // A block already there, overwritten below: its entry goes before the new payload lands.
  AlignedBuffer old_payload(50 * kKiB);
  FillPayload(1, old_payload.span());
  auto slot = tier->Allocate(old_payload.size());
  ASSERT_TRUE(slot.ok());
  ASSERT_TRUE(tier->Write(*slot, Meta(1, old_payload.size()), old_payload.cspan()).ok());

  AlignedBuffer fresh(60 * kKiB);
  FillPayload(2, fresh.span());
  auto fresh_slot = tier->Allocate(fresh.size());
  ASSERT_TRUE(fresh_slot.ok());
  AlignedBuffer over(40 * kKiB);
  FillPayload(3, over.span());

  tier->TEST_pipeline()->TEST_HoldSyncs(true);
  Outcomes outcomes(2);
  tier->WriteAsync({*fresh_slot, Meta(2, fresh.size()), fresh.cspan()}, outcomes.For(0));
  tier->WriteAsync({*slot, Meta(3, over.size()), over.cspan()}, outcomes.For(1));
  // Both payloads are written, neither is durable yet.
  WaitUntil([&] { return tier->TEST_pipeline()->TEST_AwaitingSync() == 2; });
  EXPECT_EQ(outcomes.done(), 0u);
  for (std::uint64_t seed : {1, 2, 3}) {
    EXPECT_EQ(tier->Lookup(Key(seed)).status().code(), absl::StatusCode::kNotFound) << seed;
  }
  EXPECT_EQ(tier->Info(*fresh_slot).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(tier->Info(*slot).status().code(), absl::StatusCode::kFailedPrecondition);
  AlignedBuffer out(64 * kKiB);
  EXPECT_FALSE(tier->Read(*slot, out.span()).ok());
  EXPECT_TRUE(tier->Blocks().empty());
  // A slot being written cannot be freed or written again.
  EXPECT_EQ(tier->Free(*fresh_slot).code(), absl::StatusCode::kFailedPrecondition);

  tier->TEST_pipeline()->TEST_HoldSyncs(false);
  outcomes.WaitAll();
  ASSERT_TRUE(outcomes.status(0).ok()) << outcomes.status(0);
  ASSERT_TRUE(outcomes.status(1).ok()) << outcomes.status(1);
  ExpectBlock(*tier, *fresh_slot, 2);
  ExpectBlock(*tier, *slot, 3);
  EXPECT_EQ(tier->Lookup(Key(1)).status().code(), absl::StatusCode::kNotFound);
  tier.reset();
  tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, 2u);
  ExpectBlock(*tier, *fresh_slot, 2);
  ExpectBlock(*tier, *slot, 3);
}

TEST_F(NvmeAsyncWriteTest, ConcurrentCallersShareThePipelineAndEachCallbackRunsOnce) {
  options_.queue_depth = 8;
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  constexpr int kThreads = 4;
  constexpr int kPerThread = 25;
  constexpr std::size_t kTotal = kThreads * kPerThread;
  Outcomes outcomes(kTotal);
  std::vector<std::unique_ptr<AlignedBuffer>> buffers(kTotal);
  std::vector<SlotId> slots(kTotal);
  for (std::size_t i = 0; i < kTotal; ++i) {
    const std::uint64_t bytes = 20 * kKiB + i * 1337;
    buffers[i] = std::make_unique<AlignedBuffer>(bytes);
    FillPayload(100 + i, buffers[i]->span());
    auto slot = tier->Allocate(bytes);
    ASSERT_TRUE(slot.ok()) << slot.status();
    slots[i] = *slot;
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        const auto i = static_cast<std::size_t>(t * kPerThread + k);
        if (k % 5 == 4) {
          // Synchronous writes ride the same pipeline.
          const NvmeTier::WriteOp op{slots[i], Meta(100 + i, buffers[i]->size()),
                                     buffers[i]->cspan()};
          outcomes.For(i)(tier->WriteBatch(std::span<const NvmeTier::WriteOp>(&op, 1))[0]);
        } else {
          tier->WriteAsync({slots[i], Meta(100 + i, buffers[i]->size()), buffers[i]->cspan()},
                           outcomes.For(i));
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  outcomes.WaitAll();
  for (std::size_t i = 0; i < kTotal; ++i) {
    EXPECT_EQ(outcomes.calls(i), 1) << i;
    ASSERT_TRUE(outcomes.status(i).ok()) << i << ": " << outcomes.status(i);
  }
  for (std::size_t i = 0; i < kTotal; ++i) ExpectBlock(*tier, slots[i], 100 + i);
  tier.reset();
  tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, kTotal);
  for (std::size_t i = 0; i < kTotal; ++i) ExpectBlock(*tier, slots[i], 100 + i);
}

TEST_F(NvmeAsyncWriteTest, EachErrorReachesItsOwnCallbackAndNothingElseIsDisturbed) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  AlignedBuffer stored(30 * kKiB);
  FillPayload(1, stored.span());
  auto stored_slot = tier->Allocate(stored.size());
  ASSERT_TRUE(stored_slot.ok());
  ASSERT_TRUE(tier->Write(*stored_slot, Meta(1, stored.size()), stored.cspan()).ok());

  std::vector<std::unique_ptr<AlignedBuffer>> buffers;
  std::vector<SlotId> slots;
  for (int i = 0; i < 6; ++i) {
    buffers.push_back(std::make_unique<AlignedBuffer>(40 * kKiB));
    FillPayload(10 + static_cast<std::uint64_t>(i), buffers.back()->span());
    auto slot = tier->Allocate(40 * kKiB);
    ASSERT_TRUE(slot.ok());
    slots.push_back(*slot);
  }
  auto op = [&](int i, std::uint64_t seed) {
    return NvmeTier::WriteOp{slots[static_cast<std::size_t>(i)], Meta(seed, 40 * kKiB),
                             buffers[static_cast<std::size_t>(i)]->cspan()};
  };
  Outcomes outcomes(8);
  // 0: an I/O error on the payload write (the next write the pipeline takes).
  tier->TEST_pipeline()->TEST_FailWrites(EIO, 1);
  tier->WriteAsync(op(0, 10), outcomes.For(0));
  outcomes.WaitFor(0);
  EXPECT_EQ(outcomes.status(0).code(), absl::StatusCode::kInternal) << outcomes.status(0);
  EXPECT_NE(outcomes.status(0).message().find("payload write"), std::string::npos);
  // 1: a full disk (ENOSPC) is RESOURCE_EXHAUSTED.
  tier->TEST_pipeline()->TEST_FailWrites(ENOSPC, 1);
  tier->WriteAsync(op(1, 11), outcomes.For(1));
  outcomes.WaitFor(1);
  EXPECT_EQ(outcomes.status(1).code(), absl::StatusCode::kResourceExhausted) << outcomes.status(1);
  // 2: the payload was written but its sync failed: not durable, so never indexed or readable.
  tier->TEST_pipeline()->TEST_FailSyncs(EIO, 1);
  tier->WriteAsync(op(2, 12), outcomes.For(2));
  outcomes.WaitFor(2);
  EXPECT_EQ(outcomes.status(2).code(), absl::StatusCode::kInternal) << outcomes.status(2);
  EXPECT_NE(outcomes.status(2).message().find("fdatasync"), std::string::npos);
  // 3: an unaligned buffer (O_DIRECT) is refused inline.
  if (tier->direct_io()) {
    tier->WriteAsync(
        {slots[3], Meta(13, 1000), std::span<const std::byte>(buffers[3]->data() + 1, 1000)},
        outcomes.For(3));
    EXPECT_EQ(outcomes.calls(3), 1);
    EXPECT_EQ(outcomes.status(3).code(), absl::StatusCode::kInvalidArgument);
  } else {
    outcomes.For(3)(absl::InvalidArgumentError("buffered I/O takes any buffer"));
  }
  // 4: a key another slot holds is refused inline.
  tier->WriteAsync(op(4, 1), outcomes.For(4));
  EXPECT_EQ(outcomes.calls(4), 1);
  EXPECT_EQ(outcomes.status(4).code(), absl::StatusCode::kAlreadyExists);
  // 5 and 6: a slot whose write is in flight refuses a second write (inline); the first succeeds.
  tier->TEST_pipeline()->TEST_HoldSyncs(true);
  tier->WriteAsync(op(5, 15), outcomes.For(5));
  tier->WriteAsync(op(5, 16), outcomes.For(6));
  EXPECT_EQ(outcomes.calls(6), 1);
  EXPECT_EQ(outcomes.status(6).code(), absl::StatusCode::kFailedPrecondition);
  tier->TEST_pipeline()->TEST_HoldSyncs(false);
  // 7: the slot whose write failed takes a new one.
  tier->WriteAsync(op(0, 10), outcomes.For(7));
  outcomes.WaitAll();
  EXPECT_TRUE(outcomes.status(5).ok()) << outcomes.status(5);
  EXPECT_TRUE(outcomes.status(7).ok()) << outcomes.status(7);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(outcomes.calls(i), 1) << i;
  for (std::uint64_t seed : {11, 12, 13, 14, 16}) {
    EXPECT_EQ(tier->Lookup(Key(seed)).status().code(), absl::StatusCode::kNotFound) << seed;
  }
  for (int i : {1, 2, 3, 4}) {
    EXPECT_EQ(tier->Info(slots[static_cast<std::size_t>(i)]).status().code(),
              absl::StatusCode::kFailedPrecondition)
        << i;
  }
  ExpectBlock(*tier, *stored_slot, 1);
  ExpectBlock(*tier, slots[0], 10);
  ExpectBlock(*tier, slots[5], 15);
  tier.reset();
  tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().blocks_restored, 3u);
  EXPECT_EQ(tier->recovery().entries_dropped, 0u);
  ExpectBlock(*tier, *stored_slot, 1);
  ExpectBlock(*tier, slots[0], 10);
  ExpectBlock(*tier, slots[5], 15);
}

TEST_F(NvmeAsyncWriteTest, DiskFullMidWriteReachesTheCallbackAsResourceExhausted) {
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  std::vector<SlotId> slots;
  for (int i = 0; i < 6; ++i) {
    auto slot = tier->Allocate(1 * kMiB);
    ASSERT_TRUE(slot.ok());
    slots.push_back(*slot);
  }
  AlignedBuffer buf(1 * kMiB);
  FillPayload(7, buf.span());
  Outcomes outcomes(slots.size());
  {
    FileSizeLimit limit(3 * kMiB);
    for (std::size_t i = 0; i < slots.size(); ++i) {
      tier->WriteAsync({slots[i], Meta(20 + i, buf.size()), buf.cspan()}, outcomes.For(i));
    }
    outcomes.WaitAll();
  }
  for (std::size_t i = 0; i < slots.size(); ++i) {
    EXPECT_EQ(outcomes.calls(i), 1);
    if (slots[i].offset + buf.size() <= 3 * kMiB) {
      EXPECT_TRUE(outcomes.status(i).ok()) << i << ": " << outcomes.status(i);
    } else {
      EXPECT_EQ(outcomes.status(i).code(), absl::StatusCode::kResourceExhausted)
          << i << ": " << outcomes.status(i);
      EXPECT_EQ(tier->Info(slots[i]).status().code(), absl::StatusCode::kFailedPrecondition);
    }
  }
}

TEST_F(NvmeAsyncWriteTest, ShutdownWithWritesInFlightCompletesEveryCallback) {
  options_.queue_depth = 2;
  constexpr std::size_t kWrites = 48;
  std::vector<std::unique_ptr<AlignedBuffer>> buffers(kWrites);
  std::vector<SlotId> slots(kWrites);
  Outcomes outcomes(kWrites);
  {
    auto tier = Open();
    ASSERT_NE(tier, nullptr);
    for (std::size_t i = 0; i < kWrites; ++i) {
      const std::uint64_t bytes = 100 * kKiB + i * 4099;
      buffers[i] = std::make_unique<AlignedBuffer>(bytes);
      FillPayload(300 + i, buffers[i]->span());
      auto slot = tier->Allocate(bytes);
      ASSERT_TRUE(slot.ok()) << slot.status();
      slots[i] = *slot;
    }
    // Syncs held: at least one payload is written and waits for its sync when the tier goes.
    tier->TEST_pipeline()->TEST_HoldSyncs(true);
    for (std::size_t i = 0; i < kWrites; ++i) {
      tier->WriteAsync({slots[i], Meta(300 + i, buffers[i]->size()), buffers[i]->cspan()},
                       outcomes.For(i));
    }
    WaitUntil([&] { return tier->TEST_pipeline()->TEST_AwaitingSync() > 0; });
  }  // destroyed with writes queued, in flight and awaiting their sync
  EXPECT_EQ(outcomes.done(), kWrites);
  std::vector<bool> acknowledged(kWrites);
  for (std::size_t i = 0; i < kWrites; ++i) {
    EXPECT_EQ(outcomes.calls(i), 1) << i;
    const absl::Status s = outcomes.status(i);
    EXPECT_TRUE(s.ok() || s.code() == absl::StatusCode::kCancelled) << i << ": " << s;
    acknowledged[i] = s.ok();
  }
  auto tier = Open();
  ASSERT_NE(tier, nullptr);
  EXPECT_EQ(tier->recovery().entries_dropped, 0u);
  std::size_t expected = 0;
  for (std::size_t i = 0; i < kWrites; ++i) {
    if (acknowledged[i]) {
      ++expected;
      ExpectBlock(*tier, slots[i], 300 + i);
    } else {
      EXPECT_EQ(tier->Lookup(Key(300 + i)).status().code(), absl::StatusCode::kNotFound) << i;
    }
  }
  EXPECT_GT(expected, 0u);
  EXPECT_EQ(tier->recovery().blocks_restored, expected);
}

}  // namespace
}  // namespace cachesvc::tiers
