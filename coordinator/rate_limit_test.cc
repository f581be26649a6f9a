#include "coordinator/rate_limit.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("KeyedRateLimit lets per_window events through per key and window",
          "[rate_limit]") {
  KeyedRateLimit limit(3, 1000);
  CHECK(limit.Allow("a", 0) == 0);
  CHECK(limit.Allow("a", 10) == 0);
  CHECK(limit.Allow("a", 20) == 0);
  CHECK(limit.Allow("a", 30) == -1);
  CHECK(limit.Allow("a", 999) == -1);
  CHECK(limit.Allow("b", 999) == 0);  // keys are independent
  // A new window: the first event says two were held back.
  CHECK(limit.Allow("a", 1000) == 2);
  CHECK(limit.Allow("a", 1001) == 0);
}

TEST_CASE("KeyedRateLimit remembers a bounded number of keys", "[rate_limit]") {
  KeyedRateLimit limit(1, 1000, 100);
  for (int i = 0; i < 10000; ++i) {
    limit.Allow("k" + std::to_string(i), i / 10);
    REQUIRE(limit.keys() <= 100);
  }
  // Ended windows are forgotten first.
  KeyedRateLimit ended(1, 10, 4);
  for (int i = 0; i < 4; ++i) ended.Allow("old" + std::to_string(i), 0);
  CHECK(ended.Allow("new", 100) == 0);
  CHECK(ended.keys() == 1);
}

}  // namespace
}  // namespace pcfarm
