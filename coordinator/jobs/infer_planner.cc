#include "coordinator/jobs/infer_planner.h"

#include <algorithm>
#include <cmath>
#include <optional>
#include <nlohmann/json.hpp>

#include "coordinator/job_summary.h"
#include "coordinator/jobs/memory_estimate.h"
#include "coordinator/jobs/planner.h"
#include "tasks/kinds/kind.h"

namespace pcfarm {

using nlohmann::json;

std::vector<PromptSlice> SplitPrompts(const std::vector<int64_t>& prompt_tokens,
                                      const std::vector<size_t>& prompt_bytes,
                                      int64_t max_tokens, int64_t model_parameters,
                                      int prompts_per_shard) {
  const size_t n = prompt_tokens.size();
  const double flops_per_token = 2.0 * double(std::max<int64_t>(model_parameters, 1));
  std::vector<double> cost(n);
  double total = 0;
  for (size_t i = 0; i < n; ++i) {
    cost[i] = flops_per_token * double(prompt_tokens[i] + max_tokens);
    total += cost[i];
  }
  // The default: as many shards as the budget asks for, but never fewer
  // than kInferMinPromptsPerShard prompts each (every decode step reads all
  // the weights whatever the batch, so small shards waste steps), nor more
  // than kInferMaxPromptsPerShard; the shards share the work equally.
  size_t shards = 1;
  if (prompts_per_shard <= 0 && n > 0) {
    size_t by_budget = size_t(std::ceil(total / kInferShardFlops));
    size_t by_min = std::max<size_t>(1, n / size_t(kInferMinPromptsPerShard));
    size_t by_max = (n + size_t(kInferMaxPromptsPerShard) - 1) / size_t(kInferMaxPromptsPerShard);
    shards = std::max(by_max, std::max<size_t>(1, std::min(by_budget, by_min)));
  }
  std::vector<PromptSlice> out;
  PromptSlice cur;
  double done = 0;   // cost of the prompts in finished slices and cur
  size_t bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    bool full;
    if (prompts_per_shard > 0) {
      full = cur.count >= size_t(prompts_per_shard);
    } else {
      // Cut where this slice reached its equal share of the total.
      double share = total * double(out.size() + 1) / double(shards);
      full = cur.count > 0 && out.size() + 1 < shards &&
             (done >= share || cur.count >= size_t(kInferMaxPromptsPerShard));
    }
    full = full || (cur.count > 0 && bytes + prompt_bytes[i] > kInferShardParamsBytes);
    if (full) {
      out.push_back(cur);
      cur = PromptSlice{i, 0};
      bytes = 0;
    }
    cur.count++;
    done += cost[i];
    bytes += prompt_bytes[i];
  }
  if (cur.count > 0) out.push_back(cur);
  return out;
}

namespace {

constexpr int64_t kMaxPromptsBlobBytes = int64_t(256) << 20;
constexpr size_t kMaxPrompts = 1'000'000;

Result<json> ParseParams(std::string_view text) {
  PCFARM_ASSIGN_OR_RETURN(json p, ParseBoundedJson(text, 3, "infer job params"));
  if (!p.is_object()) return InvalidArgument("infer job params: not a JSON object");
  return p;
}

class InferPlanner final : public JobPlanner {
 public:
  std::string_view kind() const override { return "infer"; }

  Result<JobPlan> Plan(const wire::SubmitRequest& request,
                       const BlobStore& blobs) const override {
    if (request.shard_params_size() != 0) {
      return InvalidArgument("an infer job's shards are made by the coordinator: "
                             "send no shard params");
    }
    PCFARM_ASSIGN_OR_RETURN(json p, ParseParams(request.params()));
    PCFARM_ASSIGN_OR_RETURN(auto model, FileHashes(p, "model"));
    if (model.empty()) return InvalidArgument("missing 'model'");
    PCFARM_ASSIGN_OR_RETURN(auto adapter, FileHashes(p, "adapter"));
    auto pb = p.find("prompts_blob");
    if (pb == p.end() || !IsBlobHashJson(*pb)) {
      return InvalidArgument("'prompts_blob' must be a blob hash");
    }
    const std::string prompts_hash = pb->get<std::string>();
    auto count = p.find("prompts");
    if (count == p.end() || !count->is_number_unsigned() || count->get<uint64_t>() == 0 ||
        count->get<uint64_t>() > kMaxPrompts) {
      return InvalidArgument("'prompts' must be 1.." + std::to_string(kMaxPrompts));
    }
    auto number = [&](const char* name, int64_t lo, int64_t hi, int64_t def) -> Result<int64_t> {
      auto it = p.find(name);
      if (it == p.end()) return def;
      if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
        return InvalidArgument(std::string("'") + name + "' must be an integer in " +
                               std::to_string(lo) + ".." + std::to_string(hi));
      }
      return it->get<int64_t>();
    };
    PCFARM_ASSIGN_OR_RETURN(int64_t max_tokens, number("max_tokens", 1, 4096, 64));
    PCFARM_ASSIGN_OR_RETURN(int64_t per_shard,
                            number("prompts_per_shard", 0, kInferMaxPromptsPerShard, 0));
    PCFARM_ASSIGN_OR_RETURN(int64_t parameters,
                            number("model_parameters", 0, int64_t(1) << 50, 0));
    PCFARM_ASSIGN_OR_RETURN(int64_t model_bytes,
                            number("model_bytes", 0, int64_t(1) << 50, 0));
    // The memory a shard needs: estimated from the model's shape, or, for a
    // job whose params predate "model_dims", the model files' size.
    std::optional<ModelDims> dims;
    if (auto md = p.find("model_dims"); md != p.end()) {
      PCFARM_ASSIGN_OR_RETURN(dims, ModelDimsFromJson(*md));
    }
    uint64_t seed = 0;
    if (auto s = p.find("seed"); s != p.end()) {
      if (!s->is_number_unsigned()) return InvalidArgument("'seed' must be a non-negative integer");
      seed = s->get<uint64_t>();
    }

