#include "tasks/model/pretokenize.h"

#include <catch2/catch.hpp>
#include <string>

namespace pcfarm {
namespace {

std::vector<std::string> Split(SplitRegex r, std::string_view text) {
  std::vector<std::string> out;
  for (auto p : SplitWithRegex(r, text)) out.emplace_back(p);
  return out;
}

using V = std::vector<std::string>;

}  // namespace

TEST_CASE("GPT-2 regex splits", "[pretokenize]") {
  CHECK(Split(SplitRegex::kGpt2, "Hello world's  test 123!!\n") ==
        V{"Hello", " world", "'s", " ", " test", " 123", "!!", "\n"});
  CHECK(Split(SplitRegex::kGpt2, "I'M") == V{"I", "'", "M"});  // case-sensitive
  CHECK(Split(SplitRegex::kGpt2, "héllo wörld 日本語") == V{"héllo", " wörld", " 日本語"});
  CHECK(Split(SplitRegex::kGpt2, "naïve—test") == V{"naïve", "—", "test"});
  CHECK(Split(SplitRegex::kGpt2, "a \tb") == V{"a", " ", "\t", "b"});
  CHECK(Split(SplitRegex::kGpt2, "x   ") == V{"x", "   "});
  CHECK(Split(SplitRegex::kGpt2, "").empty());
}

TEST_CASE("Llama-3 and Qwen2 regex splits", "[pretokenize]") {
  const char* text = "Hello world's  test 12345!!\n\nok  ";
  CHECK(Split(SplitRegex::kLlama3, text) ==
        V{"Hello", " world", "'s", " ", " test", " ", "123", "45", "!!\n\n", "ok", "  "});
  CHECK(Split(SplitRegex::kQwen2, text) ==
        V{"Hello", " world", "'s", " ", " test", " ", "1", "2", "3", "4", "5", "!!\n\n", "ok", "  "});
  CHECK(Split(SplitRegex::kLlama3, "I'M") == V{"I", "'M"});  // case-insensitive
  CHECK(Split(SplitRegex::kLlama3, "a\n\n b") == V{"a", "\n\n", " b"});
  CHECK(Split(SplitRegex::kLlama3, "naïve—test") == V{"naïve", "—test"});
  CHECK(Split(SplitRegex::kLlama3, "x\tyz") == V{"x", "\tyz"});
}

TEST_CASE("invalid UTF-8 is split one byte at a time, never lost", "[pretokenize]") {
  std::string bad = "a\xff\xc3 b\xe2\x82";
  for (auto r : {SplitRegex::kGpt2, SplitRegex::kLlama3}) {
    std::string joined;
    for (auto& p : Split(r, bad)) joined += p;
    CHECK(joined == bad);
  }
}

TEST_CASE("regex patterns are recognised exactly", "[pretokenize]") {
  CHECK(SplitRegexFromPattern(R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)") ==
        SplitRegex::kGpt2);
  CHECK_FALSE(SplitRegexFromPattern(R"(\w+)").has_value());
}

TEST_CASE("Unicode category approximation", "[pretokenize]") {
  CHECK(IsLetter('a'));
  CHECK(IsLetter(0xe9));     // é
  CHECK(IsLetter(0x65e5));   // 日
  CHECK(IsLetter(0x0416));   // Ж
  CHECK_FALSE(IsLetter(0x301));   // combining acute
  CHECK_FALSE(IsLetter(0x2014));  // em dash
  CHECK_FALSE(IsLetter(0x1f642)); // emoji
  CHECK_FALSE(IsLetter(0xd7));    // ×
  CHECK(IsNumber('7'));
  CHECK(IsNumber(0x663));    // Arabic-Indic 3
  CHECK(IsNumber(0xbd));     // ½
  CHECK(IsWhitespace(0x3000));
  CHECK_FALSE(IsWhitespace(0x200b));  // zero width space is not White_Space
  size_t len;
  CHECK(DecodeUtf8("\xe6\x97\xa5", 0, &len) == 0x65e5);
  CHECK(len == 3);
  CHECK(DecodeUtf8("\xc0\x80", 0, &len) == 0xfffd);  // overlong
  CHECK(len == 1);
}

}  // namespace pcfarm
