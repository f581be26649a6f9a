#include "coordinator/job_summary.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "base/hex.h"
#include "crypto/hash.h"

namespace pcfarm {
namespace {

using nlohmann::json;

std::string Bench(double gflops, const std::string& checksum) {
  return json{{"n", 16},
              {"seed", 1},
              {"checksum", checksum},
              {"gflops", gflops},
              {"seconds", 0.1}}
      .dump();
}

// BLAKE2b-256(idx as 8 little-endian bytes || checksum), computed here.
std::string ShardHash(uint64_t idx, const std::string& checksum) {
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = char(idx >> (8 * i));
  Hash256 h = Blake2b256(bytes + checksum);
  return std::string(h.begin(), h.end());
}

TEST_CASE("a bench summary folds speeds and an order-free checksum",
          "[job_summary]") {
  std::string a = FoldAcceptedResult("bench", kEmptyJobSummary, 0,
                                     Bench(10, "00000000000000aa"));
  std::string ab =
      FoldAcceptedResult("bench", a, 1, Bench(30, "00000000000000bb"));
  std::string b = FoldAcceptedResult("bench", kEmptyJobSummary, 1,
                                     Bench(30, "00000000000000bb"));
  std::string ba =
      FoldAcceptedResult("bench", b, 0, Bench(10, "00000000000000aa"));
  json s = json::parse(ab);
  CHECK(s["shards"] == 2);
  CHECK(s["gflops_mean"].get<double>() == Approx(20));
  CHECK(s["gflops_min"].get<double>() == 10);
  CHECK(s["gflops_max"].get<double>() == 30);
  CHECK(json::parse(ba)["checksum"] == s["checksum"]);
  std::string x = ShardHash(0, "00000000000000aa"),
              y = ShardHash(1, "00000000000000bb");
  std::string want(32, '\0');
  for (int i = 0; i < 32; ++i) want[i] = char(x[i] ^ y[i]);
  CHECK(s["checksum"] == HexEncode(want));
}

TEST_CASE("other kinds and malformed bodies only count shards",
          "[job_summary]") {
  std::string s =
      FoldAcceptedResult("infer", kEmptyJobSummary, 0, "{\"outputs\":[]}");
  CHECK(json::parse(s) == json{{"shards", 1}});
  s = FoldAcceptedResult("bench", s, 1, std::string(100000, '['));
  CHECK(json::parse(s) == json{{"shards", 2}});
  // A broken stored summary starts over rather than failing the result.
  CHECK(json::parse(FoldAcceptedResult("infer", "not json", 0, "{}")) ==
        json{{"shards", 1}});
}

}  // namespace
}  // namespace pcfarm
