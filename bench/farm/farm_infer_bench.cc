// farm_infer_bench: what the farm costs an LLM inference job, beside
// `pcfarm local generate` on the same machine, model and prompts.
//
// Model: the engine benchmark's random llama (hidden 768, 12 layers, 12
// heads of 64, ffn 2048, vocab 32000, tied embeddings, F32: 109.5M
// parameters, 418 MiB; no EOS, so every prompt gets --max-tokens tokens),
// written as a Hugging Face directory into
// --cache-dir/pcfarm_engine_bench_h768_l12_v32000 with the same bytes as
// engine_bench writes there: either benchmark reuses the other's.
// Prompts: --prompts (64) plain-text prompts whose lengths are spread
// log-uniformly over 24..400 characters (its byte-level tokenizer with 8
// merges makes about one token of each character), greedy.
//
// Baseline: `pcfarm local generate --json`, wall time of the process (its
// model load included); tokens counted from its output.
// Ours: a MiniCluster on this machine (tests/integration/mini_cluster.h):
// a coordinator and one `pcfarm-worker` with the daemons' default slots
// (1), heartbeat (1 s) and lease (60 s).
//   first job   `pcfarm submit infer` (hashes and uploads the model) +
//               `pcfarm wait`: the worker downloads the model's blobs and
//               loads it;
//   cached job  the same job again: the blobs are in the coordinator's
//               store and the worker's cache, the model is loaded (the
//               infer kind keeps it between shards).
// tokens/s = generated tokens / (wall time from the start of submit to the
// return of wait), and / (the job's updated_ms - created_ms, the
// coordinator's clock). Each --prompts-per-shard value is one more cached
// job with that split. The fetched tokens are compared with local
// generate's, prompt by prompt.
//
// --rounds rounds of (local generate, cached job), alternating which goes
// first; each side keeps its best round.
//
//   farm_infer_bench [--prompts 64] [--max-tokens 64] [--rounds 2]
//                    [--prompts-per-shard 16]... [--cache-dir /tmp]
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/engine/bench_model.h"
#include "bench/engine/engine_bench_util.h"
#include "bench/grid/grid_bench.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

using nlohmann::json;

struct Options {
  int prompts = 64;
  int max_tokens = 64;
  int rounds = 2;
  std::vector<int> prompts_per_shard = {16};
  std::string cache_dir = "/tmp";
};

int Fail(const Status& s) {
  std::fprintf(stderr, "farm_infer_bench: %s\n", s.ToString().c_str());
  return 1;
}

int64_t EpochMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
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

// ------------------------------------------------------------- the model


// `n` English-like prompts, lengths log-uniform over 24..400 characters,
// the same for every run.
std::vector<std::string> MakePrompts(int n) {
  static const char* kWords[] = {
      "please",  "write",     "a",        "short",     "story",    "about",
      "the",     "farm",      "and",      "its",       "animals",  "explain",
      "how",     "computers", "work",     "when",      "they",     "are",
      "idle",    "at",        "night",    "summarize", "this",     "letter",
      "from",    "teacher",   "to",       "parents",   "what",     "is",
      "capital", "of",        "France",   "river",     "runs",     "past",
      "village", "under",     "stone",    "bridge",    "into",     "forest",
      "list",    "three",     "reasons",  "why",       "language", "models",
      "predict", "next",      "token",    "translate", "sentence", "into",
      "German",  "answer",    "question", "with",      "one",      "word",
      "give",    "an",        "example",  "weather",   "decides",  "work",
      "day"};
  const int kCount = int(sizeof kWords / sizeof kWords[0]);
  std::mt19937 rng(64);
  std::uniform_real_distribution<double> log_len(std::log(24.0),
                                                 std::log(400.0));
  std::uniform_int_distribution<int> word(0, kCount - 1);
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) {
    const size_t len = size_t(std::exp(log_len(rng)));
    std::string p;
    while (p.size() < len) {
      std::string w = kWords[word(rng)];
      if (p.empty())
        w[0] = char(std::toupper(static_cast<unsigned char>(w[0])));
      p += (p.empty() ? "" : " ") + w;
      if (p.size() < len && word(rng) % 9 == 0) p += ".";
    }
    out.push_back(p);
  }
  return out;
}

// ------------------------------------------------------- local generate

