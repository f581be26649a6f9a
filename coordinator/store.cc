#include "coordinator/store.h"

#include <fcntl.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>

#include "base/file.h"

namespace pcfarm {
namespace {

// ---- a small RAII layer over sqlite3 ----

Status SqlError(sqlite3* h, int rc, std::string_view what) {
  std::string m = std::string(what) + ": " + sqlite3_errmsg(h);
  switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return AlreadyExists(m);
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return Corruption(m);
    case SQLITE_IOERR:
    case SQLITE_FULL:
    case SQLITE_CANTOPEN: return IoError(m);
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return Unavailable(m);
    default: return Internal(m);
  }
}

struct BlobArg {
  std::string_view bytes;
};

// A cached prepared statement, reset and unbound when the Stmt goes away.
// Bind() binds its arguments to ?1, ?2, ... in order.
class Stmt {
 public:
  Stmt(sqlite3* h, std::map<const char*, sqlite3_stmt*>& cache, const char* sql)
      : h_(h) {
    auto it = cache.find(sql);
    if (it != cache.end()) {
      s_ = it->second;
      return;
    }
    int rc = sqlite3_prepare_v3(h, sql, -1, SQLITE_PREPARE_PERSISTENT, &s_,
                                nullptr);
    if (rc != SQLITE_OK) {
      st_ = SqlError(h, rc, std::string("prepare '") + sql + "'");
      s_ = nullptr;
      return;
    }
    cache[sql] = s_;
  }
  ~Stmt() {
    if (s_) {
      sqlite3_reset(s_);
      sqlite3_clear_bindings(s_);
    }
  }
  Stmt(const Stmt&) = delete;
  Stmt& operator=(const Stmt&) = delete;

  template <typename... A>
  Stmt& Bind(const A&... args) {
    int i = 1;
    (One(i++, args), ...);
    return *this;
  }

