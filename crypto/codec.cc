#include "crypto/codec.h"

#include <sodium.h>

#include <cassert>
#include <cstdint>

namespace pcfarm {
namespace {

constexpr char kZ85Alphabet[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    ".-:+=^!/*?&<>()[]{}@%$#";

// Maps a character to its Z85 digit, or -1.
int Z85Digit(char c) {
  for (int i = 0; i < 85; ++i) {
    if (kZ85Alphabet[i] == c) return i;
  }
  return -1;
}

}  // namespace

std::string Z85Encode(std::string_view bytes) {
  assert(bytes.size() % 4 == 0 && "Z85 encodes whole 4-byte groups");
  std::string out;
  out.reserve(bytes.size() / 4 * 5);
  for (size_t i = 0; i < bytes.size(); i += 4) {
    uint32_t v = (uint32_t(uint8_t(bytes[i])) << 24) |
                 (uint32_t(uint8_t(bytes[i + 1])) << 16) |
                 (uint32_t(uint8_t(bytes[i + 2])) << 8) |
                 uint32_t(uint8_t(bytes[i + 3]));
    char group[5];
    for (int k = 4; k >= 0; --k) {
      group[k] = kZ85Alphabet[v % 85];
      v /= 85;
    }
    out.append(group, 5);
  }
  return out;
}

Result<std::string> Z85Decode(std::string_view text) {
  if (text.size() % 5 != 0) {
    return InvalidArgument("Z85 text must be a multiple of 5 characters, got " +
                           std::to_string(text.size()));
  }
  std::string out;
  out.reserve(text.size() / 5 * 4);
  for (size_t i = 0; i < text.size(); i += 5) {
    uint64_t v = 0;
    for (size_t k = 0; k < 5; ++k) {
      int d = Z85Digit(text[i + k]);
      if (d < 0) {
        return InvalidArgument("not a Z85 character at offset " +
                               std::to_string(i + k));
      }
      v = v * 85 + uint64_t(d);
    }
    if (v > 0xffffffffu) {
      return InvalidArgument("Z85 group at offset " + std::to_string(i) +
                             " overflows 32 bits");
    }
    out.push_back(char((v >> 24) & 0xff));
    out.push_back(char((v >> 16) & 0xff));
    out.push_back(char((v >> 8) & 0xff));
    out.push_back(char(v & 0xff));
  }
  return out;
}

std::string Base64UrlEncode(std::string_view bytes) {
  constexpr int kVariant = sodium_base64_VARIANT_URLSAFE_NO_PADDING;
  std::string out(sodium_base64_ENCODED_LEN(bytes.size(), kVariant), '\0');
  sodium_bin2base64(out.data(), out.size(),
                    reinterpret_cast<const unsigned char*>(bytes.data()),
                    bytes.size(), kVariant);
  out.resize(out.size() - 1);  // the encoded length counts the final NUL
  return out;
}

Result<std::string> Base64UrlDecode(std::string_view text) {
  std::string out(text.size() / 4 * 3 + 3, '\0');
  size_t len = 0;
  const char* end = nullptr;
  if (sodium_base642bin(reinterpret_cast<unsigned char*>(out.data()),
                        out.size(), text.data(), text.size(), nullptr, &len,
                        &end, sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      end != text.data() + text.size()) {
    size_t at = end ? size_t(end - text.data()) : 0;
    return InvalidArgument("not base64url text (bad character or length near "
                           "offset " + std::to_string(at) + ")");
  }
  out.resize(len);
  return out;
}

}  // namespace pcfarm