struct LocalRun {
  double seconds = 0;
  int64_t tokens = 0;
  std::vector<std::vector<int32_t>> outputs;  // tokens per prompt
};

Result<LocalRun> LocalGenerate(MiniCluster* c, const std::string& model,
                               const std::string& prompts, int max_tokens) {
  CommandResult r = c->Run(
      {c->Binary("pcfarm"), "local", "generate", "--model", model, "--prompts",
       prompts, "--max-tokens", std::to_string(max_tokens), "--json"},
      1'800'000);
  if (r.exit_code != 0) return Internal(r.Describe());
  LocalRun run;
  run.seconds = r.seconds;
  for (const auto& line : Lines(r.out)) {
    json j = json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.contains("tokens")) {
      return Corruption("local generate printed a line that is not a result: " +
                        line);
    }
    run.outputs.push_back(j["tokens"].get<std::vector<int32_t>>());
    run.tokens += int64_t(run.outputs.back().size());
  }
  return run;
}

// ------------------------------------------------------------ farm jobs

// One shard's attempt, from the coordinator's database and the worker's log.
struct ShardTiming {
  int64_t attempt = 0;
  int64_t leased_ms = 0, ended_ms = 0;  // coordinator: lease, result received
  int64_t accepted_ms = 0;              // worker log: ASSIGN accepted
  int64_t run_ms = -1;  // worker log: "done in N ms" (TaskKind::Run)
  int64_t done_ms = 0;  // worker log: that line's time
  int prompts = 0;      // in the shard's params
};

struct FarmRun {
  int64_t job = 0;
  int prompts_per_shard = 0;  // 0: the coordinator's default split
  double submit_s = 0, wait_s = 0;
  int64_t start_ms = 0, wait_end_ms = 0;   // this process's clock (epoch ms)
  int64_t created_ms = 0, updated_ms = 0;  // the coordinator's
  int64_t shards_total = 0;
  int64_t uploaded_bytes = 0;
  int64_t tokens = 0;
  int mismatches = 0;  // prompts whose fetched tokens differ from local's
  std::vector<ShardTiming> shards;

  double wall_s() const { return submit_s + wait_s; }
  double coordinator_s() const {
    return double(updated_ms - created_ms) / 1000.0;
  }
};

