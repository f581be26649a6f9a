// The Store's workers, enrollment tokens and CLI clients.
#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "coordinator/store.h"
#include "coordinator/store_internal.h"

namespace pcfarm {
namespace {

const char kWorkerCols[] =
    "id,name,sign_pk,curve_pk,trust,agreed,disagreed,banned,devices,"
    "speed_gflops,created_ms,last_seen_ms,token_id,network,checks,streak,strikes";

WorkerInfo ReadWorker(Stmt& s) {
  WorkerInfo w;
  w.id = s.Int(0);
  w.name = s.Str(1);
  w.sign_pk = s.Str(2);
  w.curve_pk = s.Str(3);
  w.trust = s.Real(4);
  w.agreed = s.Int(5);
  w.disagreed = s.Int(6);
  w.banned = s.Int(7) != 0;
  w.devices_json = s.Str(8);
  w.speed_gflops = s.Real(9);
  w.created_ms = s.Int(10);
  w.last_seen_ms = s.Int(11);
  w.token_id = s.Int(12);
  w.network = s.Str(13);
  w.checks = s.Int(14);
  w.streak = s.Int(15);
  w.strikes = s.Int(16);
  return w;
}

const char kClientCols[] = "id,name,curve_pk,role,created_ms";

ClientInfo ReadClient(Stmt& s) {
  ClientInfo c;
  c.id = s.Int(0);
  c.name = s.Str(1);
  c.curve_pk = s.Str(2);
  c.role = s.Str(3) == "admin" ? ClientRole::kAdmin : ClientRole::kSubmitter;
  c.created_ms = s.Int(4);
  return c;
}

template <typename Db>
// Inserts a worker row; AlreadyExists when its curve key is registered.
Result<int64_t> InsertWorkerTx(Db& db, const std::string& name, std::string_view sign_pk,
                               std::string_view curve_pk, int64_t now) {
  auto q = db.Q("INSERT INTO workers(name,sign_pk,curve_pk,created_ms,"
                "last_seen_ms) VALUES(?1,?2,?3,?4,?4) RETURNING id");
  Result<int64_t> id = q.Bind(name, BlobArg{sign_pk}, BlobArg{curve_pk}, now).OneInt();
  if (!id.ok()) {
    if (id.status().code() == StatusCode::kAlreadyExists) {
      return AlreadyExists("worker '" + name + "': its curve key is already registered");
    }
    return id.status();
  }
  PCFARM_RETURN_IF_ERROR(q.Run());
  return id;
}

}  // namespace

const char* ClientRoleName(ClientRole role) {
  return role == ClientRole::kAdmin ? "admin" : "submitter";
}

Result<std::string> Store::Db::WorkerNameTx(int64_t worker_id) {
  auto q = Q("SELECT name FROM workers WHERE id=?1");
  q.Bind(worker_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
  return q.Str(0);
}

// ---- workers ----

Result<int64_t> Store::AddWorker(const std::string& name,
                                 std::string_view sign_pk,
                                 std::string_view curve_pk) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    PCFARM_ASSIGN_OR_RETURN(int64_t id, InsertWorkerTx(*db_, name, sign_pk, curve_pk, now));
    PCFARM_RETURN_IF_ERROR(
        db_->EventTx(now, "worker_added", 0, id, "worker '" + name + "'"));
    return id;
  });
}

namespace {
// Shared by ConsumeToken and EnrollWorker; runs inside their transaction.
template <typename Db>
Result<int64_t> ConsumeTokenTx(Db& db, int64_t now, std::string_view hash) {
  auto q = db.Q("SELECT id, uses_left, expires_ms FROM tokens WHERE "
                "secret_hash=?1");
  q.Bind(BlobArg{hash});
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("unknown enrollment token");
  int64_t id = q.Int(0), uses = q.Int(1), expires = q.Int(2);
  if (now >= expires) {
    return FailedPrecondition("enrollment token " + std::to_string(id) +
                              " expired");
  }
  if (uses <= 0) {
    return ResourceExhausted("enrollment token " + std::to_string(id) +
                             " has no uses left");
  }
  PCFARM_RETURN_IF_ERROR(
      db.Q("UPDATE tokens SET uses_left=uses_left-1 WHERE id=?1").Bind(id).Run());
  return id;
}
}  // namespace

