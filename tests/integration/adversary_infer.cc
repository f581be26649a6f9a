#include "tests/integration/adversary_infer.h"

#include <cassert>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <utility>

#include "crypto/hash.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

using nlohmann::json;

namespace {

struct CheatName {
  InferCheat cheat;
  const char* name;
};
constexpr CheatName kCheatNames[] = {
    {InferCheat::kHonest, "honest"},
    {InferCheat::kRandomTokens, "random-tokens"},
    {InferCheat::kTruncated, "truncated"},
    {InferCheat::kCopied, "copied"},
    {InferCheat::kCheaperModel, "cheaper-model"},
    {InferCheat::kWrongSeed, "wrong-seed"},
    {InferCheat::kRubberStamp, "rubber-stamp"},
};

// An assertion that survives NDEBUG: a cheat that the kind's own check
// refuses would be caught by the wrong layer, and the figures would lie.
void RequireWellFormed(const std::string& kind, const std::string& params,
                       const std::string& output) {
  const TaskKind* k = TaskKindRegistry::Builtin().Find(kind);
  Status s = k ? k->ValidateOutput(params, output) : NotFound(kind);
  if (!s.ok()) {
    std::fprintf(stderr, "adversary_infer: a cheat made a malformed %s result: %s\n",
                 kind.c_str(), s.ToString().c_str());
    std::abort();
  }
}

}  // namespace

std::vector<InferCheat> AllInferCheats() {
  std::vector<InferCheat> out;
  for (const auto& c : kCheatNames) {
    if (c.cheat != InferCheat::kHonest) out.push_back(c.cheat);
  }
  return out;
}

const char* InferCheatName(InferCheat cheat) {
  for (const auto& c : kCheatNames) {
    if (c.cheat == cheat) return c.name;
  }
  return "?";
}

std::optional<InferCheat> InferCheatFromName(std::string_view name) {
  for (const auto& c : kCheatNames) {
    if (name == c.name) return c.cheat;
  }
  return std::nullopt;
}

Result<HashedModel> HashModelDirectory(const std::string& dir) {
  HashedModel m;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir, ec)) {
    if (!e.is_regular_file()) continue;
    std::ifstream in(e.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), {});
    if (!in.good() && !in.eof()) return IoError("cannot read " + e.path().string());
    std::string hex = HashToHex(Blake2b256(bytes));
    m.files[e.path().filename().string()] = hex;
    m.paths[hex] = e.path().string();
  }
  if (ec) return IoError("cannot list " + dir + ": " + ec.message());
  if (m.paths.empty()) return InvalidArgument(dir + " holds no files");
  return m;
}

BlobPathFn BlobPathWithModel(HashedModel model, BlobPathFn fallback) {
  return [model = std::move(model), fallback = std::move(fallback)](
             std::string_view hex) -> Result<std::string> {
    auto it = model.paths.find(std::string(hex));
    if (it != model.paths.end()) return it->second;
    if (!fallback) return NotFound("blob " + std::string(hex));
    return fallback(hex);
  };
}

InferAdversary::InferAdversary(SimWorker* worker, InferAdversaryOptions options)
    : worker_(worker), options_(std::move(options)), rng_(options_.seed) {
  if (options_.cheat == InferCheat::kRubberStamp) options_.rubber_stamp_checks = true;
}

Result<int> InferAdversary::AnswerPending() {
  int sent = 0;
  auto& pending = worker_->pending_assignments();
  while (!pending.empty()) {
    SimAssignment a = std::move(pending.front());
    pending.erase(pending.begin());
    PCFARM_RETURN_IF_ERROR(worker_->SendResult(worker_->SealResult(Answer(a))));
    PCFARM_RETURN_IF_ERROR(worker_->SendReady(1));
    ++sent;
  }
  return sent;
}

wire::ResultBody InferAdversary::Answer(const SimAssignment& a) {
  ++results_;
  wire::ResultBody body = worker_->RunAssignment(a);
  if (!body.ok()) return body;  // nothing to lie about: the kind failed
  const std::string honest = body.output();
  const std::string& kind = a.body.kind();
  json params = json::parse(a.body.params(), nullptr, false);
  if (!params.is_object()) return body;
  if (kind == "infer" && options_.cheat != InferCheat::kHonest &&
      options_.cheat != InferCheat::kRubberStamp) {
    LieInInfer(a, params, &body);
  } else if (kind == "infer_check" && options_.rubber_stamp_checks) {
    // "ok" for every prompt of the honest verdict (the claim may travel as
    // a blob, "claimed_blob": the honest run read it), its counts kept.
    json verdict = json::parse(honest, nullptr, false);
    if (!verdict.is_object() || !verdict.contains("prompts")) return body;
    for (auto& v : verdict["prompts"]) v = {{"ok", true}, {"bad_at", -1}, {"why", ""}};
    verdict["ok"] = true;
    body.set_output(verdict.dump());
  }
  if (body.output() != honest) {
    RequireWellFormed(kind, a.body.params(), body.output());
    json x = json::parse(body.output(), nullptr, false);
    json y = json::parse(honest, nullptr, false);
    // Counted as a lie when the answer differs, not merely its bytes.
    if (kind != "infer" || x.value("outputs", json()) != y.value("outputs", json())) ++lies_;
  }
  return body;
}

