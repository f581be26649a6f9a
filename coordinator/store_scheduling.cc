// The Store's scheduling transitions: leases and attempts, results and
// their verification, and the shard and job failures they cause.
#include <sqlite3.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/store.h"
#include "coordinator/store_internal.h"
#include "crypto/hash.h"
#include "crypto/keys.h"

namespace pcfarm {

namespace {

// A check copy goes to an independent worker seen this recently (the
// daemon touches its connected workers every heartbeat, so: one connected
// now); when there is none the lone result is accepted unchecked (a farm of
// one owner's PCs, enrolled with one token, has nobody to check them).
constexpr int64_t kCheckerSeenWithinMs = 60 * 1000;

// Uniform in [0, 1) from libsodium (53 random bits).
double UniformDraw() {
  std::string b = RandomBytes(8);
  uint64_t v = 0;
  for (char c : b) v = (v << 8) | static_cast<unsigned char>(c);
  return double(v >> 11) * (1.0 / 9007199254740992.0);
}

// pcfarm_draw(shard, copies, worker, streak, trusted_streak): the key of
// `worker` in the draw of a check of `shard` (store_internal.h). u is
// uniform in (0, 1], from BLAKE2b-256 of a per-process random key and the
// first three integers (little-endian); the key is -ln(u) / w with weight
// w = (1 + min(streak, trusted_streak))^2, plus 10^6 while streak <
// trusted_streak. The smallest key wins: a trusted worker before any
// other, and among equals worker i with probability w_i / sum(w) (the
// exponential race). NULL when an argument is not an integer.
void DrawFunction(sqlite3_context* ctx, int argc, sqlite3_value** argv) {
  static const std::string key = RandomBytes(32);
  if (argc != 5) {
    sqlite3_result_null(ctx);
    return;
  }
  int64_t arg[5];
  for (int i = 0; i < 5; ++i) {
    if (sqlite3_value_type(argv[i]) != SQLITE_INTEGER) {
      sqlite3_result_null(ctx);
      return;
    }
    arg[i] = sqlite3_value_int64(argv[i]);
  }
  std::string in = key;
  for (int i = 0; i < 3; ++i) {
    const uint64_t v = static_cast<uint64_t>(arg[i]);
    for (int b = 0; b < 8; ++b) in.push_back(static_cast<char>((v >> (8 * b)) & 0xff));
  }
  Hash256 h = Blake2b256(in);
  uint64_t bits = 0;
  for (int b = 0; b < 8; ++b) bits |= uint64_t(h[b]) << (8 * b);
  const double u = double((bits >> 11) + 1) * (1.0 / 9007199254740992.0);  // (0, 1]
  const int64_t streak = std::clamp<int64_t>(arg[3], 0, std::max<int64_t>(arg[4], 0));
  const double w = double(1 + streak) * double(1 + streak);
  sqlite3_result_double(ctx, (streak < arg[4] ? 1e6 : 0.0) - std::log(u) / w);
}

}  // namespace

// ---- shared by the transitions (store_internal.h) ----

Status Store::Db::RegisterDraw() { return CreateFunction("pcfarm_draw", 5, &DrawFunction); }

Status Store::Db::RefreshShardTx(int64_t shard_id) {
  auto q = Q(R"sql(
UPDATE shards SET state = CASE WHEN
(SELECT COUNT(*) FROM attempts a WHERE a.shard_id=shards.id
   AND a.state='leased') <
MAX((SELECT redundancy FROM jobs WHERE id=shards.job_id), shards.copies) -
(SELECT IFNULL(MAX(c),0) FROM (SELECT COUNT(*) c FROM results r
   WHERE r.shard_id=shards.id AND r.outcome='pending' GROUP BY r.grp))
THEN 'pending' ELSE 'leased' END
WHERE id=?1 AND state IN ('pending','leased'))sql");
  return q.Bind(shard_id).Run();
}

Status Store::Db::EndJobTx(int64_t now, int64_t job_id, const char* job_state,
                           const std::string& reason,
                           TransitionReport* report) {
  {
    auto q = Q("SELECT id, worker_id FROM attempts WHERE job_id=?1 AND "
               "state='leased'");
    q.Bind(job_id);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      report->cancelled.push_back({q.Int(0), q.Int(1)});
    }
  }
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE attempts SET state='cancelled', ended_ms=?2 WHERE job_id=?1 "
        "AND state='leased'").Bind(job_id, now).Run());
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE shards SET state='cancelled' WHERE job_id=?1 AND "
        "state IN ('pending','leased')").Bind(job_id).Run());
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE jobs SET state=?2, reason=?3, updated_ms=?4 WHERE id=?1")
          .Bind(job_id, job_state, reason, now).Run());
  if (std::string_view(job_state) == "failed") {
    report->failed_jobs.push_back(job_id);
  }
  return EventTx(now, std::string("job_") + job_state, job_id, 0, reason);
}

