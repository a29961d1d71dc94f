// Tests for the UCX data plane: UcxDataPlane (server) and client::UcxTransport in one process,
// talking through a real UCX listener on 127.0.0.1, once per transport setting (UCX_TLS), with a
// check of which transport really carried the data (DataGoesOverTheTransportAskedFor).
//
// TCP and UCX's default must work wherever UCX is installed, so they fail when they cannot run.
// The shared-memory settings (which need peer failure detection off on UCX 1.13, docs/ucx.md)
// are skipped, with UCX's reason, where they cannot start or connect.
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cachesvc/ucx_dataplane.h"
#include "client/ucx_transport.h"
#include "gtest/gtest.h"

namespace cachesvc {
namespace {

using client::GetOp;
using client::LocalRegion;
using client::PutOp;
using client::RemoteKey;
using client::UcxTransport;
using client::UcxTransportOptions;
using Clock = std::chrono::steady_clock;

// Under TSan: suppressions and UCX_MEM_EVENTS=no come from ucx_test_support.cc.

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kRegionBytes = 64 * kMiB;
constexpr std::size_t kBlockBytes = 2 * kMiB;  // the daemon's block size in the benchmark

// Anonymous mmap, like the host tier's arena.
class Mapping {
 public:
  explicit Mapping(std::size_t bytes) : bytes_(bytes) {
    void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    data_ = p == MAP_FAILED ? nullptr : static_cast<std::uint8_t*>(p);
  }
  ~Mapping() {
    if (data_ != nullptr) munmap(data_, bytes_);
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  std::uint8_t* data() const { return data_; }
  std::uint64_t addr() const { return reinterpret_cast<std::uint64_t>(data_); }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t bytes_;
};

// Every 8-byte word differs (splitmix64 of its index and a seed), so a shifted or misplaced
// range never compares equal.
void FillPattern(std::uint8_t* data, std::size_t bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes / 8; ++i) {
    std::uint64_t z = (i + seed) * 0x9e3779b97f4a7c15ULL;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    z ^= z >> 31;
    std::memcpy(data + i * 8, &z, 8);
  }
  for (std::size_t i = bytes / 8 * 8; i < bytes; ++i) data[i] = static_cast<std::uint8_t>(seed + i);
}

struct TransportCase {
  const char* name;
  // UCX_TLS; "" = UCX's default. The shared-memory settings list tcp too: UCX 1.13 accepts a
  // client only through a network device a listed transport covers ("device lo is not enabled"
  // otherwise); DataGoesOverTheTransportAskedFor checks that no data lane uses it.
  const char* tls;
  // UCP_ERR_HANDLING_MODE_PEER on both sides. UCX 1.13 has no shared-memory transport that can
  // detect a dead peer, so the shared-memory settings run without it.
  bool detect_peer_failure;
  // The transports every data lane must use (ucp_ep_print_info names, comma-separated).
  const char* data_transports;
  bool required;  // fail, rather than skip, when it cannot connect here
};

const TransportCase kTransports[] = {
    {"tcp", "tcp", true, "tcp/", true},
    {"sm", "sm,self,tcp", false, "sysv/,posix/,cma/", false},
    {"posix_sysv_cma", "posix,sysv,cma,self,tcp", false, "sysv/,posix/,cma/", false},
    // On this host UCX's default picks TCP as well: with peer failure detection nothing else
    // qualifies (no RDMA devices).
    {"default", "", true, "", true},
};

class UcxDataPlaneTest : public testing::TestWithParam<TransportCase> {
 protected:
  void SetUp() override {
    ASSERT_NE(region_.data(), nullptr);
    FillPattern(region_.data(), kRegionBytes, 1);
    auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0",
                                      .transports = tls(),
                                      .detect_peer_failure = GetParam().detect_peer_failure,
                                      .enable_rma = true});
    if (!plane.ok() && !GetParam().required) {
      GTEST_SKIP() << "UCX_TLS=" << tls() << " unavailable here: " << plane.status();
    }
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = std::move(*plane);
    auto region = plane_->Register(region_.data(), kRegionBytes);
    ASSERT_TRUE(region.ok()) << region.status();
    region_id_ = *region;
    auto packed = plane_->PackedRkey(region_id_);
    ASSERT_TRUE(packed.ok()) << packed.status();
    packed_rkey_ = std::move(*packed);

