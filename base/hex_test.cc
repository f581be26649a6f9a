#include "base/hex.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

TEST_CASE("hex round trip and bad input") {
  std::string bytes("\x00\x01\xab\xff", 4);
  CHECK(HexEncode(bytes) == "0001abff");
  auto back = HexDecode("0001ABff");
  REQUIRE(back.ok());
  CHECK(*back == bytes);
  CHECK_FALSE(HexDecode("abc").ok());
  CHECK_FALSE(HexDecode("zz").ok());
  CHECK_FALSE(HexDecode("0001", 4).ok());
  CHECK(HexDecode("", 0).ok());
}

}  // namespace
}  // namespace pcfarm
