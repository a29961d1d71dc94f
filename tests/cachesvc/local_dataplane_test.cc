// The same-host data plane (cachesvc/local_dataplane.h, client/local_transport.h,
// docs/local.md) against the real daemon: BlockClient loads and looks up through it, bytes
// equal; tenants stay apart; bad requests get their status and leave what is stored alone; peers
// get a read-only arena; a connection's leases end when it closes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <thread>

#include "cachesvc/local_protocol.h"
#include "client/local_transport.h"
#include "tests/cachesvc/serving_fixture.h"

namespace cachesvc {
namespace {

using ::cachesvc::client::LocalTransport;

// A raw connection to the local socket, for requests the client library never sends.
class RawPeer {
 public:
  explicit RawPeer(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, path.data(), path.size());
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawPeer() { ::close(fd_); }
  bool connected() const { return connected_; }

  void Send(const std::string& frame) {
    ASSERT_EQ(::send(fd_, frame.data(), frame.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(frame.size()));
  }
  struct Reply {
    bool closed = false;  // the daemon closed the connection instead of answering
    std::uint32_t code = 0;
    std::string message;
    std::string rest;  // the fields after the message
    int fd = -1;       // a descriptor passed with the reply
  };
  Reply Receive() {
    Reply out;
    std::string bytes;
    while (true) {
      char buf[65536];
      iovec iov{buf, sizeof buf};
      msghdr msg{};
      msg.msg_iov = &iov;
      msg.msg_iovlen = 1;
      alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))];
      msg.msg_control = control;
      msg.msg_controllen = sizeof control;
      const ssize_t n = ::recvmsg(fd_, &msg, MSG_CMSG_CLOEXEC);
      if (n <= 0) {
        out.closed = true;
        return out;
      }
      for (cmsghdr* cm = CMSG_FIRSTHDR(&msg); cm != nullptr; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_type == SCM_RIGHTS) std::memcpy(&out.fd, CMSG_DATA(cm), sizeof(int));
      }
      bytes.append(buf, static_cast<std::size_t>(n));
      if (bytes.size() >= 4) {
        local::Reader len(std::string_view(bytes).substr(0, 4));
        if (bytes.size() >= 4 + *len.U32()) break;
      }
    }
    local::Reader r(std::string_view(bytes).substr(4));
    EXPECT_EQ(*r.U32(), local::kReply);
    out.code = *r.U32();
    const std::uint32_t message_length = *r.U32();
    out.message = std::string(*r.Bytes(message_length));
    out.rest = std::string(*r.Bytes(r.remaining()));
    return out;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

std::string Hello(const std::string& engine_id, std::uint32_t version = local::kVersion) {
  local::Writer w;
  w.U32(local::kHello).U32(version).U32(static_cast<std::uint32_t>(engine_id.size()));
  w.Bytes(engine_id);
  return w.Finish();
}

std::string KeysRequest(local::MessageType type, std::span<const BlockKey> keys) {
  local::Writer w;
  w.U32(type).U32(static_cast<std::uint32_t>(keys.size()));
  for (const BlockKey& k : keys) w.Bytes(k.Bytes());
  return w.Finish();
}

class LocalDataPlaneTest : public ::testing::Test {
 protected:
  void Start(std::vector<std::string> extra = {}) {
    const auto dir = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    socket_ = (dir / "local.sock").string();
    extra.insert(extra.end(), {"--local-socket", socket_});
    daemon_ = std::make_unique<Daemon>(dir, extra);
    ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
    a_ = daemon_->Client(kTokenA);
    auto engine = a_->RegisterEngine(TestLayout());
    ASSERT_TRUE(engine.ok()) << engine.status();
    ASSERT_NE(a_->local_plane(), nullptr) << a_->local_status();
  }
  void SetUp() override { Start(); }

  // A client of tenant a that loads over UCX even though the daemon offers the local path.
  std::unique_ptr<BlockClient> UcxOnlyClient() const {
    BlockClientOptions options;
    options.address = daemon_->address();
    options.token = kTokenA;
    options.use_local = false;
    auto c = BlockClient::Connect(options);
    EXPECT_TRUE(c.ok()) << c.status();
    EXPECT_TRUE((*c)->RegisterEngine(TestLayout()).ok());
    return std::move(*c);
  }

  // Requests of `method` answered `code` (0 when the series does not exist yet).
  double Count(const std::string& method, const std::string& code = "OK") const {
    return std::max(0.0, daemon_->Metric("cachesvc_rpc_requests_total{code=\"" + code +
                                         "\",method=\"" + method + "\"}"));
  }

