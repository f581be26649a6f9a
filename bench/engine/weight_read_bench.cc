// weight_read_bench: the weight products of a decode step for every storage
// type the CPU backend holds — F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K —
// each beside the plain read of as many bytes (issue 16).
//
// One step multiplies one activation row (then --batch rows) with the
// projections of the engine benchmark's ~110M llama: 12 layers of q, k, v,
// o (768×768), gate and up (2048×768) and down (768×2048), 85M weights,
// each matrix its own tensor of random values (random codes and scales for
// the block formats), in the order a decode step reads them, with rounded
// activations on as generation has them (backend.h). A step reads every
// weight byte once, so its rate is weight bytes ÷ step time, and the ratio
// is that over the rate a plain multi-threaded read of as many bytes
// reaches with as many threads (ReadBandwidth, engine_bench_util.h),
// measured right before each type. The batched row is weights × rows a
// second beside the F32 weights' in the same round.
//
// Kernels only, no attention, norms or lm_head: engine_bench --storage
// measures whole decode steps, but it can only make the formats our GGUF
// writer writes (F32..Q4_0), while Q4_K and Q6_K are what most GGUF files
// on the web hold (Q4_K_M is Q4_K with Q6_K for some matrices).
//
//   weight_read_bench [--threads 2] [--rounds 2] [--reps 5] [--batch 16]
//                     [--only Q4_K,Q6_K] [--activations rounded|f32]
//
// --activations f32 measures the products with f32 activations instead (as
// scoring, checks and training take them: Backend::rounded_activations off).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "base/status.h"
#include "bench/engine/engine_bench_util.h"
#include "tasks/backend/backend.h"
#include "tasks/backend/random_storage_bytes.h"
#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

struct Matrix {
  const char* what;
  int64_t n, k;  // [out, in]
};

constexpr int kLayers = 12;
const Matrix kLayer[] = {{"q", 768, 768},     {"k", 768, 768},  {"v", 768, 768},
                         {"o", 768, 768},     {"gate", 2048, 768}, {"up", 2048, 768},
                         {"down", 768, 2048}};

const std::vector<std::pair<std::string, StorageType>> kTypes = {
    {"F32", StorageType::kF32},   {"F16", StorageType::kF16},   {"BF16", StorageType::kBF16},
    {"Q8_0", StorageType::kQ8_0}, {"Q4_0", StorageType::kQ4_0}, {"Q4_K", StorageType::kQ4_K},
    {"Q6_K", StorageType::kQ6_K}};

struct Figures {
  uint64_t weight_bytes = 0;
  double read_bytes_per_s = 0;
  double step_s = 0;        // one row
  double batch_step_s = 0;  // --batch rows
};

// The weights of every layer in `type`, a step at 1 and at `batch` rows.
Result<Figures> Measure(Backend& be, StorageType type, int batch, int threads, int reps,
                        bool rounded) {
  std::mt19937 rng(7);
  std::vector<Tensor> weights;
  Figures f;
  for (int l = 0; l < kLayers; ++l) {
    for (const Matrix& m : kLayer) {
      PCFARM_ASSIGN_OR_RETURN(Tensor w, be.Alloc({m.n, m.k}, type));
      const std::vector<std::byte> bytes =
          testing::RandomStorageBytes(type, m.n, m.k, uint32_t(weights.size() + 1));
      PCFARM_RETURN_IF_ERROR(be.UploadBytes(w, bytes));
      f.weight_bytes += bytes.size();
      weights.push_back(std::move(w));
    }
  }
  // Activations and outputs of 1 and of `batch` rows.
  std::uniform_real_distribution<float> u(-1, 1);
  struct Io {
    Tensor x768, x2048, y768, y2048;
  };
  auto make_io = [&](int rows) -> Result<Io> {
    Io io;
    PCFARM_ASSIGN_OR_RETURN(io.x768, be.Alloc({rows, 768}, StorageType::kF32));
    PCFARM_ASSIGN_OR_RETURN(io.x2048, be.Alloc({rows, 2048}, StorageType::kF32));
    PCFARM_ASSIGN_OR_RETURN(io.y768, be.Alloc({rows, 768}, StorageType::kF32));
    PCFARM_ASSIGN_OR_RETURN(io.y2048, be.Alloc({rows, 2048}, StorageType::kF32));
    std::vector<float> xv(size_t(rows) * 2048);
    for (float& v : xv) v = u(rng);
    PCFARM_RETURN_IF_ERROR(be.Upload(io.x768, std::span<const float>(xv).first(size_t(rows) * 768)));
    PCFARM_RETURN_IF_ERROR(be.Upload(io.x2048, xv));
    return io;
  };
  PCFARM_ASSIGN_OR_RETURN(Io one, make_io(1));
  PCFARM_ASSIGN_OR_RETURN(Io many, make_io(batch));
  auto step = [&](const Io& io) -> Status {
    for (int l = 0; l < kLayers; ++l) {
      for (size_t i = 0; i < std::size(kLayer); ++i) {
        const Matrix& m = kLayer[i];
        PCFARM_RETURN_IF_ERROR(be.Gemm(m.n == 768 ? io.y768 : io.y2048,
                                       m.k == 768 ? io.x768 : io.x2048, false,
                                       weights[size_t(l) * std::size(kLayer) + i], true, 1.0f,
                                       0.0f));
      }
    }
    return be.Synchronize();
  };
  be.set_rounded_activations(rounded);
  // The plain read of as many bytes, right before the steps.
  std::vector<uint64_t> words(f.weight_bytes / 8, 1);
  f.read_bytes_per_s = ReadBandwidth(words, threads, reps);
  words = {};
  PCFARM_ASSIGN_OR_RETURN(f.step_s, BestSeconds(reps, [&] { return step(one); }));
  PCFARM_ASSIGN_OR_RETURN(f.batch_step_s, BestSeconds(reps, [&] { return step(many); }));
  return f;
}

