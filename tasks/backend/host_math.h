// Vectorised maths over host arrays that host-side code of the engine
// (sampling, logprobs) shares with the CPU backend's row kernels: the same
// branch-free exp (cpu/cpu_vec.cc, relative error below 2e-7), built for
// AVX-512, AVX2 and baseline x86-64 and picked at load time.
#pragma once

#include <cstdint>
#include <span>

namespace pcfarm {

// Σ exp(x[j] − shift) in double, the exps in f32 lanes (x[j] − shift is
// rounded to f32 first), summed 512 at a time in f32 and the partial sums
// in double: within about 1e-6 relative of the double-precision sum for
// the logits of a vocabulary.
double SumExpShifted(std::span<const float> x, float shift);

// The index std::max_element gives (the first of the largest; a NaN never
// takes the place of the largest so far), in passes the compiler
// vectorises: the scalar max_element over a 32,000-token vocabulary, twice
// a token (the greedy pick and its logprob), was ~2% of a Q4_0 decode
// step, on the thread the pool's workers wait for. With a NaN present it
// is max_element's own loop. REQUIRES: !x.empty().
int64_t FirstLargest(std::span<const float> x);

}  // namespace pcfarm