Result<int64_t> Store::AddToken(std::string_view secret_hash, int uses,
                                int64_t expires_ms) {
  if (uses < 1) return InvalidArgument("token uses must be >= 1");
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    auto q = db_->Q("INSERT INTO tokens(secret_hash,uses_left,expires_ms,"
                    "created_ms) VALUES(?1,?2,?3,?4) RETURNING id");
    PCFARM_ASSIGN_OR_RETURN(
        int64_t id, q.Bind(BlobArg{secret_hash}, uses, expires_ms, now).OneInt());
    PCFARM_RETURN_IF_ERROR(q.Run());
    return id;
  });
}

Result<int64_t> Store::ConsumeToken(std::string_view secret_hash) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&] { return ConsumeTokenTx(*db_, now, secret_hash); });
}

Result<int64_t> Store::EnrollWorker(std::string_view token_secret_hash,
                                    const std::string& name,
                                    std::string_view sign_pk,
                                    std::string_view curve_pk) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    PCFARM_ASSIGN_OR_RETURN(int64_t token,
                            ConsumeTokenTx(*db_, now, token_secret_hash));
    PCFARM_ASSIGN_OR_RETURN(int64_t id, InsertWorkerTx(*db_, name, sign_pk, curve_pk, now));
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE workers SET token_id=?2 WHERE id=?1").Bind(id, token).Run());
    PCFARM_RETURN_IF_ERROR(db_->EventTx(
        now, "worker_enrolled", 0, id,
        "worker '" + name + "' enrolled with token " + std::to_string(token)));
    return id;
  });
}

Result<WorkerInfo> Store::GetWorker(int64_t worker_id) {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kWorkerCols + " FROM workers WHERE id=?1";
  auto q = db_->Q(sql.c_str());
  q.Bind(worker_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
  return ReadWorker(q);
}

Result<WorkerInfo> Store::FindWorkerByCurveKey(std::string_view curve_pk) {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kWorkerCols + " FROM workers WHERE curve_pk=?1";
  auto q = db_->Q(sql.c_str());
  q.Bind(BlobArg{curve_pk});
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no worker with this curve key");
  return ReadWorker(q);
}

Status Store::SetWorkerDevices(int64_t worker_id,
                               const std::string& devices_json,
                               double speed_gflops) {
  if (!nlohmann::json::accept(devices_json)) {
    return InvalidArgument("devices of worker " + std::to_string(worker_id) +
                           ": not valid JSON");
  }
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    auto q = db_->Q("UPDATE workers SET devices=?2, speed_gflops=?3, "
                    "last_seen_ms=?4 WHERE id=?1 RETURNING id");
    Result<int64_t> id = q.Bind(worker_id, devices_json, speed_gflops, now)
                             .OneInt();
    if (!id.ok()) return id.status().WithContext("worker " + std::to_string(worker_id));
    return q.Run();
  });
}

Status Store::SetWorkerNetwork(int64_t worker_id, const std::string& network) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    return db_->Q("UPDATE workers SET network=?2 WHERE id=?1 AND network<>?2")
        .Bind(worker_id, network)
        .Run();
  });
}

Status Store::TouchWorker(int64_t worker_id, bool available) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    auto q = db_->Q("UPDATE workers SET last_seen_ms=?2, available_ms=CASE WHEN ?3 "
                    "THEN ?2 ELSE available_ms END WHERE id=?1 RETURNING id");
    Result<int64_t> id = q.Bind(worker_id, now, available ? 1 : 0).OneInt();
    if (!id.ok()) return id.status().WithContext("worker " + std::to_string(worker_id));
    return q.Run();
  });
}

Status Store::WorkerGone(int64_t worker_id) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    return db_->Q("UPDATE workers SET available_ms=0 WHERE id=?1").Bind(worker_id).Run();
  });
}

