#include "crypto/token.h"

#include <algorithm>
#include <cassert>
#include <cctype>

#include "crypto/codec.h"
#include "crypto/keys.h"

namespace pcfarm {
namespace {

constexpr size_t kKeyBytes = 32;
constexpr size_t kCheckBytes = 4;
// secret, sign pk, curve pk, expires_ms, uses, endpoint_len.
constexpr size_t kFixedBytes = kTokenSecretBytes + 2 * kKeyBytes + 8 + 4 + 1;

void PutBE(std::string& out, uint64_t v, int bytes) {
  for (int i = bytes - 1; i >= 0; --i) out.push_back(char((v >> (8 * i)) & 0xff));
}

uint64_t GetBE(std::string_view in, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | uint8_t(in[at + i]);
  return v;
}

std::string Checksum(std::string_view payload) {
  return HashToBytes(Blake2b256(payload)).substr(0, kCheckBytes);
}

}  // namespace

EnrollmentToken MakeEnrollmentToken(std::string endpoint,
                                    std::string coordinator_sign_pk,
                                    std::string coordinator_curve_pk,
                                    int64_t expires_ms, uint32_t uses) {
  EnrollmentToken t;
  t.secret = RandomBytes(kTokenSecretBytes);
  t.endpoint = std::move(endpoint);
  t.coordinator_sign_pk = std::move(coordinator_sign_pk);
  t.coordinator_curve_pk = std::move(coordinator_curve_pk);
  t.expires_ms = expires_ms;
  t.uses = uses;
  return t;
}

Status CheckEndpoint(std::string_view endpoint) {
  const std::string quoted = "endpoint \"" + std::string(endpoint.substr(0, 80)) + "\"";
  if (endpoint.size() > kTokenMaxEndpointChars) {
    return InvalidArgument("endpoint is longer than " +
                           std::to_string(kTokenMaxEndpointChars) + " characters");
  }
  constexpr std::string_view kScheme = "tcp://";
  if (endpoint.substr(0, kScheme.size()) != kScheme) {
    return InvalidArgument(quoted + " must start with tcp://");
  }
  std::string_view rest = endpoint.substr(kScheme.size());
  size_t colon = rest.rfind(':');
  if (colon == std::string_view::npos || colon == 0) {
    return InvalidArgument(quoted + " must be tcp://HOST:PORT");
  }
  for (char c : rest.substr(0, colon)) {
    if (!std::isgraph(static_cast<unsigned char>(c)) || c == '/') {
      return InvalidArgument(quoted + " has a bad character in its host");
    }
  }
  std::string_view port = rest.substr(colon + 1);
  if (port.empty() || port.size() > 5) {
    return InvalidArgument(quoted + " needs a port 1..65535");
  }
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return InvalidArgument(quoted + " needs a numeric port");
    p = p * 10 + uint32_t(c - '0');
  }
  if (p == 0 || p > 65535) return InvalidArgument(quoted + " needs a port 1..65535");
  return Status::Ok();
}

Status CheckEnrollmentToken(const EnrollmentToken& t) {
  if (t.secret.size() != kTokenSecretBytes) {
    return InvalidArgument("token secret must be 32 bytes, got " +
                           std::to_string(t.secret.size()));
  }
  if (t.coordinator_sign_pk.size() != kKeyBytes) {
    return InvalidArgument("token coordinator_sign_pk must be 32 bytes, got " +
                           std::to_string(t.coordinator_sign_pk.size()));
  }
  if (t.coordinator_curve_pk.size() != kKeyBytes) {
    return InvalidArgument("token coordinator_curve_pk must be 32 bytes, got " +
                           std::to_string(t.coordinator_curve_pk.size()));
  }
  if (t.expires_ms <= 0) {
    return InvalidArgument("token expires_ms must be > 0, got " +
                           std::to_string(t.expires_ms));
  }
  if (t.uses == 0) return InvalidArgument("token uses must be >= 1");
  return CheckEndpoint(t.endpoint).WithContext("token");
}

