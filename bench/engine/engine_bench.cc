// engine_bench: the llama engine end to end (prefill, decode, LoRA training,
// peak memory) beside a baseline measured in the same run.
//
//   --backend cpu (default): our CPU backend vs PyTorch eager mode
//     (bench/engine/torch_llama.py, run as a subprocess) on the same
//     random ~110M-parameter F32 llama, the same token ids, the same
//     thread count.
//   --backend cuda: the CUDA backend vs the same PyTorch program on the
//     same GPU (torch_llama.py with device cuda), on the same ~110M model.
//   --backend vulkan: the Vulkan backend vs our CPU backend on a smaller
//     model (lavapipe, Mesa's CPU emulation of Vulkan, is too slow for the
//     large one); the figures measure lavapipe, not a GPU.
//   --storage: the CPU backend on the same model stored as F32, F16, BF16,
//     Q8_0, Q4_0, Q4_K and Q6_K: decode beside its memory-bandwidth bound, batched
//     decode and prefill beside F32 (bench/engine/engine_bench_storage.h).
//
// The model is written once with WriteHfModel into --cache-dir and reused.
// Every timing is the fastest of --reps runs after one warm-up, and the best
// of --rounds rounds that alternate which side runs first; decode is
// (Generate of N new tokens) − (Generate of 1 new token), so it counts the
// N−1 single-token steps only. Peak memory is VmHWM, reset after the model
// is loaded, over the inference measurements.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "base/file.h"
#include "base/status.h"
#include "bench/engine/bench_model.h"
#include "bench/engine/engine_bench_storage.h"
#include "bench/engine/engine_bench_util.h"
#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/llama.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

struct BenchShape {
  std::vector<std::pair<int, int>> prefill;  // (batch, length)
  int prompt = 32, decode_new = 48;
  int train_batch = 4, train_len = 128, train_steps = 1;
  int lora_rank = 16;
  double lora_alpha = 32;
  int reps = 1;
};


struct Inputs {
  std::vector<std::vector<std::vector<int32_t>>> prefill;
  std::vector<int32_t> prompt;
  std::vector<std::vector<int32_t>> train;
};

Inputs MakeInputs(const BenchShape& s, int64_t vocab) {
  std::mt19937 rng(7);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  auto seq = [&](int len) {
    std::vector<int32_t> v(size_t(len), 0);
    for (int32_t& t : v) t = id(rng);
    return v;
  };
  Inputs in;
  for (auto [b, len] : s.prefill) {
    std::vector<std::vector<int32_t>> batch;
    for (int i = 0; i < b; ++i) batch.push_back(seq(len));
    in.prefill.push_back(batch);
  }
  in.prompt = seq(s.prompt);
  for (int i = 0; i < s.train_batch; ++i) in.train.push_back(seq(s.train_len));
  return in;
}

struct PrefillFigure {
  int batch = 0, len = 0;
  double seconds = 0, tok_s = 0;
};

struct Figures {
  double load_s = 0;
  int64_t model_bytes = 0, kv_cache_bytes = 0, peak_rss = 0, rss_after_load = 0;
  int64_t rss_at_start = 0;  // before the model is loaded (libraries, runtime)
  std::string blas_core;      // the OpenBLAS kernel set that ran
  std::vector<PrefillFigure> prefill;
  std::vector<int32_t> decode_tokens;
  double decode_s = 0, decode_tok_s = 0;
  double train_step_s = 0, train_tok_s = 0;
  std::vector<double> losses;
};

