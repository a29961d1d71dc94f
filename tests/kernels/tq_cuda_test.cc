// The CUDA kernels against the CPU reference: contiguous and paged encode/decode must produce the
// CPU's bytes exactly, and a decode of a block with a wrong header must report it and write NaN.
// Skips cleanly on machines without a GPU.
#include <cuda_runtime_api.h>
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "kernels/tq_codec.h"
#include "kernels/tq_cuda.h"
#include "kernels/tq_math.h"

namespace cachesvc::kernels {
namespace {

class CudaCodecTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) GTEST_SKIP() << "no CUDA device";
  }
  template <typename T>
  T* Device(const std::vector<T>& host) {
    void* p = nullptr;
    EXPECT_EQ(cudaMalloc(&p, host.size() * sizeof(T) + 16), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice),
              cudaSuccess);
    allocations_.push_back(p);
    return static_cast<T*>(p);
  }
  template <typename T>
  std::vector<T> Host(const T* device, std::size_t n) {
    std::vector<T> out(n);
    EXPECT_EQ(cudaMemcpy(out.data(), device, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  void TearDown() override {
    for (void* p : allocations_) cudaFree(p);
  }
  std::vector<void*> allocations_;
};

std::vector<std::uint16_t> Random(ValueType t, std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<std::uint16_t> v(n);
  for (auto& x : v)
    x = t == ValueType::kFp16 ? tq::FloatToFp16(normal(rng)) : tq::FloatToBf16(normal(rng));
  v[3] = t == ValueType::kFp16 ? 0x7e00 : 0x7fc0;  // one NaN vector
  return v;
}

TEST_F(CudaCodecTest, ContiguousAndPagedMatchTheCpuBitForBit) {
  for (CodecId c : {CodecId::kTq3, CodecId::kTq4}) {
    for (ValueType t : {ValueType::kFp16, ValueType::kBf16}) {
      for (std::uint32_t d : {64u, 128u, 256u}) {
        SCOPED_TRACE(std::string(GetCodecInfo(c).name) + " d=" + std::to_string(d));
        constexpr std::uint32_t kBlocks = 3, kSlabs = 4, kPerSlab = 32,
                                kVectors = kSlabs * kPerSlab;
        const std::size_t enc_bytes = EncodedBytes(c, t, d, kVectors);
        std::vector<std::vector<std::uint16_t>> raw(kBlocks);
        std::vector<std::vector<std::byte>> cpu(kBlocks);
        std::vector<const void*> src_ptrs;
        std::vector<void*> dst_ptrs;
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          raw[b] = Random(t, std::size_t{kVectors} * d, 100 + b);
          cpu[b].resize(enc_bytes);
          ASSERT_TRUE(
              Encode(c, t, d, kDefaultSignSeed, std::as_bytes(std::span(raw[b])), cpu[b]).ok());
          src_ptrs.push_back(Device(raw[b]));
          dst_ptrs.push_back(Device(std::vector<std::byte>(enc_bytes)));
        }
        const cuda::BlockShape shape{c, t, d, kVectors};
        ASSERT_TRUE(cuda::EncodeBlocks(shape, kDefaultSignSeed, Device(src_ptrs), Device(dst_ptrs),
                                       kBlocks, nullptr)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          EXPECT_EQ(Host(static_cast<std::byte*>(dst_ptrs[b]), enc_bytes), cpu[b]) << "block " << b;
        }

        // Paged: each block's slabs scattered in one "page pool", in reverse order.
        std::vector<std::uint16_t> pool(std::size_t{kBlocks} * kVectors * d);
        std::vector<const void*> slab_ptrs(kBlocks * kSlabs);
        auto* pool_dev = Device(pool);
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          for (std::uint32_t s = 0; s < kSlabs; ++s) {
            const std::size_t page = (kBlocks * kSlabs - 1) - (b * kSlabs + s);
            std::uint16_t* at = pool_dev + page * kPerSlab * d;
            ASSERT_EQ(cudaMemcpy(at, raw[b].data() + std::size_t{s} * kPerSlab * d,
                                 kPerSlab * d * 2, cudaMemcpyHostToDevice),
                      cudaSuccess);
            slab_ptrs[b * kSlabs + s] = at;
          }
        }
        std::vector<void*> paged_dst;
        for (std::uint32_t b = 0; b < kBlocks; ++b)
          paged_dst.push_back(Device(std::vector<std::byte>(enc_bytes)));
        const cuda::PagedLayout paged{kSlabs, kPerSlab};
        ASSERT_TRUE(cuda::EncodePagedBlocks(shape, kDefaultSignSeed, paged, Device(slab_ptrs),
                                            Device(paged_dst), kBlocks, nullptr)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          EXPECT_EQ(Host(static_cast<std::byte*>(paged_dst[b]), enc_bytes), cpu[b])
              << "paged block " << b;
        }

        // Decode: contiguous and into pages, equal to the CPU decode.
        std::vector<const void*> enc_ptrs;
        std::vector<void*> out_ptrs;
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          enc_ptrs.push_back(dst_ptrs[b]);
          out_ptrs.push_back(Device(std::vector<std::uint16_t>(std::size_t{kVectors} * d)));
        }
        int* status = Device(std::vector<int>(kBlocks, -1));
        ASSERT_TRUE(cuda::DecodeBlocks(shape, kDefaultSignSeed, Device(enc_ptrs), Device(out_ptrs),
                                       kBlocks, status, nullptr)
                        .ok());
        std::vector<void*> slab_out(slab_ptrs.size());
        for (std::size_t k = 0; k < slab_ptrs.size(); ++k)
          slab_out[k] = const_cast<void*>(slab_ptrs[k]);
        ASSERT_TRUE(cuda::DecodePagedBlocks(shape, kDefaultSignSeed, paged, Device(enc_ptrs),
                                            Device(slab_out), kBlocks, status, nullptr)
                        .ok());
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        EXPECT_EQ(Host(status, kBlocks), std::vector<int>(kBlocks, cuda::kBlockOk));
        for (std::uint32_t b = 0; b < kBlocks; ++b) {
          std::vector<std::uint16_t> want(std::size_t{kVectors} * d);
          ASSERT_TRUE(Decode(c, t, d, cpu[b], std::as_writable_bytes(std::span(want))).ok());
          EXPECT_EQ(Host(static_cast<std::uint16_t*>(out_ptrs[b]), want.size()), want)
              << "block " << b;
          for (std::uint32_t s = 0; s < kSlabs; ++s) {
            const auto got = Host(static_cast<const std::uint16_t*>(slab_ptrs[b * kSlabs + s]),
                                  std::size_t{kPerSlab} * d);
            EXPECT_TRUE(
                std::equal(got.begin(), got.end(), want.begin() + std::size_t{s} * kPerSlab * d))
                << "slab " << s;
          }
        }
      }
    }
  }
}

