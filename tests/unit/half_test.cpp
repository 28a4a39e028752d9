// Host float16 / bfloat16 conversions (kernels/common/half.hpp): exact round
// trips of every 16-bit pattern and round-to-nearest-even on known values.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kernels/common/half.hpp"

namespace ringattn::kern {
namespace {

float bits(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Half, F16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = f16_to_float(uint16_t(h));
    const bool nan = (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu);
    if (nan) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << h;
      EXPECT_TRUE(std::isnan(f16_to_float(float_to_f16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(float_to_f16(f), uint16_t(h)) << std::hex << h << " -> " << f;
  }
}

TEST(Half, Bf16RoundTripsEveryPattern) {
  for (uint32_t h = 0; h < 0x10000u; ++h) {
    const float f = bf16_to_float(uint16_t(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(f)))) << std::hex << h;
      continue;
    }
    ASSERT_EQ(float_to_bf16(f), uint16_t(h)) << std::hex << h;
  }
}

TEST(Half, F16KnownValues) {
  EXPECT_EQ(float_to_f16(1.f), 0x3c00);
  EXPECT_EQ(float_to_f16(-2.f), 0xc000);
  EXPECT_EQ(float_to_f16(65504.f), 0x7bff);      // largest finite
  EXPECT_EQ(float_to_f16(65519.f), 0x7bff);      // rounds down
  EXPECT_EQ(float_to_f16(65520.f), 0x7c00);      // ties to even -> inf
  EXPECT_EQ(float_to_f16(1e6f), 0x7c00);
  EXPECT_EQ(float_to_f16(std::ldexp(1.f, -24)), 0x0001);             // smallest subnormal
  EXPECT_EQ(float_to_f16(std::ldexp(1.f, -25)), 0x0000);             // tie -> even (0)
  EXPECT_EQ(float_to_f16(std::ldexp(1.5f, -25)), 0x0001);            // above the tie
  EXPECT_EQ(float_to_f16(std::ldexp(3.f, -25)), 0x0002);             // 1.5 ulp tie -> even (2)
  EXPECT_EQ(float_to_f16(1.f + std::ldexp(1.f, -11)), 0x3c00);       // tie -> even
  EXPECT_EQ(float_to_f16(1.f + 3 * std::ldexp(1.f, -11)), 0x3c02);   // tie -> even (up)
  EXPECT_EQ(float_to_f16(std::ldexp(1.f, -14)), 0x0400);             // smallest normal
  EXPECT_EQ(float_to_f16(bits(0x387fe000u)), 0x0400);                // just below, rounds up to normal
}

TEST(Half, Bf16KnownValues) {
  EXPECT_EQ(float_to_bf16(1.f), 0x3f80);
  EXPECT_EQ(float_to_bf16(bits(0x3f808000u)), 0x3f80);  // tie -> even
  EXPECT_EQ(float_to_bf16(bits(0x3f818000u)), 0x3f82);  // tie -> even (up)
  EXPECT_EQ(float_to_bf16(bits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(float_to_bf16(bits(0x7f7fffffu)), 0x7f80);  // FLT_MAX rounds to inf
  EXPECT_TRUE(std::isinf(bf16_to_float(float_to_bf16(INFINITY))));
}

}  // namespace
}  // namespace ringattn::kern
