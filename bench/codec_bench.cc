// TQ codec throughput on one core, against memcpy of the same bytes measured in the same run.
//
// BM_Encode/BM_Decode/{codec}/{head_dim}/{impl} code a 2 MiB fp16 block (8192 vectors at
// head_dim 128, the size of a 16-token Llama-3-8B block); throughput is reported in fp16 bytes per
// second (the uncompressed side), as kernels/FORMAT.md's targets are stated. BM_Memcpy copies the
// same 2 MiB. Counters carry the accuracy of the same data: rel_mse (mean |x^-x|^2/|x|^2 over the
// block's Gaussian vectors), bits_per_value (encoded size, metadata included) and attn_rel_err
// (softmax attention output error over random queries, keys with 20x outlier channels).
// bench/run codec turns this into the project's JSON.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "kernels/tq_codec.h"
#include "kernels/tq_math.h"

namespace {

using cachesvc::kernels::CodecId;
using cachesvc::kernels::CodecImpl;
using cachesvc::kernels::ValueType;
namespace tq = cachesvc::kernels::tq;

constexpr std::size_t kBlockBytes = 2 << 20;

std::vector<std::uint16_t> Gaussian(std::size_t n, unsigned seed, std::uint32_t d = 0,
                                    bool outliers = false) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> v(n);
  for (std::size_t i = 0; i < n; ++i) {
    float x = normal(rng);
    if (outliers && d != 0 && (i % d) % 37 == 0) x *= 20.0f;
    v[i] = tq::FloatToFp16(x);
  }
  return v;
}

CodecId Codec(int64_t bits) { return bits == 3 ? CodecId::kTq3 : CodecId::kTq4; }

double RelMse(const std::vector<std::uint16_t>& x, const std::vector<std::uint16_t>& y,
              std::uint32_t d) {
  double sum = 0;
  for (std::size_t i = 0; i < x.size() / d; ++i) {
    double err = 0, norm = 0;
    for (std::uint32_t j = 0; j < d; ++j) {
      const double a = tq::Fp16ToFloat(x[i * d + j]), b = tq::Fp16ToFloat(y[i * d + j]);
      err += (a - b) * (a - b);
      norm += a * a;
    }
    sum += err / norm;
  }
  return sum / static_cast<double>(x.size() / d);
}

std::vector<std::uint16_t> RoundTrip(CodecId c, std::uint32_t d,
                                     const std::vector<std::uint16_t>& x) {
  std::vector<std::byte> enc(cachesvc::kernels::EncodedBytes(c, ValueType::kFp16, d, x.size() / d));
  std::vector<std::uint16_t> y(x.size());
  if (!Encode(c, ValueType::kFp16, d, cachesvc::kernels::kDefaultSignSeed,
              std::as_bytes(std::span(x)), enc)
           .ok() ||
      !Decode(c, ValueType::kFp16, d, enc, std::as_writable_bytes(std::span(y))).ok()) {
    std::abort();
  }
  return y;
}

// Relative error of softmax attention outputs (64 queries over 512 tokens) with decoded K and V.
double AttentionError(CodecId c, std::uint32_t d) {
  constexpr std::size_t kTokens = 512;
  const auto k = Gaussian(kTokens * d, 1, d, /*outliers=*/true), v = Gaussian(kTokens * d, 2);
  const auto kh = RoundTrip(c, d, k), vh = RoundTrip(c, d, v);
  std::mt19937 rng(3);
  std::normal_distribution<double> normal;
  double err = 0, ref = 0;
  for (int q = 0; q < 64; ++q) {
    std::vector<double> query(d);
    for (auto& x : query) x = normal(rng);
    auto attend = [&](const std::vector<std::uint16_t>& kk, const std::vector<std::uint16_t>& vv) {
      std::vector<double> w(kTokens), out(d, 0.0);
      double mx = -1e300, z = 0;
      for (std::size_t i = 0; i < kTokens; ++i) {
        double s = 0;
        for (std::uint32_t j = 0; j < d; ++j) s += query[j] * tq::Fp16ToFloat(kk[i * d + j]);
        w[i] = s / std::sqrt(static_cast<double>(d));
        mx = std::max(mx, w[i]);
      }
      for (auto& x : w) z += (x = std::exp(x - mx));
      for (std::size_t i = 0; i < kTokens; ++i) {
        for (std::uint32_t j = 0; j < d; ++j) out[j] += w[i] / z * tq::Fp16ToFloat(vv[i * d + j]);
      }
      return out;
    };
    const auto a = attend(k, v), b = attend(kh, vh);
    for (std::uint32_t j = 0; j < d; ++j) {
      err += (a[j] - b[j]) * (a[j] - b[j]);
      ref += a[j] * a[j];
    }
  }
  return err / ref;
}

