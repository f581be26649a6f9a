// OpenBLAS, loaded at run time after choosing its kernels.
//
// A DYNAMIC_ARCH OpenBLAS (Debian's) picks its kernel set once, when the
// library is loaded, from the CPU's family and model number. A model it does
// not know -- OpenBLAS 0.3.21 on a 5th-generation Xeon (model 207), as many
// cloud VMs report it -- gets the Prescott (SSE3) kernels, whose sgemm is ~6x
// slower than the AVX-512 kernels the same CPU runs. OpenBLAS reads
// OPENBLAS_CORETYPE first, and a variable set in main() comes too late for a
// library linked at build time (its constructor has run). So we load it
// ourselves: Load() sets OPENBLAS_CORETYPE from the instruction sets the CPU
// reports, unless the user already set it, then dlopen()s libopenblas.so.0:
//   AVX-512 F+BW+DQ+VL -> SkylakeX,  AVX2+FMA -> Haswell,  else unset.
// The variable stays in the environment, so child processes (the PyTorch
// baseline of engine_bench, for one) run the same kernels.
//
// Thread-safety: Load() may be called from any thread, any number of times;
// the other functions REQUIRE a successful Load() and are as thread-safe as
// OpenBLAS itself.
#pragma once

#include <cstdint>
#include <string>

#include "base/status.h"

namespace pcfarm::blas {

// Loads OpenBLAS (once); an error names the library and dlerror().
Status Load();

// The kernel set this CPU asks for ("SkylakeX", "Haswell"), or nullptr when
// it is left to OpenBLAS.
const char* CoreForThisCpu();
// The kernel set OpenBLAS runs, e.g. "SkylakeX". REQUIRES: Load() ok.
std::string CoreName();

// Row-major C[m, n] = alpha·op(A)·op(B) + beta·C, as cblas_sgemm.
void Sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);
// Row-major y = alpha·op(A)·x + beta·y for A[m, n], as cblas_sgemv.
void Sgemv(bool trans, int64_t m, int64_t n, float alpha, const float* a, int64_t lda,
           const float* x, float beta, float* y);
// OpenBLAS's own thread count for the calls above (process-wide).
void SetThreads(int threads);
int Threads();

}  // namespace pcfarm::blas