Result<Figures> RunEngine(Backend* backend, const std::string& dir, const BenchShape& s,
                          const Inputs& in) {
  Figures f;
  f.rss_at_start = ProcStatusBytes("VmRSS");
  const double t0 = NowSeconds();
  LlamaOptions opts;
  PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Load(dir, backend, opts));
  f.load_s = NowSeconds() - t0;
  const ModelConfig& c = model->config();
  f.model_bytes = ParamCount(c) * 4;
  f.rss_after_load = ProcStatusBytes("VmRSS");
  ResetPeakRss();

  for (const auto& batch : in.prefill) {
    PCFARM_ASSIGN_OR_RETURN(double sec, BestSeconds(s.reps, [&]() -> Status {
      return model->BatchLogits(batch, /*last_only=*/true).status();
    }));
    const int64_t toks = int64_t(batch.size() * batch[0].size());
    f.prefill.push_back({int(batch.size()), int(batch[0].size()), sec, double(toks) / sec});
  }

  GenerationConfig gc;
  gc.sampling.temperature = 0;
  gc.stop_ids = {-1};  // never emitted: always generate max_new_tokens
  const std::vector<GenerationRequest> req = {{in.prompt, 0}};
  auto generate = [&](int n) -> Status {
    gc.max_new_tokens = n;
    PCFARM_ASSIGN_OR_RETURN(std::vector<Generation> g, model->Generate(req, gc));
    if (n == s.decode_new) f.decode_tokens = g[0].tokens;
    return Status::Ok();
  };
  PCFARM_ASSIGN_OR_RETURN(double t_first, BestSeconds(s.reps, [&] { return generate(1); }));
  PCFARM_ASSIGN_OR_RETURN(double t_all, BestSeconds(s.reps, [&] { return generate(s.decode_new); }));
  f.decode_s = t_all - t_first;
  f.decode_tok_s = double(s.decode_new - 1) / f.decode_s;
  f.peak_rss = ProcStatusBytes("VmHWM");
  f.kv_cache_bytes = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim *
                     int64_t(s.prompt + s.decode_new) * 4;

  LoraConfig lora;
  lora.rank = s.lora_rank;
  lora.alpha = s.lora_alpha;
  PCFARM_RETURN_IF_ERROR(model->EnableLora(lora));
  std::vector<TokenSequence> batch;
  for (const auto& t : in.train) batch.push_back({t, {}});
  auto step = [&]() -> Status {
    PCFARM_ASSIGN_OR_RETURN(CrossEntropySums sums, model->AccumulateGradients(batch));
    f.losses.push_back(sums.mean());
    return model->Step(OptimizerConfig{}).status();
  };
  PCFARM_RETURN_IF_ERROR(step());  // warm-up
  const double t1 = NowSeconds();
  for (int i = 0; i < s.train_steps; ++i) PCFARM_RETURN_IF_ERROR(step());
  f.train_step_s = (NowSeconds() - t1) / s.train_steps;
  f.train_tok_s = double(s.train_batch * s.train_len) / f.train_step_s;
  return f;
}

// Runs torch_llama.py and reads its figures.
// omp_passive: OMP_WAIT_POLICY=PASSIVE, so that torch's idle OpenMP
// threads sleep instead of spinning against OpenBLAS's own threads (Debian's
// torch links libgomp and OpenBLAS-pthread; spinning costs it 2.4× on
// prefill with 2 cores).
Result<Figures> RunTorch(const std::string& python, const std::string& script,
                         const std::string& dir, const BenchShape& s, const Inputs& in,
                         int threads, bool omp_passive, const std::string& device) {
  nlohmann::json spec = {{"prefill", in.prefill},       {"decode_prompt", in.prompt},
                         {"decode_new", s.decode_new},  {"train", in.train},
                         {"train_steps", s.train_steps}, {"lora_rank", s.lora_rank},
                         {"lora_alpha", s.lora_alpha},   {"reps", s.reps}};
  const std::string spec_path =
      "/tmp/pcfarm_engine_bench_tokens_" + std::to_string(::getpid()) + ".json";
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(spec_path, spec.dump()));
  const std::string cmd = std::string(omp_passive ? "OMP_WAIT_POLICY=PASSIVE " : "") +
                          python + " " + script + " " + dir + " " + spec_path + " " +
                          std::to_string(threads) + " " + device;
  Result<std::string> ran = RunForLastLine(cmd);
  std::filesystem::remove(spec_path);
  PCFARM_RETURN_IF_ERROR(ran.status());
  const std::string& last = *ran;
  try {
    const nlohmann::json j = nlohmann::json::parse(last);
    Figures f;
    f.load_s = j.at("load_s");
    f.model_bytes = j.at("model_bytes");
    f.kv_cache_bytes = j.at("kv_cache_bytes");
    f.peak_rss = j.at("peak_rss_inference");
    f.rss_after_load = j.at("rss_after_load");
    f.rss_at_start = j.at("rss_at_start");
    f.blas_core = j.value("openblas_core", "unknown");
    for (const auto& pf : j.at("prefill"))
      f.prefill.push_back({pf.at("batch"), pf.at("len"), pf.at("seconds"), pf.at("tok_s")});
    f.decode_tokens = j.at("decode").at("tokens").get<std::vector<int32_t>>();
    f.decode_s = j.at("decode").at("seconds");
    f.decode_tok_s = j.at("decode").at("tok_s");
    f.train_step_s = j.at("train").at("seconds_per_step");
    f.train_tok_s = j.at("train").at("tok_s");
    f.losses = j.at("train").at("losses").get<std::vector<double>>();
    return f;
  } catch (const nlohmann::json::exception& e) {
    return Corruption(script + " printed an unexpected last line (" + e.what() + "): " + last);
  }
}

