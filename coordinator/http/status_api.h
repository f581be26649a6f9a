// StatusApi: what the status page's JSON API (/api/v1/...) and /metrics
// answer, read from a read-only Store connection (Store::OpenReadOnly), the
// event loop's published LiveView (status_board.h) and the server's
// counters (atomics).
//
// Workers and jobs are built with the event loop's own row builders
// (coordinator/admin_queries.h) and printed with the CLI's JSON builders
// (WorkerJson, JobJson), so `/api/v1/workers` equals `pcfarm workers
// --json` and `/api/v1/jobs/ID` holds every field of `pcfarm status ID
// --json`. docs/status-page.md lists the fields and metric names.
//
// Thread-safety: every method may run on several threads at once (the
// Store serializes its calls).
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>

#include "base/status.h"
#include "coordinator/http/status_board.h"
#include "coordinator/server.h"
#include "coordinator/store.h"

namespace pcfarm {

class StatusApi {
 public:
  // REQUIRES: every pointer outlives this object.
  StatusApi(Store* store, const StatusBoard* board, const ServerCounters* counters)
      : store_(store), board_(board), counters_(counters) {}

  // {"workers_online", "workers_idle", "workers_busy", "workers_offline",
  //  "workers_quarantined", "workers_outdated", "workers_total",
  //  "gflops_online", "results_per_second", "jobs_running", "jobs_queued",
  //  "jobs_total", "shards" {state: n}, "events" [last 20, newest last],
  //  "taken_ms"}
  Result<nlohmann::json> Overview();
  // `pcfarm workers --json`.
  Result<nlohmann::json> Workers();
  // One element of Workers(); NotFound for an unknown id.
  Result<nlohmann::json> Worker(int64_t id);
  // `pcfarm jobs --json`.
  Result<nlohmann::json> Jobs();
  // `pcfarm status ID --json`, plus "shard_states" {state: n} and, for
  // open-ended jobs (finetune), "rounds" [{round, ...round info}].
  Result<nlohmann::json> Job(int64_t id);
  // Events with id > after, oldest first, at most `limit`:
  // [{"id","ts_ms","kind","job_id","worker_id","message"}].
  Result<nlohmann::json> Events(int64_t after, int limit);
  // The Prometheus text exposition (version 0.0.4) of the coordinator.
  Result<std::string> Metrics();

 private:
  std::string OwnerName(int64_t client_id);

  Store* store_;
  const StatusBoard* board_;
  const ServerCounters* counters_;
};

}  // namespace pcfarm
