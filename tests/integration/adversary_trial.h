// InferAdversaryFarm: one infer job on a running MiniCluster coordinator, run by
// honest SimWorkers beside InferAdversaries (adversary_infer.h), each of its
// own enrollment token (independent). What both adversary_infer_test (one
// short trial in CI) and bench/farm/adversary_infer_bench (many) run.
//
// One thread steps every SimWorker (zmq::poll over their sockets); while it
// runs a CLI command or joins a worker, another thread steps them, so that
// none goes silent long enough to be dropped.
//
// Ownership: the MiniCluster and zmq context outlive the farm; the farm owns
// its SimWorkers and adversaries. Thread-safety: none.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "base/status.h"
#include "tests/integration/adversary_infer.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {

struct InferTrialSpec {
  // One new identity (its own one-use token) per entry, for this trial only.
  std::vector<InferAdversaryOptions> adversaries;
  // After `pcfarm submit infer` (--model, --prompts, --verify auto, ...).
  std::vector<std::string> submit_args;
  // For the job to end.
  int timeout_ms = 300'000;
};

struct AdversaryOutcome {
  InferCheat cheat = InferCheat::kHonest;
  uint64_t results = 0;  // results it sent, in all (quarantine stops them)
  uint64_t lies = 0;     // of those, results that differ from the honest one
  bool quarantined = false;
  int64_t strikes = 0;
};

struct InferTrialOutcome {
  int64_t job = 0;
  std::string state;           // the job's final state, "timeout" if none
  std::string output;          // `pcfarm fetch`'s lines, without "worker"
  std::vector<AdversaryOutcome> adversaries;  // in the spec's order
  // Honest workers the coordinator quarantined during this trial (outvoted
  // by adversaries that told the same lie). RunTrial unbans and rejoins
  // them afterwards, so that every trial starts with the same farm.
  int honest_quarantined = 0;
  nlohmann::json verification;  // `status JOB --json`'s "verification"
  double seconds = 0;          // submit to the job's end
};

class InferAdversaryFarm {
 public:
  // `honest` is the template of every honest worker's options (its name is
  // numbered; auto_work forced on).
  InferAdversaryFarm(MiniCluster* cluster, zmq::context_t* ctx, SimWorkerOptions honest);
  ~InferAdversaryFarm();

  // Joins `n` more honest SimWorkers, each of a new one-use token.
  Status AddHonest(int n);
  // Joins the spec's adversaries, submits, steps every worker until the
  // job ends (or timeout_ms), fetches its output, reads each adversary's
  // fate, disconnects the adversaries, and unbans and rejoins honest
  // workers that were quarantined.
  Result<InferTrialOutcome> RunTrial(const InferTrialSpec& spec);

  size_t honest_count() const { return honest_.size(); }

 private:
  // A new SimWorker of a new token, enrolled and joined while the others step.
  Result<std::unique_ptr<SimWorker>> Join(SimWorkerOptions o);
  // One round: poll every socket up to wait_ms, step each, answer the
  // adversaries' shards.
  Status StepAll(int wait_ms);
  // Runs fn on this thread while another steps every worker.
  template <typename F>
  auto WhileStepping(F fn);

  MiniCluster* cluster_;
  zmq::context_t* ctx_;
  SimWorkerOptions honest_options_;
  std::vector<std::unique_ptr<SimWorker>> honest_;
  std::vector<std::unique_ptr<SimWorker>> adversary_workers_;
  std::vector<std::unique_ptr<InferAdversary>> adversaries_;
  int joined_ = 0;
  SimWorker* not_stepped_ = nullptr;  // rejoining on the calling thread
};

// `fetch`'s JSONL with each line's "worker" field removed (who ran a shard
// differs from run to run; nothing else may).
std::string WithoutWorkerField(const std::string& jsonl);

}  // namespace pcfarm