Status Store::Db::ShardFailureTx(int64_t now, int64_t shard_id,
                                 const std::string& why, int max_failed,
                                 bool counted, TransitionReport* report) {
  auto q = Q("UPDATE shards SET attempts_failed=attempts_failed+?3, "
             "failures_uncounted=failures_uncounted+1-?3, "
             "last_failure=?2 WHERE id=?1 "
             "RETURNING job_id, idx, attempts_failed, "
             "attempts_failed+failures_uncounted");
  q.Bind(shard_id, why, counted ? 1 : 0);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no shard with id " + std::to_string(shard_id));
  int64_t job_id = q.Int(0), idx = q.Int(1), failed = q.Int(2), all = q.Int(3);
  PCFARM_RETURN_IF_ERROR(q.Run());
  int64_t all_limit = int64_t(max_failed) * kUncountedFailureFactor;
  if (failed < max_failed && all < all_limit) return RefreshShardTx(shard_id);
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE shards SET state='failed' WHERE id=?1").Bind(shard_id).Run());
  std::string reason = "shard " + std::to_string(idx) + " of job " +
                       std::to_string(job_id) + " failed " +
                       (failed < max_failed
                            ? std::to_string(all) + " times in all (" +
                                  std::to_string(failed) + " counted)"
                            : std::to_string(failed) + " times") +
                       ": " + why;
  return EndJobTx(now, job_id, "failed", reason, report);
}

Result<bool> Store::Db::WorkerFailureTx(int64_t worker_id) {
  auto q = Q("UPDATE workers SET attempts_failed=attempts_failed+1 "
             "WHERE id=?1 RETURNING attempts_failed, agreed");
  q.Bind(worker_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
  bool counted = FailureCounts(q.Int(0), q.Int(1));
  PCFARM_RETURN_IF_ERROR(q.Run());
  return counted;
}

Status Store::Db::EndAttemptTx(int64_t now, int64_t attempt_id,
                               const char* state, const std::string& why,
                               int max_failed, TransitionReport* report) {
  auto q = Q("UPDATE attempts SET state=?2, ended_ms=?3 WHERE id=?1 AND "
             "state='leased' RETURNING shard_id, job_id, worker_id");
  q.Bind(attempt_id, state, now);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return Status::Ok();  // ended earlier in this transaction
  int64_t shard_id = q.Int(0), job_id = q.Int(1), worker_id = q.Int(2);
  PCFARM_RETURN_IF_ERROR(q.Run());
  report->released_attempts.push_back(attempt_id);
  report->released_workers.push_back(worker_id);
  PCFARM_ASSIGN_OR_RETURN(bool counted, WorkerFailureTx(worker_id));
  PCFARM_RETURN_IF_ERROR(EventTx(now, std::string("attempt_") + state,
                                 job_id, worker_id,
                                 "attempt " + std::to_string(attempt_id) +
                                     ": " + why +
                                     (counted ? "" : " (not counted: the "
                                                     "worker fails too often)")));
  return ShardFailureTx(now, shard_id, why, max_failed, counted, report);
}

// ---- scheduling ----

// Worker `o` may take the check or deciding copy of shard `s` (besides
// being available and not banned): it can run it (one device it declared
// has the shard's backend and memory, a device's memory being at most the
// free memory it last reported: device_caps.h; no device list is one CPU of
// unknown memory, as CapsFromDevices reads it), holds no copy of it, and is
// independent of its copies (LeaseShard, DrawnCheckers).
#define PCFARM_DEVICES                                                                \
  "json_each(CASE WHEN json_valid(o.devices) AND json_array_length(o.devices)>0"    \
  " THEN o.devices ELSE '[{}]' END)"
#define PCFARM_CHECK_CANDIDATE                                                        \
  " EXISTS (SELECT 1 FROM " PCFARM_DEVICES " d WHERE"                                \
  "   (s.needs_backend='' OR IFNULL(json_extract(d.value,'$.backend'),'cpu')=s.needs_backend)" \
  "   AND s.needs_memory_bytes<=IFNULL(CASE"                                          \
  "   WHEN IFNULL(json_extract(d.value,'$.free_bytes'),0)>0 THEN"                     \
  "   MIN(json_extract(d.value,'$.memory_bytes'),json_extract(d.value,'$.free_bytes'))" \
  "   ELSE json_extract(d.value,'$.memory_bytes') END,0))"                            \
  " AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.shard_id=s.id"                   \
  "   AND a.worker_id=o.id AND a.state NOT IN ('lost','cancelled','expired'))"       \
  " AND NOT EXISTS (SELECT 1 FROM attempts a JOIN workers w ON w.id=a.worker_id"     \
  "   WHERE a.shard_id=s.id AND a.state IN ('leased','returned')"                    \
  "   AND ((w.token_id<>0 AND w.token_id=o.token_id)"                                 \
  "   OR (w.network<>'' AND w.network=o.network)))"

Result<std::vector<int64_t>> Store::DrawnCheckers(int64_t available_within_ms) {
  std::lock_guard l(mu_);
  const int64_t since = clock_->NowMs() - available_within_ms;
  return db_->Tx([&]() -> Result<std::vector<int64_t>> {
    // Every candidate's key for every check that waits, by shard: the
    // smallest key of a shard names its drawn worker.
    static const char kKeys[] =
        "SELECT s.id, o.id, pcfarm_draw(s.id,s.copies,o.id,o.streak,?1)"
        " FROM (SELECT s.id, s.copies, s.needs_memory_bytes, s.needs_backend FROM shards s"
        "   JOIN jobs j ON j.id=s.job_id WHERE s.state='pending' AND s.copies>0"
        "   AND j.state IN ('queued','running') ORDER BY s.id LIMIT 1000) s"
        " JOIN workers o ON o.banned=0 AND o.available_ms>=?2 AND" PCFARM_CHECK_CANDIDATE
        " ORDER BY s.id";
    auto q = db_->Q(kKeys);
    q.Bind(kStreakBeforeSpotChecks, since);
    std::vector<int64_t> out;
    int64_t shard = 0, best_worker = 0;
    double best = 0;
    auto take = [&] {
      if (best_worker != 0 && std::find(out.begin(), out.end(), best_worker) == out.end()) {
        out.push_back(best_worker);
      }
    };
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      if (q.Int(0) != shard) {
        take();
        shard = q.Int(0);
        best_worker = 0;
      }
      if (!q.IsNull(2) && (best_worker == 0 || q.Real(2) < best)) {
        best = q.Real(2);
        best_worker = q.Int(1);
      }
    }
    take();
    return out;
  });
}

