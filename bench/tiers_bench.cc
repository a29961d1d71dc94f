// Tier throughput (tiers/): the host tier against single-core memcpy of the same sizes over the
// same working set, and the NVMe tier at a given block size and queue depth. One measurement per
// invocation; it prints one JSON object per line. bench/run tiers drives it, runs fio with the
// same file and settings for the NVMe baseline, and computes the ratios.
//
//   tiers_bench host --block-bytes N [--working-set-bytes W] [--seconds S]
//       -> {"tier":"host","op":"write"|"read","block_bytes":N,"gbps":..,"memcpy_gbps":..} x2
//   tiers_bench nvme --data PATH --index DIR --capacity-bytes C --block-bytes N --qd Q
//                    --op write|read [--seconds S] [--window W] [--dsync 0|1]
//                    [--sync-group G]
//       -> {"tier":"nvme","op":..,"block_bytes":N,"qd":Q,"gbps":..,"direct_io":true,..}
//   tiers_bench demote --data PATH --index DIR --capacity-bytes C --block-bytes N
//                      --codec raw|tq3 [--seconds S]
//       -> {"tier":"nvme","op":"demote_raw"|"demote_tq3","block_bytes":N,"gbps":..}
//
// Demote: the mover copies fp16 KV blocks (head_dim 128, Gaussian values) from the host tier to
// the NVMe tier, encoding them on the way; gbps counts raw (decoded) bytes per second.
//
// Host: the tier is filled with slots of N bytes; Write/Read go round-robin over them, and the
// memcpy baseline copies between the same kind of buffers with the same pattern (one source
// buffer into rotating destinations for writes, the reverse for reads), on one core. The two
// alternate in three rounds; each reports its best round.
// NVMe writes: the tier's queue_depth is Q (Q payload writes in flight at the device, like fio's
// iodepth), and the caller keeps W (default 4Q+16) WriteAsync writes unacknowledged at all times,
// so the pipeline always has the next payloads while earlier ones wait for their group fdatasync
// and index batch; GB/s counts acknowledged (durable, indexed) bytes in a steady-state interval.
// NVMe reads: ReadBatch of Q blocks (Q requests in flight). Both sequential over the slots like
// fio's rw=write/read.
#include <sys/mman.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "base/mutex.h"
#include "spdlog/spdlog.h"
#include "tiers/host_tier.h"
#include "tiers/kv_codec_transform.h"
#include "tiers/mover.h"
#include "tiers/nvme_tier.h"