    auto client = Connect();
    if (!client.ok() && !GetParam().required) {
      GTEST_SKIP() << "UCX_TLS=" << tls() << " cannot connect here: " << client.status();
    }
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
    auto key = client_->ImportRkey(packed_rkey_, region_.addr(), kRegionBytes);
    ASSERT_TRUE(key.ok()) << key.status();
    key_ = std::move(*key);
  }

  std::string tls() const { return GetParam().tls; }

  absl::StatusOr<std::unique_ptr<UcxTransport>> Connect(
      std::chrono::milliseconds op_timeout = std::chrono::seconds(5)) {
    return UcxTransport::Connect(
        plane_->address(),
        UcxTransportOptions{.transports = tls(),
                            .detect_peer_failure = GetParam().detect_peer_failure,
                            .connect_timeout = std::chrono::seconds(3),
                            .op_timeout = op_timeout});
  }

  // Waits (bounded) until the server counts `n` connected clients.
  bool WaitForClients(std::size_t n) {
    const auto deadline = Clock::now() + std::chrono::seconds(3);
    while (plane_->connected_clients() != n) {
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return true;
  }

  // Declared in destruction order's reverse: keys before their client, clients before the
  // server, the server before the memory it registered.
  Mapping region_{kRegionBytes};
  std::unique_ptr<UcxDataPlane> plane_;
  RegionId region_id_ = 0;
  std::string packed_rkey_;
  std::unique_ptr<UcxTransport> client_;
  RemoteKey key_;
};

// The transport asked for is the one that carries the data: UCX silently picks whatever it can
// use, so without this check a "shared memory" run could be a TCP run. (On UCX 1.13 RMA on
// memory registered by address is emulated over the lane that carries UCX's active messages,
// with the daemon's progress thread copying; no lane is an RMA lane on these transports.)
TEST_P(UcxDataPlaneTest, DataGoesOverTheTransportAskedFor) {
  std::vector<std::uint8_t> buf(kBlockBytes);
  ASSERT_TRUE(client_->Get(buf.data(), kBlockBytes, region_.addr(), key_).ok());
  const std::string lanes = client_->DescribeLanes();
  RecordProperty("lanes", lanes);
  std::cout << "UCX_TLS=\"" << tls() << "\" lanes:\n" << lanes;
  std::vector<std::string> allowed;
  std::istringstream list(GetParam().data_transports);
  for (std::string item; std::getline(list, item, ',');) allowed.push_back(item);
  int data_lanes = 0;
  std::istringstream lines(lanes);
  for (std::string line; std::getline(lines, line);) {
    if (line.find("lane[") == std::string::npos || line.find(": cm ") != std::string::npos) {
      continue;  // not a lane, or the connection manager's
    }
    ++data_lanes;
    if (allowed.empty()) continue;
    bool ok = false;
    for (const std::string& transport : allowed) ok |= line.find(transport) != std::string::npos;
    EXPECT_TRUE(ok) << "lane not over " << GetParam().data_transports << ": " << line;
  }
  EXPECT_GT(data_lanes, 0) << lanes;
}

TEST_P(UcxDataPlaneTest, GetsRangesOfEveryShape) {
  struct Range {
    std::size_t offset, length;
  };
  const Range ranges[] = {
      {0, 1},
      {0, 64},
      {1, 4095},                                  // unaligned start, odd length
      {4096, 4096},                               // one page
      {12345, 256 * kKiB},                        // 256 KiB, unaligned
      {kBlockBytes, kBlockBytes},                 // one aligned 2 MiB block
      {3 * kMiB + 17, kBlockBytes},               // 2 MiB at an odd offset
      {kRegionBytes - kBlockBytes, kBlockBytes},  // the last block
      {kRegionBytes - 1, 1},                      // the last byte
  };
  constexpr std::size_t kGuard = 64;
  for (const Range& r : ranges) {
    // The destination is unaligned too (+3), between guard bytes that must stay untouched.
    std::vector<std::uint8_t> local(r.length + 2 * kGuard + 3, 0xa5);
    std::uint8_t* dst = local.data() + kGuard + 3;
    ASSERT_TRUE(client_->Get(dst, r.length, region_.addr() + r.offset, key_).ok())
        << "offset " << r.offset << " length " << r.length;
    EXPECT_EQ(std::memcmp(dst, region_.data() + r.offset, r.length), 0)
        << "offset " << r.offset << " length " << r.length;
    for (std::size_t i = 0; i < kGuard + 3; ++i) ASSERT_EQ(local[i], 0xa5) << "guard " << i;
    for (std::size_t i = kGuard + 3 + r.length; i < local.size(); ++i) {
      ASSERT_EQ(local[i], 0xa5) << "guard " << i;
    }
  }
}

TEST_P(UcxDataPlaneTest, PutIsVisibleInServerMemoryWhenItReturns) {
  std::vector<std::uint8_t> source(kBlockBytes + 100);
  FillPattern(source.data(), source.size(), 77);
  // A whole block, an unaligned one, and a few bytes.
  const std::size_t offsets[] = {4 * kBlockBytes, 13 * kMiB + 5, kRegionBytes - 3};
  const std::size_t lengths[] = {kBlockBytes, kBlockBytes + 99, 3};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(
        client_->Put(source.data() + 1, lengths[i], region_.addr() + offsets[i], key_).ok());
    EXPECT_EQ(std::memcmp(region_.data() + offsets[i], source.data() + 1, lengths[i]), 0)
        << "offset " << offsets[i];
  }
  // Bytes just outside the written ranges kept the pattern.
  std::vector<std::uint8_t> original(kRegionBytes);
  FillPattern(original.data(), kRegionBytes, 1);
  for (const std::size_t untouched :
       {4 * kBlockBytes - 1, 5 * kBlockBytes, 13 * kMiB + 4, 15 * kMiB + 104, kRegionBytes - 4}) {
    EXPECT_EQ(region_.data()[untouched], original[untouched]) << untouched;
  }
}

