// The Store's jobs, their shards and accepted results, and events.
#include <algorithm>
#include <string>
#include <vector>

#include "base/peer_text.h"
#include "coordinator/store.h"
#include "coordinator/store_internal.h"

namespace pcfarm {
namespace {

const char kJobCols[] =
    "id,kind,state,priority,redundancy,params,shards_total,shards_accepted,"
    "reason,created_ms,updated_ms,summary,owner_client_id,open_ended,shards_dropped,"
    "verify";

JobInfo ReadJob(Stmt& s) {
  JobInfo j;
  j.id = s.Int(0);
  j.kind = s.Str(1);
  j.state = s.Str(2);
  j.priority = static_cast<int>(s.Int(3));
  j.redundancy = static_cast<int>(s.Int(4));
  j.params = s.Str(5);
  j.shards_total = s.Int(6);
  j.shards_accepted = s.Int(7);
  j.reason = s.Str(8);
  j.created_ms = s.Int(9);
  j.updated_ms = s.Int(10);
  j.summary = s.Str(11);
  j.owner_client_id = s.Int(12);
  j.open_ended = s.Int(13) != 0;
  j.shards_dropped = s.Int(14);
  auto verify = ParseVerifyPolicy(s.Str(15));
  j.verify = verify.ok() ? *verify : VerifyPolicy::kRedundant;
  return j;
}

// Every row `s` yields, as jobs (kJobCols).
Result<std::vector<JobInfo>> ReadJobs(Stmt& s) {
  std::vector<JobInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, s.Step());
    if (!row) return out;
    out.push_back(ReadJob(s));
  }
}

// The job `owner_client_id` submitted with `request_key`; NotFound when none.
Result<int64_t> JobByRequestKey(SqliteDb& db, int64_t owner_client_id,
                                const std::string& request_key) {
  if (request_key.empty()) return NotFound("no request key");
  // Walks jobs_by_request_key (request_key=?2 implies its IS NOT NULL).
  auto q = db.Q("SELECT id FROM jobs WHERE owner_client_id=?1 AND request_key=?2");
  auto id = q.Bind(owner_client_id, request_key).OneInt();
  if (!id.ok() && id.status().code() == StatusCode::kNotFound) {
    return NotFound("no job of client " + std::to_string(owner_client_id) +
                    " has that request key");
  }
  return id;
}

}  // namespace

// ---- jobs ----

