#include "coordinator/scheduler.h"

#include <cassert>

namespace pcfarm {

Scheduler::Scheduler(Store* store, SchedulerOptions options)
    : store_(store), options_(options) {
  assert(store_ != nullptr);
  assert(options_.scheduler_lease_ms > 0);
  assert(options_.scheduler_max_attempts >= 1);
}

Result<std::optional<Lease>> Scheduler::LeaseNext(int64_t worker_id,
                                                  const DeviceCaps& caps) {
  return store_->LeaseShard(worker_id, caps, options_.scheduler_lease_ms);
}

Result<TransitionReport> Scheduler::ExpireLeases() {
  return store_->ExpireLeases(options_.scheduler_max_attempts);
}

Result<TransitionReport> Scheduler::WorkerLost(int64_t worker_id) {
  return store_->ReleaseWorker(worker_id, options_.scheduler_max_attempts);
}

Result<TransitionReport> Scheduler::WorkerRejoined(
    int64_t worker_id, const std::vector<int64_t>& still_held) {
  return store_->ReleaseWorker(worker_id, options_.scheduler_max_attempts,
                               still_held);
}

Result<TransitionReport> Scheduler::AttemptFailed(int64_t attempt_id,
                                                  int64_t worker_id,
                                                  const std::string& error) {
  return store_->FailAttempt(attempt_id, worker_id, error,
                             options_.scheduler_max_attempts);
}

Result<RecordOutcome> Scheduler::RecordResult(int64_t attempt_id,
                                              int64_t worker_id,
                                              std::string_view body,
                                              std::string_view signature) {
  return store_->RecordResult(attempt_id, worker_id, body, signature,
                              verifier_, options_.scheduler_max_attempts,
                              summary_fold_);
}

}  // namespace pcfarm
