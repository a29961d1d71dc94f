// Tests for the block protocol over UCX active messages: UcxDataPlane (server, with a fake
// UcxBlockHandler over one buffer) and client::UcxTransport::Read/Write/ReadMany/WriteMany, in one
// process through a real UCX listener on 127.0.0.1, once per transport setting that works here.
// Malformed requests come from a raw UCP client (RawClient); a client killed mid-transfer is a
// child process (ucx_am_child). Every test checks, when it ends, that each Begin* the daemon saw
// got exactly one End*.
//
// The throughput measurement (2 MiB blocks, 1 and 4 threads, next to a single-core memcpy) is the
// disabled test Throughput: run it in a release build with
//   ucx_am_test --gtest_also_run_disabled_tests --gtest_filter='*Throughput*'
#include <netinet/in.h>
#include <signal.h>
#include <sys/mman.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cachesvc/ucx_am_protocol.h"
#include "cachesvc/ucx_dataplane.h"
#include "client/ucx_transport.h"
#include "fmt/format.h"
#include "gtest/gtest.h"
#include "tests/support/subprocess.h"

namespace cachesvc {
namespace {

using client::ReadOp;
using client::UcxTransport;
using client::UcxTransportOptions;
using client::WriteOp;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t kKiB = 1024;
constexpr std::size_t kMiB = 1024 * kKiB;
constexpr std::size_t kBlock = 2 * kMiB;
constexpr std::size_t kBufferBytes = 64 * kMiB;
// The server's bound on every operation in flight, short so that stalls resolve within a test.
constexpr auto kServerOpTimeout = 1500ms;

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
  std::size_t size() const { return bytes_; }

 private:
  std::uint8_t* data_ = nullptr;
  std::size_t bytes_;
};

// Every 8-byte word differs (splitmix64 of its index and a seed).
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

// The daemon's side, faked: leases are ranges of one buffer. Counts every Begin/End and flags an
// End without its Begin. Called on the data plane's progress thread; the test reads the counts
// from its own thread, hence the mutex.
class FakeBlocks : public UcxBlockHandler {
 public:
  struct Lease {
    std::size_t offset;
    std::size_t length;    // what a read returns
    std::size_t capacity;  // what a write may fill
  };
  struct Counts {
    int begin_reads = 0, end_reads = 0, failed_reads = 0;
    int begin_writes = 0, end_writes = 0, failed_writes = 0;
    int unpaired_ends = 0;
  };

  explicit FakeBlocks(std::uint8_t* buffer) : buffer_(buffer) {}

  void AddLease(std::uint64_t id, Lease lease) {
    std::lock_guard lock(mu_);
    leases_[id] = lease;
  }

  absl::StatusOr<ReadGrant> BeginRead(std::uint64_t lease_id) override {
    std::lock_guard lock(mu_);
    const auto it = leases_.find(lease_id);
    if (it == leases_.end()) {
      return absl::NotFoundError(fmt::format("lease {} is not held here", lease_id));
    }
    ++counts_.begin_reads;
    ++open_[lease_id];
    return ReadGrant{buffer_ + it->second.offset, it->second.length};
  }
  void EndRead(std::uint64_t lease_id, const absl::Status& sent) override {
    std::lock_guard lock(mu_);
    ++counts_.end_reads;
    if (!sent.ok()) {
      ++counts_.failed_reads;
      errors_.push_back(sent);
    }
    if (--open_[lease_id] < 0) ++counts_.unpaired_ends;
  }
  absl::StatusOr<WriteGrant> BeginWrite(std::uint64_t lease_id, std::size_t /*length*/) override {
    std::lock_guard lock(mu_);
    const auto it = leases_.find(lease_id);
    if (it == leases_.end()) {
      return absl::NotFoundError(fmt::format("lease {} is not held here", lease_id));
    }
    ++counts_.begin_writes;
    ++open_[lease_id];
    return WriteGrant{buffer_ + it->second.offset, it->second.capacity};
  }
  void EndWrite(std::uint64_t lease_id, const absl::Status& received) override {
    std::lock_guard lock(mu_);
    ++counts_.end_writes;
    if (!received.ok()) {
      ++counts_.failed_writes;
      errors_.push_back(received);
    }
    if (--open_[lease_id] < 0) ++counts_.unpaired_ends;
  }

  Counts counts() {
    std::lock_guard lock(mu_);
    return counts_;
  }
  // Orders the test's own accesses to the buffer with the data plane's, for ThreadSanitizer: the
  // data plane writes a grant between Begin and End, which lock mu_, while the test learns of it
  // through UCX (uninstrumented). Call it between touching the buffer and starting a transfer,
  // and between a transfer's end and reading the buffer. A daemon orders the same way through
  // its lease table.
  void Sync() { std::lock_guard lock(mu_); }
  std::vector<absl::Status> errors() {
    std::lock_guard lock(mu_);
    return errors_;
  }
  // Waits (bounded) until every Begin got its End.
  bool WaitPaired(std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    for (;;) {
      const Counts c = counts();
      if (c.begin_reads == c.end_reads && c.begin_writes == c.end_writes) return true;
      if (Clock::now() > deadline) return false;
      std::this_thread::sleep_for(2ms);
    }
  }

