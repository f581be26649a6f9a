#include "bench/engine/engine_bench_util.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm {

namespace {
// Sums words[lo, hi) with four independent accumulators of V (a GCC vector
// of uint64_t aligned to 8 bytes: its size is the load width).
template <typename V>
[[gnu::always_inline]] inline uint64_t SumSlice(const uint64_t* w, size_t lo, size_t hi) {
  constexpr size_t kLanes = sizeof(V) / sizeof(uint64_t);
  V a{}, b{}, c{}, d{};
  size_t i = lo;
  for (; i + 4 * kLanes <= hi; i += 4 * kLanes) {
    const V* v = reinterpret_cast<const V*>(w + i);
    a += v[0];
    b ^= v[1];
    c += v[2];
    d ^= v[3];
  }
  const V all = (a + b) + (c + d);
  uint64_t sum = 0;
  for (size_t l = 0; l < kLanes; ++l) sum += all[l];
  for (; i < hi; ++i) sum += w[i];
  return sum;
}

typedef uint64_t V4u64 __attribute__((vector_size(32), aligned(8)));
typedef uint64_t V2u64 __attribute__((vector_size(16), aligned(8)));

// 32-byte loads (AVX2), and 16-byte ones (SSE2 is in every x86-64).
__attribute__((target("avx2"))) uint64_t SumSliceAvx2(const uint64_t* w, size_t lo,
                                                      size_t hi) {
  return SumSlice<V4u64>(w, lo, hi);
}
uint64_t SumSliceSse2(const uint64_t* w, size_t lo, size_t hi) {
  return SumSlice<V2u64>(w, lo, hi);
}

// Columns are aligned by code points, not bytes ("×", "≥" are UTF-8).
size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
  return n;
}
}  // namespace

void PrintEngineTable(const std::string& title, const std::string& ours,
                      const std::string& baseline, const std::vector<EngineBenchRow>& rows,
                      const std::vector<std::string>& notes) {
  std::vector<std::vector<std::string>> cells = {{"measure", ours, baseline, "ratio", "target"}};
  for (const EngineBenchRow& r : rows)
    cells.push_back({r.measure, r.ours, r.baseline, r.ratio, r.target});
  std::vector<size_t> width(5, 0);
  for (const auto& row : cells)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], DisplayWidth(row[i]));
  auto line = [&](const std::vector<std::string>& row) {
    std::string s = "|";
    for (size_t i = 0; i < row.size(); ++i)
      s += " " + row[i] + std::string(width[i] - DisplayWidth(row[i]), ' ') + " |";
    std::printf("%s\n", s.c_str());
  };
  std::printf("\n## %s\n\n", title.c_str());
  line(cells[0]);
  std::string sep = "|";
  for (size_t w : width) sep += std::string(w + 2, '-') + "|";
  std::printf("%s\n", sep.c_str());
  for (size_t i = 1; i < cells.size(); ++i) line(cells[i]);
  if (!notes.empty()) std::printf("\n");
  for (const std::string& n : notes) std::printf("- %s\n", n.c_str());
  std::fflush(stdout);
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(field.size() + 1));
    int64_t kib = -1;
    fields >> kib;
    return kib < 0 ? -1 : kib * 1024;
  }
  return -1;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "?";
  return a + " " + b + " " + c;
}

bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

Result<std::string> RunForLastLine(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return Internal("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  if (rc != 0) return Internal("`" + cmd + "` exited with status " + std::to_string(rc));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t nl = out.rfind('\n');
  return out.substr(nl == std::string::npos ? 0 : nl + 1);
}

// Bytes a second that `threads` threads reach reading `words` once, each
// summing a contiguous slice with four independent accumulators (32-byte
// loads where the CPU has AVX2, else 16-byte; no software prefetch, which
// made this read slower here): the plain read a memory-bound decode step is
// measured against. Fastest of `reps` passes after one warm-up pass, on the
// CPU backend's own pool (the threads a decode step runs on), started once
// before the passes. Until session 28 each pass started and joined its
// threads inside the timed region (0.1-0.15 ms to create and join two
// threads on this project's VMs, and, we think, new threads starting on
// their parent's core): a 48 MB pass (the Q4_0 model's projections) read
// at 38-50 GB/s instead of 80-120, and every bound below ~100 MB was
// understated.
double ReadBandwidth(const std::vector<uint64_t>& words, int threads, int reps) {
  const size_t n = words.size();
  std::vector<uint64_t> sums(size_t(threads) * 8, 0);  // a cache line apart
  const bool avx2 = __builtin_cpu_supports("avx2");
  cpu::ThreadPool pool(threads);
  auto pass = [&] {
    pool.ParallelFor(threads, 1, [&](int64_t b, int64_t e) {
      for (int64_t t = b; t < e; ++t) {
        const size_t lo = n * size_t(t) / size_t(threads),
                     hi = n * size_t(t + 1) / size_t(threads);
        sums[size_t(t) * 8] =
            avx2 ? SumSliceAvx2(words.data(), lo, hi) : SumSliceSse2(words.data(), lo, hi);
      }
    });
  };
  pass();
  double best = 1e300;
  for (int r = 0; r < reps; ++r) {
    const double t0 = NowSeconds();
    pass();
    best = std::min(best, NowSeconds() - t0);
  }
  uint64_t all = 0;
  for (uint64_t s : sums) all += s;
  if (all == 42) std::fprintf(stderr, " ");  // keeps the sums alive
  return double(n * sizeof(uint64_t)) / best;
}

}  // namespace pcfarm
