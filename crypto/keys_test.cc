#include "crypto/keys.h"

#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include <catch2/catch.hpp>
#include <filesystem>

#include "base/file.h"
#include "crypto/codec.h"
#include "crypto/hash.h"

namespace pcfarm {
namespace {

std::string TempDir() {
  auto dir = std::filesystem::temp_directory_path() /
             ("pcfarm_keys_test_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  return dir.string();
}

TEST_CASE("RandomBytes returns fresh bytes of the asked size", "[crypto]") {
  CHECK(RandomBytes(0).empty());
  std::string a = RandomBytes(32), b = RandomBytes(32);
  CHECK(a.size() == 32);
  CHECK(a != b);
}

TEST_CASE("ConstantTimeEqual compares size and bytes", "[crypto]") {
  CHECK(ConstantTimeEqual("", ""));
  CHECK(ConstantTimeEqual("abc", "abc"));
  CHECK_FALSE(ConstantTimeEqual("abc", "abd"));
  CHECK_FALSE(ConstantTimeEqual("abc", "abcd"));
  CHECK_FALSE(ConstantTimeEqual("", "a"));
  std::string x = RandomBytes(64);
  for (size_t i = 0; i < x.size(); ++i) {
    std::string y = x;
    y[i] ^= 0x01;
    CHECK_FALSE(ConstantTimeEqual(x, y));
  }
}

TEST_CASE("Ed25519 signs and verifies", "[crypto]") {
  SigningKeyPair kp = SigningKeyPair::Generate();
  REQUIRE(kp.public_key().size() == kSignPublicKeyBytes);
  REQUIRE(kp.key_id().size() == kKeyIdBytes);
  CHECK(kp.key_id() == HashToBytes(Blake2b256(kp.public_key())).substr(0, 16));
  std::string msg = "shard body bytes \x00\x01\xff";
  std::string sig = kp.Sign(msg);
  REQUIRE(sig.size() == kSignatureBytes);
  CHECK(Verify(kp.public_key(), msg, sig).ok());
  CHECK(Verify(kp.public_key(), "", kp.Sign("")).ok());

  SigningKeyPair other = SigningKeyPair::Generate();
  CHECK(Verify(other.public_key(), msg, sig).code() ==
        StatusCode::kUnauthenticated);
}

TEST_CASE("Verify rejects wrong sizes with InvalidArgument", "[crypto]") {
  SigningKeyPair kp = SigningKeyPair::Generate();
  std::string sig = kp.Sign("m");
  CHECK(Verify(kp.public_key().substr(0, 31), "m", sig).code() ==
        StatusCode::kInvalidArgument);
  CHECK(Verify(kp.public_key() + "x", "m", sig).code() ==
        StatusCode::kInvalidArgument);
  CHECK(Verify(kp.public_key(), "m", sig.substr(0, 63)).code() ==
        StatusCode::kInvalidArgument);
  CHECK(Verify(kp.public_key(), "m", "").code() == StatusCode::kInvalidArgument);
  CHECK(Verify("", "m", sig).code() == StatusCode::kInvalidArgument);
}

TEST_CASE("flipping any byte of message, signature or key fails", "[crypto]") {
  SigningKeyPair kp = SigningKeyPair::Generate();
  const std::string msg = RandomBytes(200);
  const std::string sig = kp.Sign(msg);
  const std::string& pk = kp.public_key();
  REQUIRE(Verify(pk, msg, sig).ok());
  for (int bit : {0, 3, 7}) {
    const char mask = char(1 << bit);
    for (size_t i = 0; i < msg.size(); ++i) {
      std::string m = msg;
      m[i] ^= mask;
      INFO("message byte " << i << " bit " << bit);
      CHECK_FALSE(Verify(pk, m, sig).ok());
    }
    for (size_t i = 0; i < sig.size(); ++i) {
      std::string s = sig;
      s[i] ^= mask;
      INFO("signature byte " << i << " bit " << bit);
      CHECK_FALSE(Verify(pk, msg, s).ok());
    }
    for (size_t i = 0; i < pk.size(); ++i) {
      std::string k = pk;
      k[i] ^= mask;
      INFO("public key byte " << i << " bit " << bit);
      CHECK_FALSE(Verify(k, msg, sig).ok());
    }
  }
  CHECK_FALSE(Verify(pk, msg + "x", sig).ok());
  CHECK_FALSE(Verify(pk, msg.substr(1), sig).ok());
}

TEST_CASE("signing key rebuilds from its seed", "[crypto]") {
  SigningKeyPair kp = SigningKeyPair::Generate();
  auto again = SigningKeyPair::FromSeed(kp.seed());
  REQUIRE(again.ok());
  CHECK(again->public_key() == kp.public_key());
  CHECK(Verify(kp.public_key(), "x", again->Sign("x")).ok());
  CHECK(SigningKeyPair::FromSeed("short").status().code() ==
        StatusCode::kInvalidArgument);
}

TEST_CASE("Curve keys match libzmq's derivation and Z85", "[crypto]") {
  CurveKeyPair kp = CurveKeyPair::Generate();
  REQUIRE(kp.public_key().size() == kCurveKeyBytes);
  REQUIRE(kp.secret_key().size() == kCurveKeyBytes);
  REQUIRE(kp.public_key_z85().size() == kCurveKeyZ85Chars);
  REQUIRE(kp.secret_key_z85().size() == kCurveKeyZ85Chars);

  // libzmq derives the same public key from the secret key.
  char zmq_public[41];
  REQUIRE(zmq_curve_public(zmq_public, kp.secret_key_z85().c_str()) == 0);
  CHECK(std::string(zmq_public) == kp.public_key_z85());

  // Our Z85 equals libzmq's.
  char zmq_text[41];
  REQUIRE(zmq_z85_encode(zmq_text,
                         reinterpret_cast<const uint8_t*>(kp.public_key().data()),
                         32) != nullptr);
  CHECK(std::string(zmq_text) == kp.public_key_z85());

  auto rebuilt = CurveKeyPair::FromSecretKey(kp.secret_key());
  REQUIRE(rebuilt.ok());
  CHECK(rebuilt->public_key() == kp.public_key());

  // A key pair made by libzmq rebuilds to the same public key here.
  char zpub[41], zsec[41];
  REQUIRE(zmq_curve_keypair(zpub, zsec) == 0);
  auto zsec_raw = Z85Decode(zsec);
  REQUIRE(zsec_raw.ok());
  auto from_zmq = CurveKeyPair::FromSecretKey(*zsec_raw);
  REQUIRE(from_zmq.ok());
  CHECK(from_zmq->public_key_z85() == std::string(zpub));
}

TEST_CASE("key file round trip keeps both key pairs", "[crypto]") {
  std::string path = TempDir() + "/identity.key";
  IdentityKeys keys = IdentityKeys::Generate();
  REQUIRE(SaveKeyFile(path, keys).ok());
  struct stat st;
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  auto loaded = LoadKeyFile(path);
  REQUIRE(loaded.ok());
  CHECK(loaded->sign.public_key() == keys.sign.public_key());
  CHECK(loaded->sign.seed() == keys.sign.seed());
  CHECK(loaded->curve.public_key() == keys.curve.public_key());
  CHECK(loaded->curve.secret_key() == keys.curve.secret_key());
  CHECK(Verify(keys.sign.public_key(), "m", loaded->sign.Sign("m")).ok());
}

TEST_CASE("key file readable by others is refused, naming the file",
          "[crypto]") {
  std::string path = TempDir() + "/open.key";
  REQUIRE(SaveKeyFile(path, IdentityKeys::Generate()).ok());
  for (mode_t mode : {0644, 0640, 0604, 0660}) {
    REQUIRE(::chmod(path.c_str(), mode) == 0);
    auto loaded = LoadKeyFile(path);
    CHECK(loaded.status().code() == StatusCode::kPermissionDenied);
    CHECK(loaded.status().message().find(path) != std::string::npos);
  }
  REQUIRE(::chmod(path.c_str(), 0600) == 0);
  CHECK(LoadKeyFile(path).ok());
}

TEST_CASE("malformed key files are rejected with the field named",
          "[crypto]") {
  std::string dir = TempDir();
  CHECK(LoadKeyFile(dir + "/missing.key").status().code() ==
        StatusCode::kNotFound);

  auto write = [&](const std::string& name, const std::string& text) {
    std::string path = dir + "/" + name;
    REQUIRE(WriteFileAtomic(path, text, 0600).ok());
    return path;
  };
  auto expect = [](const std::string& path, StatusCode code,
                   const std::string& needle) {
    auto r = LoadKeyFile(path);
    INFO(path << ": " << r.status().ToString());
    CHECK(r.status().code() == code);
    CHECK(r.status().message().find(needle) != std::string::npos);
  };
  expect(write("garbage.key", "not json {"), StatusCode::kInvalidArgument,
         "not a JSON object");
  expect(write("type.key", R"({"type":"other","version":1})"),
         StatusCode::kInvalidArgument, "\"type\"");
  expect(write("version.key", R"({"type":"pcfarm-identity-keys","version":2})"),
         StatusCode::kInvalidArgument, "\"version\"");

  // Start from a good file and damage one field at a time.
  std::string good_path = dir + "/good.key";
  IdentityKeys keys = IdentityKeys::Generate();
  REQUIRE(SaveKeyFile(good_path, keys).ok());
  std::string good = ReadFile(good_path).value();
  auto replace = [&](const std::string& from, const std::string& to) {
    std::string s = good;
    size_t at = s.find(from);
    REQUIRE(at != std::string::npos);
    s.replace(at, from.size(), to);
    return s;
  };
  std::string seed_hex = HexEncode(keys.sign.seed());
  expect(write("shortseed.key", replace(seed_hex, seed_hex.substr(2))),
         StatusCode::kInvalidArgument, "\"sign_seed\"");
  expect(write("badhex.key", replace(seed_hex, "zz" + seed_hex.substr(2))),
         StatusCode::kInvalidArgument, "\"sign_seed\"");
  std::string pk_hex = HexEncode(keys.sign.public_key());
  std::string other_pk = HexEncode(SigningKeyPair::Generate().public_key());
  expect(write("mismatch.key", replace(pk_hex, other_pk)),
         StatusCode::kCorruption, "sign_public_key");
  std::string cpk_hex = HexEncode(keys.curve.public_key());
  std::string other_cpk = HexEncode(CurveKeyPair::Generate().public_key());
  expect(write("cmismatch.key", replace(cpk_hex, other_cpk)),
         StatusCode::kCorruption, "curve_public_key");
  expect(write("nocurve.key", replace("\"curve_secret_key\"", "\"x\"")),
         StatusCode::kInvalidArgument, "curve_secret_key");
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