int Run(int argc, char** argv) {
  CLI::App app{"weight_read_bench: decode's weight products per storage type beside the "
               "plain read of as many bytes"};
  int threads = 2, rounds = 2, reps = 5, batch = 16;
  std::string only, activations = "rounded";
  app.add_option("--threads", threads, "CPU threads (the plain read uses as many)")
      ->check(CLI::Range(1, 256));
  app.add_option("--rounds", rounds, "every type measured once a round; the best round counts")
      ->check(CLI::Range(1, 20));
  app.add_option("--reps", reps, "timed runs per figure (fastest counts) after a warm-up")
      ->check(CLI::Range(1, 100));
  app.add_option("--batch", batch, "activation rows of the batched step")->check(CLI::Range(2, 64));
  app.add_option("--only", only, "comma-separated types (F32,F16,BF16,Q8_0,Q4_0,Q4_K,Q6_K)");
  app.add_option("--activations", activations,
                 "rounded (15-bit, as generation has them) or f32 (scoring, checks, training)")
      ->check(CLI::IsMember({"rounded", "f32"}));
  CLI11_PARSE(app, argc, argv);
  const bool rounded = activations == "rounded";
  std::vector<std::pair<std::string, StorageType>> types;
  for (const auto& t : kTypes) {
    if (only.empty() || ("," + only + ",").find("," + t.first + ",") != std::string::npos)
      types.push_back(t);
  }
  if (types.empty()) {
    std::fprintf(stderr, "weight_read_bench: --only names no type of F32,F16,BF16,Q8_0,Q4_0,Q4_K,Q6_K\n");
    return 2;
  }
  BackendOptions bo;
  bo.cpu_threads = threads;
  auto be = CreateBackend("cpu", bo);
  if (!be.ok()) {
    std::fprintf(stderr, "weight_read_bench: %s\n", be.status().ToString().c_str());
    return 1;
  }
  const std::string load_before = LoadAverage();
  std::vector<Figures> best(types.size());
  double best_f32_batch_s = 0;  // F32's batched step, the batched rows' baseline
  for (int round = 0; round < rounds; ++round) {
    for (size_t i = 0; i < types.size(); ++i) {
      auto f = Measure(**be, types[i].second, batch, threads, reps, rounded);
      if (!f.ok()) {
        std::fprintf(stderr, "weight_read_bench: %s: %s\n", types[i].first.c_str(),
                     f.status().ToString().c_str());
        return 1;
      }
      Figures& b = best[i];
      b.weight_bytes = f->weight_bytes;
      // The best step and the best read of any round, each on its own.
      b.read_bytes_per_s = std::max(b.read_bytes_per_s, f->read_bytes_per_s);
      b.step_s = round == 0 ? f->step_s : std::min(b.step_s, f->step_s);
      b.batch_step_s = round == 0 ? f->batch_step_s : std::min(b.batch_step_s, f->batch_step_s);
      if (types[i].second == StorageType::kF32) best_f32_batch_s = b.batch_step_s;
      std::fprintf(stderr, "round %d %s: %.2f GB/s of weights, read %.2f GB/s\n", round + 1,
                   types[i].first.c_str(), f->weight_bytes / f->step_s / 1e9,
                   f->read_bytes_per_s / 1e9);
    }
  }
  std::vector<EngineBenchRow> rows;
  for (size_t i = 0; i < types.size(); ++i) {
    const Figures& f = best[i];
    const double ours = f.weight_bytes / f.step_s, read = f.read_bytes_per_s;
    rows.push_back({types[i].first + " decode step, weight GB/s (baseline: plain read)",
                    Fixed(ours / 1e9, 2), Fixed(read / 1e9, 2), Fixed(ours / read, 2) + "×",
                    "≥ 0.85×"});
  }
  if (best_f32_batch_s > 0) {
    for (size_t i = 0; i < types.size(); ++i) {
      if (types[i].second == StorageType::kF32) continue;
      const double steps = 1.0 / best[i].batch_step_s, f32 = 1.0 / best_f32_batch_s;
      rows.push_back({types[i].first + " step of " + std::to_string(batch) +
                          " rows, steps/s (baseline: F32 weights)",
                      Fixed(steps, 1), Fixed(f32, 1), Fixed(steps / f32, 2) + "×", "-"});
    }
  }
  std::ostringstream sizes;
  sizes << "weight bytes a step reads (MB):";
  for (size_t i = 0; i < types.size(); ++i)
    sizes << " " << types[i].first << " " << Fixed(best[i].weight_bytes / 1e6, 1);
  PrintEngineTable(
      "weight_read_bench", "ours", "baseline", rows,
      {(*be)->info().description + ", " + std::to_string(threads) + " threads, " +
           (rounded ? "rounded activations (generation's)" : "f32 activations"),
       "a step: the 84 projections of the ~110M llama (12 layers), M = 1 row; fastest of " +
           std::to_string(reps) + " after a warm-up, best of " + std::to_string(rounds) +
           " rounds (the read too)",
       sizes.str(),
       "load average before / after: " + load_before + " / " + LoadAverage() +
           " (other processes share the cores)"});
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Run(argc, argv); }
