// Store: the coordinator's durable state in one SQLite database.
//
// Holds workers, enrollment tokens, CLI clients, jobs, shards, attempts
// (leases), results, blob records and events. Every state transition is one
// SQLite transaction (BEGIN IMMEDIATE ... COMMIT), so a kill -9 at any moment
// leaves either the state before or the state after it.
//
// Durability: WAL journal with synchronous=FULL, so a transaction is on disk
// when its function returns OK. A caller that can wait for the disk on
// another thread calls EnableDeferredSync(): commits then only reach the
// OS (synchronous=NORMAL, they survive a process kill) and SyncWal() makes
// every commit made before it durable (one fdatasync of the WAL file), so
// a power cut loses nothing that was promised. The daemon does that
// (coordinator/wal_syncer.h): it sends an ACK only after the commit that
// recorded the result and a SyncWal that started after it.
//
// Schema changes are versioned migrations (table schema_version); Open runs
// each missing migration once, in its own transaction.
//
// Lifecycles (DESIGN.md §6):
//   job:     queued -> running (first lease) -> succeeded | failed | cancelled
//   shard:   pending (wants another attempt) <-> leased (enough attempts live)
//            -> accepted | failed | cancelled. A shard of redundancy N is
//            accepted when N results from N different workers agree; it may
//            have up to N attempts live at once. "returned"/"rejected" live on
//            attempts and results: verification runs inside RecordResult.
//   attempt: leased -> returned | expired | lost | cancelled | failed
//   result:  pending -> agreed | disagreed | dropped (its worker was banned)
//
// The scheduling transitions (LeaseShard, ExpireLeases, ReleaseWorker,
// RecordResult) take their policy (lease length, retry limit, comparators)
// as arguments; Scheduler (scheduler.h) is the component that owns that
// policy and is what the daemon calls.
//
// Thread-safety: a Store is safe to use from several threads (one internal
// mutex serializes every call). Several processes may open the same file;
// SQLite's locks and busy_timeout serialize them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "coordinator/verifier.h"
#include "coordinator/verify_policy.h"

struct sqlite3;