  // True when a row is ready, false when the statement is done.
  Result<bool> Step() {
    if (!st_.ok()) return st_;
    int rc = sqlite3_step(s_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    return SqlError(h_, rc, std::string("run '") + sqlite3_sql(s_) + "'");
  }
  Status Run() {
    for (;;) {
      PCFARM_ASSIGN_OR_RETURN(bool row, Step());
      if (!row) return Status::Ok();
    }
  }
  // The single integer the query yields; NotFound when there is no row.
  Result<int64_t> OneInt() {
    PCFARM_ASSIGN_OR_RETURN(bool row, Step());
    if (!row) return NotFound("no row");
    return Int(0);
  }

  int64_t Int(int c) { return sqlite3_column_int64(s_, c); }
  double Real(int c) { return sqlite3_column_double(s_, c); }
  std::string Str(int c) {
    const void* p = sqlite3_column_blob(s_, c);
    int n = sqlite3_column_bytes(s_, c);
    return p ? std::string(static_cast<const char*>(p), n) : std::string();
  }

 private:
  void Check(int rc) {
    if (rc != SQLITE_OK && st_.ok()) st_ = SqlError(h_, rc, "bind");
  }
  void One(int i, int v) { Check(sqlite3_bind_int64(s_, i, v)); }
  void One(int i, int64_t v) { Check(sqlite3_bind_int64(s_, i, v)); }
  void One(int i, double v) { Check(sqlite3_bind_double(s_, i, v)); }
  void One(int i, std::nullptr_t) { Check(sqlite3_bind_null(s_, i)); }
  void One(int i, std::string_view v) {
    Check(sqlite3_bind_text(s_, i, v.data(), static_cast<int>(v.size()),
                            SQLITE_TRANSIENT));
  }
  void One(int i, const std::string& v) { One(i, std::string_view(v)); }
  void One(int i, const char* v) { One(i, std::string_view(v)); }
  void One(int i, BlobArg v) {
    Check(sqlite3_bind_blob(s_, i, v.bytes.data(),
                            static_cast<int>(v.bytes.size()), SQLITE_TRANSIENT));
  }

  sqlite3* h_;
  sqlite3_stmt* s_ = nullptr;
  Status st_;
};

// Versioned migrations: entry i is version i + 1 and runs once.
const char* const kMigrations[] = {
    // 1: the schema.
    R"sql(
CREATE TABLE workers(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, sign_pk BLOB NOT NULL,
  curve_pk BLOB NOT NULL UNIQUE, trust REAL NOT NULL DEFAULT 0.5,
  agreed INTEGER NOT NULL DEFAULT 0, disagreed INTEGER NOT NULL DEFAULT 0,
  banned INTEGER NOT NULL DEFAULT 0, devices TEXT NOT NULL DEFAULT '[]',
  speed_gflops REAL NOT NULL DEFAULT 0, created_ms INTEGER NOT NULL,
  last_seen_ms INTEGER NOT NULL);
CREATE TABLE tokens(
  id INTEGER PRIMARY KEY, secret_hash BLOB NOT NULL UNIQUE,
  uses_left INTEGER NOT NULL, expires_ms INTEGER NOT NULL,
  created_ms INTEGER NOT NULL);
CREATE TABLE clients(
  id INTEGER PRIMARY KEY, name TEXT NOT NULL, curve_pk BLOB NOT NULL UNIQUE,
  role TEXT NOT NULL CHECK(role IN ('admin','submitter')),
  created_ms INTEGER NOT NULL);
CREATE TABLE jobs(
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL,
  state TEXT NOT NULL CHECK(state IN
    ('queued','running','succeeded','failed','cancelled')),
  priority INTEGER NOT NULL, redundancy INTEGER NOT NULL CHECK(redundancy>=1),
  params TEXT NOT NULL, shards_total INTEGER NOT NULL,
  shards_accepted INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE shards(
  id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  state TEXT NOT NULL CHECK(state IN
    ('pending','leased','accepted','failed','cancelled')),
  params BLOB NOT NULL, needs_backend TEXT NOT NULL DEFAULT '',
  needs_memory_bytes INTEGER NOT NULL DEFAULT 0,
  attempts_failed INTEGER NOT NULL DEFAULT 0,
  last_failure TEXT NOT NULL DEFAULT '',
  accepted_result_id INTEGER REFERENCES results(id),
  UNIQUE(job_id, idx));
CREATE INDEX shards_by_state ON shards(state, job_id);
CREATE TABLE attempts(
  id INTEGER PRIMARY KEY, shard_id INTEGER NOT NULL REFERENCES shards(id),
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  worker_id INTEGER NOT NULL REFERENCES workers(id),
  state TEXT NOT NULL CHECK(state IN
    ('leased','returned','expired','lost','cancelled')),
  leased_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, ended_ms INTEGER);
CREATE INDEX attempts_by_shard ON attempts(shard_id, worker_id);
CREATE INDEX attempts_by_state ON attempts(state, deadline_ms);
CREATE INDEX attempts_by_job ON attempts(job_id, state);
CREATE INDEX attempts_by_worker ON attempts(worker_id, state);
CREATE TABLE results(
  id INTEGER PRIMARY KEY, attempt_id INTEGER NOT NULL UNIQUE
    REFERENCES attempts(id),
  shard_id INTEGER NOT NULL REFERENCES shards(id),
  worker_id INTEGER NOT NULL REFERENCES workers(id),
  body BLOB NOT NULL, signature BLOB NOT NULL,
  grp INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT 'pending' CHECK(outcome IN
    ('pending','agreed','disagreed','dropped')),
  received_ms INTEGER NOT NULL);
CREATE INDEX results_by_shard ON results(shard_id);
CREATE TABLE blobs(
  hash TEXT PRIMARY KEY, size INTEGER NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE job_blobs(
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  hash TEXT NOT NULL REFERENCES blobs(hash), PRIMARY KEY(job_id, hash));
CREATE TABLE events(
  id INTEGER PRIMARY KEY, ts_ms INTEGER NOT NULL, kind TEXT NOT NULL,
  job_id INTEGER, worker_id INTEGER, message TEXT NOT NULL);
)sql",
    // 2: results and events by worker, for the status page.
    R"sql(
CREATE INDEX results_by_worker ON results(worker_id, outcome);
CREATE INDEX events_by_job ON events(job_id);
)sql",
    // 3: attempts remember the hash of the shard body sent, and a worker may
    // report that it could not run one ('failed', with its error). SQLite
    // cannot change a CHECK in place: rebuild the table (sqlite.org/lang_altertable.html).
    R"sql(
CREATE TABLE attempts_new(
  id INTEGER PRIMARY KEY, shard_id INTEGER NOT NULL REFERENCES shards(id),
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  worker_id INTEGER NOT NULL REFERENCES workers(id),
  state TEXT NOT NULL CHECK(state IN
    ('leased','returned','expired','lost','cancelled','failed')),
  leased_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, ended_ms INTEGER,
  shard_hash BLOB, error TEXT NOT NULL DEFAULT '');
INSERT INTO attempts_new(id,shard_id,job_id,worker_id,state,leased_ms,
  deadline_ms,ended_ms)
  SELECT id,shard_id,job_id,worker_id,state,leased_ms,deadline_ms,ended_ms
  FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_by_shard ON attempts(shard_id, worker_id);
CREATE INDEX attempts_by_state ON attempts(state, deadline_ms);
CREATE INDEX attempts_by_job ON attempts(job_id, state);
CREATE INDEX attempts_by_worker ON attempts(worker_id, state);
)sql",
    // 4: leasing picks a job first, then its lowest pending shard.
    R"sql(
CREATE INDEX shards_by_job ON shards(job_id, state, idx);
)sql",
    // 5: the state CHECKs as chains of '=': SQLite evaluates an IN list of
    // more than two constants through a temporary b-tree, built again on
    // every write of the row (a sixth of the coordinator's CPU per shard).
    // Same columns, rows, indexes and meaning; tables rebuilt as in 3.
    R"sql(
CREATE TABLE jobs_new(
  id INTEGER PRIMARY KEY, kind TEXT NOT NULL,
  state TEXT NOT NULL CHECK(state='queued' OR state='running' OR
    state='succeeded' OR state='failed' OR state='cancelled'),
  priority INTEGER NOT NULL, redundancy INTEGER NOT NULL CHECK(redundancy>=1),
  params TEXT NOT NULL, shards_total INTEGER NOT NULL,
  shards_accepted INTEGER NOT NULL DEFAULT 0, reason TEXT NOT NULL DEFAULT '',
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
INSERT INTO jobs_new(id,kind,state,priority,redundancy,params,shards_total,
  shards_accepted,reason,created_ms,updated_ms)
  SELECT id,kind,state,priority,redundancy,params,shards_total,
  shards_accepted,reason,created_ms,updated_ms FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;
CREATE TABLE shards_new(
  id INTEGER PRIMARY KEY, job_id INTEGER NOT NULL REFERENCES jobs(id),
  idx INTEGER NOT NULL,
  state TEXT NOT NULL CHECK(state='pending' OR state='leased' OR
    state='accepted' OR state='failed' OR state='cancelled'),
  params BLOB NOT NULL, needs_backend TEXT NOT NULL DEFAULT '',
  needs_memory_bytes INTEGER NOT NULL DEFAULT 0,
  attempts_failed INTEGER NOT NULL DEFAULT 0,
  last_failure TEXT NOT NULL DEFAULT '',
  accepted_result_id INTEGER REFERENCES results(id),
  UNIQUE(job_id, idx));
INSERT INTO shards_new(id,job_id,idx,state,params,needs_backend,
  needs_memory_bytes,attempts_failed,last_failure,accepted_result_id)
  SELECT id,job_id,idx,state,params,needs_backend,needs_memory_bytes,
  attempts_failed,last_failure,accepted_result_id FROM shards;
DROP TABLE shards;
ALTER TABLE shards_new RENAME TO shards;
CREATE INDEX shards_by_state ON shards(state, job_id);
CREATE INDEX shards_by_job ON shards(job_id, state, idx);
CREATE TABLE attempts_new(
  id INTEGER PRIMARY KEY, shard_id INTEGER NOT NULL REFERENCES shards(id),
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  worker_id INTEGER NOT NULL REFERENCES workers(id),
  state TEXT NOT NULL CHECK(state='leased' OR state='returned' OR
    state='expired' OR state='lost' OR state='cancelled' OR state='failed'),
  leased_ms INTEGER NOT NULL, deadline_ms INTEGER NOT NULL, ended_ms INTEGER,
  shard_hash BLOB, error TEXT NOT NULL DEFAULT '');
INSERT INTO attempts_new(id,shard_id,job_id,worker_id,state,leased_ms,
  deadline_ms,ended_ms,shard_hash,error)
  SELECT id,shard_id,job_id,worker_id,state,leased_ms,deadline_ms,ended_ms,
  shard_hash,error FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_new RENAME TO attempts;
CREATE INDEX attempts_by_shard ON attempts(shard_id, worker_id);
CREATE INDEX attempts_by_state ON attempts(state, deadline_ms);
CREATE INDEX attempts_by_job ON attempts(job_id, state);
CREATE INDEX attempts_by_worker ON attempts(worker_id, state);
CREATE TABLE results_new(
  id INTEGER PRIMARY KEY, attempt_id INTEGER NOT NULL UNIQUE
    REFERENCES attempts(id),
  shard_id INTEGER NOT NULL REFERENCES shards(id),
  worker_id INTEGER NOT NULL REFERENCES workers(id),
  body BLOB NOT NULL, signature BLOB NOT NULL,
  grp INTEGER NOT NULL DEFAULT 0,
  outcome TEXT NOT NULL DEFAULT 'pending' CHECK(outcome='pending' OR
    outcome='agreed' OR outcome='disagreed' OR outcome='dropped'),
  received_ms INTEGER NOT NULL);
INSERT INTO results_new(id,attempt_id,shard_id,worker_id,body,signature,grp,
  outcome,received_ms)
  SELECT id,attempt_id,shard_id,worker_id,body,signature,grp,outcome,
  received_ms FROM results;
DROP TABLE results;
ALTER TABLE results_new RENAME TO results;
CREATE INDEX results_by_shard ON results(shard_id);
CREATE INDEX results_by_worker ON results(worker_id, outcome);
)sql",
    // 6: grid hardening. A job keeps the summary of its accepted results
    // (folded in when a shard is accepted, never recomputed by a query); a
    // worker's failed attempts and agreed results decide whether its
    // failures count against a shard (Store::FailureCounts); a shard counts
    // the failures that did not; events can be pruned by age. Jobs from
    // before keep only their accepted-shard count as their summary.
    R"sql(
ALTER TABLE jobs ADD COLUMN summary TEXT NOT NULL DEFAULT '{}';
UPDATE jobs SET summary=json_object('shards', shards_accepted)
  WHERE shards_accepted > 0;
ALTER TABLE workers ADD COLUMN attempts_failed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shards ADD COLUMN failures_uncounted INTEGER NOT NULL DEFAULT 0;
CREATE INDEX events_by_ts ON events(ts_ms);
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

const char kWorkerCols[] =
    "id,name,sign_pk,curve_pk,trust,agreed,disagreed,banned,devices,"
    "speed_gflops,created_ms,last_seen_ms";
const char kJobCols[] =
    "id,kind,state,priority,redundancy,params,shards_total,shards_accepted,"
    "reason,created_ms,updated_ms,summary";

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
  return w;
}

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
  return j;
}

}  // namespace

