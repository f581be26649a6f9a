#include "tasks/backend/cpu/blas.h"

#include <cblas.h>  // declarations only: the library is dlopen()ed
#include <dlfcn.h>

#include <cassert>
#include <cstdlib>
#include <mutex>

namespace pcfarm::blas {

namespace {

constexpr const char* kLibrary = "libopenblas.so.0";

struct Api {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&cblas_sgemv) sgemv = nullptr;
  decltype(&openblas_set_num_threads) set_num_threads = nullptr;
  decltype(&openblas_get_corename) get_corename = nullptr;
  decltype(&openblas_get_num_threads) get_num_threads = nullptr;
};

Api api;
Status load_status = Status::Ok();
std::once_flag load_once;

template <typename Fn>
Status Resolve(void* lib, const char* name, Fn* out) {
  *out = reinterpret_cast<Fn>(dlsym(lib, name));
  if (*out == nullptr)
    return NotFound(std::string(kLibrary) + " has no symbol " + name);
  return Status::Ok();
}

Status LoadOnce() {
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const char* core = CoreForThisCpu()) setenv("OPENBLAS_CORETYPE", core, 0);
  }
  // Never closed: OpenBLAS's threads live until the process ends.
  void* lib = dlopen(kLibrary, RTLD_NOW | RTLD_LOCAL);
  if (lib == nullptr) {
    const char* why = dlerror();
    return NotFound(std::string("cannot load OpenBLAS (") + kLibrary + "): " +
                    (why != nullptr ? why : "unknown error") +
                    "; install Debian's libopenblas0");
  }
  PCFARM_RETURN_IF_ERROR(Resolve(lib, "cblas_sgemm", &api.sgemm));
  PCFARM_RETURN_IF_ERROR(Resolve(lib, "cblas_sgemv", &api.sgemv));
  PCFARM_RETURN_IF_ERROR(Resolve(lib, "openblas_set_num_threads", &api.set_num_threads));
  PCFARM_RETURN_IF_ERROR(Resolve(lib, "openblas_get_corename", &api.get_corename));
  PCFARM_RETURN_IF_ERROR(Resolve(lib, "openblas_get_num_threads", &api.get_num_threads));
  return Status::Ok();
}

blasint Int(int64_t v) { return static_cast<blasint>(v); }

}  // namespace

Status Load() {
  std::call_once(load_once, [] { load_status = LoadOnce(); });
  return load_status;
}

const char* CoreForThisCpu() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

std::string CoreName() {
  assert(api.get_corename != nullptr);
  const char* name = api.get_corename();
  return name != nullptr ? name : "unknown";
}

void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  assert(api.sgemm != nullptr);
  api.sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
            trans_b ? CblasTrans : CblasNoTrans, Int(m), Int(n), Int(k), alpha, a, Int(lda),
            b, Int(ldb), beta, c, Int(ldc));
}

void Sgemv(bool trans, int64_t m, int64_t n, float alpha, const float* a, int64_t lda,
           const float* x, float beta, float* y) {
  assert(api.sgemv != nullptr);
  api.sgemv(CblasRowMajor, trans ? CblasTrans : CblasNoTrans, Int(m), Int(n), alpha, a,
            Int(lda), x, 1, beta, y, 1);
}

void SetThreads(int threads) {
  assert(api.set_num_threads != nullptr);
  api.set_num_threads(threads);
}

int Threads() {
  assert(api.get_num_threads != nullptr);
  return api.get_num_threads();
}

}  // namespace pcfarm::blas
