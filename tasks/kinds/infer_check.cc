#include "tasks/kinds/infer_check.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <set>

#include "base/file.h"
#include "tasks/engine/llama.h"
#include "tasks/engine/sampling.h"
#include "tasks/kinds/llm_kinds_internal.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// Prompt + claimed tokens fed to one forward pass, at most (a longer
// sequence goes alone): enough rows for the products to run at full speed,
// and activations of a few hundred MB on a 100M model.
constexpr int64_t kTokensPerPass = 2048;
// The longest "why".
constexpr size_t kMaxWhyBytes = 512;
// How deep the params nest: {"claimed": [{"tokens": [...]}]}.
constexpr int kParamsDepth = 4;

std::string Format(const char* fmt, auto... args) {
  char buf[kMaxWhyBytes];
  std::snprintf(buf, sizeof buf, fmt, args...);
  return buf;
}

// `s` cut to at most `bytes` (for a message; may end mid-character, which
// the result's dump replaces).
std::string Excerpt(const std::string& s, size_t bytes) {
  return s.size() <= bytes ? s : s.substr(0, bytes) + "...";
}

// One prompt's claim, and the verdict on it.
struct Claim {
  std::vector<int32_t> tokens;
  std::vector<double> logprobs;
  bool stop = false;  // finish "stop"
  std::string text;
  // The first fault found; bad_at -1 with an empty why while none.
  int64_t bad_at = -1;
  std::string why;
  // Tokens [0, check) go through the forward pass: those before a fault
  // the structure shows.
  size_t check = 0;
  bool failed() const { return !why.empty(); }
};

// The claim's own consistency: vocabulary, stop tokens, finish. Sets
// bad_at/why on the first fault, and how many tokens the pass checks.
void CheckStructure(Claim& c, const std::set<int32_t>& stop, int64_t vocab,
                    int64_t max_tokens) {
  const size_t n = c.tokens.size();
  c.check = n;
  auto fault = [&](size_t at, std::string why) {
    c.bad_at = int64_t(at);
    c.why = std::move(why);
    c.check = std::min(at, n);
  };
  if (n == 0) return fault(0, "no tokens: the generator emits at least one");
  for (size_t k = 0; k < n; ++k) {
    const int32_t t = c.tokens[k];
    if (t >= vocab) {
      return fault(k, Format("token %zu is id %d, outside the vocabulary of %lld", k, t,
                             static_cast<long long>(vocab)));
    }
    if (stop.count(t) && k + 1 < n) {
      return fault(k + 1, Format("token %zu (id %d) is a stop token, which ends the output, "
                                 "but %zu more follow",
                                 k, t, n - k - 1));
    }
  }
  const int32_t last = c.tokens.back();
  if (c.stop && !stop.count(last)) {
    return fault(n, Format("finish is \"stop\" but the last token (%zu, id %d) is not a stop "
                           "token: the generator would have gone on",
                           n - 1, last));
  }
  if (!c.stop && stop.count(last)) {
    return fault(n - 1, Format("finish is \"length\" but token %zu (id %d) is a stop token, "
                               "so it would be \"stop\"",
                               n - 1, last));
  }
  if (!c.stop && int64_t(n) != max_tokens) {
    return fault(n, Format("finish is \"length\" but there are %zu tokens, not max_tokens %lld",
                           n, static_cast<long long>(max_tokens)));
  }
}