Result<TransitionReport> Store::BanWorker(int64_t worker_id,
                                          const std::string& reason,
                                          const SummaryFold& fold) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    TransitionReport report;
    PCFARM_RETURN_IF_ERROR(db_->BanWorkerTx(now, worker_id, reason, fold, &report));
    return report;
  });
}

Status Store::Db::BanWorkerTx(int64_t now, int64_t worker_id,
                              const std::string& reason, const SummaryFold& fold,
                              TransitionReport* report) {
  PCFARM_ASSIGN_OR_RETURN(std::string name, WorkerNameTx(worker_id));
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE workers SET banned=1 WHERE id=?1").Bind(worker_id).Run());
  // Strikes it helped give are void: a worker that disagreed with an
  // accepted answer this one sided with gets that strike back (an honest
  // worker outvoted by a colluding pair is not left one catch nearer to
  // its own quarantine). Its streak, reset then, is not restored.
  {
    static const char kOutvoted[] =
        "(SELECT COUNT(*) FROM results r WHERE r.worker_id=workers.id AND "
        "r.outcome='disagreed' AND EXISTS (SELECT 1 FROM results b WHERE "
        "b.shard_id=r.shard_id AND b.worker_id=?1 AND b.outcome='agreed'))";
    auto q = Q((std::string("UPDATE workers SET strikes=MAX(0,strikes-") + kOutvoted +
                ") WHERE id<>?1 AND banned=0 AND strikes>0 AND " + kOutvoted +
                ">0 RETURNING id, name")
                   .c_str());
    q.Bind(worker_id);
    std::vector<std::pair<int64_t, std::string>> back;
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      back.emplace_back(q.Int(0), q.Str(1));
    }
    PCFARM_RETURN_IF_ERROR(q.Run());
    for (const auto& [id, other] : back) {
      PCFARM_RETURN_IF_ERROR(EventTx(now, "strike_returned", 0, id,
                                     "worker '" + other + "' gets its strikes back from checks "
                                     "where worker '" + name + "' (now quarantined) outvoted it"));
    }
  }
  std::vector<int64_t> shards;
  {
    auto q = Q("UPDATE attempts SET state='cancelled', ended_ms=?2 "
               "WHERE worker_id=?1 AND state='leased' "
               "RETURNING id, shard_id");
    q.Bind(worker_id, now);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      report->cancelled.push_back({q.Int(0), worker_id});
      shards.push_back(q.Int(1));
    }
  }
  {
    auto q = Q("UPDATE results SET outcome='dropped' WHERE "
               "worker_id=?1 AND outcome='pending' RETURNING shard_id");
    q.Bind(worker_id);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      shards.push_back(q.Int(0));
    }
  }
  PCFARM_RETURN_IF_ERROR(RewindForBannedTx(now, worker_id, name, report).status());
  PCFARM_ASSIGN_OR_RETURN(int64_t rerun,
                          ReopenUncheckedTx(now, worker_id, name + "', now quarantined",
                                            fold, &shards, /*checked_too=*/true));
  for (int64_t s : shards) PCFARM_RETURN_IF_ERROR(RefreshShardTx(s));
  return EventTx(now, "worker_banned", 0, worker_id,
                 "worker '" + name + "' banned: " + reason +
                     (rerun == 0 ? ""
                                 : " (" + std::to_string(rerun) +
                                       " of its results run again)"));
}

