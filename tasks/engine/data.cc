#include "tasks/engine/data.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "base/file.h"

namespace pcfarm {
namespace {

using nlohmann::json;

Status LineError(const std::string& file, int64_t line, const std::string& what) {
  return InvalidArgument(file + ":" + std::to_string(line) + ": " + what);
}

// Calls `on_line(object, line_number)` for each line of `contents`, after
// checking that it is a JSON object of sane size.
template <typename OnLine>
Status ForEachJsonLine(std::string_view contents, const std::string& file, OnLine on_line) {
  int64_t line_no = 0;
  size_t pos = 0;
  while (pos < contents.size()) {
    ++line_no;
    size_t end = contents.find('\n', pos);
    if (end == std::string_view::npos) end = contents.size();
    std::string_view line = contents.substr(pos, end - pos);
    pos = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.size() > kMaxDataLineBytes) {
      return LineError(file, line_no, "line is " + std::to_string(line.size()) +
                                          " bytes, more than the limit of " +
                                          std::to_string(kMaxDataLineBytes));
    }
    if (line.find_first_not_of(" \t") == std::string_view::npos) {
      return LineError(file, line_no, "blank line (each line must be one JSON object)");
    }
    json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return LineError(file, line_no, "not valid JSON");
    if (!j.is_object()) {
      return LineError(file, line_no, std::string("a JSON ") + j.type_name() +
                                          ", expected an object");
    }
    PCFARM_RETURN_IF_ERROR(on_line(j, line_no));
  }
  if (line_no == 0) return InvalidArgument(file + ": no lines (the file is empty)");
  return Status::Ok();
}

// `*out` = j[key] when it is a string; an error naming the field otherwise.
Status GetString(const json& j, const char* key, const std::string& file, int64_t line,
                 std::string* out) {
  auto it = j.find(key);
  if (it == j.end()) return LineError(file, line, std::string("missing \"") + key + "\"");
  if (!it->is_string()) {
    return LineError(file, line, std::string("\"") + key + "\" is a " + it->type_name() +
                                     ", expected a string");
  }
  *out = it->get<std::string>();
  return Status::Ok();
}

// `need_assistant`: a training example must have an assistant message; a
// prompt need not.
Status ParseMessages(const json& arr, const std::string& file, int64_t line, bool need_assistant,
                     std::vector<ChatMessage>* out) {
  if (!arr.is_array()) {
    return LineError(file, line, std::string("\"messages\" is a ") + arr.type_name() +
                                     ", expected an array");
  }
  if (arr.empty()) return LineError(file, line, "\"messages\" is empty");
  bool any_assistant = false;
  for (size_t i = 0; i < arr.size(); ++i) {
    const json& m = arr[i];
    const std::string where = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) {
      return LineError(file, line, where + " is a " + m.type_name() + ", expected an object");
    }
    ChatMessage msg;
    Status s = GetString(m, "role", file, line, &msg.role);
    if (s.ok()) s = GetString(m, "content", file, line, &msg.content);
    if (!s.ok()) {
      // Re-word "FILE:LINE: missing "role"" as "FILE:LINE: messages[i]: ...".
      const std::string prefix = file + ":" + std::to_string(line) + ": ";
      return LineError(file, line, where + ": " + s.message().substr(prefix.size()));
    }
    if (msg.role != "system" && msg.role != "user" && msg.role != "assistant") {
      return LineError(file, line, where + ": role \"" + msg.role +
                                       "\" is not system, user or assistant");
    }
    any_assistant |= msg.role == "assistant";
    out->push_back(std::move(msg));
  }
  if (need_assistant && !any_assistant) {
    return LineError(file, line, "\"messages\" has no assistant message");
  }
  return Status::Ok();
}

