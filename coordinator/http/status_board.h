// StatusBoard: what the coordinator's event loop shares with the status
// page's HTTP threads (coordinator/http/status_http.h).
//
// Two directions, so that the event loop never waits for HTTP and SQLite
// writes stay on the event loop's thread:
//   - the event loop publishes a LiveView (its in-memory view of the
//     connected workers, which SQLite does not hold) a few times a second;
//     HTTP threads read the latest one;
//   - HTTP threads submit StatusActions (cancel a job, quarantine or unban
//     a worker, create an enrollment token); the event loop is woken
//     through notify_fd(), runs them inside its next turn, and answers
//     each once that turn's commit is durable.
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <cstdint>
#include <future>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <unordered_map>
#include <vector>

#include "base/status.h"

namespace pcfarm {

// The event loop's view of the farm at one moment.
struct LiveView {
  int64_t taken_ms = 0;  // wall clock
  // Connected workers (by worker id): the shards each holds now.
  std::unordered_map<int64_t, uint32_t> running;
  // Enrolled workers whose last frame spoke another protocol version.
  std::unordered_map<int64_t, uint32_t> outdated;
  // Connected workers paused by their idle policy, and why.
  std::unordered_map<int64_t, std::string> paused;
  // Results stored per second over the last 10 s or so.
  double results_per_s = 0;
};

struct StatusAction {
  enum class Kind { kCancelJob, kQuarantineWorker, kUnbanWorker, kCreateToken };
  Kind kind = Kind::kCancelJob;
  int64_t id = 0;         // job or worker id
  uint32_t uses = 1;      // kCreateToken
  int64_t ttl_ms = 0;     // kCreateToken
};

// What an action did: OK and the JSON to answer with, or why it failed.
struct StatusActionResult {
  Status status;
  nlohmann::json body;
};

class StatusBoard {
 public:
  // An action waiting for the event loop, and where its answer goes.
  struct Pending {
    StatusAction action;
    std::shared_ptr<std::promise<StatusActionResult>> reply;
  };

  // Unavailable when no eventfd can be made.
  static Result<std::unique_ptr<StatusBoard>> Make();
  ~StatusBoard();
  StatusBoard(const StatusBoard&) = delete;
  StatusBoard& operator=(const StatusBoard&) = delete;

  // ---- the event loop ----
  void Publish(std::shared_ptr<const LiveView> view);
  // Readable while actions wait (poll it with the sockets).
  int notify_fd() const { return fd_; }
  // The waiting actions, oldest first; the fd is drained.
  std::vector<Pending> TakeActions();

  // ---- HTTP threads ----
  // The latest published view (an empty one before the first).
  std::shared_ptr<const LiveView> view() const;
  // Queues `action` and waits up to `timeout_ms` for the event loop's
  // answer. Unavailable when it does not come (the coordinator is stopping,
  // or its commit failed and it promised nothing).
  StatusActionResult Run(const StatusAction& action, int timeout_ms);

 private:
  explicit StatusBoard(int fd) : fd_(fd) {}
  const int fd_;
  mutable std::mutex mu_;
  std::shared_ptr<const LiveView> view_;  // guarded by mu_
  std::vector<Pending> queue_;            // guarded by mu_
};

}  // namespace pcfarm