namespace pcfarm {

struct WorkerInfo {
  int64_t id = 0;
  std::string name;
  std::string sign_pk;   // Ed25519 public key, raw bytes
  std::string curve_pk;  // Curve25519 public key, raw bytes; unique
  double trust = 0.5;    // (agreed + 1) / (agreed + disagreed + 2)
  int64_t agreed = 0;
  int64_t disagreed = 0;
  bool banned = false;
  std::string devices_json = "[]";
  double speed_gflops = 0;
  int64_t created_ms = 0;
  int64_t last_seen_ms = 0;
  int64_t token_id = 0;  // the enrollment token; 0 = unknown (added, or before v11)
  std::string network;   // public network it last connected from; "" = none known
  // Verification (verify_policy.h): its results compared with an
  // independent copy, its accepted results since it was last caught
  // disagreeing, and its strikes.
  int64_t checks = 0;
  int64_t streak = 0;
  int64_t strikes = 0;
};

enum class ClientRole { kAdmin, kSubmitter };
const char* ClientRoleName(ClientRole role);  // "admin" | "submitter"

struct ClientInfo {
  int64_t id = 0;
  std::string name;      // unique among clients added by AddClient
  std::string curve_pk;  // Curve25519 public key, raw bytes; unique
  ClientRole role = ClientRole::kSubmitter;
  int64_t created_ms = 0;
};

struct ShardSpec {
  std::string params;              // opaque bytes handed to the task kind
  std::string needs_backend;       // "" = any, else "cpu" | "cuda" | "vulkan"
  int64_t needs_memory_bytes = 0;  // device memory the shard needs
};

struct JobSpec {
  std::string kind;      // task kind, e.g. "infer"; selects the comparator
  std::string params;    // JSON text describing the job
  int priority = 0;      // higher runs first
  int redundancy = 1;    // agreeing results from different workers, >= 1
  // How results are checked beyond `redundancy` (verify_policy.h): auto and
  // spot add a check copy to some shards. The CLI's default is auto for
  // LLM jobs; the Store's is redundant (a job as before policies).
  VerifyPolicy verify = VerifyPolicy::kRedundant;
  std::vector<ShardSpec> shards;  // at least one
  // The client that submitted it (ClientInfo::id); 0 = none recorded,
  // which counts as the admin's.
  int64_t owner_client_id = 0;
  // The blobs the job refers to (hex BLAKE2b-256 hashes), each already
  // recorded by RecordBlob; CreateJob links them to the job.
  std::vector<std::string> blobs;
  // The submitting client's key for this submit, the same on each of its
  // retries ("" = none): at most one job per (owner_client_id, request_key).
  std::string request_key;
  // An open-ended job (finetune) does not succeed when its shards so far
  // are all accepted: it waits for AdvanceJob, which adds the next round's
  // shards or ends it.
  bool open_ended = false;
};

struct JobInfo {
  int64_t id = 0;
  std::string kind;
  std::string state;  // queued | running | succeeded | failed | cancelled
  int priority = 0;
  int redundancy = 1;
  VerifyPolicy verify = VerifyPolicy::kRedundant;
  std::string params;
  int64_t shards_total = 0;
  int64_t shards_accepted = 0;
  std::string reason;  // why it failed or was cancelled; "" otherwise
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  // The summary of its accepted results (JSON object text), folded in by
  // RecordResult's SummaryFold when each shard is accepted.
  std::string summary = "{}";
  // The client that submitted it; 0 for jobs made before owners were
  // recorded (schema version 7), which count as the admin's.
  int64_t owner_client_id = 0;
  bool open_ended = false;  // JobSpec::open_ended
  // Shards of an open-ended job cancelled when their round proceeded
  // without them (JobAdvance::drop_unaccepted); 0 for other jobs.
  int64_t shards_dropped = 0;
};

// What an open-ended job's planner decided once every shard it had was
// accepted (Store::AdvanceJob). An advance also empties the bodies (the
// outputs: gradients, pseudo-gradients) of the results of every shard
// before the new round: the planner has aggregated them, checks and
// agreement only read the round in flight, a rewind re-runs its rounds,
// and fetch reads the job's versions and rounds, not its results. The
// rows stay, with their signed envelopes (which name an uploaded output
// by hash), outcomes and times.
struct JobAdvance {
  enum class End { kContinue, kSucceed, kFail };
  // The job's shards_total the planner saw: an advance made from a stale
  // view (or applied twice) changes nothing.
  int64_t expected_shards_total = 0;
  // The round proceeds without its shards not accepted yet: they are
  // cancelled (their live attempts too, reported to AdvanceJob's caller)
  // and counted in shards_dropped. The job's shards_accepted must then
  // still be expected_shards_accepted (no result came in meanwhile).
  bool drop_unaccepted = false;
  int64_t expected_shards_accepted = -1;
  // When set, the job's summary the advance was planned from: AdvanceJob
  // refuses it once the summary changed (a rewind, a fold, another advance).
  std::optional<std::string> planned_summary;
  // When results_from_shard >= 0: the accepted results (ids, by shard index)
  // of the job's shards from that index on, as the planner read them.
  // AdvanceJob refuses it when they differ now: a rewind or a re-run
  // replaced one while it was planned off the event loop (advancer.h).
  int64_t results_from_shard = -1;
  std::vector<int64_t> expected_result_ids;
  End end = End::kContinue;
  std::string summary;              // the job's new summary (JSON text)
  std::vector<ShardSpec> shards;    // kContinue: the next round's (>= 1)
  // Blobs the planner wrote into the blob store (hex hash, size): recorded
  // and linked to the job in the same transaction.
  std::vector<std::pair<std::string, int64_t>> blobs;
  // When round >= 0, a job_rounds row (round, info JSON text) is written.
  int64_t round = -1;
  std::string round_info;
  std::string reason;  // kFail: why; kSucceed: the event's message
};

struct JobRound {
  int64_t round = 0;
  std::string info;  // JSON text
  int64_t created_ms = 0;
};

struct ShardInfo {
  int64_t id = 0;
  int64_t job_id = 0;
  int64_t idx = 0;
  std::string state;
  int64_t attempts_failed = 0;
  int64_t accepted_result_id = 0;  // 0 until accepted
};

struct EventInfo {
  int64_t id = 0;
  int64_t ts_ms = 0;
  std::string kind;
  int64_t job_id = 0;     // 0 = none
  int64_t worker_id = 0;  // 0 = none
  std::string message;
};

// What a worker can run: the backends of its devices and the largest memory.
// One device a worker declared, as the scheduler matches shards to it.
struct DeviceCap {
  std::string backend = "cpu";  // "cpu" | "vulkan" | "cuda"
  int64_t memory_bytes = 0;     // usable now (device_caps.h)
};

// What a worker's devices can take. A shard is leased to the worker only
// when one device both runs the shard's backend (any, when it names none)
// and holds its memory need: a worker whose CPU has 32 GiB and whose GPU
// has 8 GiB takes no CUDA shard of 10 GiB.
struct DeviceCaps {
  std::vector<DeviceCap> devices;
  // The largest usable memory of a device of `backend` ("" = any device);
  // -1 when there is none.
  int64_t MemoryFor(std::string_view backend) const {
    int64_t best = -1;
    for (const DeviceCap& d : devices)
      if (backend.empty() || d.backend == backend) best = std::max(best, d.memory_bytes);
    return best;
  }
};

struct Lease {
  int64_t attempt_id = 0;
  int64_t shard_id = 0;
  int64_t shard_idx = 0;
  int64_t job_id = 0;
  std::string job_kind;
  std::string shard_params;
  int64_t deadline_ms = 0;
  // Nonzero: the attempt checks this result of the shard with the job's
  // check kind (JobPlanner::check_kind) instead of running the shard.
  int64_t checks_result_id = 0;
  // The shard's needs (ShardSpec), which the worker matches to a device.
  std::string needs_backend;
  int64_t needs_memory_bytes = 0;
};

// An attempt the daemon should tell its worker to stop (CANCEL message).
struct CancelledAttempt {
  int64_t attempt_id = 0;
  int64_t worker_id = 0;
};

// What a transition did besides its main effect, for the daemon to act on.
struct TransitionReport {
  std::vector<int64_t> released_attempts;     // expired, lost or failed
  std::vector<int64_t> released_workers;      // [i] held released_attempts[i]
  std::vector<CancelledAttempt> cancelled;    // tell these workers to stop
  std::vector<int64_t> failed_jobs;
};

enum class ResultVerdict {
  kWaiting,   // stored; the shard needs more results
  kAccepted,  // stored, and this result completed the shard's agreement
  kDisagreed, // stored; results disagree, the shard needs another run
};

struct RecordOutcome {
  ResultVerdict verdict = ResultVerdict::kWaiting;
  int64_t result_id = 0;
  bool job_finished = false;  // the job succeeded or failed with this result
  // This result completed the last shard of an open-ended job, which now
  // waits for AdvanceJob.
  bool job_awaits_advance = false;
  // The shard's only result was picked for a check (verify_policy.h): it
  // waits for an independent copy (verdict kWaiting).
  bool check_ordered = false;
  // Workers this judgement quarantined (their third strike): the daemon
  // disconnects them; their cancelled attempts are in `report`.
  std::vector<int64_t> quarantined;
  TransitionReport report;
};

// A uniform draw in [0, 1) that decides whether a result is checked
// (verify_policy.h); nullptr: libsodium's randombytes.
using CheckDie = std::function<double()>;

// Folds the accepted result `body` of shard `shard_idx` into the `summary`
// of its `kind` job and returns the new summary (job_summary.h has the one
// the daemon uses).
using SummaryFold = std::function<std::string(
    std::string_view kind, std::string_view summary, int64_t shard_idx,
    std::string_view body)>;

// Whether a failed attempt (the worker reported it failed, its lease
// expired, or the worker was lost) counts against its shard's budget of
// max_failed_attempts. It does while the worker has failed no more often
// than its results were accepted (agreed), plus one: `worker_failed`
// (counting this failure) <= `worker_agreed` + 1. A worker that fails far
// more often than it delivers (a broken PC, or identities that answer
// ok=false to drive jobs to their retry limit) then stops counting: each
// identity gets one counted failure plus one per result of its that was
// accepted, so failing jobs costs as much real, verified work. Its failures still
// count toward a second budget, kUncountedFailureFactor times
// max_failed_attempts failures of any kind, which ends any shard, so that
// no job is retried forever.
inline bool FailureCounts(int64_t worker_failed, int64_t worker_agreed) {
  return worker_failed <= worker_agreed + 1;
}
inline constexpr int kUncountedFailureFactor = 4;

// What a RESULT for an attempt must answer, and how to check it.
struct AttemptWork {
  std::string shard_hash;  // "" when the shard body was never sent
  std::string kind;
  std::string params;
  int64_t checks_result_id = 0;  // Lease::checks_result_id
  int64_t job_id = 0;
};

// An accepted shard, as `pcfarm fetch` needs it.
struct AcceptedResult {
  int64_t shard_idx = 0;
  int64_t result_id = 0;    // the results row
  std::string params;       // the shard's params
  std::string body;         // the accepted result's body: the shard's output
  int64_t worker_id = 0;    // the worker whose result was accepted
  std::string worker_name;  // its name
};

class Store {
 public:
  // Opens or creates the database at `path` and runs the missing
  // migrations, in order, each once, all in one transaction: when one fails
  // the database keeps the version it had (the error names the migration).
  // A database whose schema version is newer than LatestSchemaVersion() is
  // refused with FailedPrecondition before anything is written to it.
  // `clock` must outlive the Store. `migrate_to` > 0 stops after that
  // migration (tests build a database of an older version with it).
  static Result<std::unique_ptr<Store>> Open(const std::string& path,
                                             const Clock* clock,
                                             int migrate_to = 0);
  // Opens an existing database for reading only (SQLITE_OPEN_READONLY and
  // PRAGMA query_only): a second connection beside the daemon's, for the
  // status page's queries. Runs no migration; FailedPrecondition unless the
  // schema version is LatestSchemaVersion() (the daemon opened it first).
  // Every writing call on it fails.
  static Result<std::unique_ptr<Store>> OpenReadOnly(const std::string& path,
                                                     const Clock* clock);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // Group commit. Between BeginBatch and CommitBatch every transition runs
  // as a savepoint of one open transaction: each is still all-or-nothing,
  // and all become durable together at CommitBatch (one fsync instead of
  // one per transition). A caller that promises durability (an ACK) must
  // wait for CommitBatch to return OK. If CommitBatch fails, everything
  // since BeginBatch is rolled back. FailedPrecondition when a batch is
  // already open / not open.
  Status BeginBatch();
  Status CommitBatch();

