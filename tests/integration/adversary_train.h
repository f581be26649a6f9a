// Test-only gradient adversaries (issue 17): workers that speak the real
// protocol and run the real `train` kind, then send a cheat's result in
// place of the honest one. Never linked into a shipped binary.
//
// A TrainForger turns the honest result of a train shard (tasks/kinds/
// train_result.h: JSON header line + gradient message) into the cheat's:
// it decodes the honest body, changes the values (and the loss where the
// cheat implies another), re-encodes in the same codec (no error feedback)
// and the caller reseals it. The cheats:
//   random    Gaussian values with the honest values' L2 norm; honest loss.
//   scale100  the honest values times 100; honest loss.
//   signflip  the honest values negated; honest loss.
//   zeros     all values 0 (a lazy worker); honest loss, weight and tokens.
//   stale     the kind run on the shard's data with the oldest adapter
//             version this forger has seen (the shard's own adapter until
//             it has seen two versions: honest on the job's first step);
//             that run's loss.
//   replay    the honest result (values, loss, weight, tokens) of the
//             previous shard this forger ran, for another shard (honest for
//             its first shard).
//   alie      "A Little Is Enough" (Baruch et al. 2019): per coordinate
//             j, weight · (μ_j − z·σ_j), where μ and σ are the mean and
//             standard deviation of the per-example gradients (sum / weight)
//             that the colluding forgers computed honestly for shards of the
//             same adapter version (an AlieCollusion they share). With fewer
//             than two in the pool, the proxy σ_j = |μ_j| (per-shard
//             gradients of micro-batches of one or two examples spread about
//             as much as they are large); honest loss.
// Each forger also measures its forgery against the honest result: the
// relative L2 distance, the cosine and the train kind's own Agree() (what
// verification compares).
//
// AdversarialTrainWorker drives a SimWorker (auto_work off) and answers
// every ASSIGN of kind train with the forger's result, any other kind
// honestly.
//
// Thread-safety: none; one thread drives all of them (the collusion too).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {

enum class TrainCheat { kRandom, kScale100, kSignFlip, kZeros, kStale, kReplay, kAlie };

// "random", "scale100", "signflip", "zeros", "stale", "replay", "alie".
const char* TrainCheatName(TrainCheat cheat);
// InvalidArgument naming the accepted names for anything else.
Result<TrainCheat> ParseTrainCheat(std::string_view name);
// Every cheat, in the order above.
std::vector<TrainCheat> AllTrainCheats();

// The honest per-example gradients alie forgers pooled, by adapter version.
struct AlieCollusion {
  // The shift in standard deviations. 0.25 is the paper's z_max for 10
  // workers of which 2 collude (s = floor(n/2 + 1) − m = 4, z = Φ⁻¹(0.6)).
  double z = 0.25;
  std::map<std::string, std::vector<std::vector<float>>> pool;
};

// How one forgery compares with the honest result it replaced.
struct ForgeryMeasure {
  double relative_l2 = 0;  // ||forged − honest|| / max(||forged||, ||honest||)
  double cosine = 1;       // NaN when either is all zeros
  bool agrees = true;      // the train kind's Agree(honest, forged)
  bool changed = false;    // the bytes differ from the honest result's
};

class TrainForger {
 public:
  // `collusion` is for alie only (may be null: the proxy σ alone); it must
  // outlive the forger.
  TrainForger(TrainCheat cheat, uint64_t seed, AlieCollusion* collusion = nullptr);

  TrainCheat cheat() const { return cheat_; }

  // The cheat's result for `a`, whose honest result is `honest` (ok, train
  // kind). `worker` runs the kind again where the cheat needs it (stale).
  // An error status when the honest result does not decode or the forgery
  // does not encode; `measure` (may be null) is filled in.
  Result<wire::ResultBody> Forge(const SimWorker& worker, const SimAssignment& a,
                                 const wire::ResultBody& honest, ForgeryMeasure* measure);

 private:
  TrainCheat cheat_;
  std::mt19937_64 rng_;
  AlieCollusion* collusion_;
  // JSON of the first version seen: {"adapter": files} or {"lora": config}.
  std::optional<std::string> oldest_adapter_;
  std::optional<std::string> last_output_;     // the previous shard's honest output
  uint64_t last_shard_id_ = 0;
};

