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

TEST_CASE("sizes parse with units and reject bad input") {
  CHECK(*ParseByteSize("0") == 0);
  CHECK(*ParseByteSize("4096") == 4096);
  CHECK(*ParseByteSize("1GiB") == (int64_t(1) << 30));
  CHECK(*ParseByteSize("1g") == (int64_t(1) << 30));
  CHECK(*ParseByteSize("512MiB") == (int64_t(512) << 20));
  CHECK(*ParseByteSize("1.5KiB") == 1536);
  CHECK_FALSE(ParseByteSize("").ok());
  CHECK_FALSE(ParseByteSize("GiB").ok());
  CHECK_FALSE(ParseByteSize("-1G").ok());
  CHECK_FALSE(ParseByteSize("1.2.3G").ok());
  CHECK_FALSE(ParseByteSize("5 parsecs").ok());
  CHECK_FALSE(ParseByteSize("99999999999T").ok());
}

}  // namespace
}  // namespace pcfarm
