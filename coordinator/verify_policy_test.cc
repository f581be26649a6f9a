#include "coordinator/verify_policy.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("verification policies parse by name and refuse others") {
  for (const char* n : {"auto", "redundant", "spot", "none"}) {
    auto p = ParseVerifyPolicy(n);
    REQUIRE(p.ok());
    CHECK(std::string(VerifyPolicyName(*p)) == n);
  }
  for (const char* bad : {"", "Auto", "spot ", "always"}) {
    auto p = ParseVerifyPolicy(bad);
    REQUIRE_FALSE(p.ok());
    CHECK(p.status().message().find("allowed: auto, redundant, spot, none") !=
          std::string::npos);
  }
}

TEST_CASE("auto checks every result of a new worker, then fewer, never none") {
  for (int64_t s = 0; s < kStreakBeforeSpotChecks; ++s) {
    CHECK(CheckProbability(VerifyPolicy::kAuto, s) == 1.0);
  }
  CHECK(CheckProbability(VerifyPolicy::kAuto, 10) == 1.0);
  CHECK(CheckProbability(VerifyPolicy::kAuto, 20) == Approx(0.5));
  CHECK(CheckProbability(VerifyPolicy::kAuto, 100) == Approx(0.1));
  CHECK(CheckProbability(VerifyPolicy::kAuto, 200) == Approx(0.05));
  CHECK(CheckProbability(VerifyPolicy::kAuto, 1'000'000) == kMinCheckRate);
  double last = 1;
  for (int64_t s = 0; s < 5000; s += 7) {
    double p = CheckProbability(VerifyPolicy::kAuto, s);
    CHECK(p <= last);
    CHECK(p >= kMinCheckRate);
    last = p;
  }
}

TEST_CASE("spot checks at a flat rate; redundant and none never add checks") {
  CHECK(CheckProbability(VerifyPolicy::kSpot, 0) == kSpotRate);
  CHECK(CheckProbability(VerifyPolicy::kSpot, 1000) == kSpotRate);
  CHECK(CheckProbability(VerifyPolicy::kRedundant, 0) == 0);
  CHECK(CheckProbability(VerifyPolicy::kNone, 0) == 0);
}

TEST_CASE("strikes: caught three times is quarantine; long honest runs forgive") {
  WorkerStanding s;
  s = NextStanding(s, true);
  s = NextStanding(s, true);
  CHECK(s.streak == 2);
  s = NextStanding(s, false);
  CHECK(s.streak == 0);
  CHECK(s.strikes == 1);
  CHECK_FALSE(Quarantined(s));
  s = NextStanding(s, false);
  CHECK_FALSE(Quarantined(s));
  s = NextStanding(s, false);
  CHECK(s.strikes == 3);
  CHECK(Quarantined(s));

  // Two strikes, then 50 agreeing results take one away, 100 both.
  WorkerStanding h{0, 2};
  for (int i = 0; i < 49; ++i) h = NextStanding(h, true);
  CHECK(h.strikes == 2);
  h = NextStanding(h, true);
  CHECK(h.strikes == 1);
  for (int i = 0; i < 50; ++i) h = NextStanding(h, true);
  CHECK(h.strikes == 0);
  for (int i = 0; i < 500; ++i) h = NextStanding(h, true);
  CHECK(h.strikes == 0);
  CHECK(h.streak == 600);
}

}  // namespace
TEST_CASE("a streak lengthens only with a partner other than the last one") {
  CHECK(StreakPartner(0, {}) == 0);           // a lone result: no partner
  CHECK(StreakPartner(0, {7}) == 7);          // the first agreement
  CHECK(StreakPartner(7, {7}) == 0);          // the same one again: no credit
  CHECK(StreakPartner(7, {9, 7, 8}) == 8);    // another one: the smallest other
  CHECK(StreakPartner(7, {0}) == 0);          // 0 is nobody
}

}  // namespace pcfarm
