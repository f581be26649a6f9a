#include "crypto/hash.h"

#include <sodium.h>

#include <cstdlib>
#include <cstring>

namespace pcfarm {

static_assert(sizeof(crypto_generichash_state) <= 384,
              "Blake2bHasher::state_ is too small for this libsodium");

void CryptoInit() {
  if (sodium_init() < 0) {
    std::abort();  // No entropy: nothing about keys can be trusted.
  }
}

Hash256 Blake2b256(std::string_view data) {
  Hash256 h;
  crypto_generichash(h.data(), h.size(),
                     reinterpret_cast<const unsigned char*>(data.data()),
                     data.size(), nullptr, 0);
  return h;
}

std::string HashToHex(const Hash256& h) {
  char buf[65];
  sodium_bin2hex(buf, sizeof buf, h.data(), h.size());
  return std::string(buf, 64);
}

Result<Hash256> HashFromHex(std::string_view hex) {
  if (hex.size() != 64) {
    return InvalidArgument("a hash is 64 hex digits, got " +
                           std::to_string(hex.size()) + " characters");
  }
  Hash256 h;
  size_t len = 0;
  if (sodium_hex2bin(h.data(), h.size(), hex.data(), hex.size(), nullptr, &len,
                     nullptr) != 0 ||
      len != 32) {
    return InvalidArgument("not a hex hash: " + std::string(hex));
  }
  return h;
}

std::string HashToBytes(const Hash256& h) {
  return std::string(reinterpret_cast<const char*>(h.data()), h.size());
}

Result<Hash256> HashFromBytes(std::string_view bytes) {
  if (bytes.size() != 32) {
    return InvalidArgument("a hash is 32 bytes, got " +
                           std::to_string(bytes.size()));
  }
  Hash256 h;
  std::memcpy(h.data(), bytes.data(), 32);
  return h;
}

Blake2bHasher::Blake2bHasher() {
  crypto_generichash_init(reinterpret_cast<crypto_generichash_state*>(state_),
                          nullptr, 0, 32);
}

void Blake2bHasher::Update(std::string_view data) {
  crypto_generichash_update(
      reinterpret_cast<crypto_generichash_state*>(state_),
      reinterpret_cast<const unsigned char*>(data.data()), data.size());
}

Hash256 Blake2bHasher::Final() {
  Hash256 h;
  crypto_generichash_final(reinterpret_cast<crypto_generichash_state*>(state_),
                           h.data(), h.size());
  return h;
}

}  // namespace pcfarm