TEST_F(CudaCodecTest, WrongHeaderIsReportedAndDecodesToNan) {
  const cuda::BlockShape shape{CodecId::kTq3, ValueType::kFp16, 128, 16};
  auto raw = Random(ValueType::kFp16, 16 * 128, 5);
  std::vector<std::byte> enc(EncodedBytes(CodecId::kTq3, ValueType::kFp16, 128, 16));
  ASSERT_TRUE(Encode(CodecId::kTq3, ValueType::kFp16, 128, kDefaultSignSeed,
                     std::as_bytes(std::span(raw)), enc)
                  .ok());
  enc[9] ^= std::byte{1};  // seed byte: header check no longer matches
  std::vector<const void*> src = {Device(enc)};
  std::vector<void*> dst = {Device(std::vector<std::uint16_t>(16 * 128))};
  int* status = Device(std::vector<int>(1, -1));
  ASSERT_TRUE(
      cuda::DecodeBlocks(shape, kDefaultSignSeed, Device(src), Device(dst), 1, status, nullptr)
          .ok());
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(Host(status, 1)[0], cuda::kBlockBadHeader);
  for (std::uint16_t v : Host(static_cast<std::uint16_t*>(dst[0]), 16 * 128))
    ASSERT_EQ(v, tq::kFp16CanonicalNan);
}

TEST(CudaCodecArgsTest, BadShapesAreRefusedBeforeLaunch) {
  EXPECT_EQ(
      cuda::EncodeBlocks({CodecId::kRaw, ValueType::kFp16, 128, 4}, 0, nullptr, nullptr, 1, nullptr)
          .code,
      CodecCode::kInvalidArgument);
  EXPECT_EQ(
      cuda::EncodeBlocks({CodecId::kTq3, ValueType::kFp16, 96, 4}, 0, nullptr, nullptr, 1, nullptr)
          .code,
      CodecCode::kInvalidArgument);
  EXPECT_EQ(cuda::EncodePagedBlocks({CodecId::kTq3, ValueType::kFp16, 128, 10}, 0, {3, 3}, nullptr,
                                    nullptr, 1, nullptr)
                .code,
            CodecCode::kInvalidArgument);
}

}  // namespace
}  // namespace cachesvc::kernels
