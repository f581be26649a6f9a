#include "tasks/model/tokenizer.h"

#include <algorithm>
#include <cstdio>
#include <map>
#include <nlohmann/json.hpp>
#include <queue>

#include "base/file.h"
#include "tasks/model/gguf.h"

namespace pcfarm {
namespace {

using nlohmann::json;

constexpr std::string_view kSpaceMark = "\xe2\x96\x81";  // U+2581 '▁'

// GPT-2's bytes_to_unicode: printable bytes map to themselves, the others to
// U+0100 onwards in byte order.
const std::array<uint32_t, 256>& ByteToCodepoint() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    uint32_t n = 0;
    for (uint32_t b = 0; b < 256; ++b) {
      bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
      t[b] = printable ? b : 256 + n++;
    }
    return t;
  }();
  return table;
}

// Inverse of ByteToCodepoint; -1 for other code points.
int CodepointToByte(uint32_t cp) {
  static const std::array<int16_t, 324> table = [] {
    std::array<int16_t, 324> t;
    t.fill(-1);
    for (int b = 0; b < 256; ++b) t[ByteToCodepoint()[b]] = int16_t(b);
    return t;
  }();
  return cp < table.size() ? table[cp] : -1;
}

std::string ByteChars(std::string_view bytes) {
  std::string out;
  for (char c : bytes) AppendUtf8(ByteToCodepoint()[uint8_t(c)], &out);
  return out;
}

std::string ByteTokenName(int b) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "<0x%02X>", b);
  return buf;
}

// Byte value of a "<0xNN>" token, or -1.
int ByteTokenValue(const std::string& t) {
  if (t.size() != 6 || t.compare(0, 3, "<0x") != 0 || t[5] != '>') return -1;
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -100;
  };
  int v = hex(t[3]) * 16 + hex(t[4]);
  return v < 0 ? -1 : v;
}

std::string TypeOf(const json& j) {
  auto t = j.is_object() ? j.find("type") : j.end();
  return t != j.end() && t->is_string() ? t->get<std::string>() : "";
}

// Splits each piece into digit runs (or single digits) and the rest.
std::vector<std::string_view> SplitDigits(std::string_view s, bool individual) {
  std::vector<std::string_view> out;
  size_t start = 0, pos = 0;
  auto digit = [&](size_t i) { return s[i] >= '0' && s[i] <= '9'; };
  while (pos < s.size()) {
    if (digit(pos)) {
      if (pos > start) out.push_back(s.substr(start, pos - start));
      size_t end = pos + 1;
      if (!individual) while (end < s.size() && digit(end)) ++end;
      out.push_back(s.substr(pos, end - pos));
      start = pos = end;
    } else {
      ++pos;
    }
  }
  if (pos > start) out.push_back(s.substr(start, pos - start));
  return out;
}

}  // namespace

int32_t Tokenizer::AddToken(const std::string& token) {
  int32_t id = int32_t(id_to_token_.size());
  id_to_token_.push_back(token);
  token_to_id_.emplace(token, id);
  return id;
}

Status Tokenizer::ParseNormalizer(const json& n, const std::string& src) {
  if (n.is_null()) return Status::Ok();
  std::string type = TypeOf(n);
  if (type == "Sequence") {
    auto it = n.find("normalizers");
    if (it == n.end() || !it->is_array()) return InvalidArgument(src + ": normalizer Sequence without normalizers");
    for (const json& sub : *it) PCFARM_RETURN_IF_ERROR(ParseNormalizer(sub, src));
    return Status::Ok();
  }
  if (type == "Prepend" && n.value("prepend", "") == kSpaceMark) {
    prepend_ = Prepend::kAlways;
    return Status::Ok();
  }
  if (type == "Replace" && n.contains("pattern") && n["pattern"].is_object() &&
      n["pattern"].value("String", "") == " " && n.value("content", "") == kSpaceMark) {
    replace_spaces_ = true;
    return Status::Ok();
  }
  if (type == "NFC") return Status::Ok();
  return InvalidArgument(src + ": normalizer " + n.dump() + " is not supported");
}