void SetAccuracyCounters(benchmark::State& state, CodecId c, std::uint32_t d,
                         const std::vector<std::uint16_t>& x, std::size_t enc_bytes) {
  state.counters["rel_mse"] = RelMse(x, RoundTrip(c, d, x), d);
  state.counters["bits_per_value"] =
      8.0 * static_cast<double>(enc_bytes) / static_cast<double>(x.size());
  state.counters["attn_rel_err"] = AttentionError(c, d);
}

// Args: bits, head_dim, impl (1 scalar, 2 avx2, 3 avx512).
void BM_Encode(benchmark::State& state) {
  const CodecId c = Codec(state.range(0));
  const auto d = static_cast<std::uint32_t>(state.range(1));
  const auto impl = static_cast<CodecImpl>(state.range(2));
  if (!cachesvc::kernels::CodecImplAvailable(impl)) {
    state.SkipWithError("implementation not available on this CPU");
    return;
  }
  const auto x = Gaussian(kBlockBytes / 2, 42);
  std::vector<std::byte> enc(cachesvc::kernels::EncodedBytes(c, ValueType::kFp16, d, x.size() / d));
  for (auto _ : state) {
    auto s = Encode(c, ValueType::kFp16, d, cachesvc::kernels::kDefaultSignSeed,
                    std::as_bytes(std::span(x)), enc, nullptr, impl);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(enc.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBlockBytes));
  SetAccuracyCounters(state, c, d, x, enc.size());
}

void BM_Decode(benchmark::State& state) {
  const CodecId c = Codec(state.range(0));
  const auto d = static_cast<std::uint32_t>(state.range(1));
  const auto impl = static_cast<CodecImpl>(state.range(2));
  if (!cachesvc::kernels::CodecImplAvailable(impl)) {
    state.SkipWithError("implementation not available on this CPU");
    return;
  }
  const auto x = Gaussian(kBlockBytes / 2, 42);
  std::vector<std::byte> enc(cachesvc::kernels::EncodedBytes(c, ValueType::kFp16, d, x.size() / d));
  if (!Encode(c, ValueType::kFp16, d, cachesvc::kernels::kDefaultSignSeed,
              std::as_bytes(std::span(x)), enc)
           .ok()) {
    std::abort();
  }
  std::vector<std::uint16_t> out(x.size());
  for (auto _ : state) {
    auto s = Decode(c, ValueType::kFp16, d, enc, std::as_writable_bytes(std::span(out)), impl);
    benchmark::DoNotOptimize(s);
    benchmark::DoNotOptimize(out.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBlockBytes));
}

void BM_Memcpy(benchmark::State& state) {
  std::vector<std::byte> a(kBlockBytes, std::byte{1}), b(kBlockBytes);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), kBlockBytes);
    benchmark::DoNotOptimize(b.data());
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) *
                          static_cast<int64_t>(kBlockBytes));
}

void CodecArgs(benchmark::internal::Benchmark* b) {
  for (int bits : {3, 4}) {
    for (int d : {64, 128, 256}) {
      for (int impl : {static_cast<int>(CodecImpl::kScalar), static_cast<int>(CodecImpl::kAvx2),
                       static_cast<int>(CodecImpl::kAvx512)}) {
        b->Args({bits, d, impl});
      }
    }
  }
}

BENCHMARK(BM_Memcpy);
BENCHMARK(BM_Encode)->Apply(CodecArgs);
BENCHMARK(BM_Decode)->Apply(CodecArgs);

}  // namespace

BENCHMARK_MAIN();