Result<int64_t> Store::CreateJob(const JobSpec& spec) {
  if (spec.kind.empty()) return InvalidArgument("job kind is empty");
  if (spec.shards.empty()) {
    return InvalidArgument("job of kind '" + spec.kind + "' has no shards");
  }
  if (spec.redundancy < 1) {
    return InvalidArgument("job redundancy " + std::to_string(spec.redundancy) +
                           " is below 1");
  }
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    // A retried submit: its job exists, nothing more is made.
    if (!spec.request_key.empty()) {
      auto known =
          JobByRequestKey(*db_, spec.owner_client_id, spec.request_key);
      if (known.ok() || known.status().code() != StatusCode::kNotFound) {
        return known;
      }
    }
    // Every blob first: a job never refers to bytes the coordinator lacks.
    for (const std::string& hash : spec.blobs) {
      auto q = db_->Q("SELECT COUNT(*) FROM blobs WHERE hash=?1");
      PCFARM_ASSIGN_OR_RETURN(int64_t have, q.Bind(hash).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
      if (!have) {
        return NotFound(spec.kind + " job refers to blob " +
                        EscapePeerText(hash, 128) +
                        ", which the coordinator does not hold (upload it "
                        "first)");
      }
    }
    // Without an owner or a key those columns keep their defaults, so the
    // statement also runs on a database that tests built before migration
    // 7 or 8.
    static const char kInsert[] =
        "INSERT INTO jobs(kind,state,priority,redundancy,params,"
        "shards_total,created_ms,updated_ms) "
        "VALUES(?1,'queued',?2,?3,?4,?5,?6,?6) RETURNING id";
    static const char kInsertOwned[] =
        "INSERT INTO jobs(kind,state,priority,redundancy,params,"
        "shards_total,created_ms,updated_ms,owner_client_id) "
        "VALUES(?1,'queued',?2,?3,?4,?5,?6,?6,?7) RETURNING id";
    static const char kInsertKeyed[] =
        "INSERT INTO jobs(kind,state,priority,redundancy,params,"
        "shards_total,created_ms,updated_ms,owner_client_id,request_key) "
        "VALUES(?1,'queued',?2,?3,?4,?5,?6,?6,?7,?8) RETURNING id";
    const bool keyed = !spec.request_key.empty();
    auto q = db_->Q(keyed                  ? kInsertKeyed
                    : spec.owner_client_id ? kInsertOwned
                                           : kInsert);
    int64_t shards = int64_t(spec.shards.size());
    if (keyed) {
      q.Bind(spec.kind, spec.priority, spec.redundancy, spec.params, shards,
             now, spec.owner_client_id, spec.request_key);
    } else if (spec.owner_client_id) {
      q.Bind(spec.kind, spec.priority, spec.redundancy, spec.params, shards,
             now, spec.owner_client_id);
    } else {
      q.Bind(spec.kind, spec.priority, spec.redundancy, spec.params, shards,
             now);
    }
    PCFARM_ASSIGN_OR_RETURN(int64_t id, q.OneInt());
    PCFARM_RETURN_IF_ERROR(q.Run());
    if (spec.open_ended) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE jobs SET open_ended=1 WHERE id=?1").Bind(id).Run());
      PCFARM_RETURN_IF_ERROR(db_->Q("INSERT INTO job_round_starts(job_id,first_shard,round,"
                                    "summary) SELECT id, 0, 1, summary FROM jobs WHERE id=?1")
                                 .Bind(id)
                                 .Run());
    }
    if (spec.verify != VerifyPolicy::kRedundant) {
      PCFARM_RETURN_IF_ERROR(db_->Q("UPDATE jobs SET verify=?2 WHERE id=?1")
                                 .Bind(id, VerifyPolicyName(spec.verify))
                                 .Run());
    }
    for (size_t i = 0; i < spec.shards.size(); ++i) {
      const ShardSpec& s = spec.shards[i];
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT INTO shards(job_id,idx,state,params,needs_backend,"
                 "needs_memory_bytes) VALUES(?1,?2,'pending',?3,?4,?5)")
              .Bind(id, int64_t(i), BlobArg{s.params}, s.needs_backend,
                    s.needs_memory_bytes)
              .Run());
    }
    for (const std::string& hash : spec.blobs) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT OR IGNORE INTO job_blobs(job_id,hash) VALUES(?1,?2)")
              .Bind(id, hash)
              .Run());
    }
    PCFARM_RETURN_IF_ERROR(db_->EventTx(
        now, "job_created", id, 0,
        spec.kind + " job with " + std::to_string(spec.shards.size()) +
            " shards"));
    return id;
  });
}

Result<int64_t> Store::FindJobByRequestKey(int64_t owner_client_id,
                                           const std::string& request_key) {
  std::lock_guard l(mu_);
  return JobByRequestKey(*db_, owner_client_id, request_key);
}

