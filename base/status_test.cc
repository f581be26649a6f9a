#include "base/status.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

Result<int> Half(int x) {
  if (x % 2) return InvalidArgument("odd: " + std::to_string(x));
  return x / 2;
}

Status UseHalf(int x, int* out) {
  PCFARM_ASSIGN_OR_RETURN(int h, Half(x));
  *out = h;
  return Status::Ok();
}

TEST_CASE("Status carries code and message") {
  Status ok;
  CHECK(ok.ok());
  CHECK(ok.ToString() == "ok");
  Status bad = NotFound("job 7");
  CHECK_FALSE(bad.ok());
  CHECK(bad.code() == StatusCode::kNotFound);
  CHECK(bad.ToString() == "not_found: job 7");
  CHECK(bad.WithContext("status").message() == "status: job 7");
}

TEST_CASE("Result and the macros propagate errors") {
  int out = 0;
  CHECK(UseHalf(8, &out).ok());
  CHECK(out == 4);
  Status s = UseHalf(3, &out);
  CHECK(s.code() == StatusCode::kInvalidArgument);
  CHECK(out == 4);
}

}  // namespace
}  // namespace pcfarm