  std::string socket_;
  std::unique_ptr<Daemon> daemon_;
  std::unique_ptr<BlockClient> a_;
};

TEST_F(LocalDataPlaneTest, LoadsAndLookupsTakeTheLocalPathWithTheSameBytes) {
  const Blocks blocks(6, 256 << 10, 11);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 6u);

  auto found = a_->LookupPrefix(blocks.keys);
  ASSERT_TRUE(found.ok()) << found.status();
  EXPECT_EQ(*found, 6u);
  Buffers out(6, 256 << 10);
  auto loaded = a_->Load(blocks.keys, out.Views());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(*loaded, 6u);
  for (std::size_t i = 0; i < 6; ++i) EXPECT_EQ(out.data[i], blocks.data[i]) << "block " << i;

  // A prefix: the stored ones up to the first missing key.
  std::vector<BlockKey> gap = {blocks.keys[0], blocks.keys[1], Blocks(1, 16, 99).keys[0],
                               blocks.keys[3]};
  EXPECT_EQ(*a_->LookupPrefix(gap), 2u);
  Buffers out2(4, 256 << 10);
  EXPECT_EQ(*a_->Load(gap, out2.Views()), 2u);

  EXPECT_EQ(Count("local.Lookup"), 2);
  EXPECT_EQ(Count("local.Lease"), 2);
  // Neither went over gRPC.
  EXPECT_EQ(Count("LookupPrefix"), 0);
  EXPECT_EQ(Count("LeaseBlocks"), 0);
  // Every lease was released (RELEASE needs no answer: wait for the daemon to read it).
  for (int i = 0; i < 100 && daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}") != 0;
       ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 0);
}

TEST_F(LocalDataPlaneTest, KeysFromTokensAreTheOnesLookupPrefixDerives) {
  // 3 full blocks of 16 tokens and a tail of 5.
  std::vector<std::uint32_t> tokens(16 * 3 + 5);
  for (std::size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<std::uint32_t>(i * 31);
  v1::LookupPrefixRequest req;
  req.set_engine_id(a_->engine().engine_id);
  req.mutable_tokens()->mutable_tokens()->Add(tokens.begin(), tokens.end());
  v1::LookupPrefixResponse over_grpc;
  auto ctx = a_->NewContext();
  ASSERT_TRUE(a_->stub().LookupPrefix(ctx.get(), req, &over_grpc).ok());
  ASSERT_EQ(over_grpc.keys_size(), 3);

  auto local = a_->local_plane()->Keys(tokens);
  ASSERT_TRUE(local.ok()) << local.status();
  ASSERT_EQ(local->keys.size(), 3u);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(local->keys[static_cast<std::size_t>(i)].Bytes(), over_grpc.keys(i).key());
  }
  EXPECT_EQ(local->cached_blocks, 0u);
  // Saved under those keys, the first two are found.
  const Blocks blocks(2, 256 << 10, 16);
  ASSERT_EQ(*a_->Save(std::span(local->keys).first(2), blocks.Views()), 2u);
  EXPECT_EQ(*a_->LookupPrefixTokens(tokens), 2u);
  EXPECT_EQ(Count("local.Keys"), 2);

  // Another tenant's engine derives other keys from the same tokens.
  auto b = daemon_->Client(kTokenB);
  ASSERT_TRUE(b->RegisterEngine(TestLayout()).ok());
  auto other = b->local_plane()->Keys(tokens);
  ASSERT_TRUE(other.ok());
  EXPECT_NE(other->keys[0], local->keys[0]);
  EXPECT_EQ(other->cached_blocks, 0u);
}

TEST_F(LocalDataPlaneTest, ABusyPollingDaemonAnswersTheSame) {
  daemon_.reset();
  a_.reset();
  Start({"--local-busy-poll-us", "2000"});
  const Blocks blocks(4, 256 << 10, 17);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 4u);
  for (int round = 0; round < 3; ++round) {
    Buffers out(4, 256 << 10);
    ASSERT_EQ(*a_->Load(blocks.keys, out.Views()), 4u);
    EXPECT_EQ(out.data[3], blocks.data[3]);
    EXPECT_EQ(*a_->LookupPrefix(blocks.keys), 4u);
    std::this_thread::sleep_for(5ms);  // past the polling window: the thread sleeps, then wakes
  }
  EXPECT_EQ(Count("local.Lease"), 3);
}

