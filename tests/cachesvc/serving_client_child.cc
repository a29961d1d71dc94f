// A connector that never finishes: the fault test in serving_test.cc SIGKILLs it in the middle of
// its transfers. Usage: serving_client_child ADDRESS TOKEN SEED. It registers the test layout,
// then loops forever: allocate a fresh block and write it without committing, and lease and read
// the blocks saved under SEED by the test (their keys are the test's), never releasing.
#include <cstdlib>
#include <iostream>
#include <random>

#include "client/block_client.h"

int main(int argc, char** argv) {
  if (argc != 4) return 2;
  cachesvc::client::BlockClientOptions options;
  options.address = argv[1];
  options.token = argv[2];
  auto client = cachesvc::client::BlockClient::Connect(options);
  if (!client.ok()) return 1;
  cachesvc::ModelLayout layout;
  layout.model_id = "test-model";
  layout.num_layers = 8;
  layout.num_kv_heads = 4;
  layout.head_dim = 128;
  layout.dtype = cachesvc::Dtype::kFp16;
  layout.block_tokens = 16;
  if (!(*client)->RegisterEngine(layout).ok()) return 1;
  std::mt19937_64 rng(std::strtoull(argv[3], nullptr, 10));
  std::vector<cachesvc::BlockKey> saved;
  for (int i = 0; i < 8; ++i) {  // the test saved these 8 blocks from the same seed
    cachesvc::BlockKey k;
    for (auto& b : k.bytes) b = static_cast<std::uint8_t>(rng());
    saved.push_back(k);
    for (int j = 0; j < (256 << 10); ++j) (void)rng();
  }
  std::vector<std::byte> payload(256 << 10, std::byte{7});
  std::vector<std::byte> buffer(256 << 10);
  std::cout << "looping" << std::endl;
  for (std::uint64_t n = 0;; ++n) {
    cachesvc::v1::AllocateBlocksRequest alloc;
    alloc.set_engine_id((*client)->engine().engine_id);
    alloc.set_codec(cachesvc::v1::CODEC_RAW);
    cachesvc::BlockKey fresh;
    for (auto& b : fresh.bytes) b = static_cast<std::uint8_t>(rng());
    alloc.add_keys()->set_key(std::string(fresh.Bytes()));
    cachesvc::v1::AllocateBlocksResponse leases;
    auto ctx = (*client)->NewContext();
    if ((*client)->stub().AllocateBlocks(ctx.get(), alloc, &leases).ok() &&
        leases.leases_size() == 1) {
      (void)(*client)->data_plane()->Write(leases.leases(0).lease_id(), payload.data(),
                                           payload.size());
    }
    cachesvc::v1::LeaseBlocksRequest lease;
    lease.set_engine_id((*client)->engine().engine_id);
    lease.add_keys()->set_key(std::string(saved[n % saved.size()].Bytes()));
    cachesvc::v1::LeaseBlocksResponse read;
    auto ctx2 = (*client)->NewContext();
    if ((*client)->stub().LeaseBlocks(ctx2.get(), lease, &read).ok() && read.leases_size() == 1) {
      (void)(*client)->data_plane()->Read(read.leases(0).lease_id(), buffer.data(), buffer.size());
    }
  }
}