// The connection plus the transaction helpers and the SQL of every
// transition. Methods ending in Tx run inside a transaction opened by Tx().
class Store::Db {
 public:
  explicit Db(sqlite3* h) : h(h) {}
  ~Db() {
    for (auto& [sql, s] : cache) sqlite3_finalize(s);
    sqlite3_close_v2(h);
  }

  Stmt Q(const char* sql) { return Stmt(h, cache, sql); }
  Status Exec(const char* sql) {
    char* err = nullptr;
    int rc = sqlite3_exec(h, sql, nullptr, nullptr, &err);
    if (rc == SQLITE_OK) return Status::Ok();
    std::string m = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    return SqlError(h, rc, "exec: " + m);
  }

  // Runs f() inside BEGIN IMMEDIATE ... COMMIT; rolls back when f fails.
  // Inside a batch (BeginBatch) it is a SAVEPOINT instead: the transition
  // stays atomic, and becomes durable with the batch's COMMIT.
  template <typename F>
  auto Tx(F&& f) -> decltype(f()) {
    if (batch) {
      // Prepared once (Q's cache): a turn runs several per shard.
      Status st = Q("SAVEPOINT tx").Run();
      if (!st.ok()) return st;
      auto r = f();
      if (r.ok()) {
        st = Q("RELEASE tx").Run();
        if (st.ok()) return r;
      }
      Q("ROLLBACK TO tx").Run().IgnoreError();
      Q("RELEASE tx").Run().IgnoreError();
      if (!r.ok()) return r;
      return st;
    }
    Status st = Exec("BEGIN IMMEDIATE");
    if (!st.ok()) return st;
    auto r = f();
    if (r.ok()) {
      st = Exec("COMMIT");
      if (st.ok()) return r;
    }
    Exec("ROLLBACK").IgnoreError();
    if (!r.ok()) return r;
    return st;
  }

