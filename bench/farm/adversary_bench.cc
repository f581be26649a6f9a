// adversary_bench: what gradient adversaries (issue 17) do to a sync
// finetune job, trial after trial (tests/integration/adversary_train.h).
//
// A MiniCluster coordinator and --workers SimWorkers, --adversaries of them
// cheating (default 2 of 10: 20%), all in this process, each enrolled with
// its own token (so any two are independent), fresh identities every trial.
// Model: `pcfarm local make-model --config tiny --seed 3` (103k parameters);
// data: 16 prompt/completion lines. Job: --steps steps of batch 6 in
// micro-batches of 1 (6 shards a step), lr 0.01, LoRA rank 4, seed 7,
// --verify V --aggregate A.
//
// Baseline, measured in the same run: the same job on --workers honest
// workers, once per (verify, aggregate); the job is deterministic, so one
// clean run is every trial's baseline.
// Configurations: each cheat with every adversary of that kind ("one at a
// time"), and "mixed" (each adversary a random kind, drawn per trial), each
// run --trials times. Per configuration it prints: trials that succeeded;
// the final loss (`pcfarm local eval` of the fetched adapter) over the clean
// run's (mean and worst, and trials within 2%); trials whose adapter is the
// clean one bit for bit; the cheats quarantined, and how many shards each
// answered (all its shards: a quarantined worker gets no more) as min /
// median / p99 / max, and the fraction quarantined within 20 shards (of
// all cheats), and those not quarantined whose job ended before their 20th
// shard (cut) and the most shards a cut one answered (cut@); forgeries accepted and standing in the job's end (not
// undone by a rewind); honest workers left with strikes or quarantined (framed
// by cheats that agree with each other); verification overhead (status'
// `verification.overhead`, mean).
//
// --mode diloco runs the job in DiLoCo rounds of --local-steps local steps
// (6 shards a round, each H local AdamW steps; the cheats forge the
// pseudo-gradient the same way).
//
//   adversary_bench [--trials 20] [--steps 12] [--workers 10] [--adversaries 2]
//                   [--verify auto,none] [--aggregate mean,median]
//                   [--cheats random,...,alie,mixed] [--mode sync|diloco]
//                   [--local-steps 2]
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "tests/integration/farm_helpers.h"
#include "tests/integration/adversary_train.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream in(s);
  std::string item;
  while (std::getline(in, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

double Quantile(std::vector<double> v, double q) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  // Nearest rank.
  size_t k = size_t(std::ceil(q * double(v.size())));
  return v[std::min(v.size() - 1, k == 0 ? 0 : k - 1)];
}

int Fail(const Status& s) {
  std::fprintf(stderr, "adversary_bench: %s\n", s.ToString().c_str());
  return 1;
}

int Main(int argc, char** argv) {
  int trials = 20, steps = 12, workers = 10, adversaries = 2, local_steps = 2;
  std::string mode = "sync";
  std::string verify = "auto,none", aggregate = "mean,median",
              cheats = "random,scale100,signflip,zeros,stale,replay,alie,mixed";
  CLI::App app{"adversary_bench: gradient adversaries in a sync finetune job"};
  app.add_option("--trials", trials, "trials per configuration");
  app.add_option("--steps", steps, "optimizer steps of each job");
  app.add_option("--workers", workers, "workers in all, adversaries included");
  app.add_option("--adversaries", adversaries, "of them cheating");
  app.add_option("--verify", verify, "verification policies, comma-separated");
  app.add_option("--aggregate", aggregate, "aggregation rules, comma-separated");
  app.add_option("--cheats", cheats, "cheats (and 'mixed'), comma-separated");
  app.add_option("--mode", mode, "sync or diloco")->check(CLI::IsMember({"sync", "diloco"}));
  app.add_option("--local-steps", local_steps, "diloco: local steps a round");
  CLI11_PARSE(app, argc, argv);

  MiniClusterOptions o;
  o.heartbeat_liveness = 50;  // the SimWorkers share one thread
  o.log_level = std::getenv("PCFARM_BENCH_LOG") ? std::getenv("PCFARM_BENCH_LOG") : "warn";
  MiniCluster c(o);
  if (Status s = c.Init(); !s.ok()) return Fail(s);
  if (Status s = c.StartCoordinator(); !s.ok()) return Fail(s);
  const std::string model = c.dir() + "/model", data = c.dir() + "/train.jsonl";
  CommandResult made = c.Run({c.Binary("pcfarm"), "local", "make-model", "--out", model,
                              "--config", "tiny", "--seed", "3"},
                             120'000);
  if (made.exit_code != 0) return Fail(Internal(made.Describe()));
  std::ofstream(data) << TrainData(/*mixed_formats=*/false);

  AdversaryFarm farm(&c);
  std::mt19937_64 rng(12345);
  uint64_t seed = 1;
  if (mode == "diloco") {
    std::printf("adversary_bench: %d workers, %d adversarial, diloco: %d steps in rounds of %d "
                "local steps x 6 shards, %d trials per row\n",
                workers, adversaries, steps, local_steps, trials);
  } else {
    std::printf("adversary_bench: %d workers, %d adversarial, %d steps x 6 shards, %d trials "
                "per row\n",
                workers, adversaries, steps, trials);
  }
  std::printf("%-5s %-13s %-9s %5s %7s %7s %6s %6s %6s %-19s %6s %4s %4s %6s %6s %5s\n",
              "verify", "aggregate", "cheat", "ok", "loss/c", "worst", "<=2%", "same", "quar",
              "shards min/med/p99/max", "<=20", "cut", "cut@", "acc", "framed", "ovh");
  for (const std::string& v : Split(verify)) {
    for (const std::string& agg : Split(aggregate)) {
      std::vector<std::string> args = {
          "--model", model,    "--data",      data,  "--steps",     std::to_string(steps),
          "--batch", "6",      "--micro-batch", "1", "--lr",        "0.01",
          "--lora-rank", "4",  "--seed",      "7",   "--verify",    v,
          "--aggregate", agg};
      if (mode == "diloco") {
        for (const char* a : {"--mode", "diloco", "--local-steps"}) args.push_back(a);
        args.push_back(std::to_string(local_steps));
      }
      auto clean = farm.RunTrial(workers, {}, args, model, data, seed++, 600'000);
      if (!clean.ok()) return Fail(clean.status());
      if (clean->state != "succeeded") return Fail(Internal("clean run: " + clean->state));
      std::printf("%-6s %-13s %-9s clean loss %.5f, %.1f s, checked %lld of %lld shards, "
                  "overhead %.2f\n",
                  v.c_str(), agg.c_str(), "(none)", clean->eval_loss, clean->seconds,
                  (long long)clean->checked_shards, (long long)clean->shards, clean->overhead);
      std::fflush(stdout);
      for (const std::string& name : Split(cheats)) {
        int ok = 0, within = 0, same = 0;
        int64_t quarantined = 0, cheaters = 0, accepted = 0, framed = 0, le20 = 0, cut = 0;
        int64_t cut_most = 0;  // the most shards a cut cheat answered
        double ratio_sum = 0, worst = 0, overhead = 0;
        std::vector<double> shards;
        for (int t = 0; t < trials; ++t) {
          std::vector<TrainCheat> kinds;
          for (int i = 0; i < adversaries; ++i) {
            if (name == "mixed") {
              auto all = AllTrainCheats();
              kinds.push_back(all[rng() % all.size()]);
            } else {
              auto k = ParseTrainCheat(name);
              if (!k.ok()) return Fail(k.status());
              kinds.push_back(*k);
            }
          }
          auto r = farm.RunTrial(workers - adversaries, kinds, args, model, data, seed++,
                                 600'000);
          if (!r.ok()) return Fail(r.status());
          if (r->state == "succeeded") {
            ok++;
            const double ratio = r->eval_loss / clean->eval_loss;
            ratio_sum += ratio;
            worst = std::max(worst, std::abs(ratio - 1));
            within += std::abs(ratio - 1) <= 0.02 ? 1 : 0;
            same += r->adapter == clean->adapter ? 1 : 0;
            overhead += r->overhead;
          }
          framed += r->honest_quarantined > 0 || r->honest_strikes > 0 ? 1 : 0;
          for (const auto& a : r->adversaries) {
            cheaters++;
            accepted += a.forged_accepted;
            if (a.quarantined) {
              quarantined++;
              shards.push_back(double(a.stats.shards));
              le20 += a.stats.shards <= 20 ? 1 : 0;
            } else if (a.stats.shards < 20) {
              cut++;  // the job ended before its 20th shard
              cut_most = std::max(cut_most, a.stats.shards);
            }
          }
        }
        char dist[64];
        std::snprintf(dist, sizeof dist, "%.0f/%.0f/%.0f/%.0f", Quantile(shards, 0),
                      Quantile(shards, 0.5), Quantile(shards, 0.99), Quantile(shards, 1));
        std::printf("%-6s %-13s %-9s %2d/%-2d %7.4f %6.1f%% %3d/%-2d %3d/%-2d %3lld/%-3lld "
                    "%-19s %5.1f%% %4lld %4lld %6lld %3lld/%-2d %5.2f\n",
                    v.c_str(), agg.c_str(), name.c_str(), ok, trials,
                    ok ? ratio_sum / ok : std::nan(""), 100 * worst, within, trials, same,
                    trials, (long long)quarantined, (long long)cheaters, dist,
                    cheaters ? 100.0 * double(le20) / double(cheaters) : 0.0, (long long)cut,
                    (long long)cut_most, (long long)accepted, (long long)framed, trials, ok ? overhead / ok : 0.0);
        std::fflush(stdout);
      }
    }
  }
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Main(argc, argv); }