Result<std::optional<Lease>> Store::LeaseShard(int64_t worker_id,
                                               const DeviceCaps& caps,
                                               int64_t lease_ms,
                                               const Verifier* verifier,
                                               int64_t available_within_ms) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  // The largest usable memory per backend the shards may name (-1: no such
  // device), bound as numbers: a CASE matches a shard to one device's
  // backend and memory without a temporary table (json_each cost one per
  // statement).
  const int64_t any_memory = caps.MemoryFor(""), cpu_memory = caps.MemoryFor("cpu"),
                vulkan_memory = caps.MemoryFor("vulkan"), cuda_memory = caps.MemoryFor("cuda");
  return db_->Tx([&]() -> Result<std::optional<Lease>> {
    int64_t token_id = 0, streak = 0;
    std::string network;
    {
      auto q = db_->Q("SELECT banned, token_id, network, streak FROM workers WHERE id=?1");
      q.Bind(worker_id);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
      if (q.Int(0)) {
        return PermissionDenied("worker " + std::to_string(worker_id) +
                                " is banned");
      }
      token_id = q.Int(1);
      network = q.Str(2);
      streak = q.Int(3);
      PCFARM_RETURN_IF_ERROR(q.Run());
    }
    // An untrusted worker with kMaxAwaitingCheck results waiting for their
    // checks (a check was ordered, the shard is not decided) takes no new
    // first copy (verify_policy.h).
    int64_t first_copies_allowed = 1;
    if (streak < kStreakBeforeSpotChecks) {
      auto q = db_->Q(
          "SELECT COUNT(*) FROM results r JOIN attempts a ON a.id=r.attempt_id"
          " JOIN shards s ON s.id=r.shard_id JOIN jobs j ON j.id=s.job_id"
          " WHERE r.worker_id=?1 AND r.outcome='pending' AND a.checks_result=0"
          " AND s.copies>0 AND s.state IN ('pending','leased')"
          " AND j.state IN ('queued','running')");
      PCFARM_ASSIGN_OR_RETURN(int64_t awaiting, q.Bind(worker_id).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
      if (awaiting >= kMaxAwaitingCheck) first_copies_allowed = 0;
    }
    // The job first (priority, then the fewest live attempts, then the
    // oldest), among jobs with a shard this worker may take; then that
    // job's lowest such shard. Both walk indexes, not every pending shard.
    // Statements are cached by the address of their text: keep it static.
    // A worker takes no shard it holds, returned, failed or let expire; one
    // it lost (a crash, a restart) or that was cancelled under it it may
    // take again, and one it let expire too when the shard waits for a
    // check (else a check copy could wait forever for the one independent
    // worker that was killed while running it).
    // Independence (Sybil resistance): a worker takes no copy of a shard
    // whose live or returned copy is held by a worker enrolled with the
    // same token (?5) or connecting from the same public network (?6).
    // Collusion: a check or a deciding copy (copies > 0) goes to one
    // worker drawn among its candidates: workers not banned, available
    // within ?8 (connected and not paused: the daemon touches a worker it
    // heard from in the last two heartbeat intervals every tick), able to
    // run it (one declared device with its backend and memory), that hold
    // no copy of it and are independent of its copies. The smallest
    // pcfarm_draw key wins: trusted ones (streak >= ?7: 10 checked results
    // in a row) first, and among equals each with probability in
    // proportion to (1 + streak)^2. The asker (its streak ?9) is always a
    // candidate. So two identities that tell the same lie check each other
    // only when the draw says so, not whenever the one that computes
    // nothing asks first, and less often as honest workers build streaks
    // (a cheat's streak starts again at each catch); never while a trusted
    // worker could take the check. A drawn worker that is busy takes the
    // check when it asks next; one that leaves, pauses or stalls stops
    // being a candidate within `available_within_ms` (the daemon: 3
    // heartbeat intervals) and another is drawn.
    // ?12=0: the worker may take checks and deciding copies only.
// (SQLite refuses an outer column in a subquery's ORDER BY: the draw is a
// MIN of keys.)
#define PCFARM_ELIGIBLE_SHARD                                                   \
  " s.state='pending' AND (s.copies>0 OR ?12=1)"                              \
  " AND s.needs_memory_bytes <= CASE s.needs_backend"                          \
  "   WHEN '' THEN ?2 WHEN 'cpu' THEN ?3 WHEN 'vulkan' THEN ?10"               \
  "   WHEN 'cuda' THEN ?11 ELSE -1 END"                                        \
  " AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.shard_id=s.id AND a.worker_id=?1" \
  "   AND a.state NOT IN ('lost','cancelled')"                                  \
  "   AND NOT (a.state='expired' AND s.copies>0))"                              \
  " AND ((?5=0 AND ?6='') OR NOT EXISTS (SELECT 1 FROM attempts a"            \
  "   JOIN workers w ON w.id=a.worker_id WHERE a.shard_id=s.id"                \
  "   AND a.state IN ('leased','returned')"                                    \
  "   AND ((?5<>0 AND w.token_id=?5) OR (?6<>'' AND w.network=?6))))"        \
  " AND (s.copies=0 OR pcfarm_draw(s.id,s.copies,?1,?9,?7)="                    \
  "   (SELECT MIN(pcfarm_draw(s.id,s.copies,o.id,o.streak,?7))"                   \
  "   FROM workers o WHERE o.banned=0"                                             \
  "   AND (o.id=?1 OR (o.available_ms>=?8 AND " PCFARM_CHECK_CANDIDATE "))))"
    static const char kPickJob[] =
        "SELECT j.id FROM jobs j WHERE j.state IN ('queued','running')"
        " AND EXISTS (SELECT 1 FROM shards s WHERE s.job_id=j.id AND"
        PCFARM_ELIGIBLE_SHARD ")"
        " ORDER BY j.priority DESC,"
        " (SELECT COUNT(*) FROM attempts a WHERE a.job_id=j.id AND a.state='leased') ASC,"
        " j.created_ms ASC, j.id ASC LIMIT 1";
    static const char kPickShard[] =
        "SELECT s.id, s.idx, s.job_id, j.kind, s.params, j.state, s.copies,"
        " s.needs_backend, s.needs_memory_bytes"
        " FROM shards s JOIN jobs j ON j.id=s.job_id WHERE s.job_id=?4 AND"
        PCFARM_ELIGIBLE_SHARD " ORDER BY s.idx ASC LIMIT 1";
#undef PCFARM_ELIGIBLE_SHARD
    auto pick_job = db_->Q(kPickJob);
    pick_job.Bind(worker_id, any_memory, cpu_memory, int64_t{0}, token_id, network,
                  kStreakBeforeSpotChecks, now - available_within_ms, streak, vulkan_memory,
                  cuda_memory, first_copies_allowed);
    PCFARM_ASSIGN_OR_RETURN(bool any, pick_job.Step());
    if (!any) return std::optional<Lease>();
    int64_t job_id = pick_job.Int(0);
    PCFARM_RETURN_IF_ERROR(pick_job.Run());
    auto q = db_->Q(kPickShard);
    q.Bind(worker_id, any_memory, cpu_memory, job_id, token_id, network,
           kStreakBeforeSpotChecks, now - available_within_ms, streak, vulkan_memory,
           cuda_memory, first_copies_allowed);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return std::optional<Lease>();
    Lease lease;
    lease.shard_id = q.Int(0);
    lease.shard_idx = q.Int(1);
    lease.job_id = q.Int(2);
    lease.job_kind = q.Str(3);
    lease.shard_params = q.Str(4);
    lease.deadline_ms = now + lease_ms;
    bool queued = q.Str(5) == "queued";
    const int64_t copies = q.Int(6);
    lease.needs_backend = q.Str(7);
    lease.needs_memory_bytes = q.Int(8);
    PCFARM_RETURN_IF_ERROR(q.Run());
    // A shard picked for a check (copies > 0) of a kind with a cheap check:
    // its one result is checked, unless a check of it ran or runs already
    // (then the shard waits for a full run: a refuted result is run again).
    if (copies > 0 && verifier != nullptr && verifier->CheckFor(lease.job_kind) != nullptr) {
      auto c = db_->Q(
          "SELECT (SELECT COUNT(*) FROM results r JOIN attempts a ON a.id=r.attempt_id"
          "   WHERE r.shard_id=?1 AND r.outcome='pending' AND a.checks_result=0),"
          " (SELECT MIN(r.id) FROM results r JOIN attempts a ON a.id=r.attempt_id"
          "   WHERE r.shard_id=?1 AND r.outcome='pending' AND a.checks_result=0),"
          " (SELECT COUNT(*) FROM attempts a WHERE a.shard_id=?1 AND a.checks_result<>0"
          "   AND (a.state='leased' OR EXISTS (SELECT 1 FROM results r WHERE"
          "   r.attempt_id=a.id AND r.outcome='pending')))");
      c.Bind(lease.shard_id);
      PCFARM_ASSIGN_OR_RETURN(bool crow, c.Step());
      if (crow && c.Int(0) == 1 && c.Int(2) == 0) lease.checks_result_id = c.Int(1);
      PCFARM_RETURN_IF_ERROR(c.Run());
    }
    auto ins = db_->Q("INSERT INTO attempts(shard_id,job_id,worker_id,state,"
                      "leased_ms,deadline_ms,checks_result) "
                      "VALUES(?1,?2,?3,'leased',?4,?5,?6) RETURNING id");
    PCFARM_ASSIGN_OR_RETURN(
        lease.attempt_id,
        ins.Bind(lease.shard_id, lease.job_id, worker_id, now, lease.deadline_ms,
                 lease.checks_result_id)
            .OneInt());
    PCFARM_RETURN_IF_ERROR(ins.Run());
    if (queued) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE jobs SET state='running', updated_ms=?2 WHERE id=?1")
              .Bind(lease.job_id, now)
              .Run());
      PCFARM_RETURN_IF_ERROR(
          db_->EventTx(now, "job_running", lease.job_id, worker_id,
                       "first shard leased"));
    }
    PCFARM_RETURN_IF_ERROR(db_->RefreshShardTx(lease.shard_id));
    return std::optional<Lease>(std::move(lease));
  });
}

