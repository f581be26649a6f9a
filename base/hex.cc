#include "base/hex.h"

namespace pcfarm {
namespace {

int Nibble(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

std::string HexEncode(std::string_view bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

Result<std::string> HexDecode(std::string_view hex, size_t expected_bytes) {
  if (hex.size() % 2 != 0) {
    return InvalidArgument("hex text has an odd number of digits");
  }
  if (expected_bytes != 0 && hex.size() != expected_bytes * 2) {
    return InvalidArgument("expected " + std::to_string(expected_bytes * 2) +
                           " hex digits, got " + std::to_string(hex.size()));
  }
  std::string out(hex.size() / 2, '\0');
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = Nibble(hex[2 * i]), lo = Nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) {
      return InvalidArgument("not a hex digit at position " +
                             std::to_string(hi < 0 ? 2 * i : 2 * i + 1));
    }
    out[i] = static_cast<char>(hi * 16 + lo);
  }
  return out;
}

}  // namespace pcfarm
