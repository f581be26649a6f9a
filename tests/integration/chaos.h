// ChaosDriver: random kill -9 of the coordinator and of workers while a
// real LLM job runs on a MiniCluster, and the checks that nothing was lost,
// nothing accepted twice and the output is the undisturbed run's (issue 17;
// STYLE.md habit 8). Test-only code: chaos_test runs a few trials in CI,
// bench/farm/chaos_bench runs many and prints the figures.
//
// A trial is fixed by (seed, job kind). The driver keeps one MiniCluster
// per job kind (a coordinator and `workers` workers), started on the first
// trial of that kind, together with the undisturbed reference: the same job
// run once without kills, its output and its wall time. A trial then
//   1. draws a schedule from the seed: 1..max_kills kills, each of the
//      coordinator, of one random worker or of both at once, each at a
//      progress point (after A of the reference's S shards were accepted,
//      A uniform in [0, S)) plus a random part of one shard's time (the
//      reference's wall time / S, so the same on a slow machine), and
//      restarted after a random pause (0..down_max_ms);
//   2. submits the job and plays the schedule against the job's progress
//      as the coordinator's database shows it (no fixed sleeps: the same
//      seed kills at the same progress points on a fast or a slow
//      machine). Just before a kill every running worker is stopped
//      (SIGSTOP) for the moment it takes to read the job's state and send
//      the kill, so that a kill planned mid-job lands mid-job; a kill whose
//      moment comes after the job ended is recorded as not done;
//   3. waits for the job's end and checks the invariants (ChaosTrial).
// Each trial leaves its cluster with every process running again; a
// cluster whose coordinator cannot be restarted is replaced for the next
// trial (the reference is kept: outputs do not depend on the cluster).
//
// Thread-safety: none; one thread drives a ChaosDriver.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {

// The jobs a trial can run; each is small (a tiny model), and each kind of
// job is the same job on every trial.
enum class ChaosJob {
  kInfer,           // submit infer: 16 prompts, 2 per shard, 24 tokens, small
  kFinetuneSync,    // submit finetune: 8 steps of 3 shards (micro-batch 2)
  kFinetuneDiloco,  // --mode diloco: 4 rounds of 2 local steps, 3 replicas
};
// "infer", "finetune", "diloco".
const char* ChaosJobName(ChaosJob job);
// The inverse of ChaosJobName; InvalidArgument names the known ones.
Result<ChaosJob> ParseChaosJob(std::string_view name);

// One kill of a schedule: what is planned, then what happened.
struct ChaosKill {
  bool coordinator = false;  // kill -9 the coordinator
  int worker = -1;           // and/or this worker (index); -1: none
  int64_t at_accepted = 0;   // once the job has this many shards accepted,
  int delay_permille = 0;    // and this many thousandths of a shard later,
  int down_ms = 0;           // and restarted after this pause
  // Filled in by the trial.
  int delay_ms = 0;            // delay_permille of the reference's shard time
  bool done = false;           // false: the job had ended before its moment
  int64_t accepted_then = -1;  // the job's accepted shards at the kill
  int64_t at_ms = -1;          // ms after the submit

  // "coordinator+w1 @3+0.250 down 400ms (at 1.20 s, 3 accepted)", or
  // "... (not done: job over)".
  std::string Describe() const;
};

// The record of one trial. Every check is true when it held.
struct ChaosTrial {
  uint64_t seed = 0;
  ChaosJob job = ChaosJob::kInfer;
  std::vector<ChaosKill> kills;
  int64_t job_id = 0;
  std::string end_state;  // the job's state at its end ("" if it never ended)
  double seconds = 0;     // submit to the job's end, wall time
  double reference_seconds = 0;  // the same for the undisturbed run

  // Counts read from the coordinator's database at the end.
  int64_t shards = 0;          // shards the job has (the reference's count)
  int64_t results_lost = 0;    // shards with no accepted result, or missing
  int64_t accepted_twice = 0;  // shards whose acceptance shows twice (below)

  bool succeeded = false;         // the job ended 'succeeded'
  bool nothing_lost = false;      // results_lost == 0
  bool none_accepted_twice = false;  // accepted_twice == 0
  bool store_consistent = false;  // Store::CheckConsistency on the live db
  bool output_identical = false;  // fetched output == the reference's
  bool log_complete = true;       // finetune: trainer_log has every step/round
  // What failed, for a person ("" when ok()).
  std::string problems;
  // The tails of the cluster's logs when the trial failed ("" otherwise).
  std::string logs;

  bool ok() const {
    return succeeded && nothing_lost && none_accepted_twice && store_consistent &&
           output_identical && log_complete && problems.empty();
  }
  int coordinator_kills() const;  // done ones
  int worker_kills() const;       // done ones
  // One line: seed, job, kills, checks, times.
  std::string Describe() const;
};

struct ChaosOptions {
  int workers = 2;            // workers per cluster
  int worker_slots = 1;       // shards each worker runs at once
  int max_kills = 4;          // kills per trial: 1..max_kills
  int down_max_ms = 1000;
  // A lease longer than any shard of these jobs even under the sanitizers,
  // so that a lease that runs out is never why a job is slow or stalls.
  int64_t lease_ms = 6000;
  int job_timeout_ms = 300'000;  // a trial's job must end within this
  // Undisturbed runs per job kind; the last one's time is the reference
  // (the first also uploads the model and fills the workers' caches). Each
  // must give the same output.
  int reference_runs = 2;
  std::string log_level = "info";
};

class ChaosDriver {
 public:
  // `work_dir`: where models, inputs and reference outputs go (made if
  // missing); the clusters make their own temporary directories.
  ChaosDriver(std::string work_dir, ChaosOptions options = {});
  ~ChaosDriver();
  ChaosDriver(const ChaosDriver&) = delete;
  ChaosDriver& operator=(const ChaosDriver&) = delete;

  // Runs one trial. An error when the harness could not do its part (a
  // cluster or the reference run would not start); whatever the job and
  // the daemons did is in the record.
  Result<ChaosTrial> RunTrial(uint64_t seed, ChaosJob job);

  // The schedule a seed gives for a job of `shards` shards on `workers`
  // workers (RunTrial's step 1).
  static std::vector<ChaosKill> Schedule(uint64_t seed, int64_t shards,
                                         const ChaosOptions& options);

 private:
  struct Setup;
  Result<Setup*> SetupFor(ChaosJob job);
  Status StartCluster(Setup* s);

  std::string work_dir_;
  ChaosOptions options_;
  std::map<ChaosJob, std::unique_ptr<Setup>> setups_;
};

}  // namespace pcfarm