  // Deferred durability (see the top of this file). EnableDeferredSync
  // switches this connection to synchronous=NORMAL and opens the WAL file;
  // SyncWal may then run on any thread, concurrently with the other calls
  // (it touches no SQLite state), and returns OK only when everything the
  // WAL held when it started is on disk. FailedPrecondition from SyncWal
  // when deferred sync is not enabled.
  Status EnableDeferredSync();
  Status SyncWal();

  // The schema version after migrations (the number of the last one).
  Result<int> SchemaVersion();
  // The schema version this build migrates to (coordinator/store_schema.cc).
  static int LatestSchemaVersion();

  // ---- workers ----
  // AlreadyExists when `curve_pk` is registered.
  Result<int64_t> AddWorker(const std::string& name, std::string_view sign_pk,
                            std::string_view curve_pk);
  // Consumes one use of the token and adds the worker in one transaction; the
  // token keeps its use when the worker cannot be added.
  Result<int64_t> EnrollWorker(std::string_view token_secret_hash,
                               const std::string& name,
                               std::string_view sign_pk,
                               std::string_view curve_pk);
  Result<WorkerInfo> GetWorker(int64_t worker_id);
  // NotFound when no worker has that key.
  Result<WorkerInfo> FindWorkerByCurveKey(std::string_view curve_pk);
  Status SetWorkerDevices(int64_t worker_id, const std::string& devices_json,
                          double speed_gflops);
  // The public network the worker connects from (IndependenceNetwork in
  // scheduler.h; "" when private or unknown), for the independence rule.
  Status SetWorkerNetwork(int64_t worker_id, const std::string& network);
  // Sets last_seen_ms to now, and available_ms too when `available` (it is
  // connected and not paused by its idle policy: a check may be drawn for
  // it, see LeaseShard).
  Status TouchWorker(int64_t worker_id, bool available = true);
  // The worker's connection is gone: it is no longer available (no check
  // is drawn for it) from now, not 15 s later.
  Status WorkerGone(int64_t worker_id);
  // Bans (quarantines) the worker: its leased attempts are cancelled
  // (shards pending again, not counted as failures of the shard), its
  // results not yet verified are dropped, and the shards of running jobs
  // (not open-ended ones: a fine-tuning step is applied when it is
  // accepted) that were accepted on its result alone, unchecked, run again:
  // pending, the result dropped, the job's accepted count and its summary
  // (folded again from its accepted results with `fold`, when given) less
  // that shard. Returns the cancelled attempts.
  Result<TransitionReport> BanWorker(int64_t worker_id,
                                     const std::string& reason,
                                     const SummaryFold& fold = nullptr);
  Result<std::vector<WorkerInfo>> ListWorkers();
  // One page of ListWorkers (by id, ascending or descending), and the
  // number of workers: what the status page's default order reads without
  // every row.
  Result<std::vector<WorkerInfo>> ListWorkersById(int64_t offset, int64_t limit, bool descending);
  Result<int64_t> CountWorkers();
  // Lifts a ban (BanWorker): the worker may connect and get shards again;
  // its dropped results stay dropped. NotFound for an unknown worker.
  Status UnbanWorker(int64_t worker_id, const std::string& reason);

