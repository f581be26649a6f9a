// Pre-tokenizer splits: hand-written scanners equivalent to the regexes in
// tokenizer.json files (std::regex has no \p{L}).
//
//   kGpt2:   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//   kLlama3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|
//            ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
//   kQwen2:  as kLlama3 with \p{N} instead of \p{N}{1,3}
//
// Unicode categories are approximated from the code point (documented at
// IsLetter/IsNumber below): exact for ASCII and Latin-1, good for the common
// scripts, and a decoding error (invalid UTF-8) counts as one "other" char.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace pcfarm {

enum class SplitRegex { kGpt2, kLlama3, kQwen2 };

// The scanner for a Split pre-tokenizer's regex (exact text after JSON
// decoding); nullopt when it is not one of the three above.
std::optional<SplitRegex> SplitRegexFromPattern(std::string_view pattern);

// Splits `text` into the consecutive matches of `regex`; the pieces
// concatenate back to `text`.
std::vector<std::string_view> SplitWithRegex(SplitRegex regex, std::string_view text);

// Decodes one UTF-8 char at `text[pos]`; sets *len (>= 1). Invalid or
// truncated sequences decode as U+FFFD with *len == 1.
uint32_t DecodeUtf8(std::string_view text, size_t pos, size_t* len);
void AppendUtf8(uint32_t cp, std::string* out);

// \p{L} approximation: ASCII/Latin-1 letters exactly; above U+00FF every
// code point except known punctuation, symbol, space, digit and combining
// mark blocks (General Punctuation, CJK punctuation, arrows/maths/box/
// dingbats, emoji, variation selectors, combining diacriticals, ...).
bool IsLetter(uint32_t cp);
// \p{N} approximation: ASCII digits, superscripts and fractions of Latin-1,
// Arabic-Indic, Devanagari and fullwidth digits, Roman numerals, circled
// numbers.
bool IsNumber(uint32_t cp);
// \s: Unicode White_Space (exact).
bool IsWhitespace(uint32_t cp);

}  // namespace pcfarm