Result<JobInfo> Store::GetJob(int64_t job_id) {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kJobCols + " FROM jobs WHERE id=?1";
  auto q = db_->Q(sql.c_str());
  q.Bind(job_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no job with id " + std::to_string(job_id));
  return ReadJob(q);
}

Result<std::vector<JobInfo>> Store::ListJobs(const std::string& state,
                                             int limit,
                                             int64_t owner_client_id) {
  std::lock_guard l(mu_);
  // SQLite takes a negative LIMIT as none. One owner's jobs walk
  // jobs_by_owner.
  static const std::string sql = std::string("SELECT ") + kJobCols +
                                 " FROM jobs WHERE ?1='' OR state=?1 "
                                 "ORDER BY id DESC LIMIT ?2";
  static const std::string by_owner =
      std::string("SELECT ") + kJobCols +
      " FROM jobs WHERE owner_client_id=?3 AND (?1='' OR state=?1) "
      "ORDER BY id DESC LIMIT ?2";
  auto q = db_->Q(owner_client_id >= 0 ? by_owner.c_str() : sql.c_str());
  if (owner_client_id >= 0) {
    q.Bind(state, limit > 0 ? limit : -1, owner_client_id);
  } else {
    q.Bind(state, limit > 0 ? limit : -1);
  }
  std::vector<JobInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(ReadJob(q));
  }
}

Result<std::vector<ShardInfo>> Store::ListShards(int64_t job_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT id,job_id,idx,state,attempts_failed,"
                  "IFNULL(accepted_result_id,0) FROM shards WHERE job_id=?1 "
                  "ORDER BY idx");
  q.Bind(job_id);
  std::vector<ShardInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back({q.Int(0), q.Int(1), q.Int(2), q.Str(3), q.Int(4), q.Int(5)});
  }
}

Result<std::vector<std::pair<std::string, int64_t>>> Store::CountShardsByState(
    int64_t job_id) {
  std::lock_guard l(mu_);
  // Without a job: the shards of the jobs still queued or running, so the
  // count does not grow with the farm's history.
  auto q = job_id > 0
               ? db_->Q("SELECT state, COUNT(*) FROM shards WHERE job_id=?1 "
                        "GROUP BY state ORDER BY state")
               : db_->Q("SELECT s.state, COUNT(*) FROM shards s JOIN jobs j ON "
                        "j.id=s.job_id WHERE j.state IN ('queued','running') AND "
                        "?1=0 GROUP BY s.state ORDER BY s.state");
  q.Bind(job_id);
  std::vector<std::pair<std::string, int64_t>> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.emplace_back(q.Str(0), q.Int(1));
  }
}

Result<TransitionReport> Store::CancelJob(int64_t job_id,
                                          const std::string& reason) {
  return EndJob(job_id, "cancelled", reason);
}

Result<TransitionReport> Store::FailJob(int64_t job_id, const std::string& reason) {
  return EndJob(job_id, "failed", reason);
}

Result<TransitionReport> Store::EndJob(int64_t job_id, const char* state,
                                       const std::string& reason) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    auto q = db_->Q("SELECT state FROM jobs WHERE id=?1");
    q.Bind(job_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFound("no job with id " + std::to_string(job_id));
    std::string was = q.Str(0);
    PCFARM_RETURN_IF_ERROR(q.Run());
    if (was != "queued" && was != "running") {
      return FailedPrecondition("job " + std::to_string(job_id) + " already " + was);
    }
    TransitionReport report;
    PCFARM_RETURN_IF_ERROR(db_->EndJobTx(now, job_id, state, reason, &report));
    return report;
  });
}

Result<std::vector<AcceptedResult>> Store::AcceptedResults(
    int64_t job_id, int64_t from_shard_idx, int64_t max_bytes) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT s.idx, r.id, s.params, r.body, r.worker_id, w.name "
                  "FROM shards s JOIN results r ON r.id=s.accepted_result_id "
                  "JOIN workers w ON w.id=r.worker_id WHERE s.job_id=?1 AND "
                  "s.idx>=?2 AND s.state='accepted' ORDER BY s.idx");
  q.Bind(job_id, from_shard_idx);
  std::vector<AcceptedResult> out;
  int64_t bytes = 0;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    AcceptedResult r{q.Int(0), q.Int(1), q.Str(2), q.Str(3), q.Int(4), q.Str(5)};
    bytes += int64_t(r.params.size() + r.body.size());
    if (max_bytes > 0 && bytes > max_bytes && !out.empty()) return out;
    out.push_back(std::move(r));
  }
}

// ---- events ----

