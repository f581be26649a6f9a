#include "tasks/aggregate/aggregate.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numeric>
#include <string>
#include <utility>

namespace pcfarm {

namespace {

// The contributions after validation: in canonical order, each with its
// weight and the factor that clips it to clip_norm (1 when not clipped).
struct Inputs {
  std::vector<std::span<const float>> x;
  std::vector<double> weight;
  std::vector<double> scale;
  size_t dim = 0;
  double value(size_t i, size_t j) const { return scale[i] * x[i][j]; }
};

std::string Num(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v > 0 ? "inf" : "-inf";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

Status CheckOptions(const AggregateOptions& o, size_t dim) {
  if (!(std::isfinite(o.clip_norm) && o.clip_norm >= 0))
    return InvalidArgument("aggregate: clip_norm " + Num(o.clip_norm) +
                           " must be finite and >= 0");
  if (!(o.trim_fraction >= 0 && o.trim_fraction < 0.5))
    return InvalidArgument("aggregate: trim_fraction " + Num(o.trim_fraction) +
                           " must be in [0, 0.5)");
  if (!(std::isfinite(o.centered_clip_tau) && o.centered_clip_tau >= 0))
    return InvalidArgument("aggregate: centered_clip_tau " +
                           Num(o.centered_clip_tau) +
                           " must be finite and >= 0");
  if (o.centered_clip_iterations < 1)
    return InvalidArgument("aggregate: centered_clip_iterations " +
                           std::to_string(o.centered_clip_iterations) +
                           " must be >= 1");
  if (!(std::isfinite(o.centered_clip_tolerance) &&
        o.centered_clip_tolerance >= 0))
    return InvalidArgument("aggregate: centered_clip_tolerance " +
                           Num(o.centered_clip_tolerance) +
                           " must be finite and >= 0");
  const auto& start = o.centered_clip_start;
  if (!start.empty()) {
    if (start.size() != dim)
      return InvalidArgument(
          "aggregate: centered_clip_start has " + std::to_string(start.size()) +
          " values, contributions have " + std::to_string(dim));
    for (size_t j = 0; j < dim; ++j)
      if (!std::isfinite(start[j]))
        return InvalidArgument("aggregate: centered_clip_start[" +
                               std::to_string(j) + "] is " + Num(start[j]));
  }
  return Status::Ok();
}

// Lexicographic order of the bit patterns: a total order on the inputs that
// does not depend on the order they arrived in.
bool CanonicalLess(std::span<const float> a, float wa, std::span<const float> b,
                   float wb) {
  for (size_t j = 0; j < a.size(); ++j) {
    const uint32_t ua = std::bit_cast<uint32_t>(a[j]);
    const uint32_t ub = std::bit_cast<uint32_t>(b[j]);
    if (ua != ub) return ua < ub;
  }
  return std::bit_cast<uint32_t>(wa) < std::bit_cast<uint32_t>(wb);
}

Result<Inputs> Prepare(std::span<const std::span<const float>> contributions,
                       std::span<const float> weights,
                       const AggregateOptions& options) {
  const size_t n = contributions.size();
  if (n == 0) return InvalidArgument("aggregate: no contributions");
  if (weights.size() != n)
    return InvalidArgument("aggregate: " + std::to_string(weights.size()) +
                           " weights for " + std::to_string(n) +
                           " contributions");
  const size_t dim = contributions[0].size();
  for (size_t i = 0; i < n; ++i) {
    if (contributions[i].size() != dim)
      return InvalidArgument("aggregate: contribution " + std::to_string(i) +
                             " has " + std::to_string(contributions[i].size()) +
                             " values, contribution 0 has " +
                             std::to_string(dim));
    if (!(std::isfinite(weights[i]) && weights[i] > 0))
      return InvalidArgument("aggregate: weight " + std::to_string(i) + " is " +
                             Num(weights[i]) + ", must be finite and > 0");
    for (size_t j = 0; j < dim; ++j)
      if (!std::isfinite(contributions[i][j]))
        return InvalidArgument("aggregate: contribution " + std::to_string(i) +
                               " value " + std::to_string(j) + " is " +
                               Num(contributions[i][j]));
  }
  PCFARM_RETURN_IF_ERROR(CheckOptions(options, dim));

  std::vector<size_t> order(n);
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return CanonicalLess(contributions[a], weights[a], contributions[b],
                         weights[b]);
  });
  Inputs in;
  in.dim = dim;
  for (size_t i : order) {
    in.x.push_back(contributions[i]);
    in.weight.push_back(weights[i]);
    double scale = 1.0;
    if (options.clip_norm > 0) {
      double sq = 0;
      for (float v : contributions[i]) sq += double(v) * v;
      const double norm = std::sqrt(sq);
      if (norm > options.clip_norm) scale = options.clip_norm / norm;
    }
    in.scale.push_back(scale);
  }
  return in;
}

std::vector<float> ToFloat(const std::vector<double>& v) {
  return std::vector<float>(v.begin(), v.end());
}

std::vector<double> Mean(const Inputs& in) {
  double total = 0;
  for (double w : in.weight) total += w;
  std::vector<double> out(in.dim, 0.0);
  for (size_t i = 0; i < in.x.size(); ++i)
    for (size_t j = 0; j < in.dim; ++j) out[j] += in.weight[i] * in.value(i, j);
  for (double& v : out) v /= total;
  return out;
}

// Coordinate j's (value, weight) pairs, sorted by value then weight.
void SortedColumn(const Inputs& in, size_t j,
                  std::vector<std::pair<double, double>>* col) {
  col->clear();
  for (size_t i = 0; i < in.x.size(); ++i)
    col->emplace_back(in.value(i, j), in.weight[i]);
  std::sort(col->begin(), col->end());
}

std::vector<double> TrimmedMean(const Inputs& in, double trim_fraction) {
  const size_t n = in.x.size();
  const size_t k = static_cast<size_t>(std::floor(trim_fraction * double(n)));
  std::vector<double> out(in.dim);
  std::vector<std::pair<double, double>> col;
  for (size_t j = 0; j < in.dim; ++j) {
    SortedColumn(in, j, &col);
    double sum = 0, total = 0;
    for (size_t r = k; r < n - k; ++r) {
      sum += col[r].second * col[r].first;
      total += col[r].second;
    }
    out[j] = sum / total;
  }
  return out;
}

std::vector<double> Median(const Inputs& in) {
  const size_t n = in.x.size();
  std::vector<double> out(in.dim);
  std::vector<std::pair<double, double>> col;
  for (size_t j = 0; j < in.dim; ++j) {
    SortedColumn(in, j, &col);
    // The total is summed in the same order as the running sum below, so
    // the running sum reaches it exactly and the loop always returns.
    double total = 0;
    for (const auto& c : col) total += c.second;
    double cum = 0;
    for (size_t r = 0; r < n; ++r) {
      cum += col[r].second;
      if (2 * cum >= total) {
        out[j] = (2 * cum == total && r + 1 < n)
                     ? (col[r].first + col[r + 1].first) / 2
                     : col[r].first;
        break;
      }
    }
  }
  return out;
}

double DistanceTo(const Inputs& in, size_t i, const std::vector<double>& v) {
  double sq = 0;
  for (size_t j = 0; j < in.dim; ++j) {
    const double d = in.value(i, j) - v[j];
    sq += d * d;
  }
  return std::sqrt(sq);
}

std::vector<double> CenteredClip(const Inputs& in, const AggregateOptions& o) {
  const size_t n = in.x.size();
  std::vector<double> v;
  if (o.centered_clip_start.empty()) {
    v = Median(in);
  } else {
    v.assign(o.centered_clip_start.begin(), o.centered_clip_start.end());
  }
  double tau = o.centered_clip_tau;
  if (tau == 0) {
    std::vector<double> dist(n);
    for (size_t i = 0; i < n; ++i) dist[i] = DistanceTo(in, i, v);
    std::sort(dist.begin(), dist.end());
    tau = n % 2 ? dist[n / 2] : (dist[n / 2 - 1] + dist[n / 2]) / 2;
  }
  double total = 0;
  for (double w : in.weight) total += w;

  std::vector<double> factor(n), step(in.dim);
  for (int it = 0; it < o.centered_clip_iterations; ++it) {
    for (size_t i = 0; i < n; ++i) {
      const double r = DistanceTo(in, i, v);
      // r == 0 contributes nothing whatever the factor; with τ == 0 nothing
      // moves and v stays at the start.
      factor[i] = in.weight[i] * (r > tau ? tau / r : 1.0) / total;
    }
    std::fill(step.begin(), step.end(), 0.0);
    for (size_t i = 0; i < n; ++i)
      for (size_t j = 0; j < in.dim; ++j)
        step[j] += factor[i] * (in.value(i, j) - v[j]);
    double sq = 0;
    for (size_t j = 0; j < in.dim; ++j) {
      v[j] += step[j];
      sq += step[j] * step[j];
    }
    if (std::sqrt(sq) <= o.centered_clip_tolerance * tau) break;
  }
  return v;
}

}  // namespace

