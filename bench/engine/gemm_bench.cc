// gemm_bench: a backend's Gemm on the shapes the ~110M llama of
// engine_bench uses, beside a baseline measured in the same run.
//
//   --backend cpu (default): our CPU backend's Gemm vs OpenBLAS's own
//     cblas_sgemm called directly on the same host buffers, same threads.
//     Shows what the backend adds (dispatch, BF16 conversion, its own
//     small-M path) on top of the BLAS it wraps.
//   --backend vulkan: the Vulkan backend vs our CPU backend. On a machine
//     without a GPU the Vulkan device is lavapipe, Mesa's CPU emulation of
//     Vulkan: the figures then measure lavapipe, not a GPU.
//   --backend cuda: the CUDA backend vs PyTorch's products (cuBLAS) on the
//     same GPU (bench/engine/torch_gemm.py, run as a subprocess), on the
//     llama shapes and on 4096³ squares; the notes give the GPU's own f32,
//     tf32 and bf16 peaks as cuBLAS reaches them through PyTorch.
//
// Shapes are M×N×K in the linear-layer layout, c[M,N] = a[M,K]·b[N,K]ᵀ (b is
// a weight [out, in]); rows marked "dX" are the backward c[M,K] = a[M,N]·b[N,K].
// Each figure is the fastest of --reps runs after one warm-up, including
// Synchronize().

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "base/status.h"
#include "bench/engine/engine_bench_util.h"
#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

struct GemmShape {
  const char* what;
  int64_t m, n, k;
  bool backward = false;  // c[M,K] = a[M,N]·b[N,K] instead of a[M,K]·b[N,K]ᵀ
  StorageType b_type = StorageType::kF32;
  StorageType a_type = StorageType::kF32;
};

const std::vector<GemmShape>& Shapes() {
  static const std::vector<GemmShape> kShapes = {
      {"prefill q/k/v/o", 256, 768, 768},
      {"prefill gate/up", 256, 2048, 768},
      {"prefill down", 256, 768, 2048},
      {"prefill lm_head", 256, 32000, 768},
      {"train dX down", 512, 2048, 768, true},
      {"decode q/k/v/o", 1, 768, 768},
      {"decode gate/up", 1, 2048, 768},
      {"decode down", 1, 768, 2048},
      {"decode lm_head", 1, 32000, 768},
      {"decode b4 gate/up", 4, 2048, 768},
      {"decode gate/up, b BF16", 1, 2048, 768, false, StorageType::kBF16},
      {"prefill gate/up, b BF16", 256, 2048, 768, false, StorageType::kBF16},
  };
  return kShapes;
}

// A GPU's shapes: the llama's, then squares large enough to reach its peak.
std::vector<GemmShape> GpuShapes() {
  std::vector<GemmShape> v = Shapes();
  v.push_back({"square f32", 4096, 4096, 4096});
  v.push_back({"square, b BF16", 4096, 4096, 4096, false, StorageType::kBF16});
  v.push_back({"square BF16×BF16", 4096, 4096, 4096, false, StorageType::kBF16,
               StorageType::kBF16});
  v.push_back({"prefill 4k gate/up BF16×BF16", 4096, 2048, 768, false, StorageType::kBF16,
               StorageType::kBF16});
  return v;
}

const char* TorchDtype(StorageType t) {
  return t == StorageType::kBF16 ? "bf16" : t == StorageType::kF16 ? "f16" : "f32";
}

struct TorchGemm {
  std::vector<double> seconds;
  double peak_f32 = 0, peak_tf32 = 0, peak_bf16 = 0;  // TFLOP/s
  std::string versions;
};

// Runs torch_gemm.py over `shapes` and reads its figures.
Result<TorchGemm> RunTorchGemm(const std::string& python, const std::string& script,
                               const std::vector<GemmShape>& shapes, int reps) {
  nlohmann::json spec = {{"reps", reps}, {"shapes", nlohmann::json::array()}};
  for (const GemmShape& s : shapes)
    spec["shapes"].push_back({{"m", s.m}, {"n", s.n}, {"k", s.k}, {"backward", s.backward},
                              {"a", TorchDtype(s.a_type)}, {"b", TorchDtype(s.b_type)}});
  const std::string path = "/tmp/pcfarm_gemm_bench_" + std::to_string(::getpid()) + ".json";
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(path, spec.dump()));
  Result<std::string> ran = RunForLastLine(python + " " + script + " " + path);
  std::filesystem::remove(path);
  PCFARM_RETURN_IF_ERROR(ran.status());
  const std::string& last = *ran;
  try {
    const nlohmann::json j = nlohmann::json::parse(last);
    TorchGemm t;
    for (const auto& s : j.at("shapes")) t.seconds.push_back(s.at("seconds"));
    t.peak_f32 = j.at("peak_tflops").at("f32");
    t.peak_tf32 = j.at("peak_tflops").at("tf32");
    t.peak_bf16 = j.at("peak_tflops").at("bf16");
    t.versions = "torch " + j.at("torch").get<std::string>() + ", CUDA " +
                 j.at("cuda").get<std::string>() + ", " + j.at("device").get<std::string>();
    if (t.seconds.size() != shapes.size()) return Corruption(script + ": wrong number of shapes");
    return t;
  } catch (const nlohmann::json::exception& e) {
    return Corruption(script + " printed an unexpected last line (" + e.what() + "): " + last);
  }
}

