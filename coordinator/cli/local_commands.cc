#include "coordinator/cli/local_commands.h"

#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <numeric>
#include <sstream>

#include "coordinator/cli/local_model.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/data.h"
#include "tasks/engine/llama.h"
#include "base/file.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// Sequences per forward pass in eval and prompts per Generate call: bounds
// the activations' memory whatever the file's size.
constexpr size_t kEvalBatchSequences = 16;
constexpr size_t kGenerateBatchPrompts = 16;

int Fail(const std::string& what) {
  std::fprintf(stderr, "pcfarm: %s\n", what.c_str());
  return 1;
}

int Fail(const Status& s) { return Fail(s.message()); }

void Note(const std::string& what) { std::fprintf(stderr, "pcfarm: note: %s\n", what.c_str()); }

// One JSON line on stdout; bytes that are not UTF-8 (a byte-level token can
// end mid-character) become U+FFFD instead of throwing.
void PrintJson(const json& j) {
  std::cout << j.dump(-1, ' ', false, json::error_handler_t::replace) << std::endl;
}

// The backend and the model on it; the model is destroyed first.
struct Engine {
  std::unique_ptr<Backend> backend;
  std::unique_ptr<LlamaModel> model;
  Tokenizer tokenizer;
  int32_t eos_id = -1;  // the config's first EOS id, or -1
};

Status CheckEngineOptions(const LocalOptions& o) {
  if (o.device < 0) return InvalidArgument("--device must be >= 0");
  if (o.threads < 0) return InvalidArgument("--threads must be >= 0 (0: all cores)");
  if (auto q = ParseWeightQuantization(o.quantize); !q.ok())
    return q.status().WithContext("--quantize");
  return Status::Ok();
}

Result<Engine> OpenEngine(const LocalOptions& o) {
  BackendOptions bo;
  bo.cpu_threads = o.threads;
  bo.device_index = o.device;
  auto backend = CreateBackend(o.backend, bo);
  // A GPU backend whose driver or device is missing, or that cannot hold
  // the model, falls back to the CPU with a warning; an unknown name or a
  // bad option is an error.
  auto fall_back = [&](const Status& why) -> Status {
    std::fprintf(stderr, "pcfarm: warning: --backend %s: %s; using the CPU\n",
                 o.backend.c_str(), why.message().c_str());
    BackendOptions cpu;
    cpu.cpu_threads = o.threads;
    auto b = CreateBackend("cpu", cpu);
    if (!b.ok()) return b.status();
    backend = std::move(b);
    return Status::Ok();
  };
  auto device_failure = [](StatusCode c) {
    return c == StatusCode::kUnavailable || c == StatusCode::kResourceExhausted ||
           c == StatusCode::kInternal || c == StatusCode::kTimeout;
  };
  if (!backend.ok()) {
    if (o.backend == "cpu" || !device_failure(backend.status().code())) {
      return backend.status().WithContext("--backend " + o.backend);
    }
    PCFARM_RETURN_IF_ERROR(fall_back(backend.status()));
  }
  auto loaded = LoadModel(o.model);
  if (!loaded.ok()) return loaded.status().WithContext("--model " + o.model);
  LlamaOptions lo;
  PCFARM_ASSIGN_OR_RETURN(lo.quantize, ParseWeightQuantization(o.quantize));
  auto model = LlamaModel::Create(loaded->config, loaded->weights, backend->get(), lo);
  if (!model.ok() && (*backend)->name() != "cpu" && device_failure(model.status().code())) {
    PCFARM_RETURN_IF_ERROR(fall_back(model.status()));
    model = LlamaModel::Create(loaded->config, loaded->weights, backend->get(), lo);
  }
  if (!model.ok())
    return model.status().WithContext("--model " + o.model +
                                      (o.quantize.empty() ? "" : " --quantize " + o.quantize));
  if (const auto& kept = (*model)->UnquantizedProjections(); !kept.empty()) {
    Note(std::to_string(kept.size()) + " projections stay as loaded, their rows not whole " +
         "32-value blocks (" + kept[0] + (kept.size() > 1 ? ", ..." : "") + ")");
  }
  if (lo.quantize != StorageType::kF32 && !(*backend)->SupportsStorage(lo.quantize)) {
    Note(std::string("the ") + (*backend)->name() + " backend does not hold " +
         StorageTypeName(lo.quantize) +
         " weights: they are quantized, then held dequantized in f32 (same results, no "
         "memory saved)");
  }
  Engine e{std::move(backend).value(), nullptr, std::move(loaded->tokenizer), -1};
  e.model = std::move(model).value();
  if (!loaded->config.eos_token_ids.empty()) e.eos_id = int32_t(loaded->config.eos_token_ids[0]);
  if (!o.adapter.empty()) {
    Status s = e.model->LoadAdapter(o.adapter);
    if (!s.ok()) return s.WithContext("--adapter " + o.adapter);
  }
  return e;
}

