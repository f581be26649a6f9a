#include "tasks/engine/sampling.h"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <numeric>
#include <vector>

namespace pcfarm {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

double CounterUniform(uint64_t seed, uint64_t counter) {
  return double(SplitMix64(seed + SplitMix64(counter)) >> 11) * 0x1.0p-53;
}

double LogSoftmaxAt(std::span<const float> logits, int32_t id) {
  assert(id >= 0 && size_t(id) < logits.size());
  double mx = *std::max_element(logits.begin(), logits.end());
  double sum = 0;
  for (float l : logits) sum += std::exp(double(l) - mx);
  return double(logits[id]) - mx - std::log(sum);
}

int32_t SampleToken(std::span<const float> logits, const SamplingConfig& config, double u) {
  assert(!logits.empty());
  const int32_t n = int32_t(logits.size());
  if (config.temperature <= 0) {
    return int32_t(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  // Candidates by decreasing logit, ties by lower id.
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  auto by_logit = [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  };
  int32_t keep = n;
  if (config.top_k > 0 && config.top_k < n) {
    keep = int32_t(config.top_k);
    std::partial_sort(order.begin(), order.begin() + keep, order.end(), by_logit);
  } else {
    std::sort(order.begin(), order.end(), by_logit);
  }
  std::vector<double> p(keep);
  const double mx = logits[order[0]];
  double sum = 0;
  for (int32_t i = 0; i < keep; ++i) {
    p[i] = std::exp((double(logits[order[i]]) - mx) / config.temperature);
    sum += p[i];
  }
  for (double& x : p) x /= sum;
  if (config.top_p < 1.0) {
    double cum = 0;
    int32_t k = 0;
    while (k < keep) {
      cum += p[k++];
      if (cum >= config.top_p) break;
    }
    keep = k;
    sum = 0;
    for (int32_t i = 0; i < keep; ++i) sum += p[i];
    for (int32_t i = 0; i < keep; ++i) p[i] /= sum;
  }
  double cum = 0;
  for (int32_t i = 0; i < keep; ++i) {
    cum += p[i];
    if (u < cum) return order[i];
  }
  return order[keep - 1];  // u within rounding of 1
}

}  // namespace pcfarm
