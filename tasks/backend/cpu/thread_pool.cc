#include <immintrin.h>

#include <algorithm>
#include <cassert>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

namespace {
uint32_t JobOf(uint64_t claim) { return static_cast<uint32_t>(claim >> 32); }
}  // namespace

ThreadPool::ThreadPool(int threads) {
  assert(threads >= 1 && threads < 0x10000);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(uint32_t job) {
  uint64_t w = claim_.load(std::memory_order_acquire);
  while (true) {
    const int next = static_cast<int>(w & 0xffff), chunks = static_cast<int>((w >> 16) & 0xffff);
    if (JobOf(w) != job || next >= chunks) return;
    if (!claim_.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel,
                                      std::memory_order_acquire))
      continue;
    (*fn_)(n_ * next / chunks, n_ * (next + 1) / chunks);
    if (unfinished_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      // The caller may be asleep: wake it under the mutex, so that the
      // wake-up cannot fall between its check and its wait.
      std::lock_guard<std::mutex> lock(mu_);
      done_cv_.notify_all();
    }
    w = claim_.load(std::memory_order_acquire);
  }
}

void ThreadPool::WorkerLoop() {
  uint32_t seen = 0;
  auto news = [&] {
    return stop_.load(std::memory_order_relaxed) ||
           JobOf(claim_.load(std::memory_order_acquire)) != seen;
  };
  while (true) {
    bool ready = false;
    for (int i = 0; i < kSpinIterations && !ready; ++i) {
      ready = news();
      if (!ready) _mm_pause();
    }
    if (!ready) {
      std::unique_lock<std::mutex> lock(mu_);
      work_cv_.wait(lock, news);
    }
    if (stop_.load()) return;
    seen = JobOf(claim_.load(std::memory_order_acquire));
    // A job whose chunks were all taken before this worker looked leaves
    // nothing to do here: RunChunks returns at once.
    RunChunks(seen);
  }
}

void ThreadPool::ParallelFor(int64_t n, int64_t grain,
                             const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int chunks =
      static_cast<int>(std::min<int64_t>(size(), std::max<int64_t>(1, n / grain)));
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  assert(unfinished_.load() == 0 && "ThreadPool::ParallelFor is not reentrant");
  fn_ = &fn;
  n_ = n;
  unfinished_.store(chunks, std::memory_order_relaxed);
  const uint32_t job = JobOf(claim_.load(std::memory_order_relaxed)) + 1;
  {
    // Under the mutex, so that a worker about to sleep sees it or is woken.
    std::lock_guard<std::mutex> lock(mu_);
    claim_.store(uint64_t{job} << 32 | uint64_t(chunks) << 16, std::memory_order_release);
  }
  work_cv_.notify_all();
  RunChunks(job);
  for (int i = 0; i < kSpinIterations; ++i) {
    if (unfinished_.load(std::memory_order_acquire) == 0) return;
    _mm_pause();
  }
  std::unique_lock<std::mutex> lock(mu_);
  done_cv_.wait(lock, [&] { return unfinished_.load(std::memory_order_acquire) == 0; });
}

}  // namespace pcfarm::cpu