  bool batch = false;  // a BeginBatch() transaction is open

  Status EventTx(int64_t now, const std::string& kind, int64_t job_id,
                 int64_t worker_id, const std::string& message) {
    auto q = Q("INSERT INTO events(ts_ms,kind,job_id,worker_id,message) "
               "VALUES(?1,?2,NULLIF(?3,0),NULLIF(?4,0),?5)");
    return q.Bind(now, kind, job_id, worker_id, message).Run();
  }

  Result<std::string> WorkerNameTx(int64_t worker_id) {
    auto q = Q("SELECT name FROM workers WHERE id=?1");
    q.Bind(worker_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
    return q.Str(0);
  }

  // Sets a live shard to pending when it wants another attempt, else leased.
  // A shard of redundancy N wants N - (largest agreeing group) live attempts.
  Status RefreshShardTx(int64_t shard_id) {
    auto q = Q(R"sql(
UPDATE shards SET state = CASE WHEN
  (SELECT COUNT(*) FROM attempts a WHERE a.shard_id=shards.id
     AND a.state='leased') <
  (SELECT redundancy FROM jobs WHERE id=shards.job_id) -
  (SELECT IFNULL(MAX(c),0) FROM (SELECT COUNT(*) c FROM results r
     WHERE r.shard_id=shards.id AND r.outcome='pending' GROUP BY r.grp))
  THEN 'pending' ELSE 'leased' END
WHERE id=?1 AND state IN ('pending','leased'))sql");
    return q.Bind(shard_id).Run();
  }

  // Ends a job as 'failed' or 'cancelled': its live shards get `shard_state`
  // (the failing shard was marked before), its live attempts are cancelled.
  Status EndJobTx(int64_t now, int64_t job_id, const char* job_state,
                  const std::string& reason, TransitionReport* report) {
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

  // Counts a failed try of the shard, against its budget when `counted`
  // (see FailureCounts in store.h), else among its uncounted failures. At
  // max_failed counted failures, or kUncountedFailureFactor times that in
  // all, the shard and its job fail with `why` in the reason.
  Status ShardFailureTx(int64_t now, int64_t shard_id, const std::string& why,
                        int max_failed, bool counted, TransitionReport* report) {
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

  // Counts a failed attempt of the worker; true when the failure counts
  // against the shard (FailureCounts in store.h).
  Result<bool> WorkerFailureTx(int64_t worker_id) {
    auto q = Q("UPDATE workers SET attempts_failed=attempts_failed+1 "
               "WHERE id=?1 RETURNING attempts_failed, agreed");
    q.Bind(worker_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
    bool counted = FailureCounts(q.Int(0), q.Int(1));
    PCFARM_RETURN_IF_ERROR(q.Run());
    return counted;
  }

  // Ends a leased attempt as 'expired' or 'lost' and counts the failure.
  Status EndAttemptTx(int64_t now, int64_t attempt_id, const char* state,
                      const std::string& why, int max_failed,
                      TransitionReport* report) {
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

  sqlite3* h;
  std::map<const char*, sqlite3_stmt*> cache;
};

const char* ClientRoleName(ClientRole role) {
  return role == ClientRole::kAdmin ? "admin" : "submitter";
}

Store::Store(std::unique_ptr<Db> db, const Clock* clock, std::string path)
    : db_(std::move(db)), clock_(clock), path_(std::move(path)) {}

Store::~Store() {
  if (wal_fd_ >= 0) ::close(wal_fd_);
}

Result<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                           const Clock* clock,
                                           int migrate_to) {
  // Global counters of SQLite's allocator take a mutex on every malloc;
  // nothing here reads them. Only possible before SQLite initializes.
  static std::once_flag sqlite_config;
  std::call_once(sqlite_config, [] {
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
  });
  sqlite3* h = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &h,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                               SQLITE_OPEN_NOMUTEX,  // mu_ serializes
                           nullptr);
  if (rc != SQLITE_OK) {
    Status st = IoError("open database " + path + ": " +
                        (h ? sqlite3_errmsg(h) : sqlite3_errstr(rc)));
    sqlite3_close_v2(h);
    return st;
  }
  auto db = std::make_unique<Db>(h);
  sqlite3_busy_timeout(h, 5000);
  // A larger lookaside pool: a shard's transitions allocate many small
  // objects per statement (measured: sqlite3Malloc 8% of the coordinator).
  sqlite3_db_config(h, SQLITE_DBCONFIG_LOOKASIDE, nullptr, 512, 2048);
  Status st = db->Exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
      "PRAGMA temp_store=MEMORY; "
      "CREATE TABLE IF NOT EXISTS schema_version("
      "  version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);");
  if (!st.ok()) return st.WithContext(path);
  int last = migrate_to > 0 ? std::min(migrate_to, kSchemaVersion) : kSchemaVersion;
  for (int v = 1; v <= last; ++v) {
    st = db->Tx([&]() -> Status {
      auto q = db->Q("SELECT COUNT(*) FROM schema_version WHERE version=?1");
      PCFARM_ASSIGN_OR_RETURN(int64_t done, q.Bind(v).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());  // DDL needs no statement mid-row
      if (done) return Status::Ok();
      PCFARM_RETURN_IF_ERROR(db->Exec(kMigrations[v - 1]));
      return db->Q("INSERT INTO schema_version VALUES(?1,?2)")
          .Bind(v, clock->NowMs())
          .Run();
    });
    if (!st.ok()) {
      return st.WithContext(path + ": migration " + std::to_string(v));
    }
  }
  // Foreign keys go on after the migrations, as a table rebuild needs them off.
  {
    auto fk = db->Q("SELECT rowid FROM pragma_foreign_key_check");
    Result<bool> broken = fk.Step();
    if (!broken.ok()) return broken.status().WithContext(path);
    if (*broken) return Corruption(path + ": a foreign key is broken");
  }
  st = db->Exec("PRAGMA foreign_keys=ON");
  if (!st.ok()) return st.WithContext(path);
  auto q = db->Q("SELECT IFNULL(MAX(version),0) FROM schema_version");
  Result<int64_t> have = q.OneInt();
  if (!have.ok()) return have.status();
  if (*have > kSchemaVersion) {
    return FailedPrecondition(path + ": schema version " +
                              std::to_string(*have) + " is newer than " +
                              std::to_string(kSchemaVersion) +
                              ", which this program knows");
  }
  return std::unique_ptr<Store>(new Store(std::move(db), clock, path));
}

Status Store::BeginBatch() {
  std::lock_guard l(mu_);
  if (db_->batch) return FailedPrecondition("a batch is already open");
  PCFARM_RETURN_IF_ERROR(db_->Exec("BEGIN IMMEDIATE"));
  db_->batch = true;
  return Status::Ok();
}

Status Store::CommitBatch() {
  std::lock_guard l(mu_);
  if (!db_->batch) return FailedPrecondition("no batch is open");
  db_->batch = false;
  Status st = db_->Exec("COMMIT");
  if (!st.ok()) db_->Exec("ROLLBACK").IgnoreError();
  return st;
}

Status Store::EnableDeferredSync() {
  std::lock_guard l(mu_);
  if (db_->batch) return FailedPrecondition("a batch is open");
  // The WAL exists while this connection is open: Open wrote to it.
  PCFARM_RETURN_IF_ERROR(db_->Exec("PRAGMA synchronous=NORMAL"));
  std::lock_guard w(wal_mu_);
  if (wal_fd_ >= 0) return Status::Ok();
  std::string wal = path_ + "-wal";
  int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    db_->Exec("PRAGMA synchronous=FULL").IgnoreError();
    return IoError(wal + ": open: " + std::strerror(errno));
  }
  wal_fd_ = fd;
  // The WAL's directory entry must be durable too, once.
  std::string dir = std::filesystem::path(path_).parent_path().string();
  return SyncDir(dir.empty() ? "." : dir);
}

Status Store::SyncWal() {
  std::lock_guard w(wal_mu_);
  if (wal_fd_ < 0) return FailedPrecondition("deferred sync is not enabled");
  // SQLite keeps the WAL file (same inode) while a connection is open; if
  // something replaced it, sync the file that is there now.
  struct stat have{}, now{};
  std::string wal = path_ + "-wal";
  if (::fstat(wal_fd_, &have) == 0 && ::stat(wal.c_str(), &now) == 0 &&
      (have.st_ino != now.st_ino || have.st_dev != now.st_dev)) {
    int fd = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return IoError(wal + ": open: " + std::strerror(errno));
    ::close(wal_fd_);
    wal_fd_ = fd;
  }
  if (::fdatasync(wal_fd_) != 0) {
    return IoError(wal + ": fdatasync: " + std::strerror(errno));
  }
  return Status::Ok();
}

Result<int> Store::SchemaVersion() {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT IFNULL(MAX(version),0) FROM schema_version");
  PCFARM_ASSIGN_OR_RETURN(int64_t v, q.OneInt());
  return static_cast<int>(v);
}

// ---- workers ----

Result<int64_t> Store::AddWorker(const std::string& name,
                                 std::string_view sign_pk,
                                 std::string_view curve_pk) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
    auto q = db_->Q("INSERT INTO workers(name,sign_pk,curve_pk,created_ms,"
                    "last_seen_ms) VALUES(?1,?2,?3,?4,?4) RETURNING id");
    Result<int64_t> id =
        q.Bind(name, BlobArg{sign_pk}, BlobArg{curve_pk}, now).OneInt();
    if (!id.ok()) {
      if (id.status().code() == StatusCode::kAlreadyExists) {
        return AlreadyExists("worker '" + name +
                             "': its curve key is already registered");
      }
      return id.status();
    }
    PCFARM_RETURN_IF_ERROR(q.Run());
    PCFARM_RETURN_IF_ERROR(
        db_->EventTx(now, "worker_added", 0, *id, "worker '" + name + "'"));
    return *id;
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
    auto q = db_->Q("INSERT INTO workers(name,sign_pk,curve_pk,created_ms,"
                    "last_seen_ms) VALUES(?1,?2,?3,?4,?4) RETURNING id");
    Result<int64_t> id =
        q.Bind(name, BlobArg{sign_pk}, BlobArg{curve_pk}, now).OneInt();
    if (!id.ok()) {
      if (id.status().code() == StatusCode::kAlreadyExists) {
        return AlreadyExists("worker '" + name +
                             "': its curve key is already registered");
      }
      return id.status();
    }
    PCFARM_RETURN_IF_ERROR(q.Run());
    PCFARM_RETURN_IF_ERROR(db_->EventTx(
        now, "worker_enrolled", 0, *id,
        "worker '" + name + "' enrolled with token " + std::to_string(token)));
    return *id;
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

Status Store::TouchWorker(int64_t worker_id) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    auto q = db_->Q("UPDATE workers SET last_seen_ms=?2 WHERE id=?1 "
                    "RETURNING id");
    Result<int64_t> id = q.Bind(worker_id, now).OneInt();
    if (!id.ok()) return id.status().WithContext("worker " + std::to_string(worker_id));
    return q.Run();
  });
}

