// Starts the real cachesvc binary with two tenants and talks to it as engine connectors do: gRPC
// BlockService for control, the UCX block protocol for the bytes (client/block_client.h). Save
// then load byte-identical; tenants isolated; bad tokens refused; leases expire; forged lease ids
// and bad commits refused without touching what is stored; blocks on NVMe survive SIGKILL.
#include <gtest/gtest.h>
#include <signal.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <regex>
#include <sstream>
#include <thread>

#include "cachesvc/tenants.h"
#include "client/block_client.h"
#include "fmt/format.h"
#include "grpcpp/grpcpp.h"
#include "proto/xxh3.h"
#include "tests/cachesvc/serving_fixture.h"
#include "tests/support/daemon.h"
#include "tests/support/subprocess.h"

namespace cachesvc {
namespace {

TEST_F(ServingTest, SaveThenLoadAPrefixByteIdentical) {
  Blocks blocks(8, 256 << 10, 1);
  auto saved = a_->Save(blocks.keys, blocks.Views());
  ASSERT_TRUE(saved.ok()) << saved.status();
  EXPECT_EQ(*saved, 8u);
  EXPECT_EQ(*a_->Save(blocks.keys, blocks.Views()), 0u) << "already stored: nothing new";
  EXPECT_EQ(*a_->LookupPrefix(blocks.keys), 8u);

  Buffers out(8, 256 << 10);
  auto loaded = a_->Load(blocks.keys, out.Views());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(*loaded, 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(out.data[i], blocks.data[i]) << i;

  // A prefix stops at the first block not stored.
  Blocks other(1, 256 << 10, 2);
  std::vector<BlockKey> gap = {blocks.keys[0], other.keys[0], blocks.keys[1]};
  EXPECT_EQ(*a_->LookupPrefix(gap), 1u);
  Buffers out2(3, 256 << 10);
  EXPECT_EQ(*a_->Load(gap, out2.Views()), 1u);
}

TEST_F(ServingTest, TenantsCannotSeeEachOthersBlocksOrEngines) {
  Blocks blocks(4, 256 << 10, 3);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 4u);
  auto b = daemon_->Client(kTokenB);
  ASSERT_TRUE(b->RegisterEngine(TestLayout()).ok());
  EXPECT_EQ(*b->LookupPrefix(blocks.keys), 0u) << "the same key bytes name another block for b";
  Buffers out(4, 256 << 10);
  EXPECT_EQ(*b->Load(blocks.keys, out.Views()), 0u);

  // a's engine id is not b's to use.
  v1::LookupPrefixRequest req;
  req.set_engine_id(a_->engine().engine_id);
  req.mutable_keys()->add_keys()->set_key(std::string(blocks.keys[0].Bytes()));
  v1::LookupPrefixResponse resp;
  auto ctx = b->NewContext();
  EXPECT_EQ(b->stub().LookupPrefix(ctx.get(), req, &resp).error_code(), grpc::NOT_FOUND);

  // Neither are a's leases.
  v1::LeaseBlocksRequest lease_req;
  lease_req.set_engine_id(a_->engine().engine_id);
  lease_req.add_keys()->set_key(std::string(blocks.keys[0].Bytes()));
  v1::LeaseBlocksResponse leases;
  auto actx = a_->NewContext();
  ASSERT_TRUE(a_->stub().LeaseBlocks(actx.get(), lease_req, &leases).ok());
  ASSERT_EQ(leases.leases_size(), 1);
  v1::ReleaseLeasesRequest release;
  release.add_lease_ids(leases.leases(0).lease_id());
  v1::ReleaseLeasesResponse released;
  auto bctx = b->NewContext();
  EXPECT_EQ(b->stub().ReleaseLeases(bctx.get(), release, &released).error_code(), grpc::NOT_FOUND);
  auto actx2 = a_->NewContext();
  EXPECT_TRUE(a_->stub().ReleaseLeases(actx2.get(), release, &released).ok());
}

TEST_F(ServingTest, BadTokensAreRefused) {
  for (const char* token : {"", "not-a-known-token"}) {
    auto c = daemon_->Client(token);
    auto engine = c->RegisterEngine(TestLayout());
    ASSERT_FALSE(engine.ok());
    EXPECT_EQ(engine.status().code(), absl::StatusCode::kUnauthenticated) << engine.status();
    EXPECT_EQ(std::string(engine.status().message()).find("not-a-known-token"), std::string::npos)
        << "the token is never echoed";
  }
}

TEST_F(ServingTest, ALeaseExpiresAndAForgedOneIsRefused) {
  Blocks blocks(1, 256 << 10, 4);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 1u);
  v1::LeaseBlocksRequest req;
  req.set_engine_id(a_->engine().engine_id);
  req.add_keys()->set_key(std::string(blocks.keys[0].Bytes()));
  v1::LeaseBlocksResponse leases;
  auto ctx = a_->NewContext();
  ASSERT_TRUE(a_->stub().LeaseBlocks(ctx.get(), req, &leases).ok());
  const std::uint64_t id = leases.leases(0).lease_id();
  std::vector<std::byte> buf(256 << 10);
  EXPECT_EQ(absl::StatusCode::kNotFound,
            a_->data_plane()->Read(id ^ 0x5a5a5a5a5a5a5a5aull, buf.data(), buf.size()).code())
      << "a forged lease id";
  std::this_thread::sleep_for(3s);  // lease_timeout_ms 1500 plus the reaper's second
  EXPECT_EQ(absl::StatusCode::kNotFound, a_->data_plane()->Read(id, buf.data(), buf.size()).code())
      << "the lease expired";
  // A live lease reads the block.
  auto ctx2 = a_->NewContext();
  ASSERT_TRUE(a_->stub().LeaseBlocks(ctx2.get(), req, &leases).ok());
  EXPECT_TRUE(a_->data_plane()->Read(leases.leases(0).lease_id(), buf.data(), buf.size()).ok());
  EXPECT_EQ(buf, blocks.data[0]);
  // The block itself is still there.
  Buffers out(1, 256 << 10);
  EXPECT_EQ(*a_->Load(blocks.keys, out.Views()), 1u);
}

// A read lease is good for one read: the daemon ends it once the block is sent, so a load needs
// no ReleaseLeases round trip, and nothing is left outstanding.
TEST_F(ServingTest, AReadLeaseEndsWithItsRead) {
  Blocks blocks(1, 256 << 10, 5);
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 1u);
  v1::LeaseBlocksRequest req;
  req.set_engine_id(a_->engine().engine_id);
  req.add_keys()->set_key(std::string(blocks.keys[0].Bytes()));
  v1::LeaseBlocksResponse leases;
  ASSERT_TRUE(a_->stub().LeaseBlocks(a_->NewContext().get(), req, &leases).ok());
  ASSERT_TRUE(leases.leases(0).ends_after_read());
  EXPECT_EQ(leases.leases(0).layout_fingerprint(), a_->engine().layout_fingerprint)
      << "the lease names the layout the block was saved for";
  const std::uint64_t id = leases.leases(0).lease_id();
  std::vector<std::byte> buf(256 << 10);
  ASSERT_TRUE(a_->data_plane()->Read(id, buf.data(), buf.size()).ok());
  EXPECT_EQ(buf, blocks.data[0]);
  EXPECT_EQ(absl::StatusCode::kNotFound, a_->data_plane()->Read(id, buf.data(), buf.size()).code())
      << "read once";
  v1::ReleaseLeasesRequest release;
  release.add_lease_ids(id);
  v1::ReleaseLeasesResponse released;
  EXPECT_EQ(a_->stub().ReleaseLeases(a_->NewContext().get(), release, &released).error_code(),
            grpc::StatusCode::NOT_FOUND);
  Buffers out(1, 256 << 10);
  EXPECT_EQ(*a_->Load(blocks.keys, out.Views()), 1u);
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 0);
  EXPECT_EQ(daemon_->Metric("cachesvc_rpc_requests_total{method=\"ReleaseLeases\",code=\"OK\"}"),
            -1)
      << "Load released nothing";
}