// Per measure, the better of two rounds; peak RSS stays the first round's
// (for ours a fresh process: later rounds start with the heap that glibc
// kept from the earlier rounds' training).
Figures Best(const Figures& a, const Figures& b) {
  Figures f = a;
  f.load_s = std::min(a.load_s, b.load_s);
  for (size_t i = 0; i < f.prefill.size() && i < b.prefill.size(); ++i)
    if (b.prefill[i].tok_s > f.prefill[i].tok_s) f.prefill[i] = b.prefill[i];
  if (b.decode_tok_s > f.decode_tok_s) {
    f.decode_tok_s = b.decode_tok_s;
    f.decode_s = b.decode_s;
  }
  if (b.train_tok_s > f.train_tok_s) {
    f.train_tok_s = b.train_tok_s;
    f.train_step_s = b.train_step_s;
  }
  return f;
}

std::string Ratio(double ours, double base) {
  if (!(base > 0)) return "-";
  return Fixed(ours / base, ours / base < 0.1 ? 3 : 2) + "×";
}
std::string MiB(int64_t b) { return Fixed(double(b) / (1 << 20), 0) + " MiB"; }

int Run(int argc, char** argv) {
  CLI::App app{"The llama engine end to end beside PyTorch (cpu) or our CPU backend (vulkan)"};
  std::string backend_name = "cpu", cache_dir = "/tmp", python = "/usr/bin/python3";
  std::string script = std::string(PCFARM_ENGINE_BENCH_DIR) + "/torch_llama.py";
  int threads = 2, rounds = 2;
  bool small = false, quick = false, torch_omp_spin = false;
  BenchShape s;
  app.add_option("--backend", backend_name,
                 "cpu or cuda (baseline: PyTorch on the same device) or vulkan (baseline: cpu)");
  app.add_option("--threads", threads, "threads for our backend, OpenBLAS and torch");
  app.add_option("--cache-dir", cache_dir, "where the random model is written and reused");
  app.add_option("--python", python, "a python3 with torch and numpy");
  app.add_option("--torch-script", script, "path of torch_llama.py");
  app.add_option("--rounds", rounds, "rounds of (ours, baseline), alternating who goes first");
  app.add_option("--reps", s.reps, "timed runs per measurement (fastest counts)");
  app.add_option("--train-steps", s.train_steps, "timed LoRA steps");
  app.add_option("--decode-new", s.decode_new, "new tokens per decode run");
  app.add_flag("--torch-omp-spin", torch_omp_spin,
               "leave torch's OpenMP threads spinning (default: OMP_WAIT_POLICY=PASSIVE)");
  app.add_flag("--small", small, "use the small (lavapipe) model on the cpu backend too");
  app.add_flag("--quick", quick, "shorter shapes (prefill 1x64, 16 new tokens, train 2x32)");
  bool storage = false;
  StorageBenchOptions so;
  app.add_flag("--storage", storage,
               "decode, batched decode and prefill with F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q6_K weights (cpu)");
  app.add_option("--only", so.only, "with --storage: these storages only, e.g. q8_0,q4_0");
  app.add_option("--batch", so.batch, "with --storage: sequences of the batched decode");
  CLI11_PARSE(app, argc, argv);
  if (storage) {
    if (backend_name != "cpu") {
      std::fprintf(stderr, "engine_bench: --storage measures the cpu backend\n");
      return 2;
    }
    so.cache_dir = cache_dir;
    so.threads = threads;
    so.rounds = rounds;
    so.reps = std::max(s.reps, 3);
    so.decode_new = s.decode_new;
    so.small = small;
    if (quick) {
      so.decode_new = 16;
      so.prefill = 64;
      so.batch = 4;
    }
    return RunStorageBench(so);
  }
  const std::string load_before = LoadAverage();
  const bool vulkan = backend_name == "vulkan";
  if (vulkan) small = true;
  s.prefill = {{1, 256}, {4, 128}};
  if (quick) {
    s.prefill = {{1, 64}};
    s.decode_new = 16;
    s.train_batch = 2;
    s.train_len = 32;
  }

  const ModelConfig c = EngineBenchConfig(small);
  const std::string dir = cache_dir + "/pcfarm_engine_bench_h" + std::to_string(c.hidden_size) +
                          "_l" + std::to_string(c.num_hidden_layers) + "_v" +
                          std::to_string(c.vocab_size);
  Status st = EnsureEngineBenchModel(dir, c);
  if (!st.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  const Inputs in = MakeInputs(s, c.vocab_size);
  // Before either side runs: sets OPENBLAS_CORETYPE (blas.h), which the
  // PyTorch process inherits, so both sides run the same OpenBLAS kernels.
  st = blas::Load();
  if (!st.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  BackendOptions bo;
  bo.cpu_threads = threads;

  // Rounds alternate which side goes first (ours, base | base, ours | ...)
  // and each figure keeps its best round: the cores are shared, and a side
  // that always ran second would always meet a different load.
  std::string desc;
  const std::string base_name = vulkan ? "our cpu" : "pytorch";
  auto run_ours = [&]() -> Result<Figures> {
    PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, CreateBackend(backend_name, bo));
    desc = be->info().description;
    return RunEngine(be.get(), dir, s, in);
  };
  auto run_base = [&]() -> Result<Figures> {
    if (!vulkan)
      return RunTorch(python, script, dir, s, in, threads, !torch_omp_spin,
                      backend_name == "cuda" ? "cuda" : "cpu");
    PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, CreateBackend("cpu", bo));
    return RunEngine(be.get(), dir, s, in);
  };
  std::optional<Figures> ours, base;
  for (int round = 0; round < rounds; ++round) {
    for (int side = 0; side < 2; ++side) {
      const bool is_ours = (side == 0) == (round % 2 == 0);
      Result<Figures> f = is_ours ? run_ours() : run_base();
      if (!f.ok()) {
        std::fprintf(stderr, "engine_bench: %s: %s\n", is_ours ? backend_name.c_str() : base_name.c_str(),
                     f.status().ToString().c_str());
        return 1;
      }
      std::optional<Figures>& slot = is_ours ? ours : base;
      slot = slot.has_value() ? Best(*slot, *f) : *f;
    }
  }
  const Figures& o = *ours;
  const Figures& b = *base;

  std::vector<EngineBenchRow> rows;
  for (size_t i = 0; i < o.prefill.size() && i < b.prefill.size(); ++i) {
    const PrefillFigure& p = o.prefill[i];
    rows.push_back({"prefill " + std::to_string(p.batch) + "×" + std::to_string(p.len) + " tok/s",
                    Fixed(p.tok_s, 0), Fixed(b.prefill[i].tok_s, 0),
                    Ratio(p.tok_s, b.prefill[i].tok_s), vulkan ? "-" : "≥ 1.00×"});
  }
  rows.push_back({"decode b1, " + std::to_string(s.prompt) + "+" + std::to_string(s.decode_new) +
                      " tok/s",
                  Fixed(o.decode_tok_s, 1), Fixed(b.decode_tok_s, 1),
                  Ratio(o.decode_tok_s, b.decode_tok_s),
                  vulkan ? "-" : backend_name == "cuda" ? "≥ 1.00×" : "≥ 1.50×"});
  rows.push_back({"LoRA r" + std::to_string(s.lora_rank) + " qkvo train " +
                      std::to_string(s.train_batch) + "×" + std::to_string(s.train_len) +
                      " tok/s",
                  Fixed(o.train_tok_s, 0), Fixed(b.train_tok_s, 0),
                  Ratio(o.train_tok_s, b.train_tok_s), vulkan ? "-" : "≥ 1.00×"});
  const int64_t budget = o.model_bytes + o.kv_cache_bytes;
  rows.push_back({"peak RSS, inference (VmHWM, 1st round)", MiB(o.peak_rss), MiB(b.peak_rss),
                  "-", "-"});
  rows.push_back({"  − RSS before loading the model", MiB(o.peak_rss - o.rss_at_start),
                  MiB(b.peak_rss - b.rss_at_start),
                  "ours / (model+KV) = " +
                      Fixed(double(o.peak_rss - o.rss_at_start) / double(budget), 2),
                  vulkan || backend_name == "cuda" ? "-" : "≤ 1.15"});
  rows.push_back({"load s (lower is better)", Fixed(o.load_s, 2), Fixed(b.load_s, 2),
                  Ratio(o.load_s, b.load_s), "-"});

  size_t agree = 0;
  while (agree < o.decode_tokens.size() && agree < b.decode_tokens.size() &&
         o.decode_tokens[agree] == b.decode_tokens[agree])
    ++agree;
  std::vector<std::string> notes = {
      "model: llama, hidden " + std::to_string(c.hidden_size) + ", " +
          std::to_string(c.num_hidden_layers) + " layers, " +
          std::to_string(c.num_attention_heads) + " heads of " + std::to_string(c.head_dim) +
          ", ffn " + std::to_string(c.intermediate_size) + ", vocab " +
          std::to_string(c.vocab_size) + ", tied embeddings, F32: " +
          Fixed(double(ParamCount(c)) / 1e6, 1) + "M parameters, " + MiB(o.model_bytes) +
          "; KV cache " + MiB(o.kv_cache_bytes) + " (ratio budget " + MiB(budget) + ")",
      "ours: " + desc +
          (vulkan ? " — lavapipe is Mesa's CPU emulation of Vulkan, not a GPU; both backends "
                    "run in this one process, so the RSS row is not a per-backend figure"
                  : ""),
      "baseline: " + base_name + ", " + std::to_string(threads) +
          " threads, same weights and token ids" +
          (vulkan ? "" : torch_omp_spin ? ", OpenMP threads spinning" : ", OMP_WAIT_POLICY=PASSIVE"),
      "OpenBLAS kernels: ours " + blas::CoreName() +
          (vulkan ? "" : ", " + base_name + " " + b.blas_core) + " (OPENBLAS_CORETYPE=" +
          (std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE") : "unset") +
          ", inherited by the baseline process)",
      "RSS before loading / right after: ours " + MiB(o.rss_at_start) + " / " +
          MiB(o.rss_after_load) + ", " + base_name + " " + MiB(b.rss_at_start) + " / " +
          MiB(b.rss_after_load) + " (before: the binary's libraries and runtime)",
      "greedy decode tokens agree for the first " + std::to_string(agree) + " of " +
          std::to_string(o.decode_tokens.size()),
      "first LoRA loss: ours " + (o.losses.empty() ? "-" : Fixed(o.losses[0], 5)) + ", " +
          base_name + " " + (b.losses.empty() ? "-" : Fixed(b.losses[0], 5)),
      std::to_string(rounds) + " rounds alternating who runs first, best round per figure; in a "
          "round: fastest of " + std::to_string(s.reps) + " runs after a warm-up; training: mean "
          "of " + std::to_string(s.train_steps) + " steps after one warm-up step (AdamW, clip 1.0)",
  };
  notes.push_back("load average before / after: " + load_before + " / " + LoadAverage() +
                  " (other processes share the cores)");
  PrintEngineTable("engine_bench --backend " + backend_name, backend_name, base_name, rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Run(argc, argv); }
