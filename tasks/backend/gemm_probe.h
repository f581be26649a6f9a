// MeasureGemmGflops: a device-speed probe that runs through the backend
// interface, so every backend (CPU, Vulkan, CUDA) is measured the same way:
// C = A·Bᵀ on n×n f32 matrices, `reps` timed runs after one warm-up, the
// fastest counting.
#pragma once

#include "base/status.h"
#include "tasks/backend/backend.h"

namespace pcfarm {

// REQUIRES: backend != nullptr. InvalidArgument unless 16 <= n <= 8192 and
// reps >= 1; any backend failure is returned as is.
Result<double> MeasureGemmGflops(Backend* backend, int n, int reps);

}  // namespace pcfarm