Status Tokenizer::ParsePreTokenizer(const json& p, const std::string& src) {
  if (p.is_null()) return Status::Ok();
  std::string type = TypeOf(p);
  if (type == "Sequence") {
    auto it = p.find("pretokenizers");
    if (it == p.end() || !it->is_array()) return InvalidArgument(src + ": pre_tokenizer Sequence without pretokenizers");
    for (const json& sub : *it) PCFARM_RETURN_IF_ERROR(ParsePreTokenizer(sub, src));
    return Status::Ok();
  }
  if (type == "ByteLevel") {
    byte_level_ = true;
    add_prefix_space_ = p.value("add_prefix_space", false);
    if (p.value("use_regex", true)) pre_steps_.push_back({false, false, SplitRegex::kGpt2});
    return Status::Ok();
  }
  if (type == "Split") {
    std::string pattern;
    if (p.contains("pattern") && p["pattern"].is_object() && p["pattern"].contains("Regex") &&
        p["pattern"]["Regex"].is_string())
      pattern = p["pattern"]["Regex"].get<std::string>();
    auto regex = SplitRegexFromPattern(pattern);
    if (!regex || p.value("invert", false) || p.value("behavior", "Isolated") != "Isolated")
      return InvalidArgument(src + ": Split pre-tokenizer " + p.dump() +
                             " is not supported (GPT-2, Llama-3 and Qwen2 regexes only)");
    pre_steps_.push_back({false, false, *regex});
    return Status::Ok();
  }
  if (type == "Digits") {
    pre_steps_.push_back({true, p.value("individual_digits", false), SplitRegex::kGpt2});
    return Status::Ok();
  }
  if (type == "Metaspace") {
    if (p.value("replacement", std::string(kSpaceMark)) != kSpaceMark)
      return InvalidArgument(src + ": Metaspace replacement other than '▁' is not supported");
    replace_spaces_ = true;
    prepend_if_missing_ = true;
    std::string scheme = p.value("prepend_scheme", p.value("add_prefix_space", true) ? "always" : "never");
    prepend_ = scheme == "first" ? Prepend::kFirst : scheme == "never" ? Prepend::kNever : Prepend::kAlways;
    metaspace_split_ = p.value("split", true);
    return Status::Ok();
  }
  return InvalidArgument(src + ": pre_tokenizer " + p.dump() + " is not supported");
}

Status Tokenizer::ParsePostProcessor(const json& p, const std::string& src) {
  if (p.is_null()) return Status::Ok();
  std::string type = TypeOf(p);
  if (type == "Sequence") {
    auto it = p.find("processors");
    if (it == p.end() || !it->is_array()) return InvalidArgument(src + ": post_processor Sequence without processors");
    for (const json& sub : *it) PCFARM_RETURN_IF_ERROR(ParsePostProcessor(sub, src));
    return Status::Ok();
  }
  if (type == "ByteLevel") return Status::Ok();
  if (type != "TemplateProcessing")
    return InvalidArgument(src + ": post_processor " + type + " is not supported");
  auto single = p.find("single");
  auto specials = p.find("special_tokens");
  if (single == p.end() || !single->is_array() || specials == p.end() || !specials->is_object())
    return InvalidArgument(src + ": TemplateProcessing without single/special_tokens");
  bool before = true;
  for (const json& item : *single) {
    if (item.contains("Sequence")) {
      before = false;
      continue;
    }
    if (!item.contains("SpecialToken") || !item["SpecialToken"].is_object())
      return InvalidArgument(src + ": TemplateProcessing item " + item.dump() + " is not understood");
    std::string name = item["SpecialToken"].value("id", "");
    auto st = specials->find(name);
    if (st == specials->end() || !st->is_object() || !st->contains("ids") || !(*st)["ids"].is_array())
      return InvalidArgument(src + ": TemplateProcessing special token " + name + " is not defined");
    for (const json& id : (*st)["ids"]) {
      if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() >= vocab_size())
        return InvalidArgument(src + ": TemplateProcessing special token " + name + " has a bad id");
      (before ? prefix_ids_ : suffix_ids_).push_back(int32_t(id.get<int64_t>()));
    }
  }
  return Status::Ok();
}