Result<TransitionReport> Store::BanWorker(int64_t worker_id,
                                          const std::string& reason) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    PCFARM_ASSIGN_OR_RETURN(std::string name, db_->WorkerNameTx(worker_id));
    TransitionReport report;
    PCFARM_RETURN_IF_ERROR(
        db_->Q("UPDATE workers SET banned=1 WHERE id=?1").Bind(worker_id).Run());
    std::vector<int64_t> shards;
    {
      auto q = db_->Q("UPDATE attempts SET state='cancelled', ended_ms=?2 "
                      "WHERE worker_id=?1 AND state='leased' "
                      "RETURNING id, shard_id");
      q.Bind(worker_id, now);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        report.cancelled.push_back({q.Int(0), worker_id});
        shards.push_back(q.Int(1));
      }
    }
    {
      auto q = db_->Q("UPDATE results SET outcome='dropped' WHERE "
                      "worker_id=?1 AND outcome='pending' RETURNING shard_id");
      q.Bind(worker_id);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        shards.push_back(q.Int(0));
      }
    }
    for (int64_t s : shards) PCFARM_RETURN_IF_ERROR(db_->RefreshShardTx(s));
    PCFARM_RETURN_IF_ERROR(db_->EventTx(
        now, "worker_banned", 0, worker_id,
        "worker '" + name + "' banned: " + reason));
    return report;
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