std::vector<float> RandomVector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) x = u(rng);
  return v;
}

template <typename Fn>
double BestSeconds(int reps, Fn&& fn) {
  fn();
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const double t0 = NowSeconds();
    fn();
    best = std::min(best, NowSeconds() - t0);
  }
  return best;
}

struct GemmRun {
  double seconds = 0;
  std::vector<float> c;
};

// The shape's operands as host vectors: a, then b (rounded to b_type's
// precision through an upload round trip when the backend stores it so).
Result<GemmRun> RunBackend(Backend* be, const GemmShape& s, const std::vector<float>& a,
                           const std::vector<float>& b, int reps) {
  const int64_t cols = s.backward ? s.k : s.n;
  const int64_t inner = s.backward ? s.n : s.k;
  PCFARM_ASSIGN_OR_RETURN(Tensor ta, be->Alloc({s.m, inner}, s.a_type));
  PCFARM_ASSIGN_OR_RETURN(Tensor tb, be->Alloc({s.n, s.k}, s.b_type));
  PCFARM_ASSIGN_OR_RETURN(Tensor tc, be->Alloc({s.m, cols}, StorageType::kF32));
  PCFARM_RETURN_IF_ERROR(be->Upload(ta, a));
  PCFARM_RETURN_IF_ERROR(be->Upload(tb, b));
  Status st = Status::Ok();
  GemmRun r;
  r.seconds = BestSeconds(reps, [&] {
    if (!st.ok()) return;
    st = be->Gemm(tc, ta, false, tb, !s.backward, 1.0f, 0.0f);
    if (st.ok()) st = be->Synchronize();
  });
  PCFARM_RETURN_IF_ERROR(st);
  r.c.resize(size_t(s.m * cols));
  PCFARM_RETURN_IF_ERROR(be->Download(tc, r.c));
  return r;
}

GemmRun RunCblas(const GemmShape& s, const std::vector<float>& a, const std::vector<float>& b,
                 int reps) {
  const int64_t cols = s.backward ? s.k : s.n;
  const int64_t inner = s.backward ? s.n : s.k;
  GemmRun r;
  r.c.assign(size_t(s.m * cols), 0.0f);
  r.seconds = BestSeconds(reps, [&] {
    blas::Sgemm(false, !s.backward, s.m, cols, inner, 1.0f, a.data(), inner, b.data(), s.k,
                0.0f, r.c.data(), cols);
  });
  return r;
}

