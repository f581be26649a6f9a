#include "tasks/model/pretokenize.h"

namespace pcfarm {

uint32_t DecodeUtf8(std::string_view s, size_t pos, size_t* len) {
  const auto b0 = uint8_t(s[pos]);
  *len = 1;
  if (b0 < 0x80) return b0;
  size_t n;
  uint32_t cp;
  if ((b0 & 0xe0) == 0xc0) { n = 2; cp = b0 & 0x1f; }
  else if ((b0 & 0xf0) == 0xe0) { n = 3; cp = b0 & 0x0f; }
  else if ((b0 & 0xf8) == 0xf0) { n = 4; cp = b0 & 0x07; }
  else return 0xfffd;
  if (pos + n > s.size()) return 0xfffd;
  for (size_t i = 1; i < n; ++i) {
    auto b = uint8_t(s[pos + i]);
    if ((b & 0xc0) != 0x80) return 0xfffd;
    cp = (cp << 6) | (b & 0x3f);
  }
  static const uint32_t kMin[] = {0, 0, 0x80, 0x800, 0x10000};
  if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0xfffd;
  *len = n;
  return cp;
}

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xc0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3f)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xe0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(char(0x80 | (cp & 0x3f)));
  } else {
    out->push_back(char(0xf0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3f)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3f)));
    out->push_back(char(0x80 | (cp & 0x3f)));
  }
}