Result<int64_t> Store::CountPendingShards() {
  std::lock_guard l(mu_);
  return db_->Q("SELECT COUNT(*) FROM shards WHERE state='pending'").OneInt();
}

Result<bool> Store::CheckedWorkPending() {
  std::lock_guard l(mu_);
  PCFARM_ASSIGN_OR_RETURN(int64_t any,
                          db_->Q("SELECT EXISTS(SELECT 1 FROM shards s JOIN jobs j ON "
                                 "j.id=s.job_id WHERE s.state='pending' AND "
                                 "j.verify IN ('auto','spot'))")
                              .OneInt());
  return any != 0;
}

Result<TransitionReport> Store::ExpireLeases(int max_failed_attempts) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    std::vector<std::pair<int64_t, std::string>> due;
    {
      auto q = db_->Q("SELECT a.id, w.name FROM attempts a JOIN workers w ON "
                      "w.id=a.worker_id WHERE a.state='leased' AND "
                      "a.deadline_ms<=?1 ORDER BY a.id");
      q.Bind(now);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        due.emplace_back(q.Int(0), q.Str(1));
      }
    }
    TransitionReport report;
    for (auto& [id, name] : due) {
      PCFARM_RETURN_IF_ERROR(db_->EndAttemptTx(
          now, id, "expired", "lease expired on worker '" + name + "'",
          max_failed_attempts, &report));
    }
    return report;
  });
}