TEST_F(ServingTest, BadCommitsChangeNothing) {
  Blocks blocks(1, 256 << 10, 5);
  v1::AllocateBlocksRequest alloc;
  alloc.set_engine_id(a_->engine().engine_id);
  alloc.set_codec(v1::CODEC_RAW);
  alloc.add_keys()->set_key(std::string(blocks.keys[0].Bytes()));
  v1::AllocateBlocksResponse leases;
  auto ctx = a_->NewContext();
  ASSERT_TRUE(a_->stub().AllocateBlocks(ctx.get(), alloc, &leases).ok());
  const std::uint64_t id = leases.leases(0).lease_id();

  // A write of the wrong length is refused by the daemon.
  EXPECT_FALSE(a_->data_plane()->Write(id, blocks.data[0].data(), 1000).ok());
  // A commit before any write, with a wrong length, of a forged lease: all refused.
  auto commit = [&](std::uint64_t lease, std::uint64_t length, std::uint64_t sum) {
    v1::CommitBlocksRequest c;
    auto* one = c.add_commits();
    one->set_lease_id(lease);
    one->set_length(length);
    one->set_checksum(sum);
    v1::CommitBlocksResponse r;
    auto cctx = a_->NewContext();
    return a_->stub().CommitBlocks(cctx.get(), c, &r).error_code();
  };
  const std::uint64_t sum = XXH3_64bits(blocks.data[0].data(), blocks.data[0].size());
  EXPECT_EQ(commit(id, 256 << 10, sum), grpc::FAILED_PRECONDITION) << "nothing written yet";
  ASSERT_TRUE(a_->data_plane()->Write(id, blocks.data[0].data(), blocks.data[0].size()).ok());
  EXPECT_EQ(commit(id, 1000, sum), grpc::INVALID_ARGUMENT);
  EXPECT_EQ(commit(id + 1, 256 << 10, sum), grpc::NOT_FOUND);
  EXPECT_EQ(commit(id, 256 << 10, sum ^ 1), grpc::DATA_LOSS) << "checksum of other bytes";
  EXPECT_EQ(*a_->LookupPrefix(blocks.keys), 0u) << "nothing became visible";
  EXPECT_EQ(commit(id, 256 << 10, sum), grpc::NOT_FOUND) << "the failed commit ended the lease";
  // A fresh save of the same key works.
  EXPECT_EQ(*a_->Save(blocks.keys, blocks.Views()), 1u);
}

