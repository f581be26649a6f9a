#include "tasks/engine/sampling.h"

#include <catch2/catch.hpp>

#include <cmath>
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

}  // namespace
}  // namespace pcfarm