Result<Tokenizer> Tokenizer::FromJson(const std::string& text, const std::string& src) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    return InvalidArgument(src + ": not valid JSON: " + e.what());
  }
  try {
    if (!j.is_object()) return InvalidArgument(src + ": not a JSON object");
    auto model = j.find("model");
    if (model == j.end() || !model->is_object())
      return InvalidArgument(src + ": missing object model");
    std::string mtype = TypeOf(*model);
    if (mtype != "BPE" && !(mtype.empty() && model->contains("merges")))
      return InvalidArgument(src + ": model type " + mtype + " is not supported (BPE only)");
    auto vocab = model->find("vocab");
    if (vocab == model->end() || !vocab->is_object())
      return InvalidArgument(src + ": model.vocab is not an object");
    constexpr int64_t kMaxVocab = 1 << 24;
    Tokenizer t;
    auto place = [&](const std::string& tok, const json& id_json, const std::string& what) -> Status {
      if (!id_json.is_number_integer() || id_json.get<int64_t>() < 0 ||
          id_json.get<int64_t>() >= kMaxVocab)
        return InvalidArgument(src + ": " + what + " '" + tok + "' has a bad id");
      size_t id = size_t(id_json.get<int64_t>());
      if (id >= t.id_to_token_.size()) t.id_to_token_.resize(id + 1);
      t.id_to_token_[id] = tok;
      t.token_to_id_[tok] = int32_t(id);
      return Status::Ok();
    };
    for (auto& [tok, id] : vocab->items()) PCFARM_RETURN_IF_ERROR(place(tok, id, "model.vocab token"));
    t.special_.assign(t.id_to_token_.size(), false);
    if (auto added = j.find("added_tokens"); added != j.end() && !added->is_null()) {
      if (!added->is_array()) return InvalidArgument(src + ": added_tokens is not an array");
      for (const json& a : *added) {
        if (!a.is_object() || !a.contains("content") || !a["content"].is_string() || !a.contains("id"))
          return InvalidArgument(src + ": added_tokens entry " + a.dump() + " lacks id/content");
        std::string content = a["content"].get<std::string>();
        if (content.empty()) return InvalidArgument(src + ": added_tokens entry with empty content");
        PCFARM_RETURN_IF_ERROR(place(content, a["id"], "added token"));
        int32_t id = int32_t(a["id"].get<int64_t>());
        t.added_.push_back({content, id, a.value("special", false)});
      }
    }
    for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
      if (model->contains(key) && !(*model)[key].is_null() && (*model)[key] != "")
        return InvalidArgument(src + ": model." + key + " is not supported");
    t.byte_fallback_ = model->value("byte_fallback", false);
    t.fuse_unk_ = model->value("fuse_unk", false);
    t.ignore_merges_ = model->value("ignore_merges", false);
    if (auto unk = model->find("unk_token"); unk != model->end() && unk->is_string()) {
      auto it = t.token_to_id_.find(unk->get<std::string>());
      if (it == t.token_to_id_.end())
        return InvalidArgument(src + ": unk_token " + unk->get<std::string>() + " is not in the vocab");
      t.unk_id_ = it->second;
    }
    auto merges = model->find("merges");
    if (merges == model->end() || !merges->is_array())
      return InvalidArgument(src + ": model.merges is not an array");
    int32_t rank = 0;
    for (const json& m : *merges) {
      std::string a, b;
      if (m.is_string()) {
        std::string s = m.get<std::string>();
        size_t sp = s.find(' ');
        if (sp == std::string::npos || sp == 0 || sp + 1 == s.size() || s.find(' ', sp + 1) != std::string::npos)
          return InvalidArgument(src + ": merge " + std::to_string(rank) + " '" + s + "' is not 'a b'");
        a = s.substr(0, sp);
        b = s.substr(sp + 1);
      } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
        a = m[0].get<std::string>();
        b = m[1].get<std::string>();
      } else {
        return InvalidArgument(src + ": merge " + std::to_string(rank) + " is neither 'a b' nor [a, b]");
      }
      int32_t ia = t.TokenId(a), ib = t.TokenId(b), im = t.TokenId(a + b);
      if (ia < 0 || ib < 0 || im < 0)
        return InvalidArgument(src + ": merge " + std::to_string(rank) + " (" + a + " " + b +
                               ") uses a token that is not in the vocab");
      t.merges_.emplace((uint64_t(uint32_t(ia)) << 32) | uint32_t(ib), Merge{rank, im});
      ++rank;
    }
    for (size_t i = 0; i < t.id_to_token_.size(); ++i)
      if (t.id_to_token_[i].empty()) return InvalidArgument(src + ": no token has id " + std::to_string(i));
    PCFARM_RETURN_IF_ERROR(t.ParseNormalizer(j.value("normalizer", json()), src));
    PCFARM_RETURN_IF_ERROR(t.ParsePreTokenizer(j.value("pre_tokenizer", json()), src));
    PCFARM_RETURN_IF_ERROR(t.ParsePostProcessor(j.value("post_processor", json()), src));
    t.Finish();
    return t;
  } catch (const json::exception& e) {
    // A field of an unexpected JSON type that value()/[] refused.
    return InvalidArgument(src + ": unexpected JSON structure: " + e.what());
  }
}