TEST_F(ServingTest, AClientKilledMidTransferLeavesNoLeaseOrSlotBehind) {
  Blocks blocks(8, 256 << 10, 8);  // the child reads these (it derives them from the same seed)
  ASSERT_EQ(*a_->Save(blocks.keys, blocks.Views()), 8u);
  const double allocated = daemon_->Metric("cachesvc_tier_allocated_bytes{tier=\"host\"}");
  ASSERT_GT(allocated, 0);
  Subprocess child({CLIENT_CHILD_BIN, daemon_->address(), kTokenA, "8"});
  ASSERT_TRUE(child.WaitForLine("looping", 10s)) << child.output();
  std::this_thread::sleep_for(700ms);
  EXPECT_GT(daemon_->Metric("cachesvc_leases_outstanding{kind=\"write\"}") +
                daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"),
            0)
      << "the child holds leases";
  child.Signal(SIGKILL);
  child.Wait(5s);
  // Leases time out after 1.5 s; the reaper runs every second. The child's uncommitted slots can
  // fill host memory before they expire, and then the test's blocks (unleased between reads)
  // move to NVMe: what host memory holds at the end is exactly its committed blocks' slots.
  const auto host_held_by_blocks = [&] {
    return daemon_->Metric("cachesvc_tier_blocks{tier=\"host\"}") * (256 << 10);
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (
      std::chrono::steady_clock::now() < deadline &&
      (daemon_->Metric("cachesvc_leases_outstanding{kind=\"write\"}") != 0 ||
       daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}") != 0 ||
       daemon_->Metric("cachesvc_tier_allocated_bytes{tier=\"host\"}") != host_held_by_blocks())) {
    std::this_thread::sleep_for(200ms);
  }
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"write\"}"), 0);
  EXPECT_EQ(daemon_->Metric("cachesvc_leases_outstanding{kind=\"read\"}"), 0);
  EXPECT_EQ(daemon_->Metric("cachesvc_tier_allocated_bytes{tier=\"host\"}"), host_held_by_blocks())
      << "every slot the child allocated and never committed was freed";
  EXPECT_LE(daemon_->Metric("cachesvc_tier_allocated_bytes{tier=\"host\"}"), allocated);
  EXPECT_GT(daemon_->Metric("cachesvc_leases_expired_total"), 0);
  for (const char* state : {"running", "waiting_tool", "idle", "closed"}) {
    EXPECT_EQ(daemon_->Metric(fmt::format("cachesvc_sessions{{state=\"{}\"}}", state)), 0)
        << state << ": exported, and no sessions were opened";
  }
  // What was stored is untouched and the daemon serves a new client.
  auto c = daemon_->Client(kTokenA);
  ASSERT_TRUE(c->RegisterEngine(TestLayout()).ok());
  Buffers out(8, 256 << 10);
  ASSERT_EQ(*c->Load(blocks.keys, out.Views()), 8u);
  for (std::size_t i = 0; i < 8; ++i) EXPECT_EQ(out.data[i], blocks.data[i]) << i;
}