// The params, parsed into *p, and their generation settings.
Result<InferSettings> CheckParams(std::string_view params, json* p) {
  if (params.size() > kLlmMaxParamsBytes + kLlmMaxOutputBytes) {
    return InvalidArgument("infer_check params of " + std::to_string(params.size()) +
                           " bytes are over the limit of " +
                           std::to_string(kLlmMaxParamsBytes + kLlmMaxOutputBytes));
  }
  PCFARM_ASSIGN_OR_RETURN(*p, ParseBoundedJson(params, kParamsDepth, "infer_check params"));
  if (!p->is_object()) return InvalidArgument("infer_check params must be a JSON object");
  InferSettings settings;
  PCFARM_RETURN_IF_ERROR(CheckInferParams(*p, &settings));
  auto claimed = p->find("claimed");
  auto blob = p->find("claimed_blob");
  if ((claimed == p->end()) == (blob == p->end())) {
    return InvalidArgument(
        "infer_check params need exactly one of 'claimed' (the infer result's \"outputs\") "
        "and 'claimed_blob' (the hash of a blob holding the infer result)");
  }
  if (blob != p->end()) {
    if (!blob->is_string() || blob->get_ref<const std::string&>().size() != 64 ||
        blob->get_ref<const std::string&>().find_first_not_of("0123456789abcdef") !=
            std::string::npos) {
      return InvalidArgument("'claimed_blob' must be a blob hash of 64 lowercase hex digits");
    }
    return settings;
  }
  PCFARM_RETURN_IF_ERROR(CheckInferOutputs(*claimed, InferPromptCount(*p),
                                           settings.generation.max_new_tokens,
                                           "infer_check params", "claimed"));
  return settings;
}

// Replaces p["claimed_blob"] by p["claimed"]: the "outputs" of the infer
// result in that blob, held to what infer's ValidateOutput accepts.
Status ResolveClaimBlob(json* p, const InferSettings& settings, const RunContext& ctx) {
  auto blob = p->find("claimed_blob");
  if (blob == p->end()) return Status::Ok();
  if (!ctx.blob_path) return FailedPrecondition("infer_check: no blob store to read 'claimed_blob'");
  PCFARM_ASSIGN_OR_RETURN(std::string path, ctx.blob_path(blob->get<std::string>()));
  PCFARM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(path, kLlmMaxOutputBytes));
  PCFARM_ASSIGN_OR_RETURN(json r, ParseResultObject(bytes, kParamsDepth, "claimed infer"));
  auto outputs = r.find("outputs");
  if (outputs == r.end()) return InvalidArgument("the claimed infer result has no 'outputs'");
  PCFARM_RETURN_IF_ERROR(CheckInferOutputs(*outputs, InferPromptCount(*p),
                                           settings.generation.max_new_tokens,
                                           "claimed infer result", "outputs"));
  (*p)["claimed"] = std::move(*outputs);
  p->erase("claimed_blob");
  return Status::Ok();
}

class InferCheckKind final : public TaskKind {
 public:
  std::string_view name() const override { return "infer_check"; }

  Status ValidateParams(std::string_view params) const override {
    json p;
    return CheckParams(params, &p).status();
  }

  Result<std::string> Run(std::string_view params, const RunContext& ctx) const override {
    json p;
    PCFARM_ASSIGN_OR_RETURN(const InferSettings settings, CheckParams(params, &p));
    PCFARM_RETURN_IF_ERROR(ResolveClaimBlob(&p, settings, ctx));
    const GenerationConfig& g = settings.generation;
    PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<ModelInstance> m, AcquireInferModel(p, ctx));
    ctx.ReportProgress(0.1);
    if (ctx.CheckPoint()) return Cancelled("cancelled");
    PCFARM_ASSIGN_OR_RETURN(std::vector<GenerationRequest> reqs,
                            InferRequests(p, m->tokenizer, settings.seed));
    const std::vector<int32_t> stop_ids = m->model->StopIds(g);
    const std::set<int32_t> stop(stop_ids.begin(), stop_ids.end());
    const int64_t vocab = m->model->config().vocab_size;

    std::vector<Claim> claims(reqs.size());
    for (size_t i = 0; i < reqs.size(); ++i) {
      const json& o = p["claimed"][i];
      Claim& c = claims[i];
      for (const json& t : o["tokens"]) c.tokens.push_back(t.get<int32_t>());
      for (const json& l : o["logprobs"]) c.logprobs.push_back(l.get<double>());
      c.stop = o["finish"] == "stop";
      c.text = o["text"].get<std::string>();
      CheckStructure(c, stop, vocab, g.max_new_tokens);
    }

