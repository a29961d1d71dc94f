#!/usr/bin/env bash
# The GPU check of cachesvc: the one script to run whenever an NVIDIA GPU machine (H100/H200) is
# lent, for at most about 15 minutes, as one prepared command (see docs/bench/gpu.md).
#
# On a machine with an NVIDIA GPU it runs these steps, each under `timeout`, all of them within
# one time budget (GPU_CHECK_BUDGET_S, default 450 s) so that the whole check ends in under 8
# minutes on a 16-core H100 machine; a step that finds the budget spent is not started (SKIP):
#   nvidia-smi        records nvidia-smi and the tool versions (nvidia-smi.txt, env.txt)
#   deps              checks the tools and the Debian libraries the build needs; runs
#                     scripts/install-deps.sh only if one is missing, and says so
#   configure, build  build/gpu: the whole project, RelWithDebInfo, CUDA for this card
#                     (CMAKE_CUDA_ARCHITECTURES=native, or the compute capability nvidia-smi
#                     reports), device line info for the sanitizer; only the targets kernels_test,
#                     tiers_test, connector_gpu_test (and the daemon it starts),
#                     cachesvc_client_shared and codec_bench. If the whole project does not
#                     configure (its libraries missing), kernels/ is built alone in
#                     build/gpu-kernels instead and the steps that need the rest fail.
#   test-kernels      kernels_test        --gtest_filter=CudaCodecTest.*:CudaCodecArgsTest.*
#   test-hbm          tiers_test          --gtest_filter=HbmTierTest.*:Tiers/TierContractTest.*/hbm
#                                           (less HbmTierTest.AbsentWithoutAGpu, which skips here)
#   test-connector    connector_gpu_test  --gtest_filter=ConnectorGpuTest.*  (a real daemon)
#                     A GPU test that skips counts as failed: on this machine it must run.
#   bench-gpu-codec   gpu_codec_bench, a small CUDA program this script writes and compiles with
#                     nvcc into the results folder (bench/codec_bench has CPU rows only): the
#                     kernels/tq_cuda.h encode and decode of 128 blocks of 2 MiB fp16 (TQ3/TQ4,
#                     head_dim 64/128/256 contiguous, 128 paged), checked byte for byte against
#                     the CPU codec, and cudaMemcpy device-to-device of the same 256 MiB in the
#                     same run; GB/s and the ratio to the D2D copy rate -> gpu_codec.json
#   memcheck-*, racecheck-*
#                     the three test runs again under compute-sanitizer --tool memcheck, then
#                     --tool racecheck (only the test process is tracked, not the daemon)
#   bench-codec-cpu   bench/run codec --quick: the CPU codec on this machine (optional: its
#                     failure or absence does not fail the check) -> codec_cpu.json
#
# Usage: scripts/gpu-check.sh [--out DIR | DIR]
#   Results go to DIR, by default gpu-results/<UTC timestamp>/ under the repository root:
#   nvidia-smi.txt, env.txt, one log per step, the gtest XML of each test run, gpu_codec.json,
#   codec_cpu.json, summary.txt, and results.tar.gz holding all of them (for callers that can
#   take only a few files back). The last thing printed is the summary: one line per step,
#   PASS/FAIL/SKIP and its numbers.
#
# Exit codes:
#   0  every step passed
#   1  a step failed, timed out or was not started (budget spent, or what it needs failed)
#   2  no NVIDIA GPU present (no nvidia-smi, or it fails or lists no GPU): nothing was built or
#      run and no results folder was made; the reason is on standard error
#   3  bad command line
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reserve=10  # seconds of the budget kept for the summary

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; }

# ---- step bookkeeping -------------------------------------------------------------------------
S_NAME=() S_STATUS=() S_NOTE=() S_REQ=() S_LOG=()
# record NAME PASS|FAIL|SKIP NOTE [REQUIRED=1] [LOG]
record() {
  S_NAME+=("$1") S_STATUS+=("$2") S_NOTE+=("$3") S_REQ+=("${4:-1}") S_LOG+=("${5:-}")
  printf 'gpu-check: %-19s %s  %s\n' "$1" "$2" "$3"
}

# run_logged NAME CAP LOG CMD...: runs CMD, output to LOG, under timeout min(CAP, budget left).
# Sets RC (124 or 137: timed out), T (the timeout used) and DUR. Returns 1, running nothing, when
# less than 5 s of the budget is left.
run_logged() {
  local name="$1" cap="$2" log="$3" left t0
  shift 3
  left=$((budget - SECONDS - reserve))
  T=$((cap < left ? cap : left))
  if ((T < 5)); then
    RC=125 DUR=0
    return 1
  fi
  echo "gpu-check: ${name}: running (timeout ${T} s, log ${log#"$results"/})"
  t0=$SECONDS
  RC=0
  timeout --kill-after=10 "$T" "$@" >"$log" 2>&1 </dev/null || RC=$?
  DUR=$((SECONDS - t0))
  return 0
}

timed_out() { [[ "$RC" == 124 || "$RC" == 137 ]]; }

# first_error LOG: the first line of LOG that looks like the reason for a failure, or "see LOG".
first_error() {
  local line
  line="$(grep -m1 -iE 'error|not supported|fatal|fail|cannot|no such|not found' "$1" 2>/dev/null |
    cut -c1-160 || true)"
  echo "${line:-see ${1##*/}}"
}

# gtest_counts XML: "TESTS PASSED FAILED SKIPPED" of a gtest XML report, or "none".
gtest_counts() {
  python3 - "$1" <<'EOF'
import sys
import xml.etree.ElementTree as ET
try:
    root = ET.parse(sys.argv[1]).getroot()
except Exception:
    print("none")
    sys.exit(0)
tests = failed = skipped = 0
for tc in root.iter("testcase"):
    if tc.get("status") == "notrun":  # disabled
        continue
    tests += 1
    if tc.find("failure") is not None or tc.find("error") is not None:
        failed += 1
    elif tc.get("result") == "skipped" or tc.find("skipped") is not None:
        skipped += 1
print(tests, tests - failed - skipped, failed, skipped)
EOF
}