Status ParseExample(const json& j, const std::string& file, int64_t line, Example* ex) {
  const bool has_text = j.contains("text");
  const bool has_pc = j.contains("prompt") || j.contains("completion");
  const bool has_messages = j.contains("messages");
  if (int(has_text) + int(has_pc) + int(has_messages) != 1) {
    return LineError(file, line,
                     has_text || has_pc || has_messages
                         ? "more than one kind of example (use only one of \"text\", "
                           "\"prompt\"+\"completion\", \"messages\")"
                         : "no \"text\", \"prompt\"+\"completion\" or \"messages\"");
  }
  ex->line = line;
  if (has_text) {
    ex->kind = ExampleKind::kText;
    PCFARM_RETURN_IF_ERROR(GetString(j, "text", file, line, &ex->text));
    if (ex->text.empty()) return LineError(file, line, "\"text\" is empty");
  } else if (has_pc) {
    ex->kind = ExampleKind::kPromptCompletion;
    PCFARM_RETURN_IF_ERROR(GetString(j, "prompt", file, line, &ex->prompt));
    PCFARM_RETURN_IF_ERROR(GetString(j, "completion", file, line, &ex->completion));
    if (ex->completion.empty()) return LineError(file, line, "\"completion\" is empty");
  } else {
    ex->kind = ExampleKind::kMessages;
    PCFARM_RETURN_IF_ERROR(
        ParseMessages(j["messages"], file, line, /*need_assistant=*/true, &ex->messages));
  }
  return Status::Ok();
}

void Append(const std::vector<int32_t>& ids, float weight, TokenSequence* seq) {
  seq->tokens.insert(seq->tokens.end(), ids.begin(), ids.end());
  seq->weights.insert(seq->weights.end(), ids.size(), weight);
}

}  // namespace

Result<std::vector<Example>> ParseExamplesJsonl(std::string_view contents,
                                                const std::string& display_name) {
  std::vector<Example> out;
  PCFARM_RETURN_IF_ERROR(
      ForEachJsonLine(contents, display_name, [&](const json& j, int64_t line) -> Status {
        Example ex;
        PCFARM_RETURN_IF_ERROR(ParseExample(j, display_name, line, &ex));
        out.push_back(std::move(ex));
        return Status::Ok();
      }));
  return out;
}

Result<std::vector<Example>> ReadExamplesJsonl(const std::string& path) {
  auto contents = ReadFile(path, kMaxDataFileBytes);
  if (!contents.ok()) return contents.status().WithContext(path);
  return ParseExamplesJsonl(*contents, path);
}

std::string RenderChatPrompt(const std::vector<ChatMessage>& messages) {
  // The pieces TokenizeExample encodes for kMessages, concatenated.
  std::string out;
  for (const ChatMessage& m : messages) out += "<|" + m.role + "|>\n" + m.content + "\n";
  return out + "<|assistant|>\n";
}

Result<std::vector<std::string>> ParsePromptsJsonl(std::string_view contents,
                                                   const std::string& display_name) {
  std::vector<std::string> out;
  PCFARM_RETURN_IF_ERROR(
      ForEachJsonLine(contents, display_name, [&](const json& j, int64_t line) -> Status {
        const bool has_prompt = j.contains("prompt"), has_messages = j.contains("messages");
        if (has_prompt && has_messages) {
          return LineError(display_name, line, "both \"prompt\" and \"messages\" (give one)");
        }
        if (has_messages) {
          std::vector<ChatMessage> messages;
          PCFARM_RETURN_IF_ERROR(ParseMessages(j["messages"], display_name, line,
                                               /*need_assistant=*/false, &messages));
          out.push_back(RenderChatPrompt(messages));
          return Status::Ok();
        }
        if (!has_prompt) return LineError(display_name, line, "missing \"prompt\" or \"messages\"");
        std::string prompt;
        PCFARM_RETURN_IF_ERROR(GetString(j, "prompt", display_name, line, &prompt));
        if (prompt.empty()) return LineError(display_name, line, "\"prompt\" is empty");
        out.push_back(std::move(prompt));
        return Status::Ok();
      }));
  return out;
}