Result<std::vector<int64_t>> Store::LiveAttempts(int64_t worker_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT id FROM attempts WHERE worker_id=?1 AND "
                  "state='leased' ORDER BY id");
  q.Bind(worker_id);
  std::vector<int64_t> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(q.Int(0));
  }
}

Result<std::vector<Store::RenewedLease>> Store::RenewLeases(
    int64_t worker_id, const std::vector<int64_t>& attempt_ids, int64_t lease_ms,
    int64_t max_attempt_ms) {
  std::lock_guard l(mu_);
  const int64_t now = clock_->NowMs();
  std::vector<RenewedLease> due;
  if (attempt_ids.empty()) return due;
  // Every heartbeat of a busy worker asks; most find nothing due. A read
  // first, so those open no write transaction; mu_ is held throughout, so
  // what it found is still due when written.
  {
    auto q = db_->Q("SELECT id, MIN(?3, leased_ms + ?4) FROM attempts WHERE worker_id=?1 AND "
                    "state='leased' AND deadline_ms < ?2 AND MIN(?3, leased_ms + ?4) > deadline_ms");
    q.Bind(worker_id, now + lease_ms / 2, now + lease_ms, max_attempt_ms);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      if (std::find(attempt_ids.begin(), attempt_ids.end(), q.Int(0)) != attempt_ids.end()) {
        due.push_back({q.Int(0), q.Int(1)});
      }
    }
  }
  if (due.empty()) return due;
  PCFARM_RETURN_IF_ERROR(db_->Tx([&]() -> Status {
    for (const RenewedLease& r : due) {
      PCFARM_RETURN_IF_ERROR(db_->Q("UPDATE attempts SET deadline_ms=?2 WHERE id=?1")
                                 .Bind(r.attempt_id, r.deadline_ms)
                                 .Run());
    }
    return Status::Ok();
  }));
  return due;
}

Result<TransitionReport> Store::ReleaseWorker(int64_t worker_id,
                                              int max_failed_attempts,
                                              const std::vector<int64_t>& keep) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    PCFARM_ASSIGN_OR_RETURN(std::string name, db_->WorkerNameTx(worker_id));
    std::vector<int64_t> live;
    {
      auto q = db_->Q("SELECT id FROM attempts WHERE worker_id=?1 AND "
                      "state='leased' ORDER BY id");
      q.Bind(worker_id);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        if (std::find(keep.begin(), keep.end(), q.Int(0)) == keep.end()) {
          live.push_back(q.Int(0));
        }
      }
    }
    TransitionReport report;
    for (int64_t id : live) {
      PCFARM_RETURN_IF_ERROR(db_->EndAttemptTx(
          now, id, "lost", "worker '" + name + "' was lost",
          max_failed_attempts, &report));
    }
    return report;
  });
}

