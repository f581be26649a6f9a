// The shared backend test: every op of every registered backend against a
// plain double-precision reference written here, and every backend other
// than the CPU also against the CPU backend. The references' backward passes
// are checked against central finite differences (in double) first, so the
// reference is trusted before any backend is compared with it.
//
// Tolerances (absolute + relative, per element, |got − want| <= atol +
// rtol·|want|) are stated next to each op; they hold for f32 compute.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "tasks/backend/backend.h"
#include "tasks/backend/half.h"
#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

using Vec = std::vector<double>;

// ---- helpers -----------------------------------------------------------------

class Rng {
 public:
  explicit Rng(uint64_t seed) : s_(seed) {}
  uint64_t Next() {  // SplitMix64
    uint64_t z = (s_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double Uniform(double lo = -1, double hi = 1) {
    return lo + (hi - lo) * static_cast<double>(Next() >> 11) * 0x1.0p-53;
  }
  int Int(int n) { return static_cast<int>(Next() % static_cast<uint64_t>(n)); }
  Vec Values(size_t n, double lo = -1, double hi = 1) {
    Vec v(n);
    for (auto& x : v) x = Uniform(lo, hi);
    return v;
  }

 private:
  uint64_t s_;
};

std::vector<float> ToFloat(const Vec& v) { return {v.begin(), v.end()}; }

// The value `x` has after storage as `type`.
double Stored(double x, StorageType type) {
  const float f = static_cast<float>(x);
  switch (type) {
    case StorageType::kF32: return f;
    case StorageType::kF16: return F16ToF32(F32ToF16(f));
    case StorageType::kBF16: return BF16ToF32(F32ToBF16(f));
    // Quantized weights are tested in cpu/cpu_quant_test.cc, not here.
    case StorageType::kQ8_0: case StorageType::kQ4_0: case StorageType::kQ4_K:
    case StorageType::kQ6_K: break;
  }
  return f;
}
Vec Stored(const Vec& v, StorageType type) {
  Vec out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = Stored(v[i], type);
  return out;
}
// Rounds to f32, so references see exactly what the backends see.
Vec AsF32(const Vec& v) { return Stored(v, StorageType::kF32); }

Tensor Make(Backend& b, Shape shape, const Vec& data,
            StorageType type = StorageType::kF32) {
  auto t = b.Alloc(shape, type);
  REQUIRE(t.ok());
  REQUIRE(static_cast<int64_t>(data.size()) == shape.numel());
  const Status s = b.Upload(*t, ToFloat(data));
  REQUIRE(s.ok());
  return *t;
}

Tensor Zeros(Backend& b, Shape shape) { return Make(b, shape, Vec(shape.numel(), 0.0)); }

Vec Get(Backend& b, const Tensor& t) {
  std::vector<float> v(static_cast<size_t>(t.numel()));
  const Status s = b.Download(t, v);
  REQUIRE(s.ok());
  return {v.begin(), v.end()};
}

void ExpectClose(const Vec& got, const Vec& want, double atol, double rtol,
                 const std::string& what) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  double worst = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(got[i] - want[i]);
    worst = std::max(worst, err);
    if (!(err <= atol + rtol * std::fabs(want[i]))) {
      if (bad++ == 0) first = i;
    }
  }
  INFO(what << ": " << bad << " of " << got.size() << " elements out of tolerance (atol "
            << atol << ", rtol " << rtol << "), max abs error " << worst
            << (bad ? ", first at " + std::to_string(first) + ": got " +
                          std::to_string(got[first]) + " want " +
                          std::to_string(want[first])
                    : ""));
  CHECK(bad == 0);
}

// Every registered backend whose device opens here; the CPU first.
struct BackendSet {
  std::vector<std::unique_ptr<Backend>> all;
  Backend* cpu = nullptr;
};

BackendSet& Backends() {
  static BackendSet* set = [] {
    auto* s = new BackendSet;
    for (const auto& name : RegisteredBackendNames()) {
      auto b = CreateBackend(name);
      if (!b.ok()) {
        WARN("skipping backend " << name << ": " << b.status().ToString());
        continue;
      }
      s->all.push_back(std::move(b).value());
      if (name == "cpu") s->cpu = s->all.back().get();
    }
    REQUIRE(s->cpu != nullptr);
    return s;
  }();
  return *set;
}

// Runs `op` (which returns named outputs) on every backend and checks each
// output against the reference `want` and, for non-CPU backends, against the
// CPU backend's output with the same tolerance.
using Outputs = std::vector<std::pair<std::string, Vec>>;
void CheckAllBackends(const std::function<Outputs(Backend&)>& op, const Outputs& want,
                      double atol, double rtol) {
  BackendSet& set = Backends();
  const Outputs cpu = op(*set.cpu);
  for (auto& b : set.all) {
    const Outputs got = b.get() == set.cpu ? cpu : op(*b);
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
      ExpectClose(got[i].second, want[i].second, atol, rtol,
                  b->name() + " " + got[i].first + " vs reference");
      if (b.get() != set.cpu)
        ExpectClose(got[i].second, cpu[i].second, atol, rtol,
                    b->name() + " " + got[i].first + " vs cpu");
    }
  }
}

// Checks `grad` = ∂loss/∂x at x against central differences in double.
void CheckFiniteDiff(const std::function<double(const Vec&)>& loss, const Vec& x,
                     const Vec& grad, const std::string& what) {
  const double h = 1e-5;
  Vec num(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    Vec xp = x, xm = x;
    xp[i] += h;
    xm[i] -= h;
    num[i] = (loss(xp) - loss(xm)) / (2 * h);
  }
  ExpectClose(grad, num, 1e-7, 1e-6, what + " analytic vs finite differences");
}

double DotD(const Vec& a, const Vec& b) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

Vec Plus(Vec a, const Vec& b) {
  for (size_t i = 0; i < a.size(); ++i) a[i] += b[i];
  return a;
}

// ---- naive references (double) ---------------------------------------------------

// c[M,N] = op(a)·op(b); a stored [ra, ca], b stored [rb, cb].
Vec RefGemm(const Vec& a, int64_t ra, int64_t ca, bool ta, const Vec& b, int64_t rb,
            int64_t cb, bool tb) {
  const int64_t m = ta ? ca : ra, k = ta ? ra : ca, n = tb ? rb : cb;
  Vec c(static_cast<size_t>(m * n), 0.0);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t p = 0; p < k; ++p)
        s += (ta ? a[p * ca + i] : a[i * ca + p]) * (tb ? b[j * cb + p] : b[p * cb + j]);
      c[i * n + j] = s;
    }
  return c;
}

Vec RefRmsNorm(const Vec& x, const Vec& w, int64_t c, double eps) {
  Vec o(x.size());
  for (size_t r = 0; r < x.size() / c; ++r) {
    double ss = 0;
    for (int64_t j = 0; j < c; ++j) ss += x[r * c + j] * x[r * c + j];
    const double rs = 1 / std::sqrt(ss / c + eps);
    for (int64_t j = 0; j < c; ++j) o[r * c + j] = x[r * c + j] * rs * w[j];
  }
  return o;
}

void RefRmsNormBackward(Vec& dx, Vec& dw, const Vec& dy, const Vec& x, const Vec& w,
                        int64_t c, double eps) {
  for (size_t r = 0; r < x.size() / c; ++r) {
    double ss = 0, dot = 0;
    for (int64_t j = 0; j < c; ++j) {
      ss += x[r * c + j] * x[r * c + j];
      dot += dy[r * c + j] * w[j] * x[r * c + j];
    }
    const double rs = 1 / std::sqrt(ss / c + eps);
    for (int64_t j = 0; j < c; ++j) {
      dx[r * c + j] += rs * w[j] * dy[r * c + j] - x[r * c + j] * rs * rs * rs * dot / c;
      dw[j] += dy[r * c + j] * x[r * c + j] * rs;
    }
  }
}

