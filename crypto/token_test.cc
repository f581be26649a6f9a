#include "crypto/token.h"

#include <catch2/catch.hpp>
#include <random>

#include "crypto/codec.h"
#include "crypto/keys.h"

namespace pcfarm {
namespace {

EnrollmentToken SampleToken() {
  return MakeEnrollmentToken("tcp://farm.example.org:7070",
                             SigningKeyPair::Generate().public_key(),
                             CurveKeyPair::Generate().public_key(),
                             1'900'000'000'000, 3);
}

TEST_CASE("token round trips", "[crypto]") {
  EnrollmentToken t = SampleToken();
  REQUIRE(t.secret.size() == kTokenSecretBytes);
  std::string text = EncodeEnrollmentToken(t);
  CHECK(text.rfind("pcfarm1.", 0) == 0);
  auto back = DecodeEnrollmentToken(text);
  REQUIRE(back.ok());
  CHECK(*back == t);
  // Whitespace from copy and paste is ignored.
  auto padded = DecodeEnrollmentToken("  " + text + "\n");
  REQUIRE(padded.ok());
  CHECK(*padded == t);
  // Fresh secrets.
  CHECK(SampleToken().secret != t.secret);
}

TEST_CASE("every truncation of a token is rejected", "[crypto]") {
  std::string text = EncodeEnrollmentToken(SampleToken());
  for (size_t n = 0; n < text.size(); ++n) {
    auto r = DecodeEnrollmentToken(text.substr(0, n));
    INFO("cut at " << n << ": " << r.status().ToString());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
  }
}

TEST_CASE("every damaged character of a token is rejected", "[crypto]") {
  std::string text = EncodeEnrollmentToken(SampleToken());
  for (size_t i = 0; i < text.size(); ++i) {
    std::string bad = text;
    bad[i] = (bad[i] == 'A') ? 'B' : 'A';
    auto r = DecodeEnrollmentToken(bad);
    INFO("changed char " << i << ": " << r.status().ToString());
    CHECK_FALSE(r.ok());
  }
}

TEST_CASE("garbage tokens are rejected with clear messages", "[crypto]") {
  auto msg = [](std::string_view text) {
    auto r = DecodeEnrollmentToken(text);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    return r.status().message();
  };
  CHECK(msg("").find("must start with") != std::string::npos);
  CHECK(msg("hello").find("must start with") != std::string::npos);
  CHECK(msg("pcfarm2.AAAA").find("not supported") != std::string::npos);
  CHECK(msg("pcfarm1.!!!!").find("base64url") != std::string::npos);
  CHECK(msg("pcfarm1.AAAA").find("truncated") != std::string::npos);

  std::string text = EncodeEnrollmentToken(SampleToken());
  CHECK(msg(text + "AAAA").find("extra") != std::string::npos);

  std::mt19937 rng(1234);
  const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  for (int i = 0; i < 3000; ++i) {
    size_t len = rng() % 260;
    std::string s = "pcfarm1.";
    for (size_t k = 0; k < len; ++k) s.push_back(alphabet[rng() % alphabet.size()]);
    CHECK_FALSE(DecodeEnrollmentToken(s).ok());
    std::string raw;
    for (size_t k = 0; k < len; ++k) raw.push_back(char(rng()));
    CHECK_FALSE(DecodeEnrollmentToken(raw).ok());
  }
}

TEST_CASE("tokens with a valid checksum but bad fields are rejected",
          "[crypto]") {
  // Build the binary form by hand so the checksum is right but a field lies.
  auto forge = [](const EnrollmentToken& t) {
    std::string bin = t.secret + t.coordinator_sign_pk + t.coordinator_curve_pk;
    for (int i = 7; i >= 0; --i) bin.push_back(char(uint64_t(t.expires_ms) >> (8 * i)));
    for (int i = 3; i >= 0; --i) bin.push_back(char(t.uses >> (8 * i)));
    bin.push_back(char(t.endpoint.size()));
    bin += t.endpoint;
    bin += HashToBytes(Blake2b256(bin)).substr(0, 4);
    return "pcfarm1." + Base64UrlEncode(bin);
  };
  EnrollmentToken good = SampleToken();
  REQUIRE(DecodeEnrollmentToken(forge(good)).ok());

  EnrollmentToken t = good;
  t.uses = 0;
  CHECK(DecodeEnrollmentToken(forge(t)).status().message().find("uses") !=
        std::string::npos);
  t = good;
  t.expires_ms = -5;
  CHECK(DecodeEnrollmentToken(forge(t)).status().message().find("expires_ms") !=
        std::string::npos);
  for (const char* ep : {"udp://h:1", "tcp://h", "tcp://:7070", "tcp://h:0",
                         "tcp://h:65536", "tcp://h:70x", "tcp://a b:1", ""}) {
    t = good;
    t.endpoint = ep;
    auto r = DecodeEnrollmentToken(forge(t));
    INFO(ep);
    CHECK(r.status().message().find("endpoint") != std::string::npos);
  }
}

TEST_CASE("CheckEndpoint accepts host names, IPv4 and IPv6", "[crypto]") {
  CHECK(CheckEndpoint("tcp://127.0.0.1:7070").ok());
  CHECK(CheckEndpoint("tcp://farm.lan:1").ok());
  CHECK(CheckEndpoint("tcp://[::1]:65535").ok());
  CHECK_FALSE(CheckEndpoint("tcp://h:" + std::string(300, '1')).ok());
  CHECK_FALSE(CheckEndpoint("tcp://" + std::string(300, 'h') + ":1").ok());
}

TEST_CASE("secret hash matches only the secret", "[crypto]") {
  std::string secret = RandomBytes(kTokenSecretBytes);
  Hash256 stored = SecretHash(secret);
  CHECK(stored == Blake2b256(secret));
  CHECK(SecretMatches(secret, stored));
  std::string other = secret;
  other[31] ^= 1;
  CHECK_FALSE(SecretMatches(other, stored));
  CHECK_FALSE(SecretMatches("", stored));
}

}  // namespace
}  // namespace pcfarm