 private:
  std::uint8_t* const buffer_;
  std::mutex mu_;
  std::map<std::uint64_t, Lease> leases_;
  std::map<std::uint64_t, int> open_;
  Counts counts_;
  std::vector<absl::Status> errors_;
};

// Leases of the tests (offsets unaligned on purpose).
constexpr std::uint64_t kLease4K = 1, kLease256K = 2, kLease2M = 3, kLeaseSmallCap = 4;
constexpr std::uint64_t kBatchLease0 = 100;  // kBatchLease0 + i: block i of the batch area
constexpr int kBatchLeases = 16;
constexpr std::size_t kBatchOffset = 16 * kMiB;  // 16 x 2 MiB from here
constexpr std::uint64_t kUnknownLease = 999;

struct TransportCase {
  const char* name;
  const char* tls;  // UCX_TLS
  bool detect_peer_failure;
  const char* data_transports;  // the transports the active-message and rendezvous lanes must use
  bool required;                // fail, rather than skip, when it cannot run here
};

// For test names and messages (gtest would print the struct's bytes).
void PrintTo(const TransportCase& t, std::ostream* os) { *os << t.name; }

const TransportCase kTransports[] = {
    {"tcp", "tcp", true, "tcp/", true},
    // Shared memory, which UCX 1.13 uses only without peer failure detection. The list names tcp
    // for the listener's device; the lanes check shows that the data does not use it: active
    // messages over sysv/posix rings, rendezvous data copied once by cma (process_vm_readv).
    {"sm", "sm,self,tcp", false, "sysv/,posix/,cma/", false},
    // Messages over TCP, rendezvous data by cma: no shared-memory ring at all.
    {"tcp_cma", "tcp,cma", false, "tcp/,cma/", false},
};

// A UCP client that speaks the protocol by hand, to send what UcxTransport never would.
class RawClient {
 public:
  struct Received {
    unsigned am_id;
    ucx_am::Reply reply;
    std::string payload;
  };

  static std::unique_ptr<RawClient> Connect(const std::string& address, const TransportCase& t) {
    auto client = std::unique_ptr<RawClient>(new RawClient(t.detect_peer_failure));
    if (!client->Init(address, t.tls)) return nullptr;
    return client;
  }

  ~RawClient() {
    if (ep_ != nullptr) {
      ucp_request_param_t param{};
      if (peer_) {
        param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
        param.flags = UCP_EP_CLOSE_FLAG_FORCE;
      }
      void* request = ucp_ep_close_nbx(ep_, &param);
      if (request != nullptr && !UCS_PTR_IS_ERR(request)) {
        const auto deadline = Clock::now() + 2s;
        while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < deadline) {
          ucp_worker_progress(worker_);
        }
        ucp_request_free(request);
      }
    }
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    if (context_ != nullptr) ucp_cleanup(context_);
  }

  // Goes away without a word and without progressing again, like a process that dies: the
  // worker is destroyed with its endpoint open, so the connection's sockets just close.
  void Abandon() {
    ep_ = nullptr;
    if (worker_ != nullptr) ucp_worker_destroy(worker_);
    worker_ = nullptr;
  }

  // Sends one active message; returns false when UCX refused it or it did not complete in time.
  bool Send(unsigned am_id, const void* header, std::size_t header_length, const void* data,
            std::size_t length, std::uint32_t flags = UCP_AM_SEND_FLAG_REPLY) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = flags;
    void* request = ucp_am_send_nbx(ep_, am_id, header, header_length, data, length, &param);
    if (request == nullptr) return true;
    if (UCS_PTR_IS_ERR(request)) return false;
    const auto deadline = Clock::now() + 5s;
    while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < deadline) {
      ucp_worker_progress(worker_);
    }
    const bool ok = ucp_request_check_status(request) == UCS_OK;
    ucp_request_free(request);
    return ok;
  }
  // Sends without waiting for completion (the request is left to UCX).
  void SendAndForget(unsigned am_id, const void* header, std::size_t header_length,
                     const void* data, std::size_t length, std::uint32_t flags) {
    ucp_request_param_t param{};
    param.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    param.flags = flags;
    void* request = ucp_am_send_nbx(ep_, am_id, header, header_length, data, length, &param);
    if (request != nullptr && !UCS_PTR_IS_ERR(request)) ucp_request_free(request);
  }

  bool WaitForReplies(std::size_t n, std::chrono::milliseconds timeout) {
    const auto deadline = Clock::now() + timeout;
    while (replies.size() < n) {
      if (Clock::now() > deadline) return false;
      ucp_worker_progress(worker_);
    }
    return true;
  }
  void ProgressFor(std::chrono::milliseconds duration) {
    const auto deadline = Clock::now() + duration;
    while (Clock::now() < deadline) ucp_worker_progress(worker_);
  }

  std::vector<Received> replies;

 private:
  explicit RawClient(bool peer) : peer_(peer) {}

  static ucs_status_t OnReply(void* arg, const void* header, std::size_t header_length, void* data,
                              std::size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<RawClient*>(arg);
    Received r{};
    r.am_id = self->current_id_;
    ucx_am::Decode(header, header_length, &r.reply);
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) == 0 && data != nullptr) {
      r.payload.assign(static_cast<const char*>(data), length);
    }
    self->replies.push_back(std::move(r));
    return UCS_OK;  // a rendezvous payload is refused
  }
  static ucs_status_t OnReadReply(void* arg, const void* h, std::size_t hl, void* d, std::size_t l,
                                  const ucp_am_recv_param_t* p) {
    static_cast<RawClient*>(arg)->current_id_ = ucx_am::kAmReadReply;
    return OnReply(arg, h, hl, d, l, p);
  }
  static ucs_status_t OnWriteReply(void* arg, const void* h, std::size_t hl, void* d, std::size_t l,
                                   const ucp_am_recv_param_t* p) {
    static_cast<RawClient*>(arg)->current_id_ = ucx_am::kAmWriteReply;
    return OnReply(arg, h, hl, d, l, p);
  }

  bool Init(const std::string& address, const char* tls) {
    const auto colon = address.rfind(':');
    sockaddr_in server{};
    server.sin_family = AF_INET;
    server.sin_port = htons(static_cast<std::uint16_t>(std::stoi(address.substr(colon + 1))));
    server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ucp_config_t* config = nullptr;
    if (ucp_config_read(nullptr, nullptr, &config) != UCS_OK) return false;
    ucp_config_modify(config, "TLS", tls);
    ucp_params_t params{};
    params.field_mask = UCP_PARAM_FIELD_FEATURES;
    params.features = UCP_FEATURE_AM;
    const ucs_status_t st = ucp_init(&params, config, &context_);
    ucp_config_release(config);
    if (st != UCS_OK) return false;
    ucp_worker_params_t worker_params{};
    worker_params.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
    worker_params.thread_mode = UCS_THREAD_MODE_SINGLE;
    if (ucp_worker_create(context_, &worker_params, &worker_) != UCS_OK) return false;
    for (const auto& [id, cb] :
         {std::pair<unsigned, ucp_am_recv_callback_t>{ucx_am::kAmReadReply, &OnReadReply},
          {ucx_am::kAmWriteReply, &OnWriteReply}}) {
      ucp_am_handler_param_t am{};
      am.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                      UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
      am.id = id;
      am.flags = UCP_AM_FLAG_WHOLE_MSG;
      am.cb = cb;
      am.arg = this;
      if (ucp_worker_set_am_recv_handler(worker_, &am) != UCS_OK) return false;
    }
    ucp_ep_params_t ep_params{};
    ep_params.field_mask = UCP_EP_PARAM_FIELD_FLAGS | UCP_EP_PARAM_FIELD_SOCK_ADDR |
                           UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
    ep_params.flags = UCP_EP_PARAMS_FLAGS_CLIENT_SERVER;
    ep_params.sockaddr.addr = reinterpret_cast<const sockaddr*>(&server);
    ep_params.sockaddr.addrlen = sizeof(server);
    ep_params.err_mode = peer_ ? UCP_ERR_HANDLING_MODE_PEER : UCP_ERR_HANDLING_MODE_NONE;
    if (ucp_ep_create(worker_, &ep_params, &ep_) != UCS_OK) {
      ep_ = nullptr;
      return false;
    }
    ucp_request_param_t flush{};
    void* request = ucp_ep_flush_nbx(ep_, &flush);
    if (request == nullptr) return true;
    if (UCS_PTR_IS_ERR(request)) return false;
    const auto deadline = Clock::now() + 3s;
    while (ucp_request_check_status(request) == UCS_INPROGRESS && Clock::now() < deadline) {
      ucp_worker_progress(worker_);
    }
    const bool ok = ucp_request_check_status(request) == UCS_OK;
    ucp_request_free(request);
    return ok;
  }

  const bool peer_;
  unsigned current_id_ = 0;
  ucp_context_h context_ = nullptr;
  ucp_worker_h worker_ = nullptr;
  ucp_ep_h ep_ = nullptr;
};