TEST_F(LocalDataPlaneTest, TenantsDoNotSeeEachOthersBlocks) {
  const Blocks blocks(3, 256 << 10, 12);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 3u);
  auto b = daemon_->Client(kTokenB);
  ASSERT_TRUE(b->RegisterEngine(TestLayout()).ok());
  ASSERT_NE(b->local_plane(), nullptr) << b->local_status();
  EXPECT_EQ(*b->LookupPrefix(blocks.keys), 0u);
  Buffers out(3, 256 << 10);
  EXPECT_EQ(*b->Load(blocks.keys, out.Views()), 0u);
  auto leases = b->local_plane()->Lease(blocks.keys);
  ASSERT_TRUE(leases.ok());
  EXPECT_TRUE(leases->empty());
}

TEST_F(LocalDataPlaneTest, AnUnknownEngineIsRefusedAndTheClientUsesUcxInstead) {
  auto t = LocalTransport::Connect(socket_, "0123456789abcdef0123456789abcdef");
  ASSERT_FALSE(t.ok());
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound) << t.status();

  // A client told not to use it loads the same bytes over UCX.
  const Blocks blocks(2, 256 << 10, 13);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 2u);
  auto ucx_only = UcxOnlyClient();
  EXPECT_EQ(ucx_only->local_plane(), nullptr);
  Buffers out(2, 256 << 10);
  EXPECT_EQ(*ucx_only->Load(blocks.keys, out.Views()), 2u);
  EXPECT_EQ(out.data[1], blocks.data[1]);
  EXPECT_EQ(Count("LeaseBlocks"), 1);
}

TEST_F(LocalDataPlaneTest, BadRequestsGetTheirStatusAndTouchNothing) {
  const Blocks blocks(4, 256 << 10, 14);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 4u);
  const auto code = [](absl::StatusCode c) { return static_cast<std::uint32_t>(c); };
  {
    RawPeer peer(socket_);
    ASSERT_TRUE(peer.connected());
    peer.Send(KeysRequest(local::kLease, blocks.keys));  // before HELLO
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kFailedPrecondition));
    peer.Send(Hello(a_->engine().engine_id, 2));
    auto r = peer.Receive();
    EXPECT_EQ(r.code, code(absl::StatusCode::kFailedPrecondition));
    EXPECT_NE(r.message.find("version 2"), std::string::npos) << r.message;
    local::Writer unknown;
    unknown.U32(99);
    peer.Send(unknown.Finish());
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kInvalidArgument));
    peer.Send(Hello(a_->engine().engine_id));
    r = peer.Receive();
    ASSERT_EQ(r.code, 0u) << r.message;
    ::close(r.fd);
    peer.Send(Hello(a_->engine().engine_id));  // twice
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kFailedPrecondition));
    // Two keys announced, one sent.
    local::Writer short_keys;
    short_keys.U32(local::kLease).U32(2).Bytes(blocks.keys[0].Bytes());
    peer.Send(short_keys.Finish());
    r = peer.Receive();
    EXPECT_EQ(r.code, code(absl::StatusCode::kInvalidArgument));
    EXPECT_NE(r.message.find("2 keys"), std::string::npos) << r.message;
    local::Writer odd_tokens;  // 3 tokens announced, 2 sent
    odd_tokens.U32(local::kKeys).U32(3).U32(1).U32(2);
    peer.Send(odd_tokens.Finish());
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kInvalidArgument));
    local::Writer too_many;
    too_many.U32(local::kLookup).U32(local::kMaxItems + 1);
    peer.Send(too_many.Finish());
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kInvalidArgument));
    // A malformed RELEASE has no answer and releases nothing; the connection stays usable.
    local::Writer bad_release;
    bad_release.U32(local::kRelease).U32(3).U64(1);
    peer.Send(bad_release.Finish());
    peer.Send(KeysRequest(local::kLookup, blocks.keys));
    r = peer.Receive();
    ASSERT_EQ(r.code, 0u) << r.message;
    EXPECT_EQ(*local::Reader(r.rest).U32(), 4u);
    // A frame longer than any body: answered, then the connection closes.
    peer.Send(std::string("\xff\xff\xff\x7f", 4));
    EXPECT_EQ(peer.Receive().code, code(absl::StatusCode::kInvalidArgument));
    EXPECT_TRUE(peer.Receive().closed);
  }
  // Nothing stored changed.
  Buffers out(4, 256 << 10);
  ASSERT_EQ(*a_->Load(blocks.keys, out.Views()), 4u);
  for (std::size_t i = 0; i < 4; ++i) EXPECT_EQ(out.data[i], blocks.data[i]);
}

