#include "tasks/aggregate/outer_optimizer.h"

#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

namespace pcfarm {
namespace {

std::vector<float> Step(std::vector<float> params, const std::vector<float>& g,
                        const OuterOptimizerConfig& c, OuterOptimizerState* s) {
  Status st = OuterNesterovStep(params, g, c, s);
  INFO(st.ToString());
  REQUIRE(st.ok());
  return params;
}

TEST_CASE("outer Nesterov step: hand-computed values") {
  OuterOptimizerConfig c;
  c.lr = 0.1f;
  c.momentum = 0.9f;
  OuterOptimizerState s;
  const std::vector<float> g = {1.0f, -2.0f, 0.0f};
  // Step 1: b = g = (1, -2, 0); d = g + 0.9 b = (1.9, -3.8, 0);
  // θ = 0 - 0.1 d = (-0.19, 0.38, 0).
  std::vector<float> p = Step({0, 0, 0}, g, c, &s);
  CHECK(p[0] == Approx(-0.19).margin(1e-7));
  CHECK(p[1] == Approx(0.38).margin(1e-7));
  CHECK(p[2] == 0.0f);
  CHECK(s.step == 1);
  CHECK(s.momentum[0] == 1.0f);
  CHECK(s.momentum[1] == -2.0f);
  // Step 2, the same g: b = 0.9 (1, -2) + (1, -2) = (1.9, -3.8);
  // d = (1, -2) + 0.9 (1.9, -3.8) = (2.71, -5.42); θ = (-0.461, 0.922).
  p = Step(p, g, c, &s);
  CHECK(p[0] == Approx(-0.461).margin(1e-6));
  CHECK(p[1] == Approx(0.922).margin(1e-6));
  CHECK(s.momentum[0] == Approx(1.9).margin(1e-6));
  CHECK(s.momentum[1] == Approx(-3.8).margin(1e-6));
  CHECK(s.step == 2);

  // Values that f32 holds exactly give exact answers: η = μ = 0.5, g = 4:
  // b = 4, d = 6, θ = 10 - 3 = 7; then b = 6, d = 7, θ = 3.5.
  OuterOptimizerConfig half;
  half.lr = 0.5f;
  half.momentum = 0.5f;
  OuterOptimizerState h;
  std::vector<float> q = Step({10.0f}, {4.0f}, half, &h);
  CHECK(q[0] == 7.0f);
  q = Step(q, {4.0f}, half, &h);
  CHECK(q[0] == 3.5f);
  CHECK(h.momentum[0] == 6.0f);
}

TEST_CASE("outer Nesterov step follows torch.optim.SGD(nesterov=True)") {
  // torch/optim/sgd.py, _single_tensor_sgd with weight_decay 0, dampening 0,
  // maximize False, transcribed (in double):
  //   if buf is None: buf = clone(grad)
  //   else:           buf.mul_(momentum).add_(grad, alpha=1 - dampening)
  //   if nesterov:    grad = grad.add(buf, alpha=momentum)
  //   param.add_(grad, alpha=-lr)
  std::mt19937 rng(5);
  std::normal_distribution<double> normal;
  const size_t n = 257;
  for (float mu : {0.0f, 0.5f, 0.9f, 0.99f}) {
    INFO("momentum " << mu);
    OuterOptimizerConfig c;
    c.lr = 0.7f;
    c.momentum = mu;
    std::vector<double> ref(n), buf;
    std::vector<float> ours(n);
    for (size_t i = 0; i < n; ++i) ours[i] = float(ref[i] = normal(rng));
    for (size_t i = 0; i < n; ++i) ref[i] = ours[i];
    OuterOptimizerState s;
    for (int t = 0; t < 6; ++t) {
      std::vector<float> g(n);
      for (auto& v : g) v = float(normal(rng));
      if (buf.empty()) {
        buf.assign(g.begin(), g.end());
      } else {
        for (size_t i = 0; i < n; ++i) buf[i] = buf[i] * mu + g[i];
      }
      for (size_t i = 0; i < n; ++i) ref[i] += -double(c.lr) * (g[i] + double(mu) * buf[i]);
      ours = Step(ours, g, c, &s);
    }
    for (size_t i = 0; i < n; ++i) {
      INFO("index " << i);
      CHECK(ours[i] == Approx(ref[i]).margin(1e-5).epsilon(1e-5));
      CHECK(s.momentum[i] == Approx(buf[i]).margin(1e-5).epsilon(1e-5));
    }
  }
}

TEST_CASE("outer step with lr 1 and no momentum is federated averaging") {
  // θ = (1, 2), the replicas' average θ̄ = (0.5, 3): g = θ - θ̄.
  OuterOptimizerConfig c;
  c.lr = 1.0f;
  c.momentum = 0.0f;
  OuterOptimizerState s;
  std::vector<float> p = Step({1.0f, 2.0f}, {0.5f, -1.0f}, c, &s);
  CHECK(p[0] == 0.5f);
  CHECK(p[1] == 3.0f);
}

TEST_CASE("outer step refuses bad input and changes nothing") {
  OuterOptimizerConfig c;
  OuterOptimizerState s;
  std::vector<float> p = {1.0f, 2.0f};
  auto fails = [&](const std::vector<float>& g, const OuterOptimizerConfig& cfg,
                   const char* says) {
    std::vector<float> before = p;
    OuterOptimizerState saved = s;
    Status st = OuterNesterovStep(p, g, cfg, &s);
    INFO(st.ToString());
    CHECK(st.code() == StatusCode::kInvalidArgument);
    CHECK(st.message().find(says) != std::string::npos);
    CHECK(p == before);
    CHECK(s.step == saved.step);
    CHECK(s.momentum == saved.momentum);
  };
  fails({1.0f}, c, "outer gradient has 1 values");
  fails({1.0f, std::numeric_limits<float>::quiet_NaN()}, c, "value 1 is not finite");
  fails({1.0f, std::numeric_limits<float>::infinity()}, c, "value 1 is not finite");
  OuterOptimizerConfig bad = c;
  bad.lr = 0;
  fails({1, 1}, bad, "outer lr");
  bad = c;
  bad.momentum = 1.0f;
  fails({1, 1}, bad, "outer momentum");
  bad.momentum = -0.1f;
  fails({1, 1}, bad, "outer momentum");
  s.momentum = {1, 2, 3};
  fails({1, 1}, c, "momentum buffer has 3 values");
}

TEST_CASE("outer optimizer state round-trips and refuses bad bytes") {
  OuterOptimizerState s;
  s.step = 3;
  s.momentum = {1.5f, -2.25f, 0.0f};
  const std::string bytes = EncodeOuterOptimizerState(s);
  REQUIRE(bytes.size() == 24 + 3 * 4);
  CHECK(bytes.substr(0, 4) == "POM1");
  auto back = DecodeOuterOptimizerState(bytes, 3);
  REQUIRE(back.ok());
  CHECK(back->step == 3);
  CHECK(back->momentum == s.momentum);
  auto empty = DecodeOuterOptimizerState(EncodeOuterOptimizerState({}), 0);
  REQUIRE(empty.ok());
  CHECK(empty->momentum.empty());

  auto says = [](std::string_view b, int64_t count, const char* part) {
    auto r = DecodeOuterOptimizerState(b, count);
    REQUIRE_FALSE(r.ok());
    INFO(r.status().ToString());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find(part) != std::string::npos);
  };
  auto patched = [&](size_t offset, const void* v, size_t n) {
    std::string b = bytes;
    std::memcpy(b.data() + offset, v, n);
    return b;
  };
  says("", 3, "shorter than its 24-byte header");
  says(bytes.substr(0, 23), 3, "shorter");
  says(patched(0, "PAW1", 4), 3, "bad magic");
  const uint32_t v2 = 2;
  says(patched(4, &v2, 4), 3, "version 2");
  const int64_t neg = -1;
  says(patched(8, &neg, 8), 3, "step -1 is negative");
  says(bytes, 4, "count 3, the parameters have 4");
  const int64_t huge = int64_t(1) << 60;
  says(patched(16, &huge, 8), huge, "bytes for");
  says(bytes.substr(0, bytes.size() - 1), 3, "bytes for 3 values");
  says(bytes + "x", 3, "bytes for 3 values");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  says(patched(24 + 4, &nan, 4), 3, "momentum value 1 is not finite");
}

}  // namespace
}  // namespace pcfarm
