#include "tasks/model/dtype.h"

#include <catch2/catch.hpp>
#include <cmath>

namespace pcfarm {

TEST_CASE("F16 conversions of known values", "[dtype]") {
  CHECK(F32ToF16(1.0f) == 0x3c00);
  CHECK(F32ToF16(-2.0f) == 0xc000);
  CHECK(F32ToF16(0.5f) == 0x3800);
  CHECK(F32ToF16(65504.0f) == 0x7bff);
  CHECK(F32ToF16(65520.0f) == 0x7c00);                 // rounds to infinity
  CHECK(F32ToF16(std::ldexp(1.0f, -24)) == 0x0001);    // smallest subnormal
  CHECK(F32ToF16(std::ldexp(1.0f, -25)) == 0x0000);    // tie to even -> 0
  CHECK(F32ToF16(1.0f + std::ldexp(1.0f, -11)) == 0x3c00);  // tie to even
  CHECK(F32ToF16(1.0f + 3 * std::ldexp(1.0f, -11)) == 0x3c02);
  CHECK(F16ToF32(0x3555) == Approx(0.333251953125f));
  CHECK(std::isinf(F16ToF32(0xfc00)));
  CHECK(std::isnan(F16ToF32(F32ToF16(NAN))));
  // Every finite half survives a round trip through f32 exactly.
  for (uint32_t h = 0; h < 0x10000; ++h) {
    if ((h & 0x7c00) == 0x7c00) continue;
    REQUIRE(F32ToF16(F16ToF32(uint16_t(h))) == h);
  }
}

TEST_CASE("BF16 conversions round to nearest even", "[dtype]") {
  CHECK(F32ToBF16(1.0f) == 0x3f80);
  CHECK(BF16ToF32(0x3f80) == 1.0f);
  CHECK(F32ToBF16(1.0f + std::ldexp(1.0f, -8)) == 0x3f80);   // tie -> even
  CHECK(F32ToBF16(1.0f + 3 * std::ldexp(1.0f, -8)) == 0x3f82);
  CHECK(F32ToBF16(-3.0f) == 0xc040);
  CHECK(std::isnan(BF16ToF32(F32ToBF16(NAN))));
  float v[2];
  uint16_t src[2] = {0x3f80, 0xc040};
  ConvertToF32(DType::kBF16, src, 2, v);
  CHECK(v[0] == 1.0f);
  CHECK(v[1] == -3.0f);
}

}  // namespace pcfarm
