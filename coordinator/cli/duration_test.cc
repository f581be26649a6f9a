#include "coordinator/cli/duration.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("durations parse with units and reject bad input") {
  CHECK(*ParseDurationMs("90") == 90'000);
  CHECK(*ParseDurationMs("500ms") == 500);
  CHECK(*ParseDurationMs("30m") == 1'800'000);
  CHECK(*ParseDurationMs("24h") == 86'400'000);
  CHECK(*ParseDurationMs("7d") == 7 * 86'400'000LL);
  CHECK_FALSE(ParseDurationMs("").ok());
  CHECK_FALSE(ParseDurationMs("h").ok());
  CHECK_FALSE(ParseDurationMs("-5m").ok());
  CHECK_FALSE(ParseDurationMs("0s").ok());
  CHECK_FALSE(ParseDurationMs("5 years").ok());
  CHECK_FALSE(ParseDurationMs("99999999999999999999d").ok());
}

}  // namespace
}  // namespace pcfarm
