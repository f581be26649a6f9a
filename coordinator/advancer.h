// Advancer: plans open-ended jobs' next rounds off the event loop.
//
// A finetune round's Advance decodes every shard's result, aggregates them
// and takes an optimizer step: milliseconds for LoRA on a small model, but
// seconds to minutes for `--method full` on a large one, during which an
// event loop that planned it inline would answer no worker and no client.
// The loop hands each ready job's Advance to this object's one thread
// (Submit) and goes on; when one is done, notify_fd() (an eventfd the
// loop's zmq_poll waits on) becomes readable, and the loop takes the
// answers (TakeDone) and applies them with Store::AdvanceJob inside a turn
// of its own. Store::AdvanceJob refuses an answer planned from a view that
// changed meanwhile (the job's shards, or the accepted results it read),
// so a late answer changes nothing and the job is planned again.
//
// One thread: jobs are planned one at a time, in the order submitted (two
// jobs' Advances would compete for the same cores anyway). A job is in
// flight from Submit until its answer is taken; Submit of a job in flight
// is refused, so the loop's tick cannot queue the same work twice.
//
// Thread-safety: every method may be called from any thread; the tasks run
// on the internal thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

#include "base/status.h"
#include "coordinator/store.h"

namespace pcfarm {

class Advancer {
 public:
  using Task = std::function<Result<JobAdvance>()>;
  struct Done {
    int64_t job_id = 0;
    uint64_t tag = 0;  // what Submit was given
    Result<JobAdvance> advance = Internal("not run");
    int64_t ms = 0;    // how long the task ran
  };

  static Result<std::unique_ptr<Advancer>> Start();
  // Finishes the task running (not the queued ones), then stops.
  ~Advancer();
  Advancer(const Advancer&) = delete;
  Advancer& operator=(const Advancer&) = delete;

  // Queues `task` for `job_id`; false (and nothing queued) when that job is
  // in flight. `tag` comes back with the answer (the server's turn count
  // of undone turns, to drop answers read from a turn that was undone).
  bool Submit(int64_t job_id, uint64_t tag, Task task);
  bool InFlight(int64_t job_id) const;
  // Answers done since the last call, in the order they finished; their
  // jobs are no longer in flight.
  std::vector<Done> TakeDone();
  // Readable while answers wait to be taken (after Drain, until the next).
  int notify_fd() const { return event_fd_; }
  void Drain();

 private:
  explicit Advancer(int event_fd);
  void Loop();

  int event_fd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  struct Queued {
    int64_t job_id;
    uint64_t tag;
    Task task;
  };
  std::deque<Queued> queue_;   // guarded by mu_
  std::vector<Done> done_;     // guarded by mu_
  std::set<int64_t> in_flight_;  // guarded by mu_: queued, running or done
  bool stop_ = false;          // guarded by mu_
  std::thread thread_;
};

}  // namespace pcfarm
