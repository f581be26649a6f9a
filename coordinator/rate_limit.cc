#include "coordinator/rate_limit.h"

#include <algorithm>
#include <cassert>
#include <vector>

namespace pcfarm {

KeyedRateLimit::KeyedRateLimit(int per_window, int64_t window_ms,
                               size_t max_keys)
    : per_window_(per_window), window_ms_(window_ms), max_keys_(max_keys) {
  assert(per_window >= 1 && window_ms >= 1 && max_keys >= 1);
}

int64_t KeyedRateLimit::Allow(const std::string& key, int64_t now_ms) {
  auto it = windows_.find(key);
  if (it == windows_.end()) {
    if (windows_.size() >= max_keys_) Shrink(now_ms);
    it = windows_.emplace(key, Window{now_ms, 0, 0}).first;
  }
  Window& w = it->second;
  if (now_ms - w.start_ms >= window_ms_) {
    w.start_ms = now_ms;
    w.count = 0;
  }
  if (w.count >= per_window_) {
    ++w.held_back;
    return -1;
  }
  ++w.count;
  int64_t held = w.held_back;
  w.held_back = 0;
  return held;
}

void KeyedRateLimit::Shrink(int64_t now_ms) {
  for (auto it = windows_.begin(); it != windows_.end();) {
    if (now_ms - it->second.start_ms >= window_ms_ &&
        it->second.held_back == 0) {
      it = windows_.erase(it);
    } else {
      ++it;
    }
  }
  if (windows_.size() < max_keys_) return;
  // Every key is live: forget the older half.
  std::vector<int64_t> starts;
  for (const auto& [k, w] : windows_) starts.push_back(w.start_ms);
  auto mid = starts.begin() + starts.size() / 2;
  std::nth_element(starts.begin(), mid, starts.end());
  int64_t cut = *mid;
  for (auto it = windows_.begin(); it != windows_.end();) {
    it = it->second.start_ms <= cut ? windows_.erase(it) : std::next(it);
  }
}

}  // namespace pcfarm
