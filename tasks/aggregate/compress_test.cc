#include "tasks/aggregate/compress.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cfloat>
#include <cmath>
#include <cstring>
#include <initializer_list>

namespace pcfarm {
namespace {

constexpr GradientCodec kAllCodecs[] = {
    GradientCodec::kNone, GradientCodec::kFp16, GradientCodec::kInt8};

std::string Bytes(std::initializer_list<int> bytes) {
  std::string s;
  for (int b : bytes) s.push_back(static_cast<char>(b));
  return s;
}

std::string Header(int codec, uint8_t count, uint32_t block, int packing = 0) {
  return "PCG1" + Bytes({codec, packing, 0, 0, count, 0, 0, 0, 0, 0, 0, 0,
                         int(block & 0xff), int(block >> 8), 0, 0});
}

std::string Enc(GradientCodec codec, const std::vector<float>& v) {
  auto r = EncodeGradient(codec, v);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  CHECK(r->size() == EncodedGradientSize(codec, v.size()));
  return *r;
}

std::vector<float> Dec(const std::string& bytes) {
  auto r = DecodeGradient(bytes);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

void ExpectCorrupt(const std::string& bytes, const std::string& words) {
  auto r = DecodeGradient(bytes);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kCorruption);
  CHECK_THAT(r.status().message(), Catch::Contains(words));
}

struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float Uniform() { return float(double(Next() >> 11) * 0x1p-52 - 1.0); }
};

TEST_CASE("codec names round-trip") {
  for (GradientCodec c : kAllCodecs) {
    auto parsed = ParseGradientCodec(GradientCodecName(c));
    REQUIRE(parsed.ok());
    CHECK(*parsed == c);
  }
  auto r = ParseGradientCodec("bf16");
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(r.status().message(), Catch::Contains("none, fp16 or int8"));
}

TEST_CASE("none: known bytes, lossless") {
  const std::string want =
      Header(0, 2, 0) + Bytes({0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0});
  CHECK(Enc(GradientCodec::kNone, {1.0f, -2.0f}) == want);
  CHECK(Dec(want) == std::vector<float>{1.0f, -2.0f});
  const std::vector<float> odd = {1e-40f, -3.4e38f, 0.1f, -0.0f};
  const auto back = Dec(Enc(GradientCodec::kNone, odd));
  CHECK(std::memcmp(back.data(), odd.data(), sizeof(float) * odd.size()) == 0);
}

TEST_CASE("fp16: known bytes, round to nearest even") {
  const std::string want =
      Header(1, 4, 0) + Bytes({0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b});
  CHECK(Enc(GradientCodec::kFp16, {1.0f, -2.0f, 0.5f, 65504.0f}) == want);
  CHECK(Dec(want) == std::vector<float>{1.0f, -2.0f, 0.5f, 65504.0f});
  // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: ties to the even 1.
  // 1 + 3·2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9: ties to the latter.
  // 2^-25 is half the smallest subnormal: ties to 0.
  CHECK(Dec(Enc(GradientCodec::kFp16,
                {1 + 0x1p-11f, 1 + 3 * 0x1p-11f, 0x1p-25f})) ==
        std::vector<float>{1.0f, 1 + 0x1p-9f, 0.0f});
}

TEST_CASE("int8: known bytes, ties to even") {
  // max|x| = 127 → scale 1; -63.5 → -64 and 0.5 → 0, 1.5 → 2, 2.5 → 2.
  const std::vector<float> x = {127, -63.5f, 1, 0.4f, 0.5f, -0.5f, 1.5f, 2.5f};
  const std::string want =
      Header(2, 8, 256) + Bytes({0x00, 0x00, 0x80, 0x3f}) +
      Bytes({0x7f, 0xc0, 0x01, 0x00, 0x00, 0x00, 0x02, 0x02});
  CHECK(Enc(GradientCodec::kInt8, x) == want);
  CHECK(Dec(want) == std::vector<float>{127, -64, 1, 0, 0, 0, 2, 2});
}

TEST_CASE("int8: one scale per block of 256; error at most half a step") {
  // 2B + 2 values: blocks of B, B and 2, each with its own scale, so the
  // small values of block 2 are not crushed by block 0's large one.
  constexpr size_t B = kInt8BlockSize;
  static_assert(B == 256);
  const size_t n = 2 * B + 2;
  std::vector<float> x(n);
  Rng rng{3};
  for (float& v : x) v = rng.Uniform() * 1e-3f;
  x[5] = 1000;
  const std::string bytes = Enc(GradientCodec::kInt8, x);
  CHECK(bytes.size() == 20 + 3 * 4 + n);
  const auto y = Dec(bytes);
  for (size_t b = 0; b < 3; ++b) {
    float amax = 0;
    for (size_t i = B * b; i < std::min(n, B * b + B); ++i)
      amax = std::max(amax, std::fabs(x[i]));
    const float scale = amax / 127;
    float stored;
    std::memcpy(&stored, bytes.data() + 20 + 4 * b, 4);
    CHECK(stored == scale);
    for (size_t i = B * b; i < std::min(n, B * b + B); ++i) {
      INFO("value " << i);
      CHECK(std::fabs(y[i] - x[i]) <= scale * 0.5f * (1 + 1e-6f));
    }
  }
  CHECK(y[B + 6] != 0);  // block 1 keeps its 1e-3-sized values
}

TEST_CASE("round trips stay within each codec's error bound") {
  constexpr size_t B = kInt8BlockSize;
  Rng rng{9};
  for (size_t n : {size_t(0), size_t(1), B - 1, B, B + 1, size_t(1000)}) {
    std::vector<float> x(n);
    for (size_t i = 0; i < n; ++i)
      x[i] = rng.Uniform() * std::ldexp(1.0f, int(i % 20) - 10);
    INFO("n " << n);
    for (GradientPacking packing : {GradientPacking::kPlain, GradientPacking::kZstd}) {
      auto enc = [&](GradientCodec c) {
        auto r = EncodeGradient(c, x, packing);
        REQUIRE(r.ok());
        return *r;
      };
      CHECK(Dec(enc(GradientCodec::kNone)) == x);
      const auto h = Dec(enc(GradientCodec::kFp16));
      for (size_t i = 0; i < n; ++i)
        CHECK(std::fabs(h[i] - x[i]) <=
              std::max(std::fabs(x[i]) * 0x1p-11f, 0x1p-25f));
      const auto q = Dec(enc(GradientCodec::kInt8));
      for (size_t i = 0; i < n; ++i) {
        float amax = 0;
        for (size_t k = i / B * B; k < std::min(n, i / B * B + B); ++k)
          amax = std::max(amax, std::fabs(x[k]));
        CHECK(std::fabs(q[i] - x[i]) <= amax / 127 * 0.5f * (1 + 1e-6f));
      }
    }
  }
}

TEST_CASE("sizes: bytes per value") {
  CHECK(EncodedGradientSize(GradientCodec::kNone, 0) == 20);
  CHECK(EncodedGradientSize(GradientCodec::kNone, 1000) == 4020);
  CHECK(EncodedGradientSize(GradientCodec::kFp16, 1000) == 2020);
  // ceil(1000 / 256) = 4 scales.
  CHECK(EncodedGradientSize(GradientCodec::kInt8, 1000) == 20 + 16 + 1000);
  CHECK(EncodedGradientSize(GradientCodec::kInt8, 1) == 20 + 4 + 1);
  const uint64_t n = 64ull << 20;  // 64 Mi values, a large LoRA gradient
  CHECK(double(EncodedGradientSize(GradientCodec::kInt8, n)) / n ==
        Approx(1 + 4.0 / 256).epsilon(1e-6));
  CHECK(double(EncodedGradientSize(GradientCodec::kFp16, n)) / n ==
        Approx(2).epsilon(1e-6));
  for (GradientCodec c : kAllCodecs) CHECK(Dec(Enc(c, {})).empty());
}

// Gaussian-like values (a sum of uniforms), as gradients and LoRA
// pseudo-gradients are.
std::vector<float> Bell(size_t n, uint64_t seed) {
  Rng rng{seed};
  std::vector<float> x(n);
  for (float& v : x) {
    v = 0;
    for (int k = 0; k < 4; ++k) v += rng.Uniform();
    v *= 1e-3f;
  }
  return x;
}

TEST_CASE("packing: zstd makes int8 and fp16 of bell-shaped values smaller, "
          "decodes to the same values, and none stays plain") {
  const std::vector<float> x = Bell(20000, 17);
  for (GradientCodec c : kAllCodecs) {
    INFO(GradientCodecName(c));
    const std::string plain = Enc(c, x);
    auto packed = EncodeGradient(c, x, GradientPacking::kZstd);
    REQUIRE(packed.ok());
    CHECK(packed->size() <= plain.size());
    CHECK(Dec(*packed) == Dec(plain));
    CHECK(IsPackedGradient(*packed) == (packed->size() < plain.size()));
    CHECK_FALSE(IsPackedGradient(plain));
    // Only the packing byte and the payload differ.
    CHECK(packed->substr(0, 5) == plain.substr(0, 5));
    CHECK(packed->substr(6, 14) == plain.substr(6, 14));
  }
  auto int8 = EncodeGradient(GradientCodec::kInt8, x, GradientPacking::kZstd);
  REQUIRE(IsPackedGradient(*int8));
  // A sum of four uniforms reaches about 3 of its standard deviations in a
  // block of 256: its int8 levels carry under 8 bits, so the packed message
  // is smaller than the plain one's 1.016 bytes a value by more than the
  // scales cost.
  CHECK(double(int8->size()) / x.size() < 0.99);
  CHECK(WirePacking(GradientCodec::kNone) == GradientPacking::kPlain);
  CHECK(WirePacking(GradientCodec::kFp16) == GradientPacking::kZstd);
  CHECK(WirePacking(GradientCodec::kInt8) == GradientPacking::kZstd);
  // Values zstd cannot shrink (few, and uniform) stay plain.
  auto few = EncodeGradient(GradientCodec::kInt8, std::vector<float>{1, -2, 3},
                            GradientPacking::kZstd);
  REQUIRE(few.ok());
  CHECK_FALSE(IsPackedGradient(*few));
  CHECK(*few == Enc(GradientCodec::kInt8, {1, -2, 3}));
}

TEST_CASE("packing: decode refuses bad frames, wrong sizes and bombs") {
  const std::vector<float> x = Bell(5000, 4);
  auto r = EncodeGradient(GradientCodec::kInt8, x, GradientPacking::kZstd);
  REQUIRE(r.ok());
  const std::string good = *r;
  REQUIRE(IsPackedGradient(good));
  std::string s = good;
  s[5] = 2;
  ExpectCorrupt(s, "unknown packing id 2");
  // The packing byte claims zstd over a plain payload.
  s = Enc(GradientCodec::kInt8, x);
  s[5] = 1;
  ExpectCorrupt(s, "not one zstd frame");
  // Truncated frames, and a byte after the frame.
  for (size_t len : {size_t(20), size_t(21), size_t(30), good.size() / 2, good.size() - 1})
    ExpectCorrupt(good.substr(0, len), "zstd frame");
  ExpectCorrupt(good + '\0', "not one zstd frame");
  // A count that does not match the frame's content size.
  s = good;
  uint64_t other = x.size() + 1;
  std::memcpy(s.data() + 8, &other, 8);
  ExpectCorrupt(s, "takes");
  // A damaged frame body: refused, never a crash (its checksum-free blocks
  // may also decode to other bytes, which the value checks then judge).
  Rng rng{8};
  for (int trial = 0; trial < 2000; ++trial) {
    s = good;
    s[20 + rng.Next() % (s.size() - 20)] ^= static_cast<char>(1 + rng.Next() % 255);
    auto d = DecodeGradient(s);
    if (!d.ok()) {
      CHECK(d.status().code() == StatusCode::kCorruption);
      continue;
    }
    CHECK(d->size() == x.size());
    for (float v : *d) REQUIRE(std::isfinite(v));
  }
  // A bomb: a few hundred bytes that claim 2^30 values. The bound stops it
  // before anything is allocated.
  std::vector<float> zeros(1 << 16, 0.0f);
  auto z = EncodeGradient(GradientCodec::kInt8, zeros, GradientPacking::kZstd);
  REQUIRE(z.ok());
  REQUIRE(IsPackedGradient(*z));
  CHECK(z->size() < 200);
  s = *z;
  const uint64_t huge = uint64_t(1) << 30;
  std::memcpy(s.data() + 8, &huge, 8);
  auto bomb = DecodeGradient(s, /*max_packed_count=*/1 << 20);
  REQUIRE_FALSE(bomb.ok());
  CHECK_THAT(bomb.status().message(), Catch::Contains("over the limit"));
  CHECK(DecodeGradient(*z, 1 << 16).ok());
  CHECK_FALSE(DecodeGradient(*z, (1 << 16) - 1).ok());
}

TEST_CASE("encode refuses what it cannot represent") {
  for (GradientCodec c : kAllCodecs) {
    for (float bad : {NAN, INFINITY, -INFINITY}) {
      auto r = EncodeGradient(c, std::vector<float>{1, bad});
      REQUIRE_FALSE(r.ok());
      CHECK(r.status().code() == StatusCode::kInvalidArgument);
      CHECK_THAT(r.status().message(), Catch::Contains("value 1"));
    }
  }
  // 65519 still rounds down to 65504; 65520 would round to infinity.
  CHECK(Dec(Enc(GradientCodec::kFp16, {65519.0f, -65519.0f})) ==
        std::vector<float>{65504, -65504});
  auto r =
      EncodeGradient(GradientCodec::kFp16, std::vector<float>{0, -65520.0f});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(r.status().message(), Catch::Contains("outside the fp16 range"));
  // int8: a block whose max |value| is FLT_MAX has a scale that, times 127,
  // overflows; the float just below it still decodes to finite values.
  std::vector<float> big(300, 1.0f);
  big[299] = -FLT_MAX;
  r = EncodeGradient(GradientCodec::kInt8, big);
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(r.status().message(),
             Catch::Contains("block 1") && Catch::Contains("outside the int8"));
  big[299] = -std::nextafter(FLT_MAX, 0.0f);
  const std::vector<float> back = Dec(Enc(GradientCodec::kInt8, big));
  for (float v : back) CHECK(std::isfinite(v));
  CHECK(back[299] < -3e38f);
}

TEST_CASE("decode rejects bad headers") {
  const std::string good = Enc(GradientCodec::kInt8, {1, 2, 3});
  for (size_t len = 0; len < 20; ++len)
    ExpectCorrupt(good.substr(0, len), "header");

  std::string s = good;
  s[3] = '2';
  ExpectCorrupt(s, "magic");
  for (int id : {3, 0x80, 0xff}) {
    s = good;
    s[4] = static_cast<char>(id);
    ExpectCorrupt(s, "unknown codec id " + std::to_string(id));
  }
  s = good;
  s[6] = 1;
  ExpectCorrupt(s, "reserved");
  s = good;
  s[7] = 1;
  ExpectCorrupt(s, "reserved");
  for (uint32_t block : {0u, 65537u, 0xffffffffu}) {
    s = good;
    std::memcpy(s.data() + 16, &block, 4);
    ExpectCorrupt(s, "block size");
  }
  s = Enc(GradientCodec::kFp16, {1, 2, 3});
  s[16] = 64;
  ExpectCorrupt(s, "block size 64 does not fit codec fp16");
  s = Enc(GradientCodec::kNone, {1});
  s[16] = 1;
  ExpectCorrupt(s, "block size 1 does not fit codec none");
  // Any block size the header states is honoured by the decoder.
  s = Header(2, 3, 2) + Bytes({0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}) +
      Bytes({1, 2, 0xff});
  CHECK(Dec(s) == std::vector<float>{1, 2, -2});
}

TEST_CASE("decode rejects a length that does not match the count") {
  for (GradientCodec c : kAllCodecs) {
    INFO(GradientCodecName(c));
    const std::string good = Enc(c, std::vector<float>(70, 0.5f));
    for (size_t len = 20; len < good.size(); ++len)
      ExpectCorrupt(good.substr(0, len), "does not match");
    ExpectCorrupt(good + '\0', "does not match");
    std::string s = good;
    s[8] = 71;
    ExpectCorrupt(s, "element count 71 does not match");
    s[8] = 69;
    ExpectCorrupt(s, "element count 69 does not match");
    // A count whose byte size would overflow 64 bits.
    for (uint64_t huge : {~0ull, ~0ull / 2 + 1, ~0ull / 4 + 1}) {
      std::memcpy(s.data() + 8, &huge, 8);
      ExpectCorrupt(s, "does not match");
    }
  }
}

TEST_CASE("decode rejects values the encoder never writes") {
  const std::string h = Header(2, 2, 256);
  ExpectCorrupt(h + Bytes({0, 0, 0xc0, 0x7f}) + Bytes({1, 1}),
                "int8 scale 0 is nan");
  ExpectCorrupt(h + Bytes({0, 0, 0x80, 0x7f}) + Bytes({1, 1}),
                "int8 scale 0 is inf");
  ExpectCorrupt(h + Bytes({0, 0, 0x80, 0xbf}) + Bytes({1, 1}),
                "int8 scale 0 is -1");
  ExpectCorrupt(h + Bytes({0, 0, 0x80, 0x3f}) + Bytes({1, 0x80}),
                "int8 value 1 is -128");
  // A finite scale whose product overflows (the fuzzer's find): FLT_MAX.
  ExpectCorrupt(h + Bytes({0xff, 0xff, 0x7f, 0x7f}) + Bytes({0, 2}),
                "int8 value 1 is inf");
  ExpectCorrupt(h + Bytes({0xff, 0xff, 0x7f, 0x7f}) + Bytes({0, 0x81}),
                "int8 value 1 is -inf");
  ExpectCorrupt(Header(1, 2, 0) + Bytes({0, 0x3c, 0x00, 0x7c}),
                "value 1 is inf");
  ExpectCorrupt(Header(1, 1, 0) + Bytes({0x00, 0x7e}), "value 0 is nan");
  ExpectCorrupt(Header(0, 1, 0) + Bytes({0, 0, 0xc0, 0xff}), "value 0 is nan");
}

TEST_CASE("decode of damaged bytes fails cleanly or returns finite values") {
  Rng rng{1};
  std::vector<float> x(150);
  for (float& v : x) v = rng.Uniform();
  for (GradientCodec c : kAllCodecs) {
    const std::string good = Enc(c, x);
    for (int trial = 0; trial < 3000; ++trial) {
      std::string s = good;
      for (int flips = 1 + int(rng.Next() % 3); flips > 0; --flips)
        s[rng.Next() % s.size()] ^= static_cast<char>(1 + rng.Next() % 255);
      auto r = DecodeGradient(s);
      if (!r.ok()) {
        CHECK(r.status().code() == StatusCode::kCorruption);
        continue;
      }
      CHECK(r->size() == x.size());
      for (float v : *r) REQUIRE(std::isfinite(v));
    }
  }
}

// Sends `steps` messages of `x` through `codec`, with or without error
// feedback; returns the largest |Σ decoded − Σ x| seen over all values and
// steps, and the final one in *last.
double AccumulatedError(GradientCodec codec, const std::vector<float>& x,
                        int steps, bool feedback, double* last) {
  ErrorFeedback ef(codec, x.size());
  std::vector<double> sent(x.size(), 0.0), want(x.size(), 0.0);
  double worst = 0;
  for (int t = 0; t < steps; ++t) {
    auto bytes = feedback ? ef.Encode(x) : EncodeGradient(codec, x);
    REQUIRE(bytes.ok());
    const auto y = Dec(*bytes);
    *last = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      sent[i] += y[i];
      want[i] += x[i];
      *last = std::max(*last, std::fabs(sent[i] - want[i]));
    }
    worst = std::max(worst, *last);
  }
  return worst;
}