    // The passes: consecutive prompts up to kTokensPerPass fed tokens.
    int64_t checked = 0, tolerated = 0, total = 0, done = 0;
    double max_logprob_diff = 0;
    for (const Claim& c : claims) total += int64_t(c.check);
    const double tol = kInferLogprobTolerance;
    for (size_t first = 0; first < reqs.size();) {
      size_t end = first;
      int64_t fed = 0;
      std::vector<std::vector<int32_t>> prompts, conts;
      while (end < reqs.size()) {
        const int64_t len = int64_t(reqs[end].prompt.size() + claims[end].check);
        if (end > first && fed + len > kTokensPerPass) break;
        fed += len;
        prompts.push_back(reqs[end].prompt);
        conts.emplace_back(claims[end].tokens.begin(),
                           claims[end].tokens.begin() + ptrdiff_t(claims[end].check));
        ++end;
      }
      auto row = [&](size_t s, size_t k, std::span<const float> logits) -> Status {
        const size_t i = first + s;
        Claim& c = claims[i];
        if (c.failed() && c.bad_at <= int64_t(k)) return Status::Ok();
        for (float x : logits) {
          if (!std::isfinite(x)) {
            return Internal("infer_check: the model's logits for prompt " + std::to_string(i) +
                            " token " + std::to_string(k) + " are not finite");
          }
        }
        const int32_t t = c.tokens[k];
        ++checked;
        const DrawCheck d =
            CheckDraw(logits, g.sampling, CounterUniform(reqs[i].seed, k), t, tol);
        if (!d.ok) {
          c.bad_at = int64_t(k);
          c.why = Excerpt(Format("token %zu (id %d): ", k, t) + d.why, kMaxWhyBytes);
          return Status::Ok();
        }
        tolerated += !d.exact;
        const double lp = LogSoftmaxAt(logits, t);
        max_logprob_diff = std::max(max_logprob_diff, std::fabs(lp - c.logprobs[k]));
        if (std::fabs(lp - c.logprobs[k]) > tol) {
          c.bad_at = int64_t(k);
          c.why = Format("token %zu (id %d): logprob %.6g claimed, the model gives %.6g "
                         "(tolerance %g)",
                         k, t, c.logprobs[k], lp, tol);
        }
        return Status::Ok();
      };
      // A model whose pass failed is dropped with `m`: the device may have
      // left it unusable.
      PCFARM_RETURN_IF_ERROR(m->model->TeacherForcedLogits(prompts, conts, row));
      for (size_t i = first; i < end; ++i) done += int64_t(claims[i].check);
      first = end;
      ctx.ReportProgress(0.1 + 0.9 * double(done) / double(std::max<int64_t>(total, 1)));
      if (ctx.CheckPoint()) return Cancelled("cancelled");
    }