void InferAdversary::LieInInfer(const SimAssignment& a, const json& params,
                                wire::ResultBody* body) {
  json r = json::parse(body->output(), nullptr, false);
  if (!r.is_object() || !r.contains("outputs") || !r["outputs"].is_array()) return;
  json& outs = r["outputs"];
  const json honest_outs = outs;
  const Tokenizer* tok = TokenizerOf(params);
  switch (options_.cheat) {
    case InferCheat::kRandomTokens: {
      // Valid ids: those of the tokenizer, or up to the largest id seen.
      int32_t vocab = tok ? tok->vocab_size() : 0;
      if (vocab <= 0) {
        for (const auto& o : outs) {
          for (const auto& t : o["tokens"]) vocab = std::max(vocab, t.get<int32_t>() + 1);
        }
      }
      std::uniform_int_distribution<int32_t> id(0, std::max(vocab, 1) - 1);
      std::uniform_real_distribution<double> spread(0.5, 1.5);
      const double guess = -std::log(double(std::max(vocab, 2)));
      for (auto& o : outs) {
        json& t = o["tokens"];
        const bool stop = o["finish"] == "stop";
        for (size_t k = 0; k < t.size(); ++k) {
          if (stop && k + 1 == t.size()) break;  // the stop token stays last
          t[k] = id(rng_);
          o["logprobs"][k] = guess * spread(rng_);
        }
        o["text"] = TextOf(tok, t, o["text"].get<std::string>());
      }
      break;
    }
    case InferCheat::kTruncated:
      for (auto& o : outs) {
        json& t = o["tokens"];
        if (t.size() < 2) continue;
        size_t keep = std::uniform_int_distribution<size_t>(1, t.size() - 1)(rng_);
        t.erase(t.begin() + ptrdiff_t(keep), t.end());
        json& l = o["logprobs"];
        l.erase(l.begin() + ptrdiff_t(keep), l.end());
        o["finish"] = "stop";
        o["text"] = TextOf(tok, t, "");
      }
      break;
    case InferCheat::kCopied: {
      // Another prompt's output of this shard or the last one; one that
      // fits this shard's max_tokens and differs, where there is one.
      json pool = honest_outs;
      for (const auto& o : last_outputs_) pool.push_back(o);
      const size_t max_tokens = params.value("max_tokens", size_t(64));
      for (size_t i = 0; i < outs.size(); ++i) {
        std::vector<size_t> fit;
        for (size_t j = 0; j < pool.size(); ++j) {
          if (pool[j]["tokens"].size() <= max_tokens && pool[j]["tokens"] != outs[i]["tokens"]) {
            fit.push_back(j);
          }
        }
        if (fit.empty()) continue;
        outs[i] = pool[fit[std::uniform_int_distribution<size_t>(0, fit.size() - 1)(rng_)]];
      }
      last_outputs_ = honest_outs;
      break;
    }
    case InferCheat::kCheaperModel:
    case InferCheat::kWrongSeed: {
      json p = params;
      if (options_.cheat == InferCheat::kCheaperModel) {
        if (!options_.cheaper_model.is_object()) return;
        p["model"] = options_.cheaper_model;
      } else {
        // Its own wrong seed (adversaries with other seeds pick others).
        p["seed"] = p.value("seed", uint64_t(0)) + 1 + options_.seed % 1000003;
      }
      std::optional<std::string> out = RunWith(a, p);
      if (!out) return;
      json o = json::parse(*out, nullptr, false);
      if (!o.is_object() || !o.contains("outputs")) return;
      outs = o["outputs"];
      break;
    }
    case InferCheat::kHonest:
    case InferCheat::kRubberStamp:
      return;
  }
  body->set_output(r.dump(-1, ' ', false, json::error_handler_t::replace));
}

std::optional<std::string> InferAdversary::RunWith(const SimAssignment& a, const json& params) {
  SimAssignment b = a;  // the envelope stays: the result names the real shard
  b.body.set_params(params.dump());
  wire::ResultBody r = worker_->RunAssignment(b);
  if (!r.ok()) {
    std::fprintf(stderr, "adversary_infer: %s could not run its model: %s\n",
                 InferCheatName(options_.cheat), r.error().c_str());
    return std::nullopt;
  }
  return r.output();
}

const Tokenizer* InferAdversary::TokenizerOf(const json& params) {
  const json& model = params.value("model", json::object());
  if (!model.is_object() || !model.contains("tokenizer.json")) return nullptr;
  const std::string hash = model["tokenizer.json"].get<std::string>();
  auto it = tokenizers_.find(hash);
  if (it != tokenizers_.end()) return it->second.get();
  const BlobPathFn& blobs = worker_->options().blob_path;
  std::unique_ptr<Tokenizer> tok;
  if (blobs) {
    auto path = blobs(hash);
    if (path.ok()) {
      auto t = Tokenizer::Load(*path);
      if (t.ok()) tok = std::make_unique<Tokenizer>(std::move(t).value());
    }
  }
  return (tokenizers_[hash] = std::move(tok)).get();
}

std::string InferAdversary::TextOf(const Tokenizer* tok, const json& tokens,
                                   const std::string& fallback) const {
  if (tok == nullptr) return fallback;
  // As the infer kind writes it: non-UTF-8 bytes become U+FFFD.
  const std::string raw = tok->Decode(tokens.get<std::vector<int32_t>>(), /*skip_special=*/true);
  return json::parse(json(raw).dump(-1, ' ', false, json::error_handler_t::replace))
      .get<std::string>();
}

}  // namespace pcfarm