  // ---- enrollment tokens (only the secret's hash is stored) ----
  Result<int64_t> AddToken(std::string_view secret_hash, int uses,
                           int64_t expires_ms);
  // Atomically checks and takes one use. NotFound: unknown hash;
  // FailedPrecondition: expired; ResourceExhausted: no uses left.
  Result<int64_t> ConsumeToken(std::string_view secret_hash);

  // ---- CLI clients ----
  // AlreadyExists when a client named `name` exists or `curve_pk` is
  // registered; the message says which.
  Result<int64_t> AddClient(const std::string& name, std::string_view curve_pk,
                            ClientRole role);
  // NotFound when no client has that key.
  Result<ClientInfo> FindClientByCurveKey(std::string_view curve_pk);
  // NotFound when no client has that name. (A database from before names
  // were unique may hold a name twice: this is the oldest of them.)
  Result<ClientInfo> FindClientByName(const std::string& name);
  // Every client, by id.
  Result<std::vector<ClientInfo>> ListClients();
  // Removes the client FindClientByName(name) finds. NotFound when there
  // is none; FailedPrecondition when it is the last admin (the farm would
  // have nobody left to manage it). Its jobs keep their owner_client_id.
  Status RemoveClient(const std::string& name);

  // ---- jobs ----
  // Creates the job, all its shards and its links to spec.blobs in one
  // transaction, recording spec.owner_client_id as its owner and
  // spec.request_key. When spec.request_key is non-empty and already
  // recorded for spec.owner_client_id (a retried submit whose reply was
  // lost), creates nothing and returns that job's id, in the same
  // transaction. InvalidArgument for an empty kind, no shards, or
  // redundancy < 1; NotFound naming the first of spec.blobs that is not
  // recorded (RecordBlob). Nothing is created when it fails.
  Result<int64_t> CreateJob(const JobSpec& spec);
  // The job CreateJob recorded `request_key` with for `owner_client_id`;
  // NotFound when there is none (or `request_key` is empty).
  Result<int64_t> FindJobByRequestKey(int64_t owner_client_id,
                                      const std::string& request_key);
  Result<JobInfo> GetJob(int64_t job_id);
  // Newest first, at most `limit` (<= 0: no limit); `state` "" = any state;
  // `owner_client_id` >= 0: only the jobs of that owner (0: those made
  // before owners were recorded), -1: everyone's.
  Result<std::vector<JobInfo>> ListJobs(const std::string& state = "",
                                        int limit = 1000,
                                        int64_t owner_client_id = -1);
  Result<std::vector<ShardInfo>> ListShards(int64_t job_id);
  // How many shards are in each state (pending, leased, accepted, ...):
  // of one job when job_id > 0, else of the jobs still queued or running. States with no shard
  // are left out.
  Result<std::vector<std::pair<std::string, int64_t>>> CountShardsByState(
      int64_t job_id = 0);
  // Cancels a queued or running job: its live attempts become cancelled and
  // are returned; FailedPrecondition when the job already finished.
  Result<TransitionReport> CancelJob(int64_t job_id, const std::string& reason);
  // The same, ending the job `failed` with `reason` (e.g. a blob it needs
  // is damaged on the coordinator's disk).
  Result<TransitionReport> FailJob(int64_t job_id, const std::string& reason);
  // The accepted shards of the job with idx >= `from_shard_idx`, by idx:
  // each shard's params, its accepted body and that result's worker. With
  // `max_bytes` > 0 it stops before the shard that would take the params
  // and bodies returned past max_bytes, but returns at least one (a fetch
  // pages with it). Empty for an unknown job.
  Result<std::vector<AcceptedResult>> AcceptedResults(int64_t job_id,
                                                      int64_t from_shard_idx = 0,
                                                      int64_t max_bytes = 0);