// ---- clients ----

Result<int64_t> Store::AddClient(const std::string& name,
                                 std::string_view curve_pk, ClientRole role) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<int64_t> {
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
  auto q = db_->Q("SELECT id,name,curve_pk,role FROM clients WHERE "
                  "curve_pk=?1");
  q.Bind(BlobArg{curve_pk});
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no client with this curve key");
  ClientInfo c;
  c.id = q.Int(0);
  c.name = q.Str(1);
  c.curve_pk = q.Str(2);
  c.role = q.Str(3) == "admin" ? ClientRole::kAdmin : ClientRole::kSubmitter;
  return c;
}

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
    auto q = db_->Q("INSERT INTO jobs(kind,state,priority,redundancy,params,"
                    "shards_total,created_ms,updated_ms) "
                    "VALUES(?1,'queued',?2,?3,?4,?5,?6,?6) RETURNING id");
    PCFARM_ASSIGN_OR_RETURN(
        int64_t id, q.Bind(spec.kind, spec.priority, spec.redundancy,
                           spec.params, int64_t(spec.shards.size()), now)
                        .OneInt());
    PCFARM_RETURN_IF_ERROR(q.Run());
    for (size_t i = 0; i < spec.shards.size(); ++i) {
      const ShardSpec& s = spec.shards[i];
      PCFARM_RETURN_IF_ERROR(
          db_->Q("INSERT INTO shards(job_id,idx,state,params,needs_backend,"
                 "needs_memory_bytes) VALUES(?1,?2,'pending',?3,?4,?5)")
              .Bind(id, int64_t(i), BlobArg{s.params}, s.needs_backend,
                    s.needs_memory_bytes)
              .Run());
    }
    PCFARM_RETURN_IF_ERROR(db_->EventTx(
        now, "job_created", id, 0,
        spec.kind + " job with " + std::to_string(spec.shards.size()) +
            " shards"));
    return id;
  });
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
                                             int limit) {
  std::lock_guard l(mu_);
  static const std::string sql = std::string("SELECT ") + kJobCols +
                                 " FROM jobs WHERE ?1='' OR state=?1 "
                                 "ORDER BY id DESC LIMIT ?2";
  auto q = db_->Q(sql.c_str());
  q.Bind(state, limit);
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

Result<TransitionReport> Store::CancelJob(int64_t job_id,
                                          const std::string& reason) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<TransitionReport> {
    auto q = db_->Q("SELECT state FROM jobs WHERE id=?1");
    q.Bind(job_id);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return NotFound("no job with id " + std::to_string(job_id));
    std::string state = q.Str(0);
    PCFARM_RETURN_IF_ERROR(q.Run());
    if (state != "queued" && state != "running") {
      return FailedPrecondition("job " + std::to_string(job_id) +
                                " already " + state);
    }
    TransitionReport report;
    PCFARM_RETURN_IF_ERROR(
        db_->EndJobTx(now, job_id, "cancelled", reason, &report));
    return report;
  });
}

Result<std::vector<AcceptedResult>> Store::AcceptedResults(int64_t job_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT s.idx, r.body FROM shards s JOIN results r ON "
                  "r.id=s.accepted_result_id WHERE s.job_id=?1 AND "
                  "s.state='accepted' ORDER BY s.idx");
  q.Bind(job_id);
  std::vector<AcceptedResult> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back({q.Int(0), q.Str(1)});
  }
}

// ---- blobs ----

Status Store::RecordBlob(const std::string& hash_hex, int64_t size) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Status {
    return db_->Q("INSERT INTO blobs(hash,size,created_ms) VALUES(?1,?2,?3) "
                  "ON CONFLICT(hash) DO NOTHING")
        .Bind(hash_hex, size, now)
        .Run();
  });
}

