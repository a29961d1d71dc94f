// tests/tiers/test_util.h: helpers shared by the tier tests: fresh folders, deterministic payloads
// and keys, and 4 KiB-aligned buffers (what O_DIRECT needs).
#pragma once

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <system_error>
#include <vector>

#include "tiers/tier.h"

namespace cachesvc::tiers::testing {

// A fresh folder under the test temp folder, named after `name` and the process (so that test
// processes running in parallel, from one build folder or several, never share one), removed
// with everything in it when the object goes.
class ScopedDir {
 public:
  explicit ScopedDir(const std::string& name)
      : path_(std::filesystem::path(::testing::TempDir()) /
              ("tiers_test_" + name + "_" + std::to_string(::getpid()))) {
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~ScopedDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  ScopedDir(const ScopedDir&) = delete;
  ScopedDir& operator=(const ScopedDir&) = delete;
  [[nodiscard]] const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// The name of the running test, for folder names.
inline std::string TestName() {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  std::string name = std::string(info->test_suite_name()) + "_" + info->name();
  for (char& c : name) {
    if (c == '/') c = '_';
  }
  return name;
}

// 16 bytes derived from `i` (distinct for distinct i).
inline BlockId Key(std::uint64_t i) {
  BlockId id{};
  for (int b = 0; b < 8; ++b) {
    id[static_cast<std::size_t>(b)] = static_cast<std::uint8_t>(i >> (8 * b));
    id[static_cast<std::size_t>(b) + 8] =
        static_cast<std::uint8_t>((i * 0x9e3779b97f4a7c15ull) >> (8 * b));
  }
  return id;
}

inline BlockMeta Meta(std::uint64_t i, std::uint64_t bytes) {
  return BlockMeta{Key(i), 0xfeedf00d00000000ull + i, kernels::CodecId::kRaw, bytes};
}

// 4 KiB-aligned heap buffer.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(std::size_t bytes)
      : bytes_(bytes),
        data_(static_cast<std::byte*>(
            std::aligned_alloc(4096, (bytes + 4095) / 4096 * 4096 + 4096))) {}
  ~AlignedBuffer() { std::free(data_); }
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  std::byte* data() { return data_; }
  std::span<std::byte> span() { return {data_, bytes_}; }
  std::span<const std::byte> cspan() const { return {data_, bytes_}; }
  std::size_t size() const { return bytes_; }

 private:
  std::size_t bytes_;
  std::byte* data_;
};

// Fills `out` with bytes that depend on `seed` and the position (xorshift).
inline void FillPayload(std::uint64_t seed, std::span<std::byte> out) {
  std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 0x1234567;
  for (std::size_t i = 0; i < out.size(); ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    out[i] = static_cast<std::byte>(x & 0xff);
  }
}

inline bool PayloadMatches(std::uint64_t seed, std::span<const std::byte> got) {
  std::vector<std::byte> want(got.size());
  FillPayload(seed, want);
  return std::equal(want.begin(), want.end(), got.begin());
}

// RLIMIT_FSIZE stands in for a disk that fills up: writes past `bytes` fail with EFBIG (SIGXFSZ
// ignored). Restores the limit and the signal handler when it goes.
class FileSizeLimit {
 public:
  explicit FileSizeLimit(rlim_t bytes) {
    ::getrlimit(RLIMIT_FSIZE, &saved_);
    old_handler_ = std::signal(SIGXFSZ, SIG_IGN);
    rlimit lim = saved_;
    lim.rlim_cur = bytes;
    ::setrlimit(RLIMIT_FSIZE, &lim);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &saved_);
    std::signal(SIGXFSZ, old_handler_);
  }
  FileSizeLimit(const FileSizeLimit&) = delete;
  FileSizeLimit& operator=(const FileSizeLimit&) = delete;

 private:
  rlimit saved_{};
  void (*old_handler_)(int) = nullptr;
};

}  // namespace cachesvc::tiers::testing
