#include "coordinator/jobs/finetune_planner.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>

#include "coordinator/jobs/memory_estimate.h"
#include "coordinator/jobs/planner.h"
#include "crypto/hash.h"
#include "tasks/aggregate/aggregate.h"
#include "tasks/aggregate/compress.h"
#include "tasks/aggregate/outer_optimizer.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/data.h"
#include "tasks/engine/optimizer.h"
#include "tasks/engine/token_data.h"
#include "tasks/kinds/kind.h"
#include "tasks/kinds/train_result.h"

namespace pcfarm {
namespace {

using nlohmann::json;

constexpr int64_t kMaxSteps = 10'000'000;
constexpr int64_t kMaxBatch = 100'000;
// The train kind's limits on a shard's local steps and indices.
constexpr int64_t kMaxLocalSteps = 10'000;
constexpr int64_t kMaxShardIndices = 100'000;
constexpr const char* kAdapterConfig = "adapter_config.json";
constexpr const char* kAdapterWeights = "adapter_model.safetensors";
constexpr const char* kFullWeights = "model.safetensors";
// A compressed version's values (the train kind's "adapter_model.pcg").
constexpr const char* kCompressedVersion = "adapter_model.pcg";
// The largest LoRA rank the train kind draws itself ("lora" in a shard).
constexpr int64_t kMaxSeededRank = 1024;

// The job's params, checked.
struct FinetuneParams {
  json raw;
  json model;
  // The version the job starts from: "adapter" {config, weights} (LoRA) or
  // "weights" {"model.safetensors"} (method "full": every weight).
  json adapter;
  bool full = false;
  const char* version_key = "adapter";       // its key in params, shards, summary
  const char* weights_file = kAdapterWeights;  // the file each step rewrites
  std::string data;
  int64_t examples = 0, steps = 0, batch = 0, micro_batch = 0, model_bytes = 0;
  // What each shard needs of a worker's memory (ShardSpec::needs_memory_bytes).
  int64_t needs_memory_bytes = 0;
  json quantize;  // the "quantize" param its shards carry; null: none
  uint64_t seed = 0;
  OptimizerConfig opt;
  AggregateRule rule = AggregateRule::kMean;
  GradientCodec codec = GradientCodec::kNone;
  std::string feedback;  // the error-feedback key its shards carry
  // mode "diloco": H local steps a round, the outer optimizer, the rounds.
  bool diloco = false;
  int64_t local_steps = 0, rounds = 0;
  OuterOptimizerConfig outer;
  // A round proceeds when every shard is accepted, or, with quorum < 1,
  // when ceil(quorum · its shards) are and round_timeout_ms has passed
  // since it started (0: at once). The rest are dropped.
  double quorum = 1.0;
  int64_t round_timeout_ms = 0;
};

Result<FinetuneParams> ParseParams(std::string_view text) {
  PCFARM_ASSIGN_OR_RETURN(json p, ParseBoundedJson(text, 3, "finetune job params"));
  if (!p.is_object()) return InvalidArgument("finetune job params: not a JSON object");
  FinetuneParams f;
  PCFARM_ASSIGN_OR_RETURN(auto model, FileHashes(p, "model"));
  if (model.empty()) return InvalidArgument("missing 'model'");
  if (auto m = p.find("method"); m != p.end()) {
    if (*m != "lora" && *m != "full") return InvalidArgument("'method' must be 'lora' or 'full'");
    f.full = *m == "full";
  }
  if (f.full) {
    f.version_key = "weights";
    f.weights_file = kFullWeights;
    for (const char* field : {"adapter", "lora", "quantize"}) {
      if (p.contains(field)) {
        return InvalidArgument(std::string("method 'full' takes no '") + field + "'");
      }
    }
    PCFARM_ASSIGN_OR_RETURN(auto weights, FileHashes(p, "weights"));
    if (weights.size() != 1 || !p["weights"].contains(kFullWeights)) {
      return InvalidArgument(std::string("'weights' must name exactly ") + kFullWeights +
                             " (every weight, as the job starts from them)");
    }
  } else {
    if (p.contains("weights")) return InvalidArgument("'weights' is for method 'full'");
    PCFARM_ASSIGN_OR_RETURN(auto adapter, FileHashes(p, "adapter"));
    if (adapter.size() != 2 || !p["adapter"].contains(kAdapterConfig) ||
        !p["adapter"].contains(kAdapterWeights)) {
      return InvalidArgument(std::string("'adapter' must name exactly ") + kAdapterConfig +
                             " and " + kAdapterWeights + " (the adapter the job starts from)");
    }
  }
  f.model = p["model"];
  f.adapter = p[f.version_key];
  auto d = p.find("data");
  if (d == p.end() || !IsBlobHashJson(*d)) return InvalidArgument("'data' must be a blob hash");
  f.data = d->get<std::string>();
  auto number = [&](const char* name, int64_t lo, int64_t hi, int64_t def) -> Result<int64_t> {
    auto it = p.find(name);
    if (it == p.end()) return def;
    if (!it->is_number_integer() || it->get<int64_t>() < lo || it->get<int64_t>() > hi) {
      return InvalidArgument(std::string("'") + name + "' must be an integer in " +
                             std::to_string(lo) + ".." + std::to_string(hi));
    }
    return it->get<int64_t>();
  };
  PCFARM_ASSIGN_OR_RETURN(f.examples, number("examples", 1, int64_t(1) << 40, 0));
  if (f.examples == 0) return InvalidArgument("missing 'examples'");
  PCFARM_ASSIGN_OR_RETURN(f.steps, number("steps", 1, kMaxSteps, 0));
  if (f.steps == 0) return InvalidArgument("missing 'steps'");
  PCFARM_ASSIGN_OR_RETURN(f.batch, number("batch", 1, kMaxBatch, 0));
  if (f.batch == 0) return InvalidArgument("missing 'batch'");
  PCFARM_ASSIGN_OR_RETURN(f.micro_batch,
                          number("micro_batch", 1, f.batch,
                                 std::min(f.batch, kFinetuneDefaultMicroBatch)));
  PCFARM_ASSIGN_OR_RETURN(f.model_bytes, number("model_bytes", 0, int64_t(1) << 50, 0));
  if (auto s = p.find("seed"); s != p.end()) {
    if (!s->is_number_unsigned()) return InvalidArgument("'seed' must be a non-negative integer");
    f.seed = s->get<uint64_t>();
  }
  if (auto o = p.find("optimizer"); o != p.end()) {
    if (!o->is_object()) return InvalidArgument("'optimizer' must be an object");
    auto real = [&](const char* name, float* out, double lo, double hi) -> Status {
      auto it = o->find(name);
      if (it == o->end()) return Status::Ok();
      if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < lo ||
          it->get<double>() > hi) {
        return InvalidArgument(std::string("'optimizer.") + name + "' must be a number in [" +
                               std::to_string(lo) + ", " + std::to_string(hi) + "]");
      }
      *out = it->get<float>();
      return Status::Ok();
    };
    PCFARM_RETURN_IF_ERROR(real("lr", &f.opt.lr, 0, 10));
    PCFARM_RETURN_IF_ERROR(real("beta1", &f.opt.beta1, 0, 1));
    PCFARM_RETURN_IF_ERROR(real("beta2", &f.opt.beta2, 0, 1));
    PCFARM_RETURN_IF_ERROR(real("eps", &f.opt.eps, 0, 1));
    PCFARM_RETURN_IF_ERROR(real("weight_decay", &f.opt.weight_decay, 0, 10));
    PCFARM_RETURN_IF_ERROR(real("max_grad_norm", &f.opt.max_grad_norm, 0, 1e30));
    if (!(f.opt.lr > 0)) return InvalidArgument("'optimizer.lr' must be > 0");
  }
  if (p.contains("mode") && !p["mode"].is_string()) {
    return InvalidArgument("'mode' must be 'sync' or 'diloco'");
  }
  const std::string mode = p.value("mode", std::string("sync"));
  if (mode != "sync" && mode != "diloco") {
    return InvalidArgument("'mode' must be 'sync' or 'diloco'");
  }
  f.diloco = mode == "diloco";
  if (!f.diloco) {
    for (const char* name : {"local_steps", "outer_lr", "outer_momentum"}) {
      if (p.contains(name)) {
        return InvalidArgument(std::string("'") + name + "' is for mode 'diloco'");
      }
    }
  } else {
    PCFARM_ASSIGN_OR_RETURN(f.local_steps, number("local_steps", 1, kMaxLocalSteps,
                                                  kFinetuneDefaultLocalSteps));
    if (f.local_steps * std::min(f.batch, f.micro_batch) > kMaxShardIndices) {
      return InvalidArgument("'local_steps' times 'micro_batch' is over " +
                             std::to_string(kMaxShardIndices) +
                             ", the examples one shard may name");
    }
    auto outer = [&](const char* name, float* out) -> Status {
      auto it = p.find(name);
      if (it == p.end()) return Status::Ok();
      if (!it->is_number() || !std::isfinite(it->get<double>())) {
        return InvalidArgument(std::string("'") + name + "' must be a number");
      }
      *out = it->get<float>();
      return Status::Ok();
    };
    PCFARM_RETURN_IF_ERROR(outer("outer_lr", &f.outer.lr));
    PCFARM_RETURN_IF_ERROR(outer("outer_momentum", &f.outer.momentum));
    PCFARM_RETURN_IF_ERROR(CheckOuterOptimizerConfig(f.outer));
    f.rounds = (f.steps + f.local_steps - 1) / f.local_steps;
  }
  if (auto q = p.find("quorum"); q != p.end()) {
    if (!q->is_number() || !(q->get<double>() > 0) || q->get<double>() > 1) {
      return InvalidArgument("'quorum' must be a number in (0, 1]");
    }
    f.quorum = q->get<double>();
  }
  PCFARM_ASSIGN_OR_RETURN(int64_t timeout_s, number("round_timeout_s", 1, 7 * 86400, 0));
  if (timeout_s > 0 && f.quorum >= 1) {
    return InvalidArgument("'round_timeout_s' needs a 'quorum' below 1 (a round with quorum 1 "
                           "waits for every shard)");
  }
  f.round_timeout_ms = timeout_s * 1000;
  if (p.contains("aggregate")) {
    if (!p["aggregate"].is_string()) return InvalidArgument("'aggregate' must be a string");
    PCFARM_ASSIGN_OR_RETURN(f.rule, ParseAggregateRule(p["aggregate"].get<std::string>()));
  }
  if (p.contains("compress")) {
    if (!p["compress"].is_string()) return InvalidArgument("'compress' must be a string");
    PCFARM_ASSIGN_OR_RETURN(f.codec, ParseGradientCodec(p["compress"].get<std::string>()));
  }
  if (auto q = p.find("quantize"); q != p.end()) {
    if (!q->is_string()) return InvalidArgument("'quantize' must be \"q8_0\" or \"q4_0\"");
    f.quantize = *q;
  }
  // Memory: estimated from the model's shape (memory_estimate.h), or, for a
  // job whose params predate "model_dims", the model files' size.
  f.needs_memory_bytes = f.model_bytes;
  if (auto md = p.find("model_dims"); md != p.end()) {
    PCFARM_ASSIGN_OR_RETURN(ModelDims dims, ModelDimsFromJson(*md));
    PCFARM_ASSIGN_OR_RETURN(int64_t trainable,
                            number("trainable_parameters", 0, int64_t(1) << 40, 0));
    PCFARM_ASSIGN_OR_RETURN(int64_t longest, number("longest_sequence", 1, int64_t(1) << 31, 1));
    int64_t rank = 0;
    if (auto l = p.find("lora"); l != p.end() && l->is_object()) {
      auto r = l->find("rank");
      if (r != l->end() && r->is_number_integer()) rank = std::clamp<int64_t>(r->get<int64_t>(), 0, 1 << 20);
    }
    f.needs_memory_bytes = TrainShardMemoryBytes(dims, trainable, rank, f.micro_batch * longest);
  }
  // The job's error-feedback stream on each worker: named by its params.
  f.feedback = HashToHex(Blake2b256(text)).substr(0, 32);
  f.raw = std::move(p);
  return f;
}

// The usable sequences of a data blob and the examples of each step.
class Batches {
 public:
  Batches(std::vector<int64_t> usable, uint64_t seed, std::vector<int32_t> lengths)
      : usable_(usable), sampler_(std::move(usable), seed), lengths_(std::move(lengths)) {}
  size_t usable() const { return usable_.size(); }
  // The tokens of sequence `i` (0 for an index out of range).
  int64_t Length(int64_t i) const {
    return i >= 0 && i < int64_t(lengths_.size()) ? lengths_[size_t(i)] : 0;
  }
  // The sequence indices of step `step` (1-based), drawing the steps in
  // between (a restart draws them all again).
  std::vector<int64_t> Step(int64_t step, int64_t batch, uint64_t seed) {
    if (step <= drawn_) {
      sampler_ = BatchSampler(usable_, seed);
      drawn_ = 0;
    }
    std::vector<int64_t> out;
    while (drawn_ < step) {
      out = sampler_.Next(batch);
      ++drawn_;
    }
    return out;
  }