TEST_CASE("error feedback: sum sent = sum of inputs - final residual") {
  for (GradientCodec c : kAllCodecs) {
    INFO(GradientCodecName(c));
    const size_t d = 200;
    const int steps = 300;
    ErrorFeedback ef(c, d);
    Rng rng{21};
    std::vector<double> sent(d, 0.0), input(d, 0.0);
    float max_abs = 0;
    for (int t = 0; t < steps; ++t) {
      std::vector<float> x(d);
      for (size_t i = 0; i < d; ++i) {
        x[i] = rng.Uniform() * (i % 7 == 0 ? 1.0f : 1e-3f);
        input[i] += x[i];
        max_abs =
            std::max(max_abs, std::fabs(x[i]) + std::fabs(ef.residual()[i]));
      }
      auto bytes = ef.Encode(x);
      REQUIRE(bytes.ok());
      const auto y = Dec(*bytes);
      for (size_t i = 0; i < d; ++i) sent[i] += y[i];
    }
    // The only slack is the f32 rounding of x + e: half an ulp per step.
    const double slack = steps * max_abs * 0x1p-24;
    for (size_t i = 0; i < d; ++i) {
      INFO("value " << i);
      CHECK(std::fabs(sent[i] - (input[i] - ef.residual()[i])) <= slack);
    }
    if (c == GradientCodec::kNone)
      for (float e : ef.residual()) CHECK(e == 0);
  }
}