Result<int64_t> Store::Db::RewindForBannedTx(int64_t now, int64_t worker_id,
                                             const std::string& name,
                                             TransitionReport* report) {
  struct Hit {
    int64_t job_id, min_idx, round_first_shard;
  };
  std::vector<Hit> hits;
  {
    auto q = Q("SELECT s.job_id, MIN(s.idx), IFNULL(json_extract(CASE WHEN json_valid(j.summary) "
               "THEN j.summary END,'$.round_first_shard'),0) FROM results r JOIN shards s ON "
               "s.id=r.shard_id "
               "JOIN jobs j ON j.id=s.job_id WHERE r.worker_id=?1 AND r.outcome='agreed' "
               "AND s.state='accepted' AND j.open_ended=1 AND j.state IN ('queued','running') "
               "AND s.idx<IFNULL(json_extract(CASE WHEN json_valid(j.summary) THEN j.summary "
               "END,'$.round_first_shard'),0) GROUP BY s.job_id ORDER BY s.job_id");
    q.Bind(worker_id);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      hits.push_back({q.Int(0), q.Int(1), q.Int(2)});
    }
  }
  int64_t rewound = 0;
  for (const Hit& h : hits) {
    const std::string job = "job " + std::to_string(h.job_id);
    int64_t first = 0, round = 0;
    std::string start;
    // Beyond the rewind horizon (Store::TrimRoundStarts deleted the start of
    // the round the worker's first such result is in): back to the oldest
    // start kept, so the rounds from there lose the worker's results and
    // the ones before keep them.
    bool partly = false;
    {
      auto q = Q("SELECT first_shard, round, summary FROM job_round_starts WHERE job_id=?1 "
                 "AND first_shard<=?2 ORDER BY first_shard DESC LIMIT 1");
      q.Bind(h.job_id, h.min_idx);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) {
        PCFARM_RETURN_IF_ERROR(q.Run());
        auto o = Q("SELECT first_shard, round, summary FROM job_round_starts WHERE job_id=?1 "
                   "AND first_shard<?2 ORDER BY first_shard LIMIT 1");
        o.Bind(h.job_id, h.round_first_shard);
        PCFARM_ASSIGN_OR_RETURN(row, o.Step());
        if (!row) {
          // A job from before migration 15, or one whose kept starts begin
          // at the round in flight: its applied rounds stay.
          PCFARM_RETURN_IF_ERROR(o.Run());
          PCFARM_RETURN_IF_ERROR(EventTx(
              now, "job_not_rewound", h.job_id, worker_id,
              job + " keeps its rounds with results of worker '" + name +
                  "' (now quarantined): it has no record of where they started"));
          continue;
        }
        first = o.Int(0);
        round = o.Int(1);
        start = o.Str(2);
        partly = true;
        PCFARM_RETURN_IF_ERROR(o.Run());
      } else {
        first = q.Int(0);
        round = q.Int(1);
        start = q.Str(2);
        PCFARM_RETURN_IF_ERROR(q.Run());
      }
    }
    {
      auto q = Q("UPDATE attempts SET state='cancelled', ended_ms=?2 WHERE job_id=?1 AND "
                 "state='leased' RETURNING id, worker_id");
      q.Bind(h.job_id, now);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        if (report) report->cancelled.push_back({q.Int(0), q.Int(1)});
      }
    }
    // The undone rounds' shards: their verdicts void, their results
    // dropped, the shards cancelled.
    std::vector<int64_t> undone;
    {
      auto q = Q("SELECT id FROM shards WHERE job_id=?1 AND idx>=?2 AND state<>'cancelled'");
      q.Bind(h.job_id, first);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        undone.push_back(q.Int(0));
      }
    }
    for (int64_t shard : undone) {
      PCFARM_RETURN_IF_ERROR(VoidVerdictsTx(shard));
      PCFARM_RETURN_IF_ERROR(
          Q("UPDATE results SET outcome='dropped' WHERE shard_id=?1 AND outcome='pending'")
              .Bind(shard)
              .Run());
      PCFARM_RETURN_IF_ERROR(
          Q("UPDATE shards SET state='cancelled', accepted_result_id=NULL, copies=0 WHERE id=?1")
              .Bind(shard)
              .Run());
    }
    const int64_t cancelled = int64_t(undone.size());
    // The counts from the rows, as CheckConsistency reads them.
    PCFARM_RETURN_IF_ERROR(
        Q("UPDATE jobs SET shards_accepted=(SELECT COUNT(*) FROM shards WHERE job_id=?1 AND "
          "state='accepted'), shards_dropped=(SELECT COUNT(*) FROM shards WHERE job_id=?1 AND "
          "state='cancelled'), summary=json_set(CASE WHEN json_valid(?2) THEN ?2 ELSE '{}' END,"
          "'$.round_first_shard',shards_total,'$.replan',json('true'),'$.rewinds',"
          "IFNULL(json_extract(CASE WHEN json_valid(summary) THEN summary END,'$.rewinds'),0)+1,"
          "'$.round_started_ms',?3), updated_ms=?3 WHERE id=?1")
            .Bind(h.job_id, start, now)
            .Run());
    PCFARM_RETURN_IF_ERROR(
        Q("DELETE FROM job_rounds WHERE job_id=?1 AND round>=?2").Bind(h.job_id, round).Run());
    PCFARM_RETURN_IF_ERROR(Q("DELETE FROM job_round_starts WHERE job_id=?1 AND first_shard>=?2")
                               .Bind(h.job_id, first)
                               .Run());
    PCFARM_RETURN_IF_ERROR(EventTx(
        now, "job_rewound", h.job_id, worker_id,
        job + " goes back to the start of round " + std::to_string(round) + " (shard " +
            std::to_string(first) + "): worker '" + name +
            "' (now quarantined) sided with the accepted answer of shard " +
            std::to_string(h.min_idx) + ", in an applied round; " + std::to_string(cancelled) +
            " shards from there are dropped and that round runs again" +
            (partly ? " (the rounds before it keep its results: their start versions are "
                      "beyond the rewind horizon, --rewind-keep)"
                    : "")));
    ++rewound;
  }
  return rewound;
}

