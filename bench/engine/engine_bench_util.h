// Shared pieces of the engine benchmarks (bench/engine/*_bench.cc): the
// table they print, a monotonic clock and the process's resident memory.
//
// bench/grid has its own table printer, but it lives in a library that
// needs the coordinator and the worker; the engine benchmarks build with
// PCFARM_MODULES="base;crypto;tasks;bench", so they carry this small one.
//
// Thread-safety: none; each benchmark calls these from its main thread.
#pragma once

#include "base/status.h"

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace pcfarm {

// One line of a table: ours, the baseline measured in the same run, their
// ratio written out (ours / baseline, or as the row says) and the target.
struct EngineBenchRow {
  std::string measure;
  std::string ours;
  std::string baseline;
  std::string ratio;
  std::string target;
};

// Prints "## title", the rows as an aligned Markdown table (the header names
// the two columns `ours` and `baseline`), then each note as "- note".
void PrintEngineTable(const std::string& title, const std::string& ours,
                      const std::string& baseline, const std::vector<EngineBenchRow>& rows,
                      const std::vector<std::string>& notes);

// `v` with `decimals` digits after the point.
std::string Fixed(double v, int decimals);

// Seconds on a monotonic clock.
double NowSeconds();

// The fastest of `reps` timed calls of `fn` (a Status), after one untimed
// warm-up call; the first error stops it.
template <typename Fn>
Result<double> BestSeconds(int reps, Fn&& fn) {
  PCFARM_RETURN_IF_ERROR(fn());
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const double t0 = NowSeconds();
    PCFARM_RETURN_IF_ERROR(fn());
    best = std::min(best, NowSeconds() - t0);
  }
  return best;
}

// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 when absent.
int64_t ProcStatusBytes(const std::string& field);

// The first three fields of /proc/loadavg ("1.02 0.97 0.88"), or "?": the
// machine's other load, which every figure here is sensitive to.
std::string LoadAverage();

// Runs `cmd` through the shell (a baseline script) and returns the last
// non-empty line of its stdout; Internal when it cannot start or exits
// non-zero.
Result<std::string> RunForLastLine(const std::string& cmd);

// Bytes a second that `threads` threads reach reading `words` once, each
// summing a contiguous slice (32-byte loads where the CPU has AVX2, else
// 16-byte): the plain read a memory-bound decode is measured against.
// Fastest of `reps` passes after one warm-up pass, on the CPU backend's
// thread pool (the calling thread takes part), started once before them.
double ReadBandwidth(const std::vector<uint64_t>& words, int threads, int reps);

// Resets VmHWM to the current VmRSS (writes "5" to /proc/self/clear_refs,
// Linux >= 4.0). Returns false when the kernel refused.
bool ResetPeakRss();

}  // namespace pcfarm