TEST_P(UcxDataPlaneTest, BatchedGetsAndPutsMoveTheWholeRegion) {
  // 32 blocks of 2 MiB in one batch: the benchmark's access pattern.
  Mapping local(kRegionBytes);
  ASSERT_NE(local.data(), nullptr);
  std::vector<GetOp> gets;
  for (std::size_t off = 0; off < kRegionBytes; off += kBlockBytes) {
    gets.push_back({local.data() + off, kBlockBytes, region_.addr() + off, &key_});
  }
  const auto start = Clock::now();
  ASSERT_TRUE(client_->GetMany(gets).ok());
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(std::memcmp(local.data(), region_.data(), kRegionBytes), 0);
  RecordProperty("get_many_64MiB_GBps", std::to_string(kRegionBytes / seconds / 1e9));

  // 1000 small puts at scattered offsets, one flush.
  FillPattern(local.data(), kRegionBytes, 99);
  std::vector<PutOp> puts;
  for (std::size_t i = 0; i < 1000; ++i) {
    const std::size_t off = i * 65 * kKiB + i;  // distinct, unaligned, inside the region
    puts.push_back({local.data() + off, 1000, region_.addr() + off, &key_});
  }
  ASSERT_TRUE(client_->PutMany(puts).ok());
  for (const PutOp& op : puts) {
    const std::size_t off = op.remote_addr - region_.addr();
    ASSERT_EQ(std::memcmp(region_.data() + off, local.data() + off, op.length), 0) << off;
  }
  EXPECT_TRUE(client_->GetMany({}).ok());
}