// x [n, h, d]; sign = +1 forward, −1 the transpose (backward).
Vec RefRope(const Vec& x, int64_t n, int64_t h, int64_t d, const Vec& inv_freq,
            const std::vector<int32_t>& pos, double sign) {
  Vec o(x.size());
  for (int64_t t = 0; t < n; ++t)
    for (int64_t hh = 0; hh < h; ++hh)
      for (int64_t j = 0; j < d / 2; ++j) {
        const double ang = pos[t] * inv_freq[j];
        const double c = std::cos(ang), s = sign * std::sin(ang);
        const size_t i1 = (t * h + hh) * d + j, i2 = i1 + d / 2;
        o[i1] = x[i1] * c - x[i2] * s;
        o[i2] = x[i2] * c + x[i1] * s;
      }
  return o;
}

struct AttnDims {
  int64_t n, hq, hkv, d;
};

// out [n, hq, d] and lse [n, hq].
Vec RefAttention(const AttnDims& a, const Vec& q, const Vec& k, const Vec& v,
                 const std::vector<int32_t>& starts, Vec* lse = nullptr) {
  Vec o(static_cast<size_t>(a.n * a.hq * a.d), 0.0);
  if (lse) lse->assign(static_cast<size_t>(a.n * a.hq), 0.0);
  const double scale = 1 / std::sqrt(static_cast<double>(a.d));
  for (size_t s = 0; s + 1 < starts.size(); ++s)
    for (int64_t i = starts[s]; i < starts[s + 1]; ++i)
      for (int64_t h = 0; h < a.hq; ++h) {
        const int64_t g = h / (a.hq / a.hkv);
        Vec sc;
        double mx = -INFINITY;
        for (int64_t j = starts[s]; j <= i; ++j) {
          double dot = 0;
          for (int64_t c = 0; c < a.d; ++c)
            dot += q[(i * a.hq + h) * a.d + c] * k[(j * a.hkv + g) * a.d + c];
          sc.push_back(dot * scale);
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (double& x : sc) sum += (x = std::exp(x - mx));
        for (int64_t j = starts[s]; j <= i; ++j)
          for (int64_t c = 0; c < a.d; ++c)
            o[(i * a.hq + h) * a.d + c] +=
                sc[j - starts[s]] / sum * v[(j * a.hkv + g) * a.d + c];
        if (lse) (*lse)[i * a.hq + h] = mx + std::log(sum);
      }
  return o;
}

void RefAttentionBackward(const AttnDims& a, Vec& dq, Vec& dk, Vec& dv, const Vec& dout,
                          const Vec& q, const Vec& k, const Vec& v,
                          const std::vector<int32_t>& starts) {
  Vec lse;
  const Vec out = RefAttention(a, q, k, v, starts, &lse);
  const double scale = 1 / std::sqrt(static_cast<double>(a.d));
  for (size_t s = 0; s + 1 < starts.size(); ++s)
    for (int64_t i = starts[s]; i < starts[s + 1]; ++i)
      for (int64_t h = 0; h < a.hq; ++h) {
        const int64_t g = h / (a.hq / a.hkv);
        const size_t qi = (i * a.hq + h) * a.d;
        double delta = 0;
        for (int64_t c = 0; c < a.d; ++c) delta += dout[qi + c] * out[qi + c];
        for (int64_t j = starts[s]; j <= i; ++j) {
          const size_t kj = (j * a.hkv + g) * a.d;
          double dot = 0, dpv = 0;
          for (int64_t c = 0; c < a.d; ++c) {
            dot += q[qi + c] * k[kj + c];
            dpv += dout[qi + c] * v[kj + c];
          }
          const double p = std::exp(dot * scale - lse[i * a.hq + h]);
          const double ds = p * (dpv - delta) * scale;
          for (int64_t c = 0; c < a.d; ++c) {
            dq[qi + c] += ds * k[kj + c];
            dk[kj + c] += ds * q[qi + c];
            dv[kj + c] += p * dout[qi + c];
          }
        }
      }
}

double Sigmoid(double x) { return 1 / (1 + std::exp(-x)); }

// Per-token −log softmax(x)[target], 0 where the weight is 0.
Vec RefCrossEntropy(const Vec& x, int64_t n, int64_t v, const std::vector<int32_t>& t,
                    const std::vector<float>& w) {
  Vec loss(static_cast<size_t>(n), 0.0);
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] == 0) continue;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, x[i * v + j]);
    for (int64_t j = 0; j < v; ++j) sum += std::exp(x[i * v + j] - mx);
    loss[i] = mx + std::log(sum) - x[i * v + t[i]];
  }
  return loss;
}

// dx += scale·w_i·(softmax − onehot).
void RefCrossEntropyBackward(Vec& dx, const Vec& x, int64_t n, int64_t v,
                             const std::vector<int32_t>& t, const std::vector<float>& w,
                             double scale) {
  for (int64_t i = 0; i < n; ++i) {
    if (w[i] == 0) continue;
    double mx = -INFINITY, sum = 0;
    for (int64_t j = 0; j < v; ++j) mx = std::max(mx, x[i * v + j]);
    for (int64_t j = 0; j < v; ++j) sum += std::exp(x[i * v + j] - mx);
    for (int64_t j = 0; j < v; ++j)
      dx[i * v + j] += scale * w[i] * (std::exp(x[i * v + j] - mx) / sum - (j == t[i]));
  }
}

// ---- tests: matrix multiply -----------------------------------------------------

TEST_CASE("Gemm matches the reference for every transpose, alpha and beta") {
  Rng rng(1);
  // The small shape runs on one thread; the CPU backend splits the larger
  // ones over its pool, by rows (200 x 70) and by column blocks of 64 (33 x
  // 333), with partial blocks at the end.
  struct Shape3 { int64_t m, n, k; };
  for (Shape3 shape : {Shape3{7, 5, 9}, Shape3{200, 70, 300}, Shape3{33, 333, 200}})
  for (bool ta : {false, true})
    for (bool tb : {false, true})
      for (StorageType bt : {StorageType::kF32, StorageType::kF16, StorageType::kBF16}) {
        const int64_t m = shape.m, n = shape.n, k = shape.k;
        INFO(m << "x" << n << "x" << k << " trans_a " << ta << " trans_b " << tb << " b "
               << StorageTypeName(bt));
        const int64_t ra = ta ? k : m, ca = ta ? m : k, rb = tb ? n : k, cb = tb ? k : n;
        const Vec a = AsF32(rng.Values(ra * ca)), b = Stored(rng.Values(rb * cb), bt);
        const Vec c0 = AsF32(rng.Values(m * n));
        const double alpha = 0.75, beta = -0.5;
        Vec want = RefGemm(a, ra, ca, ta, b, rb, cb, tb);
        for (size_t i = 0; i < want.size(); ++i) want[i] = alpha * want[i] + beta * c0[i];
        // f32 sums of K terms of magnitude <= 1: 1e-5 absolute for K = 9,
        // 1e-4 for K = 300.
        const double tol = k < 100 ? 1e-5 : 1e-4;
        CheckAllBackends(
            [&](Backend& be) -> Outputs {
              Tensor ta_t = Make(be, {ra, ca}, a), tb_t = Make(be, {rb, cb}, b, bt);
              Tensor c = Make(be, {m, n}, c0);
              REQUIRE(be.Gemm(c, ta_t, ta, tb_t, tb, alpha, beta).ok());
              return {{"c", Get(be, c)}};
            },
            {{"c", want}}, tol, tol);
      }
}

