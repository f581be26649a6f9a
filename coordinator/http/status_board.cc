#include "coordinator/http/status_board.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>

namespace pcfarm {

Result<std::unique_ptr<StatusBoard>> StatusBoard::Make() {
  int fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fd < 0) return Unavailable(std::string("eventfd: ") + std::strerror(errno));
  return std::unique_ptr<StatusBoard>(new StatusBoard(fd));
}

StatusBoard::~StatusBoard() { ::close(fd_); }

void StatusBoard::Publish(std::shared_ptr<const LiveView> view) {
  std::lock_guard l(mu_);
  view_ = std::move(view);
}

std::shared_ptr<const LiveView> StatusBoard::view() const {
  std::lock_guard l(mu_);
  if (view_) return view_;
  static const auto empty = std::make_shared<const LiveView>();
  return empty;
}

std::vector<StatusBoard::Pending> StatusBoard::TakeActions() {
  uint64_t n = 0;
  while (::read(fd_, &n, sizeof n) > 0) {
  }
  std::lock_guard l(mu_);
  std::vector<Pending> out;
  out.swap(queue_);
  return out;
}

StatusActionResult StatusBoard::Run(const StatusAction& action, int timeout_ms) {
  auto reply = std::make_shared<std::promise<StatusActionResult>>();
  std::future<StatusActionResult> answer = reply->get_future();
  {
    std::lock_guard l(mu_);
    queue_.push_back({action, reply});
  }
  uint64_t one = 1;
  if (::write(fd_, &one, sizeof one) < 0 && errno != EAGAIN) {
    return {Unavailable(std::string("waking the event loop: ") + std::strerror(errno)), {}};
  }
  reply.reset();  // the event loop holds the promise now
  if (answer.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    return {Unavailable("the coordinator did not answer in time"), {}};
  }
  try {
    return answer.get();
  } catch (const std::future_error&) {
    // Dropped unanswered: its turn was not committed.
    return {Unavailable("the coordinator could not commit the change; try again"), {}};
  }
}

}  // namespace pcfarm