Status Store::Db::VoidVerdictsTx(int64_t shard_id) {
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE workers SET agreed=agreed-(SELECT COUNT(*) FROM results r WHERE "
        "r.shard_id=?1 AND r.worker_id=workers.id AND r.outcome='agreed'), "
        "disagreed=disagreed-(SELECT COUNT(*) FROM results r WHERE r.shard_id=?1 AND "
        "r.worker_id=workers.id AND r.outcome='disagreed') WHERE id IN (SELECT worker_id "
        "FROM results WHERE shard_id=?1 AND outcome IN ('agreed','disagreed'))")
          .Bind(shard_id)
          .Run());
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE workers SET trust=(agreed+1.0)/(agreed+disagreed+2.0) WHERE id IN "
        "(SELECT worker_id FROM results WHERE shard_id=?1 AND outcome IN "
        "('agreed','disagreed'))")
          .Bind(shard_id)
          .Run());
  return Q("UPDATE results SET outcome='dropped' WHERE shard_id=?1 AND "
           "outcome IN ('agreed','disagreed')")
      .Bind(shard_id)
      .Run();
}

Result<int64_t> Store::Db::ReopenUncheckedTx(int64_t now, int64_t worker_id,
                                             const std::string& why,
                                             const SummaryFold& fold,
                                             std::vector<int64_t>* shards,
                                             bool checked_too) {
  struct Reopen {
    int64_t shard_id, job_id, idx, result_id;
    std::string kind;
    bool open_ended;
  };
  std::vector<Reopen> reopen;
  {
    // An open-ended job's applied rounds are not undone: only the shards of
    // its round in flight (from its summary's "round_first_shard" on, which
    // the planner has not read yet: Advance runs on the event loop, as
    // this does) run again.
    auto q = Q("SELECT s.id, s.job_id, s.idx, r.id, j.kind, j.open_ended FROM results r "
               "JOIN shards s ON s.id=r.shard_id "
               "JOIN jobs j ON j.id=s.job_id "
               "WHERE r.worker_id=?1 AND r.outcome='agreed' AND "
               "s.state='accepted' AND j.state IN ('queued','running') AND "
               "(j.open_ended=0 OR s.idx>=IFNULL(json_extract(CASE WHEN json_valid(j.summary) "
               "THEN j.summary END,'$.round_first_shard'),0)) "
               "AND (?2 OR (s.accepted_result_id=r.id AND (SELECT COUNT(*) "
               "FROM results r2 WHERE r2.shard_id=s.id AND r2.outcome='agreed')=1)) "
               "ORDER BY s.job_id, s.id");
    q.Bind(worker_id, int64_t{checked_too ? 1 : 0});
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      reopen.push_back({q.Int(0), q.Int(1), q.Int(2), q.Int(3), q.Str(4), q.Int(5) != 0});
    }
  }
  std::vector<std::pair<int64_t, std::string>> jobs;  // id, kind (not open-ended)
  for (const Reopen& r : reopen) {
    PCFARM_RETURN_IF_ERROR(VoidVerdictsTx(r.shard_id));
    PCFARM_RETURN_IF_ERROR(
        Q("UPDATE shards SET state='pending', accepted_result_id=NULL, "
          "copies=0 WHERE id=?1")
            .Bind(r.shard_id)
            .Run());
    PCFARM_RETURN_IF_ERROR(
        Q("UPDATE jobs SET shards_accepted=shards_accepted-1, updated_ms=?2 "
          "WHERE id=?1")
            .Bind(r.job_id, now)
            .Run());
    PCFARM_RETURN_IF_ERROR(EventTx(
        now, "result_rerun", r.job_id, worker_id,
        "shard " + std::to_string(r.idx) + " of job " + std::to_string(r.job_id) +
            " runs again: it was accepted " + (checked_too ? "with" : "unchecked on") +
            " worker '" + why));
    // An open-ended job's summary is its planner's state, not a fold.
    if (!r.open_ended && (jobs.empty() || jobs.back().first != r.job_id)) {
      jobs.emplace_back(r.job_id, r.kind);
    }
    shards->push_back(r.shard_id);
  }
  // Their summaries, folded again from the shards still accepted.
  for (const auto& [job_id, kind] : jobs) {
    if (!fold) break;
    std::string summary = "{}";  // kEmptyJobSummary (job_summary.h)
    auto q = Q("SELECT s.idx, r.body FROM shards s JOIN results r ON "
               "r.id=s.accepted_result_id WHERE s.job_id=?1 AND "
               "s.state='accepted' ORDER BY s.idx");
    q.Bind(job_id);
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) break;
      summary = fold(kind, summary, q.Int(0), q.Str(1));
    }
    PCFARM_RETURN_IF_ERROR(
        Q("UPDATE jobs SET summary=?2 WHERE id=?1").Bind(job_id, summary).Run());
  }
  PCFARM_RETURN_IF_ERROR(
      Q("UPDATE workers SET trust=(agreed+1.0)/(agreed+disagreed+2.0) WHERE id=?1")
          .Bind(worker_id)
          .Run());
  return static_cast<int64_t>(reopen.size());
}

