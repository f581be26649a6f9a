// Clock: the source of time, injected so tests can move time by hand.
//
// NowMs() is wall-clock milliseconds since the Unix epoch (stored in the
// database, compared with deadlines that cross processes). MonotonicMs() is
// for measuring intervals inside one process.
//
// Thread-safety: SystemClock is stateless; FakeClock is safe to use from
// several threads.
#pragma once

#include <atomic>
#include <cstdint>

namespace pcfarm {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowMs() const = 0;
  virtual int64_t MonotonicMs() const = 0;
};

class SystemClock final : public Clock {
 public:
  int64_t NowMs() const override;
  int64_t MonotonicMs() const override;
  // The process-wide instance.
  static SystemClock* Get();
};

// A clock that moves only when told to. Both readings move together.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(int64_t start_ms = 1'700'000'000'000) : now_ms_(start_ms) {}
  int64_t NowMs() const override { return now_ms_.load(); }
  int64_t MonotonicMs() const override { return now_ms_.load(); }
  void AdvanceMs(int64_t ms) { now_ms_ += ms; }
  void SetMs(int64_t ms) { now_ms_ = ms; }

 private:
  std::atomic<int64_t> now_ms_;
};

}  // namespace pcfarm
