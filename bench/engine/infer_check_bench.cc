// infer_check_bench: what checking an infer shard with the infer_check kind
// (one teacher-forced forward pass over prompts + claimed outputs) costs
// beside re-running the shard (the infer kind itself, which decodes token
// by token), measured in the same run on the same model, prompts and
// backend.
//
// The shard: --prompts (32) prompts of random token ids, lengths
// log-uniform in [16, 128], --max-tokens (128) new tokens each, on the
// engine bench's random llama (bench_model.h: 110M parameters, vocab 32000;
// --small: 7M, vocab 8000). The model has no EOS, so every output runs to
// max_tokens. Two settings: greedy, and sampled (temperature 0.8, top_p
// 0.95, top_k off, seed 1: the sampler orders the whole vocabulary). Both kinds run through TaskKind::Run with the
// model's files resolved as a worker's blob cache resolves them; the model
// is loaded before any timing (the kinds share the infer model cache), so
// the figures are compute, not loading. Per setting, one untimed infer run
// gives the claimed outputs; then --rounds rounds alternate which side
// runs first, and each side keeps its fastest round.
//
// --model DIR runs another Hugging Face model directory (config.json,
// model.safetensors, tokenizer.json) instead, e.g. `pcfarm local make-model
// --config small`, whose logits are not as peaked as the bench model's
// (its N(0,1) embeddings make nearly every draw a certainty).
//
// --claim-backend / --check-backend (default: --backend for both) run the
// infer shard on one backend and check it on another: the time ratio then
// compares two devices, but the check's tolerated tokens and largest
// logprob difference measure how far apart the two devices' logits are,
// the figure behind infer_check's tolerance.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/status.h"
#include "bench/engine/bench_model.h"
#include "bench/engine/engine_bench_util.h"
#include "tasks/kinds/infer_check.h"
#include "tasks/kinds/llm_kinds.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {
namespace {

using nlohmann::json;

struct Timed {
  double seconds = 1e300;
  json result;
};

// Runs `kind` on `params` and keeps the result and the time if faster.
Status RunTimed(const TaskKind& kind, const json& params, const RunContext& ctx, Timed* best) {
  const double t0 = NowSeconds();
  Result<std::string> r = kind.Run(params.dump(), ctx);
  const double t = NowSeconds() - t0;
  if (!r.ok()) return r.status().WithContext(std::string(kind.name()));
  if (t < best->seconds) {
    best->seconds = t;
    best->result = json::parse(*r);
  }
  return Status::Ok();
}

int Run(int argc, char** argv) {
  CLI::App app{"infer_check (one teacher-forced pass) beside re-running the infer shard"};
  std::string backend = "cpu", claim_backend, check_backend, cache_dir = "/tmp", model_dir;
  int threads = 2, rounds = 2, prompts = 32, max_tokens = 128;
  bool small = false;
  app.add_option("--backend", backend, "cpu, vulkan or cuda: runs both kinds");
  app.add_option("--claim-backend", claim_backend, "runs the infer shard (default --backend)");
  app.add_option("--check-backend", check_backend, "runs the check (default --backend)");
  app.add_option("--threads", threads, "CPU threads of the backend");
  app.add_option("--cache-dir", cache_dir, "where the random model is written and reused");
  app.add_option("--rounds", rounds, "rounds of (check, re-run), alternating who goes first");
  app.add_option("--prompts", prompts, "prompts in the shard");
  app.add_option("--max-tokens", max_tokens, "new tokens per prompt");
  app.add_flag("--small", small, "the small model (hidden 256, 4 layers, vocab 8000)");
  app.add_option("--model", model_dir, "a Hugging Face model directory to run instead");
  CLI11_PARSE(app, argc, argv);
  if (claim_backend.empty()) claim_backend = backend;
  if (check_backend.empty()) check_backend = backend;
  const std::string load_before = LoadAverage();

  ModelConfig c = EngineBenchConfig(small);
  std::string dir = cache_dir + "/pcfarm_engine_bench_h" + std::to_string(c.hidden_size) + "_l" +
                    std::to_string(c.num_hidden_layers) + "_v" + std::to_string(c.vocab_size);
  Status st = Status::Ok();
  if (model_dir.empty()) {
    st = EnsureEngineBenchModel(dir, c);
  } else {
    dir = model_dir;
    Result<LoadedModel> m = LoadModel(dir);
    if (m.ok()) c = m->config;
    st = m.status();
  }
  if (!st.ok()) {
    std::fprintf(stderr, "infer_check_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  // The model's files under made-up blob names, resolved as a worker's
  // blob cache resolves verified blobs.
  std::map<std::string, std::string> path_of;
  json files = json::object();
  int n = 0;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
    const std::string hash = std::string(63, '0') + char('1' + n++);
    path_of[hash] = dir + "/" + f;
    files[f] = hash;
  }
  auto context = [&](const std::string& be) {
    RunContext ctx;
    ctx.backend = be;
    ctx.cpu_threads = threads;
    ctx.blob_path = [&path_of](std::string_view hash) -> Result<std::string> {
      auto it = path_of.find(std::string(hash));
      if (it == path_of.end()) return NotFound("no blob " + std::string(hash));
      return it->second;
    };
    return ctx;
  };
  const RunContext claim_ctx = context(claim_backend), check_ctx = context(check_backend);

  std::mt19937_64 rng(20261204);
  std::uniform_real_distribution<double> log_len(std::log(16.0), std::log(128.0));
  std::uniform_int_distribution<int32_t> id(3, int32_t(c.vocab_size - 1));
  json prompt_tokens = json::array();
  int64_t prompt_total = 0;
  for (int i = 0; i < prompts; ++i) {
    const int len = int(std::lround(std::exp(log_len(rng))));
    json t = json::array();
    for (int k = 0; k < len; ++k) t.push_back(id(rng));
    prompt_tokens.push_back(t);
    prompt_total += len;
  }

  auto infer = MakeInferKind();
  auto check = MakeInferCheckKind();
  struct Setting {
    const char* name;
    json params;
  };
  const json base = {{"model", files}, {"prompt_tokens", prompt_tokens},
                     {"max_tokens", max_tokens}};
  json sampled = base;
  sampled.update({{"temperature", 0.8}, {"top_p", 0.95}, {"seed", 1}});
  const std::vector<Setting> settings = {{"greedy", base}, {"sampled", sampled}};

  std::vector<EngineBenchRow> rows;
  std::vector<std::string> notes;
  const bool same = claim_backend == check_backend;
  for (const Setting& s : settings) {
    // Untimed: loads the model(s) and gives the claimed outputs.
    Timed warm;
    st = RunTimed(*infer, s.params, claim_ctx, &warm);
    json claim = s.params;
    if (st.ok()) {
      claim["claimed"] = warm.result["outputs"];
      Timed ignored;
      st = RunTimed(*check, claim, check_ctx, &ignored);
    }
    Timed rerun, checked;
    for (int round = 0; round < rounds && st.ok(); ++round) {
      for (int side = 0; side < 2 && st.ok(); ++side) {
        if ((side == 0) == (round % 2 == 0)) {
          st = RunTimed(*check, claim, check_ctx, &checked);
        } else {
          st = RunTimed(*infer, s.params, claim_ctx, &rerun);
        }
      }
    }
    if (!st.ok()) {
      std::fprintf(stderr, "infer_check_bench: %s: %s\n", s.name, st.ToString().c_str());
      return 1;
    }
    const json& v = checked.result;
    if (v["ok"] != true) {
      std::fprintf(stderr, "infer_check_bench: %s: the genuine shard was refuted: %s\n", s.name,
                   v.dump().c_str());
      return 1;
    }
    const int64_t tokens = v["checked_tokens"].get<int64_t>();
    const double ratio = checked.seconds / rerun.seconds;
    rows.push_back({std::string(s.name) + ": shard time", Fixed(checked.seconds, 2) + " s",
                    Fixed(rerun.seconds, 2) + " s", Fixed(ratio, 3) + "×", same ? "< 1×" : "-"});
    rows.push_back({std::string(s.name) + ": claimed tokens/s",
                    Fixed(double(tokens) / checked.seconds, 0),
                    Fixed(double(tokens) / rerun.seconds, 0), Fixed(1 / ratio, 2) + "×", "-"});
    char buf[256];
    std::snprintf(buf, sizeof buf,
                  "%s: %lld claimed tokens checked, %lld passed by the tolerance only, largest "
                  "|logprob claimed - checked| %.3g",
                  s.name, static_cast<long long>(tokens),
                  static_cast<long long>(v["tolerated_tokens"].get<int64_t>()),
                  v["max_logprob_diff"].get<double>());
    notes.push_back(buf);
  }
  notes.push_back("shard: " + std::to_string(prompts) + " prompts of " +
                  std::to_string(prompt_total) + " tokens in all (16-128 each), max_tokens " +
                  std::to_string(max_tokens) + ", model hidden " +
                  std::to_string(c.hidden_size) + ", " + std::to_string(c.num_hidden_layers) +
                  " layers, vocab " + std::to_string(c.vocab_size) + " (" +
                  Fixed(double(ParamCount(c)) / 1e6, 0) + "M parameters)");
  notes.push_back("infer on " + claim_backend + ", infer_check on " + check_backend + ", " +
                  std::to_string(threads) + " CPU threads; fastest of " + std::to_string(rounds) +
                  " rounds alternating who runs first; model loaded before timing");
  notes.push_back("load average before / after: " + load_before + " / " + LoadAverage());
  PrintEngineTable("infer_check_bench", "infer_check", "infer (re-run)", rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Run(argc, argv); }