Result<Tokenizer> Tokenizer::Load(const std::string& path) {
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path, size_t(256) << 20));
  return FromJson(text, path);
}

void Tokenizer::Finish() {
  special_.assign(id_to_token_.size(), false);
  added_id_.assign(id_to_token_.size(), false);
  for (const AddedToken& a : added_) {
    special_[a.id] = a.special;
    added_id_[a.id] = true;
  }
  std::stable_sort(added_.begin(), added_.end(), [](const AddedToken& x, const AddedToken& y) {
    return x.content.size() > y.content.size();
  });
  for (auto& bucket : added_by_first_byte_) bucket.clear();
  for (size_t i = 0; i < added_.size(); ++i)
    if (!added_[i].content.empty()) added_by_first_byte_[uint8_t(added_[i].content[0])].push_back(uint32_t(i));
  for (int b = 0; b < 256; ++b) {
    byte_ids_[b] = TokenId(ByteTokenName(b));
    byte_char_ids_[b] = TokenId(ByteChars(std::string(1, char(b))));
  }
  auto first_of = [&](std::initializer_list<const char*> names) {
    for (const char* n : names)
      if (int32_t id = TokenId(n); id >= 0) return id;
    return int32_t(-1);
  };
  if (bos_id_ < 0) bos_id_ = !prefix_ids_.empty() ? prefix_ids_[0] : first_of({"<s>", "<|begin_of_text|>"});
  if (eos_id_ < 0)
    eos_id_ = !suffix_ids_.empty() ? suffix_ids_.back()
                                   : first_of({"</s>", "<|end_of_text|>", "<|endoftext|>"});
}

int32_t Tokenizer::TokenId(std::string_view token) const {
  auto it = token_to_id_.find(std::string(token));
  return it == token_to_id_.end() ? -1 : it->second;
}

const std::string& Tokenizer::TokenString(int32_t id) const {
  static const std::string kEmpty;
  return id >= 0 && id < vocab_size() ? id_to_token_[id] : kEmpty;
}

bool Tokenizer::IsSpecial(int32_t id) const {
  return id >= 0 && size_t(id) < special_.size() && special_[id];
}

bool Tokenizer::FindMerge(int32_t a, int32_t b, double* priority, int32_t* merged) const {
  if (use_scores_) {
    int32_t id = TokenId(id_to_token_[a] + id_to_token_[b]);
    if (id < 0) return false;
    *priority = -double(scores_[id]);
    *merged = id;
    return true;
  }
  auto it = merges_.find((uint64_t(uint32_t(a)) << 32) | uint32_t(b));
  if (it == merges_.end()) return false;
  *priority = it->second.rank;
  *merged = it->second.merged;
  return true;
}