bool IsWhitespace(uint32_t c) {
  return (c >= 0x09 && c <= 0x0d) || c == 0x20 || c == 0x85 || c == 0xa0 ||
         c == 0x1680 || (c >= 0x2000 && c <= 0x200a) || c == 0x2028 ||
         c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

bool IsNumber(uint32_t c) {
  return (c >= '0' && c <= '9') || c == 0xb2 || c == 0xb3 || c == 0xb9 ||
         (c >= 0xbc && c <= 0xbe) || (c >= 0x660 && c <= 0x669) ||
         (c >= 0x6f0 && c <= 0x6f9) || (c >= 0x966 && c <= 0x96f) ||
         (c >= 0x2070 && c <= 0x2079 && c != 0x2071 && c != 0x2072 && c != 0x2073) ||
         (c >= 0x2080 && c <= 0x2089) || (c >= 0x2150 && c <= 0x2189) ||
         (c >= 0x2460 && c <= 0x249b) || (c >= 0x24ea && c <= 0x24ff) ||
         (c >= 0x2776 && c <= 0x2793) || c == 0x3007 || (c >= 0x3021 && c <= 0x3029) ||
         (c >= 0xff10 && c <= 0xff19);
}

bool IsLetter(uint32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  if (c <= 0xff) return c == 0xaa || c == 0xb5 || c == 0xba || (c >= 0xc0 && c != 0xd7 && c != 0xf7);
  if (IsNumber(c) || IsWhitespace(c)) return false;
  struct Range { uint32_t lo, hi; };
  // Blocks (or parts) that hold no letters: marks, punctuation, symbols.
  static const Range kNotLetters[] = {
      {0x2c2, 0x2c5},   {0x2d2, 0x2df},   {0x2e5, 0x2eb},   {0x2ed, 0x2ed},
      {0x2ef, 0x36f},   {0x375, 0x375},   {0x37e, 0x37e},   {0x384, 0x385},
      {0x387, 0x387},   {0x483, 0x489},   {0x55a, 0x55f},   {0x589, 0x58a},
      {0x591, 0x5c7},   {0x5f3, 0x5f4},   {0x600, 0x61f},   {0x64b, 0x65f},
      {0x66a, 0x66d},   {0x670, 0x670},   {0x6d4, 0x6d4},   {0x6d6, 0x6ed},
      {0x900, 0x903},   {0x93a, 0x93c},   {0x93e, 0x94f},   {0x951, 0x957},
      {0x962, 0x965},   {0x970, 0x970},   {0xe31, 0xe31},   {0xe34, 0xe3a},
      {0xe3f, 0xe3f},   {0xe47, 0xe4f},   {0x1ab0, 0x1aff}, {0x1dc0, 0x1dff},
      {0x2000, 0x208f}, {0x20a0, 0x20ff}, {0x2100, 0x2101}, {0x2103, 0x2106},
      {0x2108, 0x2109}, {0x2114, 0x2114}, {0x2116, 0x2118}, {0x211e, 0x2123},
      {0x2125, 0x2125}, {0x2127, 0x2127}, {0x2129, 0x2129}, {0x212e, 0x212e},
      {0x213a, 0x213b}, {0x2140, 0x2144}, {0x214a, 0x214d}, {0x214f, 0x214f},
      {0x218a, 0x2bff}, {0x2cf9, 0x2cff}, {0x2e00, 0x2e7f}, {0x2ff0, 0x3004},
      {0x3008, 0x3020}, {0x302a, 0x3030}, {0x3036, 0x303a}, {0x303d, 0x303f},
      {0x3099, 0x309c}, {0x30a0, 0x30a0}, {0x30fb, 0x30fb}, {0x3190, 0x319f},
      {0x31c0, 0x31ef}, {0x3200, 0x33ff}, {0x4dc0, 0x4dff}, {0xa490, 0xa4cf},
      {0xd800, 0xf8ff}, {0xfd3e, 0xfd3f}, {0xfe00, 0xfe6f}, {0xfeff, 0xff0f},
      {0xff1a, 0xff20}, {0xff3b, 0xff40}, {0xff5b, 0xff65}, {0xffe0, 0xffff},
      {0x1d000, 0x1d24f}, {0x1f000, 0x1faff}, {0xe0000, 0x10ffff}};
  for (const Range& r : kNotLetters) {
    if (c < r.lo) return true;  // sorted: no later range can hold c
    if (c <= r.hi) return false;
  }
  return true;
}

namespace {

struct Scanner {
  std::string_view s;

  uint32_t At(size_t pos, size_t* len) const {
    if (pos >= s.size()) { *len = 0; return 0; }
    return DecodeUtf8(s, pos, len);
  }
  bool Is(size_t pos, bool (*pred)(uint32_t)) const {
    size_t len;
    return pos < s.size() && pred(At(pos, &len));
  }
  static bool Other(uint32_t c) { return !IsWhitespace(c) && !IsLetter(c) && !IsNumber(c); }
  static bool NotNewline(uint32_t c) { return c != '\r' && c != '\n'; }
  // End of the run of chars satisfying pred from pos (pos when none).
  size_t Run(size_t pos, bool (*pred)(uint32_t), size_t max_chars = SIZE_MAX) const {
    size_t n = 0, len;
    while (pos < s.size() && n < max_chars && pred(At(pos, &len))) { pos += len; ++n; }
    return pos;
  }
  // 's 't 're 've 'm 'll 'd; returns the end or pos.
  size_t Contraction(size_t pos, bool ignore_case) const {
    if (s[pos] != '\'') return pos;
    auto lower = [&](size_t i) -> char {
      if (i >= s.size()) return 0;
      char c = s[i];
      return ignore_case && c >= 'A' && c <= 'Z' ? char(c - 'A' + 'a') : c;
    };
    char a = lower(pos + 1), b = lower(pos + 2);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return pos + 2;
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return pos + 3;
    return pos;
  }
  // \s+(?!\S) then \s+, at a whitespace char.
  size_t Whitespace(size_t pos) const {
    size_t end = Run(pos, IsWhitespace);
    if (end == s.size()) return end;
    // Back off one char so the last whitespace joins the next token.
    size_t last = pos, p = pos, len;
    while (p < end) { last = p; At(p, &len); p += len; }
    return last > pos ? last : end;
  }

  size_t NextGpt2(size_t pos) const {
    size_t e = Contraction(pos, false);
    if (e != pos) return e;
    size_t start = s[pos] == ' ' ? pos + 1 : pos;
    if (Is(start, IsLetter)) return Run(start, IsLetter);
    if (Is(start, IsNumber)) return Run(start, IsNumber);
    if (Is(start, Other)) return Run(start, Other);
    return Whitespace(pos);
  }

  size_t NextLlama3(size_t pos, size_t max_digits) const {
    size_t e = Contraction(pos, true);
    if (e != pos) return e;
    size_t len;
    uint32_t c = At(pos, &len);
    // [^\r\n\p{L}\p{N}]?\p{L}+
    if (IsLetter(c)) return Run(pos, IsLetter);
    if (NotNewline(c) && !IsNumber(c) && Is(pos + len, IsLetter)) return Run(pos + len, IsLetter);
    if (IsNumber(c)) return Run(pos, IsNumber, max_digits);
    // ' ?[^\s\p{L}\p{N}]+[\r\n]*'
    size_t start = c == ' ' ? pos + 1 : pos;
    if (Is(start, Other)) {
      size_t end = Run(start, Other);
      return Run(end, +[](uint32_t ch) { return ch == '\r' || ch == '\n'; });
    }
    // \s*[\r\n]+ : up to the last newline of the whitespace run.
    size_t end = Run(pos, IsWhitespace), last_nl = pos, p = pos;
    while (p < end) {
      uint32_t ch = At(p, &len);
      p += len;
      if (ch == '\r' || ch == '\n') last_nl = p;
    }
    if (last_nl > pos) return last_nl;
    return Whitespace(pos);
  }
};

}  // namespace

std::optional<SplitRegex> SplitRegexFromPattern(std::string_view p) {
  if (p == R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)")
    return SplitRegex::kGpt2;
  if (p == R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)")
    return SplitRegex::kLlama3;
  if (p == R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)")
    return SplitRegex::kQwen2;
  return std::nullopt;
}

std::vector<std::string_view> SplitWithRegex(SplitRegex regex, std::string_view text) {
  Scanner sc{text};
  std::vector<std::string_view> out;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = regex == SplitRegex::kGpt2    ? sc.NextGpt2(pos)
                 : regex == SplitRegex::kLlama3 ? sc.NextLlama3(pos, 3)
                                                : sc.NextLlama3(pos, 1);
    if (end <= pos) {  // cannot happen: every char matches some branch
      size_t len;
      sc.At(pos, &len);
      end = pos + len;
    }
    out.push_back(text.substr(pos, end - pos));
    pos = end;
  }
  return out;
}

}  // namespace pcfarm