Status Store::LinkJobBlob(int64_t job_id, const std::string& hash_hex) {
  std::lock_guard l(mu_);
  return db_->Tx([&]() -> Status {
    Status st = db_->Q("INSERT OR IGNORE INTO job_blobs(job_id,hash) "
                       "VALUES(?1,?2)")
                    .Bind(job_id, hash_hex)
                    .Run();
    if (st.code() == StatusCode::kAlreadyExists) {  // a foreign key failed
      return NotFound("job " + std::to_string(job_id) + " or blob " +
                      hash_hex + " is not recorded");
    }
    return st;
  });
}

Result<std::vector<std::string>> Store::JobBlobs(int64_t job_id) {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT hash FROM job_blobs WHERE job_id=?1 ORDER BY hash");
  q.Bind(job_id);
  std::vector<std::string> out;
  for (;;) {
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row) return out;
    out.push_back(q.Str(0));
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
    int64_t deleted = sqlite3_changes(db_->h);
    PCFARM_RETURN_IF_ERROR(
        db_->Q("DELETE FROM events WHERE id <= (SELECT MAX(id) FROM events) - ?1")
            .Bind(max_rows)
            .Run());
    return deleted + sqlite3_changes(db_->h);
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

// ---- scheduling ----

Result<std::optional<Lease>> Store::LeaseShard(int64_t worker_id,
                                               const DeviceCaps& caps,
                                               int64_t lease_ms) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  // ",cpu,vulkan,": instr() matches a backend without a temporary table
  // (json_each cost one per statement). A name with a comma matches nothing.
  std::string backends = ",";
  for (const auto& b : caps.backends) {
    if (!b.empty() && b.find(',') == std::string::npos) backends += b + ",";
  }
  return db_->Tx([&]() -> Result<std::optional<Lease>> {
    {
      auto q = db_->Q("SELECT banned FROM workers WHERE id=?1");
      q.Bind(worker_id);
      PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
      if (!row) return NotFound("no worker with id " + std::to_string(worker_id));
      if (q.Int(0)) {
        return PermissionDenied("worker " + std::to_string(worker_id) +
                                " is banned");
      }
    }
    // The job first (priority, then the fewest live attempts, then the
    // oldest), among jobs with a shard this worker may take; then that
    // job's lowest such shard. Both walk indexes, not every pending shard.
    // Statements are cached by the address of their text: keep it static.
#define PCFARM_ELIGIBLE_SHARD                                                   \
  " s.state='pending' AND s.needs_memory_bytes <= ?2"                          \
  " AND (s.needs_backend='' OR instr(?3, ','||s.needs_backend||',')>0)"       \
  " AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.shard_id=s.id AND a.worker_id=?1)"
    static const char kPickJob[] =
        "SELECT j.id FROM jobs j WHERE j.state IN ('queued','running')"
        " AND EXISTS (SELECT 1 FROM shards s WHERE s.job_id=j.id AND"
        PCFARM_ELIGIBLE_SHARD ")"
        " ORDER BY j.priority DESC,"
        " (SELECT COUNT(*) FROM attempts a WHERE a.job_id=j.id AND a.state='leased') ASC,"
        " j.created_ms ASC, j.id ASC LIMIT 1";
    static const char kPickShard[] =
        "SELECT s.id, s.idx, s.job_id, j.kind, s.params, j.state"
        " FROM shards s JOIN jobs j ON j.id=s.job_id WHERE s.job_id=?4 AND"
        PCFARM_ELIGIBLE_SHARD " ORDER BY s.idx ASC LIMIT 1";
#undef PCFARM_ELIGIBLE_SHARD
    auto pick_job = db_->Q(kPickJob);
    pick_job.Bind(worker_id, caps.memory_bytes, backends);
    PCFARM_ASSIGN_OR_RETURN(bool any, pick_job.Step());
    if (!any) return std::optional<Lease>();
    int64_t job_id = pick_job.Int(0);
    PCFARM_RETURN_IF_ERROR(pick_job.Run());
    auto q = db_->Q(kPickShard);
    q.Bind(worker_id, caps.memory_bytes, backends, job_id);
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
    PCFARM_RETURN_IF_ERROR(q.Run());
    auto ins = db_->Q("INSERT INTO attempts(shard_id,job_id,worker_id,state,"
                      "leased_ms,deadline_ms) VALUES(?1,?2,?3,'leased',?4,?5) "
                      "RETURNING id");
    PCFARM_ASSIGN_OR_RETURN(
        lease.attempt_id,
        ins.Bind(lease.shard_id, lease.job_id, worker_id, now, lease.deadline_ms)
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
                                          const SummaryFold& fold) {
  std::lock_guard l(mu_);
  int64_t now = clock_->NowMs();
  return db_->Tx([&]() -> Result<RecordOutcome> {
    int64_t shard_id, job_id, shard_idx, redundancy;
    std::string kind;
    {
      auto q = db_->Q("SELECT a.worker_id, a.state, a.shard_id, a.job_id, "
                      "s.idx, j.redundancy, j.kind FROM attempts a "
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

    // Group the shard's live results with the kind's comparator.
    std::vector<int64_t> ids, workers;
    std::vector<std::string> bodies;
    {
      auto q = db_->Q("SELECT id, worker_id, body FROM results WHERE "
                      "shard_id=?1 AND outcome='pending' ORDER BY id");
      q.Bind(shard_id);
      for (;;) {
        PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
        if (!row) break;
        ids.push_back(q.Int(0));
        workers.push_back(q.Int(1));
        bodies.push_back(q.Str(2));
      }
    }
    std::vector<std::string_view> views(bodies.begin(), bodies.end());
    Judgement j = Judge(views, static_cast<int>(redundancy), verifier.For(kind));
    for (size_t i = 0; i < ids.size(); ++i) {
      PCFARM_RETURN_IF_ERROR(
          db_->Q("UPDATE results SET grp=?2 WHERE id=?1")
              .Bind(ids[i], j.group[i])
              .Run());
    }
    std::string where = "shard " + std::to_string(shard_idx) + " of job " +
                        std::to_string(job_id);

    if (j.accepted) {
      out.verdict = ResultVerdict::kAccepted;
      int64_t winner = 0;
      for (size_t i = 0; i < ids.size(); ++i) {
        bool agreed = j.group[i] == j.best_group;
        if (agreed && !winner) winner = ids[i];
        PCFARM_RETURN_IF_ERROR(
            db_->Q("UPDATE results SET outcome=?2 WHERE id=?1")
                .Bind(ids[i], agreed ? "agreed" : "disagreed")
                .Run());
        PCFARM_RETURN_IF_ERROR(
            db_->Q(agreed ? "UPDATE workers SET agreed=agreed+1, "
                            "trust=(agreed+2.0)/(agreed+disagreed+3.0) "
                            "WHERE id=?1"
                          : "UPDATE workers SET disagreed=disagreed+1, "
                            "trust=(agreed+1.0)/(agreed+disagreed+3.0) "
                            "WHERE id=?1")
                .Bind(workers[i])
                .Run());
        if (!agreed) {
          PCFARM_RETURN_IF_ERROR(db_->EventTx(
              now, "result_disagreed", job_id, workers[i],
              where + ": result " + std::to_string(ids[i]) +
                  " disagrees with the accepted one"));
        }
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
                      "RETURNING shards_accepted=shards_total");
      if (summary) {
        q.Bind(job_id, now, *summary);
      } else {
        q.Bind(job_id, now, nullptr);
      }
      PCFARM_ASSIGN_OR_RETURN(int64_t done, q.OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());
      if (done) {
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
    if (static_cast<int64_t>(ids.size()) >= redundancy) {
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
  auto q = db_->Q("SELECT IFNULL(a.shard_hash,''), j.kind, s.params FROM "
                  "attempts a JOIN shards s ON s.id=a.shard_id JOIN jobs j ON "
                  "j.id=a.job_id WHERE a.id=?1");
  q.Bind(attempt_id);
  PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
  if (!row) return NotFound("no attempt " + std::to_string(attempt_id));
  return AttemptWork{q.Str(0), q.Str(1), q.Str(2)};
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

Status Store::CheckConsistency() {
  std::lock_guard l(mu_);
  {
    auto q = db_->Q("PRAGMA integrity_check");
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (!row || q.Str(0) != "ok") {
      return Corruption("integrity_check: " + (row ? q.Str(0) : "no answer"));
    }
  }
  struct Check {
    const char* what;
    const char* sql;
  };
  static const Check kChecks[] = {
      {"foreign key broken", "SELECT rowid FROM pragma_foreign_key_check"},
      {"job counters differ from its shard rows",
       "SELECT id FROM jobs j WHERE shards_total != (SELECT COUNT(*) FROM "
       "shards WHERE job_id=j.id) OR shards_accepted != (SELECT COUNT(*) FROM "
       "shards WHERE job_id=j.id AND state='accepted')"},
      {"job succeeded iff every shard is accepted",
       "SELECT id FROM jobs WHERE (state='succeeded') != "
       "(shards_accepted=shards_total)"},
      {"accepted shard without one agreeing result set",
       "SELECT s.id FROM shards s JOIN jobs j ON j.id=s.job_id WHERE "
       "s.state='accepted' AND (NOT EXISTS (SELECT 1 FROM results r WHERE "
       "r.id=s.accepted_result_id AND r.shard_id=s.id AND r.outcome='agreed') "
       "OR (SELECT COUNT(*) FROM results r WHERE r.shard_id=s.id AND "
       "r.outcome='agreed') < j.redundancy)"},
      {"shard not accepted has a verified result",
       "SELECT s.id FROM shards s WHERE s.state!='accepted' AND "
       "(s.accepted_result_id IS NOT NULL OR EXISTS (SELECT 1 FROM results r "
       "WHERE r.shard_id=s.id AND r.outcome IN ('agreed','disagreed')))"},
      {"attempt leased on a finished shard or job",
       "SELECT a.id FROM attempts a JOIN shards s ON s.id=a.shard_id JOIN jobs "
       "j ON j.id=s.job_id WHERE a.state='leased' AND (s.state NOT IN "
       "('pending','leased') OR j.state!='running')"},
      {"more live attempts than the redundancy",
       "SELECT s.id FROM shards s JOIN jobs j ON j.id=s.job_id WHERE "
       "(SELECT COUNT(*) FROM attempts a WHERE a.shard_id=s.id AND "
       "a.state='leased') > j.redundancy"},
      {"returned attempt without exactly one result, or a result of another",
       "SELECT a.id FROM attempts a WHERE (a.state='returned') != EXISTS "
       "(SELECT 1 FROM results r WHERE r.attempt_id=a.id AND "
       "r.worker_id=a.worker_id AND r.shard_id=a.shard_id)"},
      {"worker agreement counters differ from its results",
       "SELECT id FROM workers w WHERE agreed != (SELECT COUNT(*) FROM results "
       "WHERE worker_id=w.id AND outcome='agreed') OR disagreed != (SELECT "
       "COUNT(*) FROM results WHERE worker_id=w.id AND outcome='disagreed')"},
  };
  for (const Check& c : kChecks) {
    auto q = db_->Q(c.sql);
    PCFARM_ASSIGN_OR_RETURN(bool row, q.Step());
    if (row) {
      return Corruption(std::string(c.what) + " (row " +
                        std::to_string(q.Int(0)) + ")");
    }
  }
  return Status::Ok();
}

}  // namespace pcfarm