Result<bool> Store::Db::IndependentWorkerTx(int64_t worker_id,
                                            int64_t seen_since_ms) {
  auto q = Q("SELECT EXISTS (SELECT 1 FROM workers w JOIN workers o ON "
             "o.id<>w.id WHERE w.id=?1 AND o.banned=0 AND o.last_seen_ms>=?2 "
             "AND NOT (w.token_id<>0 AND o.token_id=w.token_id) "
             "AND NOT (w.network<>'' AND o.network=w.network))");
  PCFARM_ASSIGN_OR_RETURN(int64_t any, q.Bind(worker_id, seen_since_ms).OneInt());
  PCFARM_RETURN_IF_ERROR(q.Run());
  return any != 0;
}

Status Store::UnbanWorker(int64_t worker_id, const std::string& reason) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    PCFARM_ASSIGN_OR_RETURN(std::string name, db_->WorkerNameTx(worker_id));
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE workers SET banned=0, strikes=0, streak=0 WHERE id=?1").Bind(worker_id).Run());
    return db_->EventTx(now, "worker_unbanned", 0, worker_id,
                        "worker " + std::to_string(worker_id) + " '" + name +
                            "' unbanned: " + reason);
  });
}

Result<std::vector<WorkerInfo>> Store::ListWorkers() {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kWorkerCols + " FROM workers ORDER BY id";
  auto q = db_->Q(sql.c_str());
  std::vector<WorkerInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(ReadWorker(q));
  }
}

