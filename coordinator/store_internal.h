// Internal to the Store's files (coordinator/store*.cc); nothing else
// includes it. The Store's connection, with the SQL that transitions in
// several of those files share.
//
// Where the Store is: store.cc (the object, batches, durability,
// CheckConsistency), store_schema.cc (migrations, Open), store_jobs.cc
// (jobs, shards, results, events), store_scheduling.cc (leases and
// attempts), store_workers.cc (workers, tokens, clients), store_blobs.cc.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "coordinator/sqlite.h"
#include "coordinator/store.h"

namespace pcfarm {

// The connection plus the SQL shared by several transitions. Methods ending
// in Tx run inside a transaction opened by Tx().
class Store::Db : public SqliteDb {
 public:
  // Appends an event; 0 for job_id / worker_id stores NULL. (store_jobs.cc)
  Status EventTx(int64_t now, const std::string& kind, int64_t job_id,
                 int64_t worker_id, const std::string& message);

  // The worker's name; NotFound for an unknown id. (store_workers.cc)
  Result<std::string> WorkerNameTx(int64_t worker_id);

  // The rest live in store_scheduling.cc.

  // Makes the SQL function pcfarm_draw(shard, copies, worker, streak,
  // trusted_streak): a worker's key in the draw of a check (LeaseShard),
  // from a keyed BLAKE2b of the first three under a key drawn once per
  // process, weighted by the streak (store_scheduling.cc). The worker of
  // the smallest key among a check's candidates is the one drawn to take
  // it: whom a check goes to is a draw no worker can predict or steer by
  // asking first. A restart draws a new key (the draws of checks still
  // waiting change; nothing relies on them being stable).
  Status RegisterDraw();

  // Sets a live shard to pending when it wants another attempt, else leased.
  // A shard of redundancy N wants N - (largest agreeing group) live attempts.
  Status RefreshShardTx(int64_t shard_id);

  // Ends a job as 'failed' or 'cancelled': its live shards get `shard_state`
  // (the failing shard was marked before), its live attempts are cancelled.
  Status EndJobTx(int64_t now, int64_t job_id, const char* job_state,
                  const std::string& reason, TransitionReport* report);

  // Counts a failed try of the shard, against its budget when `counted`
  // (see FailureCounts in store.h), else among its uncounted failures. At
  // max_failed counted failures, or kUncountedFailureFactor times that in
  // all, the shard and its job fail with `why` in the reason.
  Status ShardFailureTx(int64_t now, int64_t shard_id, const std::string& why,
                        int max_failed, bool counted, TransitionReport* report);

  // Counts a failed attempt of the worker; true when the failure counts
  // against the shard (FailureCounts in store.h).
  Result<bool> WorkerFailureTx(int64_t worker_id);

  // BanWorker's transition (store_workers.cc).
  Status BanWorkerTx(int64_t now, int64_t worker_id, const std::string& reason,
                     const SummaryFold& fold, TransitionReport* report);

  // Every judged result of shard `shard_id` (agreed, disagreed) is
  // dropped and its worker's agreed/disagreed counts and trust are less it:
  // the shard's verdict is void (ReopenUncheckedTx, RewindForBannedTx).
  Status VoidVerdictsTx(int64_t shard_id);

  // A quarantine's rewind of open-ended jobs (store_workers.cc): every
  // running open-ended job with an applied round (a shard before its
  // summary's "round_first_shard") where `worker_id`'s result sided with
  // the accepted answer goes back to the start of the first such round
  // (job_round_starts, migration 15): its live attempts are cancelled
  // (into `report`), the shards of that round and every later one are
  // cancelled (counted as dropped, their verdicts void: the judged results
  // dropped, their workers' agreed/disagreed counts less them), its
  // job_rounds rows from that round on are deleted, and its summary is the
  // one the round started from, with "round_first_shard" at the end of
  // its shards, "replan": true (its planner plans that round again,
  // JobPlanner::Advance) and "rewinds" one more. Returns how many jobs.
  Result<int64_t> RewindForBannedTx(int64_t now, int64_t worker_id, const std::string& name,
                                    TransitionReport* report);

  // The shards of running jobs (of an open-ended one, only its round in
  // flight: from its summary's "round_first_shard" on) accepted on `worker_id`'s
  // result alone (unchecked), or with `checked_too` every such shard where
  // it sided with the accepted answer (a quarantined worker's checks and
  // checked results are not trusted either: its partner may have been a
  // colluder), go back to pending: the shard's judged results dropped (and
  // their workers' agreed/disagreed counts less them), the job's accepted
  // count and its summary (folded again with `fold`, when given) less that
  // shard, an event naming `why` (text after "worker '"). Appends them to
  // `shards` (to refresh); returns how many.
  Result<int64_t> ReopenUncheckedTx(int64_t now, int64_t worker_id,
                                    const std::string& why, const SummaryFold& fold,
                                    std::vector<int64_t>* shards, bool checked_too = false);

  // Whether a worker other than `worker_id`, independent of it (another
  // enrollment token and public network, scheduler.h), not banned and seen
  // since `seen_since_ms`, could run a check copy of its shard.
  Result<bool> IndependentWorkerTx(int64_t worker_id, int64_t seen_since_ms);

  // Ends a leased attempt as 'expired' or 'lost' and counts the failure.
  Status EndAttemptTx(int64_t now, int64_t attempt_id, const char* state,
                      const std::string& why, int max_failed,
                      TransitionReport* report);
};

}  // namespace pcfarm