const char* AggregateRuleName(AggregateRule rule) {
  switch (rule) {
    case AggregateRule::kMean:
      return "mean";
    case AggregateRule::kTrimmedMean:
      return "trimmed-mean";
    case AggregateRule::kMedian:
      return "median";
    case AggregateRule::kCenteredClip:
      return "centered-clip";
  }
  return "?";
}

Result<AggregateRule> ParseAggregateRule(std::string_view name) {
  for (AggregateRule r : {AggregateRule::kMean, AggregateRule::kTrimmedMean,
                          AggregateRule::kMedian, AggregateRule::kCenteredClip})
    if (name == AggregateRuleName(r)) return r;
  return InvalidArgument("unknown aggregation rule '" + std::string(name) +
                         "' (expected mean, trimmed-mean, median or "
                         "centered-clip)");
}

Result<std::vector<float>> Aggregate(
    AggregateRule rule, std::span<const std::span<const float>> contributions,
    std::span<const float> weights, const AggregateOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(Inputs in, Prepare(contributions, weights, options));
  switch (rule) {
    case AggregateRule::kMean:
      return ToFloat(Mean(in));
    case AggregateRule::kTrimmedMean:
      return ToFloat(TrimmedMean(in, options.trim_fraction));
    case AggregateRule::kMedian:
      return ToFloat(Median(in));
    case AggregateRule::kCenteredClip:
      return ToFloat(CenteredClip(in, options));
  }
  return InvalidArgument("aggregate: unknown rule " +
                         std::to_string(static_cast<int>(rule)));
}

}  // namespace pcfarm