void Tokenizer::Bpe(std::vector<int32_t> ids, std::vector<int32_t>* out) const {
  const int n = int(ids.size());
  if (n == 0) return;
  std::vector<int> prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    double priority;
    int left, right;
    int32_t a, b, merged;
  };
  auto later = [](const Candidate& x, const Candidate& y) {
    return x.priority != y.priority ? x.priority > y.priority : x.left > y.left;
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(later)> heap(later);
  std::vector<bool> alive(n, true);
  auto push = [&](int left) {
    int right = next[left];
    double p;
    int32_t m;
    if (right >= 0 && FindMerge(ids[left], ids[right], &p, &m))
      heap.push({p, left, right, ids[left], ids[right], m});
  };
  for (int i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    Candidate c = heap.top();
    heap.pop();
    if (!alive[c.left] || !alive[c.right] || next[c.left] != c.right ||
        ids[c.left] != c.a || ids[c.right] != c.b)
      continue;  // stale: one side has merged since
    ids[c.left] = c.merged;
    alive[c.right] = false;
    next[c.left] = next[c.right];
    if (next[c.right] >= 0) prev[next[c.right]] = c.left;
    if (prev[c.left] >= 0) push(prev[c.left]);
    push(c.left);
  }
  for (int i = 0; i >= 0; i = next[i]) out->push_back(ids[i]);
}

void Tokenizer::EncodeSegment(std::string_view text, bool first,
                              std::vector<int32_t>* out) const {
  if (text.empty()) return;
  auto emit_word = [&](std::string_view word, std::vector<int32_t> symbols) {
    if (ignore_merges_) {
      if (int32_t id = TokenId(word); id >= 0) {
        out->push_back(id);
        return;
      }
    }
    Bpe(std::move(symbols), out);
  };
  if (byte_level_) {
    std::string s(text);
    if (add_prefix_space_ && s[0] != ' ') s.insert(0, " ");
    std::vector<std::string_view> pieces{s};
    for (const PreStep& step : pre_steps_) {
      std::vector<std::string_view> next;
      for (std::string_view p : pieces) {
        auto parts = step.digits ? SplitDigits(p, step.individual) : SplitWithRegex(step.regex, p);
        next.insert(next.end(), parts.begin(), parts.end());
      }
      pieces = std::move(next);
    }
    for (std::string_view p : pieces) {
      std::string mapped = ByteChars(p);
      std::vector<int32_t> symbols;
      for (char c : p) {
        int32_t id = byte_char_ids_[uint8_t(c)];
        if (id < 0) id = unk_id_;
        if (id >= 0) symbols.push_back(id);
      }
      emit_word(mapped, std::move(symbols));
    }
    return;
  }
  // SentencePiece-style.
  std::string s;
  if (replace_spaces_) {
    for (char c : text) {
      if (c == ' ') s += kSpaceMark;
      else s.push_back(c);
    }
  } else {
    s = text;
  }
  bool prepend = prepend_ == Prepend::kAlways || (prepend_ == Prepend::kFirst && first);
  if (prepend && !(prepend_if_missing_ && s.rfind(kSpaceMark, 0) == 0)) s.insert(0, kSpaceMark);
  std::vector<std::string_view> pieces;
  std::string_view sv = s;
  if (metaspace_split_) {
    size_t start = 0;
    for (size_t pos = sv.find(kSpaceMark, 1); pos != std::string_view::npos;
         pos = sv.find(kSpaceMark, pos + 1)) {
      pieces.push_back(sv.substr(start, pos - start));
      start = pos;
    }
    pieces.push_back(sv.substr(start));
  } else {
    pieces.push_back(sv);
  }
  for (std::string_view p : pieces) {
    std::vector<int32_t> symbols;
    bool last_unk = false;
    for (size_t pos = 0; pos < p.size();) {
      size_t len;
      DecodeUtf8(p, pos, &len);
      std::string_view ch = p.substr(pos, len);
      pos += len;
      int32_t id = TokenId(ch);
      if (id >= 0) {
        symbols.push_back(id);
        last_unk = false;
        continue;
      }
      bool all_bytes = byte_fallback_;
      for (char c : ch) all_bytes = all_bytes && byte_ids_[uint8_t(c)] >= 0;
      if (all_bytes) {
        for (char c : ch) symbols.push_back(byte_ids_[uint8_t(c)]);
        last_unk = false;
      } else if (unk_id_ >= 0 && !(fuse_unk_ && last_unk)) {
        symbols.push_back(unk_id_);
        last_unk = true;
      }
    }
    emit_word(p, std::move(symbols));
  }
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool add_special) const {
  std::vector<int32_t> out;
  if (add_special) out = prefix_ids_;
  size_t seg_start = 0, pos = 0;
  while (pos < text.size()) {
    const AddedToken* hit = nullptr;
    for (uint32_t i : added_by_first_byte_[uint8_t(text[pos])]) {
      if (text.compare(pos, added_[i].content.size(), added_[i].content) == 0) {
        hit = &added_[i];
        break;
      }
    }
    if (hit == nullptr) {
      ++pos;
      continue;
    }
    EncodeSegment(text.substr(seg_start, pos - seg_start), seg_start == 0, &out);
    out.push_back(hit->id);
    pos += hit->content.size();
    seg_start = pos;
  }
  EncodeSegment(text.substr(seg_start), seg_start == 0, &out);
  if (add_special) out.insert(out.end(), suffix_ids_.begin(), suffix_ids_.end());
  return out;
}

