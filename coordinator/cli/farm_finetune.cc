// `pcfarm submit finetune` and what `pcfarm fetch` writes for a finetune job.
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/file.h"
#include "coordinator/cli/farm_commands.h"
#include "coordinator/cli/farm_internal.h"
#include "coordinator/cli/upload.h"
#include "crypto/hash.h"
#include "tasks/aggregate/aggregate.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/data.h"
#include "tasks/engine/llama.h"
#include "tasks/engine/token_data.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

std::vector<std::string> SplitList(const std::string& list) {
  std::vector<std::string> out;
  std::stringstream ss(list);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// A directory of its own under the system's temp dir, removed with it.
struct TempDir {
  std::string path;
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "pcfarm-finetune.XXXXXX").string();
    if (mkdtemp(tmpl.data())) path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path.empty()) fs::remove_all(path, ec);
  }
};

}  // namespace

void FarmCommands::AddFinetuneCommand(CLI::App* submit) {
  auto& o = finetune_;
  auto* c = finetune_cmd_ =
      submit->add_subcommand("finetune", "fine-tuning of a model on the farm: LoRA, or every weight with --method full");
  c->add_option("--model", o.model, "a Hugging Face model directory or a .gguf file")
      ->required();
  c->add_option("--data", o.data, "JSONL training data, as pcfarm local finetune reads it")
      ->required();
  c->add_option("--steps", o.steps, "optimizer steps (diloco: inner steps, in all)")
      ->capture_default_str();
  c->add_option("--batch", o.batch, "examples per step")->capture_default_str();
  c->add_option("--micro-batch", o.micro_batch,
                "examples per shard (0: min(batch, 8))")
      ->capture_default_str();
  c->add_option("--lr", o.lr, "AdamW learning rate")->capture_default_str();
  c->add_option("--lora-rank", o.lora_rank, "LoRA rank r")->capture_default_str();
  c->add_option("--lora-alpha", o.lora_alpha, "LoRA alpha (scale alpha/r)")
      ->capture_default_str();
  c->add_option("--lora-targets", o.lora_targets, "comma-separated projections")
      ->capture_default_str();
  c->add_option("--max-length", o.max_length,
                "cut examples to this many tokens (0: the model's maximum)")
      ->capture_default_str();
  c->add_option("--seed", o.seed, "LoRA initialisation and data order")->capture_default_str();
  c->add_option("--quantize", o.quantize,
                "QLoRA: the workers quantize the base's q/k/v/o/gate/up/down projections at "
                "load: q8_0, q4_0, q4_k or q6_k (an unquantized model)");
  c->add_option("--mode", o.mode,
                "sync (one AdamW step a round) or diloco (H local steps a shard, then an "
                "outer Nesterov step)")
      ->capture_default_str();
  c->add_option("--method", o.method,
                "lora (adapters) or full (every weight in f32; a Hugging Face directory as "
                "--model, no --quantize; fetch writes a model directory)")
      ->capture_default_str();
  c->add_option("--local-steps", o.local_steps,
                "DiLoCo: local AdamW steps per round (default 20)");
  c->add_option("--outer-lr", o.outer_lr, "DiLoCo: outer learning rate (default 0.7)");
  c->add_option("--outer-momentum", o.outer_momentum,
                "DiLoCo: outer Nesterov momentum (default 0.9)");
  c->add_option("--quorum", o.quorum,
                "a round proceeds once this fraction of its shards is in (default 1: "
                "all; below 1 the stragglers are dropped)")
      ->capture_default_str();
  c->add_option("--round-timeout", o.round_timeout_s,
                "with --quorum below 1: seconds a round waits for all its shards before it "
                "proceeds with its quorum (default 0: proceed as soon as the quorum is in)");
  c->add_option("--compress", o.compress,
                "how shards send gradients: none (f32), fp16 or int8 (with error feedback)")
      ->capture_default_str();
  c->add_option("--aggregate", o.aggregate, "mean, trimmed-mean, median or centered-clip")
      ->capture_default_str();
  c->add_option("--verify", o.verify, kVerifyFlagHelp);
  c->add_option("--redundancy", o.redundancy, "run each shard on this many different workers")
      ->capture_default_str();
  c->add_option("--priority", o.priority, "higher runs first")->capture_default_str();
  c->add_flag("--json", g_->json, "print JSON for scripts");
}

