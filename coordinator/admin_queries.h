// The rows the CLI's read-only queries answer with (`pcfarm jobs`, `status`,
// `workers`), built from the Store's rows and the event loop's view of the
// connected workers. The event loop's client requests (client_requests.cc)
// and the status page's API (coordinator/http/) both build them here and
// print them with the CLI's JSON builders (cli/cli_common.h), so the API and
// `pcfarm ... --json` show the same fields by construction.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "coordinator/store.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

// What only the event loop knows of a worker.
struct WorkerLiveState {
  bool connected = false;
  uint32_t running = 0;           // shards it holds now (when connected)
  // It last spoke another protocol version: this one (which may be 0).
  bool outdated = false;
  uint32_t outdated_version = 0;
  bool paused = false;            // its owner is back (its idle policy says why)
  std::string paused_reason;
};

// `w` as `pcfarm workers` lists it. Devices come from its stored devices
// JSON; a malformed one lists none.
wire::WorkerInfo WorkerToWire(const WorkerInfo& w, const WorkerLiveState& live);

// `job` as `pcfarm status` shows it; `owner` is its owner's client name
// ("admin" for jobs from before owners were recorded). The summary is the
// job's planner's (JobPlanner::Summary), left out while empty.
wire::JobInfo JobToWire(const JobInfo& job, const std::string& owner);

// Sets `out`'s verification figures (checked shards, overhead) from the
// job's results: what `pcfarm status JOB` and /api/v1/jobs/ID add to the
// listing's fields (a query over the job's results, so not in listings).
Status AddJobVerification(Store& store, int64_t job_id, wire::JobInfo* out);

}  // namespace pcfarm