class UcxAmTest : public ::testing::TestWithParam<TransportCase> {
 protected:
  void SetUp() override {
    ASSERT_NE(buffer_.data(), nullptr);
    FillPattern(buffer_.data(), kBufferBytes, 1);
    blocks_.AddLease(kLease4K, {3, 4 * kKiB, 4 * kKiB});
    blocks_.AddLease(kLease256K, {kMiB + 5, 256 * kKiB, 256 * kKiB});
    blocks_.AddLease(kLease2M, {4 * kMiB + 7, kBlock, kBlock});
    blocks_.AddLease(kLeaseSmallCap, {12 * kMiB, 4 * kKiB, 4 * kKiB});
    for (int i = 0; i < kBatchLeases; ++i) {
      blocks_.AddLease(kBatchLease0 + static_cast<std::uint64_t>(i),
                       {kBatchOffset + static_cast<std::size_t>(i) * kBlock, kBlock, kBlock});
    }
    auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0",
                                      .transports = GetParam().tls,
                                      .detect_peer_failure = GetParam().detect_peer_failure,
                                      .op_timeout = kServerOpTimeout});
    if (!plane.ok() && !GetParam().required) {
      GTEST_SKIP() << "UCX_TLS=" << GetParam().tls << " unavailable here: " << plane.status();
    }
    ASSERT_TRUE(plane.ok()) << plane.status();
    plane_ = std::move(*plane);
    plane_->SetHandler(&blocks_);
    auto client = Connect();
    if (!client.ok() && !GetParam().required) {
      GTEST_SKIP() << "UCX_TLS=" << GetParam().tls << " cannot connect here: " << client.status();
    }
    ASSERT_TRUE(client.ok()) << client.status();
    client_ = std::move(*client);
  }

  void TearDown() override {
    if (plane_ == nullptr) return;
    // Every Begin got exactly one End, within the server's timeout.
    EXPECT_TRUE(blocks_.WaitPaired(kServerOpTimeout + 3s));
    const FakeBlocks::Counts c = blocks_.counts();
    EXPECT_EQ(c.begin_reads, c.end_reads);
    EXPECT_EQ(c.begin_writes, c.end_writes);
    EXPECT_EQ(c.unpaired_ends, 0);
    EXPECT_EQ(plane_->pending_operations(), 0u);
    client_.reset();
    plane_.reset();
    // Nothing more after the data plane is gone.
    const FakeBlocks::Counts after = blocks_.counts();
    EXPECT_EQ(after.end_reads, c.end_reads);
    EXPECT_EQ(after.end_writes, c.end_writes);
  }

  absl::StatusOr<std::unique_ptr<UcxTransport>> Connect(std::chrono::milliseconds op_timeout = 5s) {
    return UcxTransport::Connect(
        plane_->address(),
        UcxTransportOptions{.transports = GetParam().tls,
                            .detect_peer_failure = GetParam().detect_peer_failure,
                            .connect_timeout = 3s,
                            .op_timeout = op_timeout});
  }

  const std::uint8_t* At(std::size_t offset) const { return buffer_.data() + offset; }

  Mapping buffer_{kBufferBytes};
  FakeBlocks blocks_{buffer_.data()};
  std::unique_ptr<UcxDataPlane> plane_;
  std::unique_ptr<UcxTransport> client_;
};

