// Inference adversaries (issue 17), the short version of
// bench/farm/adversary_infer_bench: a real coordinator, 8 honest SimWorkers
// and, per trial, 2 cheating ones (20%), on infer jobs with `--verify auto`.
// Each cheat of adversary_infer.h runs once: the job succeeds, its fetched
// output equals a clean run's, and every cheater that told a lie is
// quarantined within 20 of its shards (one that told none is not).
#include <fstream>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "tests/integration/farm_helpers.h"
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch
#include "tests/integration/adversary_infer.h"
#include "tests/integration/adversary_trial.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

void MakeModel(MiniCluster* c, const std::string& dir, int seed) {
  CommandResult r = c->Run({c->Binary("pcfarm"), "local", "make-model", "--out", dir,
                            "--config", "tiny", "--seed", std::to_string(seed)},
                           60'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
}

// A coordinator, two tiny models of one shape (the job's and a cheaper
// one with other weights), 240 prompts, and 8 honest SimWorkers.
struct AdversaryBed {
  AdversaryBed() : c(Options()) {
    StartCluster(&c.c, 0);
    model = c->dir() + "/model";
    const std::string cheaper = c->dir() + "/cheaper", prompts = c->dir() + "/prompts.jsonl";
    MakeModel(&c.c, model, 3);
    MakeModel(&c.c, cheaper, 4);
    {
      std::ofstream out(prompts);
      // One prompt a shard: each cheater gets many shards however fast the
      // honest workers are (it is stepped in the same loop as they are).
      out << PromptsFile(240, /*chat_lines=*/false);
    }
    auto files = HashModelDirectory(cheaper);
    REQUIRE_OK(files);
    cheaper_files = *files;
    SimWorkerOptions honest;
    honest.cpu_threads = 1;
    honest.blob_path = BlobPathWithModel(cheaper_files, CoordinatorBlobPath(c->coordinator_dir()));
    farm = std::make_unique<InferAdversaryFarm>(&c.c, &ctx, honest);
    REQUIRE_OK(farm->AddHonest(8));
    greedy = {"--model", model, "--prompts", prompts, "--max-tokens", "8",
              "--prompts-per-shard", "1", "--verify", "auto"};
    sampled = greedy;
    for (const char* a : {"--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "77"}) {
      sampled.push_back(a);
    }
  }
  static MiniClusterOptions Options() {
    MiniClusterOptions mo;
    // SimWorkers step only between CLI calls and joins on a loaded machine.
    mo.heartbeat_liveness = 10;
    return mo;
  }

  // One job with `args`, beside one adversary per cheat (seeds 1, 2, ...).
  InferTrialOutcome Run(const std::vector<std::string>& args, const std::vector<InferCheat>& cheats) {
    InferTrialSpec spec;
    spec.submit_args = args;
    uint64_t seed = 1;
    for (InferCheat cheat : cheats) {
      InferAdversaryOptions o;
      o.cheat = cheat;
      o.seed = seed++;
      o.cheaper_model = cheaper_files.files;
      spec.adversaries.push_back(o);
    }
    auto t = farm->RunTrial(spec);
    REQUIRE_OK(t);
    INFO("job " << t->job << " ended " << t->state << " after " << t->seconds << " s");
    REQUIRE(t->state == "succeeded");
    // What happened, for the log (the bench prints the figures).
    std::cout << "job " << t->job << ": " << t->seconds << " s, verification "
              << t->verification.dump() << ", honest workers quarantined "
              << t->honest_quarantined << "\n";
    for (const auto& a : t->adversaries) {
      std::cout << "  " << InferCheatName(a.cheat) << ": " << a.results << " results, "
                << a.lies << " lies, strikes " << a.strikes
                << (a.quarantined ? ", quarantined" : "") << "\n";
    }
    return *t;
  }

  Cluster c;
  zmq::context_t ctx{1};
  std::string model;
  HashedModel cheaper_files;
  std::unique_ptr<InferAdversaryFarm> farm;
  std::vector<std::string> greedy, sampled;
};

// Every cheater that lied is quarantined within 20 shards; one that told
// no lie (rubber-stamp while no infer_check shard is planned) is not.
// How many results a cheater returns before its third strike once depended
// on how fast the checks of its first lies came back while it kept taking
// shards: 27 once in a sanitizer build and once in the plain build on a
// loaded 2-core CI machine. Now an untrusted worker with kMaxAwaitingCheck
// results awaiting checks takes no new shard (verify_policy.h), so one that
// lies in every result returns at most kMaxAwaitingCheck +
// kStrikesToQuarantine - 1 of them, plus the one its slot holds (4-7 here,
// with the machine's two cores kept busy by three other processes);
// honest results of a cheat that lies only sometimes come on top.
constexpr int kQuarantinedWithin = 20;

void CheckCheaters(const InferTrialOutcome& t) {
  CHECK(t.honest_quarantined == 0);
  for (const auto& a : t.adversaries) {
    INFO(InferCheatName(a.cheat) << ": " << a.results << " results, " << a.lies
                                 << " lies, strikes " << a.strikes);
    if (a.lies == 0) {
      CHECK_FALSE(a.quarantined);
    } else if (a.cheat != InferCheat::kRubberStamp) {
      CHECK(a.quarantined);
      CHECK(a.results <= kQuarantinedWithin);
    }
    // A rubber-stamper lies only in checks of another's false claim; how
    // often it gets one depends on how the coordinator plans infer_check
    // shards. Whatever it does, the output must stay the clean run's.
  }
}

TEST_CASE("infer adversaries at 20%: the output is a clean run's, each cheater quarantined",
          "[integration][verify][adversary]") {
  AdversaryBed bed;
  // Two different cheats a trial: their lies never agree with each other.
  const InferTrialOutcome clean_greedy = bed.Run(bed.greedy, {});
  REQUIRE(!clean_greedy.output.empty());
  for (const auto& cheats :
       std::vector<std::vector<InferCheat>>{{InferCheat::kRandomTokens, InferCheat::kTruncated},
                                            {InferCheat::kCopied, InferCheat::kCheaperModel}}) {
    InferTrialOutcome t = bed.Run(bed.greedy, cheats);
    CHECK(t.output == clean_greedy.output);
    CheckCheaters(t);
    // These cheats lie in every shard with two or more distinct outputs.
    for (const auto& a : t.adversaries) CHECK(a.lies > 0);
  }
  const InferTrialOutcome clean_sampled = bed.Run(bed.sampled, {});
  CHECK(clean_sampled.output != clean_greedy.output);
  InferTrialOutcome t = bed.Run(bed.sampled, {InferCheat::kWrongSeed, InferCheat::kRubberStamp});
  CHECK(t.output == clean_sampled.output);
  CheckCheaters(t);
  CHECK(t.adversaries.at(0).lies > 0);  // wrong-seed, sampling
}

// Collusion: two independent workers that tell the same lie (both run one
// cheaper model) agree with each other. Before checks went to trusted
// workers and a quarantine re-ran every shard its worker sided with, one
// checked the other's forgery (kept after their quarantine), or the two
// outvoted an honest worker's result (the honest one got the strike).
TEST_CASE("two adversaries that tell the same lie are not a majority",
          "[integration][verify][adversary][collusion]") {
  AdversaryBed bed;
  const InferTrialOutcome clean = bed.Run(bed.greedy, {});
  int honest_quarantined = 0, forged = 0;
  for (int trial = 0; trial < 3; ++trial) {
    InferTrialOutcome t =
        bed.Run(bed.greedy, {InferCheat::kCheaperModel, InferCheat::kCheaperModel});
    honest_quarantined += t.honest_quarantined;
    forged += t.output != clean.output;
  }
  CHECK(honest_quarantined == 0);
  CHECK(forged == 0);
}

}  // namespace
}  // namespace pcfarm