Result<RecordOutcome> Store::RecordResult(int64_t attempt_id, int64_t worker_id,
                                          std::string_view body,
                                          std::string_view signature,
                                          const Verifier& verifier,
                                          int max_failed_attempts,
                                          const SummaryFold& fold,
                                          const CheckDie& die) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<RecordOutcome> {
    int64_t shard_id, job_id, shard_idx, redundancy, copies;
    std::string kind;
    VerifyPolicy verify = VerifyPolicy::kRedundant;
    {
      auto q = db_->Q("SELECT a.worker_id, a.state, a.shard_id, a.job_id, "
                      "s.idx, MAX(j.redundancy, s.copies), j.kind, j.verify, "
                      "s.copies FROM attempts a "
                      "JOIN shards s ON s.id=a.shard_id JOIN jobs j ON "
                      "j.id=a.job_id WHERE a.id=?1");
      q.Bind(attempt_id);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      std::string what = "attempt " + std::to_string(attempt_id);
      if (!row) return NotFound("no " + what);
      if (q.Int(0) != worker_id) {
        return PermissionDenied(what + " belongs to another worker");
      }
      std::string state = q.Str(1);
      if (state == "returned") {
        return AlreadyExists(what + " already has a result");
      }
      if (state != "leased") return FailedPrecondition(what + " was " + state);
      shard_id = q.Int(2);
      job_id = q.Int(3);
      shard_idx = q.Int(4);
      redundancy = q.Int(5);
      kind = q.Str(6);
      auto v = ParseVerifyPolicy(q.Str(7));
      if (v.ok()) verify = *v;
      copies = q.Int(8);
    }
    RecordOutcome out;
    {
      auto q = db_->Q("INSERT INTO results(attempt_id,shard_id,worker_id,body,"
                      "signature,received_ms) VALUES(?1,?2,?3,?4,?5,?6) "
                      "RETURNING id");
      PCFARM_ASSIGN_OR_RETURN(
          out.result_id, q.Bind(attempt_id, shard_id, worker_id, BlobArg{body},
                                BlobArg{signature}, now)
                             .OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
    }
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE attempts SET state='returned', ended_ms=?2 WHERE id=?1")
            .Bind(attempt_id, now)
            .Run());

    // Group the shard's live results with the kind's comparator: the full
    // runs first, then the checks (results of attempts that checked one of
    // them: their votes).
    std::vector<int64_t> ids, workers;
    std::vector<std::string> bodies;
    std::vector<CheckVote> votes;
    std::vector<int64_t> vote_ids, vote_workers;
    {
      auto q = db_->Q("SELECT r.id, r.worker_id, r.body, a.checks_result FROM results r "
                      "JOIN attempts a ON a.id=r.attempt_id WHERE "
                      "r.shard_id=?1 AND r.outcome='pending' ORDER BY r.id");
      q.Bind(shard_id);
      struct Check {
        int64_t id, worker, target;
        std::string body;
      };
      std::vector<Check> checks;
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        if (q.Int(3) != 0) {
          checks.push_back({q.Int(0), q.Int(1), q.Int(3), q.Str(2)});
          continue;
        }
        ids.push_back(q.Int(0));
        workers.push_back(q.Int(1));
        bodies.push_back(q.Str(2));
      }
      const CheckVerdict* verdict = verifier.CheckFor(kind);
      for (const Check& c : checks) {
        auto t = std::find(ids.begin(), ids.end(), c.target);
        // The checked result is no longer live (its worker was banned): the
        // vote has nothing to judge.
        if (t == ids.end()) {
          PCFARM_RETURN_IF_ERROR(db_->Q("UPDATE results SET outcome='dropped' WHERE id=?1")
                                     .Bind(c.id)
                                     .Run());
          continue;
        }
        // A verdict that cannot be read (the server validated its shape)
        // counts as "holds" only when it says so.
        Result<bool> holds = verdict ? (*verdict)(c.body) : Result<bool>(false);
        votes.push_back({size_t(t - ids.begin()), holds.ok() && *holds});
        vote_ids.push_back(c.id);
        vote_workers.push_back(c.worker);
      }
    }
    std::vector<std::string_view> views(bodies.begin(), bodies.end());
    CheckedJudgement cj =
        JudgeWithChecks(views, votes, static_cast<int>(redundancy), verifier.For(kind));
    Judgement& j = cj.full;
    for (size_t i = 0; i < ids.size(); ++i) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE results SET grp=?2 WHERE id=?1")
              .Bind(ids[i], j.group[i])
              .Run());
    }
    // A vote that holds joins its target's group (RefreshShardTx counts it
    // toward the copies); a refutation is a group of its own.
    for (size_t i = 0; i < votes.size(); ++i) {
      const int64_t grp = votes[i].holds ? j.group[votes[i].target]
                                         : -1 - static_cast<int64_t>(i);
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE results SET grp=?2 WHERE id=?1").Bind(vote_ids[i], grp).Run());
    }
    std::string where = "shard " + std::to_string(shard_idx) + " of job " +
                        std::to_string(job_id);

    // A lone result that would be accepted: is it checked? (verify_policy.h)
    if (j.accepted && ids.size() == 1 && copies == 0 &&
        (verify == VerifyPolicy::kAuto || verify == VerifyPolicy::kSpot)) {
      auto q = db_->Q("SELECT streak FROM workers WHERE id=?1");
      PCFARM_ASSIGN_OR_RETURN(int64_t streak, q.Bind(worker_id).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
      double p = CheckProbability(verify, streak);
      double roll = die ? die() : UniformDraw();
      if (roll < p) {
        PCFARM_ASSIGN_OR_RETURN(
            bool independent,
            db_->IndependentWorkerTx(worker_id, now - kCheckerSeenWithinMs));
        if (independent) {
          PCFARM_RETURN_IF_ERROR(db_->Q("UPDATE shards SET copies=2 WHERE id=?1")
                                     .Bind(shard_id)
                                     .Run());
          PCFARM_RETURN_IF_ERROR(db_->RefreshShardTx(shard_id));
          out.check_ordered = true;
          return out;
        }
      }
    }

    if (j.accepted) {
      out.verdict = ResultVerdict::kAccepted;
      int64_t winner = 0;
      const bool checked = ids.size() + votes.size() >= 2;
      // Results that faced a check (compared, or a lone result that the
      // die let pass) move their workers' standing; a lone result of a job
      // that checks nothing does not.
      const bool standing_moves = checked || verify == VerifyPolicy::kAuto ||
                                  verify == VerifyPolicy::kSpot;
      // Every live result, the checks' with them: who sided with the
      // accepted answer.
      std::vector<int64_t> all_ids = ids, all_workers = workers;
      std::vector<bool> all_agreed;
      for (size_t i = 0; i < ids.size(); ++i) {
        all_agreed.push_back(j.group[i] == j.best_group);
        if (all_agreed.back() && !winner) winner = ids[i];
      }
      all_ids.insert(all_ids.end(), vote_ids.begin(), vote_ids.end());
      all_workers.insert(all_workers.end(), vote_workers.begin(), vote_workers.end());
      all_agreed.insert(all_agreed.end(), cj.check_agreed.begin(), cj.check_agreed.end());
      for (size_t i = 0; i < all_ids.size(); ++i) {
        const bool agreed = all_agreed[i];
        // The worker's standing: streak, strikes, checks.
        if (standing_moves) {
          auto q = db_->Q("SELECT streak, strikes, banned, streak_partner FROM workers "
                          "WHERE id=?1");
          q.Bind(all_workers[i]);
          PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) return Internal("worker " + std::to_string(all_workers[i]) + " vanished");
          WorkerStanding before{q.Int(0), q.Int(1)};
          const bool banned = q.Int(2) != 0;
          const int64_t last_partner = q.Int(3);
          PCFARM_RETURN_IF_ERROR(q.Run());
          // Who agreed with it here (other workers on the accepted side).
          std::vector<int64_t> partners;
          for (size_t k = 0; k < all_ids.size(); ++k) {
            if (k != i && all_agreed[k] && all_workers[k] != all_workers[i]) {
              partners.push_back(all_workers[k]);
            }
          }
          const int64_t partner = StreakPartner(last_partner, partners);
          WorkerStanding after = agreed && !partners.empty() && partner == 0
                                     ? before  // only its last partner agreed
                                     : NextStanding(before, agreed);
          PCFARM_RETURN_IF_ERROR(
              db_->Q("UPDATE workers SET streak=?2, strikes=?3, checks=checks+?4, "
                     "streak_partner=?5 WHERE id=?1")
                  .Bind(all_workers[i], after.streak, after.strikes,
                        int64_t{checked ? 1 : 0},
                        !agreed ? int64_t{0} : partner != 0 ? partner : last_partner)
                  .Run());
          if (!banned && Quarantined(after) &&
              std::find(out.quarantined.begin(), out.quarantined.end(),
                        all_workers[i]) == out.quarantined.end()) {
            out.quarantined.push_back(all_workers[i]);
          }
        }
        PCFARM_RETURN_IF_ERROR(
            db_->Q("UPDATE results SET outcome=?2 WHERE id=?1")
                .Bind(all_ids[i], agreed ? "agreed" : "disagreed")
                .Run());
        PCFARM_RETURN_IF_ERROR(
            db_->Q(agreed ? "UPDATE workers SET agreed=agreed+1, "
                            "trust=(agreed+2.0)/(agreed+disagreed+3.0) "
                            "WHERE id=?1"
                          : "UPDATE workers SET disagreed=disagreed+1, "
                            "trust=(agreed+1.0)/(agreed+disagreed+3.0) "
                            "WHERE id=?1")
                .Bind(all_workers[i])
                .Run());
        if (!agreed) {
          PCFARM_RETURN_IF_ERROR(db_->EventTx(
              now, "result_disagreed", job_id, all_workers[i],
              where + ": result " + std::to_string(all_ids[i]) +
                  " disagrees with the accepted one"));
        }
      }
      // A caught worker's unchecked results in running jobs run again (all
      // of them, with its other results, when this catch quarantines it).
      for (size_t i = 0; i < all_ids.size(); ++i) {
        if (all_agreed[i]) continue;
        if (std::find(out.quarantined.begin(), out.quarantined.end(), all_workers[i]) !=
            out.quarantined.end()) {
          continue;
        }
        PCFARM_ASSIGN_OR_RETURN(std::string name, db_->WorkerNameTx(all_workers[i]));
        std::vector<int64_t> reopened;
        PCFARM_RETURN_IF_ERROR(db_->ReopenUncheckedTx(
                                      now, all_workers[i], name + "', caught disagreeing (" + where + ")",
                                      fold, &reopened)
                                   .status());
        for (int64_t sid : reopened) PCFARM_RETURN_IF_ERROR(db_->RefreshShardTx(sid));
      }
      // Changes only a shard that is not accepted yet: accepted exactly once.
      auto acc = db_->Q("UPDATE shards SET state='accepted', "
                        "accepted_result_id=?2 WHERE id=?1 AND state IN "
                        "('pending','leased') RETURNING id");
      Result<int64_t> changed = acc.Bind(shard_id, winner).OneInt();
      if (!changed.ok()) {
        return Internal(where + ": a leased attempt on a finished shard (" +
                        changed.status().ToString() + ")");
      }
      PCFARM_RETURN_IF_ERROR(acc.Run());
      // The job's summary with this result folded in (written below, with
      // the accepted count).
      std::optional<std::string> summary;
      if (fold) {
        auto sq = db_->Q("SELECT summary FROM jobs WHERE id=?1");
        sq.Bind(job_id);
        PCFARM_ASSIGN_OR_RETURN(bool row, sq.Step());
        std::string before = row ? sq.Str(0) : std::string("{}");
        PCFARM_RETURN_IF_ERROR(sq.Run());
        std::string_view won;
        for (size_t i = 0; i < ids.size(); ++i) {
          if (ids[i] == winner) won = bodies[i];
        }
        summary = fold(kind, before, shard_idx, won);
      }
      {
        auto q = db_->Q("UPDATE attempts SET state='cancelled', ended_ms=?2 "
                        "WHERE shard_id=?1 AND state='leased' "
                        "RETURNING id, worker_id");
        q.Bind(shard_id, now);
        for (;;) {
          PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
          if (!row) break;
          out.report.cancelled.push_back({q.Int(0), q.Int(1)});
        }
      }
      auto q = db_->Q("UPDATE jobs SET shards_accepted=shards_accepted+1, "
                      "updated_ms=?2, summary=IFNULL(?3, summary) WHERE id=?1 "
                      "RETURNING shards_accepted+shards_dropped=shards_total, open_ended");
      if (summary) {
        q.Bind(job_id, now, *summary);
      } else {
        q.Bind(job_id, now, nullptr);
      }
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return Internal("job " + std::to_string(job_id) + " vanished");
      bool all_accepted = q.Int(0) != 0;
      const bool open_ended = q.Int(1) != 0;
      PCFARM_RETURN_IF_ERROR(q.Run());
      // Quarantines last: one may reopen shards of this job or rewind it
      // (RewindForBannedTx cancels the shards of the rounds it undoes,
      // this one's too), so the job's counts are read again after them.
      for (int64_t w : out.quarantined) {
        PCFARM_RETURN_IF_ERROR(db_->BanWorkerTx(
            now, w,
            "quarantined: caught disagreeing " +
                std::to_string(kStrikesToQuarantine) + " times (" + where + ")",
            fold, &out.report));
      }
      if (!out.quarantined.empty()) {
        auto c = db_->Q("SELECT shards_accepted+shards_dropped=shards_total FROM jobs "
                        "WHERE id=?1");
        PCFARM_ASSIGN_OR_RETURN(int64_t settled, c.Bind(job_id).OneInt());
        PCFARM_RETURN_IF_ERROR(c.Run());
        all_accepted = settled != 0;
        // A job rewound by them waits for its planner (AdvanceJobs).
        out.job_awaits_advance = true;
      }
      if (all_accepted && open_ended) {
        // Its planner decides what follows (AdvanceJob).
        out.job_awaits_advance = true;
      } else if (all_accepted) {
        out.job_finished = true;
        PCFARM_RETURN_IF_ERROR(
            db_->Q("UPDATE jobs SET state='succeeded' WHERE id=?1")
                .Bind(job_id)
                .Run());
        PCFARM_RETURN_IF_ERROR(db_->EventTx(now, "job_succeeded", job_id, 0,
                                            "every shard accepted"));
      }
      return out;
    }
    if (static_cast<int64_t>(ids.size() + votes.size()) >= redundancy) {
      // A full set of results without agreement: one more run must decide.
      out.verdict = ResultVerdict::kDisagreed;
      PCFARM_ASSIGN_OR_RETURN(std::string name, db_->WorkerNameTx(worker_id));
      std::string why = "results disagree (last from worker '" + name + "')";
      PCFARM_RETURN_IF_ERROR(
          db_->EventTx(now, "results_disagree", job_id, worker_id,
                       where + ": " + why));
      size_t failed_before = out.report.failed_jobs.size();
      PCFARM_RETURN_IF_ERROR(db_->ShardFailureTx(now, shard_id, why,
                                                 max_failed_attempts,
                                                 /*counted=*/true, &out.report));
      out.job_finished = out.report.failed_jobs.size() > failed_before;
      return out;
    }
    PCFARM_RETURN_IF_ERROR(db_->RefreshShardTx(shard_id));
    return out;
  });
}