TEST_P(UcxAmTest, DataGoesOverTheTransportAskedFor) {
  std::vector<std::uint8_t> buf(kBlock);
  ASSERT_TRUE(client_->Read(kLease2M, buf.data(), buf.size()).ok());
  const std::string lanes = client_->DescribeLanes();
  RecordProperty("lanes", lanes);
  std::cout << "UCX_TLS=\"" << GetParam().tls << "\" lanes:\n" << lanes;
  std::vector<std::string> allowed;
  std::istringstream list(GetParam().data_transports);
  for (std::string item; std::getline(list, item, ',');) allowed.push_back(item);
  int checked = 0;
  std::istringstream lines(lanes);
  for (std::string line; std::getline(lines, line);) {
    // The lanes that carry active messages and rendezvous data ("am", "rma_bw" / "rndv").
    if (line.find("lane[") == std::string::npos || line.find(": cm ") != std::string::npos) {
      continue;
    }
    if (line.find(" am") == std::string::npos && line.find("rndv") == std::string::npos &&
        line.find("rma_bw") == std::string::npos) {
      continue;
    }
    ++checked;
    bool ok = false;
    for (const std::string& transport : allowed) ok |= line.find(transport) != std::string::npos;
    EXPECT_TRUE(ok) << "lane not over " << GetParam().data_transports << ": " << line;
  }
  EXPECT_GT(checked, 0) << lanes;
}

TEST_P(UcxAmTest, ReadsBlocksOfEverySizeByteForByte) {
  struct Case {
    std::uint64_t lease;
    std::size_t offset, length;
  };
  const Case cases[] = {{kLease4K, 3, 4 * kKiB},
                        {kLease256K, kMiB + 5, 256 * kKiB},
                        {kLease2M, 4 * kMiB + 7, kBlock}};
  constexpr std::size_t kGuard = 64;
  for (const Case& c : cases) {
    // The destination is unaligned (+3) and larger than the block, between guard bytes.
    std::vector<std::uint8_t> local(c.length + 100 + 2 * kGuard + 3, 0xa5);
    std::uint8_t* dst = local.data() + kGuard + 3;
    std::size_t received = 0;
    const absl::Status status = client_->Read(c.lease, dst, c.length + 100, &received);
    ASSERT_TRUE(status.ok()) << status << " lease " << c.lease;
    EXPECT_EQ(received, c.length);
    EXPECT_EQ(std::memcmp(dst, At(c.offset), c.length), 0) << "lease " << c.lease;
    for (std::size_t i = 0; i < kGuard + 3; ++i) ASSERT_EQ(local[i], 0xa5) << "guard " << i;
    for (std::size_t i = kGuard + 3 + c.length; i < local.size(); ++i) {
      ASSERT_EQ(local[i], 0xa5) << "byte " << i << " past the block";
    }
  }
  EXPECT_EQ(blocks_.counts().begin_reads, 3);
}

TEST_P(UcxAmTest, WritesLandInTheGrant) {
  struct Case {
    std::uint64_t lease;
    std::size_t offset, length;
  };
  const Case cases[] = {{kLease4K, 3, 4 * kKiB},
                        {kLease256K, kMiB + 5, 256 * kKiB},
                        {kLease2M, 4 * kMiB + 7, kBlock}};
  std::vector<std::uint8_t> original(kBufferBytes);
  std::memcpy(original.data(), buffer_.data(), kBufferBytes);
  blocks_.Sync();
  for (const Case& c : cases) {
    std::vector<std::uint8_t> source(c.length + 1);
    FillPattern(source.data(), source.size(), 1000 + c.lease);
    const absl::Status status = client_->Write(c.lease, source.data() + 1, c.length);
    ASSERT_TRUE(status.ok()) << status << " lease " << c.lease;
    blocks_.Sync();
    EXPECT_EQ(std::memcmp(At(c.offset), source.data() + 1, c.length), 0) << "lease " << c.lease;
    EXPECT_EQ(buffer_.data()[c.offset - 1], original[c.offset - 1]) << "byte before the block";
    EXPECT_EQ(buffer_.data()[c.offset + c.length], original[c.offset + c.length])
        << "byte after the block";
  }
  const FakeBlocks::Counts counts = blocks_.counts();
  EXPECT_EQ(counts.begin_writes, 3);
  EXPECT_EQ(counts.failed_writes, 0);
}

TEST_P(UcxAmTest, TheHandlersErrorReachesTheClient) {
  std::vector<std::uint8_t> buf(kBlock, 0x5a);
  std::size_t received = 77;
  absl::Status status = client_->Read(kUnknownLease, buf.data(), buf.size(), &received);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_EQ(status.message(), "lease 999 is not held here");
  EXPECT_EQ(received, 77u) << "received is set on success only";
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](std::uint8_t b) { return b == 0x5a; }));
  status = client_->Write(kUnknownLease, buf.data(), kBlock);  // rendezvous-sized
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_EQ(status.message(), "lease 999 is not held here");
  status = client_->Write(kUnknownLease, buf.data(), 100);  // eager
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  // A refused op leaves the connection usable; a Begin that failed got no End.
  EXPECT_TRUE(client_->health().ok());
  EXPECT_TRUE(client_->Read(kLease4K, buf.data(), buf.size()).ok());
  const FakeBlocks::Counts counts = blocks_.counts();
  EXPECT_EQ(counts.begin_reads, 1);
  EXPECT_EQ(counts.begin_writes, 0);
}