int FarmCommands::SubmitFinetune() {
  const auto& o = finetune_;
  CLI::App* c = finetune_cmd_;
  const bool diloco = o.mode == "diloco";
  if (o.steps < 1 || o.steps > 10'000'000) return Fail("--steps must be 1..10000000");
  if (o.batch < 1 || o.batch > 100'000) return Fail("--batch must be 1..100000");
  if (o.micro_batch < 0 || o.micro_batch > o.batch) {
    return Fail("--micro-batch must be 0..--batch (0: min(batch, 8))");
  }
  if (!(o.lr > 0) || !std::isfinite(o.lr) || o.lr > 10) return Fail("--lr must be in (0, 10]");
  if (o.lora_rank < 1 || o.lora_rank > 4096) return Fail("--lora-rank must be 1..4096");
  if (!(o.lora_alpha > 0) || !std::isfinite(o.lora_alpha)) return Fail("--lora-alpha must be > 0");
  if (o.max_length < 0) return Fail("--max-length must be >= 0 (0: the model's maximum)");
  if (o.redundancy < 1 || o.redundancy > 16) return Fail("--redundancy must be 1..16");
  if (Status v = CheckVerifyFlag(o.verify, o.redundancy); !v.ok()) return Fail(v);
  if (o.method != "lora" && o.method != "full") return Fail("--method must be lora or full");
  const bool full = o.method == "full";
  if (full) {
    // As `pcfarm local finetune --method full` refuses them.
    std::error_code ec;
    if (!fs::is_directory(o.model, ec)) {
      return Fail("--method full writes a Hugging Face model directory and needs one as "
                  "--model (" + o.model + " is not a directory; a GGUF file trains LoRA)");
    }
    if (!o.quantize.empty()) {
      return Fail("--method full trains every weight in f32: it does not take --quantize "
                  "(QLoRA is --method lora --quantize ...)");
    }
    for (const char* flag : {"--lora-rank", "--lora-alpha", "--lora-targets"}) {
      if (c->count(flag) > 0) {
        return Fail(std::string(flag) + " is for --method lora; --method full trains every weight");
      }
    }
  }
  if (o.mode == "sync") {
    for (const char* flag : {"--local-steps", "--outer-lr", "--outer-momentum"}) {
      if (c->count(flag) > 0) {
        return Fail(std::string(flag) + " is for --mode diloco; --mode sync takes none");
      }
    }
  } else if (o.mode == "diloco") {
    if (o.local_steps < 1 || o.local_steps > 10'000) return Fail("--local-steps must be 1..10000");
    const int64_t micro = o.micro_batch > 0 ? o.micro_batch : std::min<int64_t>(o.batch, 8);
    if (o.local_steps * micro > 100'000) {
      return Fail("--local-steps times --micro-batch must be at most 100000 (the examples "
                  "one shard may name)");
    }
    if (!(o.outer_lr > 0) || !(o.outer_lr <= 10)) return Fail("--outer-lr must be in (0, 10]");
    if (!(o.outer_momentum >= 0) || !(o.outer_momentum < 1)) {
      return Fail("--outer-momentum must be in [0, 1)");
    }
  } else {
    return Fail("--mode must be sync or diloco");
  }
  if (!(o.quorum > 0) || !(o.quorum <= 1)) return Fail("--quorum must be in (0, 1]");
  if (o.round_timeout_s < 0 || o.round_timeout_s > 7 * 86400) {
    return Fail("--round-timeout must be 0..604800 seconds");
  }
  if (o.round_timeout_s > 0 && o.quorum >= 1) {
    return Fail("--round-timeout needs --quorum below 1 (with quorum 1 a round waits for "
                "every shard)");
  }
  if (o.compress != "none" && o.compress != "fp16" && o.compress != "int8") {
    return Fail("--compress must be none, fp16 or int8");
  }
  auto rule = ParseAggregateRule(o.aggregate);
  if (!rule.ok()) return Fail(rule.status().WithContext("--aggregate"));
  auto quantize = ParseWeightQuantization(o.quantize);
  if (!quantize.ok()) return Fail(quantize.status().WithContext("--quantize"));
  LoraConfig lora;
  lora.rank = o.lora_rank;
  lora.alpha = o.lora_alpha;
  lora.target_modules = SplitList(o.lora_targets);
  lora.seed = o.seed;
  const bool progress = !g_->json;

  // Everything is checked here, before anything is uploaded or queued: the
  // data file whole (file:line errors), the model, the LoRA targets.
  auto examples = ReadExamplesJsonl(o.data);
  if (!examples.ok()) return Fail(examples.status());
  auto model_files = FilesToSend(o.model, false);
  if (!model_files.ok()) return Fail(model_files.status());
  auto loaded = LoadModel(o.model);
  if (!loaded.ok()) return Fail(loaded.status().WithContext("--model " + o.model));
  BackendOptions bo;
  bo.cpu_threads = 1;
  auto backend = CreateBackend("cpu", bo);
  if (!backend.ok()) return Fail(backend.status());
  LlamaOptions lo;
  lo.quantize = *quantize;
  auto model = LlamaModel::Create(loaded->config, loaded->weights, backend->get(), lo);
  if (!model.ok()) {
    return Fail(model.status().WithContext(
        "--model " + o.model + (o.quantize.empty() ? "" : " --quantize " + o.quantize)));
  }
  const int64_t weight_bytes = (*model)->WeightBytes();
  Status enabled = full ? (*model)->EnableFullTraining() : (*model)->EnableLora(lora);
  if (!enabled.ok()) return Fail(enabled.WithContext(full ? "--method full" : "--lora-*"));
  // Tokenized here, once, exactly as `pcfarm local finetune` does.
  const int64_t max_length =
      o.max_length > 0 ? o.max_length : loaded->config.max_position_embeddings;
  const int32_t eos = loaded->config.eos_token_ids.empty()
                          ? -1
                          : int32_t(loaded->config.eos_token_ids[0]);
  TokenizedData data = TokenizeExamples(*examples, loaded->tokenizer, eos, max_length);
  if (data.counted_tokens == 0) return Fail(o.data + ": no example has a token the loss counts");
  const int64_t usable = int64_t(UsableSequences(data.sequences).size());
  int64_t longest = 0;
  for (const auto& seq : data.sequences) longest = std::max(longest, int64_t(seq.tokens.size()));
  if (o.batch > usable) {
    return Fail("--batch " + std::to_string(o.batch) + " is larger than the data: " + o.data +
                " has " + std::to_string(usable) + " example(s) with a token the loss counts");
  }
  if (progress && data.truncated > 0) {
    std::fprintf(stderr, "pcfarm: note: %lld of %zu examples were cut to %lld tokens (--max-length)\n",
                 static_cast<long long>(data.truncated), examples->size(),
                 static_cast<long long>(max_length));
  }
  // The version the job starts from: the adapter local finetune starts
  // from, or (full) every weight in f32, in the order the workers train them.
  TempDir tmp;
  if (tmp.path.empty()) return Fail("cannot make a temporary directory");
  std::string full_weights;
  if (full) {
    auto values = (*model)->GetParameters();
    if (!values.ok()) return Fail(values.status());
    auto bytes = EncodeAdapterSafetensors((*model)->TrainableParameters(), *values);
    if (!bytes.ok()) return Fail(bytes.status());
    full_weights = std::move(*bytes);
  } else {
    Status saved = (*model)->SaveAdapter(tmp.path, o.model);
    if (!saved.ok()) return Fail(saved);
  }
  const int64_t trainable = (*model)->TrainableCount();
  model->reset();
  const std::string tokens_blob = EncodeTokenData(data.sequences);

  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  json model_map = json::object(), adapter_map = json::object();
  int64_t model_bytes = 0, sent = 0;
  if (Status up = UploadModelFiles(client->get(), *model_files, progress, &model_map,
                                   &model_bytes, &sent);
      !up.ok()) {
    return Fail(up);
  }
  if (full) {
    CliUploadOptions uo;
    uo.label = "weights/model.safetensors";
    uo.progress = progress && full_weights.size() > (size_t(8) << 20);
    auto r = UploadBytes(client->get(), full_weights, uo);
    if (!r.ok()) return Fail(r.status());
    adapter_map["model.safetensors"] = r->hash_hex;
    sent += r->sent;
    full_weights.clear();
  } else {
    for (const char* name : {"adapter_config.json", "adapter_model.safetensors"}) {
      CliUploadOptions uo;
      uo.label = std::string("adapter/") + name;
      uo.progress = false;
      auto bytes = ReadFile(tmp.path + "/" + name);
      if (!bytes.ok()) return Fail(bytes.status());
      auto r = UploadBytes(client->get(), *bytes, uo);
      if (!r.ok()) return Fail(r.status());
      adapter_map[name] = r->hash_hex;
      sent += r->sent;
    }
  }
  CliUploadOptions uo;
  uo.label = "data";
  uo.progress = progress && tokens_blob.size() > (size_t(8) << 20);
  auto dr = UploadBytes(client->get(), tokens_blob, uo);
  if (!dr.ok()) return Fail(dr.status());
  sent += dr->sent;

  const OptimizerConfig defaults;
  json params = {{"model", model_map},
                 {full ? "weights" : "adapter", adapter_map},
                 {"data", dr->hash_hex},
                 {"examples", data.sequences.size()},
                 {"steps", o.steps},
                 {"batch", o.batch},
                 {"seed", o.seed},
                 {"optimizer",
                  {{"lr", o.lr},
                   {"beta1", defaults.beta1},
                   {"beta2", defaults.beta2},
                   {"eps", defaults.eps},
                   {"weight_decay", defaults.weight_decay},
                   {"max_grad_norm", defaults.max_grad_norm}}},
                 {"lora",
                  {{"rank", o.lora_rank}, {"alpha", o.lora_alpha}, {"targets", lora.target_modules}}},
                 {"mode", o.mode},
                 {"aggregate", o.aggregate},
                 {"compress", o.compress},
                 {"model_bytes", model_bytes}};
  if (full) {
    params.erase("lora");
    params["method"] = "full";
  }
  if (o.micro_batch > 0) params["micro_batch"] = o.micro_batch;
  if (*quantize != StorageType::kF32) params["quantize"] = QuantizeParamName(*quantize);
  params["model_dims"] = ModelDimsParam(loaded->config, weight_bytes);
  params["trainable_parameters"] = trainable;
  params["longest_sequence"] = longest;
  if (o.quorum < 1) params["quorum"] = o.quorum;
  if (o.round_timeout_s > 0) params["round_timeout_s"] = o.round_timeout_s;
  if (diloco) {
    params["local_steps"] = o.local_steps;
    params["outer_lr"] = o.outer_lr;
    params["outer_momentum"] = o.outer_momentum;
  }
  wire::ClientRequest req;
  auto* s = req.mutable_submit();
  s->set_kind("finetune");
  s->set_priority(o.priority);
  s->set_redundancy(o.redundancy);
  s->set_verify(o.verify);
  s->set_params(params.dump());
  auto submitted = SubmitJob(client->get(), req);
  if (!submitted.ok()) return Fail(submitted.status());
  uint64_t id = *submitted;
  if (g_->json) {
    std::cout << json{{"job_id", id},
                      {"examples", data.sequences.size()},
                      {"counted_tokens", data.counted_tokens},
                      {"trainable_parameters", trainable},
                      {"uploaded_bytes", sent},
                      {"model_bytes", model_bytes}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("submitted finetune job: %lld step(s) of %lld example(s), %zu examples "
              "(%lld counted tokens), %lld trainable parameters, model %s (%s, %s sent now)\n",
              static_cast<long long>(o.steps), static_cast<long long>(o.batch),
              data.sequences.size(), static_cast<long long>(data.counted_tokens),
              static_cast<long long>(trainable), o.model.c_str(), Human(model_bytes).c_str(),
              Human(sent).c_str());
  if (diloco) {
    std::printf("diloco: %lld round(s) of %lld local step(s), outer lr %g, momentum %g\n",
                static_cast<long long>((o.steps + o.local_steps - 1) / o.local_steps),
                static_cast<long long>(o.local_steps), o.outer_lr, o.outer_momentum);
  }
  std::printf("%llu\n", (unsigned long long)id);
  return 0;
}

Status FarmCommands::WriteFinetuneOutput(CoordinatorClient* client, const std::string& manifest,
                                         const std::string& dir, int64_t* bytes_written) {
  json m = json::parse(manifest, nullptr, false);
  // LoRA: the adapter's two files; full: a Hugging Face model directory.
  const bool full = m.is_object() && m.value("method", "lora") == "full";
  const char* files_key = full ? "files" : "adapter";
  if (!m.is_object() || !m.contains(files_key) || !m[files_key].is_object() ||
      !m.contains("trainer_log") || !m["trainer_log"].is_array()) {
    return Internal("the coordinator's fetch reply for a finetune job is malformed");
  }
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return IoError("--out " + dir + ": " + ec.message());
  *bytes_written = 0;
  for (const auto& [name, hash] : m[files_key].items()) {
    if (full) {
      // A plain file name: nothing the coordinator says is written outside dir.
      const bool plain = !name.empty() && name.size() <= 255 && name[0] != '.' &&
                         name.find_first_of("/\\") == std::string::npos;
      if (!plain) return Internal("the fetch reply names a bad model file '" + name + "'");
    } else if (name != "adapter_config.json" && name != "adapter_model.safetensors") {
      continue;
    }
    if (!hash.is_string()) return Internal("model file " + name + " has no hash");
    auto h = HashFromHex(hash.get<std::string>());
    if (!h.ok()) return h.status();
    std::string bytes;
    uint64_t total = 0;
    do {
      wire::ClientRequest req;
      auto* b = req.mutable_blob_read();
      b->set_hash(HashToBytes(*h));
      b->set_offset(bytes.size());
      b->set_length(4u << 20);
      auto reply = client->Call(req);
      if (!reply.ok()) return reply.status().WithContext("reading " + name);
      total = reply->blob_read().total_size();
      if (reply->blob_read().data().empty() && bytes.size() < total) {
        return Internal("reading " + name + ": the coordinator sent no bytes");
      }
      bytes += reply->blob_read().data();
    } while (bytes.size() < total);
    if (HashToHex(Blake2b256(bytes)) != HashToHex(*h)) {
      return Corruption("reading " + name + ": the bytes do not hash to their name");
    }
    PCFARM_RETURN_IF_ERROR(WriteFileAtomic(dir + "/" + name, bytes));
    *bytes_written += int64_t(bytes.size());
  }
  std::string log;
  for (const auto& line : m["trainer_log"]) log += line.dump() + "\n";
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(dir + "/trainer_log.jsonl", log));
  *bytes_written += int64_t(log.size());
  return Status::Ok();
}

}  // namespace pcfarm
