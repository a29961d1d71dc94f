#include "tiers/mover.h"

#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <latch>
#include <thread>
#include <vector>

#include "tests/tiers/test_util.h"
#include "tiers/host_tier.h"
#include "tiers/kv_codec_transform.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

using std::chrono::milliseconds;
using testing::FillPayload;
using testing::Key;
using testing::Meta;
using testing::PayloadMatches;
constexpr std::uint64_t kKiB = 1024;
constexpr std::uint64_t kMiB = 1024 * kKiB;

// A toy "codec" that halves the block: keeps even bytes, and on decode puts each byte back twice.
// Lossy like TQ3 would be, and its shape (encoded size != raw size) exercises the mover's sizes.
FunctionTransform HalvingCodec() {
  return FunctionTransform(
      kernels::CodecId::kTq3, [](std::uint64_t n) { return (n + 1) / 2; },
      [](std::span<const std::byte> raw,
         std::span<std::byte> out) -> absl::StatusOr<std::uint64_t> {
        const std::size_t n = (raw.size() + 1) / 2;
        if (out.size() < n) return absl::InvalidArgumentError("short output");
        for (std::size_t i = 0; i < n; ++i) out[i] = raw[2 * i];
        return n;
      },
      [](std::span<const std::byte> enc, std::span<std::byte> raw) -> absl::Status {
        if (enc.size() != (raw.size() + 1) / 2) return absl::DataLossError("size mismatch");
        for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = enc[i / 2];
        return absl::OkStatus();
      });
}

MoveRequest R(MoveKind kind, Tier* source, SlotId slot, Tier* destination = nullptr,
              const BlockTransform* transform = nullptr,
              TransformDirection direction = TransformDirection::kNone) {
  MoveRequest r;
  r.kind = kind;
  r.source = source;
  r.source_slot = slot;
  r.destination = destination;
  r.transform = transform;
  r.direction = direction;
  return r;
}

class MoverTest : public ::testing::Test {
 protected:
  void SetUp() override {
    HostTierOptions h;
    h.name = "host";
    h.capacity_bytes = 8 * kMiB;
    h.max_slot_bytes = 1 * kMiB;
    h.slots.allocation_ttl = milliseconds(200);
    host_ = std::move(*HostTier::Create(h, &env_));
    dir_ = std::make_unique<testing::ScopedDir>(testing::TestName());
    const auto& dir = dir_->path();
    NvmeTierOptions n;
    n.name = "nvme";
    n.data_path = dir / "slots.dat";
    n.index_path = dir / "index";
    n.capacity_bytes = 16 * kMiB;
    n.max_slot_bytes = 1 * kMiB;
    n.queue_depth = 4;
    auto nvme = NvmeTier::Open(n, &env_);
    ASSERT_TRUE(nvme.ok()) << nvme.status();
    nvme_ = std::move(*nvme);
  }

  std::unique_ptr<Mover> MakeMover(MoverOptions o = {}) {
    o.staging_bytes = 1 * kMiB;
    auto m = Mover::Create(o);
    EXPECT_TRUE(m.ok()) << m.status();
    return std::move(*m);
  }

  SlotId PutHost(std::uint64_t seed, std::uint64_t bytes) {
    std::vector<std::byte> p(bytes);
    FillPayload(seed, p);
    auto slot = host_->Allocate(bytes);
    EXPECT_TRUE(slot.ok());
    EXPECT_TRUE(host_->Write(*slot, Meta(seed, bytes), p).ok());
    return *slot;
  }

  std::unique_ptr<testing::ScopedDir> dir_;
  ManualEnv env_;
  std::unique_ptr<HostTier> host_;
  std::unique_ptr<NvmeTier> nvme_;
};

TEST_F(MoverTest, OptionsValidation) {
  MoverOptions o;
  o.threads = 0;
  EXPECT_NE(o.Validate().message().find("threads"), absl::string_view::npos);
  o = MoverOptions{};
  o.staging_bytes = 1000;
  EXPECT_NE(o.Validate().message().find("staging_bytes"), absl::string_view::npos);
  o = MoverOptions{};
  o.queue_capacity = 0;
  EXPECT_NE(o.Validate().message().find("queue_capacity"), absl::string_view::npos);
  o = MoverOptions{};
  o.sweep_tiers = {nullptr};
  EXPECT_NE(o.Validate().message().find("sweep_tiers[0]"), absl::string_view::npos);
}