std::string Tokenizer::Decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size()) continue;
    if (skip_special && special_[id]) continue;
    const std::string& tok = id_to_token_[id];
    if (added_id_[id]) {
      out += tok;
    } else if (byte_level_) {
      for (size_t pos = 0; pos < tok.size();) {
        size_t len;
        uint32_t cp = DecodeUtf8(tok, pos, &len);
        int b = CodepointToByte(cp);
        if (b >= 0) out.push_back(char(b));
        else out.append(tok, pos, len);
        pos += len;
      }
    } else if (int b = ByteTokenValue(tok); b >= 0 && byte_ids_[b] == id) {
      out.push_back(char(b));
    } else {
      for (size_t pos = 0; pos < tok.size();) {
        if (tok.compare(pos, kSpaceMark.size(), kSpaceMark) == 0) {
          out.push_back(' ');
          pos += kSpaceMark.size();
        } else {
          out.push_back(tok[pos++]);
        }
      }
    }
  }
  if (!byte_level_ && prepend_ != Prepend::kNever && !out.empty() && out[0] == ' ') out.erase(0, 1);
  return out;
}

Result<Tokenizer> Tokenizer::FromGguf(const GgufFile& g) {
  const std::string& src = g.display_name();
  PCFARM_ASSIGN_OR_RETURN(std::string model, g.GetString("tokenizer.ggml.model"));
  const GgufValue* tokens = g.Find("tokenizer.ggml.tokens");
  if (tokens == nullptr || tokens->type != GgufType::kArray || tokens->elem_type != GgufType::kString ||
      tokens->strings.empty())
    return InvalidArgument(src + ": tokenizer.ggml.tokens is missing or not an array of strings");
  const size_t n = tokens->strings.size();
  Tokenizer t;
  for (const std::string& tok : tokens->strings) {
    t.id_to_token_.push_back(tok);
    t.token_to_id_.emplace(tok, int32_t(t.id_to_token_.size() - 1));
  }
  std::vector<int64_t> types(n, 1);
  if (const GgufValue* tt = g.Find("tokenizer.ggml.token_type")) {
    if (tt->type != GgufType::kArray || tt->ints.size() != n)
      return InvalidArgument(src + ": tokenizer.ggml.token_type does not hold one integer per token");
    types = tt->ints;
  }
  for (size_t i = 0; i < n; ++i) {
    // 3 = control, 4 = user-defined: matched in the text before BPE.
    if (types[i] == 3 || types[i] == 4) t.added_.push_back({t.id_to_token_[i], int32_t(i), types[i] == 3});
    if (types[i] == 2 && t.unk_id_ < 0) t.unk_id_ = int32_t(i);
  }
  auto id_key = [&](const char* key, int32_t* out) -> Status {
    if (!g.Find(key)) return Status::Ok();
    PCFARM_ASSIGN_OR_RETURN(int64_t v, g.GetInt(key));
    if (v < 0 || uint64_t(v) >= n)
      return InvalidArgument(src + ": " + key + " = " + std::to_string(v) + " is outside the vocab");
    *out = int32_t(v);
    return Status::Ok();
  };
  PCFARM_RETURN_IF_ERROR(id_key("tokenizer.ggml.bos_token_id", &t.bos_id_));
  PCFARM_RETURN_IF_ERROR(id_key("tokenizer.ggml.eos_token_id", &t.eos_id_));
  PCFARM_RETURN_IF_ERROR(id_key("tokenizer.ggml.unknown_token_id", &t.unk_id_));
  auto flag = [&](const char* key, bool dflt) -> Result<bool> {
    if (!g.Find(key)) return dflt;
    PCFARM_ASSIGN_OR_RETURN(int64_t v, g.GetInt(key));
    return v != 0;
  };
  if (model == "llama") {
    const GgufValue* scores = g.Find("tokenizer.ggml.scores");
    if (scores == nullptr || scores->type != GgufType::kArray || scores->floats.size() != n)
      return InvalidArgument(src + ": tokenizer.ggml.scores does not hold one float per token");
    for (double s : scores->floats) t.scores_.push_back(float(s));
    t.use_scores_ = true;
    t.byte_fallback_ = true;
    t.replace_spaces_ = true;
    PCFARM_ASSIGN_OR_RETURN(bool space_prefix, flag("tokenizer.ggml.add_space_prefix", true));
    t.prepend_ = space_prefix ? Prepend::kFirst : Prepend::kNever;
  } else if (model == "gpt2") {
    t.byte_level_ = true;
    std::string pre = "default";
    if (g.Find("tokenizer.ggml.pre")) {
      PCFARM_ASSIGN_OR_RETURN(pre, g.GetString("tokenizer.ggml.pre"));
    }
    if (pre == "default" || pre == "gpt-2" || pre == "gpt2") t.pre_steps_.push_back({false, false, SplitRegex::kGpt2});
    else if (pre == "llama-bpe" || pre == "llama3") t.pre_steps_.push_back({false, false, SplitRegex::kLlama3});
    else if (pre == "qwen2") t.pre_steps_.push_back({false, false, SplitRegex::kQwen2});
    else return InvalidArgument(src + ": tokenizer.ggml.pre " + pre + " is not supported");
    const GgufValue* merges = g.Find("tokenizer.ggml.merges");
    if (merges == nullptr || merges->type != GgufType::kArray || merges->elem_type != GgufType::kString)
      return InvalidArgument(src + ": tokenizer.ggml.merges is missing or not an array of strings");
    int32_t rank = 0;
    for (const std::string& m : merges->strings) {
      size_t sp = m.find(' ', 1);
      int32_t a = -1, b = -1, merged = -1;
      if (sp != std::string::npos) {
        a = t.TokenId(m.substr(0, sp));
        b = t.TokenId(m.substr(sp + 1));
        merged = t.TokenId(m.substr(0, sp) + m.substr(sp + 1));
      }
      if (a < 0 || b < 0 || merged < 0)
        return InvalidArgument(src + ": tokenizer.ggml.merges[" + std::to_string(rank) + "] '" + m +
                               "' is not a merge of two vocab tokens");
      t.merges_.emplace((uint64_t(uint32_t(a)) << 32) | uint32_t(b), Merge{rank++, merged});
    }
  } else {
    return InvalidArgument(src + ": tokenizer.ggml.model " + model + " is not supported (llama, gpt2)");
  }
  PCFARM_ASSIGN_OR_RETURN(bool add_bos, flag("tokenizer.ggml.add_bos_token", model == "llama"));
  PCFARM_ASSIGN_OR_RETURN(bool add_eos, flag("tokenizer.ggml.add_eos_token", false));
  if (add_bos && t.bos_id_ >= 0) t.prefix_ids_ = {t.bos_id_};
  if (add_eos && t.eos_id_ >= 0) t.suffix_ids_ = {t.eos_id_};
  t.Finish();
  return t;
}