TEST_F(LocalDataPlaneTest, PeersGetTheArenaReadOnly) {
  RawPeer peer(socket_);
  ASSERT_TRUE(peer.connected());
  peer.Send(Hello(a_->engine().engine_id));
  auto r = peer.Receive();
  ASSERT_EQ(r.code, 0u) << r.message;
  ASSERT_GE(r.fd, 0);
  const std::uint64_t bytes = *local::Reader(r.rest).U64();
  EXPECT_EQ(bytes, 64u << 20);
  EXPECT_EQ(::fcntl(r.fd, F_GETFL) & O_ACCMODE, O_RDONLY);
  void* rw = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, r.fd, 0);
  EXPECT_EQ(rw, MAP_FAILED);
  EXPECT_EQ(errno, EACCES);
  void* ro = ::mmap(nullptr, bytes, PROT_READ, MAP_SHARED, r.fd, 0);
  EXPECT_NE(ro, MAP_FAILED);
  if (ro != MAP_FAILED) ::munmap(ro, bytes);
  ::close(r.fd);
}

TEST_F(LocalDataPlaneTest, AConnectionsLeasesEndWhenItCloses) {
  // Leases that would otherwise last ten minutes. (Past 5 minutes every load used to be a miss:
  // the host tier refused to pin a slot for twice the lease timeout.)
  daemon_.reset();
  a_.reset();
  Start({"--lease-timeout-ms", "600000"});
  const Blocks blocks(5, 256 << 10, 15);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 5u);
  Buffers over_ucx(5, 256 << 10);
  EXPECT_EQ(*UcxOnlyClient()->Load(blocks.keys, over_ucx.Views()), 5u);
  {
    auto t = LocalTransport::Connect(socket_, a_->engine().engine_id);
    ASSERT_TRUE(t.ok()) << t.status();
    auto leases = (*t)->Lease(blocks.keys);
    ASSERT_TRUE(leases.ok()) << leases.status();
    ASSERT_EQ(leases->size(), 5u);
    EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 5);
    // The copy matches, into a 64-byte aligned buffer (the streaming copy) and into one that is
    // not (memcpy), and a wrong checksum is DATA_LOSS on both.
    std::vector<std::byte> copy(256 << 10);
    std::vector<std::byte> backing((256 << 10) + 128);
    auto* base = reinterpret_cast<std::byte*>(
        (reinterpret_cast<std::uintptr_t>(backing.data()) + 63) / 64 * 64);
    auto wrong = (*leases)[2];
    wrong.checksum ^= 1;
    for (std::size_t shift : {0, 1, 16}) {
      SCOPED_TRACE(shift);
      const std::span<std::byte> out(base + shift, 256 << 10);
      std::fill(out.begin(), out.end(), std::byte{0});
      ASSERT_TRUE((*t)->Read((*leases)[2], out).ok());
      EXPECT_TRUE(std::equal(out.begin(), out.end(), blocks.data[2].begin()));
      EXPECT_EQ((*t)->Read(wrong, out).code(), absl::StatusCode::kDataLoss);
      std::fill(out.begin(), out.end(), std::byte{0});
      ASSERT_TRUE((*t)->Copy((*leases)[3], out).ok());
      EXPECT_TRUE(std::equal(out.begin(), out.end(), blocks.data[3].begin()));
    }
    EXPECT_EQ((*t)->Read((*leases)[2], std::span<std::byte>(copy).first(100)).code(),
              absl::StatusCode::kOutOfRange);
  }  // closed without RELEASE, as a killed engine would
  for (int i = 0; i < 500 && daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}") != 0;
       ++i) {
    std::this_thread::sleep_for(20ms);
  }
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 0);
}

TEST(LocalDataPlaneConfigTest, ASecondDaemonCannotTakeALiveSocket) {
  const auto dir = FreshDir("local_second");
  const std::string socket = (dir / "local.sock").string();
  std::filesystem::create_directories(dir / "one");
  Daemon first(dir / "one", {"--local-socket", socket});
  ASSERT_FALSE(first.address().empty()) << first.process().output();
  std::vector<std::string> argv = {CACHESVC_BIN,
                                   "--listen",
                                   "127.0.0.1:0",
                                   "--metrics-listen",
                                   "127.0.0.1:0",
                                   "--data-dir",
                                   (dir / "two").string(),
                                   "--tiers-host-capacity-bytes",
                                   "67108864",
                                   "--local-socket",
                                   socket};
  Subprocess second(argv);
  const std::optional<int> status = second.Wait(30s);
  ASSERT_TRUE(status.has_value()) << "the second daemon kept running";
  EXPECT_NE(*status, 0);
  EXPECT_NE(second.output().find("another process is listening there"), std::string::npos)
      << second.output();
}

}  // namespace
}  // namespace cachesvc