Status Store::SetAttemptShardHash(int64_t attempt_id,
                                  std::string_view hash) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    auto q = db_->Q("UPDATE attempts SET shard_hash=?2 WHERE id=?1 "
                    "RETURNING id");
    Result<int64_t> id = q.Bind(attempt_id, BlobArg{hash}).OneInt();
    if (!id.ok()) {
      return id.status().WithContext("attempt " + std::to_string(attempt_id));
    }
    return q.Run();
  });
}

Result<std::string> Store::AttemptShardHash(int64_t attempt_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT shard_hash FROM attempts WHERE id=?1 AND "
                  "shard_hash IS NOT NULL");
  q.Bind(attempt_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) {
    return NotFound("attempt " + std::to_string(attempt_id) +
                    " has no recorded shard hash");
  }
  return q.Str(0);
}

Result<AttemptWork> Store::GetAttemptWork(int64_t attempt_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT IFNULL(a.shard_hash,''), j.kind, s.params, a.checks_result, a.job_id FROM "
                  "attempts a JOIN shards s ON s.id=a.shard_id JOIN jobs j ON "
                  "j.id=a.job_id WHERE a.id=?1");
  q.Bind(attempt_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no attempt " + std::to_string(attempt_id));
  return AttemptWork{q.Str(0), q.Str(1), q.Str(2), q.Int(3), q.Int(4)};
}