# sanitizer_counts LOG: "ERRORS WARNINGS" from compute-sanitizer's summary lines (summed over
# processes), "?" for one it did not print.
sanitizer_counts() {
  awk '
    match($0, /ERROR SUMMARY: [0-9]+ error/) { e += substr($0, RSTART + 15, RLENGTH - 21); fe = 1 }
    /RACECHECK SUMMARY:/ {
      if (match($0, /\([0-9]+ error/)) { r += substr($0, RSTART + 1, RLENGTH - 7); fr = 1 }
      if (match($0, /[0-9]+ warning/)) { w += substr($0, RSTART, RLENGTH - 8); fw = 1 }
    }
    END { printf "%s %s\n", fe ? e : (fr ? r : "?"), fw ? w : "?" }
  ' "$1" 2>/dev/null || echo "? ?"
}

# gtest_step NAME BINARY FILTER CAP [SANITIZER_TOOL] [WHY_NO_BINARY]
gtest_step() {
  local name="$1" bin="$2" filter="$3" cap="$4" tool="${5:-}" why="${6:-}"
  local log="$results/$name.log" xml="$results/$name.xml" cmd counts note errs warns
  local tests passed failed skipped
  if [[ -z "$bin" || ! -x "$bin" ]]; then
    record "$name" SKIP "${why:-test binary not built (see ${build_log_name})}"
    return
  fi
  cmd=("$bin" "--gtest_filter=$filter" "--gtest_output=xml:$xml" --gtest_color=no)
  if [[ -n "$tool" ]]; then
    if [[ -z "$sanitizer" ]]; then
      record "$name" FAIL "compute-sanitizer not found (looked on PATH and in /usr/local/cuda/bin)"
      return
    fi
    cmd=("$sanitizer" --tool "$tool" --error-exitcode 86 "${sanitizer_opts[@]}" "${cmd[@]}")
  fi
  rm -f "$xml"
  if ! run_logged "$name" "$cap" "$log" "${cmd[@]}"; then
    record "$name" SKIP "not started: time budget spent"
    return
  fi
  counts="$(gtest_counts "$xml")"
  if [[ "$counts" == none ]]; then
    if timed_out; then note="timed out after ${T} s"; else note="rc ${RC}, no gtest XML"; fi
    record "$name" FAIL "${note}: $(first_error "$log")" 1 "$log"
    return
  fi
  read -r tests passed failed skipped <<<"$counts"
  note="${passed}/${tests} passed, ${failed} failed, ${skipped} skipped"
  if [[ -n "$tool" ]]; then
    read -r errs warns <<<"$(sanitizer_counts "$log")"
    note+=", ${errs} sanitizer errors"
    [[ "$tool" == racecheck ]] && note+=", ${warns} race warnings"
  fi
  note+=" (${DUR} s)"
  # After a failed build, a binary left by an earlier run may be what ran: say so.
  if ((!${build_ok:-0})) && [[ -f "$results/.build-start" && "$bin" -ot "$results/.build-start" ]]; then
    note+=" [binary from an earlier build]"
  fi
  if timed_out; then
    record "$name" FAIL "timed out after ${T} s; ${note}" 1 "$log"
  elif ((tests == 0)); then
    record "$name" FAIL "no test matched ${filter}" 1 "$log"
  elif [[ "$RC" == 86 ]]; then
    record "$name" FAIL "compute-sanitizer found errors; ${note}" 1 "$log"
  elif ((RC != 0 || failed > 0)); then
    record "$name" FAIL "rc ${RC}; ${note}" 1 "$log"
  elif ((skipped > 0)); then
    record "$name" FAIL "a GPU test skipped on a GPU machine; ${note}" 1 "$log"
  elif [[ -n "$tool" && "$errs" != 0 && "$errs" != "?" ]]; then
    record "$name" FAIL "${note}" 1 "$log"
  else
    record "$name" PASS "${note}"
  fi
}

# ---- the CUDA codec benchmark (bench/codec_bench.cc has no GPU rows) --------------------------
write_gpu_codec_bench() {
  cat >"$1" <<'EOF'
// gpu_codec_bench: written and compiled by scripts/gpu-check.sh; see its header.
// The CUDA TQ3/TQ4 codec (kernels/tq_cuda.h) on `blocks` blocks of 2 MiB fp16 (the uncompressed
// side; throughput counts those bytes, as bench/codec_bench does), and cudaMemcpy device to device
// of the same bytes, in one process and one run. Each row's first and last block are checked
// byte for byte against the CPU codec. Prints key=value rows, then one JSON object as the last
// line. Exit 0; 1 on a CUDA or codec error or a mismatch with the CPU codec; 2 without a device.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "kernels/tq_codec.h"
#include "kernels/tq_cuda.h"
#include "kernels/tq_math.h"

namespace k = cachesvc::kernels;
namespace kc = cachesvc::kernels::cuda;

#define CUDA_OK(x)                                                                  \
  do {                                                                              \
    cudaError_t err_ = (x);                                                         \
    if (err_ != cudaSuccess) {                                                      \
      std::fprintf(stderr, "gpu_codec_bench: error: %s: %s\n", #x, cudaGetErrorString(err_)); \
      std::exit(1);                                                                 \
    }                                                                               \
  } while (0)

namespace {

constexpr std::size_t kBlockBytes = 2u << 20;  // 16 tokens of a Llama-3-8B-like layout
constexpr std::uint32_t kSlabsPerBlock = 64;   // paged rows: 32 layers x K/V
constexpr std::uint32_t kVectorsPerSlab = 128; // 16 tokens x 8 kv heads, head_dim 128

void Must(const k::CodecStatus& s, const char* what) {
  if (!s.ok()) {
    std::fprintf(stderr, "gpu_codec_bench: error: %s: %s\n", what, s.message.c_str());
    std::exit(1);
  }
}

std::size_t Align16(std::size_t n) { return (n + 15) / 16 * 16; }

template <typename T>
T* DeviceCopy(const std::vector<T>& host) {
  void* p = nullptr;
  CUDA_OK(cudaMalloc(&p, host.size() * sizeof(T)));
  CUDA_OK(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return static_cast<T*>(p);
}

std::vector<std::byte> HostCopy(const void* device, std::size_t n) {
  std::vector<std::byte> out(n);
  CUDA_OK(cudaMemcpy(out.data(), device, n, cudaMemcpyDeviceToHost));
  return out;
}

// Mean milliseconds per call of `f` over `reps` calls after two warm-up calls, by CUDA events.
template <typename F>
double MsPerCall(int reps, F&& f) {
  cudaEvent_t a, b;
  CUDA_OK(cudaEventCreate(&a));
  CUDA_OK(cudaEventCreate(&b));
  f();
  f();
  CUDA_OK(cudaDeviceSynchronize());
  CUDA_OK(cudaEventRecord(a));
  for (int i = 0; i < reps; ++i) f();
  CUDA_OK(cudaEventRecord(b));
  CUDA_OK(cudaEventSynchronize(b));
  CUDA_OK(cudaGetLastError());
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, a, b));
  CUDA_OK(cudaEventDestroy(a));
  CUDA_OK(cudaEventDestroy(b));
  return ms / reps;
}

struct Row {
  std::string codec, layout, op;
  std::uint32_t head_dim;
  std::size_t encoded_bytes;
  double ms;
  bool matches_cpu;
};

}  // namespace

int main(int argc, char** argv) {
  int blocks = 128, reps = 20;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!std::strcmp(argv[i], "--blocks")) blocks = std::atoi(argv[i + 1]);
    else if (!std::strcmp(argv[i], "--reps")) reps = std::atoi(argv[i + 1]);
  }
  if (blocks < 1 || reps < 1) {
    std::fprintf(stderr, "usage: gpu_codec_bench [--blocks N] [--reps N]\n");
    return 1;
  }
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::fprintf(stderr, "gpu_codec_bench: no CUDA device\n");
    return 2;
  }
  cudaDeviceProp prop{};
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  const std::size_t total = static_cast<std::size_t>(blocks) * kBlockBytes;
  const std::uint64_t seed = k::kDefaultSignSeed;
  const k::ValueType fp16 = k::ValueType::kFp16;

  // One 2 MiB block of N(0,1) fp16 values, copied into every block of the source pool.
  std::vector<std::uint16_t> host(kBlockBytes / 2);
  std::mt19937 rng(42);
  std::normal_distribution<float> normal;
  for (auto& v : host) v = k::tq::FloatToFp16(normal(rng));
  const auto host_bytes = std::as_bytes(std::span(host));

  std::size_t max_stride = 0;
  for (k::CodecId c : {k::CodecId::kTq3, k::CodecId::kTq4})
    for (std::uint32_t d : {64u, 128u, 256u})
      max_stride = std::max(max_stride, Align16(k::EncodedBytes(c, fp16, d, kBlockBytes / 2 / d)));
  std::byte *raw = nullptr, *out = nullptr, *enc = nullptr;
  int* status = nullptr;
  CUDA_OK(cudaMalloc(&raw, total));
  CUDA_OK(cudaMalloc(&out, total));
  CUDA_OK(cudaMalloc(&enc, static_cast<std::size_t>(blocks) * max_stride));
  CUDA_OK(cudaMalloc(&status, sizeof(int) * blocks));
  for (int b = 0; b < blocks; ++b)
    CUDA_OK(cudaMemcpy(raw + b * kBlockBytes, host.data(), kBlockBytes, cudaMemcpyHostToDevice));

  auto copy_all = [&] { CUDA_OK(cudaMemcpyAsync(out, raw, total, cudaMemcpyDeviceToDevice)); };
  const double d2d_ms_before = MsPerCall(reps, copy_all);

  std::vector<Row> rows;
  bool all_match = true;
  auto status_ok = [&] {
    std::vector<int> s(blocks);
    CUDA_OK(cudaMemcpy(s.data(), status, sizeof(int) * blocks, cudaMemcpyDeviceToHost));
    return std::all_of(s.begin(), s.end(), [](int x) { return x == kc::kBlockOk; });
  };

  for (k::CodecId c : {k::CodecId::kTq3, k::CodecId::kTq4}) {
    const std::string name = c == k::CodecId::kTq3 ? "tq3" : "tq4";
    // Contiguous: block b is raw + b * 2 MiB; its encoding is enc + b * stride.
    for (std::uint32_t d : {64u, 128u, 256u}) {
      const std::uint32_t nv = kBlockBytes / 2 / d;
      const kc::BlockShape shape{c, fp16, d, nv};
      const std::size_t enc_bytes = k::EncodedBytes(c, fp16, d, nv), stride = Align16(enc_bytes);
      std::vector<void*> src(blocks), dst(blocks), dec(blocks);
      for (int b = 0; b < blocks; ++b) {
        src[b] = raw + b * kBlockBytes;
        dst[b] = enc + b * stride;
        dec[b] = out + b * kBlockBytes;
      }
      void** src_d = DeviceCopy(src);
      void** dst_d = DeviceCopy(dst);
      void** dec_d = DeviceCopy(dec);
      std::vector<std::byte> cpu_enc(enc_bytes), cpu_dec(kBlockBytes);
      Must(k::Encode(c, fp16, d, seed, host_bytes, cpu_enc), "CPU encode");
      Must(k::Decode(c, fp16, d, cpu_enc, cpu_dec), "CPU decode");

      const double enc_ms = MsPerCall(reps, [&] {
        Must(kc::EncodeBlocks(shape, seed, src_d, dst_d, blocks, nullptr), "EncodeBlocks");
      });
      const bool enc_ok = HostCopy(dst[0], enc_bytes) == cpu_enc &&
                          HostCopy(dst[blocks - 1], enc_bytes) == cpu_enc;
      CUDA_OK(cudaMemset(status, 0xff, sizeof(int) * blocks));
      const double dec_ms = MsPerCall(reps, [&] {
        Must(kc::DecodeBlocks(shape, seed, dst_d, dec_d, blocks, status, nullptr), "DecodeBlocks");
      });
      const bool dec_ok = status_ok() && HostCopy(dec[0], kBlockBytes) == cpu_dec &&
                          HostCopy(dec[blocks - 1], kBlockBytes) == cpu_dec;
      rows.push_back({name, "contiguous", "encode", d, enc_bytes, enc_ms, enc_ok});
      rows.push_back({name, "contiguous", "decode", d, enc_bytes, dec_ms, dec_ok});
      all_match = all_match && enc_ok && dec_ok;
      CUDA_OK(cudaFree(src_d));
      CUDA_OK(cudaFree(dst_d));
      CUDA_OK(cudaFree(dec_d));
    }

    // Paged, head_dim 128: each block is 64 slabs of 32 KiB scattered over the page pool in a
    // shuffled order, as an engine's paged KV cache holds them.
    {
      const std::uint32_t d = 128, nv = kSlabsPerBlock * kVectorsPerSlab;
      const std::size_t slab_bytes = std::size_t{kVectorsPerSlab} * d * 2;
      const kc::BlockShape shape{c, fp16, d, nv};
      const kc::PagedLayout paged{kSlabsPerBlock, kVectorsPerSlab};
      const std::size_t enc_bytes = k::EncodedBytes(c, fp16, d, nv), stride = Align16(enc_bytes);
      const std::size_t slabs = static_cast<std::size_t>(blocks) * kSlabsPerBlock;
      std::vector<std::size_t> page(slabs);
      std::iota(page.begin(), page.end(), std::size_t{0});
      std::shuffle(page.begin(), page.end(), std::mt19937(7));
      std::vector<void*> in_slabs(slabs), out_slabs(slabs), dst(blocks);
      for (std::size_t s = 0; s < slabs; ++s) {
        in_slabs[s] = raw + page[s] * slab_bytes;
        out_slabs[s] = out + page[s] * slab_bytes;
      }
      for (int b = 0; b < blocks; ++b) dst[b] = enc + b * stride;
      void** in_d = DeviceCopy(in_slabs);
      void** out_d = DeviceCopy(out_slabs);
      void** dst_d = DeviceCopy(dst);
      // What block b holds: slab s is the source pool's page page[b*64+s], a slice of `host`.
      auto canonical = [&](int b) {
        std::vector<std::byte> v(kBlockBytes);
        for (std::uint32_t s = 0; s < kSlabsPerBlock; ++s) {
          const std::size_t p = page[b * kSlabsPerBlock + s] % (kBlockBytes / slab_bytes);
          std::memcpy(v.data() + s * slab_bytes, host_bytes.data() + p * slab_bytes, slab_bytes);
        }
        return v;
      };
      auto gathered = [&](int b) {
        std::vector<std::byte> v(kBlockBytes);
        for (std::uint32_t s = 0; s < kSlabsPerBlock; ++s) {
          const auto slab = HostCopy(out_slabs[b * kSlabsPerBlock + s], slab_bytes);
          std::memcpy(v.data() + s * slab_bytes, slab.data(), slab_bytes);
        }
        return v;
      };
      bool enc_ok = true, dec_ok = true;
      const double enc_ms = MsPerCall(reps, [&] {
        Must(kc::EncodePagedBlocks(shape, seed, paged, in_d, dst_d, blocks, nullptr),
             "EncodePagedBlocks");
      });
      std::vector<std::vector<std::byte>> cpu_dec;
      for (int b : {0, blocks - 1}) {
        std::vector<std::byte> cpu_enc(enc_bytes), dec(kBlockBytes);
        Must(k::Encode(c, fp16, d, seed, canonical(b), cpu_enc), "CPU encode");
        Must(k::Decode(c, fp16, d, cpu_enc, dec), "CPU decode");
        enc_ok = enc_ok && HostCopy(dst[b], enc_bytes) == cpu_enc;
        cpu_dec.push_back(std::move(dec));
      }
      CUDA_OK(cudaMemset(status, 0xff, sizeof(int) * blocks));
      const double dec_ms = MsPerCall(reps, [&] {
        Must(kc::DecodePagedBlocks(shape, seed, paged, dst_d, out_d, blocks, status, nullptr),
             "DecodePagedBlocks");
      });
      dec_ok = status_ok() && gathered(0) == cpu_dec[0] && gathered(blocks - 1) == cpu_dec[1];
      rows.push_back({name, "paged", "encode", d, enc_bytes, enc_ms, enc_ok});
      rows.push_back({name, "paged", "decode", d, enc_bytes, dec_ms, dec_ok});
      all_match = all_match && enc_ok && dec_ok;
      CUDA_OK(cudaFree(in_d));
      CUDA_OK(cudaFree(out_d));
      CUDA_OK(cudaFree(dst_d));
    }
  }

  const double d2d_ms_after = MsPerCall(reps, copy_all);
  CUDA_OK(cudaFree(raw));
  CUDA_OK(cudaFree(out));
  CUDA_OK(cudaFree(enc));
  CUDA_OK(cudaFree(status));

  auto gbps = [&](double ms) { return static_cast<double>(total) / (ms * 1e-3) / 1e9; };
  // The faster of the two copies is the baseline: a ratio is never flattered by a slow copy.
  const double d2d = gbps(std::min(d2d_ms_before, d2d_ms_after));
  std::string json = "{\"gpu\": {\"name\": \"" + std::string(prop.name) +
                     "\", \"compute_capability\": " +
                     std::to_string(prop.major * 10 + prop.minor) +
                     ", \"multiprocessors\": " + std::to_string(prop.multiProcessorCount) +
                     ", \"memory_bytes\": " + std::to_string(prop.totalGlobalMem) + "}";
  char buf[512];
  std::snprintf(buf, sizeof buf,
                ", \"settings\": {\"blocks\": %d, \"block_bytes\": %zu, \"reps\": %d, "
                "\"value_type\": \"fp16\", \"timer\": \"cuda events, mean of reps after 2 "
                "warm-up calls\"}",
                blocks, kBlockBytes, reps);
  json += buf;
  std::snprintf(buf, sizeof buf,
                ", \"baselines\": [{\"name\": \"cuda_memcpy_d2d\", \"bytes\": %zu, "
                "\"gbps\": %.3f, \"gbps_before\": %.3f, \"gbps_after\": %.3f, "
                "\"counts\": \"bytes copied (each read once and written once)\"}]",
                total, d2d, gbps(d2d_ms_before), gbps(d2d_ms_after));
  json += buf;
  json += ", \"results\": [";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    const double g = gbps(r.ms);
    std::printf("codec=%s  head_dim=%u  layout=%s  op=%s  gbps=%.3f  ratio_vs_d2d=%.4f  "
                "us_per_block=%.3f  matches_cpu=%s\n",
                r.codec.c_str(), r.head_dim, r.layout.c_str(), r.op.c_str(), g, g / d2d,
                r.ms * 1e3 / blocks, r.matches_cpu ? "true" : "false");
    std::snprintf(buf, sizeof buf,
                  "%s{\"codec\": \"%s\", \"head_dim\": %u, \"layout\": \"%s\", \"op\": \"%s\", "
                  "\"gbps\": %.3f, \"d2d_gbps\": %.3f, \"ratio_vs_d2d\": %.4f, "
                  "\"us_per_block\": %.3f, \"encoded_bytes_per_block\": %zu, "
                  "\"matches_cpu\": %s}",
                  i ? ", " : "", r.codec.c_str(), r.head_dim, r.layout.c_str(), r.op.c_str(), g,
                  d2d, g / d2d, r.ms * 1e3 / blocks, r.encoded_bytes,
                  r.matches_cpu ? "true" : "false");
    json += buf;
  }
  json += "]}";
  std::printf("d2d_gbps=%.3f\n%s\n", d2d, json.c_str());
  if (!all_match) {
    std::fprintf(stderr, "gpu_codec_bench: error: GPU bytes differ from the CPU codec "
                         "(rows with matches_cpu=false)\n");
    return 1;
  }
  return 0;
}
EOF
}

