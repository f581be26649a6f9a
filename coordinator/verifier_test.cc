#include "coordinator/verifier.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("Judge groups by the comparator", "[verifier]") {
  Verifier v;
  const ResultComparator& eq = v.For("anything");
  Judgement j = Judge({}, 2, eq);
  CHECK_FALSE(j.accepted);
  CHECK(j.best_group == -1);

  j = Judge({"a", "b", "a"}, 2, eq);
  CHECK(j.group == std::vector<int>{0, 1, 0});
  CHECK(j.best_group == 0);
  CHECK(j.best_group_size == 2);
  CHECK(j.accepted);

  j = Judge({"a", "b"}, 2, eq);
  CHECK_FALSE(j.accepted);
  CHECK(j.best_group == 0);  // earliest on ties

  j = Judge({"x"}, 1, eq);
  CHECK(j.accepted);
}

TEST_CASE("a registered comparator applies to its kind only", "[verifier]") {
  Verifier v;
  v.Register("train", [](std::string_view a, std::string_view b) {
    return a.substr(0, 3) == b.substr(0, 3);
  });
  CHECK(Judge({"abc1", "abc2"}, 2, v.For("train")).accepted);
  CHECK_FALSE(Judge({"abc1", "abc2"}, 2, v.For("infer")).accepted);
}

TEST_CASE("check votes settle a shard with fewer full runs", "[verifier]") {
  Verifier v;
  const ResultComparator& eq = v.For("infer");
  // One result and a check that it holds: accepted, the check agreed.
  CheckedJudgement c = JudgeWithChecks({"a"}, {{0, true}}, 2, eq);
  CHECK(c.full.accepted);
  CHECK(c.full.best_group == 0);
  CHECK(c.full.best_group_size == 1);
  CHECK(c.check_agreed == std::vector<bool>{true});

  // Refuted: nothing is accepted yet, and nobody agreed.
  c = JudgeWithChecks({"a"}, {{0, false}}, 2, eq);
  CHECK_FALSE(c.full.accepted);
  CHECK(c.check_agreed == std::vector<bool>{false});

  // Refuted, and a re-run that differs: the re-run is accepted, the
  // checker sided with it.
  c = JudgeWithChecks({"a", "b"}, {{0, false}}, 2, eq);
  CHECK(c.full.accepted);
  CHECK(c.full.best_group == 1);
  CHECK(c.full.best_group_size == 1);
  CHECK(c.check_agreed == std::vector<bool>{true});

  // Refuted, and a re-run that agrees with it: the two runs win, the
  // checker was wrong.
  c = JudgeWithChecks({"a", "a"}, {{0, false}}, 2, eq);
  CHECK(c.full.accepted);
  CHECK(c.full.best_group == 0);
  CHECK(c.full.best_group_size == 2);
  CHECK(c.check_agreed == std::vector<bool>{false});

  // Both runs refuted: undecided (a third run must come).
  c = JudgeWithChecks({"a", "b"}, {{0, false}, {1, false}}, 2, eq);
  CHECK_FALSE(c.full.accepted);
  // Two differing runs and no votes: as Judge.
  c = JudgeWithChecks({"a", "b"}, {}, 2, eq);
  CHECK_FALSE(c.full.accepted);
  CHECK(c.check_agreed.empty());
  // A vote that holds on the second of two differing runs decides.
  c = JudgeWithChecks({"a", "b"}, {{1, true}}, 2, eq);
  CHECK(c.full.accepted);
  CHECK(c.full.best_group == 1);
  // Redundancy 3: a refutation counts one vote only.
  c = JudgeWithChecks({"a", "b"}, {{0, false}}, 3, eq);
  CHECK_FALSE(c.full.accepted);
  c = JudgeWithChecks({"a", "b", "b"}, {{0, false}}, 3, eq);
  CHECK(c.full.accepted);
  CHECK(c.full.best_group == 1);
  CHECK(c.check_agreed == std::vector<bool>{true});
}

TEST_CASE("a check verdict is registered per job kind", "[verifier]") {
  Verifier v;
  CHECK(v.CheckFor("infer") == nullptr);
  v.RegisterCheck("infer", [](std::string_view body) -> Result<bool> { return body == "ok"; });
  REQUIRE(v.CheckFor("infer") != nullptr);
  CHECK(*(*v.CheckFor("infer"))("ok"));
  CHECK_FALSE(*(*v.CheckFor("infer"))("no"));
  CHECK(v.CheckFor("bench") == nullptr);
}

}  // namespace
}  // namespace pcfarm