// "2026-12-04 02:37:38.123" (local time, as the daemons' logs print it) in
// epoch ms; -1 when the line does not start with one.
int64_t LogLineMs(const std::string& line) {
  std::tm tm{};
  int ms = 0;
  if (std::sscanf(line.c_str(), "%d-%d-%d %d:%d:%d.%d", &tm.tm_year, &tm.tm_mon,
                  &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
    return -1;
  }
  tm.tm_year -= 1900;
  tm.tm_mon -= 1;
  tm.tm_isdst = -1;
  return int64_t(std::mktime(&tm)) * 1000 + ms;
}

// Fills each shard's worker-side times from the worker's log.
void ReadWorkerLog(const std::string& log, std::vector<ShardTiming>* shards) {
  std::map<int64_t, ShardTiming*> by_attempt;
  for (auto& s : *shards) by_attempt[s.attempt] = &s;
  for (const auto& line : Lines(ReadText(log))) {
    size_t at = line.find("worker: attempt ");
    if (at == std::string::npos) continue;
    long long attempt = 0, ms = 0;
    const char* rest = line.c_str() + at + 16;
    auto it = by_attempt.end();
    if (std::sscanf(rest, "%lld", &attempt) == 1) it = by_attempt.find(attempt);
    if (it == by_attempt.end()) continue;
    if (line.find(" accepted: ") != std::string::npos) {
      it->second->accepted_ms = LogLineMs(line);
    } else if (std::sscanf(rest, "%lld done in %lld ms", &attempt, &ms) == 2) {
      it->second->run_ms = ms;
      it->second->done_ms = LogLineMs(line);
    }
  }
}

Result<FarmRun> RunFarmJob(MiniCluster* c, const std::string& model,
                           const std::string& prompts, int max_tokens,
                           int prompts_per_shard, const LocalRun& local) {
  FarmRun run;
  run.prompts_per_shard = prompts_per_shard;
  std::vector<std::string> submit = {
      "submit",    "infer", "--model",      model,
      "--prompts", prompts, "--max-tokens", std::to_string(max_tokens),
      "--json"};
  if (prompts_per_shard > 0) {
    submit.insert(submit.end(),
                  {"--prompts-per-shard", std::to_string(prompts_per_shard)});
  }
  run.start_ms = EpochMs();
  CommandResult s = c->Cli(submit, 60, 1'800'000);
  if (s.exit_code != 0) return Internal(s.Describe());
  json sj = json::parse(s.LastLine(), nullptr, false);
  if (sj.is_discarded() || !sj.contains("job_id"))
    return Corruption("submit: " + s.Describe());
  run.job = sj["job_id"].get<int64_t>();
  run.uploaded_bytes = sj.value("uploaded_bytes", int64_t{0});
  run.submit_s = s.seconds;
  CommandResult w =
      c->Cli({"wait", std::to_string(run.job), "--poll", "0.1"}, 30, 3'600'000);
  run.wait_end_ms = EpochMs();
  run.wait_s = w.seconds;
  if (w.exit_code != 0)
    return Internal(w.Describe() + "\n" + c->DumpLogs(4000));

  PCFARM_ASSIGN_OR_RETURN(json st, c->JobStatus(run.job));
  run.created_ms = st.value("created_ms", int64_t{0});
  run.updated_ms = st.value("updated_ms", int64_t{0});
  run.shards_total = st.value("shards_total", int64_t{0});

  const std::string job = std::to_string(run.job);
  PCFARM_ASSIGN_OR_RETURN(
      auto rows,
      c->db().Query(
          "SELECT a.id, a.leased_ms, COALESCE(a.ended_ms, 0), s.params "
          "FROM attempts a JOIN shards s ON s.id=a.shard_id "
          "WHERE a.job_id=" +
          job + " ORDER BY a.leased_ms, a.id"));
  for (const auto& r : rows) {
    ShardTiming t;
    t.attempt = std::stoll(r[0]);
    t.leased_ms = std::stoll(r[1]);
    t.ended_ms = std::stoll(r[2]);
    json params = json::parse(r[3], nullptr, false);
    if (!params.is_discarded() && params.contains("prompts")) {
      t.prompts = int(params["prompts"].size());
    }
    run.shards.push_back(t);
  }
  ReadWorkerLog(c->worker_dir(0) + ".log", &run.shards);

  const std::string out = c->dir() + "/out-" + job + ".jsonl";
  CommandResult f = c->Cli({"fetch", job, "--out", out}, 30, 300'000);
  if (f.exit_code != 0) return Internal(f.Describe());
  std::vector<std::string> fetched = Lines(ReadText(out));
  if (fetched.size() != local.outputs.size()) {
    return Internal("fetched " + std::to_string(fetched.size()) +
                    " lines, local generate " +
                    std::to_string(local.outputs.size()));
  }
  for (size_t i = 0; i < fetched.size(); ++i) {
    json j = json::parse(fetched[i], nullptr, false);
    if (j.is_discarded() || !j.contains("tokens") ||
        j.value("index", -1) != int(i)) {
      return Corruption(out + ":" + std::to_string(i + 1) +
                        ": not the result of prompt " + std::to_string(i));
    }
    auto tokens = j["tokens"].get<std::vector<int32_t>>();
    run.tokens += int64_t(tokens.size());
    run.mismatches += tokens != local.outputs[i];
  }
  return run;
}

// Where a job's time went, from the start of submit to the return of wait.
std::string Breakdown(const FarmRun& r) {
  int64_t run_sum = 0, first_lease = 0, last_end = 0, between = 0;
  for (size_t i = 0; i < r.shards.size(); ++i) {
    const ShardTiming& t = r.shards[i];
    run_sum += std::max<int64_t>(t.run_ms, 0);
    if (i == 0 || t.leased_ms < first_lease) first_lease = t.leased_ms;
    last_end = std::max(last_end, t.ended_ms);
  }
  // Lease to result, less the run itself: ASSIGN, blob wait, model
  // load outside Run (none), RESULT, verify and commit.
  for (const auto& t : r.shards)
    between += (t.ended_ms - t.leased_ms) - std::max<int64_t>(t.run_ms, 0);
  auto s = [](int64_t ms) { return FormatFixed(double(ms) / 1000.0, 2); };
  return "submit CLI " + FormatFixed(r.submit_s, 2) + " s (job created " +
         s(r.created_ms - r.start_ms) +
         " s after it began); created -> first lease " +
         s(first_lease - r.created_ms) +
         " s; shards' TaskKind::Run on the worker " + s(run_sum) +
         " s in all; lease -> result less the run, summed " + s(between) +
         " s; last result -> job end " + s(r.updated_ms - last_end) +
         " s; job end -> wait returned " + s(r.wait_end_ms - r.updated_ms) +
         " s";
}

std::string PerShard(const FarmRun& r) {
  std::string out;
  for (const auto& t : r.shards) {
    if (!out.empty()) out += ", ";
    out += std::to_string(t.prompts) + ": " +
           FormatFixed(double(t.run_ms) / 1000.0, 2);
    if (t.accepted_ms > 0 && t.done_ms > 0 && t.run_ms >= 0) {
      int64_t waited = (t.done_ms - t.run_ms) - t.accepted_ms;
      if (waited > 50)
        out += " (+" + FormatFixed(double(waited) / 1000.0, 2) + " blob wait)";
    }
  }
  return "(prompts: seconds) " + out + " s";
}

std::string Ratio(double ours, double base) {
  return FormatFixed(ours / base, 3) + "x";
}

int Run(const Options& opt) {
  const std::string load_before = LoadAverage();
  const ModelConfig config = EngineBenchConfig(/*small=*/false);
  const std::string model =
      opt.cache_dir + "/pcfarm_engine_bench_h768_l12_v32000";
  Status s = EnsureEngineBenchModel(model, config);
  if (!s.ok()) return Fail(s);
  int64_t model_bytes = 0;
  for (const auto& e : std::filesystem::directory_iterator(model)) {
    if (e.is_regular_file()) model_bytes += int64_t(e.file_size());
  }

  MiniClusterOptions mco;  // the daemons' defaults, not the tests' short ones
  mco.heartbeat_interval_ms = 1000;
  mco.heartbeat_liveness = 3;
  mco.lease_ms = 60'000;
  mco.log_level = "info";
  MiniCluster cluster(mco);
  s = cluster.Init();
  if (!s.ok()) return Fail(s);
  // A fresh hash cache: the first submit hashes the model's files.
  const std::string home = cluster.dir() + "/home";
  std::filesystem::create_directories(home);
  ::setenv("HOME", home.c_str(), 1);
  ::setenv("XDG_CACHE_HOME", (home + "/.cache").c_str(), 1);

  const std::string prompts = cluster.dir() + "/prompts.jsonl";
  std::vector<int64_t> prompt_tokens;
  {
    auto loaded = LoadModel(model);
    if (!loaded.ok()) return Fail(loaded.status());
    std::ofstream out(prompts, std::ios::binary);
    for (const std::string& p : MakePrompts(opt.prompts)) {
      out << json{{"prompt", p}}.dump() << "\n";
      prompt_tokens.push_back(
          int64_t(loaded->tokenizer.Encode(p, true).size()));
    }
    if (!out.good()) return Fail(IoError("cannot write " + prompts));
  }
  std::sort(prompt_tokens.begin(), prompt_tokens.end());
  int64_t prompt_sum = 0;
  for (int64_t t : prompt_tokens) prompt_sum += t;

  std::fprintf(stderr, "local generate (warm-up: page cache) ...\n");
  auto warm = LocalGenerate(&cluster, model, prompts, opt.max_tokens);
  if (!warm.ok()) return Fail(warm.status());
  // The fixed cost of a local run: process start and model load.
  CommandResult one =
      cluster.Run({cluster.Binary("pcfarm"), "local", "generate", "--model",
                   model, "--prompt", "the", "--max-tokens", "1"},
                  300'000);
  if (one.exit_code != 0) return Fail(Internal(one.Describe()));

  s = cluster.StartCoordinator();
  if (!s.ok()) return Fail(s);
  auto w = cluster.AddWorker("w0");
  if (!w.ok()) return Fail(w.status());
  s = cluster.WaitForConnectedWorkers(1, 30'000);
  if (!s.ok()) return Fail(s);

  std::fprintf(stderr, "first farm job (upload, download, load) ...\n");
  auto first = RunFarmJob(&cluster, model, prompts, opt.max_tokens, 0, *warm);
  if (!first.ok()) return Fail(first.status());

  std::vector<LocalRun> locals;
  std::vector<FarmRun> cached;
  for (int round = 0; round < opt.rounds; ++round) {
    for (int side = 0; side < 2; ++side) {
      if ((side == 0) == (round % 2 == 0)) {
        std::fprintf(stderr, "round %d: local generate ...\n", round + 1);
        auto l = LocalGenerate(&cluster, model, prompts, opt.max_tokens);
        if (!l.ok()) return Fail(l.status());
        if (l->outputs != warm->outputs)
          return Fail(Internal("local generate is not deterministic"));
        locals.push_back(std::move(*l));
      } else {
        std::fprintf(stderr, "round %d: cached farm job ...\n", round + 1);
        auto f = RunFarmJob(&cluster, model, prompts, opt.max_tokens, 0, *warm);
        if (!f.ok()) return Fail(f.status());
        cached.push_back(std::move(*f));
      }
    }
  }
  std::vector<FarmRun> split;
  for (int pps : opt.prompts_per_shard) {
    std::fprintf(stderr, "cached farm job, --prompts-per-shard %d ...\n", pps);
    auto f = RunFarmJob(&cluster, model, prompts, opt.max_tokens, pps, *warm);
    if (!f.ok()) return Fail(f.status());
    split.push_back(std::move(*f));
  }
  const std::string load_after = LoadAverage();

  // Best round per side.
  const LocalRun& local =
      *std::min_element(locals.begin(), locals.end(),
                        [](auto& a, auto& b) { return a.seconds < b.seconds; });
  const FarmRun& best = *std::min_element(
      cached.begin(), cached.end(),
      [](auto& a, auto& b) { return a.wall_s() < b.wall_s(); });
  const double local_tps = double(local.tokens) / local.seconds;
  auto tps = [](int64_t tokens, double s) { return double(tokens) / s; };
  auto tok_s = [](double v) { return FormatFixed(v, 1) + " tok/s"; };
  const std::string base = "local generate: " + tok_s(local_tps);

  std::vector<BenchRow> rows;
  rows.push_back({"first job (upload + download + load), submit+wait",
                  tok_s(tps(first->tokens, first->wall_s())), base,
                  Ratio(tps(first->tokens, first->wall_s()), local_tps), "-"});
  rows.push_back({"cached job, submit+wait wall time",
                  tok_s(tps(best.tokens, best.wall_s())), base,
                  Ratio(tps(best.tokens, best.wall_s()), local_tps),
                  ">= 0.9x"});
  rows.push_back({"cached job, coordinator created -> updated",
                  tok_s(tps(best.tokens, best.coordinator_s())), base,
                  Ratio(tps(best.tokens, best.coordinator_s()), local_tps),
                  ">= 0.9x"});
  // The stricter baseline: local generate less its fixed cost (process
  // start and model load), which a cached job does not pay.
  const double gen_tps =
      double(local.tokens) / std::max(local.seconds - one.seconds, 1e-3);
  rows.push_back({"cached job, submit+wait wall time",
                  tok_s(tps(best.tokens, best.wall_s())),
                  "local generate less its fixed cost: " + tok_s(gen_tps),
                  Ratio(tps(best.tokens, best.wall_s()), gen_tps), "-"});
  for (const FarmRun& r : split) {
    rows.push_back({"cached job, --prompts-per-shard " +
                        std::to_string(r.prompts_per_shard) + ", submit+wait",
                    tok_s(tps(r.tokens, r.wall_s())), base,
                    Ratio(tps(r.tokens, r.wall_s()), local_tps), ">= 0.9x"});
  }
  rows.push_back({"time (" + std::to_string(opt.prompts) + " prompts)",
                  FormatFixed(best.wall_s(), 2) + " s cached, " +
                      FormatFixed(first->wall_s(), 2) + " s first",
                  FormatFixed(local.seconds, 2) + " s", "-", "-"});
  int mismatches = first->mismatches;
  for (const auto& r : cached) mismatches += r.mismatches;
  for (const auto& r : split) mismatches += r.mismatches;
  const int compared =
      int(local.outputs.size()) * int(1 + cached.size() + split.size());
  rows.push_back({"fetched tokens equal local generate's",
                  std::to_string(compared - mismatches) + " of " +
                      std::to_string(compared) + " prompts",
                  "-", "-", "all"});

  std::vector<std::string> notes;
  notes.push_back(
      "model: llama, hidden 768, 12 layers, 12 heads of 64, ffn 2048, vocab "
      "32000, "
      "tied, F32 (engine_bench's, " +
      model + "), " + FormatFixed(double(model_bytes) / (1 << 20), 0) + " MiB");
  notes.push_back(std::to_string(opt.prompts) + " prompts, " +
                  std::to_string(prompt_sum) + " prompt tokens (" +
                  std::to_string(prompt_tokens.front()) + ".." +
                  std::to_string(prompt_tokens.back()) + ", median " +
                  std::to_string(prompt_tokens[prompt_tokens.size() / 2]) +
                  "), greedy, --max-tokens " + std::to_string(opt.max_tokens) +
                  ": " + std::to_string(local.tokens) + " tokens generated");
  notes.push_back(
      "default split: " + std::to_string(best.shards_total) +
      " shards (coordinator's token budget); local generate batches 16 prompts "
      "per Generate call, a shard all of its prompts");
  notes.push_back(
      "local generate: best of " + std::to_string(locals.size()) + " runs (" +
      [&] {
        std::string t;
        for (const auto& l : locals)
          t += (t.empty() ? "" : ", ") + FormatFixed(l.seconds, 2);
        return t;
      }() +
      " s); its fixed cost (process, model load; 1 prompt, 1 token) " +
      FormatFixed(one.seconds, 2) + " s");
  {
    std::string t;
    for (const auto& r : cached) {
      t += (t.empty() ? "" : ", ") + FormatFixed(r.wall_s(), 2) + " / " +
           FormatFixed(r.coordinator_s(), 2);
    }
    notes.push_back("cached jobs (submit+wait / created->updated): " + t +
                    " s; best: job " + std::to_string(best.job));
  }
  notes.push_back(
      "first job: submit " + FormatFixed(first->submit_s, 2) + " s (uploaded " +
      FormatFixed(double(first->uploaded_bytes) / (1 << 20), 1) +
      " MiB, hashing included), " + std::to_string(first->shards_total) +
      " shards; worker run per shard " + PerShard(*first));
  notes.push_back("first job's time: " + Breakdown(*first));
  notes.push_back("cached job's time: " + Breakdown(best) + "; run per shard " +
                  PerShard(best));
  for (const FarmRun& r : split) {
    notes.push_back("--prompts-per-shard " +
                    std::to_string(r.prompts_per_shard) + ": " +
                    std::to_string(r.shards_total) + " shards; " +
                    Breakdown(r) + "; run per shard " + PerShard(r));
  }
  notes.push_back(
      "coordinator + 1 pcfarm-worker (1 slot, heartbeat 1 s, lease 60 s), "
      "`pcfarm wait --poll 0.1`; all on the same 2 cores");
  notes.push_back("load average before / after: " + load_before + " / " +
                  load_after);
  PrintBenchTable(
      "farm_infer_bench: an infer job on the farm vs pcfarm local generate",
      rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) {
  pcfarm::Options opt;
  CLI::App app{
      "An LLM inference job on a one-worker farm vs pcfarm local generate"};
  app.add_option("--prompts", opt.prompts, "prompts in the job")
      ->capture_default_str();
  app.add_option("--max-tokens", opt.max_tokens, "new tokens per prompt")
      ->capture_default_str();
  app.add_option("--rounds", opt.rounds,
                 "rounds of (local generate, cached job)")
      ->capture_default_str();
  app.add_option("--prompts-per-shard", opt.prompts_per_shard,
                 "one more cached job split this way, per value (none: 0)");
  app.add_option("--cache-dir", opt.cache_dir,
                 "where the model is written and reused")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  if (opt.prompts < 1 || opt.max_tokens < 1 || opt.rounds < 1) {
    std::fprintf(stderr,
                 "farm_infer_bench: --prompts, --max-tokens and --rounds must "
                 "be >= 1\n");
    return 64;
  }
  opt.prompts_per_shard.erase(std::remove(opt.prompts_per_shard.begin(),
                                          opt.prompts_per_shard.end(), 0),
                              opt.prompts_per_shard.end());
  return pcfarm::Run(opt);
}
