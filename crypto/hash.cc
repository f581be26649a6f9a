#include "crypto/hash.h"

#include <fcntl.h>
#include <sodium.h>
#include <unistd.h>

#include <cerrno>
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

Result<Hash256> Blake2b256File(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return NotFound("no such file: " + path);
    return IoError("open " + path + ": " + std::strerror(errno));
  }
  Blake2bHasher hasher;
  std::string buf(size_t(1) << 20, '\0');
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = IoError("read " + path + ": " + std::strerror(errno));
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buf.data(), size_t(n)));
  }
  ::close(fd);
  return hasher.Final();
}

}  // namespace pcfarm