TEST_P(UcxDataPlaneTest, RegisteredLocalBuffersWork) {
  Mapping local(8 * kMiB);
  ASSERT_NE(local.data(), nullptr);
  auto registered = client_->RegisterLocal(local.data(), 8 * kMiB);
  ASSERT_TRUE(registered.ok()) << registered.status();
  std::vector<GetOp> gets;
  for (std::size_t i = 0; i < 4; ++i) {
    gets.push_back({local.data() + i * kBlockBytes, kBlockBytes,
                    region_.addr() + (10 + i) * kBlockBytes, &key_, &*registered});
  }
  ASSERT_TRUE(client_->GetMany(gets).ok());
  EXPECT_EQ(std::memcmp(local.data(), region_.data() + 10 * kBlockBytes, 8 * kMiB), 0);

  FillPattern(local.data(), kBlockBytes, 5);
  ASSERT_TRUE(client_->Put(local.data(), kBlockBytes, region_.addr(), key_, &*registered).ok());
  EXPECT_EQ(std::memcmp(region_.data(), local.data(), kBlockBytes), 0);

  // A local range outside its region is refused before anything is sent.
  EXPECT_EQ(
      client_->Get(local.data() + 7 * kMiB, kBlockBytes, region_.addr(), key_, &*registered).code(),
      absl::StatusCode::kInvalidArgument);
}

TEST_P(UcxDataPlaneTest, RangesOutsideTheKeyAreRefused) {
  std::vector<std::uint8_t> buf(kBlockBytes);
  const std::uint64_t base = region_.addr();
  EXPECT_EQ(client_->Get(buf.data(), 20, base + kRegionBytes - 10, key_).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Get(buf.data(), 1, base - 1, key_).code(), absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Put(buf.data(), 1, base + kRegionBytes, key_).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Get(buf.data(), 1, ~std::uint64_t{0}, key_).code(),
            absl::StatusCode::kOutOfRange);

  // A key narrowed to one block (what a lease grants) allows that block only.
  auto block_key = client_->ImportRkey(packed_rkey_, base + 8 * kBlockBytes, kBlockBytes);
  ASSERT_TRUE(block_key.ok()) << block_key.status();
  EXPECT_TRUE(client_->Get(buf.data(), kBlockBytes, base + 8 * kBlockBytes, *block_key).ok());
  EXPECT_EQ(client_->Get(buf.data(), kBlockBytes, base + 8 * kBlockBytes + 1, *block_key).code(),
            absl::StatusCode::kOutOfRange);
  EXPECT_EQ(client_->Get(buf.data(), 1, base + 9 * kBlockBytes, *block_key).code(),
            absl::StatusCode::kOutOfRange);
  // In a batch, one bad op refuses the whole batch before anything is issued.
  std::vector<GetOp> gets = {{buf.data(), 8, base, &key_},
                             {buf.data(), 8, base + 7 * kBlockBytes, &*block_key}};
  EXPECT_EQ(client_->GetMany(gets).code(), absl::StatusCode::kOutOfRange);
  EXPECT_TRUE(client_->health().ok());
  EXPECT_TRUE(client_->Get(buf.data(), 8, base, key_).ok());
}

