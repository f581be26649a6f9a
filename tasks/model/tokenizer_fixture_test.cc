// Our Tokenizer against fixtures made by independent references (see
// tests/fixtures/tokenizer/README.md and tools/make_tokenizer_fixtures.py):
// each style's tokenizer.json is loaded and every case's text must encode to
// the reference ids, with and without the template's specials, and decode
// back to the text where the reference round-trips.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "base/file.h"
#include "tasks/model/pretokenize.h"
#include "tasks/model/tokenizer.h"

#ifndef PCFARM_TOKENIZER_FIXTURE_DIR
#error "PCFARM_TOKENIZER_FIXTURE_DIR must name tests/fixtures/tokenizer"
#endif

namespace pcfarm {
namespace {

using nlohmann::json;
using Ids = std::vector<int32_t>;

std::string FixturePath(const std::string& style, const std::string& file) {
  return std::string(PCFARM_TOKENIZER_FIXTURE_DIR) + "/" + style + "/" + file;
}

json LoadCases(const std::string& style) {
  Result<std::string> text = ReadFile(FixturePath(style, "expected.json"), size_t(16) << 20);
  REQUIRE(text.ok());
  json j = json::parse(*text);
  REQUIRE(j.at("style") == style);
  REQUIRE(j.at("cases").size() >= 40);
  return j.at("cases");
}

Tokenizer LoadTokenizer(const std::string& style) {
  Result<Tokenizer> t = Tokenizer::Load(FixturePath(style, "tokenizer.json"));
  INFO(t.status().ToString());
  REQUIRE(t.ok());
  return std::move(*t);
}

std::string Show(const Ids& ids) {
  std::ostringstream s;
  s << "[";
  for (size_t i = 0; i < ids.size(); ++i) s << (i ? ", " : "") << ids[i];
  s << "]";
  return s.str();
}

// Checks one case; returns whether everything matched.
bool CheckCase(const Tokenizer& tok, const json& c, std::optional<SplitRegex> regex) {
  const std::string name = c.at("name");
  const std::string text = c.at("text");
  const Ids ids = c.at("ids").get<Ids>();
  const Ids with_special = c.at("ids_with_special").get<Ids>();
  INFO("case " << name << ": " << json(text).dump());
  bool ok = true;
  Ids got = tok.Encode(text, false);
  INFO("Encode(text, false) = " << Show(got) << ", reference " << Show(ids));
  CHECK(got == ids);
  ok = ok && got == ids;
  Ids got_special = tok.Encode(text, true);
  INFO("Encode(text, true) = " << Show(got_special) << ", reference " << Show(with_special));
  CHECK(got_special == with_special);
  ok = ok && got_special == with_special;
  if (regex && c.contains("pre_tokens")) {
    std::vector<std::string> pieces;
    for (std::string_view p : SplitWithRegex(*regex, text)) pieces.emplace_back(p);
    INFO("SplitWithRegex = " << json(pieces).dump() << ", reference " << c["pre_tokens"].dump());
    CHECK(pieces == c["pre_tokens"].get<std::vector<std::string>>());
    ok = ok && pieces == c["pre_tokens"].get<std::vector<std::string>>();
  }
  if (c.at("round_trip").get<bool>()) {
    std::string back = tok.Decode(ids);
    INFO("Decode(ids) = " << json(back).dump());
    CHECK(back == text);
    ok = ok && back == text;
    if (!c.at("has_added").get<bool>()) {
      std::string skipped = tok.Decode(with_special, /*skip_special=*/true);
      INFO("Decode(ids_with_special, skip_special) = " << json(skipped).dump());
      CHECK(skipped == text);
      ok = ok && skipped == text;
    }
  }
  return ok;
}

// Runs every case of `style`. (Were a case to disagree with its reference
// for a known reason, it would move to its own [!mayfail] test case; none
// does.)
void RunStyle(const std::string& style, std::optional<SplitRegex> regex) {
  Tokenizer tok = LoadTokenizer(style);
  json cases = LoadCases(style);
  int passed = 0;
  for (const json& c : cases)
    if (CheckCase(tok, c, regex)) ++passed;
  WARN(style << ": " << passed << "/" << cases.size() << " cases pass");
}

TEST_CASE("tokenizer fixture: GPT-2 byte-level BPE", "[tokenizer][fixture]") {
  RunStyle("gpt2", SplitRegex::kGpt2);
}

TEST_CASE("tokenizer fixture: Llama-3 byte-level BPE", "[tokenizer][fixture]") {
  RunStyle("llama3", SplitRegex::kLlama3);
}

TEST_CASE("tokenizer fixture: SentencePiece BPE with byte fallback", "[tokenizer][fixture]") {
  RunStyle("sp_llama2", std::nullopt);
}

TEST_CASE("tokenizer fixture: the fixtures' own vocab facts", "[tokenizer][fixture]") {
  Tokenizer gpt2 = LoadTokenizer("gpt2");
  CHECK(gpt2.byte_level());
  CHECK(gpt2.prefix_ids().empty());
  CHECK(gpt2.IsSpecial(gpt2.TokenId("<|endoftext|>")));
  CHECK(gpt2.TokenString(0) == "!");  // GPT-2 vocab order: printable bytes first

  Tokenizer llama3 = LoadTokenizer("llama3");
  CHECK(llama3.byte_level());
  CHECK(llama3.bos_id() == llama3.TokenId("<|begin_of_text|>"));
  CHECK(llama3.prefix_ids() == Ids{llama3.bos_id()});
  // Reachable only through ignore_merges: no merge sequence builds it.
  int32_t word = llama3.TokenId("supercalifragilisticexpialidocious");
  REQUIRE(word >= 0);
  CHECK(llama3.Encode("supercalifragilisticexpialidocious", false) == Ids{word});

  Tokenizer sp = LoadTokenizer("sp_llama2");
  CHECK_FALSE(sp.byte_level());
  CHECK(sp.bos_id() == 1);
  CHECK(sp.TokenString(3) == "<0x00>");
  CHECK(sp.TokenString(3 + 0x0A) == "<0x0A>");
}

TEST_CASE("tokenizer fixture: damaged fixture files are refused", "[tokenizer][fixture]") {
  for (const char* style : {"gpt2", "llama3", "sp_llama2"}) {
    INFO(style);
    Result<std::string> text = ReadFile(FixturePath(style, "tokenizer.json"), size_t(16) << 20);
    REQUIRE(text.ok());
    CHECK_FALSE(Tokenizer::FromJson(text->substr(0, text->size() / 2), style).ok());
    CHECK_FALSE(Tokenizer::FromJson("", style).ok());
    json j = json::parse(*text);
    json bad_merge = j;
    bad_merge["model"]["merges"].push_back(std::string("no_such_token another_missing"));
    CHECK_FALSE(Tokenizer::FromJson(bad_merge.dump(), style).ok());
    json bad_template = j;
    bad_template["post_processor"] = {
        {"type", "TemplateProcessing"},
        {"single", json::array({{{"SpecialToken", {{"id", "<nope>"}, {"type_id", 0}}}}})},
        {"special_tokens", json::object()}};
    CHECK_FALSE(Tokenizer::FromJson(bad_template.dump(), style).ok());
    json bad_id = j;
    bad_id["added_tokens"][0]["id"] = -5;
    CHECK_FALSE(Tokenizer::FromJson(bad_id.dump(), style).ok());
  }
}

}  // namespace
}  // namespace pcfarm
