#include "tasks/engine/sampling.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

namespace pcfarm {
namespace {

TEST_CASE("greedy takes the highest logit, the lowest id on a tie", "[sampling]") {
  std::vector<float> l = {0.5f, 2.0f, -1.0f, 2.0f};
  CHECK(SampleToken(l, {}, 0.99) == 1);
  SamplingConfig top1;
  top1.temperature = 1.0;
  top1.top_k = 1;
  for (double u : {0.0, 0.5, 0.999999}) CHECK(SampleToken(l, top1, u) == 1);
}

TEST_CASE("greedy picks what std::max_element picks: ties, signed zeros, NaN", "[sampling]") {
  const float nan = std::nanf("");
  auto first_largest = [](const std::vector<float>& v) {
    return int32_t(std::max_element(v.begin(), v.end()) - v.begin());
  };
  std::vector<std::vector<float>> cases = {
      {3.0f}, {-0.0f, 0.0f}, {0.0f, -0.0f}, {-1.0f, -0.0f, 0.0f},
      {nan, 5.0f, 1.0f}, {1.0f, nan, 5.0f}, {5.0f, nan, 5.0f}, {-INFINITY, -INFINITY}};
  std::mt19937 rng(3);
  std::uniform_int_distribution<int> small(-4, 4);
  for (size_t n : {15, 16, 17, 31, 32, 33, 1000, 32000}) {
    for (int rep = 0; rep < 4; ++rep) {
      std::vector<float> v(n);
      for (float& x : v) x = float(small(rng));  // many ties for the largest
      if (rep == 1) v[n - 1] = 9.0f;             // the largest last
      if (rep == 2) v[n / 2] = nan;
      if (rep == 3) std::fill(v.begin(), v.end(), -2.0f);
      cases.push_back(v);
    }
  }
  for (const std::vector<float>& v : cases) {
    INFO("n = " << v.size());
    CHECK(SampleToken(v, {}, 0.5) == first_largest(v));
  }
}

TEST_CASE("sampling follows the cumulative probabilities in decreasing order", "[sampling]") {
  // Probabilities 0.2, 0.5, 0.3 for ids 0, 1, 2: order 1, 2, 0.
  std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  SamplingConfig s;
  s.temperature = 1.0;
  CHECK(SampleToken(l, s, 0.0) == 1);
  CHECK(SampleToken(l, s, 0.49) == 1);
  CHECK(SampleToken(l, s, 0.51) == 2);
  CHECK(SampleToken(l, s, 0.79) == 2);
  CHECK(SampleToken(l, s, 0.81) == 0);
  CHECK(SampleToken(l, s, 0.999999) == 0);
  // top_k 2 renormalises 0.5, 0.3 to 0.625, 0.375: id 0 never comes.
  s.top_k = 2;
  CHECK(SampleToken(l, s, 0.6) == 1);
  CHECK(SampleToken(l, s, 0.63) == 2);
  CHECK(SampleToken(l, s, 0.999999) == 2);
  // top_p 0.5 keeps only id 1; 0.6 keeps ids 1 and 2.
  s.top_k = 0;
  s.top_p = 0.5;
  CHECK(SampleToken(l, s, 0.99) == 1);
  s.top_p = 0.6;
  CHECK(SampleToken(l, s, 0.99) == 2);
  // A low temperature sharpens: 0.5^(1/0.1) dominates.
  s.top_p = 1.0;
  s.temperature = 0.1;
  CHECK(SampleToken(l, s, 0.95) == 1);
}

TEST_CASE("log-softmax at a token", "[sampling]") {
  std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  CHECK(LogSoftmaxAt(l, 1) == Approx(std::log(0.5)).epsilon(1e-6));
  std::vector<float> big = {1000.0f, 0.0f};
  CHECK(LogSoftmaxAt(big, 0) == Approx(0.0).margin(1e-12));
  CHECK(std::isfinite(LogSoftmaxAt(big, 1)));
  // A vocabulary's logits (the exps are f32, summed 512 at a time): within
  // 1e-6 of the all-double value, for the likeliest token and unlikely ones.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-30, 30);
  std::vector<float> vocab(32000);
  for (float& x : vocab) x = u(rng);
  const double mx = *std::max_element(vocab.begin(), vocab.end());
  double sum = 0;
  for (float x : vocab) sum += std::exp(double(x) - mx);
  for (int32_t id : {0, 1, 777, 31999,
                     int32_t(std::max_element(vocab.begin(), vocab.end()) - vocab.begin())}) {
    const double want = double(vocab[size_t(id)]) - mx - std::log(sum);
    CHECK(std::fabs(LogSoftmaxAt(vocab, id) - want) < 1e-6);
  }
}

TEST_CASE("the counter-based stream is deterministic and uniform", "[sampling]") {
  CHECK(CounterUniform(42, 7) == CounterUniform(42, 7));
  CHECK(CounterUniform(42, 7) != CounterUniform(42, 8));
  CHECK(CounterUniform(42, 7) != CounterUniform(43, 7));
  double sum = 0;
  int low = 0;
  for (uint64_t i = 0; i < 20000; ++i) {
    const double u = CounterUniform(1, i);
    REQUIRE(u >= 0.0);
    REQUIRE(u < 1.0);
    sum += u;
    low += u < 0.25;
  }
  CHECK(sum / 20000 == Approx(0.5).margin(0.01));
  CHECK(low / 20000.0 == Approx(0.25).margin(0.01));
}

TEST_CASE("a draw checks exactly on the logits it was made from", "[sampling]") {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0, 2);
  std::vector<float> l(300);
  for (const SamplingConfig& cfg : {SamplingConfig{0, 0, 1}, SamplingConfig{0.7, 0, 1},
                                    SamplingConfig{1.0, 20, 1}, SamplingConfig{1.3, 0, 0.8},
                                    SamplingConfig{0.5, 50, 0.9}}) {
    for (int t = 0; t < 50; ++t) {
      for (float& x : l) x = nd(rng);
      const double u = CounterUniform(9, uint64_t(t));
      const DrawCheck c = CheckDraw(l, cfg, u, SampleToken(l, cfg, u), 0.01);
      CHECK(c.ok);
      CHECK(c.exact);
      CHECK(c.why.empty());
    }
  }
}

// CheckDraw finds the sampler's own draw without sorting the vocabulary
// (sums in another order, the sorted head for top_p): its "exact" must be
// the sampler's answer, also for draws next to a boundary.
TEST_CASE("a draw is exact iff the sampler picks it", "[sampling]") {
  std::mt19937_64 rng(11);
  std::vector<float> l(500);
  int picked = 0, trials = 0;
  for (float spread : {0.3f, 2.0f, 8.0f}) {
    std::normal_distribution<float> nd(0, spread);
    for (const SamplingConfig& cfg :
         {SamplingConfig{0.7, 0, 1}, SamplingConfig{1.0, 20, 1}, SamplingConfig{1.3, 0, 0.8},
          SamplingConfig{0.5, 50, 0.9}, SamplingConfig{1.0, 0, 0.999}, SamplingConfig{2, 1, 1}}) {
      for (int t = 0; t < 40; ++t) {
        for (float& x : l) x = std::round(nd(rng) * 64) / 64;  // with ties
        double u = CounterUniform(5, uint64_t(trials));
        const SamplingCandidates c = SortedCandidates(l, cfg);
        if (t % 4 == 0) {  // right at a boundary of the cumulative sums
          double cum = 0;
          for (size_t i = 0; i < c.probs.size() && i < 3; ++i) cum += c.probs[i];
          u = std::min(cum, 0.999999);
        }
        const int32_t want = SampleToken(l, cfg, u);
        std::vector<int32_t> ids = {want, c.ids[0], c.ids[std::min<size_t>(1, c.ids.size() - 1)],
                                    int32_t(rng() % l.size())};
        for (size_t i = 0; i + 1 < c.ids.size(); ++i) {
          if (c.ids[i] == want) ids.push_back(c.ids[i + 1]);
          if (c.ids[i + 1] == want) ids.push_back(c.ids[i]);
        }
        for (int32_t id : ids) {
          INFO("spread " << spread << " T " << cfg.temperature << " top_k " << cfg.top_k
                         << " top_p " << cfg.top_p << " u " << u << " id " << id);
          REQUIRE(CheckDraw(l, cfg, u, id, 0.01).exact == (id == want));
          picked += id == want;
        }
        ++trials;
      }
    }
  }
  CHECK(picked > trials);
}

// Soundness: whatever another device's rounding (each logit moved by up to
// half the tolerance, plus a common shift) makes the sampler pick, the check
// on the unmoved logits accepts. Logits on a coarse grid make near-ties at
// the top-k and top-p edges and inside the order common.
TEST_CASE("a draw from logits within the tolerance always passes", "[sampling]") {
  const double tol = 0.01;
  std::mt19937_64 rng(17);
  std::uniform_int_distribution<int> grid(0, 120);
  std::uniform_real_distribution<float> wobble(-0.49f * float(tol), 0.49f * float(tol));
  std::vector<float> mine(40), theirs(40);
  int tolerated = 0, trials = 0;
  for (double temperature : {0.0, 0.01, 0.3, 1.0, 3.0}) {
    for (int64_t top_k : {0, 1, 3, 12}) {
      for (double top_p : {1.0, 0.9, 0.5}) {
        const SamplingConfig cfg{temperature, top_k, top_p};
        for (int t = 0; t < 300; ++t) {
          const float shift = wobble(rng) * 100;
          for (size_t i = 0; i < mine.size(); ++i) {
            mine[i] = float(grid(rng)) * 0.004f;  // steps of 0.4 tolerance
            theirs[i] = mine[i] + shift + wobble(rng);
          }
          const double u = CounterUniform(uint64_t(top_k), uint64_t(trials));
          const int32_t id = SampleToken(theirs, cfg, u);
          const DrawCheck c = CheckDraw(mine, cfg, u, id, tol);
          INFO("T " << temperature << " top_k " << top_k << " top_p " << top_p << " u " << u
                    << ": " << c.why);
          REQUIRE(c.ok);
          tolerated += !c.exact;
          ++trials;
        }
      }
    }
  }
  // The tolerance was needed often, so the test exercises it.
  CHECK(tolerated > trials / 20);
}

TEST_CASE("a draw beyond the tolerance is refused, saying why", "[sampling]") {
  // Greedy: within 0.01 of the highest passes, further does not.
  std::vector<float> g = {1.0f, 1.005f, 0.5f};
  CHECK(CheckDraw(g, {}, 0.3, 1, 0.01).exact);
  const DrawCheck near = CheckDraw(g, {}, 0.3, 0, 0.01);
  CHECK(near.ok);
  CHECK_FALSE(near.exact);
  const DrawCheck far = CheckDraw(g, {}, 0.3, 2, 0.01);
  CHECK_FALSE(far.ok);
  CHECK(far.why.find("greedy picks id 1") != std::string::npos);

  // Probabilities 0.5, 0.3, 0.2 for ids 1, 2, 0: intervals [0, 0.5),
  // [0.5, 0.8), [0.8, 1).
  std::vector<float> l = {std::log(0.2f), std::log(0.5f), std::log(0.3f)};
  SamplingConfig s{1.0, 0, 1.0};
  CHECK_FALSE(CheckDraw(l, s, 0.3, 0, 0.01).ok);
  CHECK_FALSE(CheckDraw(l, s, 0.3, 2, 0.01).ok);
  CHECK(CheckDraw(l, s, 0.3, 2, 0.01).why.find("picks id 1") != std::string::npos);
  // Within about 1% of a boundary, the neighbour passes too.
  CHECK(CheckDraw(l, s, 0.501, 1, 0.01).ok);
  CHECK(CheckDraw(l, s, 0.499, 2, 0.01).ok);
  CHECK_FALSE(CheckDraw(l, s, 0.52, 1, 0.01).ok);
  CHECK(CheckDraw(l, s, 0.801, 2, 0.01).ok);
  CHECK_FALSE(CheckDraw(l, s, 0.81, 2, 0.01).ok);

  // top_k 2 keeps ids 0 and 1; id 2 is within 0.01 of the 2nd, id 3 not.
  std::vector<float> k = {3.0f, 2.0f, 1.995f, 0.0f};
  SamplingConfig top2{1.0, 2, 1.0};
  CHECK(CheckDraw(k, top2, 0.99, 2, 0.01).ok);
  const DrawCheck dropped = CheckDraw(k, top2, 0.99, 3, 0.01);
  CHECK_FALSE(dropped.ok);
  CHECK(dropped.why.find("top_k 2") != std::string::npos);

  // top_p 0.5 keeps only id 1 (0.5 of the mass); 0.49 cannot keep id 0.
  SamplingConfig half{1.0, 0, 0.5};
  CHECK(CheckDraw(l, half, 0.9, 1, 0.01).exact);
  CHECK(CheckDraw(l, half, 0.9, 2, 0.01).ok);  // 0.5 is within rounding of 0.5
  half.top_p = 0.45;
  const DrawCheck cut = CheckDraw(l, half, 0.9, 2, 0.01);
  CHECK_FALSE(cut.ok);
  CHECK(cut.why.find("top_p 0.45") != std::string::npos);

  // A tiny temperature is greedy within the tolerance, without 0/0.
  SamplingConfig cold{1e-9, 0, 1.0};
  std::vector<float> c = {2.0f, 1.995f, 1.97f};
  CHECK(CheckDraw(c, cold, 0.7, 1, 0.01).ok);
  CHECK_FALSE(CheckDraw(c, cold, 0.7, 2, 0.01).ok);
  CHECK_FALSE(CheckDraw(c, cold, 0.999999, 2, 0.01).ok);
}

}  // namespace
}  // namespace pcfarm
