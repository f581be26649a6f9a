#include "crypto/codec.h"

#include <catch2/catch.hpp>

#include "crypto/keys.h"

namespace pcfarm {
namespace {

TEST_CASE("Z85 matches the RFC 32 test vector", "[crypto]") {
  const std::string bytes("\x86\x4F\xD2\x6F\xB5\x59\xF7\x5B", 8);
  CHECK(Z85Encode(bytes) == "HelloWorld");
  auto back = Z85Decode("HelloWorld");
  REQUIRE(back.ok());
  CHECK(*back == bytes);
}

TEST_CASE("Z85 round trips and rejects bad text", "[crypto]") {
  for (size_t n : {0, 4, 32, 64}) {
    std::string b = RandomBytes(n);
    auto back = Z85Decode(Z85Encode(b));
    REQUIRE(back.ok());
    CHECK(*back == b);
  }
  CHECK(Z85Decode("Hello").ok());
  CHECK(Z85Decode("Hell").status().code() == StatusCode::kInvalidArgument);
  CHECK(Z85Decode("Hell\"").status().code() == StatusCode::kInvalidArgument);
  CHECK(Z85Decode("Hell~").status().code() == StatusCode::kInvalidArgument);
  // "#####" is 85^5 - 1 > 2^32 - 1: overflows.
  CHECK(Z85Decode("#####").status().code() == StatusCode::kInvalidArgument);
}

TEST_CASE("base64url round trips every length and rejects garbage",
          "[crypto]") {
  for (size_t n = 0; n < 70; ++n) {
    std::string b = RandomBytes(n);
    std::string text = Base64UrlEncode(b);
    CHECK(text.find('=') == std::string::npos);
    CHECK(text.find('+') == std::string::npos);
    CHECK(text.find('/') == std::string::npos);
    auto back = Base64UrlDecode(text);
    REQUIRE(back.ok());
    CHECK(*back == b);
  }
  CHECK_FALSE(Base64UrlDecode("ab+c").ok());
  CHECK_FALSE(Base64UrlDecode("abc=").ok());
  CHECK_FALSE(Base64UrlDecode("a").ok());  // 6 bits is no byte
  CHECK_FALSE(Base64UrlDecode("ab c").ok());
}

TEST_CASE("hex round trips and rejects garbage", "[crypto]") {
  std::string b = RandomBytes(33);
  auto back = HexDecode(HexEncode(b));
  REQUIRE(back.ok());
  CHECK(*back == b);
  CHECK(HexEncode("\x01\xab") == "01ab");
  CHECK(HexDecode("01AB").value() == "\x01\xab");
  CHECK_FALSE(HexDecode("abc").ok());
  CHECK_FALSE(HexDecode("zz").ok());
  CHECK_FALSE(HexDecode("0 ").ok());
}

}  // namespace
}  // namespace pcfarm