int64_t MaxLength(const LocalOptions& o, const Engine& e) {
  return o.max_length > 0 ? o.max_length : e.model->config().max_position_embeddings;
}

// Reads and validates the data file, then tokenizes it; notes what was cut.
Result<TokenizedData> LoadData(const LocalOptions& o, const std::vector<Example>& examples,
                               const Engine& e) {
  const int64_t max_length = MaxLength(o, e);
  TokenizedData d = TokenizeExamples(examples, e.tokenizer, e.eos_id, max_length);
  if (d.truncated > 0) {
    Note(std::to_string(d.truncated) + " of " + std::to_string(examples.size()) +
         " examples were cut to " + std::to_string(max_length) + " tokens (--max-length)");
  }
  if (d.without_counted > 0) {
    Note(std::to_string(d.without_counted) + " of " + std::to_string(examples.size()) +
         " examples have no token the loss counts (after cutting) and add nothing");
  }
  if (d.counted_tokens == 0) {
    return InvalidArgument(o.data + ": no example has a token the loss counts");
  }
  return d;
}

// ---- generate ----------------------------------------------------------------

int RunGenerate(const LocalOptions& o) {
  if (o.prompt.empty() == o.prompts_file.empty()) {
    return Fail("generate: give exactly one of --prompt TEXT and --prompts FILE.jsonl");
  }
  if (o.max_tokens < 0 || o.max_tokens > 1'000'000) return Fail("--max-tokens must be 0..1000000");
  if (!(o.temperature >= 0) || !std::isfinite(o.temperature)) {
    return Fail("--temperature must be >= 0 (0: greedy)");
  }
  if (o.top_k < 0) return Fail("--top-k must be >= 0 (0: off)");
  if (!(o.top_p > 0 && o.top_p <= 1)) return Fail("--top-p must be in (0, 1]");
  if (Status s = CheckEngineOptions(o); !s.ok()) return Fail(s);
  std::vector<std::string> prompts;
  if (!o.prompt.empty()) {
    prompts.push_back(o.prompt);
  } else {
    auto p = ReadPromptsJsonl(o.prompts_file);
    if (!p.ok()) return Fail(p.status());
    prompts = std::move(p).value();
  }
  auto engine = OpenEngine(o);
  if (!engine.ok()) return Fail(engine.status());
  GenerationConfig gc;
  gc.sampling.temperature = o.temperature;
  gc.sampling.top_k = o.top_k;
  gc.sampling.top_p = o.top_p;
  gc.max_new_tokens = o.max_tokens;
  for (size_t start = 0; start < prompts.size(); start += kGenerateBatchPrompts) {
    const size_t end = std::min(prompts.size(), start + kGenerateBatchPrompts);
    std::vector<GenerationRequest> requests;
    for (size_t i = start; i < end; ++i) {
      GenerationRequest r;
      r.prompt = engine->tokenizer.Encode(prompts[i], true);
      if (r.prompt.empty()) return Fail("prompt " + std::to_string(i + 1) + " has no tokens");
      r.seed = o.seed + i;
      requests.push_back(std::move(r));
    }
    auto gens = engine->model->Generate(requests, gc);
    if (!gens.ok()) return Fail(gens.status());
    for (size_t i = start; i < end; ++i) {
      const Generation& g = (*gens)[i - start];
      const std::string text = engine->tokenizer.Decode(g.tokens, /*skip_special=*/true);
      if (o.json) {
        PrintJson({{"prompt", prompts[i]},
                   {"tokens", g.tokens},
                   {"text", text},
                   {"logprobs", g.logprobs},
                   {"finish_reason", g.finish == FinishReason::kStop ? "stop" : "length"}});
      } else {
        std::cout << text << std::endl;
      }
    }
  }
  return 0;
}