  // ---- open-ended jobs (finetune) ----
  // Applies `advance` to the running open-ended job, in one transaction:
  // records and links its blobs, writes its summary and round row, then
  // appends its shards (idx from shards_total on) or ends the job.
  // FailedPrecondition, changing nothing, when the job is not running, not
  // open-ended, has a shard not settled (accepted or dropped; with
  // drop_unaccepted: other than expected_shards_accepted accepted), or has
  // other than expected_shards_total shards (a stale or repeated advance).
  // InvalidArgument for kContinue without shards. The attempts it cancels
  // (drop_unaccepted) go into `report` when given.
  Status AdvanceJob(int64_t job_id, const JobAdvance& advance,
                    TransitionReport* report = nullptr);
  // Running or queued open-ended jobs, by id, settled or not: the ones
  // whose round may proceed with a quorum are among them.
  Result<std::vector<JobInfo>> RunningOpenEndedJobs();
  // Running open-ended jobs whose every shard is accepted, by id: what
  // AdvanceJob must be called for (after a restart too).
  Result<std::vector<JobInfo>> JobsAwaitingAdvance();
  // The job's rounds with round >= from_round, in order, at most `limit`
  // (<= 0: no limit).
  Result<std::vector<JobRound>> JobRounds(int64_t job_id, int64_t from_round = 0,
                                          int limit = 0);

