// The `bench` task kind: a device-speed probe whose answer can be checked.
//
// It multiplies two n×n f32 matrices C = A·B and reports how fast the device
// did it plus a checksum of C. The inputs are small integers in [-4, 4], so
// every product (|p| <= 16) and every partial sum (|s| <= 16·n <= 65536 <
// 2^24) is exactly representable in f32: C is bit-identical whatever the
// summation order, blocking, thread count or device, and two honest runs of
// the same params have equal checksums.
//
// Params (JSON object, no other fields allowed):
//   "n"    integer, required, 16 <= n <= 4096: the matrix size.
//   "seed" integer, required, 0 <= seed < 2^64: fills A and B.
//   "reps" integer, optional (default 3), 1 <= reps <= 1000: timed GEMMs.
// Result (JSON object):
//   "n", "seed"  echoed from the params.
//   "checksum"   16 lowercase hex digits: BenchChecksum(C).
//   "gflops"     2·n³ / seconds / 1e9, from the fastest rep.
//   "seconds"    wall time of the fastest rep.
//   "reps"       how many GEMMs were timed.
//   "backend"    "cpu" (OpenBLAS sgemm, one thread per core of the machine).
// Agree(a, b) iff both parse and have equal n, seed and checksum; speed and
// backend may differ.
//
// Cancellation and progress are checked once per rep.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tasks/kinds/kind.h"

namespace pcfarm {

inline constexpr int kBenchMinN = 16;
inline constexpr int kBenchMaxN = 4096;
inline constexpr int kBenchMaxReps = 1000;
inline constexpr int kBenchDefaultReps = 3;

// Fills row-major n×n matrices `a` then `b` from one SplitMix64 stream
// started at `seed`: element = int(next() % 9) - 4. Another backend must
// reproduce exactly this to compute the same checksum.
void BenchFillInputs(uint64_t seed, int n, std::vector<float>* a,
                     std::vector<float>* b);

// FNV-1a 64 over the little-endian IEEE bytes of every element of `c`, in
// order, with -0.0 counted as +0.0 (devices may differ in the sign of an
// exact zero).
uint64_t BenchChecksum(const float* c, size_t count);

// "%016x" of `checksum`.
std::string BenchChecksumHex(uint64_t checksum);

class BenchKind final : public TaskKind {
 public:
  std::string_view name() const override { return "bench"; }
  Status ValidateParams(std::string_view params) const override;
  Result<std::string> Run(std::string_view params,
                          const RunContext& ctx) const override;
  // A result is about 200 bytes.
  size_t max_output_bytes() const override { return 4096; }
  // n and seed equal to the params', a 16-digit lowercase hex checksum,
  // and finite, non-negative gflops and seconds.
  Status ValidateOutput(std::string_view params,
                        std::string_view output) const override;
  bool Agree(std::string_view result_a,
             std::string_view result_b) const override;
};

}  // namespace pcfarm
