#include <algorithm>
#include <cassert>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

ThreadPool::ThreadPool(int threads) {
  assert(threads >= 1);
  for (int i = 1; i < threads; ++i) workers_.emplace_back([this] { WorkerLoop(); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (auto& t : workers_) t.join();
}

void ThreadPool::RunChunks(std::unique_lock<std::mutex>& lock) {
  while (next_chunk_ < chunks_) {
    const int c = next_chunk_++;
    const auto* fn = fn_;
    const int64_t begin = n_ * c / chunks_, end = n_ * (c + 1) / chunks_;
    lock.unlock();
    (*fn)(begin, end);
    lock.lock();
    if (--unfinished_ == 0) done_cv_.notify_all();
  }
}

void ThreadPool::WorkerLoop() {
  std::unique_lock<std::mutex> lock(mu_);
  uint64_t seen = generation_;
  while (true) {
    work_cv_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    RunChunks(lock);
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
  std::unique_lock<std::mutex> lock(mu_);
  assert(unfinished_ == 0 && "ThreadPool::ParallelFor is not reentrant");
  fn_ = &fn;
  n_ = n;
  chunks_ = chunks;
  next_chunk_ = 0;
  unfinished_ = chunks;
  ++generation_;
  work_cv_.notify_all();
  RunChunks(lock);
  done_cv_.wait(lock, [&] { return unfinished_ == 0; });
  fn_ = nullptr;
}

}  // namespace pcfarm::cpu