std::string EncodeEnrollmentToken(const EnrollmentToken& t) {
  assert(CheckEnrollmentToken(t).ok() && "encoding an invalid token");
  std::string bin;
  bin.reserve(kFixedBytes + t.endpoint.size() + kCheckBytes);
  bin += t.secret;
  bin += t.coordinator_sign_pk;
  bin += t.coordinator_curve_pk;
  PutBE(bin, uint64_t(t.expires_ms), 8);
  PutBE(bin, t.uses, 4);
  PutBE(bin, t.endpoint.size(), 1);
  bin += t.endpoint;
  bin += Checksum(bin);
  return kTokenPrefix + Base64UrlEncode(bin);
}

Result<EnrollmentToken> DecodeEnrollmentToken(std::string_view text) {
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.front())))
    text.remove_prefix(1);
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back())))
    text.remove_suffix(1);
  constexpr std::string_view kPrefix = kTokenPrefix;
  if (text.substr(0, kPrefix.size()) != kPrefix) {
    if (text.substr(0, 6) == "pcfarm" && text.find('.') != std::string_view::npos) {
      return InvalidArgument("token version \"" +
                             std::string(text.substr(0, std::min(text.find('.'), size_t(16)))) +
                             "\" is not supported; this program reads pcfarm1 tokens");
    }
    return InvalidArgument("not a pcfarm enrollment token (it must start with \"" +
                           std::string(kPrefix) + "\")");
  }
  auto bin_or = Base64UrlDecode(text.substr(kPrefix.size()));
  if (!bin_or.ok()) return bin_or.status().WithContext("enrollment token");
  const std::string& bin = *bin_or;
  if (bin.size() < kFixedBytes + kCheckBytes) {
    return InvalidArgument("enrollment token is truncated (" +
                           std::to_string(bin.size()) + " bytes, at least " +
                           std::to_string(kFixedBytes + kCheckBytes) +
                           " needed); copy all of it");
  }
  size_t endpoint_len = uint8_t(bin[kFixedBytes - 1]);
  size_t want = kFixedBytes + endpoint_len + kCheckBytes;
  if (bin.size() < want) {
    return InvalidArgument("enrollment token is truncated (" +
                           std::to_string(bin.size()) + " of " +
                           std::to_string(want) + " bytes); copy all of it");
  }
  if (bin.size() > want) {
    return InvalidArgument("enrollment token has " +
                           std::to_string(bin.size() - want) +
                           " extra bytes at its end");
  }
  std::string_view payload(bin.data(), want - kCheckBytes);
  if (!ConstantTimeEqual(Checksum(payload),
                         std::string_view(bin).substr(want - kCheckBytes))) {
    return InvalidArgument("enrollment token is damaged (checksum mismatch); "
                           "copy it again");
  }
  EnrollmentToken t;
  size_t at = 0;
  t.secret = bin.substr(at, kTokenSecretBytes);
  at += kTokenSecretBytes;
  t.coordinator_sign_pk = bin.substr(at, kKeyBytes);
  at += kKeyBytes;
  t.coordinator_curve_pk = bin.substr(at, kKeyBytes);
  at += kKeyBytes;
  t.expires_ms = int64_t(GetBE(bin, at, 8));
  at += 8;
  t.uses = uint32_t(GetBE(bin, at, 4));
  at += 4 + 1;
  t.endpoint = bin.substr(at, endpoint_len);
  PCFARM_RETURN_IF_ERROR(CheckEnrollmentToken(t));
  return t;
}

Hash256 SecretHash(std::string_view secret) { return Blake2b256(secret); }

bool SecretMatches(std::string_view secret, const Hash256& stored_hash) {
  Hash256 h = SecretHash(secret);
  return ConstantTimeEqual(
      std::string_view(reinterpret_cast<const char*>(h.data()), h.size()),
      std::string_view(reinterpret_cast<const char*>(stored_hash.data()),
                       stored_hash.size()));
}

}  // namespace pcfarm
