// Token sampling from one row of logits: greedy, temperature, top-k, top-p,
// driven by a counter-based random stream so that a (seed, counter) pair
// always gives the same draw on every machine; and the check of a claimed
// draw against that rule on another device's logits (CheckDraw), which the
// infer_check task kind runs over a teacher-forced forward pass.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

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

// The candidates of a sampled draw (temperature > 0) before top-p: token
// ids by decreasing logit (ties by lower id), only the top_k highest when
// 0 < top_k < logits.size(), and softmax(logits[ids] / temperature) over
// them, in double (they sum to 1 up to rounding).
struct SamplingCandidates {
  std::vector<int32_t> ids;
  std::vector<double> probs;
};

// REQUIRES: config.temperature > 0; !logits.empty(); no NaN.
SamplingCandidates SortedCandidates(std::span<const float> logits, const SamplingConfig& config);

// The chosen token id. `u` in [0, 1) picks from the kept tokens by their
// renormalised probabilities in order of decreasing probability (ties by
// lower id): SortedCandidates, cut by top_p, then the first candidate
// whose cumulative probability exceeds u. `u` is not used when greedy.
// Computed in double.
// REQUIRES: !logits.empty(); no NaN.
int32_t SampleToken(std::span<const float> logits, const SamplingConfig& config, double u);

// log softmax(logits)[id], in double but for the exps, which are f32
// (SumExpShifted): within about 1e-6 of the all-double value. REQUIRES:
// 0 <= id < logits.size().
double LogSoftmaxAt(std::span<const float> logits, int32_t id);

// A claimed draw judged against the sampling rule.
struct DrawCheck {
  bool ok = false;
  // SampleToken(logits, config, u) is the claimed id itself.
  bool exact = false;
  // When !ok: what the claim contradicts, for a person.
  std::string why;
};

// Whether `id` is a token that SampleToken(other, config, u) can return for
// some logits `other` within `tolerance` of `logits`: other[i] = logits[i]
// + s + d[i] for a common shift s and |d[i]| <= tolerance / 2, so that the
// difference of any two logits differs by at most `tolerance` (another
// device's rounding, or a prefill against a decode step).
//   greedy: logits[id] >= max(logits) - tolerance.
//   sampled: `id` may be in the kept set (top-k and top-p are evaluated
//     with the tolerance: a token near the k-th logit, or whose
//     probability mass before it may be below top_p, may be kept), and u
//     lies in [lo, hi), where lo and hi bound, over all such `other`, the
//     cumulative renormalised probability of the kept tokens before `id`
//     and through `id` (1e-9 of slack each way for the rounding of sums).
// The check never refuses a draw such logits make (it is sound); the
// bounds treat the kept set and the order of near-tied tokens separately,
// so it may accept a draw that no single such `other` makes, by at most the
// probability mass of the tokens within `tolerance` of `id`'s logit.
// REQUIRES: 0 <= id < logits.size(); tolerance >= 0; no NaN.
DrawCheck CheckDraw(std::span<const float> logits, const SamplingConfig& config, double u,
                    int32_t id, double tolerance);

}  // namespace pcfarm
