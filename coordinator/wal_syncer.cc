#include "coordinator/wal_syncer.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace pcfarm {

Result<std::unique_ptr<WalSyncer>> WalSyncer::Start(SyncFn sync) {
  int fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd < 0) return IoError(std::string("eventfd: ") + std::strerror(errno));
  return std::unique_ptr<WalSyncer>(new WalSyncer(std::move(sync), fd));
}

WalSyncer::WalSyncer(SyncFn sync, int event_fd)
    : sync_(std::move(sync)), event_fd_(event_fd) {
  thread_ = std::thread([this] { Loop(); });
}

WalSyncer::~WalSyncer() {
  {
    std::lock_guard l(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  ::close(event_fd_);
}

void WalSyncer::Request(uint64_t epoch) {
  {
    std::lock_guard l(mu_);
    if (epoch <= requested_) return;
    requested_ = epoch;
  }
  cv_.notify_all();
}

uint64_t WalSyncer::synced() const {
  std::lock_guard l(mu_);
  return synced_;
}

Status WalSyncer::WaitFor(uint64_t epoch) {
  Request(epoch);
  std::unique_lock l(mu_);
  cv_.wait(l, [&] { return synced_ >= epoch || !error_.ok() || stop_; });
  if (!error_.ok()) return error_;
  if (synced_ < epoch) return Cancelled("the syncer is stopping");
  return Status::Ok();
}

void WalSyncer::Drain() {
  uint64_t n;
  while (::read(event_fd_, &n, sizeof n) == sizeof n) {
  }
}

Status WalSyncer::error() const {
  std::lock_guard l(mu_);
  return error_;
}

uint64_t WalSyncer::syncs() const {
  std::lock_guard l(mu_);
  return syncs_;
}

void WalSyncer::Loop() {
  std::unique_lock l(mu_);
  while (true) {
    cv_.wait(l, [&] { return stop_ || requested_ > synced_; });
    if (stop_) return;
    uint64_t target = requested_;
    l.unlock();
    Status st = sync_();
    l.lock();
    ++syncs_;
    if (!st.ok()) {
      error_ = st;
    } else {
      synced_ = target;
    }
    uint64_t one = 1;
    // A full counter (never in practice) still leaves the fd readable.
    [[maybe_unused]] ssize_t n = ::write(event_fd_, &one, sizeof one);
    cv_.notify_all();
    if (!st.ok()) return;
  }
}

}  // namespace pcfarm
