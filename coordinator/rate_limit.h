// KeyedRateLimit: lets at most `per_window` events per key through in each
// window of `window_ms`, and counts the ones it held back so that the next
// event let through can say how many were left out. The daemon uses it for
// what one peer can make it write (connect and disconnect events, log lines
// about unenrolled keys), so that no peer can grow the database or the log
// faster than the limit.
//
// Memory: at most `max_keys` keys are remembered; past that, keys whose
// window has ended are forgotten, and if all are live the oldest windows go.
//
// Thread-safety: none; the event loop owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <unordered_map>

namespace pcfarm {

class KeyedRateLimit {
 public:
  // REQUIRES: per_window >= 1, window_ms >= 1, max_keys >= 1.
  KeyedRateLimit(int per_window, int64_t window_ms, size_t max_keys = 65536);

  // -1 when the event is held back; otherwise how many events of `key` were
  // held back since the last one let through (0 usually).
  int64_t Allow(const std::string& key, int64_t now_ms);

  size_t keys() const { return windows_.size(); }

 private:
  struct Window {
    int64_t start_ms = 0;
    int count = 0;
    int64_t held_back = 0;
  };
  void Shrink(int64_t now_ms);

  int per_window_;
  int64_t window_ms_;
  size_t max_keys_;
  std::unordered_map<std::string, Window> windows_;
};

}  // namespace pcfarm
