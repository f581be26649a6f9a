// The Store's schema: its versioned migrations, Open, SchemaVersion.
#include <algorithm>
#include <memory>
#include <string>

#include "coordinator/store.h"
#include "coordinator/store_internal.h"

namespace pcfarm {
namespace {

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
    // 7: a job remembers the client that submitted it, so a submitter sees
    // only its own jobs. 0: made before owners were recorded (the admin's).
    // The index serves a listing by owner, newest first.
    R"sql(
ALTER TABLE jobs ADD COLUMN owner_client_id INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_by_owner ON jobs(owner_client_id, id);
)sql",
    // 8: a submit carries a key its client chose, the same on each retry,
    // so that a submit retried after its reply was lost (a restart) finds
    // its job instead of making a second one. NULL: submitted without one.
    R"sql(
ALTER TABLE jobs ADD COLUMN request_key TEXT;
CREATE UNIQUE INDEX jobs_by_request_key ON jobs(owner_client_id, request_key)
  WHERE request_key IS NOT NULL;
)sql",
    // 9: open-ended jobs (finetune) whose planner adds shards round by
    // round: such a job does not succeed when its shards so far are all
    // accepted, but waits for Store::AdvanceJob. job_rounds keeps one row
    // per finished round (a fine-tuning step: loss, tokens, grad norm,
    // bytes), what `pcfarm fetch` writes as trainer_log.jsonl.
    R"sql(
ALTER TABLE jobs ADD COLUMN open_ended INTEGER NOT NULL DEFAULT 0;
CREATE TABLE job_rounds(
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  round INTEGER NOT NULL,
  info TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  PRIMARY KEY(job_id, round)
) WITHOUT ROWID;
)sql",
    // 10: an open-ended job's round may proceed with a quorum of its
    // shards (finetune --quorum); the rest are cancelled and counted here,
    // so "every shard so far is settled" is accepted + dropped = total.
    R"sql(
ALTER TABLE jobs ADD COLUMN shards_dropped INTEGER NOT NULL DEFAULT 0;
)sql",
    // 11: independence of a shard's copies (Sybil resistance): the token a
    // worker enrolled with (0: enrolled before this version, unknown) and
    // the public network it last connected from ('' for private, loopback
    // or unknown addresses). Copies of one shard never go to two workers
    // that share either (IndependenceNetwork in scheduler.h).
    R"sql(
ALTER TABLE workers ADD COLUMN token_id INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN network TEXT NOT NULL DEFAULT '';
)sql",
    // 12: verification policies (verify_policy.h). A job's policy
    // ('redundant' for jobs from before: their fixed redundancy); a shard's
    // copies, raised to 2 when its first result is picked for a check (0:
    // the job's redundancy); a worker's results compared with an independent
    // copy (checks), accepted results since it was last caught (streak) and
    // strikes (times caught, less those its streaks forgave).
    R"sql(
ALTER TABLE jobs ADD COLUMN verify TEXT NOT NULL DEFAULT 'redundant';
ALTER TABLE shards ADD COLUMN copies INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN checks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE workers ADD COLUMN strikes INTEGER NOT NULL DEFAULT 0;
)sql",
    // 13: cheap checks (JobPlanner::check_kind): an attempt that checks
    // another worker's result of its shard instead of running it names that
    // result (0: the attempt runs the shard).
    R"sql(
ALTER TABLE attempts ADD COLUMN checks_result INTEGER NOT NULL DEFAULT 0;
)sql",
    // 14: when a worker was last connected and not paused by its idle
    // policy (TouchWorker): the workers a check may be drawn for
    // (LeaseShard) are those available within the last 15 s.
    R"sql(
ALTER TABLE workers ADD COLUMN available_ms INTEGER NOT NULL DEFAULT 0;
)sql",
    // 15: where each round of an open-ended job started: its first shard,
    // its number (the job_rounds row it will write) and the job's summary
    // then (its planner's state: adapter version, optimizer state, step).
    // A quarantine rewinds a job to the start of the first round its
    // worker's results went into (Store::Db::RewindTx). Jobs from before
    // have no rows and are not rewound.
    R"sql(
CREATE TABLE job_round_starts(
  job_id INTEGER NOT NULL REFERENCES jobs(id),
  first_shard INTEGER NOT NULL,
  round INTEGER NOT NULL,
  summary TEXT NOT NULL,
  PRIMARY KEY(job_id, first_shard)
) WITHOUT ROWID;
)sql",
    // 16: the worker whose agreement last lengthened a worker's streak
    // (0: none since it was last caught). An agreement with that same
    // worker again does not lengthen it (verify_policy.h): two colluding
    // identities cannot make each other trusted.
    R"sql(
ALTER TABLE workers ADD COLUMN streak_partner INTEGER NOT NULL DEFAULT 0;
)sql",
    // 17: blob garbage collection. An ended job's blobs its output does not
    // name are unlinked from it once (Store::ReleaseJobBlobs sets
    // blobs_collected); blobs linked to no job are found by hash, and only
    // the ones the coordinator or a worker made (collectable) are deleted:
    // what a client uploaded, before or after, stays.
    R"sql(
