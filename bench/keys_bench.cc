// Block-key derivation throughput (proto/block_key.h), against the bare hash over the same bytes.
//
// BM_DeriveBlockKeys derives the chained keys of a context; BM_Xxh3OverTokens hashes the same
// token bytes with one XXH3-128 call per block but no chaining: the floor any key scheme over
// XXH3 pays. bench/run keys reports the ratio of the two from the same run.
#include <benchmark/benchmark.h>
#include "proto/xxh3.h"

#include <numeric>
#include <vector>

#include "proto/block_key.h"

namespace {

std::vector<uint32_t> Tokens(std::size_t n) {
  std::vector<uint32_t> t(n);
  std::iota(t.begin(), t.end(), 1000u);
  return t;
}

void BM_DeriveBlockKeys(benchmark::State& state) {
  const auto block_tokens = static_cast<uint32_t>(state.range(0));
  const auto tokens = Tokens(static_cast<std::size_t>(state.range(1)));
  const cachesvc::BlockKey seed = cachesvc::KeyChainSeed("tenant-salt-0123", 0x1234);
  for (auto _ : state) {
    auto keys = cachesvc::DeriveBlockKeys(seed, tokens, block_tokens);
    benchmark::DoNotOptimize(keys);
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(tokens.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(tokens.size() * 4));
}

void BM_Xxh3OverTokens(benchmark::State& state) {
  const auto block_tokens = static_cast<std::size_t>(state.range(0));
  const auto tokens = Tokens(static_cast<std::size_t>(state.range(1)));
  for (auto _ : state) {
    for (std::size_t i = 0; i + block_tokens <= tokens.size(); i += block_tokens) {
      benchmark::DoNotOptimize(XXH3_128bits(tokens.data() + i, block_tokens * 4));
    }
  }
  state.SetItemsProcessed(state.iterations() * static_cast<int64_t>(tokens.size()));
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(tokens.size() * 4));
}

// {block_tokens, context tokens}: engine page sizes over a 32k-token agent context.
void Args(benchmark::internal::Benchmark* b) {
  for (int block : {16, 64, 256, 512}) b->Args({block, 32768});
}

BENCHMARK(BM_DeriveBlockKeys)->Apply(Args);
BENCHMARK(BM_Xxh3OverTokens)->Apply(Args);

}  // namespace

BENCHMARK_MAIN();