Result<std::vector<std::string>> ReadPromptsJsonl(const std::string& path) {
  auto contents = ReadFile(path, kMaxDataFileBytes);
  if (!contents.ok()) return contents.status().WithContext(path);
  return ParsePromptsJsonl(*contents, path);
}

TokenSequence TokenizeExample(const Example& example, const Tokenizer& tokenizer,
                              int32_t eos_id, int64_t max_tokens, bool* truncated) {
  assert(max_tokens >= 1);
  TokenSequence seq;
  const std::vector<int32_t> eos = eos_id >= 0 ? std::vector<int32_t>{eos_id}
                                               : std::vector<int32_t>{};
  switch (example.kind) {
    case ExampleKind::kText:
      Append(tokenizer.Encode(example.text, true), 1.0f, &seq);
      break;
    case ExampleKind::kPromptCompletion:
      Append(tokenizer.prefix_ids(), 0.0f, &seq);
      Append(tokenizer.Encode(example.prompt, false), 0.0f, &seq);
      Append(tokenizer.Encode(example.completion, false), 1.0f, &seq);
      Append(eos, 1.0f, &seq);
      break;
    case ExampleKind::kMessages:
      Append(tokenizer.prefix_ids(), 0.0f, &seq);
      for (const ChatMessage& m : example.messages) {
        const float w = m.role == "assistant" ? 1.0f : 0.0f;
        Append(tokenizer.Encode("<|" + m.role + "|>\n", false), 0.0f, &seq);
        Append(tokenizer.Encode(m.content + "\n", false), w, &seq);
      }
      Append(eos, example.messages.back().role == "assistant" ? 1.0f : 0.0f, &seq);
      break;
  }
  // Nothing predicts the first token.
  if (!seq.weights.empty()) seq.weights[0] = 0.0f;
  *truncated = int64_t(seq.tokens.size()) > max_tokens;
  if (*truncated) {
    seq.tokens.resize(size_t(max_tokens));
    seq.weights.resize(size_t(max_tokens));
  }
  return seq;
}

TokenizedData TokenizeExamples(const std::vector<Example>& examples, const Tokenizer& tokenizer,
                               int32_t eos_id, int64_t max_tokens) {
  TokenizedData out;
  out.sequences.reserve(examples.size());
  for (const Example& ex : examples) {
    bool cut = false;
    TokenSequence seq = TokenizeExample(ex, tokenizer, eos_id, max_tokens, &cut);
    int64_t counted = 0;
    for (float w : seq.weights) counted += w > 0;
    out.truncated += cut;
    out.without_counted += counted == 0;
    out.counted_tokens += counted;
    out.sequences.push_back(std::move(seq));
  }
  return out;
}

std::vector<int64_t> UsableSequences(const std::vector<TokenSequence>& seqs) {
  std::vector<int64_t> out;
  for (size_t i = 0; i < seqs.size(); ++i) {
    const TokenSequence& s = seqs[i];
    bool counted = s.weights.empty() && s.tokens.size() >= 2;
    for (size_t j = 1; j < s.weights.size() && !counted; ++j) counted = s.weights[j] > 0;
    if (counted) out.push_back(int64_t(i));
  }
  return out;
}

BatchSampler::BatchSampler(std::vector<int64_t> usable, uint64_t seed)
    : usable_(std::move(usable)), rng_(seed) {}

std::vector<int64_t> BatchSampler::Next(int64_t batch) {
  assert(batch >= 1);
  std::vector<int64_t> out;
  const size_t want = std::min(size_t(batch), usable_.size());
  while (out.size() < want) {
    if (next_ == order_.size()) {  // a new pass over the data
      order_ = usable_;
      std::shuffle(order_.begin(), order_.end(), rng_);
      next_ = 0;
    }
    out.push_back(order_[next_++]);
  }
  return out;
}

}  // namespace pcfarm