TEST_CASE("MatMulForwardShared: each output is its weight's MatMulForward") {
  Rng rng(2);
  // Three weights of ragged row counts and storages over one input, at
  // decode rows (1, 5) and prefill rows (40).
  const int64_t k = 96, ns[] = {33, 7, 64};
  const StorageType types[] = {StorageType::kF32, StorageType::kF16, StorageType::kBF16};
  for (int64_t m : {1, 5, 40}) {
    INFO("m " << m);
    const Vec x = AsF32(rng.Values(m * k));
    Vec w[3];
    Outputs want;
    for (int i = 0; i < 3; ++i) {
      w[i] = Stored(rng.Values(ns[i] * k), types[i]);
      want.push_back({"y" + std::to_string(i), RefGemm(x, m, k, false, w[i], ns[i], k, true)});
    }
    CheckAllBackends(
        [&](Backend& be) -> Outputs {
          const Tensor xt = Make(be, {m, k}, x);
          std::vector<Tensor> ws, ys;
          for (int i = 0; i < 3; ++i) {
            ws.push_back(Make(be, {ns[i], k}, w[i], types[i]));
            ys.push_back(Make(be, {m, ns[i]}, Vec(size_t(m * ns[i]), 0.0)));
          }
          REQUIRE(be.MatMulForwardShared(ys, xt, ws).ok());
          Outputs out;
          for (int i = 0; i < 3; ++i) out.push_back({"y" + std::to_string(i), Get(be, ys[i])});
          return out;
        },
        want, 1e-5, 1e-5);
  }
}

TEST_CASE("Gemm with 16-bit weights spanning several conversion tiles") {
  // 1100 x 1000 = 1.1M elements: more than one 4 MiB tile of f32.
  Rng rng(2);
  const int64_t m = 3, n = 1100, k = 1000;
  for (StorageType bt : {StorageType::kBF16, StorageType::kF16}) {
    INFO(StorageTypeName(bt));
    const Vec x = AsF32(rng.Values(m * k)), w = Stored(rng.Values(n * k), bt);
    const Vec dy = AsF32(rng.Values(m * n));
    const Vec fwd = RefGemm(x, m, k, false, w, n, k, true);   // x·wᵀ
    const Vec dx = RefGemm(dy, m, n, false, w, n, k, false);  // dy·w (tiles over K)
    const Vec at_vals = AsF32(rng.Values(n * m));
    // K = 1000 (or 1100) terms of magnitude <= 1 in f32: 1e-4 absolute.
    CheckAllBackends(
        [&](Backend& be) -> Outputs {
          Tensor xt = Make(be, {m, k}, x), wt = Make(be, {n, k}, w, bt);
          Tensor y = Zeros(be, {m, n}), dyt = Make(be, {m, n}, dy), dxt = Zeros(be, {m, k});
          REQUIRE(be.MatMulForward(y, xt, wt).ok());
          REQUIRE(be.MatMulBackward(&dxt, nullptr, dyt, xt, wt).ok());
          // op(a) = aᵀ with b's rows (the reduction index) split into tiles.
          Tensor at = Make(be, {n, m}, at_vals), ct = Zeros(be, {m, k});
          REQUIRE(be.Gemm(ct, at, true, wt, false, 1, 0).ok());
          return {{"y", Get(be, y)}, {"dx", Get(be, dxt)}, {"atw", Get(be, ct)}};
        },
        {{"y", fwd}, {"dx", dx}, {"atw", RefGemm(at_vals, n, m, true, w, n, k, false)}},
        1e-4, 1e-4);
  }
}

TEST_CASE("Gemm with beta 0 ignores NaN in c") {
  for (auto& b : Backends().all) {
    INFO(b->name());
    Tensor a = Make(*b, {2, 2}, {1, 2, 3, 4}), w = Make(*b, {2, 2}, {1, 0, 0, 1});
    Tensor c = Make(*b, {2, 2}, Vec(4, std::numeric_limits<double>::quiet_NaN()));
    REQUIRE(b->MatMulForward(c, a, w).ok());
    CHECK(Get(*b, c) == Vec{1, 2, 3, 4});
  }
}

TEST_CASE("MatMul backward: reference vs finite differences, backends vs reference") {
  Rng rng(3);
  const int64_t n = 4, c = 6, oc = 5;
  const Vec x = AsF32(rng.Values(n * c)), w = AsF32(rng.Values(oc * c));
  const Vec r = AsF32(rng.Values(n * oc));  // dout; loss = Σ r·(x·wᵀ)
  const Vec dx = RefGemm(r, n, oc, false, w, oc, c, false);
  const Vec dw = RefGemm(r, n, oc, true, x, n, c, false);
  CheckFiniteDiff([&](const Vec& xx) { return DotD(r, RefGemm(xx, n, c, false, w, oc, c, true)); },
                  x, dx, "matmul dx");
  CheckFiniteDiff([&](const Vec& ww) { return DotD(r, RefGemm(x, n, c, false, ww, oc, c, true)); },
                  w, dw, "matmul dw");
  // Gradients accumulate onto what is there.
  const Vec dx0 = AsF32(rng.Values(n * c)), dw0 = AsF32(rng.Values(oc * c));
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor xt = Make(be, {n, c}, x), wt = Make(be, {oc, c}, w), rt = Make(be, {n, oc}, r);
        Tensor dxt = Make(be, {n, c}, dx0), dwt = Make(be, {oc, c}, dw0);
        REQUIRE(be.MatMulBackward(&dxt, &dwt, rt, xt, wt).ok());
        return {{"dx", Get(be, dxt)}, {"dw", Get(be, dwt)}};
      },
      {{"dx", Plus(dx0, dx)}, {"dw", Plus(dw0, dw)}}, 1e-5, 1e-5);
}

// ---- tests: embedding ------------------------------------------------------------

TEST_CASE("Embedding forward gathers rows and backward scatter-adds repeated ids") {
  Rng rng(4);
  const int64_t v = 10, c = 8;
  const std::vector<int32_t> ids = {3, 0, 3, 9, 3, 1};
  const int64_t n = static_cast<int64_t>(ids.size());
  for (StorageType tt : {StorageType::kF32, StorageType::kBF16, StorageType::kF16}) {
    INFO(StorageTypeName(tt));
    const Vec table = Stored(rng.Values(v * c), tt), dy = AsF32(rng.Values(n * c));
    Vec fwd(n * c), dtable(v * c, 0.0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < c; ++j) {
        fwd[i * c + j] = table[ids[i] * c + j];
        dtable[ids[i] * c + j] += dy[i * c + j];
      }
    CheckFiniteDiff(
        [&](const Vec& tb) {
          double s = 0;
          for (int64_t i = 0; i < n; ++i)
            for (int64_t j = 0; j < c; ++j) s += dy[i * c + j] * tb[ids[i] * c + j];
          return s;
        },
        table, dtable, "embedding dtable");
    CheckAllBackends(
        [&](Backend& be) -> Outputs {
          Tensor t = Make(be, {v, c}, table, tt), out = Zeros(be, {n, c});
          Tensor dyt = Make(be, {n, c}, dy), dt = Zeros(be, {v, c});
          REQUIRE(be.EmbeddingForward(out, t, ids).ok());
          REQUIRE(be.EmbeddingBackward(dt, dyt, ids).ok());
          return {{"out", Get(be, out)}, {"dtable", Get(be, dt)}};
        },
        {{"out", fwd}, {"dtable", dtable}}, 1e-6, 1e-6);
  }
}