 private:
  std::vector<int64_t> usable_;
  BatchSampler sampler_;
  std::vector<int32_t> lengths_;  // tokens of every sequence, by index
  int64_t drawn_ = 0;
};

// The FLOP of one token through a model of these dims in a LoRA train
// step: its matrix products forward (2 per weight) and backward to the
// activations (2 more; the frozen base has no weight gradient; the LoRA
// factors and attention's own products are small beside them at the
// lengths trained here).
// Full fine-tuning also takes every weight's gradient: 6 per weight
// instead of 4 (`full`).
double TrainFlopsPerToken(const ModelDims& d, bool full) {
  const double attn = double(d.hidden) * double(d.heads * d.head_dim) * 2 +
                      double(d.hidden) * double(d.kv_heads * d.head_dim) * 2;
  const double mlp = 3.0 * double(d.hidden) * double(d.intermediate);
  const double weights = double(d.layers) * (attn + mlp) + double(d.vocab) * double(d.hidden);
  return (full ? 6.0 : 4.0) * weights;
}

// A file of a model's weights (model.safetensors, its shards and index, a
// .gguf): what full fine-tuning's output replaces.
bool IsWeightsFileName(const std::string& name) {
  auto ends = [&](std::string_view suffix) {
    return name.size() >= suffix.size() &&
           name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends(".safetensors") || ends(".safetensors.index.json") || ends(".gguf") ||
         ends(".bin") || ends(".bin.index.json");
}

struct ParsedResult {
  double loss = 0, weight = 0;
  int64_t tokens = 0;
  std::vector<float> values;
};

Result<ParsedResult> ParseTrainResult(std::string_view body, int64_t count, int64_t idx) {
  const std::string where = "the result of shard " + std::to_string(idx);
  auto r = DecodeTrainResult(body, count);
  if (!r.ok()) return InvalidArgument(where + ": " + r.status().message());
  if (int64_t(r->values.size()) != count) {
    return InvalidArgument(where + " has " + std::to_string(r->values.size()) +
                           " values; the adapter has " + std::to_string(count));
  }
  ParsedResult out;
  out.loss = r->loss;
  out.weight = r->weight;
  out.tokens = r->tokens;
  out.values = std::move(r->values);
  return out;
}

// A round's accepted results, aggregated.
struct RoundResults {
  std::vector<float> aggregate;  // the mean gradient, or mean pseudo-gradient
  double loss_sum = 0, weight = 0;
  int64_t tokens = 0, bytes_up = 0, shards = 0, workers = 0;
  int64_t examples = 0;  // the examples the counted shards' params name
};

// The examples a train shard's params name: its micro-batch ("examples"),
// or one slice per local step ("steps_examples").
int64_t ExamplesOf(std::string_view shard_params) {
  json p = json::parse(shard_params.begin(), shard_params.end(), nullptr, false);
  if (!p.is_object()) return 0;
  if (auto e = p.find("examples"); e != p.end() && e->is_array()) return int64_t(e->size());
  int64_t n = 0;
  if (auto s = p.find("steps_examples"); s != p.end() && s->is_array()) {
    for (const auto& step : *s) n += step.is_array() ? int64_t(step.size()) : 0;
  }
  return n;
}

// Reads and aggregates `results` of an adapter with `count` values. Sync
// shards send weighted SUMS (their mean is values / weight); DiLoCo shards
// send their pseudo-gradient as it is (`values_are_sums` false). Each
// counts with its weight Σ w under `rule`. InvalidArgument (a verdict on the
// job) names what is wrong.
Result<RoundResults> AggregateRound(const std::vector<AcceptedResult>& results, int64_t count,
                                    AggregateRule rule, bool values_are_sums) {
  RoundResults out;
  std::vector<ParsedResult> parsed;
  std::set<int64_t> workers;
  for (const auto& r : results) {
    PCFARM_ASSIGN_OR_RETURN(ParsedResult p, ParseTrainResult(r.body, count, r.shard_idx));
    if (!(p.weight > 0) || !std::isfinite(p.weight)) continue;  // nothing counted
    out.loss_sum += p.loss * p.weight;
    out.weight += p.weight;
    out.tokens += p.tokens;
    out.bytes_up += int64_t(r.body.size());
    out.examples += ExamplesOf(r.params);
    workers.insert(r.worker_id);
    parsed.push_back(std::move(p));
  }
  out.shards = int64_t(results.size());
  out.workers = int64_t(workers.size());
  if (!(out.weight > 0)) return InvalidArgument("no shard counted a token");
  out.aggregate.assign(static_cast<size_t>(count), 0.0f);
  if (rule == AggregateRule::kMean) {
    std::vector<double> sum(size_t(count), 0.0);
    for (const auto& p : parsed) {
      const double scale = values_are_sums ? 1.0 : p.weight;
      for (int64_t i = 0; i < count; ++i) sum[size_t(i)] += double(p.values[size_t(i)]) * scale;
    }
    const double inv = 1.0 / out.weight;
    for (int64_t i = 0; i < count; ++i) out.aggregate[size_t(i)] = float(sum[size_t(i)] * inv);
  } else {
    std::vector<std::vector<float>> x;
    std::vector<std::span<const float>> spans;
    std::vector<float> w;
    for (auto& p : parsed) {
      if (values_are_sums) {
        std::vector<float> xi(p.values.size());
        for (size_t i = 0; i < xi.size(); ++i) xi[i] = float(double(p.values[i]) / p.weight);
        x.push_back(std::move(xi));
      } else {
        x.push_back(std::move(p.values));
      }
      w.push_back(float(p.weight));
    }
    for (const auto& xi : x) spans.emplace_back(xi);
    PCFARM_ASSIGN_OR_RETURN(out.aggregate, Aggregate(rule, spans, w));
  }
  for (float v : out.aggregate) {
    if (!std::isfinite(v)) return InvalidArgument("the aggregated gradient is not finite");
  }
  return out;
}

class FinetunePlanner final : public JobPlanner {
 public:
  std::string_view kind() const override { return "finetune"; }
  std::string_view task_kind() const override { return "train"; }
  bool open_ended() const override { return true; }

  Result<JobPlan> Plan(const wire::SubmitRequest& request,
                       const BlobStore& blobs) const override {
    if (request.shard_params_size() != 0) {
      return InvalidArgument("a finetune job's shards are made by the coordinator: "
                             "send no shard params");
    }
    PCFARM_ASSIGN_OR_RETURN(FinetuneParams f, ParseParams(request.params()));
    for (const auto& [file, hash] : f.adapter.items()) {
      if (!blobs.Has(hash.get<std::string>())) {
        return NotFound(std::string(f.full ? "the weights' " : "the adapter's ") + file +
                        " is not uploaded");
      }
    }
    PCFARM_ASSIGN_OR_RETURN(auto adapter, ReadAdapter(blobs, f, f.adapter));
    (void)adapter;  // parsed: the first step will apply to it
    PCFARM_ASSIGN_OR_RETURN(auto data, LoadData(blobs, f));
    if (int64_t(data->usable()) < f.batch) {
      return InvalidArgument("batch " + std::to_string(f.batch) + " is larger than the " +
                             std::to_string(data->usable()) +
                             " examples with a counted token");
    }
    JobPlan plan;
    plan.open_ended = true;
    plan.params = f.raw.dump();
    PCFARM_ASSIGN_OR_RETURN(const json sent, StartVersion(blobs, f));
    if (f.diloco) {
      PCFARM_ASSIGN_OR_RETURN(plan.shards, RoundShards(f, sent, *data, 1));
    } else {
      PCFARM_ASSIGN_OR_RETURN(plan.shards, StepShards(f, sent, *data, 1));
    }
    PCFARM_ASSIGN_OR_RETURN(plan.blobs, FileHashes(f.raw, "model"));
    for (const auto& [file, hash] : f.adapter.items()) plan.blobs.push_back(hash.get<std::string>());
    plan.blobs.push_back(f.data);
    return plan;
  }

  bool ReadyToAdvance(const JobInfo& job, int64_t now_ms) const override {
    if (JobPlanner::ReadyToAdvance(job, now_ms)) return true;
    // Cheap first: most jobs wait for every shard.
    if (job.params.find("\"quorum\"") == std::string::npos) return false;
    auto f = ParseParams(job.params);
    if (!f.ok() || f->quorum >= 1) return false;
    json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (!s.is_object()) return false;
    const RoundCount c = CountRound(job, s);
    if (c.accepted < QuorumOf(*f, c.shards)) return false;
    const int64_t started = s.value("round_started_ms", job.created_ms);
    return now_ms - started >= f->round_timeout_ms;
  }

  std::vector<std::string> ShardBlobs(std::string_view job_params) const override {
    auto f = ParseParams(job_params);
    if (!f.ok()) return {};
    auto model = FileHashes(f->raw, "model");
    if (!model.ok()) return {};
    std::vector<std::string> out = *model;
    out.push_back(f->data);
    return out;
  }

  // Every blob the job's params name (the model, the data, the start) and
  // the current version's files (what fetch writes); the versions and
  // optimizer states of the steps between go.
  std::optional<std::vector<std::string>> BlobsToKeep(const JobInfo& job) const override {
    std::vector<std::string> keep;
    std::function<void(const json&)> collect = [&](const json& v) {
      if (IsBlobHashJson(v)) {
        keep.push_back(v.get<std::string>());
      } else if (v.is_object() || v.is_array()) {
        for (const auto& e : v) collect(e);
      }
    };
    const json p = json::parse(job.params, nullptr, false);
    if (!p.is_object()) return std::nullopt;  // unreadable: keep everything
    collect(p);
    const json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (s.is_object()) {
      for (const char* key : {"adapter", "weights"}) {
        if (s.contains(key)) collect(s[key]);
      }
    }
    return keep;
  }

  std::vector<std::string> ShardOwnBlobs(std::string_view shard_params) const override {
    json p = json::parse(shard_params.begin(), shard_params.end(), nullptr, false);
    if (!p.is_object()) return {};
    auto version = FileHashes(p, p.contains("weights") ? "weights" : "adapter");
    return version.ok() ? *version : std::vector<std::string>{};
  }

  // 4 x the base's weights x the tokens of the shard's examples (every
  // local step's, for DiLoCo), TrainFlopsPerToken. The lengths come from
  // the data this planner loaded for the job (Plan, Advance); 0 (unknown)
  // before it has, or for params without "model_dims".
  double ShardFlops(std::string_view job_params, std::string_view shard_params) const override {
    json j = json::parse(job_params.begin(), job_params.end(), nullptr, false);
    json p = json::parse(shard_params.begin(), shard_params.end(), nullptr, false);
    if (!j.is_object() || !p.is_object() || !j.contains("model_dims")) return 0;
    auto dims = ModelDimsFromJson(j["model_dims"]);
    auto data = j.find("data");
    if (!dims.ok() || data == j.end() || !data->is_string()) return 0;
    uint64_t seed = 0;
    if (auto sd = j.find("seed"); sd != j.end() && sd->is_number_unsigned()) {
      seed = sd->get<uint64_t>();
    }
    std::shared_ptr<Batches> b;
    {
      std::lock_guard l(mu_);
      auto it = batches_.find(data->get<std::string>() + ":" + std::to_string(seed));
      if (it == batches_.end()) return 0;
      b = it->second;
    }
    double tokens = 0;
    auto add = [&](const json& list) {
      if (!list.is_array()) return;
      for (const json& e : list) {
        if (e.is_number_integer()) tokens += double(b->Length(e.get<int64_t>()));
      }
    };
    if (auto e = p.find("examples"); e != p.end()) add(*e);
    if (auto st = p.find("steps_examples"); st != p.end() && st->is_array()) {
      for (const json& step : *st) add(step);
    }
    return TrainFlopsPerToken(*dims, j.value("method", "lora") == "full") * tokens;
  }

  // Applying a step reads the round's results; nothing is folded per shard.
  std::string Fold(std::string_view summary, int64_t, std::string_view) const override {
    return std::string(summary);
  }

  std::string Output(const std::vector<FetchedShard>&) const override { return ""; }
  std::string OutputTail(const JobInfo&) const override { return ""; }

  std::string Summary(const JobInfo& job) const override {
    json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (!s.is_object()) s = json::object();
    auto f = ParseParams(job.params);
    if (f.ok()) {
      s["steps"] = f->steps;
      s["batch"] = f->batch;
      s["mode"] = f->diloco ? "diloco" : "sync";
      if (f->diloco) {
        s["rounds"] = f->rounds;
        s["local_steps"] = f->local_steps;
        if (!s.contains("round")) s["round"] = 0;
      }
      if (!s.contains(f->version_key)) s[f->version_key] = f->adapter;
      if (f->full) s["method"] = "full";
    }
    if (!s.contains("step")) s["step"] = 0;
    return s.dump();
  }

  std::string RoundsOutput(const JobInfo& job,
                           const std::vector<JobRound>& rounds) const override {
    json s = json::parse(Summary(job), nullptr, false);
    json out = {{"kind", "finetune"}, {"step", s.value("step", int64_t(0))},
                {"trainer_log", json::array()}};
    if (s.value("method", "lora") == "full") {
      // A Hugging Face directory: the base's files but its weights, and the
      // current version as model.safetensors.
      out["method"] = "full";
      json files = json::object();
      auto f = ParseParams(job.params);
      const json model = f.ok() ? f->model : json::object();
      for (const auto& [name, hash] : model.items()) {
        if (!IsWeightsFileName(name)) files[name] = hash;
      }
      const json weights = s.value("weights", json::object());
      if (weights.contains(kFullWeights)) files[kFullWeights] = weights[kFullWeights];
      out["files"] = std::move(files);
    } else {
      out["adapter"] = s.value("adapter", json::object());
    }
    for (const auto& r : rounds) {
      json info = json::parse(r.info, nullptr, false);
      if (info.is_object()) out["trainer_log"].push_back(std::move(info));
    }
    return out.dump();
  }

  Result<JobAdvance> Advance(const JobInfo& job, Store& store, BlobStore& blobs,
                             int64_t now_ms) const override {
    PCFARM_ASSIGN_OR_RETURN(FinetuneParams f, ParseParams(job.params));
    if (job.summary.find("\"replan\"") != std::string::npos) {
      json s = json::parse(job.summary, nullptr, false);
      if (s.is_object() && s.value("replan", false)) return Replan(job, f, std::move(s), blobs);
    }
    if (f.diloco) return AdvanceDiloco(job, f, store, blobs, now_ms);
    json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (!s.is_object()) s = json::object();
    const int64_t step = s.value("step", int64_t(0));  // steps applied so far
    JobAdvance adv;
    adv.expected_shards_total = job.shards_total;
    auto fail = [&](const std::string& why) {
      adv.end = JobAdvance::End::kFail;
      adv.reason = "step " + std::to_string(step + 1) + ": " + why;
      adv.summary = s.dump();
      return adv;
    };

    PCFARM_ASSIGN_OR_RETURN(RoundInput in,
                            ReadRound(job, s, f, store, blobs, "step " + std::to_string(step + 1)));
    DropStragglers(job, s, in, &adv);
    const AdapterTensors& adapter = in.adapter;
    const int64_t count = int64_t(adapter.flat.size());
    auto round = AggregateRound(in.results, count, f.rule, /*values_are_sums=*/true);
    if (!round.ok()) return fail(round.status().message());
    const std::vector<float>& mean = round->aggregate;
    const double loss_sum = round->loss_sum, weight = round->weight;
    const int64_t tokens = round->tokens, bytes_up = round->bytes_up;

    // One AdamW step with the engine's optimizer, from the stored state.
    BackendOptions bo;
    bo.cpu_threads = 1;
    PCFARM_ASSIGN_OR_RETURN(auto backend, CreateBackend("cpu", bo));
    PCFARM_ASSIGN_OR_RETURN(auto adamw, FlatAdamW::Create(adapter.layout, backend.get()));
    if (s.contains("optimizer")) {
      if (!IsBlobHashJson(s["optimizer"])) return fail("the summary's optimizer is not a hash");
      PCFARM_ASSIGN_OR_RETURN(std::string state,
                              ReadWholeBlob(blobs, s["optimizer"].get<std::string>(),
                                            4 * kFinetuneMaxAdapterBytes, "the optimizer state"));
      PCFARM_RETURN_IF_ERROR(adamw->RestoreState(state));
    }
    std::vector<float> params = adapter.flat;
    auto stats = adamw->Apply(&params, mean, f.opt);
    if (!stats.ok()) return fail(stats.status().message());

    std::string state_hash;
    json sent;
    PCFARM_ASSIGN_OR_RETURN(json next_adapter, PutVersion(blobs, f, in, params, adamw->EncodeState(),
                                                          &state_hash, &sent, &adv));

    const double loss = loss_sum / weight;
    const int64_t examples = round->examples;
    const int64_t bytes_down = BytesDown(blobs, in);
    const int64_t started = s.value("round_started_ms", job.created_ms);
    json info = {{"step", step + 1},
                 {"loss", loss},
                 {"tokens", tokens},
                 {"examples", examples},
                 {"grad_norm", stats->grad_norm},
                 {"clip_scale", stats->clip_scale},
                 {"shards", round->shards},
                 {"dropped", in.dropped},
                 {"workers", round->workers},
                 {"bytes_up", bytes_up},
                 {"bytes_down", bytes_down},
                 {"seconds", double(std::max<int64_t>(0, now_ms - started)) / 1000.0}};
    adv.round = step + 1;
    adv.round_info = info.dump();

    s["step"] = step + 1;
    s["optimizer"] = state_hash;
    FoldRound(&s, f, job, next_adapter, sent, loss, tokens, examples, bytes_up, bytes_down,
              now_ms);
    if (step + 1 >= f.steps) {
      adv.end = JobAdvance::End::kSucceed;
      char msg[96];
      std::snprintf(msg, sizeof msg, "%lld steps done, last loss %.6f",
                    static_cast<long long>(step + 1), loss);
      adv.reason = msg;
    } else {
      PCFARM_ASSIGN_OR_RETURN(auto data, LoadData(blobs, f));
      PCFARM_ASSIGN_OR_RETURN(adv.shards, StepShards(f, sent, *data, step + 2));
    }
    adv.summary = s.dump();
    return adv;
  }

 private:
  // A rewound job (Store::Db::RewindForBannedTx): its summary is the one a
  // round started from (adapter version, optimizer state, steps or rounds
  // done), marked "replan"; that round's shards are planned again from it,
  // as Plan and Advance planned them (the same examples: StepShards and
  // RoundShards depend on the step or round and the seed only).
  Result<JobAdvance> Replan(const JobInfo& job, const FinetuneParams& f, json s,
                            const BlobStore& blobs) const {
    s.erase("replan");
    JobAdvance adv;
    adv.expected_shards_total = job.shards_total;
    // What the round's shards named: recorded with the version (Advance),
    // or, for the first round, the job's start.
    json sent;
    if (s.contains("shard_version")) {
      sent = s["shard_version"];
    } else if (s.contains(f.version_key) && s[f.version_key] != f.adapter) {
      sent = {{f.version_key, s[f.version_key]}};  // a summary from before "shard_version"
    } else {
      PCFARM_ASSIGN_OR_RETURN(sent, StartVersion(blobs, f));
    }
    PCFARM_ASSIGN_OR_RETURN(auto data, LoadData(blobs, f));
    if (f.diloco) {
      PCFARM_ASSIGN_OR_RETURN(adv.shards,
                              RoundShards(f, sent, *data, s.value("round", int64_t(0)) + 1));
    } else {
      PCFARM_ASSIGN_OR_RETURN(adv.shards,
                              StepShards(f, sent, *data, s.value("step", int64_t(0)) + 1));
    }
    adv.summary = s.dump();
    adv.reason = "round planned again after a rewind";
    return adv;
  }

  // What a finished round starts from: the adapter version its shards
  // named and their accepted results (every shard since the summary's
  // "round_first_shard").
  struct RoundInput {
    json adapter_files;
    AdapterTensors adapter;
    std::vector<AcceptedResult> results;
    int64_t dropped = 0;  // shards of the round left out (quorum)
  };
  static Result<RoundInput> ReadRound(const JobInfo& job, const json& s, const FinetuneParams& f,
                                      Store& store, const BlobStore& blobs,
                                      const std::string& what) {
    RoundInput in;
    in.adapter_files = s.contains(f.version_key) ? s[f.version_key] : f.adapter;
    PCFARM_ASSIGN_OR_RETURN(in.adapter, ReadAdapter(blobs, f, in.adapter_files));
    const int64_t first = s.value("round_first_shard", int64_t(0));
    PCFARM_ASSIGN_OR_RETURN(in.results, store.AcceptedResults(job.id, first));
    const RoundCount c = CountRound(job, s);
    if (int64_t(in.results.size()) != c.accepted) {
      return Internal("job " + std::to_string(job.id) + ": " + std::to_string(in.results.size()) +
                      " accepted results for the " + std::to_string(c.accepted) +
                      " accepted shards of " + what);
    }
    if (c.accepted < c.shards) {
      if (c.accepted < QuorumOf(f, c.shards)) {
        return FailedPrecondition(what + " has " + std::to_string(c.accepted) + " of " +
                                  std::to_string(c.shards) + " shards, under its quorum");
      }
      in.dropped = c.shards - c.accepted;
    }
    return in;
  }

  // The current round's shards and how many of them are accepted: every
  // shard before "round_first_shard" is settled, and only a finished
  // round drops shards, so the dropped ones all lie before it.
  struct RoundCount {
    int64_t shards = 0, accepted = 0;
  };
  static RoundCount CountRound(const JobInfo& job, const json& s) {
    const int64_t first = s.value("round_first_shard", int64_t(0));
    return {job.shards_total - first, job.shards_accepted - (first - job.shards_dropped)};
  }
  static int64_t QuorumOf(const FinetuneParams& f, int64_t shards) {
    return std::max<int64_t>(1, int64_t(std::ceil(f.quorum * double(shards) - 1e-9)));
  }
  // Marks `adv` as proceeding without the round's unaccepted shards.
  // Notes the results the round read (AdvanceJob refuses the advance if
  // they changed meanwhile), and drops the round's stragglers when it goes
  // on with its quorum.
  static void DropStragglers(const JobInfo& job, const json& s, const RoundInput& in,
                             JobAdvance* adv) {
    adv->results_from_shard = s.value("round_first_shard", int64_t(0));
    adv->expected_result_ids.clear();
    for (const AcceptedResult& r : in.results) adv->expected_result_ids.push_back(r.result_id);
    if (in.dropped == 0) return;
    adv->drop_unaccepted = true;
    adv->expected_shards_accepted = job.shards_accepted;
  }

  // Stores `params` as the adapter's next version and `state` (the
  // optimizer's) as blobs, listed in `adv` for AdvanceJob; returns the
  // next version's files and sets `*state_hash` and `*sent`, what the next
  // round's shards name: the version, or (a LoRA job with --compress fp16
  // or int8) its values in the job's codec as adapter_model.pcg beside its
  // config (CompressedVersion).
  static Result<json> PutVersion(BlobStore& blobs, const FinetuneParams& f, const RoundInput& in,
                                 const std::vector<float>& params, const std::string& state,
                                 std::string* state_hash, json* sent, JobAdvance* adv) {
    PCFARM_ASSIGN_OR_RETURN(const std::string weights,
                            EncodeAdapterSafetensors(in.adapter.layout, params));
    PCFARM_ASSIGN_OR_RETURN(std::string weights_hash, blobs.Put(weights));
    PCFARM_ASSIGN_OR_RETURN(*state_hash, blobs.Put(state));
    adv->blobs = {{weights_hash, int64_t(weights.size())}, {*state_hash, int64_t(state.size())}};
    json next = in.adapter_files;
    next[f.weights_file] = weights_hash;
    *sent = {{f.version_key, next}};
    if (!f.full && f.codec != GradientCodec::kNone) {
      auto message = EncodeGradient(f.codec, params, WirePacking(f.codec));
      if (message.ok()) {  // else (fp16 out of range) the version goes as it is
        PCFARM_ASSIGN_OR_RETURN(std::string hash, blobs.Put(*message));
        adv->blobs.push_back({hash, int64_t(message->size())});
        json files = {{kAdapterConfig, next[kAdapterConfig]}, {kCompressedVersion, hash}};
        *sent = {{f.version_key, std::move(files)}};
      }
    }
    return next;
  }

  // The shards' first version (`{key: files}` or `{"lora": config}`,
  // spliced into each shard): a LoRA job whose start adapter is exactly
  // the one EnableLora draws from the job's seed (InitialLoraValues; what
  // `pcfarm submit finetune` uploads, as `local finetune` starts) names
  // the LoRA config with that seed, and each worker draws it itself
  // instead of downloading it; any other start is named as it is.
  Result<json> StartVersion(const BlobStore& blobs, const FinetuneParams& f) const {
    const json as_is = {{f.version_key, f.adapter}};
    if (f.full || f.seed > UINT32_MAX) return as_is;
    const std::string key = f.adapter.dump() + ":" + std::to_string(f.seed);
    {
      std::lock_guard l(mu_);
      if (auto it = seeded_.find(key); it != seeded_.end()) return it->second;
    }
    PCFARM_ASSIGN_OR_RETURN(AdapterTensors a, ReadAdapter(blobs, f, f.adapter));
    json out = as_is;
    // Within what the train kind's "lora" takes (else the start is sent).
    const bool fits = a.lora.rank <= kMaxSeededRank && a.lora.alpha >= 1e-6 && a.lora.alpha <= 1e6;
    if (fits && InitialLoraValues(a.layout, f.seed) == a.flat) {
      out = {{"lora",
              {{"rank", a.lora.rank},
               {"alpha", a.lora.alpha},
               {"targets", a.lora.target_modules},
               {"seed", f.seed}}}};
    }
    std::lock_guard l(mu_);
    if (seeded_.size() >= 64) seeded_.clear();
    seeded_[key] = out;
    return out;
  }

  // What the round's shards downloaded at most: the version files each
  // named (workers cache the model and data; a seeded start names none).
  static int64_t BytesDown(const BlobStore& blobs, const RoundInput& in) {
    int64_t total = 0;
    for (const auto& r : in.results) {
      json p = json::parse(r.params, nullptr, false);
      if (!p.is_object()) continue;
      for (const char* key : {"adapter", "weights"}) {
        auto files = p.find(key);
        if (files == p.end() || !files->is_object()) continue;
        for (const auto& [name, hash] : files->items()) {
          if (!hash.is_string()) continue;
          auto size = blobs.Size(hash.get<std::string>());
          total += size.ok() ? *size : 0;
        }
      }
    }
    return total;
  }

  // The summary after a round: its adapter version, its loss in the trend,
  // the totals, and where the next round's shards start.
  static void FoldRound(json* s, const FinetuneParams& f, const JobInfo& job,
                        const json& next_adapter, const json& sent, double loss,
                        int64_t tokens, int64_t examples, int64_t bytes_up, int64_t bytes_down,
                        int64_t now_ms) {
    json& x = *s;
    x[f.version_key] = next_adapter;
    x["shard_version"] = sent;
    x["loss"] = loss;
    json losses = x.value("losses", json::array());
    losses.push_back(loss);
    while (losses.size() > size_t(kFinetuneLossTrend)) losses.erase(losses.begin());
    x["losses"] = losses;
    x["tokens"] = x.value("tokens", int64_t(0)) + tokens;
    x["examples"] = x.value("examples", int64_t(0)) + examples;
    x["bytes_up"] = x.value("bytes_up", int64_t(0)) + bytes_up;
    x["bytes_down"] = x.value("bytes_down", int64_t(0)) + bytes_down;
    x["round_first_shard"] = job.shards_total;
    x["round_started_ms"] = now_ms;
  }

  // DiLoCo, round r (1-based; the summary's "round" is r - 1): the shards'
  // pseudo-gradients, aggregated as sync aggregates gradients, give the
  // outer gradient g = -mean; one outer Nesterov step from the stored
  // momentum makes adapter version r. The adapter and the momentum state
  // are blobs committed with the summary (AdvanceJob), so a restart
  // repeats this from the same inputs and gets the same bytes.
  Result<JobAdvance> AdvanceDiloco(const JobInfo& job, const FinetuneParams& f, Store& store,
                                   BlobStore& blobs, int64_t now_ms) const {
    json s = json::parse(job.summary.empty() ? "{}" : job.summary, nullptr, false);
    if (!s.is_object()) s = json::object();
    const int64_t step = s.value("step", int64_t(0));    // inner steps done
    const int64_t round = s.value("round", int64_t(0));  // rounds done
    const int64_t inner = std::min(f.local_steps, f.steps - step);  // this round's
    JobAdvance adv;
    adv.expected_shards_total = job.shards_total;
    auto fail = [&](const std::string& why) {
      adv.end = JobAdvance::End::kFail;
      adv.reason = "round " + std::to_string(round + 1) + ": " + why;
      adv.summary = s.dump();
      return adv;
    };
    if (inner < 1) return fail("the job's " + std::to_string(f.steps) + " steps are done");

    PCFARM_ASSIGN_OR_RETURN(
        RoundInput in, ReadRound(job, s, f, store, blobs, "round " + std::to_string(round + 1)));
    DropStragglers(job, s, in, &adv);
    const AdapterTensors& adapter = in.adapter;
    const int64_t count = int64_t(adapter.flat.size());
    auto agg = AggregateRound(in.results, count, f.rule, /*values_are_sums=*/false);
    if (!agg.ok()) return fail(agg.status().message());

    OuterOptimizerState state;
    if (s.contains("outer")) {
      if (!IsBlobHashJson(s["outer"])) return fail("the summary's outer state is not a hash");
      PCFARM_ASSIGN_OR_RETURN(std::string bytes,
                              ReadWholeBlob(blobs, s["outer"].get<std::string>(),
                                            2 * kFinetuneMaxAdapterBytes,
                                            "the outer optimizer state"));
      auto decoded = DecodeOuterOptimizerState(bytes, count);
      if (!decoded.ok()) return fail(decoded.status().message());
      state = std::move(*decoded);
    }
    double delta_norm = 0;
    std::vector<float> outer_gradient(agg->aggregate.size());
    for (size_t i = 0; i < outer_gradient.size(); ++i) {
      outer_gradient[i] = -agg->aggregate[i];
      delta_norm += double(agg->aggregate[i]) * double(agg->aggregate[i]);
    }
    std::vector<float> params = adapter.flat;
    Status stepped = OuterNesterovStep(params, outer_gradient, f.outer, &state);
    if (!stepped.ok()) return fail(stepped.message());
    for (float v : params) {
      if (!std::isfinite(v)) return fail("the outer step made a parameter that is not finite");
    }

    std::string state_hash;
    json sent;
    PCFARM_ASSIGN_OR_RETURN(json next_adapter,
                            PutVersion(blobs, f, in, params, EncodeOuterOptimizerState(state),
                                       &state_hash, &sent, &adv));

    const double loss = agg->loss_sum / agg->weight;
    const int64_t examples = agg->examples;
    const int64_t bytes_down = BytesDown(blobs, in);
    const int64_t started = s.value("round_started_ms", job.created_ms);
    json info = {{"round", round + 1},
                 {"step", step + inner},
                 {"local_steps", inner},
                 {"loss", loss},
                 {"tokens", agg->tokens},
                 {"examples", examples},
                 {"pseudo_grad_norm", std::sqrt(delta_norm)},
                 {"shards", agg->shards},
                 {"dropped", in.dropped},
                 {"workers", agg->workers},
                 {"bytes_up", agg->bytes_up},
                 {"bytes_down", bytes_down},
                 {"seconds", double(std::max<int64_t>(0, now_ms - started)) / 1000.0}};
    adv.round = round + 1;
    adv.round_info = info.dump();

    s["mode"] = "diloco";
    s["round"] = round + 1;
    s["rounds"] = f.rounds;
    s["step"] = step + inner;
    s["outer"] = state_hash;
    FoldRound(&s, f, job, next_adapter, sent, loss, agg->tokens, examples, agg->bytes_up,
              bytes_down, now_ms);
    if (step + inner >= f.steps) {
      adv.end = JobAdvance::End::kSucceed;
      char msg[128];
      std::snprintf(msg, sizeof msg, "%lld rounds (%lld steps) done, last loss %.6f",
                    static_cast<long long>(round + 1), static_cast<long long>(step + inner),
                    loss);
      adv.reason = msg;
    } else {
      PCFARM_ASSIGN_OR_RETURN(auto data, LoadData(blobs, f));
      PCFARM_ASSIGN_OR_RETURN(adv.shards, RoundShards(f, sent, *data, round + 2));
    }
    adv.summary = s.dump();
    return adv;
  }

  // The shards of DiLoCo round `round` (1-based), on `adapter`: its inner
  // steps are the job's steps (round - 1)·H + 1 .. + H (fewer in the last
  // round); step t's batch is cut into K = ceil(B / M) slices of M, and
  // replica k gets slice k of every step's batch, one per local step.
  Result<std::vector<ShardSpec>> RoundShards(const FinetuneParams& f, const json& sent,
                                             Batches& data, int64_t round) const {
    const int64_t first = (round - 1) * f.local_steps + 1;
    const int64_t inner = std::min(f.local_steps, f.steps - first + 1);
    std::vector<std::vector<int64_t>> batches;
    {
      std::lock_guard l(mu_);
      for (int64_t t = 0; t < inner; ++t) batches.push_back(data.Step(first + t, f.batch, f.seed));
    }
    const TaskKind* kind = TaskKindRegistry::Builtin().Find("train");
    if (!kind) return Internal("this coordinator has no train task kind");
    const json optimizer = {{"lr", f.opt.lr},
                            {"beta1", f.opt.beta1},
                            {"beta2", f.opt.beta2},
                            {"eps", f.opt.eps},
                            {"weight_decay", f.opt.weight_decay},
                            {"max_grad_norm", f.opt.max_grad_norm}};
    std::vector<ShardSpec> out;
    const size_t batch = batches.front().size(), m = size_t(f.micro_batch);
    for (size_t k = 0; k * m < batch; ++k) {
      json steps = json::array();
      for (const auto& b : batches) {
        const size_t from = std::min(b.size(), k * m), to = std::min(b.size(), (k + 1) * m);
        steps.push_back(std::vector<int64_t>(b.begin() + long(from), b.begin() + long(to)));
      }
      json shard = {{"model", f.model},
                    {"data", f.data},
                    {"steps_examples", std::move(steps)},
                    {"local_steps", inner},
                    {"optimizer", optimizer}};
      for (const auto& [key, value] : sent.items()) shard[key] = value;
      if (f.codec != GradientCodec::kNone) {
        shard["compress"] = GradientCodecName(f.codec);
        shard["feedback"] = f.feedback;
      }
      if (!f.quantize.is_null()) shard["quantize"] = f.quantize;
      if (f.full) shard["method"] = "full";
      std::string sp = shard.dump();
      Status v = kind->ValidateParams(sp);
      if (!v.ok()) return v.WithContext("round " + std::to_string(round));
      out.push_back(ShardSpec{std::move(sp), "", f.needs_memory_bytes});
    }
    return out;
  }

  // The adapter version `files` names, parsed.
  static Result<AdapterTensors> ReadAdapter(const BlobStore& blobs, const FinetuneParams& f,
                                            const json& files) {
    if (f.full) {
      PCFARM_ASSIGN_OR_RETURN(std::string weights,
                              ReadWholeBlob(blobs, files[kFullWeights].get<std::string>(),
                                            kFinetuneMaxAdapterBytes,
                                            std::string("the weights' ") + kFullWeights));
      return ParseFullWeights(weights);
    }
    PCFARM_ASSIGN_OR_RETURN(std::string config,
                            ReadWholeBlob(blobs, files[kAdapterConfig].get<std::string>(),
                                          1 << 20, std::string("the adapter's ") + kAdapterConfig));
    PCFARM_ASSIGN_OR_RETURN(std::string weights,
                            ReadWholeBlob(blobs, files[kAdapterWeights].get<std::string>(),
                                          kFinetuneMaxAdapterBytes,
                                          std::string("the adapter's ") + kAdapterWeights));
    return ParseAdapter(config, weights);
  }

  // The data blob's batches (cached per data hash and seed).
  Result<std::shared_ptr<Batches>> LoadData(const BlobStore& blobs,
                                            const FinetuneParams& f) const {
    const std::string key = f.data + ":" + std::to_string(f.seed);
    {
      std::lock_guard l(mu_);
      auto it = batches_.find(key);
      if (it != batches_.end()) return it->second;
    }
    PCFARM_ASSIGN_OR_RETURN(std::string bytes,
                            ReadWholeBlob(blobs, f.data, kFinetuneMaxDataBytes, "the data"));
    PCFARM_ASSIGN_OR_RETURN(auto seqs, DecodeTokenData(bytes, 0));
    if (int64_t(seqs.size()) != f.examples) {
      return InvalidArgument("the data blob holds " + std::to_string(seqs.size()) +
                             " sequences, the params say " + std::to_string(f.examples));
    }
    std::vector<int64_t> usable = UsableSequences(seqs);
    if (usable.empty()) return InvalidArgument("no sequence of the data has a counted token");
    std::vector<int32_t> lengths;
    lengths.reserve(seqs.size());
    for (const auto& q : seqs) lengths.push_back(int32_t(q.tokens.size()));
    auto b = std::make_shared<Batches>(std::move(usable), f.seed, std::move(lengths));
    std::lock_guard l(mu_);
    if (batches_.size() >= 8) batches_.clear();
    batches_[key] = b;
    return b;
  }

  // The shards of step `step`: its batch in micro-batches, on `adapter`.
  Result<std::vector<ShardSpec>> StepShards(const FinetuneParams& f, const json& sent,
                                            Batches& data, int64_t step) const {
    std::vector<int64_t> batch;
    {
      std::lock_guard l(mu_);
      batch = data.Step(step, f.batch, f.seed);
    }
    const TaskKind* kind = TaskKindRegistry::Builtin().Find("train");
    if (!kind) return Internal("this coordinator has no train task kind");
    std::vector<ShardSpec> out;
    for (size_t i = 0; i < batch.size(); i += size_t(f.micro_batch)) {
      json shard = {{"model", f.model}, {"data", f.data}, {"examples", json::array()}};
      for (const auto& [key, value] : sent.items()) shard[key] = value;
      if (f.codec != GradientCodec::kNone) {
        shard["compress"] = GradientCodecName(f.codec);
        shard["feedback"] = f.feedback;
      }
      if (!f.quantize.is_null()) shard["quantize"] = f.quantize;
      if (f.full) shard["method"] = "full";
      for (size_t j = i; j < std::min(batch.size(), i + size_t(f.micro_batch)); ++j) {
        shard["examples"].push_back(batch[j]);
      }
      std::string sp = shard.dump();
      Status v = kind->ValidateParams(sp);
      if (!v.ok()) return v.WithContext("step " + std::to_string(step));
      out.push_back(ShardSpec{std::move(sp), "", f.needs_memory_bytes});
    }
    return out;
  }

  mutable std::mutex mu_;
  mutable std::map<std::string, std::shared_ptr<Batches>> batches_;
  mutable std::map<std::string, json> seeded_;  // StartVersion's answers
};

}  // namespace

std::unique_ptr<JobPlanner> MakeFinetunePlanner() { return std::make_unique<FinetunePlanner>(); }

}  // namespace pcfarm
