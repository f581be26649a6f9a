#include "tasks/kinds/bench.h"


#include <chrono>
#include <cstdio>
#include <cstring>
#include <limits>
#include <optional>
#include <thread>
#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>

#include "tasks/backend/cpu/blas.h"

namespace pcfarm {
namespace {

using nlohmann::json;

struct BenchParams {
  int n = 0;
  uint64_t seed = 0;
  int reps = kBenchDefaultReps;
};

Result<json> ParseObject(std::string_view text, std::string_view what) {
  if (text.size() > kMaxTaskParamsBytes) {
    return InvalidArgument(std::string(what) + ": " +
                           std::to_string(text.size()) +
                           " bytes is over the limit of " +
                           std::to_string(kMaxTaskParamsBytes));
  }
  json j = json::parse(text.begin(), text.end(), nullptr,
                       /*allow_exceptions=*/false);
  if (j.is_discarded()) {
    return InvalidArgument(std::string(what) + ": not valid JSON");
  }
  if (!j.is_object()) {
    return InvalidArgument(std::string(what) + ": expected a JSON object");
  }
  return j;
}

// Reads integer field `key` of `j` into [lo, hi].
Result<int64_t> IntField(const json& j, const char* key, int64_t lo,
                         int64_t hi) {
  const json& v = j.at(key);
  if (!v.is_number_integer()) {
    return InvalidArgument(std::string("bench params: \"") + key +
                           "\" must be an integer");
  }
  // Clamp huge unsigned values so the range check below reports them.
  int64_t x = v.is_number_unsigned()
                  ? static_cast<int64_t>(std::min<uint64_t>(
                        v.get<uint64_t>(),
                        uint64_t(std::numeric_limits<int64_t>::max())))
                  : v.get<int64_t>();
  if (x < lo || x > hi) {
    return InvalidArgument(std::string("bench params: \"") + key + "\" is " +
                           v.dump() + ", must be in [" + std::to_string(lo) +
                           ", " + std::to_string(hi) + "]");
  }
  return x;
}

Result<BenchParams> ParseBenchParams(std::string_view text) {
  PCFARM_ASSIGN_OR_RETURN(json j, ParseObject(text, "bench params"));
  for (const auto& [key, value] : j.items()) {
    (void)value;
    if (key != "n" && key != "seed" && key != "reps") {
      return InvalidArgument("bench params: unknown field \"" + key +
                             "\" (allowed: n, seed, reps)");
    }
  }
  BenchParams p;
  if (!j.contains("n")) return InvalidArgument("bench params: missing \"n\"");
  PCFARM_ASSIGN_OR_RETURN(int64_t n, IntField(j, "n", kBenchMinN, kBenchMaxN));
  p.n = static_cast<int>(n);
  if (!j.contains("seed")) {
    return InvalidArgument("bench params: missing \"seed\"");
  }
  const json& seed = j.at("seed");
  if (!seed.is_number_unsigned()) {
    return InvalidArgument(
        "bench params: \"seed\" must be an integer in [0, 2^64)");
  }
  p.seed = seed.get<uint64_t>();
  if (j.contains("reps")) {
    PCFARM_ASSIGN_OR_RETURN(int64_t reps, IntField(j, "reps", 1, kBenchMaxReps));
    p.reps = static_cast<int>(reps);
  }
  return p;
}

uint64_t SplitMix64Next(uint64_t* state) {
  uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

}  // namespace

void BenchFillInputs(uint64_t seed, int n, std::vector<float>* a,
                     std::vector<float>* b) {
  assert(n > 0);
  const size_t count = size_t(n) * size_t(n);
  a->resize(count);
  b->resize(count);
  uint64_t state = seed;
  for (size_t i = 0; i < count; ++i) {
    (*a)[i] = float(int(SplitMix64Next(&state) % 9) - 4);
  }
  for (size_t i = 0; i < count; ++i) {
    (*b)[i] = float(int(SplitMix64Next(&state) % 9) - 4);
  }
}

uint64_t BenchChecksum(const float* c, size_t count) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64 offset basis
  for (size_t i = 0; i < count; ++i) {
    float v = c[i] == 0.0f ? 0.0f : c[i];
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    for (int k = 0; k < 4; ++k) {
      h ^= (bits >> (8 * k)) & 0xffu;
      h *= 0x100000001b3ull;  // FNV-1a 64 prime
    }
  }
  return h;
}

std::string BenchChecksumHex(uint64_t checksum) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(checksum));
  return std::string(buf, 16);
}

Status BenchKind::ValidateParams(std::string_view params) const {
  return ParseBenchParams(params).status();
}