Result<std::string> Store::GetResultBody(int64_t result_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT body FROM results WHERE id=?1");
  q.Bind(result_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no result " + std::to_string(result_id));
  return q.Str(0);
}

Result<TransitionReport> Store::FailAttempt(int64_t attempt_id,
                                            int64_t worker_id,
                                            const std::string& error,
                                            int max_failed_attempts) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    auto q = db_->Q("SELECT a.worker_id, a.state, w.name FROM attempts a "
                    "JOIN workers w ON w.id=a.worker_id WHERE a.id=?1");
    q.Bind(attempt_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    std::string what = "attempt " + std::to_string(attempt_id);
    if (!row) return NotFound("no " + what);
    if (q.Int(0) != worker_id) {
      return PermissionDenied(what + " belongs to another worker");
    }
    std::string state = q.Str(1), name = q.Str(2);
    if (state == "returned") return AlreadyExists(what + " already has a result");
    if (state == "failed") return AlreadyExists(what + " already failed");
    if (state != "leased") return FailedPrecondition(what + " was " + state);
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE attempts SET error=?2 WHERE id=?1")
            .Bind(attempt_id, error)
            .Run());
    TransitionReport report;
    PCFARM_RETURN_IF_ERROR(db_->EndAttemptTx(
        now, attempt_id, "failed",
        "worker '" + name + "' could not run it: " + error,
        max_failed_attempts, &report));
    return report;
  });
}

}  // namespace pcfarm
