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
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/http/status_board.h"
#include "coordinator/server.h"
#include "coordinator/store.h"

namespace pcfarm {

// One page of the workers list: /api/v1/workers?limit=N[&offset=K]
// [&sort=FIELD][&order=asc|desc][&state=STATE].
struct WorkerQuery {
  static constexpr int kMaxLimit = 1000;
  int limit = 100;                 // rows, 1..kMaxLimit
  int64_t offset = 0;              // rows skipped, >= 0
  std::string sort = "worker_id";  // a field of kWorkerSortFields
  bool descending = false;
  std::string state;  // "" (all), or idle, busy, offline, quarantined, outdated

  // The parameters in one fixed order (a cache key).
  std::string Key() const;
};

// Fields a WorkerQuery may sort by: numbers sort as numbers, the others
// (name, state, backend) as bytes. "devices" is the number of devices,
// "state" and "backend" what the workers page shows (WorkerStateName,
// WorkerBackends).
inline constexpr const char* kWorkerSortFields[] = {
    "worker_id", "name",   "state",     "devices", "backend", "gflops",  "trust",
    "agreed",    "disagreed", "checks", "strikes", "running", "last_seen_ms"};

// The query of /api/v1/workers from its URL parameters: nullopt when there
// are none (the whole list, as `pcfarm workers --json`); InvalidArgument,
// with a message naming the parameter, for an unknown or repeated
// parameter, a malformed or out-of-range value, or parameters without
// `limit`.
Result<std::optional<WorkerQuery>> ParseWorkerQuery(
    const std::multimap<std::string, std::string>& params);

// The page `q` of `workers` (as Store::ListWorkers lists them, in id order)
// with their live state from `view`: {"total" (workers that match
// q.state), "offset", "limit", "sort", "order", "state", "workers" [at most
// q.limit elements as StatusApi::Workers has them]}. The sort is stable:
// workers with equal keys stay in worker_id order, either way. Only the
// rows of the page are turned into JSON (a poll of 100 rows out of 5,000
// costs little); sorting by devices or backend reads every worker's
// devices.
nlohmann::json PageOfWorkers(const std::vector<WorkerInfo>& workers, const LiveView& view,
                             const WorkerQuery& q);

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
  // PageOfWorkers of every worker and the latest LiveView.
  Result<nlohmann::json> Workers(const WorkerQuery& q);
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