// ---- tests: RMSNorm ---------------------------------------------------------------

TEST_CASE("RmsNorm forward and backward") {
  Rng rng(5);
  const int64_t rows = 5, c = 16;
  const double eps = 1e-5;
  const Vec x = AsF32(rng.Values(rows * c)), w = AsF32(rng.Values(c, 0.5, 1.5));
  const Vec r = AsF32(rng.Values(rows * c));
  Vec dx(rows * c, 0.0), dw(c, 0.0);
  RefRmsNormBackward(dx, dw, r, x, w, c, eps);
  CheckFiniteDiff([&](const Vec& xx) { return DotD(r, RefRmsNorm(xx, w, c, eps)); }, x, dx,
                  "rmsnorm dx");
  CheckFiniteDiff([&](const Vec& ww) { return DotD(r, RefRmsNorm(x, ww, c, eps)); }, w, dw,
                  "rmsnorm dw");
  const Vec dx0 = AsF32(rng.Values(rows * c));
  // Sums of 16 f32 terms: 1e-5.
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor xt = Make(be, {rows, c}, x), wt = Make(be, {c}, w), out = Zeros(be, {rows, c});
        Tensor rt = Make(be, {rows, c}, r), dxt = Make(be, {rows, c}, dx0), dwt = Zeros(be, {c});
        REQUIRE(be.RmsNormForward(out, xt, wt, static_cast<float>(eps)).ok());
        REQUIRE(be.RmsNormBackward(dxt, &dwt, rt, xt, wt, static_cast<float>(eps)).ok());
        // In place, and a BF16 weight (frozen: no dweight).
        Tensor wb = Make(be, {c}, Stored(w, StorageType::kBF16), StorageType::kBF16);
        REQUIRE(be.RmsNormForward(xt, xt, wb, static_cast<float>(eps)).ok());
        REQUIRE(be.RmsNormBackward(dxt, nullptr, rt, out, wb, static_cast<float>(eps)).ok());
        return {{"out", Get(be, out)}, {"dx", Get(be, dxt)}, {"dw", Get(be, dwt)},
                {"inplace_bf16", Get(be, xt)}};
      },
      {{"out", RefRmsNorm(x, w, c, eps)},
       {"dx",
        [&] {
          Vec d = Plus(dx0, dx), unused(c, 0.0);
          RefRmsNormBackward(d, unused, r, AsF32(RefRmsNorm(x, w, c, eps)),
                             Stored(w, StorageType::kBF16), c, eps);
          return d;
        }()},
       {"dw", dw},
       {"inplace_bf16", RefRmsNorm(x, Stored(w, StorageType::kBF16), c, eps)}},
      1e-5, 1e-5);
}

// ---- tests: RoPE --------------------------------------------------------------------

TEST_CASE("Rope rotates half pairs; backward is the transpose") {
  Rng rng(6);
  const int64_t n = 5, h = 3, d = 8;
  const std::vector<int32_t> pos = {0, 1, 2, 7, 19};
  Vec inv_freq(d / 2);
  for (int64_t j = 0; j < d / 2; ++j) inv_freq[j] = std::pow(10000.0, -2.0 * j / d);
  inv_freq = AsF32(inv_freq);
  const Vec x = AsF32(rng.Values(n * h * d)), r = AsF32(rng.Values(n * h * d));
  const Vec fwd = RefRope(x, n, h, d, inv_freq, pos, +1);
  const Vec dx = RefRope(r, n, h, d, inv_freq, pos, -1);
  CheckFiniteDiff([&](const Vec& xx) { return DotD(r, RefRope(xx, n, h, d, inv_freq, pos, 1)); },
                  x, dx, "rope dx");
  // Position 0 is the identity.
  for (int64_t j = 0; j < h * d; ++j) CHECK(fwd[j] == x[j]);
  const Vec dx0 = AsF32(rng.Values(n * h * d));
  // One rotation in f32 with f32 angles (positions <= 19): 1e-5.
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor xt = Make(be, {n, h, d}, x), ft = Make(be, {d / 2}, inv_freq);
        Tensor out = Zeros(be, {n, h, d}), rt = Make(be, {n, h, d}, r);
        Tensor dxt = Make(be, {n, h, d}, dx0);
        REQUIRE(be.RopeForward(out, xt, ft, pos).ok());
        REQUIRE(be.RopeBackward(dxt, rt, ft, pos).ok());
        REQUIRE(be.RopeForward(xt, xt, ft, pos).ok());  // in place
        return {{"out", Get(be, out)}, {"dx", Get(be, dxt)}, {"inplace", Get(be, xt)}};
      },
      {{"out", fwd}, {"dx", Plus(dx0, dx)}, {"inplace", fwd}}, 1e-5, 1e-5);
}

// The CPU keeps the last call's angles while its frequencies and positions
// repeat; a call that changes either (one position of five, or the
// frequencies at the same positions) must not see the old ones.
TEST_CASE("Rope calls in a row with other positions or frequencies") {
  Rng rng(61);
  const int64_t n = 5, h = 2, d = 8;
  const std::vector<int32_t> pos_a = {3, 4, 5, 6, 7}, pos_b = {3, 4, 9, 6, 7};
  Vec f1(d / 2), f2(d / 2);
  for (int64_t j = 0; j < d / 2; ++j) {
    f1[j] = std::pow(10000.0, -2.0 * j / d);
    f2[j] = std::pow(500000.0, -2.0 * j / d);
  }
  f1 = AsF32(f1);
  f2 = AsF32(f2);
  const Vec x = AsF32(rng.Values(n * h * d));
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor xt = Make(be, {n, h, d}, x), t1 = Make(be, {d / 2}, f1),
               t2 = Make(be, {d / 2}, f2);
        Outputs o;
        int i = 0;
        for (auto [ft, pos] : {std::pair{&t1, &pos_a}, {&t1, &pos_a}, {&t1, &pos_b},
                               {&t2, &pos_b}, {&t1, &pos_a}}) {
          Tensor out = Zeros(be, {n, h, d});
          REQUIRE(be.RopeForward(out, xt, *ft, *pos).ok());
          o.push_back({"call " + std::to_string(i++), Get(be, out)});
        }
        return o;
      },
      {{"call 0", RefRope(x, n, h, d, f1, pos_a, +1)},
       {"call 1", RefRope(x, n, h, d, f1, pos_a, +1)},
       {"call 2", RefRope(x, n, h, d, f1, pos_b, +1)},
       {"call 3", RefRope(x, n, h, d, f2, pos_b, +1)},
       {"call 4", RefRope(x, n, h, d, f1, pos_a, +1)}},
      1e-5, 1e-5);
}

// ---- tests: attention -----------------------------------------------------------------

// Random q, k, v and output gradient r for `a` (drawn in that order), and
// the double reference's forward (out, lse) and backward (dq, dk, dv).
struct AttnCase {
  Vec q, k, v, r, out, lse, dq, dk, dv;
};