TEST_P(UcxAmTest, WritesLongerThanTheCapacityWriteNothing) {
  std::vector<std::uint8_t> original(kBufferBytes);
  std::memcpy(original.data(), buffer_.data(), kBufferBytes);
  blocks_.Sync();
  std::vector<std::uint8_t> source(kBlock + kKiB);
  FillPattern(source.data(), source.size(), 9);
  // Eager-sized (8 KiB into a 4 KiB lease) and rendezvous-sized (2 MiB + 1 into 2 MiB).
  absl::Status status = client_->Write(kLeaseSmallCap, source.data(), 8 * kKiB);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  status = client_->Write(kLease2M, source.data(), kBlock + 1);
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  blocks_.Sync();
  EXPECT_EQ(std::memcmp(buffer_.data(), original.data(), kBufferBytes), 0)
      << "a refused write changed the buffer";
  // The Begin that succeeded got its End, with the error.
  const FakeBlocks::Counts counts = blocks_.counts();
  EXPECT_EQ(counts.begin_writes, 2);
  EXPECT_TRUE(blocks_.WaitPaired(3s));
  EXPECT_EQ(blocks_.counts().failed_writes, 2);

  // A block larger than the reader's buffer is refused too, and the buffer is untouched.
  std::vector<std::uint8_t> small(kBlock - 1, 0x5a);
  status = client_->Read(kLease2M, small.data(), small.size());
  EXPECT_EQ(status.code(), absl::StatusCode::kOutOfRange) << status;
  EXPECT_TRUE(std::all_of(small.begin(), small.end(), [](std::uint8_t b) { return b == 0x5a; }));
  EXPECT_TRUE(client_->health().ok());
}