TEST_CASE("error feedback: int8 error stays bounded where plain int8 grows") {
  // One large value sets the block's scale to 1/127; the other 63 are 1e-3,
  // a eighth of a step, so plain int8 sends them as 0 every time.
  std::vector<float> x(64, 1e-3f);
  x[0] = 1;
  double last_plain = 0, last_ef = 0, last_short = 0;
  AccumulatedError(GradientCodec::kInt8, x, 100, false, &last_short);
  AccumulatedError(GradientCodec::kInt8, x, 1000, false, &last_plain);
  CHECK(last_short == Approx(0.1).epsilon(1e-4));  // linear: 1e-3 per step
  CHECK(last_plain == Approx(1.0).epsilon(1e-4));
  // With feedback the error never exceeds half a step of the scale of
  // x + e (max ≈ 1 + 1/254): (1 + 1/254) / 127 / 2 < 0.004.
  const double worst =
      AccumulatedError(GradientCodec::kInt8, x, 1000, true, &last_ef);
  CHECK(worst < 0.004);
  CHECK(last_ef < 0.004);
}

TEST_CASE("error feedback: fp16 keeps values below its smallest subnormal") {
  // 1e-8 is under 2^-25, so fp16 sends it as 0; with feedback the residual
  // grows to the smallest subnormal (2^-24 ≈ 6e-8) and is then sent.
  const std::vector<float> x(10, 1e-8f);
  double last_plain = 0, last_ef = 0;
  AccumulatedError(GradientCodec::kFp16, x, 1000, false, &last_plain);
  CHECK(last_plain == Approx(1e-5).epsilon(1e-4));
  const double worst =
      AccumulatedError(GradientCodec::kFp16, x, 1000, true, &last_ef);
  CHECK(worst <= 0x1p-24);
}

TEST_CASE("error feedback: refusals leave the residual unchanged") {
  ErrorFeedback ef(GradientCodec::kFp16, 2);
  REQUIRE(ef.Encode(std::vector<float>{1e-8f, 0.1f}).ok());
  const std::vector<float> before(ef.residual().begin(), ef.residual().end());
  CHECK(before[0] == 1e-8f);

  auto r = ef.Encode(std::vector<float>{1, 2, 3});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  CHECK_THAT(r.status().message(), Catch::Contains("3 values, expected 2"));
  r = ef.Encode(std::vector<float>{1e5f, 0});
  REQUIRE_FALSE(r.ok());
  CHECK(r.status().code() == StatusCode::kInvalidArgument);
  r = ef.Encode(std::vector<float>{NAN, 0});
  REQUIRE_FALSE(r.ok());
  CHECK(std::vector<float>(ef.residual().begin(), ef.residual().end()) ==
        before);
}

}  // namespace
}  // namespace pcfarm
