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

}  // namespace
}  // namespace pcfarm