Result<std::string> BenchKind::Run(std::string_view params,
                                   const RunContext& ctx) const {
  PCFARM_ASSIGN_OR_RETURN(BenchParams p, ParseBenchParams(params));
  PCFARM_RETURN_IF_ERROR(blas::Load());
  // Every core of the machine: a CPU backend in this process may have left
  // OpenBLAS single-threaded (it threads products itself); put it back after.
  const int blas_threads_before = blas::Threads();
  blas::SetThreads(static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  struct Restore {
    int threads;
    ~Restore() { blas::SetThreads(threads); }
  } restore{blas_threads_before};
  ctx.ReportProgress(0.0);
  std::vector<float> a, b;
  BenchFillInputs(p.seed, p.n, &a, &b);
  std::vector<float> c(a.size());
  using Clock = std::chrono::steady_clock;
  double best_seconds = std::numeric_limits<double>::infinity();
  for (int rep = 0; rep < p.reps; ++rep) {
    if (ctx.CheckPoint()) {
      return Cancelled("bench: cancelled after " + std::to_string(rep) +
                       " of " + std::to_string(p.reps) + " reps");
    }
    auto t0 = Clock::now();
    blas::Sgemm(false, false, p.n, p.n, p.n, 1.0f, a.data(), p.n, b.data(), p.n, 0.0f,
                c.data(), p.n);
    double s = std::chrono::duration<double>(Clock::now() - t0).count();
    best_seconds = std::min(best_seconds, s);
    // Leave the last step to the checksum so that 1.0 means "done".
    ctx.ReportProgress(0.99 * double(rep + 1) / double(p.reps));
  }
  if (ctx.cancelled()) return Cancelled("bench: cancelled before checksum");
  // A clock too coarse to see the GEMM must not give an infinite speed.
  double seconds = std::max(best_seconds, 1e-9);
  double flops = 2.0 * double(p.n) * double(p.n) * double(p.n);
  json out = {
      {"n", p.n},
      {"seed", p.seed},
      {"reps", p.reps},
      {"checksum", BenchChecksumHex(BenchChecksum(c.data(), c.size()))},
      {"gflops", flops / seconds / 1e9},
      {"seconds", seconds},
      {"backend", "cpu"},
  };
  ctx.ReportProgress(1.0);
  return out.dump();
}

Status BenchKind::ValidateOutput(std::string_view params,
                                 std::string_view output) const {
  if (output.size() > max_output_bytes()) {
    return InvalidArgument("bench result of " + std::to_string(output.size()) +
                           " bytes is over the limit of " +
                           std::to_string(max_output_bytes()));
  }
  PCFARM_ASSIGN_OR_RETURN(BenchParams p, ParseBenchParams(params));
  PCFARM_ASSIGN_OR_RETURN(json r, ParseBoundedJson(output, 1, "bench result"));
  if (!r.is_object()) return InvalidArgument("bench result: not a JSON object");
  auto it = r.find("n");
  if (it == r.end() || !it->is_number_integer() || it->get<int64_t>() != p.n) {
    return InvalidArgument("bench result: \"n\" is not the shard's n");
  }
  it = r.find("seed");
  if (it == r.end() || !it->is_number_unsigned() ||
      it->get<uint64_t>() != p.seed) {
    return InvalidArgument("bench result: \"seed\" is not the shard's seed");
  }
  it = r.find("checksum");
  if (it == r.end() || !it->is_string() || it->get<std::string>().size() != 16 ||
      it->get<std::string>().find_first_not_of("0123456789abcdef") !=
          std::string::npos) {
    return InvalidArgument("bench result: \"checksum\" must be 16 hex digits");
  }
  for (const char* key : {"gflops", "seconds"}) {
    it = r.find(key);
    if (it == r.end() || !it->is_number() || !std::isfinite(it->get<double>()) ||
        it->get<double>() < 0) {
      return InvalidArgument(std::string("bench result: \"") + key +
                             "\" must be a finite number >= 0");
    }
  }
  return Status::Ok();
}

bool BenchKind::Agree(std::string_view result_a,
                      std::string_view result_b) const {
  auto key = [](std::string_view text) -> std::optional<std::string> {
    auto j = ParseObject(text, "bench result");
    if (!j.ok()) return std::nullopt;
    const json& r = *j;
    if (!r.contains("n") || !r["n"].is_number_integer() ||
        !r.contains("seed") || !r["seed"].is_number_unsigned() ||
        !r.contains("checksum") || !r["checksum"].is_string()) {
      return std::nullopt;
    }
    std::string sum = r["checksum"].get<std::string>();
    if (sum.size() != 16 ||
        sum.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return std::nullopt;
    }
    return std::to_string(r["n"].get<int64_t>()) + "/" +
           std::to_string(r["seed"].get<uint64_t>()) + "/" + sum;
  };
  auto ka = key(result_a);
  auto kb = key(result_b);
  return ka && kb && *ka == *kb;
}

}  // namespace pcfarm