# bench_report KIND LOG OUT COMMAND: the last JSON line of LOG, completed with the house fields
# ("bench", "machine", "commit", "command"), written to OUT; prints the summary's numbers.
bench_report() {
  python3 - "$@" <<'EOF'
import json, os, platform, subprocess, sys
kind, log, out, command = sys.argv[1:5]
try:
    with open(log, errors="replace") as f:
        r = json.loads([l for l in f if l.startswith("{")][-1])
except (OSError, IndexError, ValueError) as e:
    print(f"no JSON result in {os.path.basename(log)} ({type(e).__name__})")
    sys.exit(1)

def run(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""

if kind == "gpu":
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), cpu)
    except OSError:
        pass
    gpu = run("nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader")
    report = {"bench": "gpu_codec",
              "machine": {"cpu": cpu, "cores": os.cpu_count(), "kernel": platform.release(),
                          "gpu": gpu or r.get("gpu", {}).get("name")},
              "commit": run("git", "describe", "--always", "--dirty", "--abbrev=12") or "unknown",
              "command": command}
    for key in ("gpu", "settings", "baselines", "results"):
        report[key] = r.get(key)
    r = report
with open(out, "w") as f:
    json.dump(r, f, indent=1)
    f.write("\n")

rows = r.get("results") or []
def pick(codec, op, layout):
    return next((x for x in rows if x.get("codec") == codec and x.get("head_dim") == 128
                 and x.get("op") == op and x.get("layout") == layout), None)