AttnCase MakeAttnCase(Rng& rng, const AttnDims& a, const std::vector<int32_t>& starts) {
  AttnCase c;
  c.q = AsF32(rng.Values(a.n * a.hq * a.d, -2, 2));
  c.k = AsF32(rng.Values(a.n * a.hkv * a.d, -2, 2));
  c.v = AsF32(rng.Values(a.n * a.hkv * a.d));
  c.r = AsF32(rng.Values(a.n * a.hq * a.d));
  c.out = RefAttention(a, c.q, c.k, c.v, starts, &c.lse);
  c.dq.assign(c.q.size(), 0.0);
  c.dk.assign(c.k.size(), 0.0);
  c.dv.assign(c.v.size(), 0.0);
  RefAttentionBackward(a, c.dq, c.dk, c.dv, c.r, c.q, c.k, c.v, starts);
  return c;
}

// Forward then backward of c on `be`; dq starts at dq0 (gradients add up).
Outputs RunAttention(Backend& be, const AttnDims& a, const AttnCase& c, const Vec& dq0,
                     const std::vector<int32_t>& starts) {
  Tensor qt = Make(be, {a.n, a.hq, a.d}, c.q), kt = Make(be, {a.n, a.hkv, a.d}, c.k);
  Tensor vt = Make(be, {a.n, a.hkv, a.d}, c.v), rt = Make(be, {a.n, a.hq, a.d}, c.r);
  Tensor ot = Zeros(be, {a.n, a.hq, a.d}), lt = Zeros(be, {a.n, a.hq});
  Tensor dqt = Make(be, {a.n, a.hq, a.d}, dq0);
  Tensor dkt = Zeros(be, {a.n, a.hkv, a.d}), dvt = Zeros(be, {a.n, a.hkv, a.d});
  REQUIRE(be.AttentionForward(ot, &lt, qt, kt, vt, starts).ok());
  REQUIRE(be.AttentionBackward(dqt, dkt, dvt, rt, qt, kt, vt, ot, lt, starts).ok());
  return {{"out", Get(be, ot)}, {"lse", Get(be, lt)}, {"dq", Get(be, dqt)},
          {"dk", Get(be, dkt)}, {"dv", Get(be, dvt)}};
}

TEST_CASE("Attention forward and backward over packed sequences with GQA") {
  Rng rng(7);
  const std::vector<int32_t> starts = {0, 3, 4, 9};  // lengths 3, 1, 5
  const AttnDims a{9, 4, 2, 6};
  const AttnCase c = MakeAttnCase(rng, a, starts);
  const Vec &q = c.q, &k = c.k, &v = c.v, &r = c.r, &out = c.out, &dq = c.dq, &dk = c.dk,
            &dv = c.dv;
  CheckFiniteDiff([&](const Vec& x) { return DotD(r, RefAttention(a, x, k, v, starts)); }, q,
                  dq, "attention dq");
  CheckFiniteDiff([&](const Vec& x) { return DotD(r, RefAttention(a, q, x, v, starts)); }, k,
                  dk, "attention dk");
  CheckFiniteDiff([&](const Vec& x) { return DotD(r, RefAttention(a, q, k, x, starts)); }, v,
                  dv, "attention dv");
  // Row 3 is a sequence of one: it sees only its own value.
  for (int64_t h = 0; h < a.hq; ++h)
    for (int64_t c = 0; c < a.d; ++c)
      CHECK(std::fabs(out[(3 * a.hq + h) * a.d + c] - v[(3 * a.hkv + h / 2) * a.d + c]) < 1e-12);

  const Vec dq0 = AsF32(rng.Values(q.size()));
  // Softmax over <= 5 keys and dot products of 6 terms in f32: 2e-5.
  CheckAllBackends([&](Backend& be) { return RunAttention(be, a, c, dq0, starts); },
                   {{"out", out}, {"lse", c.lse}, {"dq", Plus(dq0, dq)}, {"dk", dk}, {"dv", dv}},
                   2e-5, 2e-5);
}

TEST_CASE("Attention over sequences longer than one block of rows") {
  // The CPU backend works in blocks of 64 query rows: lengths 150 (three
  // blocks, the last partial), 64 (exactly one) and 7, packed.
  Rng rng(11);
  const std::vector<int32_t> starts = {0, 150, 214, 221};
  const AttnDims a{221, 4, 2, 8};
  const AttnCase c = MakeAttnCase(rng, a, starts);
  // Sums over up to 150 keys in f32 (dk and dv gather up to 150 rows x 2 heads).
  CheckAllBackends(
      [&](Backend& be) { return RunAttention(be, a, c, Vec(c.q.size(), 0.0), starts); },
      {{"out", c.out}, {"lse", c.lse}, {"dq", c.dq}, {"dk", c.dk}, {"dv", c.dv}}, 1e-4, 1e-4);
}

// A [2, cache_len] KV cache holding k and v of a's n rows at (slots, pos),
// and the rows' queries.
struct CachedRows {
  Tensor kc, vc, q;
};
CachedRows CacheRows(Backend& be, const AttnDims& a, int64_t cache_len, const Vec& q,
                     const Vec& k, const Vec& v, const std::vector<int32_t>& slots,
                     const std::vector<int32_t>& pos) {
  CachedRows c{Zeros(be, {2, cache_len, a.hkv, a.d}), Zeros(be, {2, cache_len, a.hkv, a.d}),
               Make(be, {a.n, a.hq, a.d}, q)};
  Tensor kt = Make(be, {a.n, a.hkv, a.d}, k), vt = Make(be, {a.n, a.hkv, a.d}, v);
  REQUIRE(be.KvCacheWrite(c.kc, kt, slots, pos).ok());
  REQUIRE(be.KvCacheWrite(c.vc, vt, slots, pos).ok());
  return c;
}

TEST_CASE("Attention decode over a KV cache equals prefill attention") {
  Rng rng(8);
  // Two sequences (lengths 4 and 6) in cache slots 1 and 0 of a [2, 8] cache.
  const std::vector<int32_t> starts = {0, 4, 10};
  const AttnDims a{10, 6, 3, 4};
  const Vec q = AsF32(rng.Values(a.n * a.hq * a.d, -2, 2));
  const Vec k = AsF32(rng.Values(a.n * a.hkv * a.d, -2, 2));
  const Vec v = AsF32(rng.Values(a.n * a.hkv * a.d));
  std::vector<int32_t> slots, pos;
  for (int32_t i = 0; i < 10; ++i) {
    slots.push_back(i < 4 ? 1 : 0);
    pos.push_back(i < 4 ? i : i - 4);
  }
  const Vec want = RefAttention(a, q, k, v, starts);
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        auto [kc, vc, qt] = CacheRows(be, a, 8, q, k, v, slots, pos);
        Tensor ot = Zeros(be, {a.n, a.hq, a.d});
        // All rows at once (prefill against the cache) ...
        REQUIRE(be.AttentionDecode(ot, qt, kc, vc, slots, pos).ok());
        // ... and the last token of each sequence alone (decode).
        Tensor q1 = Zeros(be, {2, a.hq, a.d}), o1 = Zeros(be, {2, a.hq, a.d});
        const std::vector<int32_t> last = {3, 9};
        REQUIRE(be.EmbeddingForward(q1.Reshaped({2, a.hq * a.d}),
                                    qt.Reshaped({a.n, a.hq * a.d}), last)
                    .ok());
        const std::vector<int32_t> s1 = {1, 0}, p1 = {3, 5};
        REQUIRE(be.AttentionDecode(o1, q1, kc, vc, s1, p1).ok());
        return {{"all_rows", Get(be, ot)}, {"decode", Get(be, o1)}};
      },
      {{"all_rows", want},
       {"decode",
        [&] {
          const int64_t row = a.hq * a.d;
          Vec d(want.begin() + 3 * row, want.begin() + 4 * row);
          d.insert(d.end(), want.begin() + 9 * row, want.end());
          return d;
        }()}},
      2e-5, 2e-5);
}