  // ---- blobs (records; bytes live in BlobStore) ----
  // Records the blob, or (recorded before) sets its record time to now: a
  // blob uploaded or stored again gets the collector's grace again.
  // `collectable`: made by the coordinator or a worker (an output, a
  // claim), so DropUnlinkedBlobs may delete it once no job links it; a
  // blob a client uploaded (false) is never collectable again.
  Status RecordBlob(const std::string& hash_hex, int64_t size, bool collectable = false);
  // True iff RecordBlob recorded `hash_hex`.
  Result<bool> HasBlob(const std::string& hash_hex);
  Status LinkJobBlob(int64_t job_id, const std::string& hash_hex);
  // True iff a job of `owner_client_id` is linked to the blob (what a
  // submitter may read back, e.g. its fine-tuned adapter).
  Result<bool> OwnerHasJobBlob(int64_t owner_client_id, const std::string& hash_hex);
  Result<std::vector<std::string>> JobBlobs(int64_t job_id);
  // The queued and running jobs linked to the blob, by id.
  Result<std::vector<int64_t>> ActiveJobsOfBlob(const std::string& hash_hex);
  // ---- blob garbage collection (server.cc CollectBlobs) ----
  // Up to `limit` ended jobs (succeeded, failed, cancelled) whose blobs
  // were not released yet, oldest first.
  Result<std::vector<JobInfo>> EndedJobsToRelease(int limit);
  // Unlinks from ended job `job_id` every blob not in `keep` (its output
  // and inputs, JobPlanner::BlobsToKeep) and marks it released; returns how
  // many links went. FailedPrecondition when the job has not ended.
  Result<int64_t> ReleaseJobBlobs(int64_t job_id, const std::vector<std::string>& keep);
  // A running open-ended job's rewind horizon (server.cc CollectBlobs). Its
  // round starts (job_round_starts), newest first, are kept while the bytes
  // of the blobs their summaries name (versions, optimizer states) that
  // neither `keep` (its inputs, JobPlanner::BlobsToKeep), the job's summary
  // nor the newest start names add up to at most `keep_bytes`; the older
  // starts are deleted, so a quarantine rewinds the job no further back
  // than the oldest one left (RewindForBannedTx). Then the job's links to
  // blobs recorded before that round began (its job_rounds row's time)
  // that no kept start, the summary or `keep` names go: the versions and
  // optimizer states of the rounds before it, and claims of their checks.
  // Nothing changes for a job that is not a running open-ended one, has
  // fewer than two starts, or whose starts all fit.
  struct RoundTrim {
    int64_t starts = 0;        // round starts deleted
    int64_t oldest_round = 0;  // the oldest round a rewind can go back to
    int64_t blobs = 0;         // links removed
    int64_t bytes = 0;         // their blobs' sizes
  };
  Result<RoundTrim> TrimRoundStarts(int64_t job_id, int64_t keep_bytes,
                                    const std::vector<std::string>& keep);
  // Deletes the records of up to `limit` collectable blobs linked to no job
  // and recorded before `before_ms` (worker outputs, already copied into
  // the results table; released versions and optimizer states) and returns
  // their hashes: the caller removes the files once this commit is durable.
  Result<std::vector<std::string>> DropUnlinkedBlobs(int64_t before_ms, int limit);