    // The prompts, as the CLI checked and counted them.
    PCFARM_ASSIGN_OR_RETURN(std::string text, ReadWholeBlob(blobs, prompts_hash,
                                                            kMaxPromptsBlobBytes,
                                                            "the prompts file"));
    std::vector<std::string> prompts;
    std::vector<int64_t> tokens;
    std::vector<size_t> bytes;
    size_t pos = 0;
    while (pos < text.size()) {
      size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string_view line(text.data() + pos, end - pos);
      pos = end + 1;
      if (line.empty()) continue;
      std::string where = "prompts blob line " + std::to_string(prompts.size() + 1);
      PCFARM_ASSIGN_OR_RETURN(json l, ParseBoundedJson(line, 1, where));
      auto pr = l.find("prompt"), tk = l.find("tokens");
      if (!l.is_object() || pr == l.end() || !pr->is_string() || pr->get<std::string>().empty() ||
          tk == l.end() || !tk->is_number_unsigned()) {
        return InvalidArgument(where + ": must be {\"prompt\": TEXT, \"tokens\": N}");
      }
      prompts.push_back(pr->get<std::string>());
      tokens.push_back(tk->get<int64_t>());
      // The prompt's share of its shard's params: itself JSON-escaped.
      bytes.push_back(json(prompts.back()).dump().size() + 1);
      if (prompts.size() > kMaxPrompts) break;
    }
    if (prompts.size() != count->get<uint64_t>()) {
      return InvalidArgument("the prompts blob holds " + std::to_string(prompts.size()) +
                             " prompts, the params say " +
                             std::to_string(count->get<uint64_t>()));
    }
    for (size_t i = 0; i < bytes.size(); ++i) {
      if (bytes[i] > kInferShardParamsBytes) {
        return InvalidArgument("prompt " + std::to_string(i + 1) + " is " +
                               std::to_string(bytes[i]) + " bytes; a farm prompt "
                               "may have at most " +
                               std::to_string(kInferShardParamsBytes) + " bytes");
      }
    }

    const TaskKind* kind = TaskKindRegistry::Builtin().Find("infer");
    if (!kind) return Internal("this coordinator has no infer task kind");
    JobPlan plan;
    plan.params = p.dump();
    for (const auto& slice : SplitPrompts(tokens, bytes, max_tokens, parameters,
                                          int(per_shard))) {
      json shard = {{"model", p["model"]},
                    {"prompts", json::array()},
                    {"max_tokens", max_tokens},
                    {"seed", seed + slice.first},
                    {"first", slice.first}};
      if (p.contains("adapter")) shard["adapter"] = p["adapter"];
      for (const char* f : {"temperature", "top_k", "top_p", "quantize"}) {
        if (p.contains(f)) shard[f] = p[f];
      }
      for (size_t i = slice.first; i < slice.first + slice.count; ++i) {
        shard["prompts"].push_back(prompts[i]);
      }
      std::string sp = shard.dump();
      Status v = kind->ValidateParams(sp);
      if (!v.ok()) return v.WithContext("shard " + std::to_string(plan.shards.size()));
      int64_t needs = model_bytes;
      if (dims) {
        int64_t prompt_tokens = 0, longest = 0;
        for (size_t i = slice.first; i < slice.first + slice.count; ++i) {
          prompt_tokens += tokens[i];
          longest = std::max(longest, tokens[i]);
        }
        needs = InferShardMemoryBytes(*dims, int64_t(slice.count), prompt_tokens,
                                      longest + max_tokens);
      }
      plan.shards.push_back(ShardSpec{std::move(sp), "", needs});
    }
    plan.blobs = model;
    plan.blobs.insert(plan.blobs.end(), adapter.begin(), adapter.end());
    plan.blobs.push_back(prompts_hash);
    return plan;
  }