std::string MakeByteLevelTokenizerJson(std::string_view corpus, int num_merges) {
  std::vector<std::string> vocab;  // id -> token string
  std::map<std::string, int32_t> ids;
  for (int b = 0; b < 256; ++b) {
    vocab.push_back(ByteChars(std::string(1, char(b))));
    ids[vocab.back()] = b;
  }
  std::map<std::vector<int32_t>, int64_t> words;
  for (std::string_view piece : SplitWithRegex(SplitRegex::kGpt2, corpus)) {
    std::vector<int32_t> w;
    for (char c : piece) w.push_back(uint8_t(c));
    ++words[w];
  }
  json merges = json::array();
  for (int k = 0; k < num_merges; ++k) {
    std::map<std::pair<int32_t, int32_t>, int64_t> counts;
    for (const auto& [w, count] : words)
      for (size_t i = 0; i + 1 < w.size(); ++i) counts[{w[i], w[i + 1]}] += count;
    if (counts.empty()) break;
    auto best = counts.begin();  // ties: std::map order = smaller pair first
    for (auto it = counts.begin(); it != counts.end(); ++it)
      if (it->second > best->second) best = it;
    auto [a, b] = best->first;
    std::string merged = vocab[a] + vocab[b];
    auto [slot, inserted] = ids.emplace(merged, int32_t(vocab.size()));
    if (inserted) vocab.push_back(merged);
    merges.push_back({vocab[a], vocab[b]});
    std::map<std::vector<int32_t>, int64_t> next;
    for (const auto& [w, count] : words) {
      std::vector<int32_t> nw;
      for (size_t i = 0; i < w.size(); ++i) {
        if (i + 1 < w.size() && w[i] == a && w[i + 1] == b) {
          nw.push_back(slot->second);
          ++i;
        } else {
          nw.push_back(w[i]);
        }
      }
      next[nw] += count;
    }
    words = std::move(next);
  }
  const int32_t bos = int32_t(vocab.size()), eos = bos + 1;
  json vocab_json = json::object();
  for (size_t i = 0; i < vocab.size(); ++i) vocab_json[vocab[i]] = i;
  vocab_json["<|begin_of_text|>"] = bos;
  vocab_json["<|end_of_text|>"] = eos;
  auto added = [](int32_t id, const char* content) {
    return json{{"id", id}, {"content", content}, {"single_word", false}, {"lstrip", false},
                {"rstrip", false}, {"normalized", false}, {"special", true}};
  };
  json j = {
      {"version", "1.0"},
      {"truncation", nullptr},
      {"padding", nullptr},
      {"added_tokens", {added(bos, "<|begin_of_text|>"), added(eos, "<|end_of_text|>")}},
      {"normalizer", nullptr},
      {"pre_tokenizer", {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"trim_offsets", true}, {"use_regex", true}}},
      {"post_processor",
       {{"type", "TemplateProcessing"},
        {"single", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                    {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
        {"pair", {{{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 0}}}},
                  {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
                  {{"SpecialToken", {{"id", "<|begin_of_text|>"}, {"type_id", 1}}}},
                  {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
        {"special_tokens",
         {{"<|begin_of_text|>", {{"id", "<|begin_of_text|>"}, {"ids", {bos}}, {"tokens", {"<|begin_of_text|>"}}}}}}}},
      {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", true}, {"trim_offsets", true}, {"use_regex", true}}},
      {"model",
       {{"type", "BPE"}, {"dropout", nullptr}, {"unk_token", nullptr},
        {"continuing_subword_prefix", nullptr}, {"end_of_word_suffix", nullptr},
        {"fuse_unk", false}, {"byte_fallback", false}, {"ignore_merges", false},
        {"vocab", vocab_json}, {"merges", merges}}}};
  return j.dump(2) + "\n";
}

}  // namespace pcfarm
