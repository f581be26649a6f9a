// Vectorised maths over host arrays that host-side code of the engine
// (sampling, logprobs) shares with the CPU backend's row kernels: the same
// branch-free exp (cpu/cpu_vec.cc, relative error below 2e-7), built for
// AVX-512, AVX2 and baseline x86-64 and picked at load time.
#pragma once

#include <span>

namespace pcfarm {

// Σ exp(x[j] − shift) in double, the exps in f32 lanes (x[j] − shift is
// rounded to f32 first), summed 512 at a time in f32 and the partial sums
// in double: within about 1e-6 relative of the double-precision sum for
// the logits of a vocabulary.
double SumExpShifted(std::span<const float> x, float shift);

}  // namespace pcfarm