namespace cachesvc::tiers {
namespace {

using Clock = std::chrono::steady_clock;

struct Args {
  std::map<std::string, std::string> kv;
  std::string Get(const std::string& k, const std::string& def = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? def : it->second;
  }
  std::uint64_t U64(const std::string& k, std::uint64_t def) const {
    const std::string v = Get(k);
    return v.empty() ? def : std::strtoull(v.c_str(), nullptr, 10);
  }
  double F(const std::string& k, double def) const {
    const std::string v = Get(k);
    return v.empty() ? def : std::strtod(v.c_str(), nullptr);
  }
};

std::byte* AlignedAlloc(std::uint64_t bytes) {
  auto* p =
      static_cast<std::byte*>(std::aligned_alloc(1 << 21, (bytes + (1 << 21) - 1) >> 21 << 21));
  if (p == nullptr) {
    std::fprintf(stderr, "out of memory\n");
    std::exit(1);
  }
  // Same page size as the tier's arena (THP advised), so memcpy is not handicapped by the TLB.
  (void)::madvise(p, (bytes + (1 << 21) - 1) >> 21 << 21, MADV_HUGEPAGE);
  std::memset(p, 0x5a, bytes);  // fault the pages in before timing
  return p;
}

// Runs `step` (which moves `bytes_per_step`) for `seconds` and returns GB/s (1e9 bytes/s).
template <typename F>
double Measure(double seconds, std::uint64_t bytes_per_step, F&& step) {
  for (int i = 0; i < 3; ++i) step();  // warm up
  std::uint64_t steps = 0;
  const auto start = Clock::now();
  const auto end = start + std::chrono::duration<double>(seconds);
  auto now = start;
  do {
    for (int i = 0; i < 8; ++i) step();
    steps += 8;
    now = Clock::now();
  } while (now < end);
  const double elapsed = std::chrono::duration<double>(now - start).count();
  return static_cast<double>(steps * bytes_per_step) / elapsed / 1e9;
}

int Host(const Args& args) {
  const std::uint64_t block = args.U64("block-bytes", 256 << 10);
  const std::uint64_t working = args.U64("working-set-bytes", 512ull << 20);
  const double seconds = args.F("seconds", 1.0);
  HostTierOptions o;
  o.name = "host-bench";
  o.capacity_bytes = working;
  o.min_slot_bytes = 16 << 10;
  o.max_slot_bytes = std::max<std::uint64_t>(block, 2 << 20);
  auto tier = HostTier::Create(o);
  if (!tier.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tier.status().message()).c_str());
    return 1;
  }
  std::vector<SlotId> slots;
  for (;;) {
    auto s = (*tier)->Allocate(block);
    if (!s.ok()) break;
    slots.push_back(*s);
  }
  std::byte* payload = AlignedAlloc(block);
  std::byte* out = AlignedAlloc(block);
  std::byte* arena = AlignedAlloc(slots.size() * block);  // memcpy's stand-in for the tier
  BlockMeta meta;
  std::size_t i = 0;
  for (const SlotId& s : slots) {
    if (!(*tier)->Write(s, meta, std::span<const std::byte>(payload, block)).ok()) return 1;
  }
  const std::size_t n = slots.size();
  // Baseline and tier alternate in rounds and each keeps its best round, so that a burst of
  // noise from a neighbour (these machines are shared) does not land on one side only.
  constexpr int kRounds = 3;
  double memcpy_write = 0, tier_write = 0, memcpy_read = 0, tier_read = 0;
  for (int round = 0; round < kRounds; ++round) {
    const double t = seconds / kRounds;
    memcpy_write = std::max(memcpy_write, Measure(t, block, [&] {
                              std::memcpy(arena + (i++ % n) * block, payload, block);
                            }));
    tier_write = std::max(
        tier_write, Measure(t, block, [&] {
          if (!(*tier)
                   ->Write(slots[i++ % n], meta, std::span<const std::byte>(payload, block))
                   .ok()) {
            std::abort();
          }
        }));
    memcpy_read =
        std::max(memcpy_read,
                 Measure(t, block, [&] { std::memcpy(out, arena + (i++ % n) * block, block); }));
    tier_read =
        std::max(tier_read, Measure(t, block, [&] {
                   if (!(*tier)->Read(slots[i++ % n], std::span<std::byte>(out, block)).ok()) {
                     std::abort();
                   }
                 }));
  }
  std::printf(
      "{\"tier\":\"host\",\"op\":\"write\",\"block_bytes\":%llu,\"qd\":1,\"gbps\":%.3f,"
      "\"memcpy_gbps\":%.3f,\"thp\":%s}\n",
      static_cast<unsigned long long>(block), tier_write, memcpy_write,
      (*tier)->transparent_huge_pages() ? "true" : "false");
  std::printf(
      "{\"tier\":\"host\",\"op\":\"read\",\"block_bytes\":%llu,\"qd\":1,\"gbps\":%.3f,"
      "\"memcpy_gbps\":%.3f,\"thp\":%s}\n",
      static_cast<unsigned long long>(block), tier_read, memcpy_read,
      (*tier)->transparent_huge_pages() ? "true" : "false");
  std::free(payload);
  std::free(out);
  std::free(arena);
  return 0;
}

