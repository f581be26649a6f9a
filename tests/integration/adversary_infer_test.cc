// Inference adversaries (issue 17), the short version of
// bench/farm/adversary_infer_bench: a real coordinator, 8 honest SimWorkers
// and, per trial, 2 cheating ones (20%), on infer jobs with `--verify auto`.
// Each cheat of adversary_infer.h runs once: the job succeeds, its fetched
// output equals a clean run's, and every cheater that told a lie is
// quarantined within 20 of its shards (one that told none is not).
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "tests/integration/cluster_helpers.h"  // first: it configures Catch
#include "tests/integration/adversary_infer.h"
#include "tests/integration/adversary_trial.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

// Prompts of different lengths, one a line.
std::string PromptsFile(int n) {
  static const char* kWords[] = {"the", "farm", "of", "idle", "PCs", "writes", "a",
                                 "story", "about", "river", "stones", "and", "light"};
  std::string out;
  for (int i = 0; i < n; ++i) {
    std::string p;
    for (int w = 0; w <= i % 7 + 1; ++w) p += std::string(w ? " " : "") + kWords[(i * 5 + w * 3) % 13];
    out += nlohmann::json{{"prompt", p}}.dump() + "\n";
  }
  return out;
}

void MakeModel(MiniCluster* c, const std::string& dir, int seed) {
  CommandResult r = c->Run({c->Binary("pcfarm"), "local", "make-model", "--out", dir,
                            "--config", "tiny", "--seed", std::to_string(seed)},
                           60'000);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
}

TEST_CASE("infer adversaries at 20%: the output is a clean run's, each cheater quarantined",
          "[integration][verify][adversary]") {
  MiniClusterOptions mo;
  // SimWorkers step only between CLI calls and joins on a loaded machine.
  mo.heartbeat_liveness = 10;
  Cluster c(mo);
  StartCluster(&c.c, 0);
  const std::string model = c->dir() + "/model", cheaper = c->dir() + "/cheaper",
                    prompts = c->dir() + "/prompts.jsonl";
  MakeModel(&c.c, model, 3);
  MakeModel(&c.c, cheaper, 4);  // the same shape, other weights
  {
    std::ofstream out(prompts);
    // One prompt a shard: each cheater gets many shards however fast the
    // honest workers are (it is stepped in the same loop as they are).
    out << PromptsFile(120);
  }
  auto cheaper_files = HashModelDirectory(cheaper);
  REQUIRE_OK(cheaper_files);

  zmq::context_t ctx(1);
  SimWorkerOptions honest;
  honest.cpu_threads = 1;
  honest.blob_path = BlobPathWithModel(*cheaper_files, CoordinatorBlobPath(c->coordinator_dir()));
  AdversaryFarm farm(&c.c, &ctx, honest);
  REQUIRE_OK(farm.AddHonest(8));

  const std::vector<std::string> greedy = {"--model", model, "--prompts", prompts,
                                           "--max-tokens", "8", "--prompts-per-shard", "1",
                                           "--verify", "auto"};
  std::vector<std::string> sampled = greedy;
  for (const char* a : {"--temperature", "0.9", "--top-k", "40", "--top-p", "0.95", "--seed", "77"}) {
    sampled.push_back(a);
  }
  auto run = [&](const std::vector<std::string>& args, std::vector<InferCheat> cheats) {
    InferTrialSpec spec;
    spec.submit_args = args;
    uint64_t seed = 1;
    for (InferCheat cheat : cheats) {
      InferAdversaryOptions o;
      o.cheat = cheat;
      o.seed = seed++;
      o.cheaper_model = cheaper_files->files;
      spec.adversaries.push_back(o);
    }
    auto t = farm.RunTrial(spec);
    REQUIRE_OK(t);
    INFO("job " << t->job << " ended " << t->state << " after " << t->seconds << " s");
    REQUIRE(t->state == "succeeded");
    // What happened, for the log (the bench prints the figures).
    std::cout << "job " << t->job << ": " << t->seconds << " s, verification "
              << t->verification.dump() << "\n";
    for (const auto& a : t->adversaries) {
      std::cout << "  " << InferCheatName(a.cheat) << ": " << a.results << " results, "
                << a.lies << " lies, strikes " << a.strikes
                << (a.quarantined ? ", quarantined" : "") << "\n";
    }
    return *t;
  };
  auto check_cheaters = [](const InferTrialOutcome& t) {
    for (const auto& a : t.adversaries) {
      INFO(InferCheatName(a.cheat) << ": " << a.results << " results, " << a.lies
                                   << " lies, strikes " << a.strikes);
      if (a.lies > 0) {
        CHECK(a.quarantined);
        CHECK(a.results <= 20);
      } else {
        CHECK_FALSE(a.quarantined);
      }
    }
  };

  const InferTrialOutcome clean_greedy = run(greedy, {});
  REQUIRE(!clean_greedy.output.empty());
  for (const auto& cheats :
       std::vector<std::vector<InferCheat>>{{InferCheat::kRandomTokens, InferCheat::kTruncated},
                                            {InferCheat::kCopied, InferCheat::kCheaperModel}}) {
    InferTrialOutcome t = run(greedy, cheats);
    CHECK(t.output == clean_greedy.output);
    check_cheaters(t);
    // These cheats lie in every shard with two or more distinct outputs.
    for (const auto& a : t.adversaries) CHECK(a.lies > 0);
  }
  const InferTrialOutcome clean_sampled = run(sampled, {});
  CHECK(clean_sampled.output != clean_greedy.output);
  InferTrialOutcome t = run(sampled, {InferCheat::kWrongSeed, InferCheat::kRubberStamp});
  CHECK(t.output == clean_sampled.output);
  check_cheaters(t);
  CHECK(t.adversaries.at(0).lies > 0);  // wrong-seed, sampling
}

}  // namespace
}  // namespace pcfarm
