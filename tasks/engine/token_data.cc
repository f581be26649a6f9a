#include "tasks/engine/token_data.h"

#include <bit>
#include <cassert>
#include <cmath>
#include <cstring>

namespace pcfarm {
namespace {

static_assert(std::endian::native == std::endian::little,
              "token data is little-endian and read and written with memcpy");

constexpr char kMagic[4] = {'P', 'T', 'D', '1'};
constexpr uint32_t kVersion = 1;
constexpr size_t kHeaderBytes = 12;
// The smallest sequence: n and one token and one weight.
constexpr size_t kMinSequenceBytes = 4 + 4 + 4;

void PutU32(std::string* out, uint32_t v) { out->append(reinterpret_cast<const char*>(&v), 4); }

uint32_t GetU32(std::string_view bytes, size_t at) {
  uint32_t v;
  std::memcpy(&v, bytes.data() + at, 4);
  return v;
}

Status Bad(const std::string& what) { return InvalidArgument("token data: " + what); }

}  // namespace

std::string EncodeTokenData(const std::vector<TokenSequence>& seqs) {
  assert(seqs.size() <= UINT32_MAX);
  size_t total = kHeaderBytes;
  for (const TokenSequence& s : seqs) total += 4 + 8 * s.tokens.size();
  std::string out;
  out.reserve(total);
  out.append(kMagic, 4);
  PutU32(&out, kVersion);
  PutU32(&out, uint32_t(seqs.size()));
  for (const TokenSequence& s : seqs) {
    const size_t n = s.tokens.size();
    assert(n >= 1 && n <= UINT32_MAX);
    assert(s.weights.empty() || s.weights.size() == n);
    PutU32(&out, uint32_t(n));
    out.append(reinterpret_cast<const char*>(s.tokens.data()), 4 * n);
    if (s.weights.empty()) {
      PutU32(&out, std::bit_cast<uint32_t>(0.0f));
      for (size_t i = 1; i < n; ++i) PutU32(&out, std::bit_cast<uint32_t>(1.0f));
    } else {
      out.append(reinterpret_cast<const char*>(s.weights.data()), 4 * n);
    }
  }
  return out;
}

Result<std::vector<TokenSequence>> DecodeTokenData(std::string_view bytes, int64_t vocab_size) {
  if (vocab_size < 0) return Bad("vocab_size " + std::to_string(vocab_size) + " is negative");
  if (bytes.size() < kHeaderBytes)
    return Bad(std::to_string(bytes.size()) + " bytes, shorter than the " +
               std::to_string(kHeaderBytes) + "-byte header");
  if (std::memcmp(bytes.data(), kMagic, 4) != 0) return Bad("bad magic (not PTD1 token data)");
  const uint32_t version = GetU32(bytes, 4);
  if (version != kVersion)
    return Bad("version " + std::to_string(version) + ", expected " + std::to_string(kVersion));
  const uint32_t count = GetU32(bytes, 8);
  size_t at = kHeaderBytes;
  // Checked before reserving, so a forged count cannot make us allocate.
  if (count > (bytes.size() - at) / kMinSequenceBytes)
    return Bad("count " + std::to_string(count) + " sequences cannot fit in the " +
               std::to_string(bytes.size() - at) + " bytes after the header");
  std::vector<TokenSequence> out(count);
  for (uint32_t s = 0; s < count; ++s) {
    const std::string where = "sequence " + std::to_string(s) + " (byte " + std::to_string(at) + ")";
    if (bytes.size() - at < 4) return Bad("truncated in " + where);
    const uint32_t n = GetU32(bytes, at);
    at += 4;
    if (n == 0) return Bad(where + " is empty");
    if (n > (bytes.size() - at) / 8)
      return Bad(where + " has " + std::to_string(n) + " tokens, but only " +
                 std::to_string(bytes.size() - at) + " bytes are left (truncated)");
    TokenSequence& seq = out[s];
    seq.tokens.resize(n);
    seq.weights.resize(n);
    std::memcpy(seq.tokens.data(), bytes.data() + at, 4 * size_t(n));
    at += 4 * size_t(n);
    std::memcpy(seq.weights.data(), bytes.data() + at, 4 * size_t(n));
    at += 4 * size_t(n);
    for (uint32_t j = 0; j < n; ++j) {
      const int32_t id = seq.tokens[j];
      if (id < 0 || (vocab_size > 0 && id >= vocab_size))
        return Bad("sequence " + std::to_string(s) + " token " + std::to_string(j) + " is " +
                   std::to_string(id) + ", outside [0, " +
                   (vocab_size > 0 ? std::to_string(vocab_size) : std::string("2^31")) + ")");
      const float w = seq.weights[j];
      if (!std::isfinite(w) || w < 0)
        return Bad("sequence " + std::to_string(s) + " weight " + std::to_string(j) + " is " +
                   std::to_string(w) + ", expected a finite number >= 0");
    }
  }
  if (at != bytes.size())
    return Bad(std::to_string(bytes.size() - at) + " bytes after the last sequence (byte " +
               std::to_string(at) + ")");
  return out;
}

}  // namespace pcfarm