// A bounded load test: 16 clients save and load for a while (CACHESVC_LOAD_TEST_SECONDS, 10 by
// default; the example is 60) against tiers far smaller than what they write. Every load
// returns the saved bytes or nothing, and every block the daemon no longer has is accounted for
// by an eviction it recorded (dropped, with nowhere to go).
TEST(ServingLoadTest, SixteenClientsReadBackWhatTheySavedOrAnEvictionSaysWhy) {
  // 16 MiB of host and 16 MiB of NVMe (1 MiB slot chunks), so that the clients overflow both;
  // leases long enough for a loaded 2-core machine.
  auto daemon_ = std::make_unique<Daemon>(
      FreshDir("load"),
      std::vector<std::string>{"--lease-timeout-ms", "20000", "--tiers-slot-max-bytes", "1048576",
                               "--tiers-host-capacity-bytes", "16777216",
                               "--tiers-nvme-capacity-bytes", "16777216"});
  ASSERT_FALSE(daemon_->address().empty()) << daemon_->process().output();
  const char* env = std::getenv("CACHESVC_LOAD_TEST_SECONDS");
  const auto seconds = std::chrono::seconds(env != nullptr ? std::atoi(env) : 10);
  constexpr int kClients = 16;
  std::atomic<std::uint64_t> saved{0}, loads{0}, wrong{0}, errors{0};
  std::mutex first_error_mu;
  std::string first_error;
  auto note = [&](const absl::Status& st) {
    ++errors;
    std::lock_guard lock(first_error_mu);
    if (first_error.empty()) first_error = st.ToString();
  };
  std::vector<std::vector<BlockKey>> committed(kClients);
  std::vector<std::vector<std::vector<std::byte>>> contents(kClients);
  std::vector<std::thread> threads;
  const auto end = std::chrono::steady_clock::now() + seconds;
  for (int t = 0; t < kClients; ++t) {
    threads.emplace_back([&, t] {
      auto c = daemon_->Client(kTokenA);
      if (auto engine = c->RegisterEngine(TestLayout()); !engine.ok()) {
        note(engine.status());
        return;
      }
      std::mt19937_64 rng(1000 + static_cast<std::uint64_t>(t));
      for (int round = 0; std::chrono::steady_clock::now() < end; ++round) {
        Blocks b(1, 256 << 10, rng());
        auto s = c->Save(b.keys, b.Views());
        if (!s.ok()) {  // RESOURCE_EXHAUSTED while everything is leased is allowed; not others
          if (s.status().code() != absl::StatusCode::kResourceExhausted) note(s.status());
          continue;
        }
        committed[t].push_back(b.keys[0]);
        contents[t].push_back(b.data[0]);
        ++saved;
        const std::size_t pick = rng() % committed[t].size();
        Buffers out(1, 256 << 10);
        auto l = c->Load(std::span(committed[t]).subspan(pick, 1), out.Views());
        if (!l.ok()) {
          note(l.status());
          continue;
        }
        ++loads;
        if (*l == 1 && out.data[0] != contents[t][pick]) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  const std::string& log = daemon_->process().output();
  EXPECT_EQ(errors.load(), 0u) << first_error << "\ndaemon log tail:\n"
                               << log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
  EXPECT_EQ(wrong.load(), 0u);
  EXPECT_GT(saved.load(), 100u) << "the clients got work done";
  // Everything committed: present and byte-identical, or gone with an eviction recorded.
  auto c = daemon_->Client(kTokenA);
  ASSERT_TRUE(c->RegisterEngine(TestLayout()).ok());
  std::uint64_t present = 0, missing = 0;
  for (int t = 0; t < kClients; ++t) {
    for (std::size_t i = 0; i < committed[t].size(); ++i) {
      Buffers out(1, 256 << 10);
      auto l = c->Load(std::span(committed[t]).subspan(i, 1), out.Views());
      ASSERT_TRUE(l.ok()) << l.status();
      if (*l == 1) {
        ++present;
        EXPECT_EQ(out.data[0], contents[t][i]);
      } else {
        ++missing;
      }
    }
  }
  const double dropped = daemon_->Metric("cachesvc_evictions_total{reason=\"dropped\"}");
  EXPECT_GT(missing, 0u) << "the tiers overflowed (else the test shows nothing about eviction)";
  EXPECT_LE(static_cast<double>(missing), dropped);
  EXPECT_GT(present, 0u);
  std::cout << "saved " << saved << ", loads " << loads << ", present " << present << ", missing "
            << missing << ", dropped " << dropped << "\n";
}

// TLS from the config: a certificate made here with openssl; a client that trusts it gets in, a
// plaintext client does not.
TEST(ServingTlsTest, ServesTlsWithTheConfiguredCertificate) {
  const auto dir = FreshDir("tls");
  const std::string cert = (dir / "cert.pem").string(), key = (dir / "key.pem").string();
  const std::string cmd =
      "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=localhost "
      "-addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout " +
      key + " -out " + cert + " >/dev/null 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << "openssl could not make a test certificate";
  Daemon daemon(dir, {"--tls-cert-path", cert, "--tls-key-path", key});
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  std::ifstream in(cert);
  std::stringstream pem;
  pem << in.rdbuf();
  BlockClientOptions options;
  options.address = daemon.address();
  options.token = kTokenA;
  options.tls_root_pem = pem.str();
  options.tls_server_name = "localhost";
  auto secure = BlockClient::Connect(options);
  ASSERT_TRUE(secure.ok());
  auto engine = (*secure)->RegisterEngine(TestLayout());
  ASSERT_TRUE(engine.ok()) << engine.status();
  Blocks blocks(2, 256 << 10, 9);
  EXPECT_EQ(*(*secure)->Save(blocks.keys, blocks.Views()), 2u);

  options.tls_root_pem.clear();
  options.rpc_timeout = 3s;
  auto plain = BlockClient::Connect(options);
  ASSERT_TRUE(plain.ok());
  EXPECT_FALSE((*plain)->RegisterEngine(TestLayout()).ok()) << "plaintext is refused";
}

TEST(ServingRestartTest, SigkillKeepsExactlyTheBlocksOnNvme) {
  const auto dir = FreshDir("restart");
  // 400 blocks of 256 KiB (100 MiB) into a 64 MiB host tier: the oldest go to NVMe.
  Blocks blocks(400, 256 << 10, 6);
  std::vector<bool> on_nvme(blocks.keys.size(), false);
  {
    Daemon daemon(dir);
    ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
    auto a = daemon.Client(kTokenA);
    ASSERT_TRUE(a->RegisterEngine(TestLayout()).ok());
    for (std::size_t i = 0; i < blocks.keys.size(); i += 20) {
      const std::size_t n = std::min<std::size_t>(20, blocks.keys.size() - i);
      auto views = blocks.Views();
      auto saved = a->Save(std::span(blocks.keys).subspan(i, n), std::span(views).subspan(i, n));
      ASSERT_TRUE(saved.ok()) << saved.status();
    }
    for (std::size_t i = 0; i < blocks.keys.size(); ++i) {
      v1::LookupPrefixRequest req;
      req.set_engine_id(a->engine().engine_id);
      req.mutable_keys()->add_keys()->set_key(std::string(blocks.keys[i].Bytes()));
      v1::LookupPrefixResponse resp;
      auto ctx = a->NewContext();
      ASSERT_TRUE(a->stub().LookupPrefix(ctx.get(), req, &resp).ok());
      ASSERT_EQ(resp.cached_blocks(), 1u) << i;
      for (int t : resp.blocks(0).tiers()) on_nvme[i] = on_nvme[i] || t == v1::TIER_NVME;
    }
    daemon.process().Signal(SIGKILL);
    daemon.process().Wait(10s);
  }
  const auto nvme_count = std::count(on_nvme.begin(), on_nvme.end(), true);
  ASSERT_GT(nvme_count, 100) << "the host tier overflowed to NVMe";
  ASSERT_LT(nvme_count, 400) << "some blocks were only in host memory";
  Daemon daemon(dir);
  ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
  auto a = daemon.Client(kTokenA);
  ASSERT_TRUE(a->RegisterEngine(TestLayout()).ok());
  for (std::size_t i = 0; i < blocks.keys.size(); ++i) {
    Buffers out(1, 256 << 10);
    auto loaded = a->Load(std::span(blocks.keys).subspan(i, 1), out.Views());
    ASSERT_TRUE(loaded.ok()) << loaded.status();
    EXPECT_EQ(*loaded, on_nvme[i] ? 1u : 0u) << "block " << i;
    if (*loaded == 1) {
      EXPECT_EQ(out.data[0], blocks.data[i]) << i;
    }
  }
}

TEST(ServingRestartTest, SigtermWritesHostBlocksToNvmeFirst) {
  const auto dir = FreshDir("sigterm");
  Blocks blocks(16, 256 << 10, 7);
  {
    Daemon daemon(dir);
    ASSERT_FALSE(daemon.address().empty()) << daemon.process().output();
    auto a = daemon.Client(kTokenA);
    ASSERT_TRUE(a->RegisterEngine(TestLayout()).ok());
    ASSERT_EQ(*a->Save(blocks.keys, blocks.Views()), 16u);
    daemon.process().Signal(SIGTERM);
    ASSERT_EQ(daemon.process().Wait(20s), 0) << daemon.process().output();
  }
  Daemon daemon(dir);
  auto a = daemon.Client(kTokenA);
  ASSERT_TRUE(a->RegisterEngine(TestLayout()).ok());
  Buffers out(16, 256 << 10);
  ASSERT_EQ(*a->Load(blocks.keys, out.Views()), 16u);
  for (std::size_t i = 0; i < 16; ++i) EXPECT_EQ(out.data[i], blocks.data[i]) << i;
}

}  // namespace
}  // namespace cachesvc
