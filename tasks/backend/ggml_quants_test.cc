// The GGML block formats against tools/make_quant_fixtures.py, an encoder and
// decoder written independently in numpy from the GGUF spec: our decoder
// must give the same f32 bits for the same bytes, our Q8_0/Q4_0 quantizer
// and f16/bf16 rounding the same bytes for the same input.
#include "tasks/backend/ggml_quants.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "tasks/backend/half.h"

namespace pcfarm {
namespace {

struct Case {
  std::string name;
  uint32_t type = 0;
  std::vector<float> input, decoded;
  std::vector<uint8_t> bytes;
};

std::vector<Case> LoadCases() {
  std::ifstream f(PCFARM_QUANT_FIXTURE, std::ios::binary);
  REQUIRE(f.good());
  const std::vector<uint8_t> all((std::istreambuf_iterator<char>(f)),
                                 std::istreambuf_iterator<char>());
  size_t pos = 0;
  auto take = [&](void* out, size_t n) {
    REQUIRE(pos + n <= all.size());
    std::memcpy(out, all.data() + pos, n);
    pos += n;
  };
  auto u32 = [&] {
    uint32_t v = 0;
    take(&v, 4);
    return v;
  };
  char magic[4];
  take(magic, 4);
  REQUIRE(std::string(magic, 4) == "PCQF");
  std::vector<Case> cases(u32());
  for (Case& c : cases) {
    c.name.resize(u32());
    take(c.name.data(), c.name.size());
    c.type = u32();
    const uint32_t n = u32();
    c.input.resize(n);
    take(c.input.data(), 4 * size_t(n));
    c.bytes.resize(u32());
    take(c.bytes.data(), c.bytes.size());
    c.decoded.resize(n);
    take(c.decoded.data(), 4 * size_t(n));
  }
  REQUIRE(pos == all.size());
  return cases;
}

bool HandMade(const Case& c) {
  for (const char* s : {"random_bytes", "scale", "extreme_codes"})
    if (c.name.find(s) != std::string::npos) return true;
  return false;
}

std::vector<float> Decode(const Case& c) {
  std::vector<float> y(c.decoded.size());
  if (c.type == 1 || c.type == 30) {
    for (size_t i = 0; i < y.size(); ++i) {
      uint16_t h;
      std::memcpy(&h, c.bytes.data() + 2 * i, 2);
      y[i] = c.type == 1 ? F16ToF32(h) : BF16ToF32(h);
    }
  } else {
    REQUIRE(c.bytes.size() % GgmlBlockBytes(c.type) == 0);
    DequantizeBlocks(c.type, c.bytes.data(),
                     int64_t(c.bytes.size() / GgmlBlockBytes(c.type)), y.data());
  }
  return y;
}

bool SameBits(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  uint32_t ua, ub;
  std::memcpy(&ua, &a, 4);
  std::memcpy(&ub, &b, 4);
  return ua == ub;
}

TEST_CASE("every fixture block decodes to the reference's exact f32 values") {
  const std::vector<Case> cases = LoadCases();
  REQUIRE(cases.size() >= 60);
  int types_seen[64] = {};
  for (const Case& c : cases) {
    INFO(c.name);
    ++types_seen[c.type];
    const std::vector<float> y = Decode(c);
    size_t mismatches = 0, first = 0;
    for (size_t i = 0; i < y.size(); ++i)
      if (!SameBits(y[i], c.decoded[i]) && mismatches++ == 0) first = i;
    INFO("first mismatch at " << first << ": " << y[first] << " vs " << c.decoded[first]);
    CHECK(mismatches == 0);
  }
  for (uint32_t t : {1u, 2u, 8u, 12u, 14u, 30u}) CHECK(types_seen[t] >= 8);
}

TEST_CASE("Inf and NaN scales decode as IEEE products, as the spec's formula does") {
  for (const Case& c : LoadCases()) {
    if (c.name.find("inf_scale") == std::string::npos &&
        c.name.find("nan_scale") == std::string::npos)
      continue;
    INFO(c.name);
    const std::vector<float> y = Decode(c);
    size_t non_finite = 0;
    for (float v : y) non_finite += !std::isfinite(v);
    if (c.name.find("nan_scale") != std::string::npos) CHECK(non_finite == y.size());
    else CHECK(non_finite > y.size() / 2);  // d·0 is NaN, d·q is ±Inf
  }
}

TEST_CASE("round trip: the reference's blocks decode close to their input") {
  for (const Case& c : LoadCases()) {
    if (HandMade(c) || c.name.find("specials") != std::string::npos) continue;
    INFO(c.name);
    const std::vector<float> y = Decode(c);
    const int64_t bv = c.type == 1 || c.type == 30 ? 32 : GgmlBlockValues(c.type);
    // Error allowed per block, as a fraction of the block's largest |x|:
    // half a step of the format (Q4_0's clipped top code is a whole step),
    // f16/bf16 relative rounding; the K-quants' 6-bit sub-scales add more.
    double frac = 0;
    switch (c.type) {
      case 8: frac = 0.6 / 127; break;
      case 2: frac = 1.05 / 8; break;
      case 12: frac = 0.12; break;
      case 14: frac = 0.06; break;
      case 1: frac = 1.0 / 2048; break;
      case 30: frac = 1.0 / 256; break;
    }
    for (size_t b0 = 0; b0 < y.size(); b0 += size_t(bv)) {
      double amax = 0;
      for (size_t i = b0; i < b0 + size_t(bv); ++i) amax = std::max(amax, double(std::fabs(c.input[i])));
      for (size_t i = b0; i < b0 + size_t(bv); ++i) {
        INFO("value " << i << ": " << c.input[i] << " -> " << y[i]);
        // Absolute slack: a scale that underflows f16 (the "tiny" cases).
        REQUIRE(std::fabs(double(y[i]) - c.input[i]) <= frac * amax + 1e-5);
      }
    }
  }
}

TEST_CASE("our Q8_0/Q4_0 quantizer and f16/bf16 rounding give the reference's bytes") {
  for (const Case& c : LoadCases()) {
    if (HandMade(c)) continue;
    INFO(c.name);
    std::vector<uint8_t> out(c.bytes.size());
    if (c.type == 1 || c.type == 30) {
      for (size_t i = 0; i < c.input.size(); ++i) {
        const uint16_t h = c.type == 1 ? F32ToF16(c.input[i]) : F32ToBF16(c.input[i]);
        std::memcpy(out.data() + 2 * i, &h, 2);
      }
      for (size_t i = 0; i < c.input.size(); ++i)
        if (!std::isnan(c.input[i])) CHECK(std::memcmp(&out[2 * i], &c.bytes[2 * i], 2) == 0);
    } else if (c.type == kGgmlTypeQ8_0 || c.type == kGgmlTypeQ4_0) {
      REQUIRE(QuantizeBlocks(c.type, c.input.data(), int64_t(c.input.size()), out.data()).ok());
      CHECK(out == c.bytes);
    }
  }
}

// Quantizes and dequantizes `x` (whole blocks of 32) with our quantizer.
std::vector<float> RoundTrip(uint32_t type, const std::vector<float>& x) {
  const int64_t bv = GgmlBlockValues(type);
  std::vector<uint8_t> q(x.size() / size_t(bv) * GgmlBlockBytes(type));
  REQUIRE(QuantizeBlocks(type, x.data(), int64_t(x.size()), q.data()).ok());
  std::vector<float> y(x.size());
  DequantizeBlocks(type, q.data(), int64_t(x.size()) / bv, y.data());
  return y;
}

TEST_CASE("our Q8_0/Q4_0 quantizer's round trip stays within the format's bound") {
  // Per block of 32 with amax = max|x|: Q8_0's step is d = amax/127 and a
  // value is off by at most d/2, plus the f16 rounding of d (2^-11 relative,
  // times |q| <= 127); Q4_0's step is d = amax/8 and the value at +amax when
  // the block's largest is negative (code 16 clipped to 15) is off by d.
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0, 1);
  for (float sigma : {1e-4f, 0.02f, 1.0f, 300.0f}) {
    std::vector<float> x(32 * 64);
    for (float& v : x) v = sigma * nd(rng);
    for (uint32_t type : {uint32_t(kGgmlTypeQ8_0), uint32_t(kGgmlTypeQ4_0)}) {
      INFO(GgmlQuantName(type) << " sigma " << sigma);
      const std::vector<float> y = RoundTrip(type, x);
      for (size_t b0 = 0; b0 < x.size(); b0 += 32) {
        float amax = 0;
        for (size_t i = b0; i < b0 + 32; ++i) amax = std::max(amax, std::fabs(x[i]));
        const double d = type == kGgmlTypeQ8_0 ? amax / 127.0 : amax / 8.0;
        // Absolute slack: a scale below f16's normal range (sigma 1e-4) is
        // rounded to a multiple of 2^-24, off by up to 2^-25 per code unit.
        const double top = type == kGgmlTypeQ8_0 ? 127 : 8;
        const double bound = (type == kGgmlTypeQ8_0 ? d * 0.5 : d) + top * (d / 2048 + std::ldexp(1.0, -25));
        for (size_t i = b0; i < b0 + 32; ++i) {
          INFO("value " << i << ": " << x[i] << " -> " << y[i]);
          REQUIRE(std::fabs(double(y[i]) - x[i]) <= bound);
        }
      }
    }
  }
}

TEST_CASE("quantizer boundary blocks: all zeros, one huge value, ties") {
  for (uint32_t type : {uint32_t(kGgmlTypeQ8_0), uint32_t(kGgmlTypeQ4_0)}) {
    INFO(GgmlQuantName(type));
    // All zeros: scale 0, every value decodes to exactly 0.
    std::vector<float> zeros(64, 0.0f);
    for (float v : RoundTrip(type, zeros)) CHECK(v == 0.0f);
    // One huge value among small ones: it keeps its f16-rounded size and
    // sign, the small ones (below half a step) decode to 0.
    for (float huge : {5000.0f, -5000.0f}) {
      std::vector<float> x(32);
      for (int i = 0; i < 32; ++i) x[size_t(i)] = 0.01f * float(i % 5 - 2);
      x[7] = huge;
      const std::vector<float> y = RoundTrip(type, x);
      CHECK(std::fabs(y[7] - huge) <= std::fabs(huge) / 1024);
      for (int i = 0; i < 32; ++i)
        if (i != 7) CHECK(y[size_t(i)] == 0.0f);
    }
    // Scales that f16 holds exactly (a power of two): every value on a
    // code decodes exactly. Q8_0: amax = 127·2^-3; Q4_0: max = -8·2^-3.
    std::vector<float> x(32);
    const int lo = type == kGgmlTypeQ8_0 ? -127 : -8, hi = type == kGgmlTypeQ8_0 ? 127 : 7;
    for (int i = 0; i < 32; ++i) x[size_t(i)] = float(lo + (i * 37) % (hi - lo + 1)) / 8;
    x[0] = float(lo) / 8;
    const std::vector<float> y = RoundTrip(type, x);
    for (int i = 0; i < 32; ++i) {
      INFO("value " << i);
      CHECK(y[size_t(i)] == x[size_t(i)]);
    }
  }
  // Q4_0 with a tie of +a and -a: the first one sets d = first / -8 and is
  // exact; the other side is clipped to code 15, a step short (7/8 of a).
  std::vector<float> x(32, 0.0f);
  x[0] = 2.0f;
  x[1] = -2.0f;
  const std::vector<float> y = RoundTrip(kGgmlTypeQ4_0, x);
  CHECK(y[0] == 2.0f);
  CHECK(y[1] == -1.75f);
}

TEST_CASE("our Q4_K/Q6_K quantizer's round trip stays within its fit's bound") {
  // Per super-block of 256. Q4_K, sub-block s of 32 with range r_s = hi − lo
  // (0 included): its step d·sc_s is at most r_s/15 + d (sc rounded up), the
  // offset dmin·m_s is within dmin/2 of −lo, so a value is off by at most
  // half a step plus dmin/2. Q6_K, group g of 16 with a_g = max|x|: its step
  // is at most a_g/31 + d and 31 steps cover a_g, so half a step. Plus the
  // f16 rounding of d and dmin (2^-11 relative, times the largest codes,
  // 63·15 and 63; 127·31) and the absolute slack of a subnormal f16 scale.
  std::mt19937_64 rng(12);
  std::normal_distribution<float> nd(0, 1);
  std::uniform_real_distribution<float> spread(-3, 1);
  for (float sigma : {1e-4f, 0.02f, 1.0f, 300.0f}) {
    std::vector<float> x(256 * 16);
    // Sub-blocks of very different sizes in one super-block, and some
    // all-positive ones (lo = 0, hi > 0).
    for (size_t i = 0; i < x.size(); ++i) {
      const size_t sub = i / 32;
      const float size = sigma * std::exp2(4.0f * spread(rng) * float(sub % 3 == 0));
      x[i] = size * (sub % 5 == 1 ? std::fabs(nd(rng)) : nd(rng));
    }
    for (uint32_t type : {uint32_t(kGgmlTypeQ4_K), uint32_t(kGgmlTypeQ6_K)}) {
      INFO(GgmlQuantName(type) << " sigma " << sigma);
      const std::vector<float> y = RoundTrip(type, x);
      for (size_t s0 = 0; s0 < x.size(); s0 += 256) {
        const int group = type == kGgmlTypeQ4_K ? 32 : 16;
        double dmax = 0, mmax = 0;  // the super-block's d and dmin before f16
        std::vector<double> range, low;
        for (size_t g0 = s0; g0 < s0 + 256; g0 += size_t(group)) {
          double lo = 0, hi = 0, amax = 0;
          for (size_t i = g0; i < g0 + size_t(group); ++i) {
            lo = std::min(lo, double(x[i]));
            hi = std::max(hi, double(x[i]));
            amax = std::max(amax, std::fabs(double(x[i])));
          }
          range.push_back(type == kGgmlTypeQ4_K ? (hi - lo) / 15 : amax / 31);
          low.push_back(-lo);
          dmax = std::max(dmax, range.back());
          mmax = std::max(mmax, -lo);
        }
        const double d = dmax / (type == kGgmlTypeQ4_K ? 63 : 127), dmin = mmax / 63;
        const double f16 = type == kGgmlTypeQ4_K ? (d * 63 * 15 + dmin * 63) / 1024
                                                 : d * 127 * 31 / 1024;
        const double slack = f16 + 64 * 16 * std::ldexp(1.0, -24);
        for (size_t i = s0; i < s0 + 256; ++i) {
          const size_t g = (i - s0) / size_t(group);
          const double bound = 0.5 * (range[g] + d * 1.001) +
                               (type == kGgmlTypeQ4_K ? 0.5 * dmin * 1.001 : 0.0) + slack;
          INFO("value " << i << ": " << x[i] << " -> " << y[i] << ", bound " << bound);
          REQUIRE(std::fabs(double(y[i]) - x[i]) <= bound);
        }
      }
    }
  }
  // All zeros: every value decodes to exactly 0; a constant super-block
  // decodes within a step of its value.
  for (uint32_t type : {uint32_t(kGgmlTypeQ4_K), uint32_t(kGgmlTypeQ6_K)}) {
    INFO(GgmlQuantName(type));
    for (float v : RoundTrip(type, std::vector<float>(512, 0.0f))) CHECK(v == 0.0f);
    for (float c : {-2.5f, 0.75f}) {
      for (float v : RoundTrip(type, std::vector<float>(256, c)))
        CHECK(std::fabs(v - c) <= std::fabs(c) / 20);
    }
  }
}

TEST_CASE("block sizes match the spec") {
  CHECK(GgmlBlockValues(kGgmlTypeQ8_0) == 32);
  CHECK(GgmlBlockBytes(kGgmlTypeQ8_0) == 34);
  CHECK(GgmlBlockValues(kGgmlTypeQ4_0) == 32);
  CHECK(GgmlBlockBytes(kGgmlTypeQ4_0) == 18);
  CHECK(GgmlBlockValues(kGgmlTypeQ4_K) == 256);
  CHECK(GgmlBlockBytes(kGgmlTypeQ4_K) == 144);
  CHECK(GgmlBlockValues(kGgmlTypeQ6_K) == 256);
  CHECK(GgmlBlockBytes(kGgmlTypeQ6_K) == 210);
  CHECK_FALSE(IsGgmlQuantType(0));
  CHECK_FALSE(IsGgmlQuantType(3));  // Q4_1 is not one we hold
  CHECK(std::string(GgmlQuantName(kGgmlTypeQ6_K)) == "Q6_K");
}

TEST_CASE("QuantizeBlocks refuses ragged lengths and types it does not hold") {
  std::vector<float> x(48, 1.0f);
  std::vector<uint8_t> out(64);
  Status s = QuantizeBlocks(kGgmlTypeQ8_0, x.data(), 48, out.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("multiple of the block size 32") != std::string::npos);
  s = QuantizeBlocks(kGgmlTypeQ4_K, x.data(), 32, out.data());
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("multiple of the block size 256") != std::string::npos);
  s = QuantizeBlocks(3, x.data(), 32, out.data());  // Q4_1: not a type we hold
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("ggml type 3") != std::string::npos);
}

}  // namespace
}  // namespace pcfarm