// What an AdversarialTrainWorker did.
struct AdversaryStats {
  int64_t shards = 0;    // train ASSIGNs answered
  int64_t forged = 0;    // of them, answered with bytes other than honest
  int64_t agreeing = 0;  // of the forged, ones the train kind's Agree accepts
  int64_t errors = 0;    // forgeries that failed (answered honestly instead)
  std::vector<uint64_t> forged_attempts;  // attempt ids answered with a forgery
  double max_cosine = -2, min_relative_l2 = 1e300;  // over the forged
};

class AdversarialTrainWorker {
 public:
  // REQUIRES: `sim` made with auto_work = false and a blob_path.
  AdversarialTrainWorker(std::unique_ptr<SimWorker> sim, TrainForger forger);

  // One turn: Step the SimWorker, then answer what is pending (a forged
  // RESULT and a READY for each). Errors are the SimWorker's.
  Status Step(int timeout_ms);

  SimWorker* sim() { return sim_.get(); }
  const TrainForger& forger() const { return forger_; }
  const AdversaryStats& stats() const { return stats_; }

 private:
  std::unique_ptr<SimWorker> sim_;
  TrainForger forger_;
  AdversaryStats stats_;
};

// ------------------------------------------------------------- trials

// One adversary of a trial, as it ended.
struct AdversaryOutcome {
  TrainCheat cheat;
  std::string name;
  int64_t worker_id = 0;
  AdversaryStats stats;
  bool quarantined = false;
  int64_t strikes = 0;
  int64_t forged_accepted = 0;  // shards of the job accepted on its forgery
};

struct AdversaryTrialOutcome {
  int64_t job = 0;
  std::string state;  // the job's end state ("succeeded", ...; "timeout")
  std::vector<AdversaryOutcome> adversaries;
  double eval_loss = 0;          // `pcfarm local eval` of the fetched adapter
  std::string adapter;           // adapter_model.safetensors' bytes
  int64_t checked_shards = 0;    // status' verification figures
  double overhead = 0;
  int64_t shards = 0;            // shards of the job
  int64_t honest_strikes = 0;    // strikes of the trial's honest workers
  int64_t honest_quarantined = 0;
  double seconds = 0;            // submit to end
};

// A farm of SimWorkers, each enrolled with its own token (so any two are
// independent), in front of a MiniCluster's coordinator: honest ones that
// stay from trial to trial, and adversaries made for one trial. The
// SimWorkers are stepped (their heartbeats go on) during every CLI call and
// join, from a helper thread, so none is dropped as silent.
// REQUIRES: the cluster is Init()ed and its coordinator started; it and
// the model and data files outlive the farm.
class AdversaryFarm {
 public:
  explicit AdversaryFarm(MiniCluster* cluster);
  ~AdversaryFarm();

  // Enrolls and joins `n` more honest workers.
  Status AddHonest(int n);
  int honest() const { return static_cast<int>(honest_.size()); }

  // One trial: `honest` new honest workers replace the farm's (the
  // scheduler offers work to identities with 10 agreeing results first
  // (scheduler.h): honest ones that stayed from trial to trial would leave
  // a new cheat nothing to do), adversaries with `cheats` (one each; alie
  // ones collude) join, `pcfarm submit finetune ARGS` runs to its end (or
  // timeout_ms),
  // the adapter is fetched and evaluated with `pcfarm local eval --model
  // MODEL --data DATA`, and the adversaries leave.
  Result<AdversaryTrialOutcome> RunTrial(int honest, const std::vector<TrainCheat>& cheats,
                                         const std::vector<std::string>& finetune_args,
                                         const std::string& model, const std::string& data,
                                         uint64_t seed, int timeout_ms);

  // `pcfarm local eval --json` of `adapter` (a directory; empty: the base).
  Result<double> EvalLoss(const std::string& model, const std::string& data,
                          const std::string& adapter);

 private:
  Result<std::unique_ptr<SimWorker>> Join(const std::string& name, bool auto_work);
  Status StepAll(int timeout_ms);
  // Runs fn() while a helper thread steps every SimWorker.
  template <typename F>
  auto WhileStepping(F fn);

  MiniCluster* c_;
  std::unique_ptr<zmq::context_t> ctx_;
  std::vector<std::unique_ptr<SimWorker>> honest_;
  std::vector<std::unique_ptr<AdversarialTrainWorker>> adversaries_;
  std::mt19937_64 order_rng_{0x5eed};  // StepAll's stepping order
  int trials_ = 0;
};

}  // namespace pcfarm