TEST_P(UcxAmTest, BatchesMoveManyBlocksAndReportEachOp) {
  constexpr int kOps = kBatchLeases;
  Mapping source(kOps * kBlock), dest(kOps * kBlock);
  ASSERT_NE(source.data(), nullptr);
  ASSERT_NE(dest.data(), nullptr);
  FillPattern(source.data(), source.size(), 42);
  std::vector<WriteOp> writes;
  for (int i = 0; i < kOps; ++i) {
    writes.push_back({kBatchLease0 + static_cast<std::uint64_t>(i),
                      source.data() + static_cast<std::size_t>(i) * kBlock, kBlock});
  }
  ASSERT_TRUE(client_->WriteMany(writes).ok());
  blocks_.Sync();
  EXPECT_EQ(std::memcmp(At(kBatchOffset), source.data(), kOps * kBlock), 0);

  std::vector<ReadOp> reads;
  std::vector<std::size_t> received(kOps, 0);
  for (int i = 0; i < kOps; ++i) {
    reads.push_back({kBatchLease0 + static_cast<std::uint64_t>(kOps - 1 - i),
                     dest.data() + static_cast<std::size_t>(i) * kBlock, kBlock, &received[i]});
  }
  ASSERT_TRUE(client_->ReadMany(reads).ok());
  for (int i = 0; i < kOps; ++i) {
    EXPECT_EQ(received[i], kBlock);
    EXPECT_EQ(std::memcmp(dest.data() + static_cast<std::size_t>(i) * kBlock,
                          source.data() + static_cast<std::size_t>(kOps - 1 - i) * kBlock, kBlock),
              0)
        << "op " << i;
  }

  // One unknown lease in the middle: it fails alone, the others are served.
  std::vector<absl::Status> statuses(4);
  std::vector<ReadOp> mixed;
  for (int i = 0; i < 4; ++i) {
    mixed.push_back({i == 2 ? kUnknownLease : kBatchLease0 + static_cast<std::uint64_t>(i),
                     dest.data() + static_cast<std::size_t>(i) * kBlock, kBlock, nullptr,
                     &statuses[i]});
  }
  std::memset(dest.data(), 0, 4 * kBlock);
  const absl::Status status = client_->ReadMany(mixed);
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound) << status;
  EXPECT_EQ(status.message(), "op 2: lease 999 is not held here");
  for (int i = 0; i < 4; ++i) {
    if (i == 2) {
      EXPECT_EQ(statuses[i].code(), absl::StatusCode::kNotFound);
      continue;
    }
    EXPECT_TRUE(statuses[i].ok()) << i << ": " << statuses[i];
    EXPECT_EQ(std::memcmp(dest.data() + static_cast<std::size_t>(i) * kBlock,
                          source.data() + static_cast<std::size_t>(i) * kBlock, kBlock),
              0);
  }
  EXPECT_TRUE(client_->ReadMany({}).ok());
  EXPECT_EQ(client_->WriteMany(std::vector<WriteOp>{{kLease4K, nullptr, 8}}).code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_P(UcxAmTest, BeginAndEndAreCalledOncePerOp) {
  std::vector<std::uint8_t> buf(kBlock);
  for (int i = 0; i < 5; ++i) {
    ASSERT_TRUE(client_->Read(kLease4K, buf.data(), buf.size()).ok());
    ASSERT_TRUE(client_->Read(kLease2M, buf.data(), buf.size()).ok());
    ASSERT_TRUE(client_->Write(kLease256K, buf.data(), 256 * kKiB).ok());
    ASSERT_TRUE(client_->Write(kLease2M, buf.data(), kBlock).ok());
  }
  ASSERT_TRUE(blocks_.WaitPaired(3s));
  const FakeBlocks::Counts c = blocks_.counts();
  EXPECT_EQ(c.begin_reads, 10);
  EXPECT_EQ(c.end_reads, 10);
  EXPECT_EQ(c.begin_writes, 10);
  EXPECT_EQ(c.end_writes, 10);
  EXPECT_EQ(c.failed_reads + c.failed_writes, 0);
}

TEST_P(UcxAmTest, ThreadsShareOneTransport) {
  constexpr int kThreads = 4;
  constexpr int kIterations = 12;
  std::vector<std::thread> threads;
  std::vector<int> failures(kThreads, 0);
  std::vector<std::string> first_error(kThreads);
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      // Each thread owns 4 of the batch leases: writes them, reads them back, compares.
      Mapping mine(4 * kBlock), back(4 * kBlock);
      for (int i = 0; i < kIterations; ++i) {
        FillPattern(mine.data(), mine.size(), static_cast<std::uint64_t>(t * 1000 + i));
        std::vector<WriteOp> writes;
        std::vector<ReadOp> reads;
        for (int b = 0; b < 4; ++b) {
          const std::uint64_t lease = kBatchLease0 + static_cast<std::uint64_t>(t * 4 + b);
          writes.push_back({lease, mine.data() + static_cast<std::size_t>(b) * kBlock, kBlock});
          reads.push_back({lease, back.data() + static_cast<std::size_t>(b) * kBlock, kBlock});
        }
        absl::Status status = client_->WriteMany(writes);
        if (status.ok()) status = client_->ReadMany(reads);
        if (status.ok() && std::memcmp(mine.data(), back.data(), mine.size()) != 0) {
          status = absl::DataLossError("read back differs");
        }
        if (!status.ok()) {
          if (failures[t]++ == 0) first_error[t] = status.ToString();
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(failures[t], 0) << t << ": " << first_error[t];
}

TEST_P(UcxAmTest, MalformedRequestsAreAnsweredNotFatal) {
  auto raw = RawClient::Connect(plane_->address(), GetParam());
  ASSERT_NE(raw, nullptr);
  const auto request = [](std::uint64_t id, std::uint64_t lease, std::uint64_t length,
                          std::uint32_t version = ucx_am::kVersion) {
    return ucx_am::Encode(
        ucx_am::Request{.version = version, .request_id = id, .lease_id = lease, .length = length});
  };
  std::vector<std::uint8_t> data(kBlock, 0x77);
  std::vector<std::uint8_t> original(kBufferBytes);
  std::memcpy(original.data(), buffer_.data(), kBufferBytes);
  blocks_.Sync();

  // 1. A header too short to hold a request id: answered with request id 0.
  const std::uint8_t tiny[3] = {1, 0, 0};
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, tiny, sizeof(tiny), nullptr, 0));
  // 2. A header one byte short.
  auto r2 = request(2, kLease4K, 4 * kKiB);
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r2.data(), r2.size() - 1, nullptr, 0));
  // 3. Another version.
  auto r3 = request(3, kLease4K, 4 * kKiB, 7);
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r3.data(), r3.size(), nullptr, 0));
  // 4. A read that carries data.
  auto r4 = request(4, kLease4K, 4 * kKiB);
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r4.data(), r4.size(), data.data(), 100));
  // 5./6. Writes whose header announces another length than the message carries (eager and
  // rendezvous-sized).
  auto r5 = request(5, kLease4K, 50);
  ASSERT_TRUE(raw->Send(ucx_am::kAmWrite, r5.data(), r5.size(), data.data(), 100));
  auto r6 = request(6, kLease2M, 100);
  ASSERT_TRUE(raw->Send(ucx_am::kAmWrite, r6.data(), r6.size(), data.data(), kBlock,
                        UCP_AM_SEND_FLAG_REPLY | UCP_AM_SEND_FLAG_RNDV));
  // 7. No header at all.
  ASSERT_TRUE(raw->Send(ucx_am::kAmWrite, nullptr, 0, data.data(), 10));
  ASSERT_TRUE(raw->WaitForReplies(7, 5s)) << raw->replies.size() << " replies";
  std::map<std::uint64_t, ucx_am::Reply> by_id;
  for (const auto& r : raw->replies) {
    EXPECT_EQ(r.reply.version, ucx_am::kVersion);
    EXPECT_NE(r.reply.code, 0u) << "request " << r.reply.request_id << " was accepted";
    EXPECT_EQ(r.payload.size(), r.reply.length) << "the message's length";
    by_id[r.reply.request_id] = r.reply;
    std::cout << "request " << r.reply.request_id << ": code " << r.reply.code << " \"" << r.payload
              << "\"\n";
  }
  EXPECT_EQ(by_id[2].code, static_cast<std::uint32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(by_id[3].code, static_cast<std::uint32_t>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(by_id[4].code, static_cast<std::uint32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(by_id[5].code, static_cast<std::uint32_t>(absl::StatusCode::kInvalidArgument));
  EXPECT_EQ(by_id[6].code, static_cast<std::uint32_t>(absl::StatusCode::kInvalidArgument));
  // 8. No reply flag: the server cannot answer and drops it.
  auto r8 = request(8, kLease4K, 4 * kKiB);
  ASSERT_TRUE(raw->Send(ucx_am::kAmWrite, r8.data(), r8.size(), data.data(), 4 * kKiB, 0));
  raw->ProgressFor(200ms);
  EXPECT_EQ(raw->replies.size(), 7u);

  // Nothing was written, no handler was called, and the server serves on.
  blocks_.Sync();
  EXPECT_EQ(std::memcmp(buffer_.data(), original.data(), kBufferBytes), 0);
  const FakeBlocks::Counts counts = blocks_.counts();
  EXPECT_EQ(counts.begin_reads + counts.begin_writes, 0);
  std::vector<std::uint8_t> buf(kBlock);
  EXPECT_TRUE(client_->Read(kLease2M, buf.data(), buf.size()).ok());
  // A well-formed request from the raw client is served too.
  auto r9 = request(9, kLease4K, 4 * kKiB);
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r9.data(), r9.size(), nullptr, 0));
  ASSERT_TRUE(raw->WaitForReplies(8, 5s));
  EXPECT_EQ(raw->replies.back().reply.code, 0u);
  EXPECT_EQ(raw->replies.back().reply.length, 4 * kKiB);
}