  // ---- events ----
  Status AddEvent(const std::string& kind, int64_t job_id, int64_t worker_id,
                  const std::string& message);
  // Deletes events older than `max_age_ms` and all but the newest
  // `max_rows`; returns how many were deleted. Cheap when there is nothing
  // to delete (the daemon calls it every heartbeat tick).
  Result<int64_t> PruneEvents(int64_t max_age_ms, int64_t max_rows);
  // Events with id > after_id, oldest first, at most `limit`.
  Result<std::vector<EventInfo>> ListEvents(int64_t after_id = 0,
                                            int limit = 1000);
  // The newest `limit` events, oldest first.
  Result<std::vector<EventInfo>> LatestEvents(int limit);

  // ---- scheduling transitions (called through Scheduler) ----
  // Leases the best pending shard `worker_id` can run, or nullopt when none.
  // Order: job priority (high first), then the job with the fewest live
  // attempts, then the oldest job, then shard idx. Never a shard this worker
  // holds, returned, failed or let expire (one it lost or that was
  // cancelled it may take again, and one it let expire when the shard waits
  // for a check copy). PermissionDenied for a banned worker.
  // With `verifier`, a shard of a job whose kind has a cheap check
  // (Verifier::CheckFor) that waits for the check of its one result gets a
  // check attempt (Lease::checks_result_id); without, every attempt runs
  // the shard. A check or deciding copy goes only to the worker drawn for
  // it among those available within `available_within_ms` (see the SQL).
  Result<std::optional<Lease>> LeaseShard(int64_t worker_id,
                                          const DeviceCaps& caps,
                                          int64_t lease_ms,
                                          const Verifier* verifier = nullptr,
                                          int64_t available_within_ms = 15'000);
  // The workers drawn now for the checks and deciding copies that wait
  // (pending shards with copies > 0 of live jobs, at most 1000), each
  // once: the daemon offers them work when idle (a draw changes as
  // streaks and availability do, with no event of its own).
  Result<std::vector<int64_t>> DrawnCheckers(int64_t available_within_ms);
  // The body of result `result_id`; NotFound when there is none.
  Result<std::string> GetResultBody(int64_t result_id);
  // How many shards are pending (want another attempt). Cheap (an index).
  Result<int64_t> CountPendingShards();
  // Whether a pending shard belongs to a job whose results are checked
  // (verify auto or spot): work on which a new worker can earn trust.
  Result<bool> CheckedWorkPending();
  // Marks leased attempts past their deadline expired.
  Result<TransitionReport> ExpireLeases(int max_failed_attempts);
  // Marks the worker's leased attempts lost, but those in `keep` (attempts
  // it still runs or has a result for).
  Result<TransitionReport> ReleaseWorker(int64_t worker_id,
                                         int max_failed_attempts,
                                         const std::vector<int64_t>& keep = {});
  // The worker's leased attempts, by id.
  Result<std::vector<int64_t>> LiveAttempts(int64_t worker_id);
  // A lease lasts while its worker runs the shard: of `attempt_ids` (what
  // the worker's heartbeat says it runs), those leased to `worker_id` whose
  // deadline is less than half of `lease_ms` away get the deadline
  // now + lease_ms, but never past leased_ms + `max_attempt_ms`. Returns
  // the renewed attempts and their new deadlines; others are left alone
  // (at most one write per attempt per half lease).
  struct RenewedLease {
    int64_t attempt_id = 0;
    int64_t deadline_ms = 0;
  };
  Result<std::vector<RenewedLease>> RenewLeases(int64_t worker_id,
                                                const std::vector<int64_t>& attempt_ids,
                                                int64_t lease_ms, int64_t max_attempt_ms);
  // Stores a result and verifies the shard. NotFound: unknown attempt;
  // PermissionDenied: the attempt belongs to another worker; AlreadyExists:
  // the attempt already has a result (a replay or a resend after a lost ACK:
  // the result is durably stored, the daemon may ACK again);
  // FailedPrecondition: the attempt expired, was lost or was cancelled.
  // When a result completes its shard's agreement, `fold` (if set) updates
  // the job's summary in the same transaction.
  Result<RecordOutcome> RecordResult(int64_t attempt_id, int64_t worker_id,
                                     std::string_view body,
                                     std::string_view signature,
                                     const Verifier& verifier,
                                     int max_failed_attempts,
                                     const SummaryFold& fold = nullptr,
                                     const CheckDie& die = nullptr);

  // A job's verification so far: shards accepted on two or more agreeing
  // results, and the run time (attempt lease to result) of the results
  // its accepted shards were accepted on (useful) and of every other
  // result its shards received (extra: checks, copies, disagreeing ones).
  struct JobVerification {
    int64_t checked_shards = 0;
    int64_t useful_ms = 0;
    int64_t extra_ms = 0;
  };
  Result<JobVerification> GetJobVerification(int64_t job_id);

  // A worker reports it could not run its attempt (`error`, e.g. out of
  // memory): the attempt fails and counts as a failure of the shard. Error
  // codes as RecordResult's; AlreadyExists also when it already failed.
  Result<TransitionReport> FailAttempt(int64_t attempt_id, int64_t worker_id,
                                       const std::string& error,
                                       int max_failed_attempts);
  // Records the hash of the exact shard body sent for the attempt, which its
  // result must bind. NotFound for an unknown attempt.
  Status SetAttemptShardHash(int64_t attempt_id, std::string_view hash);
  // The recorded hash; NotFound when the attempt is unknown or none was set.
  Result<std::string> AttemptShardHash(int64_t attempt_id);
  // The attempt's recorded shard hash, its job's kind and its shard's
  // params; NotFound for an unknown attempt.
  Result<AttemptWork> GetAttemptWork(int64_t attempt_id);

  // Checks the database's integrity and the invariants the transitions keep
  // (counters equal row counts, an accepted shard has one agreeing result
  // set and no live attempt, ...). Corruption names the first broken one.
  Status CheckConsistency();

 private:
  class Db;
  Store(std::unique_ptr<Db> db, const Clock* clock, std::string path);
  Result<TransitionReport> EndJob(int64_t job_id, const char* state, const std::string& reason);

  std::mutex mu_;
  std::unique_ptr<Db> db_;
  const Clock* clock_;
  const std::string path_;
  std::mutex wal_mu_;  // guards wal_fd_ (SyncWal's own lock, not mu_)
  int wal_fd_ = -1;
};

}  // namespace pcfarm
