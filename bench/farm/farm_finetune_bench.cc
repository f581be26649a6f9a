// farm_finetune_bench: what the farm costs a LoRA fine-tuning job (sync
// mode, or diloco with --local-steps H), beside `pcfarm local finetune`
// with the same arguments on the same machine.
//
// Model: the engine benchmark's random llama (hidden 768, 12 layers, vocab
// 32000, F32, 110M parameters, 418 MiB), written once into
// --cache-dir/pcfarm_engine_bench_h768_l12_v32000 (shared with
// engine_bench and farm_infer_bench). Data: --examples English-like
// `{"text": ...}` lines of 100..400 characters (about one token each).
// Training: --steps steps of --batch examples, LoRA rank 8 on q/k/v/o,
// --lr 1e-3, seed 1, --max-length 256; the farm job's micro-batch is the
// whole batch by default (one shard a step: one worker has nothing to
// split for), --micro-batch to change it.
//
// Baseline: `pcfarm local finetune --json`, wall time of the process (its
// model load included), and that less its fixed cost (a 1-step run).
// Ours: a MiniCluster on this machine (a coordinator and one
// `pcfarm-worker`, the daemons' default heartbeat and lease):
//   first job   `pcfarm submit finetune` (tokenizes, hashes and uploads the
//               model and data) + `pcfarm wait`: the worker downloads the
//               model and loads it;
//   cached job  the same job again: blobs in both stores, the base model
//               loaded in the worker.
// steps/s = steps / (start of submit to the return of wait). Every step's
// loss is compared with local finetune's (trainer_log.jsonl of the fetched
// job, 1e-4 relative).
//   --local-steps H: the farm job runs `--mode diloco --local-steps H`
// (rounds of H inner steps; with micro-batch = batch one replica a round,
// whose inner steps are local finetune's steps but for AdamW moments that
// start afresh each round and the outer step), so its steps/s is compared
// with local finetune's, and its last round's loss is shown beside local
// finetune's last step's instead of a per-step comparison.
//
//   farm_finetune_bench [--steps 12] [--batch 8] [--micro-batch 0]
//                       [--local-steps 0] [--examples 64] [--rounds 2]
//                       [--cache-dir /tmp]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/engine/bench_model.h"
#include "bench/engine/engine_bench_util.h"
#include "bench/grid/grid_bench.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

using nlohmann::json;

struct Options {
  int steps = 12;
  int batch = 8;
  int micro_batch = 0;  // 0: the batch
  int local_steps = 0;  // > 0: --mode diloco --local-steps H for the farm job
  int examples = 64;
  int rounds = 2;
  std::string cache_dir = "/tmp";
};

int Fail(const Status& s) {
  std::fprintf(stderr, "farm_finetune_bench: %s\n", s.ToString().c_str());
  return 1;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty()) out.push_back(line);
  }
  return out;
}

std::string ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// `n` lines of English-like text, 100..400 characters, the same every run.
std::string MakeData(int n) {
  static const char* kWords[] = {"the",   "farm",  "learns", "from",   "idle",  "computers",
                                 "at",    "night", "every",  "worker", "signs", "its",
                                 "result", "and",  "a",      "river",  "runs",  "past",
                                 "stone", "bridge", "into",  "forest", "light", "rain"};
  const int kCount = int(sizeof kWords / sizeof kWords[0]);
  std::mt19937 rng(11);
  std::uniform_int_distribution<int> len(100, 400), word(0, kCount - 1);
  std::string out;
  for (int i = 0; i < n; ++i) {
    const size_t want = size_t(len(rng));
    std::string t;
    while (t.size() < want) t += (t.empty() ? "" : " ") + std::string(kWords[word(rng)]);
    out += json{{"text", t + "."}}.dump() + "\n";
  }
  return out;
}

std::vector<std::string> TrainArgs(const Options& o, const std::string& model,
                                   const std::string& data, int steps) {
  return {"--model", model, "--data", data, "--steps", std::to_string(steps), "--batch",
          std::to_string(o.batch), "--lr", "0.001", "--lora-rank", "8", "--seed", "1",
          "--max-length", "256"};
}

struct LocalRun {
  double seconds = 0;
  std::vector<double> losses;
};

