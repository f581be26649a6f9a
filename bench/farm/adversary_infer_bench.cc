// adversary_infer_bench: how `--verify auto` fares against workers that
// cheat in inference (issue 17), over the real protocol.
//
// A real coordinator (MiniCluster) and --honest (8) honest SimWorkers, each
// enrolled with its own token, run `pcfarm submit infer --verify auto` jobs
// of --prompts (120) prompts, one a shard, --max-tokens (8) tokens, on a
// random tiny llama (`pcfarm local make-model --config tiny --seed 3`).
// Each trial adds --cheaters (2) new adversaries (tests/integration/
// adversary_infer.h; 20% of 10 workers), each of its own token and seed,
// for one job; the honest workers stay from trial to trial (they earn
// trust as a real farm's would). Per cheat, --trials trials; the jobs
// alternate greedy and sampled (temperature 0.9, top-k 40, top-p 0.95),
// wrong-seed's are all sampled. "mixed": two different cheats a trial, every
// pair in turn. Per cheat it prints:
//   same output   trials whose `pcfarm fetch` equals the clean run's of the
//                 same settings (run first, no adversary) byte for byte,
//                 each line's "worker" field left out;
//   liars         adversaries that told at least one lie (an output that
//                 differs from the honest one);
//   quarantined   of those, how many the coordinator quarantined;
//   min..max      shards each liar answered in all (quarantine ends them);
//   <=20          liars quarantined within 20 shards;
//   truthful      adversaries that told no lie (rubber-stamp while the
//                 coordinator plans no infer_check shard), (q) of them
//                 quarantined;
//   honestQ       honest workers quarantined (outvoted by two adversaries
//                 that told the same lie); each is unbanned and rejoins.
// Steady state: honest-only auto jobs until every honest worker has a
// streak >= 200 (the check rate's floor, 5%), then --overhead-jobs jobs:
// `status --json`'s verification.overhead (run time of extra results over
// accepted ones), beside one job with --redundancy 2 (the baseline: every
// shard twice).
//
//   adversary_infer_bench [--trials 100] [--honest 8] [--cheaters 2]
//       [--prompts 120] [--max-tokens 8] [--overhead-jobs 5]
//       [--cheat NAME]... (default: every cheat, then mixed)
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>
#include <zmq.hpp>

#include "bench/grid/grid_bench.h"
#include "tests/integration/farm_helpers.h"
#include "tests/integration/adversary_infer.h"
#include "tests/integration/adversary_trial.h"
#include "tests/integration/mini_cluster.h"
#include "tests/integration/sim_worker.h"

namespace pcfarm {
namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "adversary_infer_bench: %s\n", what.c_str());
  return 1;
}

// The value at quantile q of sorted `v` (nearest rank).
uint64_t Quantile(const std::vector<uint64_t>& v, double q) {
  if (v.empty()) return 0;
  size_t i = size_t(std::ceil(q * double(v.size())));
  return v[std::min(v.size() - 1, i == 0 ? 0 : i - 1)];
}

struct CheatFigures {
  std::string name;
  int trials = 0, succeeded = 0, same_output = 0;
  int liars = 0, quarantined = 0, within_20 = 0, truthful = 0, truthful_quarantined = 0;
  int honest_quarantined = 0;
  std::vector<uint64_t> shards;  // of each liar
  double seconds = 0;
};