TEST_CASE("Attention decode at head sizes 64 and 128 (the CPU's register kernels)") {
  // The CPU keeps q and the output of a 64- or 128-wide head in registers
  // and scores four keys at a time: 37 keys (nine blocks of four and one
  // left over) and 3, grouped query heads (4 over 2), every row decoded
  // against the cache.
  for (int64_t d : {64, 128}) {
    INFO("head size " << d);
    Rng rng(20 + d);
    const std::vector<int32_t> starts = {0, 37, 40};
    const AttnDims a{40, 4, 2, d};
    const Vec q = AsF32(rng.Values(a.n * a.hq * a.d, -0.5, 0.5));
    const Vec k = AsF32(rng.Values(a.n * a.hkv * a.d, -0.5, 0.5));
    const Vec v = AsF32(rng.Values(a.n * a.hkv * a.d));
    std::vector<int32_t> slots, pos;
    for (int32_t i = 0; i < a.n; ++i) {
      slots.push_back(i < 37 ? 0 : 1);
      pos.push_back(i < 37 ? i : i - 37);
    }
    const Vec want = RefAttention(a, q, k, v, starts);
    // Dot products of 128 terms and sums over up to 37 keys in f32.
    CheckAllBackends(
        [&](Backend& be) -> Outputs {
          auto [kc, vc, qt] = CacheRows(be, a, 40, q, k, v, slots, pos);
          Tensor ot = Zeros(be, {a.n, a.hq, a.d});
          REQUIRE(be.AttentionDecode(ot, qt, kc, vc, slots, pos).ok());
          return {{"out", Get(be, ot)}};
        },
        {{"out", want}}, 1e-5, 1e-5);
  }
}

// ---- tests: SwiGLU ------------------------------------------------------------------------

TEST_CASE("SwiGlu forward and backward") {
  Rng rng(9);
  const int64_t n = 64;
  const Vec g = AsF32(rng.Values(n, -6, 6)), u = AsF32(rng.Values(n, -2, 2));
  const Vec r = AsF32(rng.Values(n));
  auto fwd = [&](const Vec& gg, const Vec& uu) {
    Vec o(n);
    for (int64_t i = 0; i < n; ++i) o[i] = gg[i] * Sigmoid(gg[i]) * uu[i];
    return o;
  };
  Vec dg(n), du(n);
  for (int64_t i = 0; i < n; ++i) {
    const double s = Sigmoid(g[i]);
    dg[i] = r[i] * u[i] * s * (1 + g[i] * (1 - s));
    du[i] = r[i] * g[i] * s;
  }
  CheckFiniteDiff([&](const Vec& x) { return DotD(r, fwd(x, u)); }, g, dg, "swiglu dgate");
  CheckFiniteDiff([&](const Vec& x) { return DotD(r, fwd(g, x)); }, u, du, "swiglu dup");
  const Vec dg0 = AsF32(rng.Values(n));
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor gt = Make(be, {4, 16}, g), ut = Make(be, {4, 16}, u), rt = Make(be, {4, 16}, r);
        Tensor ot = Zeros(be, {4, 16}), dgt = Make(be, {4, 16}, dg0), dut = Zeros(be, {4, 16});
        REQUIRE(be.SwiGluForward(ot, gt, ut).ok());
        REQUIRE(be.SwiGluBackward(dgt, dut, rt, gt, ut).ok());
        return {{"out", Get(be, ot)}, {"dgate", Get(be, dgt)}, {"dup", Get(be, dut)}};
      },
      {{"out", fwd(g, u)}, {"dgate", Plus(dg0, dg)}, {"dup", du}}, 1e-5, 1e-5);
}

// ---- tests: cross-entropy and logprobs ----------------------------------------------------

TEST_CASE("CrossEntropy with masked and weighted tokens, and LogProbs") {
  Rng rng(10);
  const int64_t n = 6, v = 50;
  const Vec x = AsF32(rng.Values(n * v, -4, 4));
  const std::vector<int32_t> t = {3, 49, -1, 0, 17, 17};
  const std::vector<float> w = {1, 1, 0, 0.5f, 2, 1};
  const Vec loss = RefCrossEntropy(x, n, v, t, w);
  double wl = 0, ws = 0;
  for (int64_t i = 0; i < n; ++i) wl += w[i] * loss[i], ws += w[i];
  const double scale = 1 / ws;
  Vec dx(n * v, 0.0);
  RefCrossEntropyBackward(dx, x, n, v, t, w, scale);
  CheckFiniteDiff(
      [&](const Vec& xx) {
        const Vec l = RefCrossEntropy(xx, n, v, t, w);
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += w[i] * l[i];
        return s * scale;
      },
      x, dx, "cross-entropy dlogits");
  std::vector<int32_t> t_all = t;
  t_all[2] = 5;
  const Vec lp_want = [&] {
    Vec l = RefCrossEntropy(x, n, v, t_all, std::vector<float>(n, 1));
    for (double& e : l) e = -e;
    return l;
  }();
  for (auto& be : Backends().all) {
    INFO(be->name());
    Tensor xt = Make(*be, {n, v}, x), lt = Zeros(*be, {n});
    auto sums = be->CrossEntropyForward(&lt, xt, t, w);
    REQUIRE(sums.ok());
    CHECK(sums->counted == 5);
    CHECK(sums->weight == Approx(ws));
    CHECK(sums->mean() == Approx(wl / ws).epsilon(1e-6));
  }
  // Sums over 50 exponentials in f32: 1e-5.
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor xt = Make(be, {n, v}, x), lt = Zeros(be, {n}), dxt = Zeros(be, {n, v});
        Tensor lpt = Zeros(be, {n});
        REQUIRE(be.CrossEntropyForward(&lt, xt, t, w).ok());
        REQUIRE(be.CrossEntropyBackward(dxt, xt, t, w, static_cast<float>(scale)).ok());
        REQUIRE(be.LogProbs(lpt, xt, t_all).ok());
        return {{"losses", Get(be, lt)}, {"dlogits", Get(be, dxt)}, {"logprobs", Get(be, lpt)}};
      },
      {{"losses", loss}, {"dlogits", dx}, {"logprobs", lp_want}}, 1e-5, 1e-5);
}

// ---- tests: optimizer and elementwise -----------------------------------------------------

TEST_CASE("AdamW matches a hand-computed step") {
  // p = 1, g = 0.5, m = v = 0, lr 0.1, β1 0.9, β2 0.999, eps 1e-8, wd 0.01, t = 1:
  // m = 0.05, v = 0.00025, m̂ = 0.5, v̂ = 0.25, update = 0.5/(0.5 + 1e-8)
  // = 0.99999998, p = 1 − 0.1·(0.99999998 + 0.01) = 0.899000002.
  AdamWConfig cfg{0.1f, 0.9f, 0.999f, 1e-8f, 0.01f, 1, 1.0f};
  for (auto& be : Backends().all) {
    INFO(be->name());
    Tensor p = Make(*be, {1}, {1.0}), g = Make(*be, {1}, {0.5});
    Tensor m = Zeros(*be, {1}), v = Zeros(*be, {1});
    REQUIRE(be->AdamWStep(p, g, m, v, cfg).ok());
    CHECK(Get(*be, p)[0] == Approx(0.899000002).epsilon(1e-7));
    // m and v carry the f32 rounding of 1 − β (2.4e-7 and 1.3e-5 relative).
    CHECK(Get(*be, m)[0] == Approx(0.05).epsilon(1e-6));
    CHECK(Get(*be, v)[0] == Approx(0.00025).epsilon(2e-5));
  }
}