  std::vector<std::string> ShardBlobs(std::string_view job_params) const override {
    auto p = ParseParams(job_params);
    if (!p.ok()) return {};
    auto model = FileHashes(*p, "model");
    auto adapter = FileHashes(*p, "adapter");
    if (!model.ok() || !adapter.ok()) return {};
    std::vector<std::string> out = *model;
    out.insert(out.end(), adapter->begin(), adapter->end());
    return out;
  }

  std::string Fold(std::string_view summary, int64_t index,
                   std::string_view output) const override {
    json out = json::parse(summary.begin(), summary.end(), nullptr, false);
    if (!out.is_object()) out = json::object();
    out["shards"] = out.value("shards", int64_t(0)) + 1;
    (void)index;
    json r = json::parse(output.begin(), output.end(), nullptr, false);
    if (r.is_object() && r.contains("outputs") && r["outputs"].is_array()) {
      int64_t tokens = 0;
      for (const auto& o : r["outputs"]) {
        if (o.is_object() && o.contains("tokens") && o["tokens"].is_array()) {
          tokens += int64_t(o["tokens"].size());
        }
      }
      out["prompts"] = out.value("prompts", int64_t(0)) + int64_t(r["outputs"].size());
      out["tokens"] = out.value("tokens", int64_t(0)) + tokens;
    }
    return out.dump();
  }

  std::string Output(const std::vector<FetchedShard>& shards) const override {
    std::string out;
    for (const auto& s : shards) {
      json p = json::parse(s.params, nullptr, false);
      json r = json::parse(s.output, nullptr, false);
      if (!p.is_object() || !r.is_object() || !p.contains("prompts") ||
          !r.contains("outputs")) {
        continue;  // ValidateOutput admitted neither
      }
      const json& prompts = p["prompts"];
      const json& outputs = r["outputs"];
      int64_t first = p.value("first", int64_t(0));
      for (size_t i = 0; i < prompts.size() && i < outputs.size(); ++i) {
        const json& o = outputs[i];
        json line = {{"index", first + int64_t(i)},
                     {"prompt", prompts[i]},
                     {"text", o.value("text", std::string())},
                     {"tokens", o.value("tokens", json::array())},
                     {"finish_reason", o.value("finish", std::string())},
                     {"worker", s.worker}};
        out += line.dump(-1, ' ', false, json::error_handler_t::replace);
        out += '\n';
      }
    }
    return out;
  }

  std::string OutputTail(const JobInfo&) const override { return ""; }

  // 2 FLOP per parameter per token, prompt and generated (at most
  // max_tokens each; a prompt given as text counts a token per 4 bytes).
  double ShardFlops(std::string_view job_params, std::string_view shard_params) const override {
    json j = json::parse(job_params, nullptr, false);
    json p = json::parse(shard_params, nullptr, false);
    if (!j.is_object() || !p.is_object()) return 0;
    const double params = j.value("model_parameters", 0.0);
    const double max_tokens = p.value("max_tokens", 64.0);
    double tokens = 0;
    if (auto t = p.find("prompt_tokens"); t != p.end() && t->is_array()) {
      for (const json& e : *t) tokens += (e.is_array() ? double(e.size()) : 0) + max_tokens;
    } else if (auto q = p.find("prompts"); q != p.end() && q->is_array()) {
      for (const json& e : *q) tokens += (e.is_string() ? double(e.get_ref<const std::string&>().size()) / 4 : 0) + max_tokens;
    }
    return 2.0 * params * tokens;
  }

  std::string_view check_kind() const override { return "infer_check"; }

  // The shard's params with "claimed_blob" (tasks/kinds/infer_check.h).
  Result<std::string> CheckParams(std::string_view shard_params,
                                  std::string_view claim_hash_hex) const override {
    json p = json::parse(shard_params, nullptr, /*allow_exceptions=*/false);
    if (!p.is_object()) return InvalidArgument("the shard's params are not a JSON object");
    p["claimed_blob"] = std::string(claim_hash_hex);
    return p.dump();
  }

  Result<bool> CheckHolds(std::string_view check_output) const override {
    json r = json::parse(check_output, nullptr, /*allow_exceptions=*/false);
    auto ok = r.is_object() ? r.find("ok") : r.end();
    if (!r.is_object() || ok == r.end() || !ok->is_boolean()) {
      return InvalidArgument("an infer_check result without a boolean 'ok'");
    }
    return ok->get<bool>();
  }

  std::string Summary(const JobInfo& job) const override {
    json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (!s.is_object()) s = json::object();
    auto p = ParseParams(job.params);
    if (p.ok() && p->contains("prompts")) s["prompts_total"] = (*p)["prompts"];
    if (!s.contains("prompts")) s["prompts"] = 0;
    if (!s.contains("tokens")) s["tokens"] = 0;
    return s.dump();
  }
};

}  // namespace

std::unique_ptr<JobPlanner> MakeInferPlanner() { return std::make_unique<InferPlanner>(); }

}  // namespace pcfarm