int Nvme(const Args& args) {
  const std::uint64_t block = args.U64("block-bytes", 256 << 10);
  const auto qd = static_cast<unsigned>(args.U64("qd", 8));
  const std::string op = args.Get("op", "write");
  const double seconds = args.F("seconds", 1.0);
  NvmeTierOptions o;
  o.name = "nvme-bench";
  o.data_path = args.Get("data");
  o.index_path = args.Get("index");
  o.capacity_bytes = args.U64("capacity-bytes", 1ull << 30);
  o.min_slot_bytes = 16 << 10;
  o.max_slot_bytes = std::max<std::uint64_t>(block, 2 << 20);
  o.queue_depth = qd;
  o.rings = 1;
  o.zero_fill = true;
  o.dsync_writes = args.U64("dsync", 0) != 0;
  o.sync_group_writes = static_cast<unsigned>(args.U64("sync-group", o.sync_group_writes));
  std::filesystem::remove_all(o.index_path);  // each measurement starts from an empty index
  auto tier = NvmeTier::Open(o);
  if (!tier.ok()) {
    std::fprintf(stderr, "%s\n", std::string(tier.status().message()).c_str());
    return 1;
  }
  std::vector<SlotId> slots;
  for (;;) {
    auto s = (*tier)->Allocate(block);
    if (!s.ok()) break;
    slots.push_back(*s);
  }
  std::vector<std::byte*> buffers(qd);
  for (auto& b : buffers) b = AlignedAlloc(block);
  const std::size_t n = slots.size();
  std::size_t next = 0;
  std::uint64_t key_counter = 0;
  auto write_batch = [&] {
    std::vector<NvmeTier::WriteOp> ops(qd);
    for (unsigned k = 0; k < qd; ++k) {
      BlockMeta meta;
      const std::uint64_t id = ++key_counter;
      std::memcpy(meta.key.data(), &id, sizeof(id));
      meta.raw_bytes = block;
      ops[k] = {slots[next++ % n], meta, std::span<const std::byte>(buffers[k], block)};
    }
    for (const absl::Status& s : (*tier)->WriteBatch(ops)) {
      if (!s.ok()) {
        std::fprintf(stderr, "write: %s\n", std::string(s.message()).c_str());
        std::abort();
      }
    }
  };
  double gbps = 0;
  // Enough unacknowledged writes for qd payloads in flight plus a sync group waiting and another
  // being committed.
  // Never more than the file has slots: the writes go round-robin over them, so a window past the
  // slot count would rewrite a slot whose last write is still unacknowledged, which the tier
  // rightly refuses (2 MiB blocks at qd 32 want 144 in a 256 MiB file of 128 slots).
  const std::uint64_t window =
      std::min<std::uint64_t>(args.U64("window", 4 * static_cast<std::uint64_t>(qd) + 16), n);
  if (op == "write") {
    // Continuous: W writes unacknowledged at all times; each acknowledgement lets the next go.
    Mutex mu;
    CondVar acked;
    std::uint64_t outstanding = 0;
    std::uint64_t completed = 0;
    bool failed = false;
    auto submit = [&] {
      BlockMeta meta;
      const std::uint64_t id = ++key_counter;
      std::memcpy(meta.key.data(), &id, sizeof(id));
      meta.raw_bytes = block;
      const NvmeTier::WriteOp w{slots[next++ % n], meta,
                                std::span<const std::byte>(buffers[id % qd], block)};
      (*tier)->WriteAsync(w, [&](absl::Status s) {
        if (!s.ok()) std::fprintf(stderr, "write: %s\n", std::string(s.message()).c_str());
        MutexLock lock(&mu);
        failed |= !s.ok();
        --outstanding;
        ++completed;
        acked.SignalAll();
      });
    };
    auto run_until = [&](Clock::time_point end) {
      while (Clock::now() < end) {
        {
          MutexLock lock(&mu);
          acked.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return outstanding < window; });
          if (failed) std::abort();
          ++outstanding;
        }
        submit();
      }
    };
    auto completed_now = [&] {
      MutexLock lock(&mu);
      return completed;
    };
    run_until(Clock::now() + std::chrono::milliseconds(100));  // warm up, fill the pipeline
    const std::uint64_t first = completed_now();
    const auto start = Clock::now();
    run_until(start +
              std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds)));
    const std::uint64_t last = completed_now();
    const auto end = Clock::now();
    {
      MutexLock lock(&mu);
      acked.Wait(&mu, [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return outstanding == 0; });
      if (failed) std::abort();
    }
    gbps = static_cast<double>((last - first) * block) /
           std::chrono::duration<double>(end - start).count() / 1e9;
  } else {
    while (next < n) write_batch();  // every slot holds a block to read
    next = 0;
    gbps = Measure(seconds, block * qd, [&] {
      std::vector<NvmeTier::ReadOp> ops(qd);
      for (unsigned k = 0; k < qd; ++k) {
        ops[k] = {slots[next++ % n], std::span<std::byte>(buffers[k], block)};
      }
      for (const auto& r : (*tier)->ReadBatch(ops)) {
        if (!r.ok()) {
          std::fprintf(stderr, "read: %s\n", std::string(r.status().message()).c_str());
          std::abort();
        }
      }
    });
  }
  std::printf(
      "{\"tier\":\"nvme\",\"op\":\"%s\",\"block_bytes\":%llu,\"qd\":%u,\"gbps\":%.3f,"
      "\"direct_io\":%s,\"io_uring\":%s,\"window\":%llu}\n",
      op.c_str(), static_cast<unsigned long long>(block), qd, gbps,
      (*tier)->direct_io() ? "true" : "false", (*tier)->uses_io_uring() ? "true" : "false",
      static_cast<unsigned long long>(op == "write" ? window : qd));
  for (auto* b : buffers) std::free(b);
  return 0;
}

// Gaussian fp16 values (truncated conversion; good enough for throughput).
void FillFp16(std::byte* out, std::uint64_t values, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (std::uint64_t i = 0; i < values; ++i) {
    // Sum of 4 uniforms: roughly normal, cheap.
    float sum = 0;
    for (int k = 0; k < 4; ++k) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      sum += static_cast<float>(x >> 40) / static_cast<float>(1 << 24) - 0.5f;
    }
    std::uint32_t bits;
    std::memcpy(&bits, &sum, 4);
    const std::uint32_t sign = (bits >> 16) & 0x8000u;
    const int exp = static_cast<int>((bits >> 23) & 0xff) - 127 + 15;
    const std::uint16_t h =
        exp <= 0 ? static_cast<std::uint16_t>(sign)
                 : static_cast<std::uint16_t>(sign | (static_cast<std::uint32_t>(exp) << 10) |
                                              ((bits >> 13) & 0x3ffu));
    std::memcpy(out + 2 * i, &h, 2);
  }
}