// ---- eval --------------------------------------------------------------------

int RunEval(const LocalOptions& o) {
  if (o.max_length < 0) return Fail("--max-length must be >= 0 (0: the model's maximum)");
  if (Status s = CheckEngineOptions(o); !s.ok()) return Fail(s);
  auto examples = ReadExamplesJsonl(o.data);
  if (!examples.ok()) return Fail(examples.status());
  auto engine = OpenEngine(o);
  if (!engine.ok()) return Fail(engine.status());
  auto data = LoadData(o, *examples, *engine);
  if (!data.ok()) return Fail(data.status());
  CrossEntropySums total;
  const auto& seqs = data->sequences;
  for (size_t start = 0; start < seqs.size(); start += kEvalBatchSequences) {
    const size_t end = std::min(seqs.size(), start + kEvalBatchSequences);
    auto sums = engine->model->Loss(std::vector<TokenSequence>(seqs.begin() + start,
                                                               seqs.begin() + end));
    if (!sums.ok()) return Fail(sums.status());
    total.weighted_loss += sums->weighted_loss;
    total.weight += sums->weight;
    total.counted += sums->counted;
  }
  const double loss = total.mean();
  const double perplexity = std::exp(loss);
  if (o.json) {
    PrintJson({{"loss", loss},
               {"perplexity", perplexity},
               {"tokens", total.counted},
               {"examples", seqs.size()},
               {"truncated", data->truncated}});
  } else {
    std::printf("loss        %.6f\nperplexity  %.4f\ntokens      %lld\nexamples    %zu\n", loss,
                perplexity, static_cast<long long>(total.counted), seqs.size());
  }
  return 0;
}

// ---- finetune ----------------------------------------------------------------