Status Store::AddEvent(const std::string& kind, int64_t job_id,
                       int64_t worker_id, const std::string& message) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx(
      [&] { return db_->EventTx(now, kind, job_id, worker_id, message); });
}

Result<int64_t> Store::PruneEvents(int64_t max_age_ms, int64_t max_rows) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    // Event ids only grow (the newest row is never deleted), so the newest
    // max_rows are the ids above MAX(id) - max_rows.
    PCFARM_RETURN_IF_ERROR(db_->Q("DELETE FROM events WHERE ts_ms < ?1")
                               .Bind(now - max_age_ms)
                               .Run());
    int64_t deleted = db_->Changes();
    PCFARM_RETURN_IF_ERROR(
        db_->Q("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1")
            .Bind(max_rows)
            .Run());
    return deleted + db_->Changes();
  });
}

Result<std::vector<EventInfo>> Store::ListEvents(int64_t after_id, int limit) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT id,ts_ms,kind,IFNULL(job_id,0),IFNULL(worker_id,0),"
                  "message FROM events WHERE id>?1 ORDER BY id LIMIT ?2");
  q.Bind(after_id, limit);
  std::vector<EventInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back({q.Int(0), q.Int(1), q.Str(2), q.Int(3), q.Int(4), q.Str(5)});
  }
}

Result<std::vector<EventInfo>> Store::LatestEvents(int limit) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT id,ts_ms,kind,IFNULL(job_id,0),IFNULL(worker_id,0),"
                  "message FROM events ORDER BY id DESC LIMIT ?1");
  q.Bind(limit);
  std::vector<EventInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) break;
    out.push_back({q.Int(0), q.Int(1), q.Str(2), q.Int(3), q.Int(4), q.Str(5)});
  }
  std::reverse(out.begin(), out.end());
  return out;
}

Status Store::Db::EventTx(int64_t now, const std::string& kind,
                          int64_t job_id, int64_t worker_id,
                          const std::string& message) {
  auto q = Q("INSERT INTO events(ts_ms,kind,job_id,worker_id,message) "
             "VALUES(?1,?2,NULLIF(?3,0),NULLIF(?4,0),?5)");
  return q.Bind(now, kind, job_id, worker_id, message).Run();
}

}  // namespace pcfarm