// b rounded to BF16 the way Upload does (nearest even), so that the cblas
// baseline multiplies the same numbers.
std::vector<float> RoundedToBf16(std::vector<float> v) {
  for (float& x : v) {
    uint32_t u;
    std::memcpy(&u, &x, 4);
    u = (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
    std::memcpy(&x, &u, 4);
  }
  return v;
}

// Keeps fraction × 100 as "NN%".
std::string Percent(double f) { return Fixed(100.0 * f, 0) + "%"; }

// --backend cuda: ours against PyTorch's cuBLAS products on the same GPU;
// each result is checked against cblas_sgemm on the host where that is
// cheap (products up to 2e10 flop).
int RunCuda(int threads, int reps, const std::string& python, const std::string& script,
            const std::string& load_before) {
  BackendOptions bo;
  bo.cpu_threads = threads;
  Result<std::unique_ptr<Backend>> ours = CreateBackend("cuda", bo);
  if (!ours.ok()) {
    std::fprintf(stderr, "gemm_bench: %s\n", ours.status().ToString().c_str());
    return 1;
  }
  Status bl = blas::Load();
  if (!bl.ok()) {
    std::fprintf(stderr, "gemm_bench: %s\n", bl.ToString().c_str());
    return 1;
  }
  blas::SetThreads(int(std::max(1u, std::thread::hardware_concurrency())));
  const std::vector<GemmShape> shapes = GpuShapes();
  Result<TorchGemm> torch = RunTorchGemm(python, script, shapes, reps);
  if (!torch.ok()) {
    std::fprintf(stderr, "gemm_bench: pytorch: %s\n", torch.status().ToString().c_str());
    return 1;
  }
  std::vector<EngineBenchRow> rows;
  double worst_rel = 0, square_f32 = 0, square_bf16 = 0;  // ours, TFLOP/s
  for (size_t i = 0; i < shapes.size(); ++i) {
    const GemmShape& s = shapes[i];
    const int64_t inner = s.backward ? s.n : s.k;
    std::vector<float> a = RandomVector(size_t(s.m * inner), 1);
    std::vector<float> b = RandomVector(size_t(s.n * s.k), 2);
    if (s.b_type == StorageType::kBF16) b = RoundedToBf16(std::move(b));
    if (s.a_type == StorageType::kBF16) a = RoundedToBf16(std::move(a));
    Result<GemmRun> o = RunBackend(ours->get(), s, a, b, reps);
    if (!o.ok()) {
      std::fprintf(stderr, "gemm_bench: %s: %s\n", s.what, o.status().ToString().c_str());
      return 1;
    }
    const double flop = 2.0 * double(s.m) * double(s.n) * double(s.k);
    if (flop <= 2e10) {
      const GemmRun ref = RunCblas(s, a, b, 1);
      double max_diff = 0, max_ref = 0;
      for (size_t j = 0; j < ref.c.size(); ++j) {
        max_diff = std::max(max_diff, double(std::fabs(o->c[j] - ref.c[j])));
        max_ref = std::max(max_ref, double(std::fabs(ref.c[j])));
      }
      worst_rel = std::max(worst_rel, max_diff / std::max(max_ref, 1e-30));
    }
    const double to = flop / o->seconds / 1e12, tb = flop / torch->seconds[i] / 1e12;
    const bool big = flop >= 1e11;
    if (big && s.a_type == StorageType::kF32 && s.b_type == StorageType::kF32) square_f32 = to;
    if (big && s.a_type == StorageType::kBF16) square_bf16 = to;
    rows.push_back({std::string(s.what) + " " + std::to_string(s.m) + "×" + std::to_string(s.n) +
                        "×" + std::to_string(s.k),
                    Fixed(to, to < 1 ? 3 : 1), Fixed(tb, tb < 1 ? 3 : 1),
                    Fixed(to / tb, to / tb < 0.1 ? 3 : 2) + "×", big ? "≥ 0.80×" : "-"});
  }
  std::vector<std::string> notes = {
      "ours: " + (*ours)->info().description,
      "baseline: PyTorch matmul (cuBLAS), " + torch->versions + "; TF32 off; a 16-bit b beside "
          "an f32 a is widened inside the timed region, as ours does; fastest of " +
          std::to_string(reps) + " runs after a warm-up, host clock around launch + synchronize",
      "cuBLAS's own peaks through PyTorch, 8192³: f32 " + Fixed(torch->peak_f32, 1) +
          " TFLOP/s, tf32 " + Fixed(torch->peak_tf32, 1) + ", bf16 " +
          Fixed(torch->peak_bf16, 1) + "; ours reaches " + Percent(square_f32 / torch->peak_f32) +
          " of the f32 peak (4096³) and " + Percent(square_bf16 / torch->peak_bf16) +
          " of the bf16 peak (4096³ BF16×BF16); ours has no TF32 mode",
      "largest |ours − cblas_sgemm| / max|cblas| over the shapes up to 2e10 flop: " +
          Fixed(worst_rel * 1e6, 2) + "e-6",
  };
  notes.push_back("load average before / after: " + load_before + " / " + LoadAverage());
  PrintEngineTable("gemm_bench --backend cuda", "cuda TFLOP/s", "pytorch TFLOP/s", rows, notes);
  return 0;
}

int Run(int argc, char** argv) {
  CLI::App app{"A backend's Gemm beside cblas_sgemm (cpu), our CPU backend (vulkan) or "
               "PyTorch on the same GPU (cuda)"};
  std::string backend_name = "cpu", python = "python3";
  std::string script = std::string(PCFARM_ENGINE_BENCH_DIR) + "/torch_gemm.py";
  int threads = 2, reps = 5;
  app.add_option("--backend", backend_name,
                 "cpu (baseline: cblas_sgemm), vulkan (baseline: cpu) or cuda (baseline: PyTorch)");
  app.add_option("--threads", threads, "threads for our backend and OpenBLAS");
  app.add_option("--reps", reps, "timed runs per shape (fastest counts)");
  app.add_option("--python", python, "a python3 with torch on CUDA (--backend cuda)");
  app.add_option("--torch-script", script, "path of torch_gemm.py (--backend cuda)");
  CLI11_PARSE(app, argc, argv);
  const std::string load_before = LoadAverage();
  const bool vulkan = backend_name == "vulkan";
  if (backend_name == "cuda") return RunCuda(threads, reps, python, script, load_before);

  BackendOptions bo;
  bo.cpu_threads = threads;
  Result<std::unique_ptr<Backend>> ours = CreateBackend(backend_name, bo);
  if (!ours.ok()) {
    std::fprintf(stderr, "gemm_bench: %s\n", ours.status().ToString().c_str());
    return 1;
  }
  std::unique_ptr<Backend> cpu;
  if (vulkan) {
    Result<std::unique_ptr<Backend>> c = CreateBackend("cpu", bo);
    if (!c.ok()) {
      std::fprintf(stderr, "gemm_bench: %s\n", c.status().ToString().c_str());
      return 1;
    }
    cpu = std::move(c).value();
  }
  // OpenBLAS's thread count is global: our CPU backend runs it with one
  // thread inside its own pool, the baseline calls it with `threads`. After
  // a threaded call OpenBLAS's idle threads spin (sched_yield) for a while
  // before they sleep; wait that out so they do not run against our pool.
  auto use_blas_threads = [&](int n) {
    if (vulkan) return;
    blas::SetThreads(n);
    if (n == 1) std::this_thread::sleep_for(std::chrono::milliseconds(300));
  };

  std::vector<EngineBenchRow> rows;
  double worst_rel = 0;
  for (const GemmShape& s : Shapes()) {
    const int64_t inner = s.backward ? s.n : s.k;
    const std::vector<float> a = RandomVector(size_t(s.m * inner), 1);
    std::vector<float> b = RandomVector(size_t(s.n * s.k), 2);
    if (s.b_type == StorageType::kBF16) b = RoundedToBf16(std::move(b));
    use_blas_threads(1);
    Result<GemmRun> o = RunBackend(ours->get(), s, a, b, reps);
    if (!o.ok()) {
      std::fprintf(stderr, "gemm_bench: %s: %s\n", s.what, o.status().ToString().c_str());
      return 1;
    }
    GemmRun base;
    if (vulkan) {
      Result<GemmRun> r = RunBackend(cpu.get(), s, a, b, reps);
      if (!r.ok()) {
        std::fprintf(stderr, "gemm_bench: cpu %s: %s\n", s.what, r.status().ToString().c_str());
        return 1;
      }
      base = std::move(r).value();
    } else {
      use_blas_threads(threads);
      base = RunCblas(s, a, b, reps);
    }
    double max_diff = 0, max_ref = 0;
    for (size_t i = 0; i < base.c.size(); ++i) {
      max_diff = std::max(max_diff, double(std::fabs(o->c[i] - base.c[i])));
      max_ref = std::max(max_ref, double(std::fabs(base.c[i])));
    }
    worst_rel = std::max(worst_rel, max_diff / std::max(max_ref, 1e-30));
    const double flop = 2.0 * double(s.m) * double(s.n) * double(s.k);
    const double go = flop / o->seconds / 1e9, gb = flop / base.seconds / 1e9;
    rows.push_back({std::string(s.what) + " " + std::to_string(s.m) + "×" + std::to_string(s.n) +
                        "×" + std::to_string(s.k),
                    Fixed(go, go < 1 ? 3 : 1), Fixed(gb, gb < 1 ? 3 : 1),
                    Fixed(go / gb, go / gb < 0.1 ? 3 : 2) + "×", vulkan ? "-" : "≈ 1×"});
  }
  const std::string base_name = vulkan ? "our cpu GFLOP/s" : "cblas_sgemm GFLOP/s";
  std::vector<std::string> notes = {
      "ours: " + (*ours)->info().description +
          (vulkan ? " — lavapipe is Mesa's CPU emulation of Vulkan, not a GPU" : ""),
      "baseline: " + std::string(vulkan ? "our CPU backend" : "OpenBLAS cblas_sgemm directly") +
          ", " + std::to_string(threads) + " threads; fastest of " + std::to_string(reps) +
          " runs after a warm-up",
      "largest |ours − baseline| / max|baseline| over all shapes: " + Fixed(worst_rel * 1e6, 2) +
          "e-6",
  };
  notes.push_back("load average before / after: " + load_before + " / " + LoadAverage() +
                  " (other processes share the cores)");
  PrintEngineTable("gemm_bench --backend " + backend_name, backend_name + " GFLOP/s", base_name,
                   rows, notes);
  return 0;
}

}  // namespace
}  // namespace pcfarm

int main(int argc, char** argv) { return pcfarm::Run(argc, argv); }
