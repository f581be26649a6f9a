#include "tasks/engine/sampling.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <numeric>
#include <vector>

#include "tasks/backend/host_math.h"

namespace pcfarm {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Slack for the rounding of the sampler's sums of probabilities in double.
constexpr double kSumSlack = 1e-9;

// Bounds on another device's cumulative probabilities around the token at
// sorted position j, over every `other` CheckDraw allows. `L` holds the
// logits in decreasing order; the tokens [0, n_sure) are surely in the set
// the other device renormalises over, [0, n_maybe) maybe (j < n_maybe).
// Each token's mass on the other device is exp((L[i] + d[i]) / T) with
// |d[i]| <= tol / 2; the extremes below put every token at the end of its
// range that moves the bound furthest, and normalise by j's largest mass,
// so that nothing overflows or underflows to 0/0 at a small temperature.
struct CumBounds {
  double before_lo;   // the mass before j is at least this
  double before_hi;   // ... and at most this
  double through_hi;  // the mass before j plus j's is at most this
};

CumBounds BoundsAt(const std::vector<double>& L, int32_t j, int32_t n_sure, int32_t n_maybe,
                   double T, double tol) {
  const double lj = L[size_t(j)];
  // x: tokens surely before j, at their smallest; r: j and the tokens that
  // may come after it, at their largest but not above j. y: tokens that may
  // come before j, at their largest; z: tokens surely after j, smallest.
  double x = 0, r = 1, y = 0, z = 0;
  for (int32_t i = 0; i < n_maybe; ++i) {
    if (i == j) continue;
    const double d = L[size_t(i)] - lj;
    const bool sure = i < n_sure;
    if (d > tol) {
      if (sure) x += std::exp((d - tol) / T);
    } else {
      r += std::min(std::exp(d / T), 1.0);
    }
    if (d >= -tol) {
      y += std::exp(d / T);
    } else if (sure) {
      z += std::exp((d - tol) / T);
    }
  }
  const double e = std::exp(-tol / T);  // j's smallest mass
  CumBounds b;
  b.before_lo = 1 / (1 + r / x);  // x = 0: 0; x = inf: 1
  b.before_hi = y == 0 ? 0 : 1 / (1 + (e + z) / y);
  b.through_hi = 1 / (1 + z / (y + 1));
  return b;
}

// The first i in [0, end) with pred(i) true, for pred false then true.
template <typename Pred>
int32_t FirstTrue(int32_t end, Pred pred) {
  int32_t lo = 0, hi = end;
  while (lo < hi) {
    const int32_t mid = lo + (hi - lo) / 2;
    if (pred(mid)) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  return lo;
}

// A key whose ascending order is the sampler's candidate order: decreasing
// logit, then increasing id (-0.0 as 0.0, which compares equal to it).
uint64_t CandidateKey(float logit, int32_t id) {
  const float f = logit == 0.0f ? 0.0f : logit;
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  const uint32_t ascending = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
  return (uint64_t(~ascending) << 32) | uint32_t(id);
}

enum class Picked { kYes, kNo, kUnsure };

// Whether SampleToken(logits, config, u) returns `id`, without sorting every
// candidate (SampleToken sorts them all when top_k is off, the costliest
// part of checking a token): sums are taken in index order, not the
// sampler's sorted order, and a draw within 1e-9 of a boundary, where the
// two orders' rounding could disagree, is kUnsure. Only the head of the
// order that top_p keeps is sorted.
// REQUIRES: config.temperature > 0; top_k off (0, or >= logits.size()).
Picked PickedWithoutSort(std::span<const float> logits, const SamplingConfig& config, double u,
                         int32_t id) {
  const int32_t n = int32_t(logits.size());
  assert(config.temperature > 0 && (config.top_k <= 0 || config.top_k >= n));
  const double T = config.temperature;
  const uint64_t kid = CandidateKey(logits[id], id);
  const auto [lo_it, hi_it] = std::minmax_element(logits.begin(), logits.end());
  const double mx = *hi_it;
  double total = 0, before = 0;
  bool last = true;  // no candidate after id
  std::vector<double> w(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    w[size_t(i)] = std::exp((double(logits[i]) - mx) / T);
    total += w[size_t(i)];
    const uint64_t k = CandidateKey(logits[i], i);
    if (k < kid) before += w[size_t(i)];
    if (k > kid) last = false;
  }
  const double wid = w[size_t(id)];
  if (config.top_p < 1.0) {
    // The sampler keeps the candidates whose probability before them is
    // below top_p: id among them, and the kept mass, from the sorted head.
    const double id_before = before / total;
    if (id_before >= config.top_p + kSumSlack) return Picked::kNo;
    if (id_before > config.top_p - kSumSlack) return Picked::kUnsure;
    // The head: the logits >= lowest, a prefix of the order that holds
    // more than top_p of the mass (each try lowers it by half again).
    double lowest = mx;
    for (double drop = T; lowest >= *lo_it; drop *= 1.5) {
      lowest = mx - drop;
      double mass = 0;
      for (int32_t i = 0; i < n; ++i) mass += logits[i] >= lowest ? w[size_t(i)] : 0.0;
      if (mass / total >= config.top_p + kSumSlack) break;
    }
    std::vector<std::pair<uint64_t, double>> head;
    for (int32_t i = 0; i < n; ++i) {
      if (logits[i] >= lowest) head.emplace_back(CandidateKey(logits[i], i), w[size_t(i)]);
    }
    std::sort(head.begin(), head.end());
    double cum = 0, kept = 0;
    size_t j = 0;
    for (; j < head.size(); ++j) {
      if (cum >= config.top_p - kSumSlack && cum < config.top_p + kSumSlack) {
        return Picked::kUnsure;
      }
      if (cum >= config.top_p) break;
      cum += head[j].second / total;
      kept += head[j].second;
    }
    // Kept: head[0, j); id is one of them (its mass before is < top_p).
    total = kept;
    last = head[j - 1].first == kid;
  }
  const double lo = before / total;
  const double hi = last ? 2.0 : (before + wid) / total;
  if (u >= lo + kSumSlack && u < hi - kSumSlack) return Picked::kYes;
  if (u < lo - kSumSlack || u >= hi + kSumSlack) return Picked::kNo;
  return Picked::kUnsure;
}

std::string Format(const char* fmt, auto... args) {
  char buf[320];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

}  // namespace

double CounterUniform(uint64_t seed, uint64_t counter) {
  return double(SplitMix64(seed + SplitMix64(counter)) >> 11) * 0x1.0p-53;
}

double LogSoftmaxAt(std::span<const float> logits, int32_t id) {
  assert(id >= 0 && size_t(id) < logits.size());
  // The vectorised exp: a token's logprob once took 32,000 calls of libm's
  // double exp on the thread the generation waits for (2-4% of a Q8_0
  // decode step, the pool's other threads spinning meanwhile).
  const float mx = logits[size_t(FirstLargest(logits))];
  return double(logits[id]) - double(mx) - std::log(SumExpShifted(logits, mx));
}

SamplingCandidates SortedCandidates(std::span<const float> logits, const SamplingConfig& config) {
  assert(!logits.empty() && config.temperature > 0);
  const int32_t n = int32_t(logits.size());
  SamplingCandidates c;
  c.ids.resize(size_t(n));
  std::iota(c.ids.begin(), c.ids.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int32_t keep = n;
  if (config.top_k > 0 && config.top_k < n) {
    keep = int32_t(config.top_k);
    std::partial_sort(c.ids.begin(), c.ids.begin() + keep, c.ids.end(), by_logit);
    c.ids.resize(size_t(keep));
  } else {
    std::sort(c.ids.begin(), c.ids.end(), by_logit);
  }
  c.probs.resize(size_t(keep));
  const double mx = logits[c.ids[0]];
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) {
    c.probs[i] = std::exp((double(logits[c.ids[i]]) - mx) / config.temperature);
    sum += c.probs[i];
  }
  for (double& x : c.probs) x /= sum;
  return c;
}

int32_t SampleToken(std::span<const float> logits, const SamplingConfig& config, double u) {
  assert(!logits.empty());
  if (config.temperature <= 0) {
    return int32_t(FirstLargest(logits));
  }
  SamplingCandidates c = SortedCandidates(logits, config);
  std::vector<double>& p = c.probs;
  int32_t keep = int32_t(p.size());
  if (config.top_p < 1.0) {
    double cum = 0;
    int32_t k = 0;
    while (k < keep) {
      cum += p[k++];
      if (cum >= config.top_p) break;
    }
    keep = k;
    double sum = 0;
    for (int32_t i = 0; i < keep; ++i) sum += p[i];
    for (int32_t i = 0; i < keep; ++i) p[i] /= sum;
  }
  double cum = 0;
  for (int32_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return c.ids[i];
  }
  return c.ids[keep - 1];  // u within rounding of 1
}

DrawCheck CheckDraw(std::span<const float> logits, const SamplingConfig& config, double u,
                    int32_t id, double tolerance) {
  assert(id >= 0 && size_t(id) < logits.size() && tolerance >= 0);
  DrawCheck r;
  // Most claims are the rule's own draw: find that out without sorting
  // every candidate, which would cost more than the rest of the check. (With
  // top_k, SampleToken sorts only the k highest: cheap enough.)
  const bool sorts_all = config.top_k <= 0 || config.top_k >= int64_t(logits.size());
  const Picked fast = config.temperature > 0 && sorts_all
                          ? PickedWithoutSort(logits, config, u, id)
                          : Picked::kUnsure;
  if (fast == Picked::kYes ||
      (fast == Picked::kUnsure && SampleToken(logits, config, u) == id)) {
    r.ok = r.exact = true;
    return r;
  }
  const double tol = tolerance;
  if (config.temperature <= 0) {
    const int32_t picked = SampleToken(logits, config, u);
    const double gap = double(logits[picked]) - double(logits[id]);
    r.ok = gap <= tol;
    if (!r.ok) {
      r.why = Format("greedy picks id %d (logit %.6g); id %d's logit %.6g is %.3g below it, "
                     "beyond the tolerance of %g",
                     picked, double(logits[picked]), id, double(logits[id]), gap, tol);
    }
    return r;
  }
  const int32_t n = int32_t(logits.size());
  const double T = config.temperature;
  SamplingConfig all = config;
  all.top_k = 0;
  const SamplingCandidates sorted = SortedCandidates(logits, all);
  std::vector<double> L(static_cast<size_t>(n), 0.0);
  int32_t j = 0;
  for (int32_t i = 0; i < n; ++i) {
    L[size_t(i)] = logits[sorted.ids[i]];
    if (sorted.ids[i] == id) j = i;
  }
  auto count_above = [&](double x) {  // tokens with a logit > x
    return int32_t(std::partition_point(L.begin(), L.end(), [x](double v) { return v > x; }) -
                   L.begin());
  };
  auto count_at_least = [&](double x) {
    return int32_t(std::partition_point(L.begin(), L.end(), [x](double v) { return v >= x; }) -
                   L.begin());
  };
  // [0, sure) are surely kept on the other device, [0, maybe) maybe.
  int32_t sure = n, maybe = n;
  if (config.top_k > 0 && config.top_k < n) {
    const double kth = L[size_t(config.top_k - 1)];
    sure = count_above(kth + tol);
    maybe = count_at_least(kth - tol);
    if (j >= maybe) {
      r.why = Format("top_k %lld keeps logits within %g of the %lld-th highest (%.6g); id %d "
                     "ranks %d with logit %.6g",
                     static_cast<long long>(config.top_k), tol,
                     static_cast<long long>(config.top_k), kth, id, j + 1, L[size_t(j)]);
      return r;
    }
  }
  if (config.top_p < 1.0) {
    // Top-p keeps a candidate while the mass before it is below top_p: a
    // prefix of the order on either device. The bounds grow along the order.
    const int32_t k_sure = sure, k_maybe = maybe;
    maybe = FirstTrue(k_maybe, [&](int32_t i) {
      return BoundsAt(L, i, k_sure, k_maybe, T, tol).before_lo >= config.top_p + kSumSlack;
    });
    sure = std::min(sure, FirstTrue(k_sure, [&](int32_t i) {
                      return BoundsAt(L, i, k_sure, k_maybe, T, tol).before_hi >=
                             config.top_p - kSumSlack;
                    }));
    if (j >= maybe) {
      r.why = Format("top_p %g: at least %.6g of the probability comes before id %d (rank %d), "
                     "so it is never kept, within the tolerance of %g",
                     config.top_p, BoundsAt(L, j, k_sure, k_maybe, T, tol).before_lo, id, j + 1,
                     tol);
      return r;
    }
  }
  const CumBounds b = BoundsAt(L, j, sure, maybe, T, tol);
  const double lo = b.before_lo - kSumSlack;
  const double hi =
      b.through_hi >= 1 ? std::numeric_limits<double>::infinity() : b.through_hi + kSumSlack;
  r.ok = u >= lo && u < hi;
  if (!r.ok) {
    const int32_t picked = SampleToken(logits, config, u);
    r.why = Format("the draw u = %.9f picks id %d here; id %d is drawn only for u in "
                   "[%.9f, %.9f), within the tolerance of %g",
                   u, picked, id, b.before_lo, std::min(b.through_hi, 1.0), tol);
  }
  return r;
}

}  // namespace pcfarm