Result<std::vector<WorkerInfo>> Store::ListWorkersById(int64_t offset, int64_t limit,
                                                      bool descending) {
  std::lock_guard l(mu_);
  static const std::string asc = std::string("SELECT ") + kWorkerCols +
                                 " FROM workers ORDER BY id LIMIT ?1 OFFSET ?2";
  static const std::string desc = std::string("SELECT ") + kWorkerCols +
                                  " FROM workers ORDER BY id DESC LIMIT ?1 OFFSET ?2";
  auto q = db_->Q((descending ? desc : asc).c_str());
  q.Bind(std::max<int64_t>(0, limit), std::max<int64_t>(0, offset));
  std::vector<WorkerInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(ReadWorker(q));
  }
}

Result<int64_t> Store::CountWorkers() {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT COUNT(*) FROM workers");
  PCFARM_ASSIGN_OR_RETURN(int64_t n, q.OneInt());
  PCFARM_RETURN_IF_ERROR(q.Run());
  return n;
}

// ---- clients ----

Result<int64_t> Store::AddClient(const std::string& name,
                                 std::string_view curve_pk, ClientRole role) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    {
      auto q = db_->Q("SELECT COUNT(*) FROM clients WHERE name=?1");
      PCFARM_ASSIGN_OR_RETURN(int64_t taken, q.Bind(name).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
      if (taken) {
        return AlreadyExists("a client named '" + name +
                             "' exists already; choose another name");
      }
    }
    auto q = db_->Q("INSERT INTO clients(name,curve_pk,role,created_ms) "
                    "VALUES(?1,?2,?3,?4) RETURNING id");
    Result<int64_t> id =
        q.Bind(name, BlobArg{curve_pk}, ClientRoleName(role), now).OneInt();
    if (!id.ok()) {
      if (id.status().code() == StatusCode::kAlreadyExists) {
        return AlreadyExists("client '" + name +
                             "': its curve key is already registered");
      }
      return id.status();
    }
    PCFARM_RETURN_IF_ERROR(q.Run());
    return *id;
  });
}

Result<ClientInfo> Store::FindClientByCurveKey(std::string_view curve_pk) {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kClientCols + " FROM clients WHERE curve_pk=?1";
  auto q = db_->Q(sql.c_str());
  q.Bind(BlobArg{curve_pk});
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no client with this curve key");
  return ReadClient(q);
}

Result<ClientInfo> Store::FindClientByName(const std::string& name) {
  std::lock_guard l(mu_);
  static const std::string sql = std::string("SELECT ") + kClientCols +
                                 " FROM clients WHERE name=?1 ORDER BY id "
                                 "LIMIT 1";
  auto q = db_->Q(sql.c_str());
  q.Bind(name);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no client named '" + name + "'");
  return ReadClient(q);
}

Result<std::vector<ClientInfo>> Store::ListClients() {
  std::lock_guard l(mu_);
  static const std::string sql =
      std::string("SELECT ") + kClientCols + " FROM clients ORDER BY id";
  auto q = db_->Q(sql.c_str());
  std::vector<ClientInfo> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(ReadClient(q));
  }
}

Status Store::RemoveClient(const std::string& name) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    auto q = db_->Q("SELECT id, role FROM clients WHERE name=?1 ORDER BY id "
                    "LIMIT 1");
    q.Bind(name);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFound("no client named '" + name + "'");
    int64_t id = q.Int(0);
    bool admin = q.Str(1) == "admin";
    PCFARM_RETURN_IF_ERROR(q.Run());
    if (admin) {
      auto n = db_->Q("SELECT COUNT(*) FROM clients WHERE role='admin'");
      PCFARM_ASSIGN_OR_RETURN(int64_t admins, n.OneInt());
      PCFARM_RETURN_IF_ERROR(n.Run());
      if (admins <= 1) {
        return FailedPrecondition("client '" + name +
                                  "' is the last admin; add another admin "
                                  "before removing it");
      }
    }
    return db_->Q("DELETE FROM clients WHERE id=?1").Bind(id).Run();
  });
}

}  // namespace pcfarm