TEST_CASE("AdamW over three steps with grad_scale matches the formula in double") {
  Rng rng(11);
  const int64_t n = 1000;
  const Vec p0 = AsF32(rng.Values(n)), m0 = AsF32(rng.Values(n, -0.1, 0.1));
  const Vec v0 = AsF32(rng.Values(n, 0, 0.01));
  const std::vector<Vec> grads = {AsF32(rng.Values(n)), AsF32(rng.Values(n)),
                                  AsF32(rng.Values(n))};
  AdamWConfig cfg{3e-3f, 0.9f, 0.95f, 1e-6f, 0.1f, 5, 0.5f};
  Vec p = p0, m = m0, v = v0;
  for (int s = 0; s < 3; ++s) {
    const double t = cfg.step + s;
    for (int64_t i = 0; i < n; ++i) {
      const double g = double{cfg.grad_scale} * grads[s][i];
      m[i] = double{cfg.beta1} * m[i] + (1 - double{cfg.beta1}) * g;
      v[i] = double{cfg.beta2} * v[i] + (1 - double{cfg.beta2}) * g * g;
      const double mh = m[i] / (1 - std::pow(double{cfg.beta1}, t));
      const double vh = v[i] / (1 - std::pow(double{cfg.beta2}, t));
      p[i] -= double{cfg.lr} * (mh / (std::sqrt(vh) + double{cfg.eps}) +
                               double{cfg.weight_decay} * p[i]);
    }
  }
  // Three f32 steps of size <= lr·(1 + |update|): 1e-6 absolute on p.
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor pt = Make(be, {n}, p0), mt = Make(be, {n}, m0), vt = Make(be, {n}, v0);
        AdamWConfig c = cfg;
        for (int s = 0; s < 3; ++s, ++c.step) {
          Tensor gt = Make(be, {n}, grads[s]);
          REQUIRE(be.AdamWStep(pt, gt, mt, vt, c).ok());
        }
        return {{"p", Get(be, pt)}, {"m", Get(be, mt)}, {"v", Get(be, vt)}};
      },
      {{"p", p}, {"m", m}, {"v", v}}, 1e-6, 1e-5);
}

TEST_CASE("Elementwise ops, SumSquares and converting Copy") {
  Rng rng(12);
  const int64_t n = 100003;  // not a multiple of any chunk size
  const Vec a = AsF32(rng.Values(n)), b = AsF32(rng.Values(n));
  Vec add(n), axpy(n), scaled(n);
  double ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    add[i] = a[i] + b[i];
    axpy[i] = a[i] + 0.25 * b[i];
    scaled[i] = a[i] * -3.0;
    ss += a[i] * a[i];
  }
  for (auto& be : Backends().all) {
    INFO(be->name());
    Tensor at = Make(*be, {n}, a);
    auto sum = be->SumSquares(at);
    REQUIRE(sum.ok());
    CHECK(*sum == Approx(ss).epsilon(1e-6));
  }
  CheckAllBackends(
      [&](Backend& be) -> Outputs {
        Tensor at = Make(be, {n}, a), bt = Make(be, {n}, b), o = Zeros(be, {n});
        REQUIRE(be.Add(o, at, bt).ok());
        Tensor y = Make(be, {n}, a);
        REQUIRE(be.Axpy(y, 0.25f, bt).ok());
        Tensor s = Make(be, {n}, a);
        REQUIRE(be.Scale(s, -3.0f).ok());
        Tensor f = Zeros(be, {n});
        REQUIRE(be.Fill(f, 2.5f).ok());
        auto half = be.Alloc({n}, StorageType::kBF16);
        REQUIRE(half.ok());
        Tensor back = Zeros(be, {n});
        REQUIRE(be.Copy(*half, at).ok());
        REQUIRE(be.Copy(back, *half).ok());
        return {{"add", Get(be, o)}, {"axpy", Get(be, y)}, {"scale", Get(be, s)},
                {"fill", Get(be, f)}, {"copy_bf16", Get(be, back)}};
      },
      {{"add", add}, {"axpy", axpy}, {"scale", scaled}, {"fill", Vec(n, 2.5)},
       {"copy_bf16", Stored(a, StorageType::kBF16)}},
      1e-6, 1e-6);
}

// ---- tests: 16-bit storage ---------------------------------------------------------------

TEST_CASE("F16 and BF16 conversions round trip every 16-bit pattern") {
  for (uint32_t h = 0; h < 65536; ++h) {
    const auto bits = static_cast<uint16_t>(h);
    const float f16 = F16ToF32(bits), bf16 = BF16ToF32(bits);
    if (std::isnan(f16)) {
      CHECK(std::isnan(F16ToF32(F32ToF16(f16))));
    } else if (F32ToF16(f16) != bits) {
      FAIL("F16 " << h << " does not round trip");
    }
    if (std::isnan(bf16)) {
      CHECK(std::isnan(BF16ToF32(F32ToBF16(bf16))));
    } else if (F32ToBF16(bf16) != bits) {
      FAIL("BF16 " << h << " does not round trip");
    }
  }
}

TEST_CASE("F16 and BF16 rounding: nearest even, overflow, subnormals") {
  CHECK(F16ToF32(F32ToF16(1.0f + 0x1p-11f)) == 1.0f);                 // tie -> even
  CHECK(F16ToF32(F32ToF16(1.0f + 3 * 0x1p-11f)) == 1.0f + 0x1p-9f);   // tie -> even
  CHECK(F16ToF32(F32ToF16(65519.0f)) == 65504.0f);
  CHECK(std::isinf(F16ToF32(F32ToF16(65520.0f))));
  CHECK(F16ToF32(F32ToF16(0x1p-24f)) == 0x1p-24f);  // smallest subnormal
  CHECK(F16ToF32(F32ToF16(0x1p-26f)) == 0.0f);
  CHECK(BF16ToF32(F32ToBF16(1.0f + 0x1p-8f)) == 1.0f);                // tie -> even
  CHECK(BF16ToF32(F32ToBF16(1.0f + 3 * 0x1p-8f)) == 1.0f + 0x1p-6f);
  CHECK(std::isinf(BF16ToF32(F32ToBF16(std::numeric_limits<float>::infinity()))));
  CHECK(std::signbit(F16ToF32(F32ToF16(-0.0f))));
}

TEST_CASE("Upload and Download through 16-bit storage stay within half an ulp") {
  Rng rng(13);
  const int64_t n = 4096;
  Vec x = AsF32(rng.Values(n, -1000, 1000));
  for (auto& be : Backends().all)
    for (auto [type, rel] : {std::pair{StorageType::kF16, 0x1p-11},
                             {StorageType::kBF16, 0x1p-8}}) {
      INFO(be->name() << " " << StorageTypeName(type));
      Tensor t = Make(*be, {n}, x, type);
      CHECK(t.bytes() == static_cast<size_t>(n) * 2);
      const Vec back = Get(*be, t);
      ExpectClose(back, x, 1e-30, rel, "round trip");
      CHECK(back == Stored(x, type));  // and exactly the documented rounding
      // Raw bytes pass through unchanged.
      std::vector<std::byte> raw(t.bytes());
      REQUIRE(be->DownloadBytes(t, raw).ok());
      auto t2 = be->Alloc({n}, type);
      REQUIRE(t2.ok());
      REQUIRE(be->UploadBytes(*t2, raw).ok());
      CHECK(Get(*be, *t2) == back);
    }
}