TEST_F(MoverTest, DemoteToNvmeThenPromoteBackRaw) {
  auto mover = MakeMover();
  const SlotId src = PutHost(1, 300'001);
  auto job = mover->Submit(R(MoveKind::kMove, host_.get(), src, nvme_.get()));
  ASSERT_TRUE(job.ok());
  const MoveResult down = (*job)->Wait();
  ASSERT_TRUE(down.status.ok()) << down.status;
  EXPECT_EQ((*job)->state(), JobState::kDone);
  EXPECT_EQ(down.destination.meta.key, Key(1));
  EXPECT_NE(down.destination.checksum, 0u);  // the NVMe tier checksummed it
  EXPECT_FALSE(host_->Info(src).ok());       // moved: the host copy is gone
  EXPECT_TRUE(nvme_->Lookup(Key(1)).ok());

  auto up = mover->Submit(R(MoveKind::kCopy, nvme_.get(), down.destination_slot, host_.get()));
  ASSERT_TRUE(up.ok());
  const MoveResult back = (*up)->Wait();
  ASSERT_TRUE(back.status.ok()) << back.status;
  std::vector<std::byte> out(300'001);
  ASSERT_TRUE(host_->Read(back.destination_slot, out).ok());
  EXPECT_TRUE(PayloadMatches(1, out));
  EXPECT_TRUE(nvme_->Info(down.destination_slot).ok());  // copied: NVMe keeps it
}

TEST_F(MoverTest, EncodesOnTheWayDownAndDecodesOnTheWayUp) {
  auto mover = MakeMover();
  const FunctionTransform codec = HalvingCodec();
  std::vector<std::byte> raw(200'000);
  for (std::size_t i = 0; i < raw.size(); ++i) raw[i] = static_cast<std::byte>((i / 2) & 0xff);
  auto src = host_->Allocate(raw.size());
  ASSERT_TRUE(src.ok());
  ASSERT_TRUE(host_->Write(*src, Meta(2, raw.size()), raw).ok());
  MoveRequest down =
      R(MoveKind::kCopy, host_.get(), *src, nvme_.get(), &codec, TransformDirection::kEncode);
  const MoveResult enc = (*mover->Submit(down))->Wait();
  ASSERT_TRUE(enc.status.ok()) << enc.status;
  EXPECT_EQ(enc.destination.meta.codec, kernels::CodecId::kTq3);
  EXPECT_EQ(enc.destination.stored_bytes, 100'000u);
  EXPECT_EQ(enc.destination.meta.raw_bytes, 200'000u);
  // Encoding an encoded block is refused.
  MoveRequest twice = R(MoveKind::kCopy, nvme_.get(), enc.destination_slot, host_.get(), &codec,
                        TransformDirection::kEncode);
  EXPECT_EQ((*mover->Submit(twice))->Wait().status.code(), absl::StatusCode::kFailedPrecondition);
  // Decoding with a transform for another codec is refused.
  RawTransform raw_codec;
  MoveRequest wrong = R(MoveKind::kCopy, nvme_.get(), enc.destination_slot, host_.get(), &raw_codec,
                        TransformDirection::kDecode);
  EXPECT_EQ((*mover->Submit(wrong))->Wait().status.code(), absl::StatusCode::kFailedPrecondition);
  MoveRequest up = R(MoveKind::kCopy, nvme_.get(), enc.destination_slot, host_.get(), &codec,
                     TransformDirection::kDecode);
  const MoveResult dec = (*mover->Submit(up))->Wait();
  ASSERT_TRUE(dec.status.ok()) << dec.status;
  EXPECT_EQ(dec.destination.meta.codec, kernels::CodecId::kRaw);
  std::vector<std::byte> out(200'000);
  ASSERT_TRUE(host_->Read(dec.destination_slot, out).ok());
  EXPECT_EQ(out, raw);
}

TEST_F(MoverTest, Tq3DemotionAndPromotionWithTheRealCodec) {
  auto mover = MakeMover();
  auto tq3 = KvCodecTransform::Create(kernels::CodecId::kTq3, kernels::ValueType::kFp16, 128);
  ASSERT_TRUE(tq3.ok()) << tq3.status();
  // 512 fp16 vectors of head_dim 128 with values of magnitude 0.25..4 and random signs.
  std::vector<std::byte> raw(512 * 128 * 2);
  std::uint64_t x = 12345;
  for (std::size_t i = 0; i < raw.size(); i += 2) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    const auto h = static_cast<std::uint16_t>(((x & 1) << 15) | ((13 + (x >> 1) % 4) << 10) |
                                              ((x >> 8) & 0x3ff));
    std::memcpy(raw.data() + i, &h, 2);
  }
  auto src = host_->Allocate(raw.size());
  ASSERT_TRUE(src.ok());
  ASSERT_TRUE(host_->Write(*src, Meta(20, raw.size()), raw).ok());
  const MoveResult down = (*mover->Submit(R(MoveKind::kMove, host_.get(), *src, nvme_.get(),
                                            tq3->get(), TransformDirection::kEncode)))
                              ->Wait();
  ASSERT_TRUE(down.status.ok()) << down.status;
  EXPECT_EQ(down.destination.meta.codec, kernels::CodecId::kTq3);
  EXPECT_LT(down.destination.stored_bytes * 5, raw.size() + 4096);  // ~5.1x smaller
  const MoveResult up = (*mover->Submit(R(MoveKind::kCopy, nvme_.get(), down.destination_slot,
                                          host_.get(), tq3->get(), TransformDirection::kDecode)))
                            ->Wait();
  ASSERT_TRUE(up.status.ok()) << up.status;
  std::vector<std::byte> got(raw.size());
  ASSERT_TRUE(host_->Read(up.destination_slot, got).ok());
  // Exactly what the codec API gives for the same block.
  std::vector<std::byte> enc((*tq3)->MaxEncodedBytes(raw.size())), want(raw.size());
  ASSERT_TRUE((*tq3)->Encode(raw, enc).ok());
  ASSERT_TRUE((*tq3)->Decode(enc, want).ok());
  EXPECT_EQ(got, want);
  EXPECT_NE(got, raw);  // lossy
}

TEST_F(MoverTest, MalformedRequestsAreRefusedAtSubmit) {
  auto mover = MakeMover();
  const SlotId src = PutHost(1, 1000);
  RawTransform raw;
  EXPECT_EQ(mover->Submit(R(MoveKind::kCopy, nullptr, src, host_.get())).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mover->Submit(R(MoveKind::kCopy, host_.get(), src, nullptr)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mover->Submit(R(MoveKind::kCopy, host_.get(), src, host_.get())).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mover->Submit(R(MoveKind::kCopy, host_.get(), src, nvme_.get(), &raw)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(mover->Submit(R(MoveKind::kDrop, host_.get(), src, nvme_.get())).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(MoverTest, FailedJobLeavesSourceIntactAndDestinationEmpty) {
  auto mover = MakeMover();
  // Fill the NVMe tier so the destination allocation fails.
  std::vector<SlotId> filler;
  for (;;) {
    auto s = nvme_->Allocate(1 * kMiB);
    if (!s.ok()) break;
    filler.push_back(*s);
  }
  const SlotId src = PutHost(3, 1 * kMiB);
  const MoveResult r = (*mover->Submit(R(MoveKind::kMove, host_.get(), src, nvme_.get())))->Wait();
  EXPECT_EQ(r.status.code(), absl::StatusCode::kResourceExhausted);
  EXPECT_NE(r.status.message().find("'nvme'"), absl::string_view::npos);
  std::vector<std::byte> out(1 * kMiB);
  ASSERT_TRUE(host_->Read(src, out).ok());
  EXPECT_TRUE(PayloadMatches(3, out));
  EXPECT_EQ(host_->Stats().leases_active, 0u);
}

TEST_F(MoverTest, DropFreesAndCallbackRunsOnce) {
  auto mover = MakeMover();
  const SlotId src = PutHost(4, 1000);
  std::atomic<int> calls{0};
  std::latch done(1);
  MoveRequest req = R(MoveKind::kDrop, host_.get(), src);
  req.on_done = [&](const MoveResult& r) {
    EXPECT_TRUE(r.status.ok());
    ++calls;
    done.count_down();
  };
  auto job = mover->Submit(std::move(req));
  ASSERT_TRUE(job.ok());
  done.wait();
  (*job)->Wait();
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(host_->Stats().slots_in_use, 0u);
}

TEST_F(MoverTest, SourceUnderAJobIsLeasedSoItCannotBeRewritten) {
  // A transform that blocks until released lets the test look at the source mid-job.
  std::latch entered(1), release(1);
  FunctionTransform blocking(
      kernels::CodecId::kTq4, [](std::uint64_t n) { return n; },
      [&](std::span<const std::byte> raw,
          std::span<std::byte> out) -> absl::StatusOr<std::uint64_t> {
        entered.count_down();
        release.wait();
        std::copy(raw.begin(), raw.end(), out.begin());
        return raw.size();
      },
      [](std::span<const std::byte>, std::span<std::byte>) { return absl::OkStatus(); });
  auto mover = MakeMover();
  const SlotId src = PutHost(5, 64 * kKiB);
  auto job = mover->Submit(
      R(MoveKind::kMove, host_.get(), src, nvme_.get(), &blocking, TransformDirection::kEncode));
  ASSERT_TRUE(job.ok());
  entered.wait();
  EXPECT_EQ((*job)->state(), JobState::kRunning);
  EXPECT_EQ((*job)->Wait(milliseconds(1)).status.code(), absl::StatusCode::kDeadlineExceeded);
  std::vector<std::byte> other(64 * kKiB);
  EXPECT_EQ(host_->Write(src, Meta(6, other.size()), other).code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(host_->Stats().leases_active, 1u);
  release.count_down();
  EXPECT_TRUE((*job)->Wait().status.ok());
  EXPECT_EQ(host_->Stats().leases_active, 0u);
  EXPECT_EQ(host_->Stats().slots_in_use, 0u);  // moved
}

TEST_F(MoverTest, CancelQueuedAndRunningJobs) {
  std::latch entered(1), release(1);
  FunctionTransform blocking(
      kernels::CodecId::kTq4, [](std::uint64_t n) { return n; },
      [&](std::span<const std::byte> raw,
          std::span<std::byte> out) -> absl::StatusOr<std::uint64_t> {
        entered.count_down();
        release.wait();
        std::copy(raw.begin(), raw.end(), out.begin());
        return raw.size();
      },
      [](std::span<const std::byte>, std::span<std::byte>) { return absl::OkStatus(); });
  MoverOptions o;
  o.threads = 1;
  auto mover = MakeMover(o);
  const SlotId a = PutHost(7, 64 * kKiB);
  const SlotId b = PutHost(8, 64 * kKiB);
  auto running = mover->Submit(
      R(MoveKind::kMove, host_.get(), a, nvme_.get(), &blocking, TransformDirection::kEncode));
  ASSERT_TRUE(running.ok());
  entered.wait();
  auto queued = mover->Submit(R(MoveKind::kMove, host_.get(), b, nvme_.get()));
  ASSERT_TRUE(queued.ok());
  EXPECT_EQ((*queued)->state(), JobState::kQueued);
  (*queued)->Cancel();
  EXPECT_EQ((*queued)->state(), JobState::kCancelled);
  EXPECT_EQ((*queued)->Wait().status.code(), absl::StatusCode::kCancelled);
  (*running)->Cancel();
  release.count_down();
  EXPECT_EQ((*running)->Wait().status.code(), absl::StatusCode::kCancelled);
  EXPECT_EQ((*running)->state(), JobState::kCancelled);
  // Neither moved: both sources still hold their blocks, NVMe holds nothing.
  EXPECT_TRUE(host_->Info(a).ok());
  EXPECT_TRUE(host_->Info(b).ok());
  EXPECT_EQ(nvme_->Stats().blocks, 0u);
  EXPECT_EQ(nvme_->Stats().slots_in_use, 0u);
}

TEST_F(MoverTest, FullQueueIsUnavailable) {
  std::latch entered(1), release(1);
  FunctionTransform blocking(
      kernels::CodecId::kTq4, [](std::uint64_t n) { return n; },
      [&](std::span<const std::byte> raw,
          std::span<std::byte> out) -> absl::StatusOr<std::uint64_t> {
        entered.count_down();
        release.wait();
        std::copy(raw.begin(), raw.end(), out.begin());
        return raw.size();
      },
      [](std::span<const std::byte>, std::span<std::byte>) { return absl::OkStatus(); });
  MoverOptions o;
  o.threads = 1;
  o.queue_capacity = 2;
  auto mover = MakeMover(o);
  const SlotId a = PutHost(1, 4096);
  ASSERT_TRUE(mover
                  ->Submit(R(MoveKind::kCopy, host_.get(), a, nvme_.get(), &blocking,
                             TransformDirection::kEncode))
                  .ok());
  entered.wait();
  const SlotId b = PutHost(2, 4096);
  const SlotId c = PutHost(3, 4096);
  ASSERT_TRUE(mover->Submit(R(MoveKind::kDrop, host_.get(), b)).ok());
  ASSERT_TRUE(mover->Submit(R(MoveKind::kDrop, host_.get(), c)).ok());
  const auto full = mover->Submit(R(MoveKind::kDrop, host_.get(), a));
  EXPECT_EQ(full.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_NE(full.status().message().find("2 jobs"), absl::string_view::npos);
  release.count_down();
  mover->Shutdown();
  EXPECT_EQ(mover->Submit(R(MoveKind::kDrop, host_.get(), a)).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST_F(MoverTest, SweeperExpiresLeasesOfDeadClients) {
  MoverOptions o;
  o.sweep_interval = milliseconds(5);
  o.sweep_tiers = {host_.get()};
  auto mover = MakeMover(o);
  const SlotId leased = PutHost(1, 4096);
  ASSERT_TRUE(host_->AcquireLease(leased, milliseconds(100)).ok());  // a client that dies
  ASSERT_TRUE(host_->Free(leased).ok());                             // eviction waits for it
  auto never_written = host_->Allocate(4096);                        // a dead writer's slot
  ASSERT_TRUE(never_written.ok());
  EXPECT_EQ(host_->Stats().slots_in_use, 2u);
  env_.Advance(milliseconds(250));  // past the lease ttl and the allocation ttl
  for (int i = 0; i < 2000 && host_->Stats().slots_in_use != 0; ++i) {
    std::this_thread::sleep_for(milliseconds(1));
  }
  const TierStats stats = host_->Stats();
  EXPECT_EQ(stats.slots_in_use, 0u);
  EXPECT_EQ(stats.leases_expired, 1u);
  EXPECT_EQ(stats.allocations_reclaimed, 1u);
}

TEST_F(MoverTest, ManyConcurrentJobs) {
  MoverOptions o;
  o.threads = 3;
  auto mover = MakeMover(o);
  std::vector<std::shared_ptr<MoveJob>> jobs;
  for (std::uint64_t i = 0; i < 24; ++i) {
    const SlotId s = PutHost(100 + i, 100 * kKiB + i);
    auto job = mover->Submit(R(MoveKind::kMove, host_.get(), s, nvme_.get()));
    ASSERT_TRUE(job.ok());
    jobs.push_back(*job);
  }
  for (auto& job : jobs) ASSERT_TRUE(job->Wait().status.ok());
  EXPECT_EQ(host_->Stats().slots_in_use, 0u);
  EXPECT_EQ(nvme_->Stats().blocks, 24u);
  for (std::uint64_t i = 0; i < 24; ++i) {
    auto slot = nvme_->Lookup(Key(100 + i));
    ASSERT_TRUE(slot.ok());
    testing::AlignedBuffer out(100 * kKiB + i);
    ASSERT_TRUE(nvme_->Read(*slot, out.span()).ok());
    EXPECT_TRUE(PayloadMatches(100 + i, out.cspan()));
  }
}

}  // namespace
}  // namespace cachesvc::tiers
