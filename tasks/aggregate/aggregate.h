// Robust aggregation of fine-tuning contributions (DESIGN.md §8.5, §9).
//
// Given n contributions x_1..x_n (gradients or DiLoCo pseudo-gradients, each
// d floats) and weights w_i > 0 (e.g. tokens), Aggregate() returns one vector
// of d floats under a chosen rule:
//
//   mean           Σ w_i x_i / Σ w_i.
//   trimmed-mean   per coordinate: sort the n values, drop the k smallest
//                  and the k largest with k = floor(trim_fraction · n), and
//                  take the weighted mean of the n − 2k left (trimming counts
//                  values, not weight). With the default 0.2, n ≤ 4 gives
//                  k = 0, i.e. the plain mean: too few contributors to tell an
//                  outlier from a normal spread. n = 5..9 drops one each end.
//   median         per coordinate, the WEIGHTED median: the smallest sorted
//                  value whose cumulative weight reaches half the total; when
//                  the cumulative weight equals exactly half, the mean of that
//                  value and the next. With equal weights this is the ordinary
//                  median (mean of the two middle values for even n).
//   centered-clip  CenteredClip (Karimireddy, He, Jaggi 2021, "Learning from
//                  History for Byzantine Robust Optimization"; the rule of
//                  hivemind's BTARD):
//                    v ← v + Σ w_i (x_i − v) min(1, τ / ||x_i − v||) / Σ w_i
//                  from v0 = the weighted median (or a given start, e.g. the
//                  previous round's aggregate), at most
//                  centered_clip_iterations times, stopping once an update's
//                  L2 norm is ≤ centered_clip_tolerance · τ. One contributor
//                  moves v by at most w_i τ / Σ w per iteration.
//
// Before any rule, when clip_norm > 0 each x_i is scaled down to L2 norm
// ≤ clip_norm (x_i · min(1, clip_norm / ||x_i||)).
//
// Determinism: contributions are put in a canonical order (by their bytes,
// then weight) before anything is summed, so the result is a pure function of
// the multiset {(x_i, w_i)}: permuting contributors gives a bitwise-identical
// result on the same build. Sums and norms are accumulated in double and
// rounded to float once at the end.
//
// Thread-safety: pure functions.
#pragma once

#include <span>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

enum class AggregateRule { kMean, kTrimmedMean, kMedian, kCenteredClip };

// Returns "mean", "trimmed-mean", "median" or "centered-clip".
const char* AggregateRuleName(AggregateRule rule);
// Inverse of AggregateRuleName; InvalidArgument naming the accepted names.
Result<AggregateRule> ParseAggregateRule(std::string_view name);

struct AggregateOptions {
  // Per-contribution L2 norm limit applied before the rule; 0 turns it off.
  double clip_norm = 0.0;
  // trimmed-mean: fraction of contributors dropped at EACH end per
  // coordinate, in [0, 0.5). 0.2 tolerates one bad contributor in five.
  double trim_fraction = 0.2;
  // centered-clip: clipping radius τ; 0 means "automatic": the median
  // (unweighted) of the distances ||x_i − v0||. Gradient scales change by
  // orders of magnitude over a run and between models, so a fixed τ would
  // clip either nothing or everything; while honest contributors are the
  // majority, the median distance is the scale of their own spread.
  double centered_clip_tau = 0.0;
  // centered-clip: maximum number of iterations (≥ 1). Ten is what the
  // CenteredClip paper finds enough from a good start; a median start is one.
  int centered_clip_iterations = 10;
  // centered-clip: stop once ||v_{l+1} − v_l|| ≤ tolerance · τ.
  double centered_clip_tolerance = 1e-6;
  // centered-clip: start point v0 (d floats, e.g. the previous aggregate);
  // empty means the weighted coordinate-wise median of the contributions.
  // The span must outlive the Aggregate() call.
  std::span<const float> centered_clip_start;
};

// Aggregates `contributions` (n ≥ 1 vectors of the same size d ≥ 0) with
// `weights` (n values) under `rule`.
// Returns InvalidArgument naming the problem when: there are no
// contributions; weights.size() != n; a contribution's size differs from the
// first's; a value is NaN or infinite (contribution i, index j); a weight is
// not finite and > 0; an option is out of range; centered_clip_start is
// non-empty with a size other than d or a non-finite value.
// The spans must stay valid for the duration of the call.
Result<std::vector<float>> Aggregate(
    AggregateRule rule, std::span<const std::span<const float>> contributions,
    std::span<const float> weights, const AggregateOptions& options = {});

}  // namespace pcfarm
