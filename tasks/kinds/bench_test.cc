#include "tasks/kinds/bench.h"


#include <catch2/catch.hpp>
#include <thread>
#include <nlohmann/json.hpp>

#include "tasks/kinds/kind.h"
#include "tasks/backend/cpu/blas.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// The plain reference: C = A·B with a triple loop, no BLAS.
std::vector<float> NaiveProduct(uint64_t seed, int n) {
  std::vector<float> a, b;
  BenchFillInputs(seed, n, &a, &b);
  std::vector<float> c(size_t(n) * n, 0.0f);
  for (int i = 0; i < n; ++i) {
    for (int j = 0; j < n; ++j) {
      float acc = 0.0f;
      for (int k = 0; k < n; ++k) acc += a[size_t(i) * n + k] * b[size_t(k) * n + j];
      c[size_t(i) * n + j] = acc;
    }
  }
  return c;
}

json RunBench(const std::string& params, const RunContext& ctx = {}) {
  BenchKind kind;
  auto r = kind.Run(params, ctx);
  REQUIRE(r.ok());
  return json::parse(*r);
}

std::string Params(int n, uint64_t seed, int reps = 1) {
  return json{{"n", n}, {"seed", seed}, {"reps", reps}}.dump();
}

TEST_CASE("bench inputs are small integers from the documented generator") {
  std::vector<float> a, b;
  BenchFillInputs(1, 16, &a, &b);
  REQUIRE(a.size() == 256);
  // First values from an independent Python SplitMix64 (x % 9 - 4).
  CHECK(std::vector<float>(a.begin(), a.begin() + 4) ==
        std::vector<float>{1, 3, -1, -2});
  CHECK(std::vector<float>(b.begin(), b.begin() + 4) ==
        std::vector<float>{-3, -1, 1, -1});
  for (float v : a) CHECK((v >= -4 && v <= 4 && v == float(int(v))));
}

TEST_CASE("bench checksum is FNV-1a 64 over the element bytes") {
  CHECK(BenchChecksum(nullptr, 0) == 0xcbf29ce484222325ull);
  float one = 1.0f;
  CHECK(BenchChecksumHex(BenchChecksum(&one, 1)) == "4b72477f9c5c2f98");
  float zeros[2] = {0.0f, -0.0f};
  float pos[2] = {0.0f, 0.0f};
  CHECK(BenchChecksum(zeros, 2) == BenchChecksum(pos, 2));
}

TEST_CASE("bench checksum equals the naive reference") {
  // Golden values computed by an independent Python implementation.
  CHECK(BenchChecksumHex(BenchChecksum(NaiveProduct(1, 16).data(), 256)) ==
        "10359d954ef1aec0");
  CHECK(RunBench(Params(16, 1))["checksum"] == "10359d954ef1aec0");
  CHECK(RunBench(Params(20, 42))["checksum"] == "3d16eaa3d5da1709");
  for (auto [n, seed] : {std::pair{33, 7ull}, {128, 99ull}, {257, 5ull}}) {
    auto c = NaiveProduct(seed, n);
    CHECK(RunBench(Params(n, seed))["checksum"] ==
          BenchChecksumHex(BenchChecksum(c.data(), c.size())));
  }
}

TEST_CASE("bench result fields") {
  json r = RunBench(Params(64, 3, 2));
  CHECK(r["n"] == 64);
  CHECK(r["seed"] == 3);
  CHECK(r["reps"] == 2);
  CHECK(r["backend"] == "cpu");
  CHECK(r["gflops"].get<double>() > 0);
  CHECK(r["seconds"].get<double>() > 0);
  CHECK(r["checksum"].get<std::string>().size() == 16);
  // reps defaults to 3
  CHECK(RunBench(R"({"n":16,"seed":1})")["reps"] == kBenchDefaultReps);
}

TEST_CASE("bench checksum does not depend on reps or BLAS thread count") {
  // The bench runs OpenBLAS on every core; the same product on one thread
  // must give the same checksum.
  REQUIRE(blas::Load().ok());
  std::vector<float> a, b;
  BenchFillInputs(11, 384, &a, &b);
  std::vector<float> c(a.size());
  blas::SetThreads(1);
  blas::Sgemm(false, false, 384, 384, 384, 1.0f, a.data(), 384, b.data(), 384, 0.0f,
              c.data(), 384);
  const std::string one = BenchChecksumHex(BenchChecksum(c.data(), c.size()));
  std::string two = RunBench(Params(384, 11, 3))["checksum"];
  CHECK(blas::Threads() == 1);  // put back as it was
  CHECK(RunBench(Params(384, 11, 1))["checksum"] == two);
  CHECK(one == two);
  CHECK(RunBench(Params(384, 12, 1))["checksum"] != one);
}