namespace pcfarm {

// ---- open-ended jobs ----

Status Store::AdvanceJob(int64_t job_id, const JobAdvance& advance,
                         TransitionReport* report) {
  if (advance.end == JobAdvance::End::kContinue && advance.shards.empty()) {
    return InvalidArgument("advance of job " + std::to_string(job_id) +
                           " continues it without shards");
  }
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  const std::string what = "job " + std::to_string(job_id);
  return db_->Tx([&]() -> Status {
    {
      auto q = db_->Q("SELECT state, open_ended, shards_total, shards_accepted, "
                      "shards_dropped, summary FROM jobs WHERE id=?1");
      q.Bind(job_id);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return NotFound("no " + what);
      const std::string state = q.Str(0);
      if (state != "running" && state != "queued") {
        return FailedPrecondition(what + " is " + state);
      }
      if (!q.Int(1)) return FailedPrecondition(what + " is not open-ended");
      if (q.Int(2) != advance.expected_shards_total) {
        return FailedPrecondition(what + " has " + std::to_string(q.Int(2)) +
                                  " shards, the advance was planned at " +
                                  std::to_string(advance.expected_shards_total));
      }
      if (advance.drop_unaccepted) {
        if (q.Int(3) != advance.expected_shards_accepted) {
          return FailedPrecondition(what + " has " + std::to_string(q.Int(3)) +
                                    " shards accepted, the advance was planned at " +
                                    std::to_string(advance.expected_shards_accepted));
        }
      } else if (q.Int(3) + q.Int(4) != q.Int(2)) {
        return FailedPrecondition(what + " has shards not accepted yet");
      }
      if (advance.planned_summary && q.Str(5) != *advance.planned_summary) {
        return FailedPrecondition(what + "'s summary changed since the advance was planned");
      }
    }
    if (advance.results_from_shard >= 0) {
      auto q = db_->Q("SELECT accepted_result_id FROM shards WHERE job_id=?1 AND idx>=?2 "
                      "AND state='accepted' ORDER BY idx");
      q.Bind(job_id, advance.results_from_shard);
      std::vector<int64_t> now_ids;
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        now_ids.push_back(q.Int(0));
      }
      if (now_ids != advance.expected_result_ids) {
        return FailedPrecondition(what + "'s accepted results changed since the advance was "
                                         "planned");
      }
    }
    if (advance.drop_unaccepted) {
      // The round's stragglers: their live attempts end as cancelled (the
      // caller tells the workers), their shards are cancelled and counted.
      auto q = db_->Q("UPDATE attempts SET state='cancelled', ended_ms=?2 WHERE job_id=?1 "
                      "AND state='leased' RETURNING id, worker_id");
      q.Bind(job_id, now);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        if (report) report->cancelled.push_back({q.Int(0), q.Int(1)});
      }
      PCFARM_RETURN_IF_ERROR(q.Run());
      auto d = db_->Q("UPDATE shards SET state='cancelled' WHERE job_id=?1 AND "
                      "state IN ('pending','leased') RETURNING id");
      d.Bind(job_id);
      int64_t dropped = 0;
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, d.Step());
        if (!row) break;
        ++dropped;
      }
      PCFARM_RETURN_IF_ERROR(d.Run());
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE jobs SET shards_dropped=shards_dropped+?2 WHERE id=?1")
              .Bind(job_id, dropped)
              .Run());
    }
    for (const auto& [hash, size] : advance.blobs) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT INTO blobs(hash,size,created_ms,collectable) VALUES(?1,?2,?3,1) "
                 "ON CONFLICT(hash) DO UPDATE SET created_ms=MAX(created_ms,excluded.created_ms)")
              .Bind(hash, size, now)
              .Run());
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT OR IGNORE INTO job_blobs(job_id,hash) VALUES(?1,?2)")
              .Bind(job_id, hash)
              .Run());
    }
    if (advance.round >= 0) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT INTO job_rounds(job_id,round,info,created_ms) "
                 "VALUES(?1,?2,?3,?4) ON CONFLICT(job_id,round) DO UPDATE "
                 "SET info=excluded.info, created_ms=excluded.created_ms")
              .Bind(job_id, advance.round, advance.round_info, now)
              .Run());
    }
    const int64_t first = advance.expected_shards_total;
    for (size_t i = 0; i < advance.shards.size(); ++i) {
      const ShardSpec& s = advance.shards[i];
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT INTO shards(job_id,idx,state,params,needs_backend,"
                 "needs_memory_bytes) VALUES(?1,?2,'pending',?3,?4,?5)")
              .Bind(job_id, first + int64_t(i), BlobArg{s.params},
                    s.needs_backend, s.needs_memory_bytes)
              .Run());
    }
    // The outputs of the rounds applied (a --method full shard's is a
    // model-sized gradient): nothing reads them again. Earlier advances
    // emptied those before the round that just ended (from its start row
    // on: after a rewind, the start before the undone rounds').
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE results SET body=X'' WHERE length(body)>0 AND shard_id IN (SELECT id "
               "FROM shards WHERE job_id=?1 AND idx<?2 AND idx>=(SELECT IFNULL(MAX("
               "first_shard),0) FROM job_round_starts WHERE job_id=?1 AND first_shard<?2))")
            .Bind(job_id, advance.expected_shards_total)
            .Run());
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE jobs SET shards_total=shards_total+?2, summary=?3, "
               "updated_ms=?4 WHERE id=?1")
            .Bind(job_id, int64_t(advance.shards.size()), advance.summary, now)
            .Run());
    if (advance.end == JobAdvance::End::kContinue) {
      // Where the next round starts, for a rewind (RewindTx): its number
      // is the one after the last round written.
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT OR REPLACE INTO job_round_starts(job_id,first_shard,round,summary) "
                 "VALUES(?1,?2,(SELECT IFNULL(MAX(round),0)+1 FROM job_rounds WHERE "
                 "job_id=?1),?3)")
              .Bind(job_id, first, advance.summary)
              .Run());
    }
    switch (advance.end) {
      case JobAdvance::End::kContinue:
        return Status::Ok();
      case JobAdvance::End::kSucceed:
        PCFARM_RETURN_IF_ERROR(
            db_->Q("UPDATE jobs SET state='succeeded' WHERE id=?1").Bind(job_id).Run());
        return db_->EventTx(now, "job_succeeded", job_id, 0,
                            advance.reason.empty() ? "every round done" : advance.reason);
      case JobAdvance::End::kFail: {
        TransitionReport ignored;  // no live attempts: every shard is accepted
        return db_->EndJobTx(now, job_id, "failed", advance.reason, &ignored);
      }
    }
    return Internal("bad JobAdvance::End");
  });
}

