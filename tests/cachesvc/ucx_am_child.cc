// ucx_am_child ADDRESS TLS PEER: connects to a UcxDataPlane at ADDRESS (UCX_TLS=TLS, peer failure
// detection when PEER is 1) and moves 2 MiB blocks forever, for ucx_am_test, which kills it with
// SIGKILL in the middle: batches of 4 writes then 4 reads of leases 100..103 (the test's batch
// leases). Prints "connected", then "looping" once the first round trip succeeded.
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "client/ucx_transport.h"

int main(int argc, char** argv) {
  using cachesvc::client::ReadOp;
  using cachesvc::client::UcxTransport;
  using cachesvc::client::WriteOp;
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s ADDRESS TLS PEER\n", argv[0]);
    return 2;
  }
  auto transport = UcxTransport::Connect(
      argv[1], {.transports = argv[2], .detect_peer_failure = std::string(argv[3]) == "1"});
  if (!transport.ok()) {
    std::fprintf(stderr, "connect: %s\n", transport.status().ToString().c_str());
    return 1;
  }
  std::printf("connected\n");
  std::fflush(stdout);
  constexpr std::size_t kBlock = 2 * 1024 * 1024;
  constexpr int kOps = 4;
  std::vector<std::uint8_t> out(kOps * kBlock), in(kOps * kBlock);
  for (std::size_t i = 0; i < out.size(); ++i) out[i] = static_cast<std::uint8_t>(i * 7);
  std::vector<WriteOp> writes;
  std::vector<ReadOp> reads;
  for (int i = 0; i < kOps; ++i) {
    const auto offset = static_cast<std::size_t>(i) * kBlock;
    writes.push_back({100 + static_cast<std::uint64_t>(i), out.data() + offset, kBlock});
    reads.push_back({100 + static_cast<std::uint64_t>(i), in.data() + offset, kBlock});
  }
  for (long round = 0;; ++round) {
    absl::Status status = (*transport)->WriteMany(writes);
    if (status.ok()) status = (*transport)->ReadMany(reads);
    if (!status.ok()) {
      std::fprintf(stderr, "round %ld: %s\n", round, status.ToString().c_str());
      return 1;
    }
    if (round == 0) {
      std::printf("looping%s\n",
                  std::memcmp(out.data(), in.data(), out.size()) == 0 ? "" : " (bad data)");
      std::fflush(stdout);
    }
  }
}
