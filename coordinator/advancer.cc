#include "coordinator/advancer.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace pcfarm {

Result<std::unique_ptr<Advancer>> Advancer::Start() {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return IoError(std::string("eventfd: ") + std::strerror(errno));
  return std::unique_ptr<Advancer>(new Advancer(fd));
}

Advancer::Advancer(int event_fd) : event_fd_(event_fd) {
  thread_ = std::thread([this] { Loop(); });
}

Advancer::~Advancer() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  ::close(event_fd_);
}

bool Advancer::Submit(int64_t job_id, uint64_t tag, Task task) {
  {
    std::lock_guard l(mu_);
    if (stop_ || !in_flight_.insert(job_id).second) return false;
    queue_.push_back({job_id, tag, std::move(task)});
  }
  cv_.notify_all();
  return true;
}

bool Advancer::InFlight(int64_t job_id) const {
  std::lock_guard l(mu_);
  return in_flight_.count(job_id) > 0;
}

std::vector<Advancer::Done> Advancer::TakeDone() {
  std::lock_guard l(mu_);
  std::vector<Done> out = std::move(done_);
  done_.clear();
  for (const Done& d : out) in_flight_.erase(d.job_id);
  return out;
}

void Advancer::Drain() {
  uint64_t n;
  while (::read(event_fd_, &n, sizeof n) == sizeof n) {
  }
}

void Advancer::Loop() {
  std::unique_lock l(mu_);
  for (;;) {
    cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Queued q = std::move(queue_.front());
    queue_.pop_front();
    l.unlock();
    const auto t0 = std::chrono::steady_clock::now();
    Done d{q.job_id, q.tag, q.task(), 0};
    d.ms = std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now() - t0)
               .count();
    q.task = nullptr;  // what it captured goes before the answer is seen
    l.lock();
    done_.push_back(std::move(d));
    const uint64_t one = 1;
    // A full counter (2^64 - 2 unread wakes) cannot happen; a failed write
    // only delays the answer to the loop's next tick.
    if (::write(event_fd_, &one, sizeof one) < 0) {
    }
  }
}

}  // namespace pcfarm
