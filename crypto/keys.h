// Identity keys (DESIGN.md §4): Ed25519 keys that sign shards and results,
// Curve25519 keys for CurveZMQ, the file they live in, and small helpers
// (random bytes, constant-time comparison).
//
// Byte strings: every key, signature and key id is a std::string holding raw
// bytes (as protobuf `bytes` fields do), with the sizes below.
//
// Secrets: key pairs own their secret key and wipe it (sodium_memzero) when
// destroyed. They are copyable values; a copy owns its own secret.
//
// Thread-safety: a const key pair may be used from many threads at once
// (Sign is const); free functions are thread-safe. Every function here calls
// CryptoInit() itself where libsodium needs it.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

constexpr size_t kSignPublicKeyBytes = 32;  // Ed25519 public key
constexpr size_t kSignSeedBytes = 32;       // Ed25519 secret seed
constexpr size_t kSignatureBytes = 64;      // Ed25519 detached signature
constexpr size_t kKeyIdBytes = 16;          // see KeyIdOf
constexpr size_t kCurveKeyBytes = 32;       // Curve25519 public or secret key
constexpr size_t kCurveKeyZ85Chars = 40;    // Z85 text of a Curve25519 key

// Returns `n` bytes from libsodium's CSPRNG.
std::string RandomBytes(size_t n);

// True iff a and b have the same size and the same bytes. The time taken
// depends only on the sizes, never on where the bytes differ.
bool ConstantTimeEqual(std::string_view a, std::string_view b);

// The first 16 bytes of BLAKE2b-256(public_key): names a signer in an
// envelope. Any byte string is accepted (an unknown size simply names no key).
std::string KeyIdOf(std::string_view public_key);

// Ed25519 signing identity.
class SigningKeyPair {
 public:
  static SigningKeyPair Generate();
  // Rebuilds the key pair from its 32-byte secret seed (key files).
  static Result<SigningKeyPair> FromSeed(std::string_view seed);

  SigningKeyPair(const SigningKeyPair&) = default;
  SigningKeyPair& operator=(const SigningKeyPair&) = default;
  ~SigningKeyPair();

  // 32 bytes.
  const std::string& public_key() const { return public_key_; }
  // 16 bytes: KeyIdOf(public_key()).
  const std::string& key_id() const { return key_id_; }
  // The 32-byte secret seed. Only for writing the key file.
  std::string seed() const;
  // Returns the 64-byte detached signature of `message`.
  std::string Sign(std::string_view message) const;

 private:
  SigningKeyPair() = default;

  std::array<unsigned char, 64> secret_{};  // libsodium layout: seed || pk
  std::string public_key_;
  std::string key_id_;
};

// OK iff `signature` is a valid Ed25519 signature of `message` by
// `public_key`. InvalidArgument when a size is wrong (naming which),
// Unauthenticated when the signature does not verify.
Status Verify(std::string_view public_key, std::string_view message,
              std::string_view signature);

// Curve25519 key pair for CurveZMQ, as zmq_curve_keypair() makes them
// (libsodium crypto_box keys). Pass secret_key()/public_key() (32 raw bytes)
// or their Z85 text to ZMQ_CURVE_SECRETKEY / ZMQ_CURVE_PUBLICKEY /
// ZMQ_CURVE_SERVERKEY.
class CurveKeyPair {
 public:
  static CurveKeyPair Generate();
  // Rebuilds the pair from a 32-byte secret key (public = scalarmult_base).
  static Result<CurveKeyPair> FromSecretKey(std::string_view secret_key);

  CurveKeyPair(const CurveKeyPair&) = default;
  CurveKeyPair& operator=(const CurveKeyPair&) = default;
  ~CurveKeyPair();

  const std::string& public_key() const { return public_key_; }  // 32 bytes
  std::string secret_key() const;                                 // 32 bytes
  std::string public_key_z85() const;                             // 40 chars
  std::string secret_key_z85() const;                             // 40 chars

 private:
  CurveKeyPair() = default;

  std::array<unsigned char, kCurveKeyBytes> secret_{};
  std::string public_key_;
};

// The two key pairs a coordinator, worker or CLI client owns.
struct IdentityKeys {
  SigningKeyPair sign;
  CurveKeyPair curve;

  static IdentityKeys Generate();
};

// Writes `keys` to `path` as JSON ({"type": "pcfarm-identity-keys",
// "version": 1, hex fields}) atomically with mode 0600.
Status SaveKeyFile(const std::string& path, const IdentityKeys& keys);

// Reads a file written by SaveKeyFile. PermissionDenied (naming the file and
// its mode) when group or others may read or write it: the file is not read
// at all then. InvalidArgument/Corruption naming the file and field when the
// contents are malformed or a stored public key does not match its secret.
Result<IdentityKeys> LoadKeyFile(const std::string& path);

}  // namespace pcfarm