TEST_P(UcxAmTest, AStalledClientsTransferEndsInAnError) {
  // A client that asks for a 2 MiB block and then never progresses its worker: the server's
  // rendezvous send cannot complete.
  auto raw = RawClient::Connect(plane_->address(), GetParam());
  ASSERT_NE(raw, nullptr);
  auto r = ucx_am::Encode(ucx_am::Request{.request_id = 1, .lease_id = kLease2M, .length = kBlock});
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r.data(), r.size(), nullptr, 0));
  const auto start = Clock::now();
  while (blocks_.counts().begin_reads == 0 && Clock::now() - start < 3s) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ(blocks_.counts().begin_reads, 1);
  if (GetParam().detect_peer_failure) {
    // Cancelled at the deadline: the server closes the client's endpoint.
    EXPECT_TRUE(blocks_.WaitPaired(kServerOpTimeout + 2s));
    EXPECT_LT(Clock::now() - start, kServerOpTimeout + 2s);
  } else {
    // UCX 1.13 cannot cancel it without peer failure detection: the grant stays until the
    // connection drops. Dropping it (the client goes away) ends it.
    std::this_thread::sleep_for(kServerOpTimeout + 500ms);
    EXPECT_EQ(blocks_.counts().end_reads, 0) << "ended although UCX could not cancel it";
    raw->Abandon();
    EXPECT_TRUE(blocks_.WaitPaired(3s));
  }
  const FakeBlocks::Counts c = blocks_.counts();
  EXPECT_EQ(c.end_reads, 1);
  EXPECT_EQ(c.failed_reads, 1);
  for (const absl::Status& e : blocks_.errors()) std::cout << "EndRead: " << e << "\n";
  // And the server serves the next client.
  std::vector<std::uint8_t> buf(kBlock);
  auto next = Connect();
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_TRUE((*next)->Read(kLease2M, buf.data(), buf.size()).ok());
  EXPECT_EQ(std::memcmp(buf.data(), At(4 * kMiB + 7), kBlock), 0);
}

TEST_P(UcxAmTest, AClientKilledMidTransferCostsTheServerNothing) {
  // At least 3 kills, and more (up to 8) until one has interrupted a transfer: a transfer the
  // daemon still counts as in flight may yet complete (its data already in the socket), so a
  // single kill proves nothing either way.
  int interrupted = 0;
  for (int round = 0; round < 3 || (interrupted == 0 && round < 8); ++round) {
    const FakeBlocks::Counts before = blocks_.counts();
    testing::Subprocess child({UCX_AM_CHILD_BIN, plane_->address(), GetParam().tls,
                               GetParam().detect_peer_failure ? "1" : "0"});
    ASSERT_TRUE(child.WaitForLine("looping", 10s).has_value()) << child.output();
    std::this_thread::sleep_for(200ms);
    // Kill it while the daemon has a transfer of it in flight (where the daemon's part is short,
    // as with cma, a kill at a random moment often finds none).
    const auto aim = Clock::now();
    while (plane_->pending_operations() == 0 && Clock::now() - aim < 2s) {
    }
    child.Signal(SIGKILL);
    ASSERT_EQ(child.Wait(5s), 128 + SIGKILL) << child.output();
    const auto killed = Clock::now();
    // Every Begin gets its End within the server's timeout.
    EXPECT_TRUE(blocks_.WaitPaired(kServerOpTimeout + 3s)) << "round " << round;
    const auto ended = Clock::now();
    const FakeBlocks::Counts after = blocks_.counts();
    interrupted +=
        after.failed_reads + after.failed_writes - before.failed_reads - before.failed_writes;
    std::cout << "round " << round << ": " << after.begin_reads - before.begin_reads << " reads, "
              << after.begin_writes - before.begin_writes << " writes, "
              << after.failed_reads - before.failed_reads << " + "
              << after.failed_writes - before.failed_writes << " ended with an error, all ended "
              << std::chrono::duration_cast<std::chrono::milliseconds>(ended - killed).count()
              << " ms after the kill\n";
    EXPECT_GT(after.begin_reads - before.begin_reads, 0);
    // A new client is served.
    auto next = Connect();
    ASSERT_TRUE(next.ok()) << next.status();
    std::vector<std::uint8_t> buf(kBlock);
    FillPattern(buf.data(), kBlock, 5 + static_cast<std::uint64_t>(round));
    const absl::Status written = (*next)->Write(kLease2M, buf.data(), kBlock);
    ASSERT_TRUE(written.ok()) << written;
    std::vector<std::uint8_t> back(kBlock);
    const absl::Status read = (*next)->Read(kLease2M, back.data(), kBlock);
    ASSERT_TRUE(read.ok()) << read;
    EXPECT_EQ(back, buf);
  }
  for (const absl::Status& e : blocks_.errors()) std::cout << "End: " << e << "\n";
  EXPECT_GT(interrupted, 0) << "no transfer was interrupted in 8 kills";
  EXPECT_TRUE(client_->Read(kLease4K, std::vector<std::uint8_t>(4 * kKiB).data(), 4 * kKiB).ok());
}

