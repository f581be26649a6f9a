// JobPlanner: what one kind of job means to the coordinator (DESIGN.md §6).
//
// Each job kind (bench, infer, later finetune) has one planner. The client
// handlers ask it for the shards a submitted job starts with (Plan); the
// event loop asks it which blobs a worker needs for the job's shards
// (ShardBlobs), folds each accepted shard into the job's summary (Fold) and
// renders the job's results for `pcfarm fetch` (Output, OutputTail). The
// server stays an event loop and the scheduler stays policy: neither knows
// what a kind's params mean.
//
// Thread-safety: every method may be called from any thread (a planner's
// caches are guarded by its own mutex).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "base/status.h"
#include "coordinator/blob_store.h"
#include "coordinator/store.h"
#include "proto/pcfarm.pb.h"

namespace pcfarm {

struct JobPlan {
  std::string params;              // the job's own params, as stored
  std::vector<ShardSpec> shards;   // at least one
  // Every blob the job refers to (its shards' and its own, e.g. a prompts
  // file): all must be in the blob store, and are linked to the job.
  std::vector<std::string> blobs;
  // The job gets its shards round by round (JobPlanner::open_ended).
  bool open_ended = false;
};

// One accepted shard as `pcfarm fetch` renders it.
struct FetchedShard {
  int64_t index = 0;
  std::string params;   // the shard's params
  std::string output;   // its accepted result
  std::string worker;   // the name of the worker that produced it
};

class JobPlanner {
 public:
  virtual ~JobPlanner() = default;
  virtual std::string_view kind() const = 0;

  // The shards of a job submitted with `request` (its kind is kind()).
  // InvalidArgument names what is wrong; NotFound names a blob the
  // coordinator does not hold. Reads blobs the params name from `blobs`.
  virtual Result<JobPlan> Plan(const wire::SubmitRequest& request,
                               const BlobStore& blobs) const = 0;

  // The blobs (hex hashes) a worker needs to run any shard of a job with
  // these params; they go into every ShardBody.blob_hashes. Empty when the
  // params are malformed (Plan refused those).
  virtual std::vector<std::string> ShardBlobs(std::string_view job_params) const = 0;

  // The job's summary (JSON object text; kEmptyJobSummary before any) with
  // the accepted result `output` of shard `index` folded in.
  virtual std::string Fold(std::string_view summary, int64_t index,
                           std::string_view output) const = 0;

  // The summary `pcfarm status` shows: the folded summary in the job's row,
  // with what the planner adds from the job's params (infer: the prompts'
  // total). The default is the row's summary.
  virtual std::string Summary(const JobInfo& job) const { return job.summary; }

  // The job's output for these accepted shards (in index order), and what
  // follows the last shard (bench: the summary). Both are appended, in
  // that order, to the file `pcfarm fetch` writes.
  virtual std::string Output(const std::vector<FetchedShard>& shards) const = 0;
  virtual std::string OutputTail(const JobInfo& job) const = 0;

  // The task kind its shards run (ShardBody.kind, the comparator, the
  // output check): kind() unless they differ (finetune jobs run `train`).
  virtual std::string_view task_kind() const { return kind(); }

  // Blobs one shard needs beyond ShardBlobs(job params), named by its own
  // params (finetune: the adapter version of its step).
  virtual std::vector<std::string> ShardOwnBlobs(std::string_view shard_params) const {
    (void)shard_params;
    return {};
  }

  // The work (FLOP) of running one shard with `shard_params` of a job with
  // `job_params`, roughly (within 2x), to hold a worker's claimed speed to
  // its measured shard times (scheduler.h EarnedSpeed); 0 when unknown.
  virtual double ShardFlops(std::string_view job_params, std::string_view shard_params) const {
    (void)job_params, (void)shard_params;
    return 0;
  }

  // The blobs an ended `job` keeps linked (its inputs and what `pcfarm
  // fetch` reads); the others it made are unlinked and, once linked to no
  // job, deleted (server.cc CollectBlobs). nullopt, the default: it keeps
  // every blob linked to it.
  virtual std::optional<std::vector<std::string>> BlobsToKeep(const JobInfo& job) const {
    (void)job;
    return std::nullopt;
  }

