// LatencyHistogram: a fixed-bucket histogram of durations in seconds, as
// Prometheus exposes them (cumulative `le` buckets, a sum and a count).
//
// Thread-safety: Observe() and the readers may run on any threads at once
// (relaxed atomics): a reader may see an observation in the count before
// the sum, never a torn value.
#pragma once

#include <atomic>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <vector>

namespace pcfarm {

class LatencyHistogram {
 public:
  // `bounds_s`: the buckets' upper bounds in seconds, increasing.
  LatencyHistogram(std::initializer_list<double> bounds_s)
      : bounds_(bounds_s), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
    for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
  }

  void Observe(double seconds) {
    size_t i = 0;
    while (i < bounds_.size() && seconds > bounds_[i]) ++i;
    counts_[i].fetch_add(1, std::memory_order_relaxed);
    sum_ns_.fetch_add(seconds > 0 ? uint64_t(seconds * 1e9) : 0, std::memory_order_relaxed);
  }

  const std::vector<double>& bounds() const { return bounds_; }
  // Observations in bucket i alone (i == bounds().size(): above the last).
  uint64_t bucket(size_t i) const { return counts_[i].load(std::memory_order_relaxed); }
  double sum_seconds() const { return double(sum_ns_.load(std::memory_order_relaxed)) / 1e9; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<uint64_t> sum_ns_{0};
};

}  // namespace pcfarm
