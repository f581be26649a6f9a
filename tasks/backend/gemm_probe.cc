#include "tasks/backend/gemm_probe.h"

#include <chrono>
#include <vector>

namespace pcfarm {

Result<double> MeasureGemmGflops(Backend* backend, int n, int reps) {
  if (n < 16 || n > 8192) return InvalidArgument("probe size must be 16..8192");
  if (reps < 1) return InvalidArgument("probe reps must be >= 1");
  Shape shape{n, n};
  PCFARM_ASSIGN_OR_RETURN(Tensor a, backend->Alloc(shape, StorageType::kF32));
  PCFARM_ASSIGN_OR_RETURN(Tensor b, backend->Alloc(shape, StorageType::kF32));
  PCFARM_ASSIGN_OR_RETURN(Tensor c, backend->Alloc(shape, StorageType::kF32));
  std::vector<float> host(size_t(n) * n);
  for (size_t i = 0; i < host.size(); ++i) host[i] = float(int(i % 9) - 4);
  PCFARM_RETURN_IF_ERROR(backend->Upload(a, host));
  PCFARM_RETURN_IF_ERROR(backend->Upload(b, host));
  PCFARM_RETURN_IF_ERROR(backend->Gemm(c, a, false, b, true, 1, 0));
  PCFARM_RETURN_IF_ERROR(backend->Synchronize());
  double best = 0;
  for (int r = 0; r < reps; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    PCFARM_RETURN_IF_ERROR(backend->Gemm(c, a, false, b, true, 1, 0));
    PCFARM_RETURN_IF_ERROR(backend->Synchronize());
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    double gflops = 2.0 * n * n * double(n) / std::max(s, 1e-9) / 1e9;
    best = std::max(best, gflops);
  }
  return best;
}

}  // namespace pcfarm