Result<LocalRun> LocalFinetune(MiniCluster* c, const std::vector<std::string>& args) {
  std::vector<std::string> argv = {c->Binary("pcfarm"), "local", "finetune", "--json", "--out",
                                   c->dir() + "/local-adapter"};
  argv.insert(argv.end(), args.begin(), args.end());
  CommandResult r = c->Run(argv, 1'800'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  LocalRun run;
  run.seconds = r.seconds;
  for (const auto& l : Lines(r.out)) {
    json j = json::parse(l, nullptr, false);
    if (j.is_object() && j.contains("step")) run.losses.push_back(j["loss"].get<double>());
  }
  return run;
}

struct FarmRun {
  int64_t job = 0;
  double submit_s = 0, wait_s = 0;
  int64_t uploaded = 0;
  std::vector<double> losses;
  int64_t bytes_up = 0, bytes_down = 0, shards = 0;
  double wall_s() const { return submit_s + wait_s; }
};

Result<FarmRun> RunFarmJob(MiniCluster* c, const Options& o, const std::vector<std::string>& args) {
  FarmRun run;
  std::vector<std::string> a = {"submit", "finetune", "--json"};
  a.insert(a.end(), args.begin(), args.end());
  if (o.local_steps > 0) {
    a.insert(a.end(), {"--mode", "diloco", "--local-steps", std::to_string(o.local_steps)});
  }
  if (o.micro_batch > 0) {
    a.push_back("--micro-batch");
    a.push_back(std::to_string(o.micro_batch));
  } else {
    a.push_back("--micro-batch");
    a.push_back(std::to_string(o.batch));
  }
  CommandResult s = c->Cli(a, 60, 1'800'000);
  if (s.exit_code != 0) return Internal(s.Describe());
  run.submit_s = s.seconds;
  json sj = json::parse(s.LastLine(), nullptr, false);
  if (!sj.is_object()) return Internal("submit printed no JSON: " + s.out);
  run.job = sj["job_id"].get<int64_t>();
  run.uploaded = sj.value("uploaded_bytes", int64_t(0));
  CommandResult w = c->Cli({"wait", std::to_string(run.job), "--poll", "0.1", "--json"}, 60,
                           3'600'000);
  if (w.exit_code != 0) return Internal(w.Describe() + "\n" + c->DumpLogs(4000));
  run.wait_s = w.seconds;
  const std::string dir = c->dir() + "/adapter-" + std::to_string(run.job);
  CommandResult f = c->Cli({"fetch", std::to_string(run.job), "--out", dir}, 30, 300'000);
  if (f.exit_code != 0) return Internal(f.Describe());
  for (const auto& l : Lines(ReadText(dir + "/trainer_log.jsonl"))) {
    json j = json::parse(l);
    run.losses.push_back(j["loss"].get<double>());
    run.bytes_up += j.value("bytes_up", int64_t(0));
    run.bytes_down += j.value("bytes_down", int64_t(0));
    run.shards += j.value("shards", int64_t(0));
  }
  return run;
}

int LossMismatches(const std::vector<double>& farm, const std::vector<double>& local) {
  if (farm.size() != local.size()) return int(std::max(farm.size(), local.size()));
  int bad = 0;
  for (size_t i = 0; i < farm.size(); ++i) {
    bad += std::abs(farm[i] - local[i]) > 1e-4 * std::max(std::abs(farm[i]), std::abs(local[i]));
  }
  return bad;
}

std::string Ratio(double ours, double base) { return FormatFixed(ours / base, 3) + "x"; }

int Run(const Options& opt) {
  const std::string load_before = LoadAverage();
  const std::string model = opt.cache_dir + "/pcfarm_engine_bench_h768_l12_v32000";
  Status s = EnsureEngineBenchModel(model, EngineBenchConfig(/*small=*/false));
  if (!s.ok()) return Fail(s);

  MiniClusterOptions mco;  // the daemons' defaults, not the tests' short ones
  mco.heartbeat_interval_ms = 1000;
  mco.heartbeat_liveness = 3;
  mco.lease_ms = 60'000;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  s = cluster.Init();
  if (!s.ok()) return Fail(s);
  const std::string home = cluster.dir() + "/home";
  std::filesystem::create_directories(home);
  ::setenv("HOME", home.c_str(), 1);
  ::setenv("XDG_CACHE_HOME", (home + "/.cache").c_str(), 1);
  const std::string data = cluster.dir() + "/train.jsonl";
  {
    std::ofstream out(data, std::ios::binary);
    out << MakeData(opt.examples);
    if (!out.good()) return Fail(IoError("cannot write " + data));
  }
  const auto args = TrainArgs(opt, model, data, opt.steps);

  std::fprintf(stderr, "local finetune (warm-up: page cache) ...\n");
  auto warm = LocalFinetune(&cluster, args);
  if (!warm.ok()) return Fail(warm.status());
  auto one = LocalFinetune(&cluster, TrainArgs(opt, model, data, 1));
  if (!one.ok()) return Fail(one.status());

  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  auto w = cluster.AddWorker("w0");
  if (!w.ok()) return Fail(w.status());
  s = cluster.WaitForConnectedWorkers(1, 30'000);
  if (!s.ok()) return Fail(s);
  std::fprintf(stderr, "first farm job (upload, download, load) ...\n");
  auto first = RunFarmJob(&cluster, opt, args);
  if (!first.ok()) return Fail(first.status());

  std::vector<LocalRun> locals;
  std::vector<FarmRun> cached;
  for (int round = 0; round < opt.rounds; ++round) {
    for (int side = 0; side < 2; ++side) {
      if ((side == 0) == (round % 2 == 0)) {
        std::fprintf(stderr, "round %d: local finetune ...\n", round + 1);
        auto l = LocalFinetune(&cluster, args);
        if (!l.ok()) return Fail(l.status());
        locals.push_back(std::move(*l));
      } else {
        std::fprintf(stderr, "round %d: cached farm job ...\n", round + 1);
        auto f = RunFarmJob(&cluster, opt, args);
        if (!f.ok()) return Fail(f.status());
        cached.push_back(std::move(*f));
      }
    }
  }
  const std::string load_after = LoadAverage();
  const LocalRun& local = *std::min_element(
      locals.begin(), locals.end(), [](auto& a, auto& b) { return a.seconds < b.seconds; });
  const FarmRun& best = *std::min_element(
      cached.begin(), cached.end(), [](auto& a, auto& b) { return a.wall_s() < b.wall_s(); });
  const double steps = opt.steps;
  const double local_sps = steps / local.seconds;
  // Local finetune less its fixed cost (process, model load, tokenizing),
  // measured as a 1-step run less one step's share.
  const double fixed = std::max(0.0, one->seconds - (local.seconds - one->seconds) / (steps - 1));
  const double local_steps_only = steps / std::max(local.seconds - fixed, 1e-3);
  auto sps = [](double v) { return FormatFixed(v, 3) + " steps/s"; };
  const std::string base = "local finetune: " + sps(local_sps);
  std::vector<BenchRow> rows;
  rows.push_back({"first job (tokenize, upload, download, load), submit+wait",
                  sps(steps / first->wall_s()), base, Ratio(steps / first->wall_s(), local_sps),
                  "-"});
  const bool diloco = opt.local_steps > 0;
  rows.push_back({diloco ? "cached diloco job (H = " + std::to_string(opt.local_steps) +
                               "), submit+wait"
                         : std::string("cached job, submit+wait"),
                  sps(steps / best.wall_s()), base, Ratio(steps / best.wall_s(), local_sps),
                  diloco ? ">= 0.95x" : ">= 0.85x"});
  rows.push_back({"cached job, submit+wait", sps(steps / best.wall_s()),
                  "local finetune less its fixed cost: " + sps(local_steps_only),
                  Ratio(steps / best.wall_s(), local_steps_only), "-"});
  rows.push_back({"time (" + std::to_string(opt.steps) + " steps)",
                  FormatFixed(best.wall_s(), 2) + " s cached, " + FormatFixed(first->wall_s(), 2) +
                      " s first",
                  FormatFixed(local.seconds, 2) + " s", "-", "-"});
  if (diloco) {
    // DiLoCo's rounds are not local finetune's steps: the last loss of each.
    const double farm_loss = best.losses.empty() ? NAN : best.losses.back();
    const double local_loss = warm->losses.empty() ? NAN : warm->losses.back();
    rows.push_back({"last loss (diloco: the last round's mean over its inner steps)",
                    FormatFixed(farm_loss, 4) + " (" + std::to_string(best.losses.size()) +
                        " rounds)",
                    "local finetune's last step: " + FormatFixed(local_loss, 4), "-", "-"});
  } else {
    int mismatches = LossMismatches(first->losses, warm->losses);
    for (const auto& r : cached) mismatches += LossMismatches(r.losses, warm->losses);
    const int compared = opt.steps * int(1 + cached.size());
    rows.push_back({"step losses equal local finetune's (1e-4 relative)",
                    std::to_string(compared - mismatches) + " of " + std::to_string(compared),
                    "-", "-", "all"});
  }
  std::vector<std::string> notes;
  notes.push_back("model: engine_bench's llama (hidden 768, 12 layers, vocab 32000, F32, 110M), " +
                  model);
  notes.push_back(std::to_string(opt.examples) + " text examples of 100..400 characters; " +
                  std::to_string(opt.steps) + " steps of " + std::to_string(opt.batch) +
                  " examples, LoRA rank 8 on q/k/v/o, --max-length 256; micro-batch " +
                  std::to_string(opt.micro_batch > 0 ? opt.micro_batch : opt.batch) + " (" +
                  std::to_string(best.shards / std::max<size_t>(1, best.losses.size())) +
                  (diloco ? " shard(s) a round)" : " shard(s) a step)"));
  {
    std::string t;
    for (const auto& l : locals) t += (t.empty() ? "" : ", ") + FormatFixed(l.seconds, 2);
    notes.push_back("local finetune: best of " + std::to_string(locals.size()) + " (" + t +
                    " s); a 1-step run " + FormatFixed(one->seconds, 2) +
                    " s, so its fixed cost is ~" + FormatFixed(fixed, 2) + " s");
  }
  {
    std::string t;
    for (const auto& r : cached) {
      t += (t.empty() ? "" : ", ") + FormatFixed(r.submit_s, 2) + " + " + FormatFixed(r.wait_s, 2);
    }
    notes.push_back("cached jobs (submit + wait): " + t + " s");
  }
  notes.push_back("first job: submit " + FormatFixed(first->submit_s, 2) + " s (uploaded " +
                  FormatFixed(double(first->uploaded) / (1 << 20), 1) + " MiB), wait " +
                  FormatFixed(first->wait_s, 2) + " s");
  notes.push_back("traffic per step (trainer_log): up " +
                  FormatFixed(double(best.bytes_up) / steps / (1 << 20), 2) + " MiB, down " +
                  FormatFixed(double(best.bytes_down) / steps / (1 << 20), 2) + " MiB");
  notes.push_back("coordinator + 1 pcfarm-worker (1 slot, heartbeat 1 s, lease 60 s), "
                  "`pcfarm wait --poll 0.1`; all on the same cores");
  notes.push_back("load average before / after: " + load_before + " / " + load_after);
  PrintBenchTable("farm_finetune_bench: a finetune job on the farm vs pcfarm local finetune",
                  rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{"farm_finetune_bench: a finetune job on the farm vs pcfarm local finetune"};
  app.add_option("--steps", opt.steps, "optimizer steps (>= 2)")->capture_default_str();
  app.add_option("--batch", opt.batch, "examples per step")->capture_default_str();
  app.add_option("--micro-batch", opt.micro_batch, "examples per shard (0: the batch)")
      ->capture_default_str();
  app.add_option("--local-steps", opt.local_steps,
                 "> 0: the farm job runs --mode diloco --local-steps H")
      ->capture_default_str();
  app.add_option("--examples", opt.examples, "examples in the data file")->capture_default_str();
  app.add_option("--rounds", opt.rounds, "rounds of (local, cached farm job)")
      ->capture_default_str();
  app.add_option("--cache-dir", opt.cache_dir, "where the model is kept")->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (opt.steps < 2) {
    std::fprintf(stderr, "farm_finetune_bench: --steps must be >= 2\n");
    return 1;
  }
  return pcfarm::Run(opt);
}