TEST_P(UcxDataPlaneTest, MalformedOrForeignKeysAreRefused) {
  const std::uint64_t base = region_.addr();
  EXPECT_EQ(client_->ImportRkey("", base, 8).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->ImportRkey("abcde", base, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  // The key with its last byte cut off: its md map promises more than is there.
  ASSERT_GT(packed_rkey_.size(), 9u);
  EXPECT_EQ(
      client_->ImportRkey(packed_rkey_.substr(0, packed_rkey_.size() - 1), base, 8).status().code(),
      absl::StatusCode::kInvalidArgument);
  // Every md bit set, no per-md data.
  std::string all_mds(9, '\0');
  std::memset(all_mds.data(), 0xff, 8);
  EXPECT_EQ(client_->ImportRkey(all_mds, base, 8).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client_->ImportRkey(packed_rkey_, base, 0).status().code(),
            absl::StatusCode::kInvalidArgument);

  std::vector<std::uint8_t> buf(64);
  const RemoteKey empty;
  EXPECT_EQ(client_->Get(buf.data(), 8, base, empty).code(), absl::StatusCode::kInvalidArgument);
  // A key imported on another connection.
  auto other = Connect();
  ASSERT_TRUE(other.ok()) << other.status();
  auto other_key = (*other)->ImportRkey(packed_rkey_, base, kRegionBytes);
  ASSERT_TRUE(other_key.ok()) << other_key.status();
  EXPECT_EQ(client_->Get(buf.data(), 8, base, *other_key).code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE((*other)->Get(buf.data(), 8, base, *other_key).ok());
  EXPECT_TRUE(client_->health().ok());
}

TEST_P(UcxDataPlaneTest, ServerServesTheNextClientAfterOneDisconnects) {
  ASSERT_TRUE(WaitForClients(1));
  std::vector<std::uint8_t> buf(kBlockBytes);
  ASSERT_TRUE(client_->Get(buf.data(), kBlockBytes, region_.addr(), key_).ok());
  key_ = RemoteKey();
  client_.reset();
  EXPECT_TRUE(WaitForClients(0)) << "the server did not close the departed client's endpoint";

  auto next = Connect();
  ASSERT_TRUE(next.ok()) << next.status();
  auto key = (*next)->ImportRkey(packed_rkey_, region_.addr(), kRegionBytes);
  ASSERT_TRUE(key.ok()) << key.status();
  ASSERT_TRUE((*next)->Get(buf.data(), kBlockBytes, region_.addr() + kBlockBytes, *key).ok());
  EXPECT_EQ(std::memcmp(buf.data(), region_.data() + kBlockBytes, kBlockBytes), 0);
  EXPECT_TRUE(WaitForClients(1));
}

TEST_P(UcxDataPlaneTest, ClientCallsFailInsteadOfHangingWhenTheServerGoes) {
  // Without peer failure detection only the timeout notices; keep it short.
  key_ = RemoteKey();
  auto client = Connect(std::chrono::seconds(1));
  ASSERT_TRUE(client.ok()) << client.status();
  client_ = std::move(*client);
  auto key = client_->ImportRkey(packed_rkey_, region_.addr(), kRegionBytes);
  ASSERT_TRUE(key.ok()) << key.status();
  key_ = std::move(*key);
  std::vector<std::uint8_t> buf(kBlockBytes);
  ASSERT_TRUE(client_->Get(buf.data(), kBlockBytes, region_.addr(), key_).ok());
  plane_.reset();  // closes the client's endpoint from the server side and unregisters
  // Shared-memory reads of this (still mapped) memory may succeed until the client has seen
  // the disconnect; every call must return, and one soon fails.
  const auto start = Clock::now();
  absl::Status status;
  while (status.ok() && Clock::now() - start < std::chrono::seconds(10)) {
    status = client_->Get(buf.data(), kBlockBytes, region_.addr(), key_);
  }
  EXPECT_FALSE(status.ok()) << "calls kept succeeding for 10 s after the server went away";
  EXPECT_TRUE(absl::IsUnavailable(status) || absl::IsDeadlineExceeded(status)) << status;
  EXPECT_FALSE(client_->health().ok());
  // Later calls fail at once.
  EXPECT_FALSE(client_->Get(buf.data(), 8, region_.addr(), key_).ok());
}

TEST_P(UcxDataPlaneTest, ATimedOutTransferEndsTheConnectionAndTheServerCarriesOn) {
  if (GetParam().detect_peer_failure) {
    // The client side would pass, but its forced close makes UCX 1.13 abort this process in
    // the server: a software-emulated get whose reply is still being sent when the client's
    // endpoint fails ends in ucs_fatal("unexpected error: Endpoint timeout") inside
    // ucp_get_req_handler. A client killed mid-transfer does the same to a real daemon; see
    // docs/ucx.md ("Known UCX 1.13 problems").
    GTEST_SKIP() << "forcing a client off mid-transfer over TCP aborts the server (UCX 1.13)";
  }
  // 64 MiB cannot arrive within 1 ms on these transports.
  key_ = RemoteKey();
  auto client = Connect(std::chrono::milliseconds(1));
  ASSERT_TRUE(client.ok()) << client.status();
  client_ = std::move(*client);
  auto key = client_->ImportRkey(packed_rkey_, region_.addr(), kRegionBytes);
  ASSERT_TRUE(key.ok()) << key.status();
  key_ = std::move(*key);
  Mapping local(kRegionBytes);
  ASSERT_NE(local.data(), nullptr);
  std::vector<GetOp> gets;
  for (std::size_t off = 0; off < kRegionBytes; off += kBlockBytes) {
    gets.push_back({local.data() + off, kBlockBytes, region_.addr() + off, &key_});
  }
  const auto start = Clock::now();
  const absl::Status status = client_->GetMany(gets);
  EXPECT_EQ(status.code(), absl::StatusCode::kDeadlineExceeded) << status;
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  EXPECT_EQ(client_->health().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->Get(local.data(), 8, region_.addr(), key_).code(),
            absl::StatusCode::kUnavailable);
  key_ = RemoteKey();
  client_.reset();

  auto next = Connect();
  ASSERT_TRUE(next.ok()) << next.status();
  auto next_key = (*next)->ImportRkey(packed_rkey_, region_.addr(), kRegionBytes);
  ASSERT_TRUE(next_key.ok()) << next_key.status();
  ASSERT_TRUE((*next)->Get(local.data(), kBlockBytes, region_.addr(), *next_key).ok());
  EXPECT_EQ(std::memcmp(local.data(), region_.data(), kBlockBytes), 0);
}

TEST_P(UcxDataPlaneTest, ThreadsShareOneTransport) {
  constexpr int kThreads = 3;
  constexpr int kIterations = 16;
  constexpr std::size_t kChunk = 256 * kKiB;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<std::uint8_t> buf(kChunk);
      for (int i = 0; i < kIterations; ++i) {
        const std::size_t off =
            (static_cast<std::size_t>(t * kIterations + i) * kChunk) % kRegionBytes;
        if (!client_->Get(buf.data(), kChunk, region_.addr() + off, key_).ok() ||
            std::memcmp(buf.data(), region_.data() + off, kChunk) != 0) {
          ++failures[t];
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << "thread " << t;
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxDataPlaneTest, testing::ValuesIn(kTransports),
                         [](const testing::TestParamInfo<TransportCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

// Transport-independent behaviour, over TCP.

TEST(UcxDataPlaneStartTest, RmaIsOffByDefault) {
  auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0", .transports = "tcp"});
  ASSERT_TRUE(plane.ok()) << plane.status();
  Mapping memory(kMiB);
  EXPECT_EQ((*plane)->Register(memory.data(), kMiB).status().code(),
            absl::StatusCode::kFailedPrecondition);
}

TEST(UcxDataPlaneStartTest, WithRmaOffAForgedGetReadsNothing) {
  // On TCP a packed rkey carries no secret, so a client can forge one (here: packed by another
  // data plane of this process, for memory this data plane never registered) and send a get for
  // any address. With RMA off the daemon has no handler for it: the request is dropped (UCX logs
  // "no handler installed"), the client's get times out, and the daemon serves on.
  Mapping secret(kMiB);
  FillPattern(secret.data(), kMiB, 123);
  auto rma_plane = UcxDataPlane::Start(
      {.listen_address = "127.0.0.1:0", .transports = "tcp", .enable_rma = true});
  ASSERT_TRUE(rma_plane.ok()) << rma_plane.status();
  auto region = (*rma_plane)->Register(secret.data(), kMiB);
  ASSERT_TRUE(region.ok()) << region.status();
  auto packed = (*rma_plane)->PackedRkey(*region);
  ASSERT_TRUE(packed.ok()) << packed.status();

  auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0", .transports = "tcp"});
  ASSERT_TRUE(plane.ok()) << plane.status();
  auto client = UcxTransport::Connect(
      (*plane)->address(), {.transports = "tcp", .op_timeout = std::chrono::milliseconds(500)});
  ASSERT_TRUE(client.ok()) << client.status();
  auto key = (*client)->ImportRkey(*packed, secret.addr(), kMiB);
  ASSERT_TRUE(key.ok()) << key.status();
  std::vector<std::uint8_t> stolen(4096, 0);
  const absl::Status status = (*client)->Get(stolen.data(), stolen.size(), secret.addr(), *key);
  EXPECT_FALSE(status.ok());
  EXPECT_TRUE(std::all_of(stolen.begin(), stolen.end(), [](std::uint8_t b) { return b == 0; }));
  *key = RemoteKey();
  client->reset();
  // The daemon is still there and accepts the next client.
  auto next = UcxTransport::Connect((*plane)->address(), {.transports = "tcp"});
  EXPECT_TRUE(next.ok()) << next.status();
}

TEST(UcxDataPlaneStartTest, RefusesMalformedListenAddresses) {
  for (const char* address : {"nonsense", "127.0.0.1", "127.0.0.1:", ":80", "300.1.1.1:5",
                              "localhost:0", "127.0.0.1:99999"}) {
    auto plane = UcxDataPlane::Start({.listen_address = address, .transports = "tcp"});
    EXPECT_EQ(plane.status().code(), absl::StatusCode::kInvalidArgument) << address;
  }
}

TEST(UcxDataPlaneStartTest, ReportsTheBoundPortAndRefusesATakenOne) {
  auto first = UcxDataPlane::Start({.listen_address = "127.0.0.1:0", .transports = "tcp"});
  ASSERT_TRUE(first.ok()) << first.status();
  const std::string address = (*first)->address();
  EXPECT_EQ(address.rfind("127.0.0.1:", 0), 0u) << address;
  EXPECT_NE(address, "127.0.0.1:0");
  auto second = UcxDataPlane::Start({.listen_address = address, .transports = "tcp"});
  EXPECT_EQ(second.status().code(), absl::StatusCode::kUnavailable) << second.status();
}

TEST(UcxDataPlaneStartTest, RegionsAreRegisteredAndUnregistered) {
  auto plane = UcxDataPlane::Start(
      {.listen_address = "127.0.0.1:0", .transports = "tcp", .enable_rma = true});
  ASSERT_TRUE(plane.ok()) << plane.status();
  Mapping memory(4 * kMiB);
  EXPECT_EQ((*plane)->Register(nullptr, 10).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*plane)->Register(memory.data(), 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  auto a = (*plane)->Register(memory.data(), 2 * kMiB);
  auto b = (*plane)->Register(memory.data() + 2 * kMiB, 2 * kMiB);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_TRUE((*plane)->PackedRkey(*a).ok());
  EXPECT_TRUE((*plane)->Unregister(*a).ok());
  EXPECT_EQ((*plane)->Unregister(*a).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*plane)->PackedRkey(*a).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ((*plane)->PackedRkey(12345).status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE((*plane)->PackedRkey(*b).ok());
  // *b stays registered: the destructor unregisters it.
}

TEST(UcxTransportConnectTest, NothingListeningIsUnavailable) {
  std::string address;
  {
    auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0", .transports = "tcp"});
    ASSERT_TRUE(plane.ok()) << plane.status();
    address = (*plane)->address();
  }
  const auto start = Clock::now();
  auto client = UcxTransport::Connect(
      address, {.transports = "tcp", .connect_timeout = std::chrono::seconds(3)});
  EXPECT_EQ(client.status().code(), absl::StatusCode::kUnavailable) << client.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4));
}

TEST(UcxTransportConnectTest, NothingListeningFailsWithoutPeerFailureDetectionToo) {
  std::string address;
  {
    auto plane = UcxDataPlane::Start(
        {.listen_address = "127.0.0.1:0", .transports = "tcp", .detect_peer_failure = false});
    ASSERT_TRUE(plane.ok()) << plane.status();
    address = (*plane)->address();
  }
  const auto start = Clock::now();
  auto client = UcxTransport::Connect(address, {.transports = "tcp",
                                                .detect_peer_failure = false,
                                                .connect_timeout = std::chrono::seconds(2)});
  EXPECT_TRUE(absl::IsUnavailable(client.status()) || absl::IsDeadlineExceeded(client.status()))
      << client.status();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4));
}

TEST(UcxTransportConnectTest, RefusesMalformedAddresses) {
  for (const char* address : {"nonsense", "127.0.0.1:", ":5"}) {
    auto client = UcxTransport::Connect(address, {.transports = "tcp"});
    EXPECT_EQ(client.status().code(), absl::StatusCode::kInvalidArgument) << address;
  }
}

}  // namespace
}  // namespace cachesvc
