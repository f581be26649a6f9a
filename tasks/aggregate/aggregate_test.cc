#include "tasks/aggregate/aggregate.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>

namespace pcfarm {
namespace {

using Vecs = std::vector<std::vector<float>>;

constexpr AggregateRule kAllRules[] = {
    AggregateRule::kMean, AggregateRule::kTrimmedMean, AggregateRule::kMedian,
    AggregateRule::kCenteredClip};

Result<std::vector<float>> Run(AggregateRule rule, const Vecs& xs,
                               std::vector<float> w = {},
                               const AggregateOptions& o = {}) {
  if (w.empty()) w.assign(xs.size(), 1.0f);
  std::vector<std::span<const float>> spans(xs.begin(), xs.end());
  return Aggregate(rule, spans, w, o);
}

std::vector<float> Agg(AggregateRule rule, const Vecs& xs,
                       std::vector<float> w = {},
                       const AggregateOptions& o = {}) {
  auto r = Run(rule, xs, std::move(w), o);
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  return *r;
}

void CheckNear(const std::vector<float>& got, const std::vector<float>& want,
               double eps = 1e-6) {
  REQUIRE(got.size() == want.size());
  for (size_t j = 0; j < got.size(); ++j) {
    INFO("index " << j);
    CHECK(got[j] == Approx(want[j]).margin(eps));
  }
}

double Distance(const std::vector<float>& a, const std::vector<float>& b) {
  double sq = 0;
  for (size_t j = 0; j < a.size(); ++j)
    sq += (double(a[j]) - b[j]) * (double(a[j]) - b[j]);
  return std::sqrt(sq);
}

// SplitMix64: a portable generator, so the property tests see the same
// numbers with every standard library.
struct Rng {
  uint64_t s;
  uint64_t Next() {
    uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Uniform in [-1, 1).
  float Uniform() { return float(double(Next() >> 11) * 0x1p-52 - 1.0); }
};

TEST_CASE("aggregation rule names round-trip") {
  for (AggregateRule r : kAllRules) {
    auto parsed = ParseAggregateRule(AggregateRuleName(r));
    REQUIRE(parsed.ok());
    CHECK(*parsed == r);
  }
  CHECK(std::string(AggregateRuleName(AggregateRule::kTrimmedMean)) ==
        "trimmed-mean");
  CHECK(std::string(AggregateRuleName(AggregateRule::kCenteredClip)) ==
        "centered-clip");
  for (const char* bad : {"", "Mean", "trimmed_mean", "krum"}) {
    auto r = ParseAggregateRule(bad);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains("trimmed-mean"));
  }
}

TEST_CASE("mean: weighted, known answer") {
  // (1·1 + 1·3 + 2·5) / 4 = 3.5; (1·2 + 1·6 + 2·10) / 4 = 7.
  CHECK(Agg(AggregateRule::kMean, {{1, 2}, {3, 6}, {5, 10}}, {1, 1, 2}) ==
        std::vector<float>{3.5f, 7.0f});
}

// Five contributors; in every coordinate one value is an outlier.
const Vecs kFive = {
    {1, 10, 0}, {2, 20, 0}, {3, 30, 100}, {4, -40, 0}, {100, 50, 0}};

TEST_CASE("trimmed mean: known answers") {
  // k = floor(0.2 · 5) = 1. Column 0: 1 2 3 4 100 → mean(2, 3, 4) = 3.
  // Column 1: -40 10 20 30 50 → 20. Column 2: 0 0 0 0 100 → 0.
  CHECK(Agg(AggregateRule::kTrimmedMean, kFive) ==
        std::vector<float>{3, 20, 0});
  // Weights trim by count, then weigh what is left: with x3 at weight 2,
  // column 0 keeps 2, 3(×2), 4 → 12/4 = 3; column 1 keeps 10, 20, 30(×2) →
  // 90/4 = 22.5; column 2 drops x3's 100 whatever its weight.
  CHECK(Agg(AggregateRule::kTrimmedMean, kFive, {1, 1, 2, 1, 1}) ==
        std::vector<float>{3, 22.5f, 0});

  AggregateOptions quarter;
  quarter.trim_fraction = 0.25;  // n = 4 → k = 1
  CHECK(Agg(AggregateRule::kTrimmedMean, {{1}, {2}, {3}, {100}}, {}, quarter) ==
        std::vector<float>{2.5f});
  AggregateOptions none;
  none.trim_fraction = 0;
  CHECK(Agg(AggregateRule::kTrimmedMean, kFive, {}, none) ==
        Agg(AggregateRule::kMean, kFive));
}

TEST_CASE("trimmed mean: with the default 0.2, n <= 4 is the plain mean") {
  const Vecs xs = {{1, -3}, {2, 5}, {7, 0.5f}, {100, 8}};
  const std::vector<float> w = {1, 2, 3, 4};
  for (size_t n = 1; n <= 4; ++n) {
    Vecs first(xs.begin(), xs.begin() + n);
    std::vector<float> wn(w.begin(), w.begin() + n);
    CHECK(Agg(AggregateRule::kTrimmedMean, first, wn) ==
          Agg(AggregateRule::kMean, first, wn));
  }
}

TEST_CASE("median: known answers, weighted") {
  CHECK(Agg(AggregateRule::kMedian, kFive) == std::vector<float>{3, 20, 0});
  // Even n, equal weights: the mean of the two middle values.
  CHECK(Agg(AggregateRule::kMedian, {{1}, {2}, {4}, {100}}) ==
        std::vector<float>{3});
  // Weights 1 1 1 5 (total 8): cumulative 1 2 3 8 first reaches 4 at 100.
  CHECK(Agg(AggregateRule::kMedian, {{1}, {2}, {4}, {100}}, {1, 1, 1, 5}) ==
        std::vector<float>{100});
  // Weights 3 1 1 1 (total 6): cumulative weight at 1 is exactly half →
  // mean of 1 and 2.
  CHECK(Agg(AggregateRule::kMedian, {{1}, {2}, {4}, {100}}, {3, 1, 1, 1}) ==
        std::vector<float>{1.5f});
  // Weights 4 1 1 1 (total 7): 1 alone holds more than half.
  CHECK(Agg(AggregateRule::kMedian, {{1}, {2}, {4}, {100}}, {4, 1, 1, 1}) ==
        std::vector<float>{1});
  CHECK(Agg(AggregateRule::kMedian, {{-5, 7}}) == std::vector<float>{-5, 7});
}

TEST_CASE("centered clip: known answers") {
  AggregateOptions o;
  o.centered_clip_tau = 3;
  o.centered_clip_iterations = 1;
  const float start[] = {0};
  o.centered_clip_start = start;
  // From v = 0: distances 0 1 4 20; terms 0, 1, 4·3/4 = 3, 20·3/20 = 3;
  // v = 7/4.
  const Vecs xs = {{0}, {1}, {4}, {20}};
  CheckNear(Agg(AggregateRule::kCenteredClip, xs, {}, o), {1.75f}, 1e-7);
  // Second step from 1.75: terms -1.75, -0.75, 2.25, +3 (clipped) → 2.75/4.
  o.centered_clip_iterations = 2;
  CheckNear(Agg(AggregateRule::kCenteredClip, xs, {}, o), {2.4375f}, 1e-7);

  // Two dimensions, weights 1 1 2, τ = 2.5 from 0: a = (1,0) is inside τ,
  // b = (0,5) and c = (3,4) are at 5 → halved.
  // (1,0) + (0,2.5) + 2·(1.5,2) = (4, 6.5); / 4 = (1, 1.625).
  const float start2[] = {0, 0};
  o.centered_clip_start = start2;
  o.centered_clip_tau = 2.5;
  o.centered_clip_iterations = 1;
  CheckNear(
      Agg(AggregateRule::kCenteredClip, {{1, 0}, {0, 5}, {3, 4}}, {1, 1, 2}, o),
      {1.0f, 1.625f}, 1e-7);
}

TEST_CASE("centered clip: with a radius nobody exceeds it is the mean") {
  AggregateOptions o;
  o.centered_clip_tau = 1e6;
  CheckNear(Agg(AggregateRule::kCenteredClip, kFive, {1, 2, 3, 4, 5}, o),
            Agg(AggregateRule::kMean, kFive, {1, 2, 3, 4, 5}), 1e-4);
}

TEST_CASE("centered clip: stops at its fixed point") {
  // Run to convergence, then check the CenteredClip equation
  // Σ w_i (x_i − v) min(1, τ/||x_i − v||) = 0 at the result.
  AggregateOptions o;
  o.centered_clip_tau = 20;
  o.centered_clip_iterations = 1000;
  const std::vector<float> w = {1, 2, 1, 1, 3};
  const auto v = Agg(AggregateRule::kCenteredClip, kFive, w, o);
  std::vector<double> sum(3, 0.0);
  for (size_t i = 0; i < kFive.size(); ++i) {
    const double r = Distance(kFive[i], v);
    const double f = w[i] * std::min(1.0, o.centered_clip_tau / r);
    for (size_t j = 0; j < 3; ++j) sum[j] += f * (kFive[i][j] - double(v[j]));
  }
  for (double s : sum) CHECK(std::fabs(s) < 1e-3);
  // And the 100s are pulled in, not averaged: the mean of column 2 is 20.
  CHECK(v[2] < 12);
}

TEST_CASE("norm clipping applies before every rule") {
  AggregateOptions o;
  o.clip_norm = 5;
  // (3,4) has norm 5 and stays; (6,8) becomes (3,4); (0,1) stays.
  // Mean: (6, 9) / 3 = (2, 3).
  const Vecs xs = {{3, 4}, {6, 8}, {0, 1}};
  CheckNear(Agg(AggregateRule::kMean, xs, {}, o), {2, 3});
  CheckNear(Agg(AggregateRule::kMedian, xs, {}, o), {3, 4});
  // Without clipping the median is (3, 4) too but the mean is (3, 13/3).
  CheckNear(Agg(AggregateRule::kMean, xs), {3, 13.0f / 3});
}

TEST_CASE("every rule: identical contributions aggregate to themselves") {
  const std::vector<float> x = {0.25f, -3, 1e-3f, 7};
  for (AggregateRule r : kAllRules) {
    INFO(AggregateRuleName(r));
    CheckNear(Agg(r, {x, x, x, x, x}, {1, 2, 3, 4, 5}), x, 1e-6);
  }
}

TEST_CASE(
    "every rule: permuting contributors gives a bitwise-identical result") {
  // Contributions are sorted into a canonical order before anything is
  // summed, so all 120 orders of five weighted contributors agree bit for bit.
  // Column 0 holds ±3e30: summed in arrival order, whatever is added between
  // them would be lost or kept depending on the order.
  Rng rng{7};
  Vecs xs(5, std::vector<float>(9));
  for (auto& x : xs)
    for (float& v : x) v = rng.Uniform() * 3;
  xs[0][0] = 3e30f;
  xs[1][0] = -3e30f;
  const std::vector<float> w = {1, 1, 0.3f, 4, 1.7f};
  for (AggregateRule r : kAllRules) {
    INFO(AggregateRuleName(r));
    const auto want = Agg(r, xs, w);
    std::vector<size_t> p = {0, 1, 2, 3, 4};
    int perms = 0;
    while (std::next_permutation(p.begin(), p.end())) {
      Vecs px;
      std::vector<float> pw;
      for (size_t i : p) {
        px.push_back(xs[i]);
        pw.push_back(w[i]);
      }
      const auto got = Agg(r, px, pw);
      REQUIRE(std::memcmp(got.data(), want.data(),
                          want.size() * sizeof(float)) == 0);
      ++perms;
    }
    CHECK(perms == 119);
  }
}

TEST_CASE("every rule: shifting all contributions shifts the result") {
  Rng rng{11};
  Vecs xs(6, std::vector<float>(5));
  for (auto& x : xs)
    for (float& v : x) v = rng.Uniform();
  const std::vector<float> t = {10, -4, 0.5f, 2, -1};
  Vecs shifted = xs;
  for (auto& x : shifted)
    for (size_t j = 0; j < x.size(); ++j) x[j] += t[j];
  for (AggregateRule r : kAllRules) {
    INFO(AggregateRuleName(r));
    auto a = Agg(r, xs);
    for (size_t j = 0; j < a.size(); ++j) a[j] += t[j];
    CheckNear(Agg(r, shifted), a, 1e-5);
  }
}

TEST_CASE("centered clip: the automatic radius makes it scale-free") {
  Rng rng{5};
  Vecs xs(5, std::vector<float>(8));
  for (auto& x : xs)
    for (float& v : x) v = rng.Uniform();
  xs[4][0] = 50;  // an outlier, so clipping is active
  for (float c : {1e-6f, 1e3f}) {
    Vecs scaled = xs;
    for (auto& x : scaled)
      for (float& v : x) v *= c;
    auto want = Agg(AggregateRule::kCenteredClip, xs);
    for (float& v : want) v *= c;
    const auto got = Agg(AggregateRule::kCenteredClip, scaled);
    for (size_t j = 0; j < want.size(); ++j)
      CHECK(got[j] == Approx(want[j]).epsilon(1e-4).margin(1e-5 * c));
  }
}

// Four honest contributors near a true vector g, one attacker.
TEST_CASE("robust rules bound an attacker's damage; the mean does not") {
  enum Attack { kScaled, kSignFlipped, kHugeRandom };
  const size_t d = 32;
  for (Attack attack : {kScaled, kSignFlipped, kHugeRandom}) {
    for (uint64_t seed = 1; seed <= 20; ++seed) {
      INFO("attack " << int(attack) << " seed " << seed);
      Rng rng{seed};
      std::vector<float> g(d);
      for (float& v : g) v = rng.Uniform();
      Vecs honest;
      double spread = 0;  // max over honest i of ||x_i − g||
      for (int i = 0; i < 4; ++i) {
        std::vector<float> h(d);
        for (size_t j = 0; j < d; ++j) h[j] = g[j] + 0.05f * rng.Uniform();
        spread = std::max(spread, Distance(h, g));
        honest.push_back(h);
      }
      std::vector<float> bad(d);
      for (size_t j = 0; j < d; ++j) {
        bad[j] = attack == kScaled        ? 1000 * g[j]
                 : attack == kSignFlipped ? -10 * g[j]
                                          : 1e6f * rng.Uniform();
      }
      Vecs xs = honest;
      xs.insert(xs.begin() + int(seed % 5), bad);

      CHECK(Distance(Agg(AggregateRule::kMean, xs), g) > 10 * spread);
      for (AggregateRule r :
           {AggregateRule::kTrimmedMean, AggregateRule::kMedian,
            AggregateRule::kCenteredClip}) {
        INFO(AggregateRuleName(r));
        const auto agg = Agg(r, xs);
        CHECK(Distance(agg, g) <= 2 * spread);
        if (r == AggregateRule::kCenteredClip) continue;
        // Trimmed mean (k = 1) and median keep every coordinate inside the
        // honest values' range: the two values left after dropping one at
        // each end lie between the honest minimum and maximum.
        for (size_t j = 0; j < d; ++j) {
          float lo = honest[0][j], hi = honest[0][j];
          for (const auto& h : honest)
            lo = std::min(lo, h[j]), hi = std::max(hi, h[j]);
          CHECK(agg[j] >= lo);
          CHECK(agg[j] <= hi);
        }
      }

      // Norm clipping alone bounds the mean: the attacker is cut to norm c,
      // so it moves the mean by at most (c + ||g||)/5 plus the honest spread.
      double gnorm = 0, hmax = 0;
      for (float v : g) gnorm += double(v) * v;
      gnorm = std::sqrt(gnorm);
      for (const auto& h : honest)
        hmax = std::max(hmax, Distance(h, std::vector<float>(d, 0)));
      AggregateOptions o;
      o.clip_norm = 1.1 * hmax;
      CHECK(Distance(Agg(AggregateRule::kMean, xs, {}, o), g) <=
            (o.clip_norm + gnorm) / 5 + spread);
    }
  }
}

TEST_CASE("bad input is InvalidArgument naming what is wrong") {
  auto expect = [](const Result<std::vector<float>>& r, const char* words) {
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK_THAT(r.status().message(), Catch::Contains(words));
  };
  for (AggregateRule rule : kAllRules) {
    INFO(AggregateRuleName(rule));
    expect(Run(rule, {}), "no contributions");
    expect(Run(rule, {{1, 2}, {3, 4}}, {1}), "1 weights for 2 contributions");
    expect(Run(rule, {{1, 2}, {3, 4, 5}}), "contribution 1 has 3 values");
    expect(Run(rule, {{1, 2}, {3, NAN}}), "contribution 1 value 1 is nan");
    expect(Run(rule, {{INFINITY, 2}}), "contribution 0 value 0 is inf");
    expect(Run(rule, {{1}, {2}}, {1, 0}), "weight 1 is 0");
    expect(Run(rule, {{1}, {2}}, {-1, 1}), "weight 0 is -1");
    expect(Run(rule, {{1}, {2}}, {NAN, 1}), "weight 0 is nan");
    AggregateOptions o;
    o.trim_fraction = 0.5;
    expect(Run(rule, {{1}}, {}, o), "trim_fraction 0.5");
    o = {};
    o.clip_norm = -1;
    expect(Run(rule, {{1}}, {}, o), "clip_norm -1");
    o = {};
    o.centered_clip_iterations = 0;
    expect(Run(rule, {{1}}, {}, o), "centered_clip_iterations 0");
    o = {};
    o.centered_clip_tau = NAN;
    expect(Run(rule, {{1}}, {}, o), "centered_clip_tau nan");
    o = {};
    const float start[] = {1, 2};
    o.centered_clip_start = start;
    expect(Run(rule, {{1}}, {}, o), "centered_clip_start has 2 values");
  }
  // Zero-length vectors are fine: the aggregate is empty too.
  for (AggregateRule rule : kAllRules) CHECK(Agg(rule, {{}, {}}).empty());
}

}  // namespace
}  // namespace pcfarm
