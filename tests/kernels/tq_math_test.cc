// The element conversions and building blocks of tq_math.h against IEEE behaviour: exhaustive over
// fp16, and against the CPU's own F16C conversion where it has one.
#include "kernels/tq_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <random>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#endif

namespace cachesvc::kernels::tq {
namespace {

TEST(TqMathTest, Fp16RoundTripsEveryValue) {
  for (std::uint32_t h = 0; h < 0x10000; ++h) {
    const float f = Fp16ToFloat(static_cast<std::uint16_t>(h));
    const bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
    if (nan) {
      EXPECT_TRUE(std::isnan(f)) << h;
      continue;
    }
    EXPECT_EQ(FloatToFp16(f), h) << std::hex << h;
  }
}

TEST(TqMathTest, Fp16ValuesAreExact) {
  EXPECT_EQ(Fp16ToFloat(0x3c00), 1.0f);
  EXPECT_EQ(Fp16ToFloat(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(Fp16ToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(Fp16ToFloat(0x7bff), 65504.0f);
  EXPECT_TRUE(std::isinf(Fp16ToFloat(0xfc00)) && Fp16ToFloat(0xfc00) < 0);
}

TEST(TqMathTest, Fp16RoundsToNearestEven) {
  EXPECT_EQ(FloatToFp16(1.0f + std::ldexp(1.0f, -11)), 0x3c00);      // tie -> even
  EXPECT_EQ(FloatToFp16(1.0f + 3 * std::ldexp(1.0f, -11)), 0x3c02);  // tie -> even (up)
  EXPECT_EQ(FloatToFp16(65519.0f), 0x7bff);                          // below the Inf boundary
  EXPECT_EQ(FloatToFp16(65520.0f), 0x7c00);                          // rounds to Inf
  EXPECT_EQ(FloatToFp16(std::ldexp(1.0f, -25)), 0x0000);             // half the smallest: even
  EXPECT_EQ(FloatToFp16(std::ldexp(1.5f, -25)), 0x0001);
  EXPECT_EQ(FloatToFp16(-0.0f), 0x8000);
  EXPECT_EQ(FloatToFp16(NAN), 0x7e00);
}

#if defined(__x86_64__)
// _mm_cvtps_ph rather than _cvtss_sh, which Clang defines with a compound literal (-pedantic).
__attribute__((target("sse2,f16c"))) std::uint16_t HardwareFp16(float f) {
  const __m128i h = _mm_cvtps_ph(_mm_set_ss(f), _MM_FROUND_TO_NEAREST_INT);
  return static_cast<std::uint16_t>(_mm_cvtsi128_si32(h) & 0xffff);
}

// CPUID.1:ECX bit 29; Clang's __builtin_cpu_supports does not know "f16c".
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  return __get_cpuid(1, &eax, &ebx, &ecx, &edx) != 0 && (ecx & bit_F16C) != 0;
}

TEST(TqMathTest, Fp16MatchesF16cOnRandomFloats) {
  if (!CpuHasF16c()) GTEST_SKIP() << "no F16C";
  std::mt19937 rng(7);
  std::uniform_int_distribution<std::uint32_t> any;
  for (int i = 0; i < 2'000'000; ++i) {
    std::uint32_t u = any(rng);
    // Half the samples near the fp16 range, where rounding matters most.
    if (i % 2) u = (u & 0x80ffffffu) | ((0x66u + (u >> 24) % 0x1a) << 23);
    const float f = BitsFloat(u);
    if (std::isnan(f)) continue;
    ASSERT_EQ(FloatToFp16(f), HardwareFp16(f)) << std::hex << u;
  }
}
#endif

TEST(TqMathTest, Bf16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f808000u)), 0x3f80);  // tie -> even (down)
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(FloatToBf16(BitsFloat(0x3f808001u)), 0x3f81);
  EXPECT_EQ(FloatToBf16(NAN), kBf16CanonicalNan);
  EXPECT_EQ(FloatToBf16(BitsFloat(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to Inf
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const float f = Bf16ToFloat(static_cast<std::uint16_t>(b));
    if (!std::isnan(f)) {
      EXPECT_EQ(FloatToBf16(f), b);
    }
  }
}

TEST(TqMathTest, WhtTwiceIsDTimesIdentity) {
  float v[128], w[128];
  for (int j = 0; j < 128; ++j) v[j] = w[j] = static_cast<float>((j * 37) % 11) - 5.0f;
  Wht<128>(w);
  Wht<128>(w);
  for (int j = 0; j < 128; ++j) EXPECT_EQ(w[j], 128.0f * v[j]) << j;  // small integers: exact
}

TEST(TqMathTest, Reduce8FollowsTheFixedTree) {
  // Values chosen so that any other association order gives a different float.
  const float p[8] = {1e8f, 1.0f, -1e8f, 1.0f, 3.0f, 0.5f, 5.0f, 0.25f};
  const float want = ((1e8f + 3.0f) + (-1e8f + 5.0f)) + ((1.0f + 0.5f) + (1.0f + 0.25f));
  EXPECT_EQ(Reduce8(p), want);
}

TEST(TqMathTest, SignWordsAreSplitMix64) {
  std::uint64_t words[4];
  SignWords(0, 256, words);
  // SplitMix64 seeded with 0: the published first outputs of the generator.
  EXPECT_EQ(words[0], 0xe220a8397b1dcdafull);
  EXPECT_EQ(words[1], 0x6e789e6aa1b965f4ull);
  EXPECT_EQ(words[2], 0x06c45d188009454full);
  EXPECT_EQ(words[3], 0xf88bb8a8724c81ecull);
}

TEST(TqMathTest, PackUnpackRoundTrip) {
  std::uint8_t codes[128], packed[64], back[128];
  for (int j = 0; j < 128; ++j) codes[j] = static_cast<std::uint8_t>((j * 5 + 3) % 8);
  PackCodes<128, 3>(codes, packed);
  UnpackCodes<128, 3>(packed, back);
  for (int j = 0; j < 128; ++j) EXPECT_EQ(back[j], codes[j]);
  // Bit order: code 0 in bits 0..2 of byte 0, code 1 in bits 3..5, code 2 straddles bytes 0/1.
  EXPECT_EQ(packed[0],
            static_cast<std::uint8_t>(codes[0] | (codes[1] << 3) | ((codes[2] & 3) << 6)));
  for (int j = 0; j < 128; ++j) codes[j] = static_cast<std::uint8_t>((j * 7 + 1) % 16);
  PackCodes<128, 4>(codes, packed);
  UnpackCodes<128, 4>(packed, back);
  for (int j = 0; j < 128; ++j) EXPECT_EQ(back[j], codes[j]);
  EXPECT_EQ(packed[0], static_cast<std::uint8_t>(codes[0] | (codes[1] << 4)));
}

}  // namespace
}  // namespace cachesvc::kernels::tq