TEST_CASE("one changed output element changes the checksum") {
  auto c = NaiveProduct(8, 32);
  uint64_t base = BenchChecksum(c.data(), c.size());
  for (size_t i : {size_t(0), size_t(517), c.size() - 1}) {
    auto d = c;
    d[i] += 1.0f;
    CHECK(BenchChecksum(d.data(), d.size()) != base);
  }
  auto swapped = c;
  std::swap(swapped[0], swapped[1]);
  if (c[0] != c[1]) CHECK(BenchChecksum(swapped.data(), swapped.size()) != base);
}

TEST_CASE("bench rejects bad params with a message naming the field") {
  BenchKind kind;
  struct Case {
    std::string params;
    std::string needle;
  };
  std::vector<Case> cases = {
      {"", "not valid JSON"},
      {"{\"n\": 64, \"seed\"", "not valid JSON"},  // truncated
      {"\x01\xff garbage", "not valid JSON"},
      {"[1,2]", "JSON object"},
      {R"({"seed":1})", "missing \"n\""},
      {R"({"n":64})", "missing \"seed\""},
      {R"({"n":15,"seed":1})", "\"n\" is 15, must be in [16, 4096]"},
      {R"({"n":4097,"seed":1})", "\"n\" is 4097"},
      {R"({"n":-1,"seed":1})", "\"n\" is -1"},
      {R"({"n":18446744073709551615,"seed":1})", "\"n\" is"},
      {R"({"n":64.5,"seed":1})", "\"n\" must be an integer"},
      {R"({"n":"64","seed":1})", "\"n\" must be an integer"},
      {R"({"n":64,"seed":-3})", "\"seed\" must be an integer"},
      {R"({"n":64,"seed":1.5})", "\"seed\" must be an integer"},
      {R"({"n":64,"seed":1,"reps":0})", "\"reps\" is 0"},
      {R"({"n":64,"seed":1,"reps":1001})", "\"reps\" is 1001"},
      {R"({"n":64,"seed":1,"nn":3})", "unknown field \"nn\""},
      {"{\"n\":64,\"seed\":1,\"x\":\"" + std::string(70000, 'a') + "\"}",
       "over the limit"},
  };
  for (const auto& c : cases) {
    INFO(c.params.substr(0, 80));
    Status s = kind.ValidateParams(c.params);
    CHECK(s.code() == StatusCode::kInvalidArgument);
    CHECK_THAT(s.message(), Catch::Contains(c.needle));
    auto r = kind.Run(c.params, {});
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(kind.ValidateParams(R"({"n":4096,"seed":18446744073709551615})").ok());
  CHECK(kind.ValidateParams(R"({"n":16,"seed":0,"reps":1000})").ok());
}

TEST_CASE("bench Agree compares n, seed and checksum only") {
  BenchKind kind;
  auto res = [](int n, uint64_t seed, std::string sum, double gflops) {
    return json{{"n", n},           {"seed", seed},     {"checksum", sum},
                {"gflops", gflops}, {"backend", "cpu"}, {"seconds", 0.1}}
        .dump();
  };
  std::string a = res(64, 1, "00112233445566aa", 10.0);
  CHECK(kind.Agree(a, a));
  CHECK(kind.Agree(a, res(64, 1, "00112233445566aa", 99.0)));
  CHECK_FALSE(kind.Agree(a, res(64, 1, "00112233445566ab", 10.0)));
  CHECK_FALSE(kind.Agree(a, res(65, 1, "00112233445566aa", 10.0)));
  CHECK_FALSE(kind.Agree(a, res(64, 2, "00112233445566aa", 10.0)));
  CHECK_FALSE(kind.Agree(a, "not json"));
  CHECK_FALSE(kind.Agree("{}", "{}"));
  CHECK_FALSE(kind.Agree(res(64, 1, "xyz", 1), res(64, 1, "xyz", 1)));
  // Two real runs agree.
  auto r1 = kind.Run(Params(48, 5, 1), {});
  auto r2 = kind.Run(Params(48, 5, 2), {});
  REQUIRE((r1.ok() && r2.ok()));
  CHECK(kind.Agree(*r1, *r2));
}

TEST_CASE("bench reports progress up to 1.0") {
  std::vector<double> seen;
  RunContext ctx;
  ctx.progress = [&](double f) { seen.push_back(f); };
  RunBench(Params(32, 1, 4), ctx);
  REQUIRE(seen.size() >= 2);
  CHECK(seen.back() == 1.0);
  for (size_t i = 1; i < seen.size(); ++i) CHECK(seen[i] >= seen[i - 1]);
}

TEST_CASE("bench honours cancellation") {
  BenchKind kind;
  std::atomic<bool> cancel{true};
  RunContext ctx;
  ctx.cancel = &cancel;
  CHECK(kind.Run(Params(64, 1, 5), ctx).status().code() ==
        StatusCode::kCancelled);

  // Cancelled from inside the run, after the first rep.
  cancel = false;
  int calls = 0;
  ctx.progress = [&](double f) {
    ++calls;
    if (f > 0) cancel = true;
  };
  auto r = kind.Run(Params(64, 1, 5), ctx);
  CHECK(r.status().code() == StatusCode::kCancelled);
  CHECK(calls == 2);  // the 0.0 report and one rep, then it stopped
}

TEST_CASE("bench waits while paused and gives the unpaused answer") {
  BenchKind kind;
  RunContext plain;
  auto expected = kind.Run(Params(64, 7, 4), plain);
  REQUIRE(expected.ok());

  // Paused after the first rep; the run waits until the flag clears.
  std::atomic<bool> pause{false};
  std::atomic<int> reps{0};
  RunContext ctx;
  ctx.pause = &pause;
  ctx.progress = [&](double f) {
    if (f > 0 && f < 1 && reps++ == 0) pause = true;  // 1.0: the checksum
  };
  Result<std::string> got = Internal("not run");
  std::thread t([&] { got = kind.Run(Params(64, 7, 4), ctx); });
  while (!pause) std::this_thread::yield();
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  CHECK(reps == 1);  // held at the check point
  pause = false;
  t.join();
  REQUIRE(got.ok());
  CHECK(reps == 4);
  CHECK(json::parse(*got)["checksum"] == json::parse(*expected)["checksum"]);

  // A cancel ends the wait.
  std::atomic<bool> cancel{false};
  pause = true;
  RunContext held;
  held.pause = &pause;
  held.cancel = &cancel;
  Result<std::string> cancelled = Internal("not run");
  std::thread t2([&] { cancelled = kind.Run(Params(64, 7, 4), held); });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  cancel = true;
  t2.join();
  CHECK(cancelled.status().code() == StatusCode::kCancelled);
}

TEST_CASE("registry holds the compiled-in kinds") {
  const auto& reg = TaskKindRegistry::Builtin();
  REQUIRE(reg.Find("bench") != nullptr);
  CHECK(reg.Find("bench")->name() == "bench");
  CHECK(reg.Find("rm -rf") == nullptr);
  CHECK(reg.Find("") == nullptr);
  CHECK(reg.Names() == std::vector<std::string>{"bench", "infer", "infer_check", "train"});
  CHECK(reg.Find("infer")->name() == "infer");
  CHECK(reg.Find("train")->name() == "train");
}

TEST_CASE("bench checks the shape of a result against its shard") {
  BenchKind kind;
  std::string p = Params(16, 1);
  std::string good = RunBench(p).dump();
  CHECK(kind.ValidateOutput(p, good).ok());
  json r = json::parse(good);
  auto check = [&](json changed, const char* expect) {
    Status s = kind.ValidateOutput(p, changed.dump());
    INFO(s.message());
    CHECK(s.message().find(expect) != std::string::npos);
  };
  json other_n = r;
  other_n["n"] = 17;
  check(other_n, "\"n\"");
  json other_seed = r;
  other_seed["seed"] = 2;
  check(other_seed, "\"seed\"");
  json short_sum = r;
  short_sum["checksum"] = "abc";
  check(short_sum, "\"checksum\"");
  json neg = r;
  neg["gflops"] = -1;
  check(neg, "\"gflops\"");
  json missing = r;
  missing.erase("seconds");
  check(missing, "\"seconds\"");
  // Nested JSON and size: refused before anything is built.
  CHECK(kind.ValidateOutput(p, "[[1]]").message().find("nested deeper") !=
        std::string::npos);
  CHECK(kind.ValidateOutput(p, std::string(8 << 20, '[')).message().find(
            "over the limit of 4096") != std::string::npos);
  CHECK(kind.ValidateOutput(p, "{").message().find("not valid JSON") !=
        std::string::npos);
}

}  // namespace
}  // namespace pcfarm