    json verdicts = json::array();
    bool all_ok = true;
    for (Claim& c : claims) {
      if (!c.failed()) {
        const std::string text = InferOutputText(m->tokenizer, c.tokens);
        if (text != c.text) {
          c.why = "text \"" + Excerpt(c.text, 100) + "\" is not the tokens' decoding \"" +
                  Excerpt(text, 100) + "\"";
        }
      }
      all_ok = all_ok && !c.failed();
      verdicts.push_back({{"ok", !c.failed()}, {"bad_at", c.bad_at}, {"why", c.why}});
    }
    ReturnInferModel(p, ctx, std::move(m));
    ctx.ReportProgress(1.0);
    return json{{"ok", all_ok},
                {"prompts", verdicts},
                {"checked_tokens", checked},
                {"tolerated_tokens", tolerated},
                {"max_logprob_diff", max_logprob_diff},
                {"backend", ctx.backend}}
        .dump(-1, ' ', false, json::error_handler_t::replace);
  }

  size_t max_output_bytes() const override { return kLlmMaxOutputBytes; }

  // "ok" true iff every prompt's is; one verdict per prompt with "ok",
  // "bad_at" in -1..max_tokens (-1 when ok) and "why" of at most 2 *
  // kMaxWhyBytes bytes (empty iff ok); checked_tokens in 0..prompts *
  // max_tokens; tolerated_tokens in 0..checked_tokens; max_logprob_diff a
  // finite number >= 0; "backend" a string.
  Status ValidateOutput(std::string_view params, std::string_view output) const override {
    PCFARM_ASSIGN_OR_RETURN(json r, ParseResultObject(output, 3, "infer_check"));
    json p;
    PCFARM_ASSIGN_OR_RETURN(const InferSettings settings, CheckParams(params, &p));
    const int64_t max_tokens = settings.generation.max_new_tokens;
    const size_t prompts = InferPromptCount(p);
    const std::string what = "infer_check result";
    auto v = r.find("prompts");
    if (v == r.end() || !v->is_array() || v->size() != prompts) {
      return InvalidArgument(what + ": 'prompts' must hold one verdict per prompt (" +
                             std::to_string(prompts) + ")");
    }
    bool all_ok = true;
    for (size_t i = 0; i < prompts; ++i) {
      const json& e = (*v)[i];
      const std::string where = what + ": prompts[" + std::to_string(i) + "]";
      if (!e.is_object()) return InvalidArgument(where + " is not an object");
      auto ok = e.find("ok"), at = e.find("bad_at"), why = e.find("why");
      if (ok == e.end() || !ok->is_boolean()) {
        return InvalidArgument(where + ": 'ok' must be true or false");
      }
      if (at == e.end() || !at->is_number_integer() || at->get<int64_t>() < -1 ||
          at->get<int64_t>() > max_tokens || (*ok && at->get<int64_t>() != -1)) {
        return InvalidArgument(where + ": 'bad_at' must be -1 when ok, else -1.." +
                               std::to_string(max_tokens));
      }
      if (why == e.end() || !why->is_string() ||
          why->get_ref<const std::string&>().size() > 2 * kMaxWhyBytes ||
          why->get_ref<const std::string&>().empty() != ok->get<bool>()) {
        return InvalidArgument(where + ": 'why' must be empty when ok, else a reason of at most " +
                               std::to_string(2 * kMaxWhyBytes) + " bytes");
      }
      all_ok = all_ok && ok->get<bool>();
    }
    auto ok = r.find("ok");
    if (ok == r.end() || !ok->is_boolean() || ok->get<bool>() != all_ok) {
      return InvalidArgument(what + ": 'ok' must be true iff every prompt's is");
    }
    auto checked = r.find("checked_tokens"), tolerated = r.find("tolerated_tokens");
    const int64_t most = int64_t(prompts) * max_tokens;
    if (checked == r.end() || !checked->is_number_integer() || checked->get<int64_t>() < 0 ||
        checked->get<int64_t>() > most) {
      return InvalidArgument(what + ": 'checked_tokens' must be 0.." + std::to_string(most));
    }
    if (tolerated == r.end() || !tolerated->is_number_integer() ||
        tolerated->get<int64_t>() < 0 || tolerated->get<int64_t>() > checked->get<int64_t>()) {
      return InvalidArgument(what + ": 'tolerated_tokens' must be 0..checked_tokens");
    }
    auto diff = r.find("max_logprob_diff");
    if (diff == r.end() || !diff->is_number() || !std::isfinite(diff->get<double>()) ||
        diff->get<double>() < 0) {
      return InvalidArgument(what + ": 'max_logprob_diff' must be a finite number >= 0");
    }
    auto backend = r.find("backend");
    if (backend == r.end() || !backend->is_string()) {
      return InvalidArgument(what + ": 'backend' must be a string");
    }
    return Status::Ok();
  }

  bool Agree(std::string_view a, std::string_view b) const override {
    try {
      const json x = json::parse(a), y = json::parse(b);
      if (x.at("ok").get<bool>() != y.at("ok").get<bool>()) return false;
      const json &px = x.at("prompts"), &py = y.at("prompts");
      if (!px.is_array() || px.size() != py.size()) return false;
      for (size_t i = 0; i < px.size(); ++i) {
        if (px[i].at("ok").get<bool>() != py[i].at("ok").get<bool>()) return false;
      }
      return true;
    } catch (const json::exception&) {
      return false;
    }
  }
};

}  // namespace

std::unique_ptr<TaskKind> MakeInferCheckKind() { return std::make_unique<InferCheckKind>(); }

}  // namespace pcfarm
