// Token sampling from one row of logits: greedy, temperature, top-k, top-p,
// driven by a counter-based random stream so that a (seed, counter) pair
// always gives the same draw on every machine.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>

namespace pcfarm {

struct SamplingConfig {
  // <= 0: greedy (the highest logit; the lowest id on a tie). Otherwise the
  // logits are divided by it before the softmax.
  double temperature = 0;
  // > 0: keep only the k highest logits (ties broken by lower id).
  int64_t top_k = 0;
  // < 1: keep the smallest set of most likely tokens whose probability
  // (after temperature and top-k) sums to >= top_p; at least one token.
  double top_p = 1.0;
};

// A uniform double in [0, 1) from SplitMix64(seed + SplitMix64(counter)),
// its top 53 bits.
double CounterUniform(uint64_t seed, uint64_t counter);

// The chosen token id. `u` in [0, 1) picks from the kept tokens by their
// renormalised probabilities in order of decreasing probability (ties by
// lower id); it is not used when greedy. Computed in double.
// REQUIRES: !logits.empty(); no NaN.
int32_t SampleToken(std::span<const float> logits, const SamplingConfig& config, double u);

// log softmax(logits)[id] in double. REQUIRES: 0 <= id < logits.size().
double LogSoftmaxAt(std::span<const float> logits, int32_t id);

}  // namespace pcfarm