TEST_P(UcxAmTest, DISABLED_Throughput) {
  // 2 MiB blocks, batches of 8, for about a second per case, 1 and 4 client threads sharing one
  // transport; single-core memcpy of the same blocks for scale.
  constexpr int kBatch = 8;
  const auto kDuration = 1500ms;
  Mapping src(kBatch * kBlock), dst(kBatch * kBlock);
  FillPattern(src.data(), src.size(), 3);
  std::memset(dst.data(), 0, dst.size());
  double memcpy_gbps = 0;
  {
    std::size_t bytes = 0;
    const auto start = Clock::now();
    while (Clock::now() - start < kDuration) {
      for (int b = 0; b < kBatch; ++b) {
        std::memcpy(dst.data() + static_cast<std::size_t>(b) * kBlock,
                    buffer_.data() + kBatchOffset + static_cast<std::size_t>(b) * kBlock, kBlock);
      }
      bytes += kBatch * kBlock;
    }
    memcpy_gbps = static_cast<double>(bytes) /
                  std::chrono::duration<double>(Clock::now() - start).count() / 1e9;
  }
  std::cout << fmt::format("transport {:>4}: memcpy 1 core {:6.2f} GB/s\n", GetParam().name,
                           memcpy_gbps);
  for (const bool write : {false, true}) {
    for (const int threads : {1, 4}) {
      std::atomic<std::size_t> bytes{0};
      std::atomic<int> errors{0};
      std::vector<std::thread> pool;
      const auto start = Clock::now();
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          Mapping mine(kBatch * kBlock);
          std::memset(mine.data(), t, mine.size());
          std::vector<ReadOp> reads;
          std::vector<WriteOp> writes;
          for (int b = 0; b < kBatch; ++b) {
            const std::uint64_t lease =
                kBatchLease0 + static_cast<std::uint64_t>((t * kBatch + b) % kBatchLeases);
            reads.push_back({lease, mine.data() + static_cast<std::size_t>(b) * kBlock, kBlock});
            writes.push_back({lease, mine.data() + static_cast<std::size_t>(b) * kBlock, kBlock});
          }
          while (Clock::now() - start < kDuration) {
            const absl::Status status =
                write ? client_->WriteMany(writes) : client_->ReadMany(reads);
            if (!status.ok()) {
              ++errors;
              return;
            }
            bytes += kBatch * kBlock;
          }
        });
      }
      for (auto& thread : pool) thread.join();
      const double gbps = static_cast<double>(bytes.load()) /
                          std::chrono::duration<double>(Clock::now() - start).count() / 1e9;
      EXPECT_EQ(errors.load(), 0);
      std::cout << fmt::format(
          "transport {:>4}: {:5} 2 MiB blocks, {} thread(s): {:6.2f} GB/s ({:.2f}x memcpy)\n",
          GetParam().name, write ? "write" : "read", threads, gbps, gbps / memcpy_gbps);
      RecordProperty(fmt::format("{}_{}threads_GBps", write ? "write" : "read", threads),
                     fmt::format("{:.2f}", gbps));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxAmTest, ::testing::ValuesIn(kTransports),
                         [](const ::testing::TestParamInfo<TransportCase>& param_info) {
                           return std::string(param_info.param.name);
                         });

TEST(UcxAmNoHandlerTest, RequestsBeforeSetHandlerAreUnavailable) {
  auto plane = UcxDataPlane::Start({.listen_address = "127.0.0.1:0", .transports = "tcp"});
  ASSERT_TRUE(plane.ok()) << plane.status();
  auto client = UcxTransport::Connect((*plane)->address(), {.transports = "tcp"});
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<std::uint8_t> buf(kKiB);
  EXPECT_EQ((*client)->Read(1, buf.data(), buf.size()).code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ((*client)->Write(1, buf.data(), buf.size()).code(), absl::StatusCode::kUnavailable);
  EXPECT_TRUE((*client)->health().ok());
}

TEST(UcxAmNoHandlerTest, ShutdownEndsWhatIsInFlight) {
  // The data plane is destroyed while a stalled client holds a grant: EndRead still comes, once.
  Mapping buffer(4 * kMiB);
  FakeBlocks blocks(buffer.data());
  blocks.AddLease(1, {0, kBlock, kBlock});
  auto plane = UcxDataPlane::Start(
      {.listen_address = "127.0.0.1:0", .transports = "tcp", .op_timeout = 60s});
  ASSERT_TRUE(plane.ok()) << plane.status();
  (*plane)->SetHandler(&blocks);
  auto raw = RawClient::Connect((*plane)->address(), kTransports[0]);
  ASSERT_NE(raw, nullptr);
  auto r = ucx_am::Encode(ucx_am::Request{.request_id = 1, .lease_id = 1, .length = kBlock});
  ASSERT_TRUE(raw->Send(ucx_am::kAmRead, r.data(), r.size(), nullptr, 0));
  const auto start = Clock::now();
  while ((*plane)->pending_operations() == 0 && Clock::now() - start < 3s) {
    std::this_thread::sleep_for(1ms);
  }
  ASSERT_EQ((*plane)->pending_operations(), 1u);
  plane->reset();
  const FakeBlocks::Counts c = blocks.counts();
  EXPECT_EQ(c.begin_reads, 1);
  EXPECT_EQ(c.end_reads, 1);
  EXPECT_EQ(c.failed_reads, 1);
  EXPECT_EQ(c.unpaired_ends, 0);
}

}  // namespace
}  // namespace cachesvc
