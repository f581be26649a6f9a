// BLAKE2b-256 content hashes (libsodium's crypto_generichash), used to name
// blobs and to bind a result to the exact shard body it answers.
//
// Thread-safety: functions are pure; Blake2bHasher is not shared.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

using Hash256 = std::array<uint8_t, 32>;

// Must be called once before any crypto function; safe to call again.
// Aborts if libsodium cannot initialise (no entropy source).
void CryptoInit();

Hash256 Blake2b256(std::string_view data);
std::string HashToHex(const Hash256& h);
// Parses 64 lowercase or uppercase hex digits.
Result<Hash256> HashFromHex(std::string_view hex);
std::string HashToBytes(const Hash256& h);
// REQUIRES nothing: returns InvalidArgument unless `bytes` is 32 bytes long.
Result<Hash256> HashFromBytes(std::string_view bytes);

// Incremental hashing of large inputs (blobs streamed in chunks).
class Blake2bHasher {
 public:
  Blake2bHasher();
  void Update(std::string_view data);
  Hash256 Final();

 private:
  alignas(64) unsigned char state_[384];
};

// The hash of a file's bytes, read a piece at a time. NotFound when it is
// absent, IoError when it cannot be opened or read.
Result<Hash256> Blake2b256File(const std::string& path);

}  // namespace pcfarm