Result<std::vector<JobInfo>> Store::JobsAwaitingAdvance() {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kJobCols +
      " FROM jobs WHERE open_ended=1 AND state IN ('queued','running') AND "
      "shards_accepted+shards_dropped=shards_total ORDER BY id";
  auto q = db_->Q(sql.c_str());
  return ReadJobs(q);
}

Result<std::vector<JobInfo>> Store::RunningOpenEndedJobs() {
  std::lock_guard l(mu_);
  static const std::string sql = std::string("SELECT ") + kJobCols +
                                 " FROM jobs WHERE open_ended=1 AND state IN "
                                 "('queued','running') ORDER BY id";
  auto q = db_->Q(sql.c_str());
  return ReadJobs(q);
}

Result<std::vector<JobInfo>> Store::EndedJobsToRelease(int limit) {
  std::lock_guard l(mu_);
  static const std::string sql = std::string("SELECT ") + kJobCols +
                                 " FROM jobs WHERE blobs_collected=0 AND state IN "
                                 "('succeeded','failed','cancelled') ORDER BY id LIMIT ?1";
  auto q = db_->Q(sql.c_str());
  q.Bind(int64_t(limit));
  return ReadJobs(q);
}

Result<std::vector<JobRound>> Store::JobRounds(int64_t job_id, int64_t from_round,
                                               int limit) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT round, info, created_ms FROM job_rounds WHERE "
                  "job_id=?1 AND round>=?2 ORDER BY round LIMIT ?3");
  q.Bind(job_id, from_round, limit > 0 ? limit : -1);
  std::vector<JobRound> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back({q.Int(0), q.Str(1), q.Int(2)});
  }
}

Result<Store::JobVerification> Store::GetJobVerification(int64_t job_id) {
  std::lock_guard l(mu_);
  JobVerification v;
  auto q = db_->Q(
      "SELECT "
      " (SELECT COUNT(*) FROM shards s WHERE s.job_id=?1 AND s.state='accepted'"
      "   AND (SELECT COUNT(*) FROM results r WHERE r.shard_id=s.id AND"
      "        r.outcome='agreed') >= 2),"
      " IFNULL(SUM(CASE WHEN s.accepted_result_id=r.id THEN a.ended_ms-a.leased_ms"
      "   END), 0),"
      " IFNULL(SUM(CASE WHEN s.accepted_result_id IS NOT r.id THEN"
      "   a.ended_ms-a.leased_ms END), 0)"
      " FROM results r JOIN shards s ON s.id=r.shard_id"
      " JOIN attempts a ON a.id=r.attempt_id WHERE s.job_id=?1");
  q.Bind(job_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (row) {
    v.checked_shards = q.Int(0);
    v.useful_ms = q.Int(1);
    v.extra_ms = q.Int(2);
  }
  return v;
}

}  // namespace pcfarm
