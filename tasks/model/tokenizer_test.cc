#include "tasks/model/tokenizer.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <random>

namespace pcfarm {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

const char* kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's printable code point for byte b, as UTF-8.
std::string ByteChar(int b) {
  int next = 256;
  for (int x = 0; x < 256; ++x) {
    bool printable = (x >= 33 && x <= 126) || (x >= 161 && x <= 172) || x >= 174;
    int cp = printable ? x : next++;
    if (x == b) {
      std::string s;
      AppendUtf8(uint32_t(cp), &s);
      return s;
    }
  }
  return "";
}

// A Llama-3-style byte-level tokenizer.json: the 256 byte tokens (id = byte),
// seven merges, one special token.
json ByteLevelJson(bool merges_as_pairs) {
  json vocab = json::object();
  for (int b = 0; b < 256; ++b) vocab[ByteChar(b)] = b;
  const std::vector<std::pair<std::string, std::string>> merges = {
      {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"Ġ", "w"}, {"Ġw", "o"}, {"r", "l"}, {"Ġwo", "rl"}};
  json mj = json::array();
  int id = 256;
  for (auto& [a, b] : merges) {
    vocab[a + b] = id++;  // he 256, ll 257, hell 258, Ġw 259, Ġwo 260, rl 261, Ġworl 262
    if (merges_as_pairs) mj.push_back({a, b});
    else mj.push_back(a + " " + b);
  }
  json j;
  j["added_tokens"] = {{{"id", 263}, {"content", "<|begin_of_text|>"}, {"special", true}}};
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Sequence"},
                        {"pretokenizers",
                         {{{"type", "Split"}, {"pattern", {{"Regex", kLlama3Regex}}}, {"behavior", "Isolated"}, {"invert", false}},
                          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}};
  json bos_item = {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}};
  json seq_item = {{"Sequence", {{"id", "A"}, {"type_id", 0}}}};
  json template_proc = {{"type", "TemplateProcessing"}, {"single", json::array({bos_item, seq_item})}};
  template_proc["special_tokens"]["<|begin_of_text|>"] = {{"id", "<|begin_of_text|>"}, {"ids", {263}}};
  json byte_level_proc = {{"type", "ByteLevel"}};
  j["post_processor"] = {{"type", "Sequence"}, {"processors", json::array({byte_level_proc, template_proc})}};
  j["decoder"] = {{"type", "ByteLevel"}};
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"merges", mj}, {"ignore_merges", true}};
  return j;
}