int Demote(const Args& args) {
  const std::uint64_t block = args.U64("block-bytes", 256 << 10);
  const std::string codec_name = args.Get("codec", "tq3");
  const double seconds = args.F("seconds", 1.0);
  const kernels::CodecId codec =
      codec_name == "raw" ? kernels::CodecId::kRaw : kernels::CodecId::kTq3;
  auto transform = KvCodecTransform::Create(codec, kernels::ValueType::kFp16, 128);
  if (!transform.ok()) return 1;
  HostTierOptions h;
  h.name = "host-bench";
  h.capacity_bytes = 64 * std::max<std::uint64_t>(block, 2 << 20);
  h.max_slot_bytes = std::max<std::uint64_t>(block, 2 << 20);
  auto host = HostTier::Create(h);
  NvmeTierOptions n;
  n.name = "nvme-bench";
  n.data_path = args.Get("data");
  n.index_path = args.Get("index");
  n.capacity_bytes = args.U64("capacity-bytes", 1ull << 30);
  n.max_slot_bytes = std::max<std::uint64_t>(block, 2 << 20);
  n.zero_fill = true;
  std::filesystem::remove_all(n.index_path);
  auto nvme = NvmeTier::Open(n);
  if (!host.ok() || !nvme.ok()) return 1;
  std::vector<SlotId> sources;
  std::vector<std::byte> payload(block);
  for (int i = 0; i < 32; ++i) {
    FillFp16(payload.data(), block / 2, static_cast<std::uint64_t>(i));
    auto slot = (*host)->Allocate(block);
    BlockMeta meta;
    std::memcpy(meta.key.data(), &i, sizeof(i));
    meta.raw_bytes = block;
    if (!slot.ok() || !(*host)->Write(*slot, meta, payload).ok()) return 1;
    sources.push_back(*slot);
  }
  MoverOptions mo;
  mo.threads = 2;
  mo.staging_bytes = std::max<std::uint64_t>(block, 2 << 20);
  auto mover = Mover::Create(mo);
  if (!mover.ok()) return 1;
  // One wave demotes every source block once, then frees the copies so the next wave has room
  // (and no key is stored twice).
  auto wave = [&] {
    std::vector<std::shared_ptr<MoveJob>> jobs;
    for (const SlotId& s : sources) {
      MoveRequest r;
      r.kind = MoveKind::kCopy;
      r.source = host->get();
      r.source_slot = s;
      r.destination = nvme->get();
      if (codec != kernels::CodecId::kRaw) {
        r.transform = transform->get();
        r.direction = TransformDirection::kEncode;
      }
      auto job = (*mover)->Submit(std::move(r));
      if (!job.ok()) std::abort();
      jobs.push_back(*job);
    }
    for (auto& job : jobs) {
      const MoveResult result = job->Wait();
      if (!result.status.ok()) {
        std::fprintf(stderr, "demote: %s\n", std::string(result.status.message()).c_str());
        std::abort();
      }
      if (!(*nvme)->Free(result.destination_slot).ok()) std::abort();
    }
  };
  wave();  // warm up
  std::uint64_t waves = 0;
  const auto start = Clock::now();
  auto now = start;
  do {
    wave();
    ++waves;
    now = Clock::now();
  } while (now < start + std::chrono::duration<double>(seconds));
  const double gbps = static_cast<double>(waves * sources.size() * block) /
                      std::chrono::duration<double>(now - start).count() / 1e9;
  std::printf(
      "{\"tier\":\"nvme\",\"op\":\"demote_%s\",\"block_bytes\":%llu,\"qd\":%u,"
      "\"gbps\":%.3f}\n",
      codec_name.c_str(), static_cast<unsigned long long>(block), mo.threads, gbps);
  return 0;
}

}  // namespace
}  // namespace cachesvc::tiers

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tiers_bench host|nvme --key value ...\n");
    return 2;
  }
  spdlog::set_level(spdlog::level::err);  // each run starts cold on purpose
  cachesvc::tiers::Args args;
  for (int i = 2; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k.rfind("--", 0) == 0) k = k.substr(2);
    args.kv[k] = argv[i + 1];
  }
  const std::string mode = argv[1];
  if (mode == "host") return cachesvc::tiers::Host(args);
  if (mode == "nvme") return cachesvc::tiers::Nvme(args);
  if (mode == "demote") return cachesvc::tiers::Demote(args);
  std::fprintf(stderr, "unknown mode %s\n", mode.c_str());
  return 2;
}
