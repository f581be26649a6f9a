#include "base/peer_text.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>

namespace pcfarm {
namespace {

// Length of the valid UTF-8 sequence at text[i] that is printable (not a
// C1 control, U+0080..U+009F), or 0 when there is none.
size_t PrintableUtf8Length(std::string_view text, size_t i) {
  auto b = [&](size_t k) { return static_cast<uint8_t>(text[k]); };
  uint8_t c = b(i);
  size_t n;
  uint32_t cp;
  if (c >= 0x20 && c < 0x7f) return 1;
  if (c < 0x80) return 0;  // C0 control or DEL
  if ((c & 0xe0) == 0xc0) {
    n = 2;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (i + n > text.size()) return 0;
  for (size_t k = 1; k < n; ++k) {
    if ((b(i + k) & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (b(i + k) & 0x3f);
  }
  // Overlong forms, surrogates, beyond Unicode, and C1 controls.
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) return 0;
  if (cp >= 0x80 && cp <= 0x9f) return 0;
  return n;
}

}  // namespace

std::string EscapePeerText(std::string_view text, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(text.size(), max_bytes) + 16);
  size_t i = 0;
  while (i < text.size()) {
    size_t n = PrintableUtf8Length(text, i);
    std::string piece;
    if (text[i] == '\\') {
      piece = "\\\\";
      n = 1;
    } else if (n > 0) {
      piece.assign(text.substr(i, n));
    } else {
      char buf[5];
      std::snprintf(buf, sizeof buf, "\\x%02x", static_cast<uint8_t>(text[i]));
      piece = buf;
      n = 1;
    }
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    i += n;
  }
  if (i < text.size()) {
    out += "...(+" + std::to_string(text.size() - i) + " bytes)";
  }
  return out;
}

bool HasControlCharacters(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    size_t n = PrintableUtf8Length(text, i);
    if (n == 0) return true;
    i += n;
  }
  return false;
}

}  // namespace pcfarm
