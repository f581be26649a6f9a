#include "crypto/keys.h"

#include <sodium.h>

#include <cstring>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "crypto/codec.h"
#include "crypto/hash.h"

namespace pcfarm {

static_assert(crypto_sign_PUBLICKEYBYTES == kSignPublicKeyBytes);
static_assert(crypto_sign_SEEDBYTES == kSignSeedBytes);
static_assert(crypto_sign_SECRETKEYBYTES == 64);
static_assert(crypto_sign_BYTES == kSignatureBytes);
static_assert(crypto_box_PUBLICKEYBYTES == kCurveKeyBytes);
static_assert(crypto_box_SECRETKEYBYTES == kCurveKeyBytes);
static_assert(crypto_scalarmult_BYTES == kCurveKeyBytes);

namespace {

const unsigned char* U(std::string_view s) {
  return reinterpret_cast<const unsigned char*>(s.data());
}

constexpr char kKeyFileType[] = "pcfarm-identity-keys";
constexpr int kKeyFileVersion = 1;
constexpr size_t kKeyFileMaxBytes = 64 * 1024;

}  // namespace

std::string RandomBytes(size_t n) {
  CryptoInit();
  std::string out(n, '\0');
  randombytes_buf(out.data(), n);
  return out;
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  if (a.empty()) return true;
  return sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

std::string KeyIdOf(std::string_view public_key) {
  return HashToBytes(Blake2b256(public_key)).substr(0, kKeyIdBytes);
}

// ------------------------------------------------------------ SigningKeyPair

SigningKeyPair SigningKeyPair::Generate() {
  CryptoInit();
  SigningKeyPair kp;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_keypair(pk, kp.secret_.data());
  kp.public_key_.assign(reinterpret_cast<char*>(pk), sizeof pk);
  kp.key_id_ = KeyIdOf(kp.public_key_);
  return kp;
}

Result<SigningKeyPair> SigningKeyPair::FromSeed(std::string_view seed) {
  if (seed.size() != kSignSeedBytes) {
    return InvalidArgument("an Ed25519 seed is 32 bytes, got " +
                           std::to_string(seed.size()));
  }
  CryptoInit();
  SigningKeyPair kp;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  crypto_sign_seed_keypair(pk, kp.secret_.data(), U(seed));
  kp.public_key_.assign(reinterpret_cast<char*>(pk), sizeof pk);
  kp.key_id_ = KeyIdOf(kp.public_key_);
  return kp;
}

SigningKeyPair::~SigningKeyPair() {
  sodium_memzero(secret_.data(), secret_.size());
}

std::string SigningKeyPair::seed() const {
  return std::string(reinterpret_cast<const char*>(secret_.data()),
                     kSignSeedBytes);
}

std::string SigningKeyPair::Sign(std::string_view message) const {
  std::string sig(kSignatureBytes, '\0');
  crypto_sign_detached(reinterpret_cast<unsigned char*>(sig.data()), nullptr,
                       U(message), message.size(), secret_.data());
  return sig;
}

Status Verify(std::string_view public_key, std::string_view message,
              std::string_view signature) {
  if (public_key.size() != kSignPublicKeyBytes) {
    return InvalidArgument("an Ed25519 public key is 32 bytes, got " +
                           std::to_string(public_key.size()));
  }
  if (signature.size() != kSignatureBytes) {
    return InvalidArgument("an Ed25519 signature is 64 bytes, got " +
                           std::to_string(signature.size()));
  }
  CryptoInit();
  if (crypto_sign_verify_detached(U(signature), U(message), message.size(),
                                  U(public_key)) != 0) {
    return Unauthenticated("signature does not verify for key " +
                           HexEncode(KeyIdOf(public_key)));
  }
  return Status::Ok();
}

// -------------------------------------------------------------- CurveKeyPair

CurveKeyPair CurveKeyPair::Generate() {
  CryptoInit();
  CurveKeyPair kp;
  unsigned char pk[crypto_box_PUBLICKEYBYTES];
  crypto_box_keypair(pk, kp.secret_.data());
  kp.public_key_.assign(reinterpret_cast<char*>(pk), sizeof pk);
  return kp;
}

Result<CurveKeyPair> CurveKeyPair::FromSecretKey(std::string_view secret_key) {
  if (secret_key.size() != kCurveKeyBytes) {
    return InvalidArgument("a Curve25519 secret key is 32 bytes, got " +
                           std::to_string(secret_key.size()));
  }
  CryptoInit();
  CurveKeyPair kp;
  std::memcpy(kp.secret_.data(), secret_key.data(), kCurveKeyBytes);
  unsigned char pk[crypto_scalarmult_BYTES];
  if (crypto_scalarmult_base(pk, kp.secret_.data()) != 0) {
    return InvalidArgument("Curve25519 secret key gives no public key");
  }
  kp.public_key_.assign(reinterpret_cast<char*>(pk), sizeof pk);
  return kp;
}

CurveKeyPair::~CurveKeyPair() {
  sodium_memzero(secret_.data(), secret_.size());
}

std::string CurveKeyPair::secret_key() const {
  return std::string(reinterpret_cast<const char*>(secret_.data()),
                     secret_.size());
}

std::string CurveKeyPair::public_key_z85() const {
  return Z85Encode(public_key_);
}

std::string CurveKeyPair::secret_key_z85() const {
  return Z85Encode(secret_key());
}

IdentityKeys IdentityKeys::Generate() {
  return IdentityKeys{SigningKeyPair::Generate(), CurveKeyPair::Generate()};
}

// ------------------------------------------------------------------ key files

Status SaveKeyFile(const std::string& path, const IdentityKeys& keys) {
  nlohmann::json j;
  j["type"] = kKeyFileType;
  j["version"] = kKeyFileVersion;
  j["sign_public_key"] = HexEncode(keys.sign.public_key());
  j["sign_seed"] = HexEncode(keys.sign.seed());
  j["curve_public_key"] = HexEncode(keys.curve.public_key());
  j["curve_secret_key"] = HexEncode(keys.curve.secret_key());
  std::string text = j.dump(2) + "\n";
  Status s = WriteFileAtomic(path, text, 0600);
  sodium_memzero(text.data(), text.size());
  return s;
}

namespace {

// Reads the hex string field `name` of `j` and checks it decodes to `size`
// bytes.
Result<std::string> HexField(const nlohmann::json& j, const char* name,
                             size_t size, const std::string& path) {
  auto it = j.find(name);
  if (it == j.end() || !it->is_string()) {
    return InvalidArgument(path + ": field \"" + name +
                           "\" is missing or not a string");
  }
  auto bytes = HexDecode(it->get_ref<const std::string&>());
  if (!bytes.ok()) {
    return InvalidArgument(path + ": field \"" + name +
                           "\": " + bytes.status().message());
  }
  if (bytes->size() != size) {
    return InvalidArgument(path + ": field \"" + name + "\" must be " +
                           std::to_string(size) + " bytes, got " +
                           std::to_string(bytes->size()));
  }
  return bytes;
}

}  // namespace

Result<IdentityKeys> LoadKeyFile(const std::string& path) {
  PCFARM_RETURN_IF_ERROR(CheckPrivateFile(path));
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path, kKeyFileMaxBytes));
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  sodium_memzero(text.data(), text.size());
  if (j.is_discarded() || !j.is_object()) {
    return InvalidArgument(path + ": not a JSON object (is it a pcfarm key file?)");
  }
  auto type = j.find("type");
  if (type == j.end() || !type->is_string() || *type != kKeyFileType) {
    return InvalidArgument(path + ": field \"type\" must be \"" +
                           std::string(kKeyFileType) + "\"");
  }
  auto version = j.find("version");
  if (version == j.end() || !version->is_number_integer() ||
      *version != kKeyFileVersion) {
    return InvalidArgument(path + ": field \"version\" must be " +
                           std::to_string(kKeyFileVersion));
  }
  PCFARM_ASSIGN_OR_RETURN(
      std::string sign_pk,
      HexField(j, "sign_public_key", kSignPublicKeyBytes, path));
  PCFARM_ASSIGN_OR_RETURN(std::string seed,
                          HexField(j, "sign_seed", kSignSeedBytes, path));
  PCFARM_ASSIGN_OR_RETURN(
      std::string curve_pk,
      HexField(j, "curve_public_key", kCurveKeyBytes, path));
  PCFARM_ASSIGN_OR_RETURN(
      std::string curve_sk,
      HexField(j, "curve_secret_key", kCurveKeyBytes, path));
  auto sign = SigningKeyPair::FromSeed(seed);
  auto curve = CurveKeyPair::FromSecretKey(curve_sk);
  sodium_memzero(seed.data(), seed.size());
  sodium_memzero(curve_sk.data(), curve_sk.size());
  if (!sign.ok()) return sign.status().WithContext(path);
  if (!curve.ok()) return curve.status().WithContext(path);
  if (sign->public_key() != sign_pk) {
    return Corruption(path + ": \"sign_public_key\" does not match \"sign_seed\"");
  }
  if (curve->public_key() != curve_pk) {
    return Corruption(path +
                      ": \"curve_public_key\" does not match \"curve_secret_key\"");
  }
  return IdentityKeys{std::move(sign).value(), std::move(curve).value()};
}

}  // namespace pcfarm