// ---- tests: bad calls -------------------------------------------------------------------

TEST_CASE("Bad arguments are InvalidArgument statuses that name the op") {
  for (auto& be : Backends().all) {
    INFO(be->name());
    CHECK(be->Alloc({2, 0}, StorageType::kF32).status().code() == StatusCode::kInvalidArgument);
    CHECK(be->Alloc({-1}, StorageType::kF32).status().code() == StatusCode::kInvalidArgument);
    CHECK(be->Alloc({1 << 30, 1 << 30, 1 << 30}, StorageType::kF32).status().code() ==
          StatusCode::kInvalidArgument);
    Tensor a = Zeros(*be, {2, 3}), b = Zeros(*be, {4, 3}), c = Zeros(*be, {2, 5});
    Status s = be->MatMulForward(c, a, b);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("Gemm") != std::string::npos);
    CHECK(be->Gemm(a, a, false, Zeros(*be, {3, 3}), false, 1, 0).code() ==
          StatusCode::kInvalidArgument);  // c aliases a
    CHECK(be->Upload(a, std::vector<float>(5)).code() == StatusCode::kInvalidArgument);
    const std::vector<int32_t> bad_ids = {0, 4};
    s = be->EmbeddingForward(Zeros(*be, {2, 3}), b, bad_ids);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK(s.message().find("ids[1]") != std::string::npos);
    Tensor q = Zeros(*be, {4, 2, 2}), kv = Zeros(*be, {4, 1, 2}), o = Zeros(*be, {4, 2, 2});
    for (const std::vector<int32_t>& st :
         {std::vector<int32_t>{0, 3}, {1, 4}, {0, 3, 2, 4}, {0}}) {
      CHECK(be->AttentionForward(o, nullptr, q, kv, kv, st).code() ==
            StatusCode::kInvalidArgument);
    }
    CHECK(be->AttentionForward(o, nullptr, q, kv, kv, std::vector<int32_t>{0, 4}).ok());
    Tensor odd = Zeros(*be, {1, 1, 3}), f = Zeros(*be, {1});
    CHECK(be->RopeForward(odd, odd, f, std::vector<int32_t>{0}).code() ==
          StatusCode::kInvalidArgument);
    Tensor logits = Zeros(*be, {2, 4});
    CHECK(be->CrossEntropyForward(nullptr, logits, std::vector<int32_t>{0, 4},
                                  std::vector<float>{1, 1})
              .status()
              .code() == StatusCode::kInvalidArgument);
    CHECK(be->CrossEntropyForward(nullptr, logits, std::vector<int32_t>{0, 4},
                                  std::vector<float>{1, 0})
              .ok());  // masked target is not read
    CHECK(be->CrossEntropyForward(nullptr, logits, std::vector<int32_t>{0, 1},
                                  std::vector<float>{1, -1})
              .status()
              .code() == StatusCode::kInvalidArgument);
    auto half = be->Alloc({2, 3}, StorageType::kF16);
    REQUIRE(half.ok());
    CHECK(be->Add(*half, a, a).code() == StatusCode::kInvalidArgument);  // outputs are F32
    AdamWConfig cfg;
    cfg.step = 0;
    CHECK(be->AdamWStep(a, a, a, a, cfg).code() == StatusCode::kInvalidArgument);
    CHECK(be->Fill(Tensor(), 0).code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("A tensor of another backend instance is rejected") {
  auto other = CreateBackend("cpu");
  REQUIRE(other.ok());
  Tensor mine = Zeros(*Backends().cpu, {4});
  Tensor theirs = Zeros(**other, {4});
  const Status s = Backends().cpu->Add(mine, mine, theirs);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(s.message().find("another backend") != std::string::npos);
}

TEST_CASE("Allocation beyond memory is ResourceExhausted, and memory is returned") {
  BackendOptions opt;
  opt.memory_limit_bytes = 1000;
  auto be = CreateBackend("cpu", opt);
  REQUIRE(be.ok());
  {
    auto t = (*be)->Alloc({200}, StorageType::kF32);  // 800 bytes
    REQUIRE(t.ok());
    auto t2 = (*be)->Alloc({101}, StorageType::kF16);  // 202 more: over
    CHECK(t2.status().code() == StatusCode::kResourceExhausted);
    CHECK(t2.status().message().find("memory limit") != std::string::npos);
    CHECK((*be)->Alloc({100}, StorageType::kF16).ok());  // exactly the limit
  }
  CHECK((*be)->Alloc({250}, StorageType::kF32).ok());  // freed with the handle
  // No limit: a request no machine can satisfy fails as a status.
  auto huge = Backends().cpu->Alloc({int64_t{1} << 50}, StorageType::kF32);
  CHECK(huge.status().code() == StatusCode::kResourceExhausted);
}

TEST_CASE("Registry finds the CPU by name and by score") {
  const auto names = RegisteredBackendNames();
  CHECK(std::find(names.begin(), names.end(), "cpu") != names.end());
  auto missing = CreateBackend("tpu");
  CHECK(missing.status().code() == StatusCode::kNotFound);
  CHECK(missing.status().message().find("cpu") != std::string::npos);
  auto best = CreateBestBackend();
  REQUIRE(best.ok());
  CHECK(!(*best)->name().empty());
  BackendOptions bad;
  bad.cpu_threads = -1;
  CHECK(CreateBackend("cpu", bad).status().code() == StatusCode::kInvalidArgument);
  BackendOptions one;
  one.cpu_threads = 1;
  auto single = CreateBackend("cpu", one);
  REQUIRE(single.ok());
  CHECK((*single)->info().threads == 1);
  CHECK((*single)->info().memory_bytes > 0);
  CHECK(!(*single)->info().description.empty());
}

TEST_CASE("CPU results do not depend on the thread count") {
  Rng rng(14);
  const AttnDims a{40, 4, 2, 8};
  const std::vector<int32_t> starts = {0, 17, 40};
  const Vec q = rng.Values(a.n * a.hq * a.d), k = rng.Values(a.n * a.hkv * a.d);
  const Vec v = rng.Values(a.n * a.hkv * a.d);
  std::vector<Vec> results;
  for (int threads : {1, 3}) {
    BackendOptions opt;
    opt.cpu_threads = threads;
    auto be = CreateBackend("cpu", opt);
    REQUIRE(be.ok());
    Backend& b = **be;
    Tensor qt = Make(b, {a.n, a.hq, a.d}, q), kt = Make(b, {a.n, a.hkv, a.d}, k);
    Tensor vt = Make(b, {a.n, a.hkv, a.d}, v), ot = Zeros(b, {a.n, a.hq, a.d});
    Tensor lt = Zeros(b, {a.n, a.hq});
    Tensor dq = Zeros(b, {a.n, a.hq, a.d}), dk = Zeros(b, {a.n, a.hkv, a.d});
    Tensor dv = Zeros(b, {a.n, a.hkv, a.d});
    REQUIRE(b.AttentionForward(ot, &lt, qt, kt, vt, starts).ok());
    REQUIRE(b.AttentionBackward(dq, dk, dv, ot, qt, kt, vt, ot, lt, starts).ok());
    Vec all = Get(b, ot);
    for (const Tensor* t : {&dq, &dk, &dv}) {
      const Vec g = Get(b, *t);
      all.insert(all.end(), g.begin(), g.end());
    }
    results.push_back(all);
  }
  CHECK(results[0] == results[1]);
}

}  // namespace
}  // namespace pcfarm