ALTER TABLE jobs ADD COLUMN blobs_collected INTEGER NOT NULL DEFAULT 0;
ALTER TABLE blobs ADD COLUMN collectable INTEGER NOT NULL DEFAULT 0;
CREATE INDEX job_blobs_by_hash ON job_blobs(hash);
)sql",
};
constexpr int kSchemaVersion = sizeof(kMigrations) / sizeof(kMigrations[0]);

// The version recorded in `db`, 0 for a database without pcfarm's schema
// (a new file). Reads only: nothing is written before the version is known.
Result<int64_t> StoredSchemaVersion(SqliteDb& db) {
  auto t = db.Q(
      "SELECT COUNT(*) FROM sqlite_master WHERE type='table' AND "
      "name='schema_version'");
  PCFARM_ASSIGN_OR_RETURN(int64_t tables, t.OneInt());
  if (tables == 0) return int64_t{0};
  auto q = db.Q("SELECT IFNULL(MAX(version),0) FROM schema_version");
  return q.OneInt();
}

}  // namespace

int Store::LatestSchemaVersion() { return kSchemaVersion; }

Result<std::unique_ptr<Store>> Store::Open(const std::string& path,
                                           const Clock* clock,
                                           int migrate_to) {
  auto db = std::make_unique<Db>();
  // The connection is used under mu_ only (SqliteDb::Open: NOMUTEX).
  Status st = db->Open(path);
  if (!st.ok()) return st;
  // A database from a newer release is refused before anything here writes
  // to it (no pragma, no migration): the release that wrote it still opens
  // it as it was.
  Result<int64_t> have = StoredSchemaVersion(*db);
  if (!have.ok()) return have.status().WithContext(path);
  if (*have > kSchemaVersion) {
    return FailedPrecondition(
        path + " has schema version " + std::to_string(*have) +
        ", written by a newer pcfarm-coordinator; this one knows versions up "
        "to " + std::to_string(kSchemaVersion) +
        ". The data directory is left untouched: run the release that wrote "
        "it (or a newer one)");
  }
  st = db->RegisterDraw();
  if (!st.ok()) return st.WithContext(path);
  st = db->Exec(
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; "
      "PRAGMA temp_store=MEMORY; "
      "CREATE TABLE IF NOT EXISTS schema_version("
      "  version INTEGER PRIMARY KEY, applied_ms INTEGER NOT NULL);");
  if (!st.ok()) return st.WithContext(path);
  int last = migrate_to > 0 ? std::min(migrate_to, kSchemaVersion) : kSchemaVersion;
  // The pending migrations run in order, each once (schema_version records
  // it), in one transaction: when one fails, none of them stays, and the
  // directory keeps the version it had, which the release that wrote it
  // still opens (a half-upgraded one would be "newer" to it).
  int failed_at = 0;
  st = db->Tx([&]() -> Status {
    for (int v = 1; v <= last; ++v) {
      auto q = db->Q("SELECT COUNT(*) FROM schema_version WHERE version=?1");
      PCFARM_ASSIGN_OR_RETURN(int64_t done, q.Bind(v).OneInt());
      PCFARM_RETURN_IF_ERROR(q.Run());  // DDL needs no statement mid-row
      if (done) continue;
      failed_at = v;
      PCFARM_RETURN_IF_ERROR(db->Exec(kMigrations[v - 1]));
      PCFARM_RETURN_IF_ERROR(db->Q("INSERT INTO schema_version VALUES(?1,?2)")
                                 .Bind(v, clock->NowMs())
                                 .Run());
      failed_at = 0;
    }
    return Status::Ok();
  });
  if (!st.ok()) {
    std::string where = failed_at ? ": migration " + std::to_string(failed_at) : "";
    return st.WithContext(path + where + " failed; no migration was kept (schema version " +
                          std::to_string(*have) + " as before)");
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
  return std::unique_ptr<Store>(new Store(std::move(db), clock, path));
}

Result<std::unique_ptr<Store>> Store::OpenReadOnly(const std::string& path,
                                                   const Clock* clock) {
  auto db = std::make_unique<Db>();
  Status st = db->Open(path, /*read_only=*/true);
  if (!st.ok()) return st;
  Result<int64_t> have = StoredSchemaVersion(*db);
  if (!have.ok()) return have.status().WithContext(path);
  if (*have != kSchemaVersion) {
    return FailedPrecondition(path + " has schema version " + std::to_string(*have) +
                              ", not " + std::to_string(kSchemaVersion) +
                              "; a read-only connection migrates nothing");
  }
  st = db->Exec("PRAGMA query_only=ON; PRAGMA temp_store=MEMORY;");
  if (!st.ok()) return st.WithContext(path);
  return std::unique_ptr<Store>(new Store(std::move(db), clock, path));
}

Result<int> Store::SchemaVersion() {
  std::lock_guard l(mu_);
  auto q = db_->Q("SELECT IFNULL(MAX(version),0) FROM schema_version");
  PCFARM_ASSIGN_OR_RETURN(int64_t v, q.OneInt());
  return static_cast<int>(v);
}

}  // namespace pcfarm