int Main(int argc, char** argv) {
  CLI::App app{"inference adversaries against --verify auto"};
  int trials = 100, honest = 8, cheaters = 2, prompts = 120, max_tokens = 8, overhead_jobs = 5;
  std::vector<std::string> only;
  app.add_option("--trials", trials, "trials per cheat")->capture_default_str();
  app.add_option("--honest", honest, "honest workers")->capture_default_str();
  app.add_option("--cheaters", cheaters, "adversaries per trial")->capture_default_str();
  app.add_option("--prompts", prompts, "prompts (shards) per job")->capture_default_str();
  app.add_option("--max-tokens", max_tokens, "tokens per prompt at most")->capture_default_str();
  app.add_option("--overhead-jobs", overhead_jobs, "steady-state jobs")->capture_default_str();
  app.add_option("--cheat", only, "only these cheats (names, or mixed)");
  CLI11_PARSE(app, argc, argv);

  MiniClusterOptions mo;
  mo.heartbeat_liveness = 10;  // SimWorkers pause through CLI calls on a busy machine
  mo.log_level = "info";
  MiniCluster c(mo);
  if (Status s = c.Init(); !s.ok()) return Fail(s.ToString());
  if (Status s = c.StartCoordinator(); !s.ok()) return Fail(s.ToString());
  const std::string model = c.dir() + "/model", cheaper = c.dir() + "/cheaper",
                    prompts_path = c.dir() + "/prompts.jsonl";
  for (auto [dir, seed] : {std::pair{model, 3}, std::pair{cheaper, 4}}) {
    CommandResult r = c.Run({c.Binary("pcfarm"), "local", "make-model", "--out", dir, "--config",
                             "tiny", "--seed", std::to_string(seed)},
                            60'000);
    if (r.exit_code != 0) return Fail(r.Describe());
  }
  std::ofstream(prompts_path) << PromptsFile(prompts, /*chat_lines=*/false);
  auto cheaper_files = HashModelDirectory(cheaper);
  if (!cheaper_files.ok()) return Fail(cheaper_files.status().ToString());

  zmq::context_t ctx(1);
  SimWorkerOptions ho;
  ho.cpu_threads = 1;
  ho.blob_path = BlobPathWithModel(*cheaper_files, CoordinatorBlobPath(c.coordinator_dir()));
  InferAdversaryFarm farm(&c, &ctx, ho);
  if (Status s = farm.AddHonest(honest); !s.ok()) return Fail(s.ToString());

  const std::vector<std::string> base = {"--model", model, "--prompts", prompts_path,
                                         "--max-tokens", std::to_string(max_tokens),
                                         "--prompts-per-shard", "1"};
  std::vector<std::string> greedy = base, sampled = base;
  greedy.insert(greedy.end(), {"--verify", "auto"});
  sampled.insert(sampled.end(), {"--verify", "auto", "--temperature", "0.9", "--top-k", "40",
                                 "--top-p", "0.95", "--seed", "77"});
  auto run = [&](const std::vector<std::string>& args,
                 const std::vector<InferAdversaryOptions>& adversaries)
      -> Result<InferTrialOutcome> {
    InferTrialSpec spec;
    spec.submit_args = args;
    spec.adversaries = adversaries;
    return farm.RunTrial(spec);
  };

  double t0 = MonotonicSeconds();
  auto clean_greedy = run(greedy, {});
  auto clean_sampled = run(sampled, {});
  if (!clean_greedy.ok()) return Fail(clean_greedy.status().ToString());
  if (!clean_sampled.ok()) return Fail(clean_sampled.status().ToString());
  if (clean_greedy->output.empty() || clean_sampled->output.empty()) return Fail("clean run empty");

  std::vector<std::string> names;
  for (InferCheat ch : AllInferCheats()) names.push_back(InferCheatName(ch));
  names.push_back("mixed");
  if (!only.empty()) names = only;
  const std::vector<InferCheat> all = AllInferCheats();
  uint64_t seed = 1;
  std::vector<CheatFigures> figures;
  for (const std::string& name : names) {
    CheatFigures f;
    f.name = name;
    std::optional<InferCheat> cheat = InferCheatFromName(name);
    if (!cheat && name != "mixed") return Fail("unknown cheat " + name);
    const double start = MonotonicSeconds();
    for (int t = 0; t < trials; ++t) {
      std::vector<InferAdversaryOptions> adv;
      for (int k = 0; k < cheaters; ++k) {
        InferAdversaryOptions o;
        // mixed: trial t pairs cheat t and cheat t + 1 + (t / n) % (n - 1),
        // so that every ordered pair of different cheats comes in turn.
        const size_t n = all.size();
        o.cheat = cheat ? *cheat : all[(t + k * (1 + (t / n) % (n - 1))) % n];
        o.seed = seed++;
        o.cheaper_model = cheaper_files->files;
        adv.push_back(o);
      }
      const bool use_sampled = cheat == InferCheat::kWrongSeed || t % 2 == 1;
      auto r = run(use_sampled ? sampled : greedy, adv);
      if (!r.ok()) return Fail(name + " trial " + std::to_string(t) + ": " + r.status().ToString());
      f.trials++;
      f.honest_quarantined += r->honest_quarantined;
      f.succeeded += r->state == "succeeded";
      const bool same = r->output == (use_sampled ? clean_sampled : clean_greedy)->output;
      f.same_output += same;
      if (!same) {
        std::fprintf(stderr, "%s trial %d: job %lld %s, output differs from the clean run's\n",
                     name.c_str(), t, (long long)r->job, r->state.c_str());
      }
      for (const auto& a : r->adversaries) {
        if (a.lies == 0) {
          f.truthful++;
          f.truthful_quarantined += a.quarantined;
          continue;
        }
        f.liars++;
        f.quarantined += a.quarantined;
        f.within_20 += a.quarantined && a.results <= 20;
        f.shards.push_back(a.results);
        if (!a.quarantined) {
          std::fprintf(stderr, "%s trial %d: job %lld: %s told %llu lies in %llu results, not "
                       "quarantined (strikes %lld)\n",
                       name.c_str(), t, (long long)r->job, InferCheatName(a.cheat),
                       (unsigned long long)a.lies, (unsigned long long)a.results,
                       (long long)a.strikes);
        }
      }
    }
    f.seconds = MonotonicSeconds() - start;
    std::sort(f.shards.begin(), f.shards.end());
    figures.push_back(f);
  }

  // Steady state: honest workers that earned the floor of the check rate.
  int warmup = 0;
  for (; overhead_jobs > 0 && warmup < 200; ++warmup) {
    auto min_streak = c.db().QueryInt("SELECT MIN(streak) FROM workers WHERE name LIKE 'honest-%'");
    if (!min_streak.ok()) return Fail(min_streak.status().ToString());
    if (*min_streak >= 200) break;
    auto r = run(greedy, {});
    if (!r.ok()) return Fail(r.status().ToString());
  }
  double auto_overhead = 0;
  int checked = 0, shards = 0;
  for (int j = 0; j < overhead_jobs; ++j) {
    auto r = run(j % 2 ? sampled : greedy, {});
    if (!r.ok()) return Fail(r.status().ToString());
    auto_overhead += r->verification.value("overhead", 0.0);
    checked += r->verification.value("checked_shards", 0);
    shards += prompts;
  }
  auto_overhead /= std::max(overhead_jobs, 1);
  std::vector<std::string> redundant = base;
  redundant.insert(redundant.end(), {"--verify", "redundant", "--redundancy", "2"});
  auto red = run(redundant, {});
  if (!red.ok()) return Fail(red.status().ToString());
  const double red_overhead = red->verification.value("overhead", 0.0);

  std::printf("== adversaries: %d trials each, %d honest + %d cheats (%.0f%%), auto jobs of %d "
              "shards (1 prompt, %d tokens)\n",
              trials, honest, cheaters, 100.0 * cheaters / (honest + cheaters), prompts,
              max_tokens);
  std::printf("%-14s %6s %6s %6s %6s %7s %4s %4s %4s %4s %7s %9s %7s %7s\n", "cheat", "trials",
              "ok", "same", "liars", "quarant", "min", "p50", "p99", "max", "<=20", "truthful",
              "honestQ", "s/trial");
  for (const auto& f : figures) {
    std::printf("%-14s %6d %6d %6d %6d %7d %4llu %4llu %4llu %4llu %6.1f%% %4d (%d q) %7d %7.2f\n",
                f.name.c_str(), f.trials, f.succeeded, f.same_output, f.liars, f.quarantined,
                (unsigned long long)(f.shards.empty() ? 0 : f.shards.front()),
                (unsigned long long)Quantile(f.shards, 0.5),
                (unsigned long long)Quantile(f.shards, 0.99),
                (unsigned long long)(f.shards.empty() ? 0 : f.shards.back()),
                f.liars ? 100.0 * f.within_20 / f.liars : 0.0, f.truthful,
                f.truthful_quarantined, f.honest_quarantined,
                f.trials ? f.seconds / f.trials : 0.0);
  }
  std::printf("\n== steady state: %d honest workers, streak >= 200 after %d warm-up jobs; %d jobs\n",
              honest, warmup, overhead_jobs);
  std::printf("%-28s %9s %15s\n", "policy", "overhead", "checked shards");
  std::printf("%-28s %8.1f%% %7d of %-6d\n", "auto (ours)", 100.0 * auto_overhead, checked,
              shards);
  std::printf("%-28s %8.1f%%\n", "redundant, 2 copies (base)", 100.0 * red_overhead);
  std::printf("auto / redundant-2 extra compute: %.3fx (target: auto <= 10%%)\n",
              red_overhead > 0 ? auto_overhead / red_overhead : 0.0);
  std::printf("total %.0f s\n", MonotonicSeconds() - t0);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Main(argc, argv); }
