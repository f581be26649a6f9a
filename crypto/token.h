// Enrollment tokens (DESIGN.md §4): what an admin hands to a new PC so it can
// join the farm.
//
// A token carries a random secret, the endpoint workers reach the
// coordinator at, and the coordinator's two public keys. The worker pins both
// keys from the token (no trust on first use): it sets the Curve key as
// ZMQ_CURVE_SERVERKEY and accepts only shards signed by the signing key. It
// proves the secret in ENROLL; the coordinator's database keeps only
// SecretHash(secret) and compares with SecretMatches (constant time). In the
// ENROLL message the secret travels as Base64UrlEncode(secret).
//
// Text form: "pcfarm1." + base64url (no padding) of
//   secret[32] | coordinator_sign_pk[32] | coordinator_curve_pk[32] |
//   expires_ms (int64 big-endian) | uses (uint32 big-endian) |
//   endpoint_len (uint8) | endpoint[endpoint_len] | check[4]
// where check = the first 4 bytes of BLAKE2b-256 of everything before it, so
// a token damaged by copy and paste is reported as damaged.
//
// Thread-safety: values and pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"
#include "crypto/hash.h"

namespace pcfarm {

constexpr size_t kTokenSecretBytes = 32;
constexpr char kTokenPrefix[] = "pcfarm1.";
constexpr size_t kTokenMaxEndpointChars = 255;

struct EnrollmentToken {
  std::string secret;                // kTokenSecretBytes random bytes
  std::string endpoint;              // "tcp://host:port" as workers reach it
  std::string coordinator_sign_pk;   // Ed25519, 32 bytes
  std::string coordinator_curve_pk;  // Curve25519 (CurveZMQ server), 32 bytes
  int64_t expires_ms = 0;            // Unix time in ms; > 0
  uint32_t uses = 0;                 // enrollments allowed; >= 1

  bool operator==(const EnrollmentToken&) const = default;
};

// Returns a token with a fresh random secret.
EnrollmentToken MakeEnrollmentToken(std::string endpoint,
                                    std::string coordinator_sign_pk,
                                    std::string coordinator_curve_pk,
                                    int64_t expires_ms, uint32_t uses);

// OK iff `endpoint` is "tcp://HOST:PORT" with a non-empty host of printable
// characters, PORT in 1..65535, at most kTokenMaxEndpointChars characters.
Status CheckEndpoint(std::string_view endpoint);

// OK iff every field of `token` is within the rules above; the message names
// the field.
Status CheckEnrollmentToken(const EnrollmentToken& token);

// REQUIRES: CheckEnrollmentToken(token).ok() (a bug otherwise).
std::string EncodeEnrollmentToken(const EnrollmentToken& token);

// Parses the text form. Surrounding whitespace is ignored (copy and paste).
// InvalidArgument with a message a person can act on for a wrong prefix or
// version, bad characters, a truncated or over-long token, a failed
// checksum, or any field out of range. Does not check expiry.
Result<EnrollmentToken> DecodeEnrollmentToken(std::string_view text);

// BLAKE2b-256 of the secret: what the coordinator stores.
Hash256 SecretHash(std::string_view secret);

// True iff BLAKE2b-256(secret) equals `stored_hash`, compared in constant time.
bool SecretMatches(std::string_view secret, const Hash256& stored_hash);

}  // namespace pcfarm