  // ---- cheap checks (verify auto/spot; DESIGN.md §8.3) ----
  // The task kind that checks one result of this job's shards more cheaply
  // than running the shard again (infer: `infer_check`, one teacher-forced
  // pass); "" when a check is a second run of the shard.
  virtual std::string_view check_kind() const { return ""; }
  // The params of the check of a shard with `shard_params` whose claimed
  // result is the blob `claim_hash_hex` (the result body, stored in the
  // blob store and listed in the check shard's blob hashes).
  virtual Result<std::string> CheckParams(std::string_view shard_params,
                                          std::string_view claim_hash_hex) const {
    (void)shard_params, (void)claim_hash_hex;
    return FailedPrecondition("job kind " + std::string(kind()) + " has no check kind");
  }
  // Whether a check result (valid for check_kind()) says the checked
  // result holds.
  virtual Result<bool> CheckHolds(std::string_view check_output) const {
    (void)check_output;
    return FailedPrecondition("job kind " + std::string(kind()) + " has no check kind");
  }

  // ---- open-ended kinds (finetune) ----
  // An open-ended job gets its shards round by round: Plan makes the first
  // round's, and whenever every shard so far is accepted the event loop
  // calls Advance and applies its answer with Store::AdvanceJob.
  virtual bool open_ended() const { return false; }
  // Whether the running open-ended `job`'s current round may be planned on
  // now: by default when every shard so far is settled (accepted or
  // dropped); a planner may also say yes with a quorum of the round's
  // shards accepted (finetune --quorum), and Advance then drops the rest.
  virtual bool ReadyToAdvance(const JobInfo& job, int64_t now_ms) const {
    (void)now_ms;
    return job.shards_accepted + job.shards_dropped == job.shards_total;
  }
  // What follows: the next round's shards, or the job's end (kSucceed, or
  // kFail with the reason). Reads the round's results from `store`, writes
  // the blobs it makes into `blobs` (durable before it returns) and lists
  // them in the answer; `now_ms` times the round. An error is transient (the
  // event loop tries again later); a verdict on the job is a kFail answer.
  virtual Result<JobAdvance> Advance(const JobInfo& job, Store& store, BlobStore& blobs,
                                     int64_t now_ms) const {
    (void)store, (void)blobs, (void)now_ms;
    return FailedPrecondition("job " + std::to_string(job.id) + " of kind " + job.kind +
                              " is not open-ended");
  }
  // What `pcfarm fetch` gets for an open-ended job instead of the shards'
  // output: its rounds (job_rounds, in order) and its output's description.
  virtual std::string RoundsOutput(const JobInfo& job,
                                   const std::vector<JobRound>& rounds) const {
    (void)job, (void)rounds;
    return "";
  }
};

// Every planner, for the process's lifetime.
const std::vector<std::unique_ptr<JobPlanner>>& AllPlanners();

// The task kind that shards of a `job_kind` job run.
std::string_view TaskKindOfJob(std::string_view job_kind);

// ---- helpers shared by the planners ----
// True iff `v` is a string of 64 hex digits.
bool IsBlobHashJson(const nlohmann::json& v);
// The hashes of the {file name: blob hash} map p[field] (empty when absent),
// or InvalidArgument naming `field`.
Result<std::vector<std::string>> FileHashes(const nlohmann::json& p, const char* field);
// The whole blob, at most `max_bytes` (InvalidArgument naming `what` past it).
Result<std::string> ReadWholeBlob(const BlobStore& blobs, const std::string& hash,
                                  int64_t max_bytes, const std::string& what);

// The planner of `kind`, or nullptr. Lives for the process.
const JobPlanner* FindPlanner(std::string_view kind);

// The summary fold the scheduler applies (store.h SummaryFold): the kind's
// planner's Fold, or a shard count for a kind without one.
std::string FoldWithPlanner(std::string_view kind, std::string_view summary,
                            int64_t index, std::string_view output);

std::unique_ptr<JobPlanner> MakeBenchPlanner();
std::unique_ptr<JobPlanner> MakeInferPlanner();
std::unique_ptr<JobPlanner> MakeFinetunePlanner();

}  // namespace pcfarm