// A Llama-2-style SentencePiece BPE tokenizer.json.
json SentencePieceJson() {
  json vocab = {{"<unk>", 0}, {"<s>", 1}, {"</s>", 2}};
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    vocab[name] = 3 + b;
  }
  int id = 259;
  for (const char* t : {"▁", "h", "e", "l", "o", "w", "r", "d", "he", "ll", "▁he", "llo", "▁hello",
                        "▁w", "or", "▁wor", "ld", "▁world"})
    vocab[t] = id++;  // ▁hello 271, ▁world 276
  json j;
  j["added_tokens"] = {{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                       {{"id", 1}, {"content", "<s>"}, {"special", true}},
                       {{"id", 2}, {"content", "</s>"}, {"special", true}}};
  j["normalizer"] = {{"type", "Sequence"},
                     {"normalizers",
                      {{{"type", "Prepend"}, {"prepend", "▁"}},
                       {{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", "▁"}}}}};
  j["pre_tokenizer"] = nullptr;
  j["post_processor"] = {
      {"type", "TemplateProcessing"},
      {"single", {{{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}}, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
      {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  j["model"] = {{"type", "BPE"}, {"vocab", vocab}, {"unk_token", "<unk>"}, {"byte_fallback", true},
                {"fuse_unk", true},
                {"merges", {"h e", "l l", "▁ he", "ll o", "▁he llo", "▁ w", "o r", "▁w or", "l d", "▁wor ld"}}};
  return j;
}

Tokenizer Parse(const json& j) {
  auto t = Tokenizer::FromJson(j.dump(), "tokenizer.json");
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return std::move(t).value();
}

std::string ParseError(const std::string& text) {
  auto t = Tokenizer::FromJson(text, "tok.json");
  REQUIRE_FALSE(t.ok());
  CHECK(t.status().message().rfind("tok.json: ", 0) == 0);
  return t.status().message();
}

}  // namespace

TEST_CASE("byte-level BPE encodes by merge rank", "[tokenizer]") {
  for (bool pairs : {false, true}) {
    Tokenizer t = Parse(ByteLevelJson(pairs));
    CHECK(t.byte_level());
    CHECK(t.vocab_size() == 264);
    // "hello": he, ll -> hell + o.  " world": Ġw, Ġwo, rl, Ġworl + d.
    CHECK(t.Encode("hello world") == Ids{263, 258, 'o', 262, 'd'});
    CHECK(t.Encode("hello world", false) == Ids{258, 'o', 262, 'd'});
    CHECK(t.Encode("<|begin_of_text|>hello", false) == Ids{263, 258, 'o'});
    CHECK(t.Decode({263, 258, 'o', 262, 'd'}) == "<|begin_of_text|>hello world");
    CHECK(t.Decode({263, 258, 'o', 262, 'd'}, true) == "hello world");
    CHECK(t.bos_id() == 263);
    CHECK(t.IsSpecial(263));
    CHECK(t.TokenString(259) == "Ġw");
  }
}

TEST_CASE("byte-level BPE round-trips any text", "[tokenizer]") {
  Tokenizer t = Parse(ByteLevelJson(true));
  for (const std::string& s : std::vector<std::string>{"héllo wörld\n\t 日本 🙂", "  leading and trailing  ",
                                                      "I'M 12345 x\r\ny", std::string("\x00\x01\xff bytes", 9), ""}) {
    CHECK(t.Decode(t.Encode(s, false)) == s);
  }
}

TEST_CASE("byte-level BPE round-trips random bytes", "[tokenizer]") {
  Tokenizer t = Parse(ByteLevelJson(false));
  std::mt19937 rng(9);
  const char alphabet[] = "hello world\n\t'sM12\xc3\xa9\xe2\x80\x94\xff";
  for (int iter = 0; iter < 300; ++iter) {
    std::string s;
    int n = int(rng() % 40);
    for (int k = 0; k < n; ++k)
      s.push_back(rng() % 4 == 0 ? char(rng()) : alphabet[rng() % (sizeof alphabet - 1)]);
    REQUIRE(t.Decode(t.Encode(s, false)) == s);
  }
}

TEST_CASE("SentencePiece-style BPE with byte fallback", "[tokenizer]") {
  Tokenizer t = Parse(SentencePieceJson());
  CHECK_FALSE(t.byte_level());
  // ▁hello ▁world, and '!' is not in the vocab: <0x21> = 3 + 0x21.
  CHECK(t.Encode("hello world!") == Ids{1, 271, 276, 3 + 0x21});
  CHECK(t.Decode({1, 271, 276, 36}, true) == "hello world!");
  CHECK(t.Decode({271, 276}) == "hello world");
  // é is two fallback bytes; no merge applies to ▁ h.
  CHECK(t.Encode("hé", false) == Ids{259, 260, 3 + 0xc3, 3 + 0xa9});
  CHECK(t.Decode(t.Encode("hé", false)) == "hé");
  // Added tokens split first; the legacy normalizer prepends ▁ to each part.
  CHECK(t.Encode("hello</s>world") == Ids{1, 271, 2, 276});
  CHECK(t.bos_id() == 1);
  CHECK(t.eos_id() == 2);
  for (const std::string& s : std::vector<std::string>{"hello  world", " x y ", "日本 🙂 ok"})
    CHECK(t.Decode(t.Encode(s, false)) == s);
}

TEST_CASE("SentencePiece-style without byte fallback uses one fused unk", "[tokenizer]") {
  json j = SentencePieceJson();
  j["model"]["byte_fallback"] = false;
  Tokenizer t = Parse(j);
  CHECK(t.Encode("hé€", false) == Ids{259, 260, 0});
}

TEST_CASE("Metaspace pre-tokenizer matches the legacy normalizer", "[tokenizer]") {
  json j = SentencePieceJson();
  j["normalizer"] = nullptr;
  j["pre_tokenizer"] = {{"type", "Metaspace"}, {"replacement", "▁"}, {"prepend_scheme", "first"}, {"split", false}};
  Tokenizer t = Parse(j);
  CHECK(t.Encode("hello world!") == Ids{1, 271, 276, 36});
  // "first": no ▁ after an added token.
  CHECK(t.Encode("hello</s>world", false) == Ids{271, 2, 264, 273, 275});
  j["pre_tokenizer"]["split"] = true;
  CHECK(Parse(j).Encode("hello world!") == Ids{1, 271, 276, 36});
}

TEST_CASE("tokenizer.json errors name the problem", "[tokenizer]") {
  ParseError("{not json");
  ParseError("[]");
  ParseError(R"({"model":{"type":"WordPiece","vocab":{}}})");
  CHECK(ParseError(R"({"model":{"type":"BPE","vocab":{"a":0,"b":1},"merges":["a b"]}})")
            .find("not in the vocab") != std::string::npos);
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":["ab"]}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[["a"]]}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":-1},"merges":[]}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":5},"merges":[]}})");  // holes
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[],"unk_token":"<unk>"}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":{}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"added_tokens":[{"id":1}]})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"Whitespace"}})");
  CHECK(ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},)"
                   R"("pre_tokenizer":{"type":"Split","pattern":{"Regex":"\\w+"}}})")
            .find("Split") != std::string::npos);
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"normalizer":{"type":"Lowercase"}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[],"continuing_subword_prefix":"##"}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"post_processor":)"
             R"({"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>"}}],"special_tokens":{}}})");
  ParseError(R"({"model":{"type":"BPE","vocab":{"a":0},"merges":[]},"pre_tokenizer":{"type":"ByteLevel","use_regex":"yes"}})");
  // Every truncation of a valid file fails cleanly.
  std::string text = SentencePieceJson().dump();
  for (size_t cut = 0; cut < text.size(); cut += 7) {
    auto t = Tokenizer::FromJson(text.substr(0, cut), "tok.json");
    REQUIRE_FALSE(t.ok());
  }
}

TEST_CASE("MakeByteLevelTokenizerJson writes a valid, deterministic tokenizer", "[tokenizer]") {
  const char* corpus = "the cat sat on the mat. the cat ate.";
  std::string text = MakeByteLevelTokenizerJson(corpus, 10);
  CHECK(text == MakeByteLevelTokenizerJson(corpus, 10));
  json j = json::parse(text);
  // "at" occurs 5 times (cat x2, sat, mat, ate): the most frequent pair.
  CHECK(j["model"]["merges"][0] == json({"a", "t"}));
  Tokenizer t = Parse(j);
  CHECK(t.vocab_size() == 256 + 10 + 2);
  CHECK(t.bos_id() == 266);
  CHECK(t.eos_id() == 267);
  auto ids = t.Encode(corpus);
  CHECK(ids.front() == 266);
  CHECK(ids.size() < std::string(corpus).size() / 2);
  CHECK(t.Decode(ids, true) == corpus);
  std::string other = "unseen wörds 123 <|end_of_text|>";
  CHECK(t.Decode(t.Encode(other, false)) == other);
  CHECK(t.Encode("<|end_of_text|>", false) == Ids{267});
}

}  // namespace pcfarm