if kind == "gpu":
    d2d = r["baselines"][0]["gbps"]
    parts = []
    for codec in ("tq3", "tq4"):
        e, d = pick(codec, "encode", "contiguous"), pick(codec, "decode", "contiguous")
        if e and d:
            parts.append(f"{codec}/128 enc {e['gbps']:.1f} GB/s ({e['ratio_vs_d2d']:.3f}x D2D)"
                         f" dec {d['gbps']:.1f} GB/s ({d['ratio_vs_d2d']:.3f}x D2D)")
    bad = sum(1 for x in rows if not x.get("matches_cpu"))
    parts.append(f"D2D {d2d:.1f} GB/s copied")
    if bad:
        parts.append(f"{bad} rows differ from the CPU codec")
    print("; ".join(parts))
else:
    row = next((x for x in rows if x.get("codec") == "tq3" and x.get("head_dim") == 128), None)
    if row:
        print(f"CPU one core, {row.get('impl')}: tq3/128 enc {row['encode_gbps']} GB/s"
              f" dec {row['decode_gbps']} GB/s")
    else:
        print("no tq3/128 row")
EOF
}

# ---- main -------------------------------------------------------------------------------------
main() {
  local out=""
  while (($#)); do
    case "$1" in
      -h | --help)
        usage
        exit 0
        ;;
      --out)
        (($# >= 2)) || { echo "gpu-check: --out needs a folder (see --help)" >&2; exit 3; }
        out="$2"
        shift 2
        ;;
      --out=*)
        out="${1#--out=}"
        shift
        ;;
      -*)
        echo "gpu-check: unknown option $1 (see --help)" >&2
        exit 3
        ;;
      *)
        [[ -z "$out" ]] || { echo "gpu-check: one results folder only (see --help)" >&2; exit 3; }
        out="$1"
        shift
        ;;
    esac
  done
  budget="${GPU_CHECK_BUDGET_S:-450}"
  [[ "$budget" =~ ^[0-9]+$ ]] || { echo "gpu-check: GPU_CHECK_BUDGET_S must be seconds" >&2; exit 3; }

  # -- Is there a GPU? Nothing is built, run or written before this is known.
  local smi_list="" no_gpu=""
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    no_gpu="nvidia-smi not found"
  elif ! smi_list="$(timeout 30 nvidia-smi -L 2>&1)"; then
    no_gpu="nvidia-smi failed: $(head -n1 <<<"$smi_list")"
  elif ! grep -q '^GPU [0-9]' <<<"$smi_list"; then
    no_gpu="nvidia-smi lists no GPU"
  fi
  if [[ -n "$no_gpu" ]]; then
    echo "gpu-check: no NVIDIA GPU present (${no_gpu}); nothing built or run (exit 2)" >&2
    exit 2
  fi
  if ! command -v timeout >/dev/null || ! command -v python3 >/dev/null; then
    echo "gpu-check: needs timeout (coreutils) and python3" >&2
    exit 1
  fi

  # A relative --out is relative to the caller's folder; the default is under the repository.
  out="${out:-$repo/gpu-results/$(date -u +%Y%m%dT%H%M%SZ)}"
  mkdir -p "$out"
  results="$(cd "$out" && pwd)"
  cd "$repo"
  local jobs build="$repo/build/gpu" kbuild="$repo/build/gpu-kernels" nvcc ninja="" cc=""
  local cuda_arch gpu_name log note
  jobs="$(nproc)"
  build_log_name="build.log"
  build_ok=0
  echo "gpu-check: results in ${results}; time budget ${budget} s"

  # -- nvidia-smi and versions
  log="$results/nvidia-smi.txt"
  {
    echo "\$ nvidia-smi -L"
    echo "$smi_list"
    echo "\$ nvidia-smi --query-gpu=..."
    nvidia-smi --query-gpu=index,name,compute_cap,driver_version,memory.total,clocks.max.sm,clocks.max.memory,power.limit \
      --format=csv 2>&1 || true
    echo "\$ nvidia-smi"
    nvidia-smi 2>&1 || true
    echo "\$ nvidia-smi -q"
    nvidia-smi -q 2>&1 || true
  } >"$log"
  gpu_name="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -n1 || true)"
  cc="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d ' .' || true)"
  nvcc="$(command -v nvcc || true)"
  [[ -n "$nvcc" || ! -x /usr/local/cuda/bin/nvcc ]] || nvcc=/usr/local/cuda/bin/nvcc
  if ! [[ "$cc" =~ ^[0-9]+$ ]] && [[ -n "$nvcc" && -x "$(dirname "$nvcc")/__nvcc_device_query" ]]; then
    cc="$("$(dirname "$nvcc")/__nvcc_device_query" 2>/dev/null | tr -s ', ' '\n' | grep -m1 -E '^[0-9]+$' || true)"
  fi
  sanitizer="$(command -v compute-sanitizer || true)"
  [[ -n "$sanitizer" || ! -x /usr/local/cuda/bin/compute-sanitizer ]] ||
    sanitizer=/usr/local/cuda/bin/compute-sanitizer
  command -v ninja >/dev/null 2>&1 && ninja=ninja
  {
    echo "date (UTC): $(date -u +%FT%TZ)"
    echo "uname: $(uname -a)"
    echo "cores: ${jobs}"
    free -g 2>&1 | head -n2 || true
    echo "commit: $(git describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)"
    for tool in cmake "$nvcc" "$sanitizer" c++ python3 ninja; do
      [[ -n "$tool" ]] || continue
      echo "\$ $tool --version"
      "$tool" --version 2>&1 | head -n4 || echo "(not found)"
    done
  } >"$results/env.txt" 2>&1
  if [[ "$cc" =~ ^[0-9]+$ ]]; then
    record nvidia-smi PASS "${gpu_name:-GPU} (compute ${cc})"
  else
    cc=90
    record nvidia-smi FAIL "${gpu_name:-GPU}: compute capability unreadable, assuming 90" 1 "$log"
  fi

  # -- dependencies: tools, then the Debian libraries of the build (a subset of
  # scripts/install-deps.sh's list); install-deps.sh runs only when one is missing.
  local missing_tools=() missing_pkgs=() pkgs p
  for p in cmake c++ python3; do command -v "$p" >/dev/null 2>&1 || missing_tools+=("$p"); done
  [[ -n "$nvcc" ]] || missing_tools+=(nvcc)
  [[ -n "$sanitizer" ]] || missing_tools+=(compute-sanitizer)
  pkgs=(pkg-config libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
    libabsl-dev libxxhash-dev librocksdb-dev libucx-dev liburing-dev libnuma-dev libgtest-dev
    libgmock-dev libbenchmark-dev libcli11-dev libspdlog-dev libfmt-dev libtomlplusplus-dev
    libcpp-httplib-dev nlohmann-json3-dev libssl-dev)
  log="$results/deps.log"
  : >"$log"
  if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${pkgs[@]}"; do
      dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        missing_pkgs+=("$p")
    done
  else
    echo "no dpkg-query: not a Debian system, library packages not checked" >>"$log"
  fi
  echo "missing tools: ${missing_tools[*]:-none}; missing packages: ${missing_pkgs[*]:-none}" >>"$log"
  if ((${#missing_pkgs[@]} == 0 && ${#missing_tools[@]} == 0)); then
    record deps PASS "tools and ${#pkgs[@]} build packages present; install-deps.sh not run"
  elif ((${#missing_pkgs[@]} == 0)); then
    record deps FAIL "missing tools: ${missing_tools[*]}" 1 "$log"
  else
    echo "gpu-check: deps: missing ${missing_pkgs[*]}: running scripts/install-deps.sh"
    if run_logged deps 120 "$results/install-deps.log" "$repo/scripts/install-deps.sh" && ((RC == 0)); then
      note="installed by scripts/install-deps.sh: ${missing_pkgs[*]}"
      if ((${#missing_tools[@]})); then
        record deps FAIL "${note}; missing tools: ${missing_tools[*]}" 1 "$log"
      else
        record deps PASS "$note"
      fi
    else
      record deps FAIL "missing ${missing_pkgs[*]}${missing_tools[*]:+ and tools ${missing_tools[*]}}; install-deps.sh rc ${RC}: $(first_error "$results/install-deps.log")" 1 "$results/install-deps.log"
    fi
  fi

  # -- configure: the whole project; kernels/ alone when that fails
  cuda_arch="$cc"
  if cmake --version 2>/dev/null | awk 'NR==1 { split($3, v, "."); exit !(v[1] > 3 || (v[1] == 3 && v[2] >= 24)) }'; then
    cuda_arch=native
  fi
  local cfg=(-DCMAKE_BUILD_TYPE=RelWithDebInfo -DCACHESVC_WITH_CUDA=ON
    "-DCMAKE_CUDA_ARCHITECTURES=${cuda_arch}" -DCMAKE_CUDA_FLAGS=-lineinfo)
  [[ -z "$nvcc" ]] || cfg+=("-DCMAKE_CUDA_COMPILER=${nvcc}")
  local full=0 targets=() kernels_lib="" bin_kernels="" bin_tiers="" bin_connector="" bin_codec=""
  local gen=()
  [[ -z "$ninja" || -f "$build/CMakeCache.txt" ]] || gen=(-G Ninja)
  if ! run_logged configure 180 "$results/configure.log" \
    cmake -S "$repo" -B "$build" "${gen[@]}" "${cfg[@]}" -DCACHESVC_BUILD_TESTS=ON -DCACHESVC_BUILD_BENCH=ON; then
    record configure SKIP "not started: time budget spent"
  elif ((RC == 0)) && { grep -q "cachesvc: CUDA enabled" "$results/configure.log" ||
    compgen -G "$build/CMakeFiles/*/CMakeCUDACompiler.cmake" >/dev/null; }; then
    full=1
    record configure PASS "build/gpu, RelWithDebInfo, CUDA arch ${cuda_arch} (${DUR} s)"
    targets=(kernels_test tiers_test connector_gpu_test cachesvc_client_shared codec_bench)
  else
    if ((RC == 0)); then note="CUDA not enabled (nvcc not found?)"; else note="rc ${RC}: $(first_error "$results/configure.log")"; fi
    record configure FAIL "whole project: ${note}; building kernels/ alone" 1 "$results/configure.log"
    build="$kbuild"
    gen=()
    [[ -z "$ninja" || -f "$build/CMakeCache.txt" ]] || gen=(-G Ninja)
    if ! run_logged configure-kernels 120 "$results/configure-kernels.log" \
      cmake -S "$repo/kernels" -B "$build" "${gen[@]}" "${cfg[@]}" -DBUILD_TESTING=ON; then
      record configure-kernels SKIP "not started: time budget spent"
    elif ((RC == 0)); then
      record configure-kernels PASS "build/gpu-kernels with tests, CUDA arch ${cuda_arch} (${DUR} s)"
      targets=(kernels_test cachesvc_kernels)
    else
      note="$(first_error "$results/configure-kernels.log")"
      mv "$results/configure-kernels.log" "$results/configure-kernels-tests.log"
      # Without GoogleTest: the library alone, for the benchmark.
      if run_logged configure-kernels 90 "$results/configure-kernels.log" \
        cmake -S "$repo/kernels" -B "$build" "${cfg[@]}" -DBUILD_TESTING=OFF && ((RC == 0)); then
        record configure-kernels FAIL "with tests: ${note}; configured the library alone" 1 "$results/configure-kernels-tests.log"
        targets=(cachesvc_kernels)
      else
        record configure-kernels FAIL "rc ${RC}: $(first_error "$results/configure-kernels.log")" 1 "$results/configure-kernels.log"
      fi
    fi
  fi

  # -- build only what the check runs (-k: what builds is used even when one target fails)
  if ((${#targets[@]})); then
    local help_out known=() t keep=()
    if help_out="$(cmake --build "$build" --target help 2>/dev/null)"; then
      for t in "${targets[@]}"; do
        if grep -qw -- "$t" <<<"$help_out"; then known+=("$t"); else echo "gpu-check: build: no target ${t} here"; fi
      done
    else
      known=("${targets[@]}")
    fi
    if grep -q 'CMAKE_GENERATOR:INTERNAL=Ninja' "$build/CMakeCache.txt" 2>/dev/null; then
      keep=(-k 0)
    else
      keep=(-k)
    fi
    if ((${#known[@]} == 0)); then
      record build FAIL "none of ${targets[*]} is a target of ${build#"$repo"/}"
    elif touch "$results/.build-start" && ! run_logged build 360 "$results/build.log" \
      cmake --build "$build" -j "$jobs" --target "${known[@]}" -- "${keep[@]}"; then
      record build SKIP "not started: time budget spent"
    elif ((RC == 0)); then
      build_ok=1
      record build PASS "${known[*]} in ${build#"$repo"/} (${DUR} s, -j ${jobs})"
    elif timed_out; then
      record build FAIL "timed out after ${T} s" 1 "$results/build.log"
    else
      record build FAIL "rc ${RC}: $(grep -m1 -E 'error|FAILED' "$results/build.log" | cut -c1-160)" 1 "$results/build.log"
    fi
  else
    record build SKIP "nothing configured"
  fi
  find_bin() {
    if [[ -d "$build" ]]; then find "$build" -type f -name "$1" -perm -u+x -print -quit 2>/dev/null || true; fi
  }
  bin_kernels="$(find_bin kernels_test)"
  if ((full)); then
    bin_tiers="$(find_bin tiers_test)"
    bin_connector="$(find_bin connector_gpu_test)"
    bin_codec="$(find_bin codec_bench)"
  fi
  [[ ! -d "$build" ]] || kernels_lib="$(find "$build" -type f -name libcachesvc_kernels.a -print -quit 2>/dev/null || true)"

  # -- the GPU tests
  local f_kernels='CudaCodecTest.*:CudaCodecArgsTest.*'
  local f_hbm='HbmTierTest.*:Tiers/TierContractTest.*/hbm:-HbmTierTest.AbsentWithoutAGpu'
  local f_connector='ConnectorGpuTest.*'
  local why_full=""
  ((full)) || why_full="needs the whole project, which did not configure (see configure.log)"
  gtest_step test-kernels "$bin_kernels" "$f_kernels" 120
  gtest_step test-hbm "$bin_tiers" "$f_hbm" 120 "" "$why_full"
  gtest_step test-connector "$bin_connector" "$f_connector" 120 "" "$why_full"

  # -- the CUDA codec benchmark, with the D2D copy in the same run
  local src="$results/gpu_codec_bench.cu" bench_bin="$results/gpu_codec_bench"
  if [[ -z "$kernels_lib" || -z "$nvcc" ]]; then
    record bench-gpu-codec SKIP "needs nvcc and libcachesvc_kernels.a (see ${build_log_name})"
  else
    write_gpu_codec_bench "$src"
    if ! run_logged bench-gpu-codec-compile 120 "$results/bench-gpu-codec-compile.log" \
      "$nvcc" -std=c++20 -O2 -lineinfo "-arch=sm_${cc}" -I"$repo" "$src" "$kernels_lib" -o "$bench_bin"; then
      record bench-gpu-codec SKIP "not started: time budget spent"
    elif ((RC != 0)); then
      record bench-gpu-codec FAIL "nvcc rc ${RC}: $(first_error "$results/bench-gpu-codec-compile.log")" 1 "$results/bench-gpu-codec-compile.log"
    elif ! run_logged bench-gpu-codec 90 "$results/bench-gpu-codec.log" "$bench_bin" --blocks 128 --reps 20; then
      record bench-gpu-codec SKIP "not started: time budget spent"
    else
      local report_ok=1
      note="$(bench_report gpu "$results/bench-gpu-codec.log" "$results/gpu_codec.json" \
        "scripts/gpu-check.sh: gpu_codec_bench --blocks 128 --reps 20")" || report_ok=0
      if ((RC == 0 && report_ok)); then
        record bench-gpu-codec PASS "$note"
      else
        record bench-gpu-codec FAIL "rc ${RC}: ${note}; $(first_error "$results/bench-gpu-codec.log")" 1 "$results/bench-gpu-codec.log"
      fi
    fi
  fi

  # -- the same tests under compute-sanitizer
  sanitizer_opts=()
  local san_help=""
  [[ -z "$sanitizer" ]] || san_help="$(timeout 30 "$sanitizer" --help 2>&1 || true)"
  if grep -q -- '--target-processes' <<<"$san_help"; then
    sanitizer_opts=(--target-processes application-only)
  fi
  local tool
  for tool in memcheck racecheck; do
    gtest_step "${tool}-kernels" "$bin_kernels" "$f_kernels" 180 "$tool"
    gtest_step "${tool}-hbm" "$bin_tiers" "$f_hbm" 180 "$tool" "$why_full"
    gtest_step "${tool}-connector" "$bin_connector" "$f_connector" 180 "$tool" "$why_full"
  done

  # -- the CPU codec on this machine, for comparison (optional)
  if [[ -z "$bin_codec" ]]; then
    record bench-codec-cpu SKIP "codec_bench not built (optional)" 0
  elif ! run_logged bench-codec-cpu 90 "$results/bench-codec-cpu.log" python3 "$repo/bench/run" codec --quick --build "$build"; then
    record bench-codec-cpu SKIP "not started: time budget spent (optional)" 0
  elif ((RC == 0)) && note="$(bench_report cpu "$results/bench-codec-cpu.log" "$results/codec_cpu.json" -)"; then
    record bench-codec-cpu PASS "$note" 0
  else
    record bench-codec-cpu FAIL "rc ${RC} (optional): $(first_error "$results/bench-codec-cpu.log")" 0 "$results/bench-codec-cpu.log"
  fi

  # -- summary: failed steps' log tails, then one line per step, last
  local i failed=0 lines=()
  for i in "${!S_NAME[@]}"; do
    if [[ "${S_STATUS[i]}" == FAIL || ("${S_STATUS[i]}" == SKIP && "${S_REQ[i]}" == 1) ]]; then
      [[ "${S_REQ[i]}" == 1 ]] && failed=$((failed + 1))
    fi
    lines+=("$(printf '%-4s  %-19s %s' "${S_STATUS[i]}" "${S_NAME[i]}" "${S_NOTE[i]}")")
  done
  local verdict
  if ((failed == 0)); then
    verdict="RESULT: PASS (exit 0)"
  else
    verdict="RESULT: FAIL: ${failed} required steps failed or did not run (exit 1)"
  fi
  {
    echo "gpu-check summary: ${gpu_name:-GPU}; ${SECONDS} s of a ${budget} s budget"
    echo "results: ${results}"
    printf '%s\n' "${lines[@]}"
    echo "$verdict"
  } >"$results/summary.txt"
  local tarball
  tarball="$(mktemp)"
  if tar -czf "$tarball" -C "$results" --exclude=results.tar.gz --exclude=gpu_codec_bench \
    --exclude=.build-start . 2>/dev/null; then
    chmod 644 "$tarball" && mv "$tarball" "$results/results.tar.gz"
  else
    rm -f "$tarball"
  fi
  for i in "${!S_NAME[@]}"; do
    if [[ "${S_STATUS[i]}" == FAIL && -n "${S_LOG[i]}" && -f "${S_LOG[i]}" ]]; then
      echo "---- ${S_NAME[i]}: last lines of ${S_LOG[i]#"$results"/}"
      tail -n 8 "${S_LOG[i]}" | cut -c1-200
    fi
  done
  echo
  cat "$results/summary.txt"
  ((failed == 0))
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