std::vector<std::string> SplitTargets(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// The loss of each step: a bar redrawn in place on a terminal, one line per
// step otherwise, JSON lines with --json.
class StepReporter {
 public:
  StepReporter(int64_t steps, bool json) : steps_(steps), json_(json) {
    tty_ = !json && isatty(STDOUT_FILENO);
  }
  void Report(int64_t step, double loss, double grad_norm, int64_t tokens) {
    if (json_) {
      PrintJson({{"step", step},
                 {"steps", steps_},
                 {"loss", loss},
                 {"grad_norm", grad_norm},
                 {"tokens", tokens}});
    } else if (tty_) {
      constexpr int kWidth = 30;
      const int filled = int(kWidth * step / steps_);
      std::printf("\rstep %lld/%lld [%s%s] loss %.4f", static_cast<long long>(step),
                  static_cast<long long>(steps_), std::string(size_t(filled), '#').c_str(),
                  std::string(size_t(kWidth - filled), '-').c_str(), loss);
      if (step == steps_) std::printf("\n");
      std::fflush(stdout);
    } else {
      std::printf("step %lld/%lld loss %.6f grad_norm %.4f tokens %lld\n",
                  static_cast<long long>(step), static_cast<long long>(steps_), loss, grad_norm,
                  static_cast<long long>(tokens));
      std::fflush(stdout);
    }
  }
  // Ends a bar that stopped early (an error mid-run).
  void Abort() {
    if (tty_) std::printf("\n");
  }

 private:
  int64_t steps_;
  bool json_;
  bool tty_ = false;
};

// The files of a Hugging Face model directory a fully fine-tuned copy
// keeps as they are: its config and tokenizer. (Weights are written anew,
// as one model.safetensors; a shard index is not copied.)
constexpr const char* kHfFilesKept[] = {"config.json", "generation_config.json",
                                        "tokenizer.json", "tokenizer_config.json",
                                        "special_tokens_map.json"};

// `--method full`'s output: every weight of `model` in f32 as
// out/model.safetensors, beside copies of the source directory's config and
// tokenizer files, so that `pcfarm local generate --model out` and
// transformers' from_pretrained load it.
Status SaveFullModel(LlamaModel* model, const std::string& source_dir, const std::string& out) {
  PCFARM_ASSIGN_OR_RETURN(std::vector<NamedTensor> weights, model->ExportWeights());
  PCFARM_RETURN_IF_ERROR(MakeDirs(out));
  for (const char* name : kHfFilesKept) {
    const std::string from = source_dir + "/" + name;
    std::error_code ec;
    if (!std::filesystem::exists(from, ec)) continue;
    PCFARM_ASSIGN_OR_RETURN(std::string bytes, ReadFile(from, size_t(256) << 20));
    PCFARM_RETURN_IF_ERROR(WriteFileAtomic(out + "/" + name, bytes));
  }
  return WriteSafetensors(out + "/model.safetensors", weights, {{"format", "pt"}});
}

int RunFinetune(const LocalOptions& o) {
  if (o.method != "lora" && o.method != "full") return Fail("--method must be lora or full");
  const bool full = o.method == "full";
  if (full) {
    std::error_code ec;
    if (!std::filesystem::is_directory(o.model, ec))
      return Fail("--method full writes a Hugging Face model directory and needs one as "
                  "--model (" + o.model + " is not a directory; a GGUF file trains LoRA)");
    if (!o.quantize.empty())
      return Fail("--method full trains every weight in f32: it does not take --quantize "
                  "(QLoRA is --method lora --quantize ...)");
  }
  if (o.steps < 1 || o.steps > 10'000'000) return Fail("--steps must be 1..10000000");
  if (o.batch < 1 || o.batch > 100'000) return Fail("--batch must be 1..100000");
  if (!(o.lr > 0) || !std::isfinite(o.lr)) return Fail("--lr must be > 0");
  if (o.lora_rank < 1 || o.lora_rank > 4096) return Fail("--lora-rank must be 1..4096");
  if (!(o.lora_alpha > 0) || !std::isfinite(o.lora_alpha)) return Fail("--lora-alpha must be > 0");
  if (o.max_length < 0) return Fail("--max-length must be >= 0 (0: the model's maximum)");
  if (Status s = CheckEngineOptions(o); !s.ok()) return Fail(s);
  LoraConfig lora;
  lora.rank = o.lora_rank;
  lora.alpha = o.lora_alpha;
  lora.target_modules = SplitTargets(o.lora_targets);
  lora.seed = o.seed;
  auto examples = ReadExamplesJsonl(o.data);
  if (!examples.ok()) return Fail(examples.status());
  auto engine = OpenEngine(o);
  if (!engine.ok()) return Fail(engine.status());
  auto data = LoadData(o, *examples, *engine);
  if (!data.ok()) return Fail(data.status());
  if (full) {
    if (Status s = engine->model->EnableFullTraining(); !s.ok())
      return Fail(s.WithContext("--method full"));
  } else if (Status s = engine->model->EnableLora(lora); !s.ok()) {
    return Fail(s.WithContext("--lora-*"));
  }

  // Only sequences with counted tokens take part, in the order the farm's
  // finetune planner draws them too.
  BatchSampler sampler(UsableSequences(data->sequences), o.seed);
  StepReporter reporter(o.steps, o.json);
  OptimizerConfig opt;
  opt.lr = float(o.lr);
  double last_loss = 0;
  for (int64_t step = 1; step <= o.steps; ++step) {
    std::vector<TokenSequence> batch;
    for (int64_t i : sampler.Next(o.batch)) batch.push_back(data->sequences[size_t(i)]);
    auto sums = engine->model->AccumulateGradients(batch);
    if (!sums.ok()) {
      reporter.Abort();
      return Fail(sums.status().WithContext("step " + std::to_string(step)));
    }
    auto stats = engine->model->Step(opt);
    if (!stats.ok()) {
      reporter.Abort();
      return Fail(stats.status().WithContext("step " + std::to_string(step)));
    }
    last_loss = sums->mean();
    reporter.Report(step, last_loss, stats->grad_norm, sums->counted);
  }
  Status saved = full ? SaveFullModel(engine->model.get(), o.model, o.out)
                      : engine->model->SaveAdapter(o.out, o.model);
  if (!saved.ok()) return Fail(saved.WithContext("--out " + o.out));
  const int64_t trainable = engine->model->TrainableCount();
  const char* what = full ? "model" : "adapter";
  if (o.json) {
    PrintJson({{what, o.out},
               {"method", o.method},
               {"steps", o.steps},
               {"loss", last_loss},
               {"trainable_parameters", trainable}});
  } else {
    std::printf("%s written to %s (%lld trainable parameters, last loss %.6f)\n", what,
                o.out.c_str(), static_cast<long long>(trainable), last_loss);
  }
  return 0;
}

// ---- make-model --------------------------------------------------------------

// `cmd` is the make-model command: its --gguf option is not bound to a
// LocalOptions field, so its value is read from there.
int RunMakeModel(const LocalOptions& o, const CLI::App& cmd) {
  const CLI::Option* gguf_option = cmd.get_option("--gguf");
  const std::string gguf = gguf_option->empty() ? "" : gguf_option->results().front();
  auto info = WriteRandomModel(o.out, o.config, o.seed, gguf);
  if (!info.ok())
    return Fail(info.status().WithContext("--out " + o.out + (gguf.empty() ? "" : " --gguf " + gguf)));
  const ModelConfig& c = info->config;
  if (o.json) {
    json out = {{"out", o.out},
                {"config", o.config},
                {"parameters", info->parameters},
                {"hidden_size", c.hidden_size},
                {"num_hidden_layers", c.num_hidden_layers},
                {"vocab_size", c.vocab_size}};
    if (!gguf.empty()) out["gguf"] = gguf;
    PrintJson(out);
  } else {
    std::printf("wrote a random %s llama to %s%s%s: hidden %lld, %lld layers, vocab %lld, %lld parameters\n",
                o.config.c_str(), o.out.c_str(), gguf.empty() ? "" : " and ", gguf.c_str(),
                static_cast<long long>(c.hidden_size),
                static_cast<long long>(c.num_hidden_layers), static_cast<long long>(c.vocab_size),
                static_cast<long long>(info->parameters));
  }
  return 0;
}

}  // namespace

LocalCommands::LocalCommands(CLI::App* app) {
  local_ = app->add_subcommand("local", "run the engine on this machine alone (no coordinator)");
  local_->require_subcommand(1);
  LocalOptions& o = opt_;
  auto engine_flags = [&o](CLI::App* cmd) {
    cmd->add_option("--model", o.model, "model: a Hugging Face directory or a .gguf file")
        ->required();
    cmd->add_option("--backend", o.backend, "compute backend: cpu, vulkan or cuda")
        ->capture_default_str();
    cmd->add_option("--device", o.device, "GPU ordinal for GPU backends")->capture_default_str();
    cmd->add_option("--threads", o.threads, "CPU threads (0: all cores)")->capture_default_str();
    cmd->add_flag("--json", o.json, "print one JSON object per line for scripts");
    cmd->add_option("--quantize", o.quantize,
                    "quantize the q/k/v/o/gate/up/down projections at load: q8_0, q4_0, q4_k or q6_k "
                    "(an unquantized model; a quantized GGUF is used as it is, without it)");
  };

  generate_ = local_->add_subcommand("generate", "continue prompts");
  engine_flags(generate_);
  generate_->add_option("--prompt", o.prompt, "one prompt");
  generate_->add_option("--prompts", o.prompts_file,
                        "a JSONL file of {\"prompt\": ...} or {\"messages\": [...]} lines");
  generate_->add_option("--max-tokens", o.max_tokens, "new tokens at most")->capture_default_str();
  generate_->add_option("--temperature", o.temperature, "0: greedy")->capture_default_str();
  generate_->add_option("--top-k", o.top_k, "keep the k most likely tokens (0: off)")
      ->capture_default_str();
  generate_->add_option("--top-p", o.top_p, "nucleus sampling (1: off)")->capture_default_str();
  generate_->add_option("--seed", o.seed, "prompt i samples with seed + i")->capture_default_str();
  generate_->add_option("--adapter", o.adapter, "a PEFT LoRA adapter directory");

  eval_ = local_->add_subcommand("eval", "mean loss and perplexity of a data file");
  engine_flags(eval_);
  eval_->add_option("--data", o.data, "a JSONL data file")->required();
  eval_->add_option("--adapter", o.adapter, "a PEFT LoRA adapter directory");
  eval_->add_option("--max-length", o.max_length,
                    "cut examples to this many tokens (0: the model's maximum)");

  finetune_ = local_->add_subcommand(
      "finetune", "LoRA fine-tuning (a PEFT adapter) or full fine-tuning (a whole model)");
  engine_flags(finetune_);
  finetune_->add_option("--data", o.data, "a JSONL data file")->required();
  finetune_->add_option("--out", o.out,
                        "directory for the adapter (lora) or the Hugging Face model (full)")
      ->required();
  finetune_->add_option("--method", o.method,
                        "lora: train LoRA adapters on a frozen base; full: train every weight "
                        "(f32; a Hugging Face directory in, one out)")
      ->capture_default_str();
  finetune_->add_option("--steps", o.steps, "optimizer steps")->capture_default_str();
  finetune_->add_option("--batch", o.batch, "examples per step")->capture_default_str();
  finetune_->add_option("--lr", o.lr, "AdamW learning rate")->capture_default_str();
  finetune_->add_option("--lora-rank", o.lora_rank, "LoRA rank r")->capture_default_str();
  finetune_->add_option("--lora-alpha", o.lora_alpha, "LoRA alpha (scale alpha/r)")
      ->capture_default_str();
  finetune_->add_option("--lora-targets", o.lora_targets, "comma-separated projections")
      ->capture_default_str();
  finetune_->add_option("--max-length", o.max_length,
                        "cut examples to this many tokens (0: the model's maximum)");
  finetune_->add_option("--seed", o.seed, "LoRA initialisation and data order")
      ->capture_default_str();

  make_model_ = local_->add_subcommand("make-model", "write a random llama for tests and demos");
  make_model_->add_option("--out", o.out, "directory to write")->required();
  make_model_->add_option("--config", o.config, "tiny or small")
      ->required()
      ->check(CLI::IsMember(RandomModelPresetNames()));
  make_model_->add_option("--seed", o.seed, "weights' random seed")->capture_default_str();
  make_model_->add_option("--gguf", "also write the model as this GGUF v3 file")
      ->type_name("FILE");
  make_model_->add_flag("--json", o.json, "print JSON for scripts");
}

bool LocalCommands::selected() const { return local_->parsed(); }

int LocalCommands::Run() {
  if (generate_->parsed()) return RunGenerate(opt_);
  if (eval_->parsed()) return RunEval(opt_);
  if (finetune_->parsed()) return RunFinetune(opt_);
  if (make_model_->parsed()) return RunMakeModel(opt_, *make_model_);
  return Fail("local: no command given; see pcfarm local --help");
}

}  // namespace pcfarm
