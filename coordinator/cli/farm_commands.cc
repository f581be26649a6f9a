#include "coordinator/cli/farm_commands.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>

#include "base/file.h"
#include "coordinator/cli/farm_internal.h"
#include "coordinator/cli/upload.h"
#include "coordinator/client_profile.h"
#include "coordinator/jobs/memory_estimate.h"
#include "crypto/keys.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/data.h"
#include "tasks/engine/llama.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool PlainName(const std::string& n) {
  if (n.empty() || n.size() > 128 || n[0] == '.') return false;
  return std::all_of(n.begin(), n.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-';
  });
}

}  // namespace

Result<std::vector<std::pair<std::string, std::string>>> FilesToSend(const std::string& path,
                                                                     bool adapter) {
  std::vector<std::pair<std::string, std::string>> out;  // name, path
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) {
    if (adapter) return InvalidArgument("--adapter " + path + ": give the adapter's directory");
    std::string name = fs::path(path).filename().string();
    if (!PlainName(name) || name.size() < 6 || name.substr(name.size() - 5) != ".gguf") {
      name = "model.gguf";
    }
    out.emplace_back(name, path);
    return out;
  }
  if (!fs::is_directory(path, ec)) {
    return NotFound(std::string(adapter ? "--adapter " : "--model ") + path +
                    ": no such file or directory");
  }
  for (const auto& e : fs::directory_iterator(path, ec)) {
    if (!e.is_regular_file()) continue;
    std::string name = e.path().filename().string();
    bool wanted;
    if (adapter) {
      wanted = name == "adapter_config.json" || name == "adapter_model.safetensors";
    } else {
      wanted = name == "config.json" || name == "generation_config.json" ||
               name == "tokenizer.json" || name == "tokenizer_config.json" ||
               name == "model.safetensors.index.json" ||
               (name.size() > 12 && name.substr(name.size() - 12) == ".safetensors");
    }
    if (wanted && PlainName(name)) out.emplace_back(name, e.path().string());
  }
  if (ec) return IoError(path + ": " + ec.message());
  std::sort(out.begin(), out.end());
  if (out.empty()) return InvalidArgument(path + " holds no model files");
  return out;
}

std::string QuantizeParamName(StorageType t) {
  switch (t) {
    case StorageType::kQ8_0: return "q8_0";
    case StorageType::kQ4_0: return "q4_0";
    case StorageType::kQ4_K: return "q4_k";
    case StorageType::kQ6_K: return "q6_k";
    default: return "";
  }
}

json ModelDimsParam(const ModelConfig& c, int64_t weight_bytes) {
  ModelDims d;
  d.hidden = c.hidden_size;
  d.layers = c.num_hidden_layers;
  d.heads = c.num_attention_heads;
  d.kv_heads = c.num_key_value_heads;
  d.head_dim = c.head_dim;
  d.intermediate = c.intermediate_size;
  d.vocab = c.vocab_size;
  d.weight_bytes = weight_bytes;
  return ModelDimsToJson(d);
}

std::string Human(int64_t bytes) {
  char buf[32];
  if (bytes >= (int64_t(1) << 30)) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", double(bytes) / (1 << 30));
  } else {
    std::snprintf(buf, sizeof buf, "%.1f MiB", double(bytes) / (1 << 20));
  }
  return buf;
}

Status UploadModelFiles(CoordinatorClient* client,
                        const std::vector<std::pair<std::string, std::string>>& files,
                        bool progress, nlohmann::json* map, int64_t* bytes, int64_t* sent) {
  for (const auto& [name, path] : files) {
    CliUploadOptions uo;
    uo.label = name;
    uo.progress = progress;
    PCFARM_ASSIGN_OR_RETURN(auto r, UploadFile(client, path, uo));
    (*map)[name] = r.hash_hex;
    *bytes += r.size;
    *sent += r.sent;
  }
  return Status::Ok();
}

FarmCommands::FarmCommands(CLI::App* app, CLI::App* submit, Globals* globals) : g_(globals) {
  auto add_json = [&](CLI::App* cmd) { cmd->add_flag("--json", g_->json, "print JSON for scripts"); };
  auto& o = infer_;
  infer_cmd_ = submit->add_subcommand("infer", "continue a file of prompts with a model on the farm");
  infer_cmd_->add_option("--model", o.model, "a Hugging Face model directory or a .gguf file")
      ->required();
  infer_cmd_->add_option("--prompts", o.prompts,
                         "JSONL: one {\"prompt\": ...} or {\"messages\": [...]} per line")
      ->required();
  infer_cmd_->add_option("--adapter", o.adapter, "a PEFT LoRA adapter directory");
  infer_cmd_->add_option("--quantize", o.quantize,
                         "the workers quantize the q/k/v/o/gate/up/down projections at load: "
                         "q8_0, q4_0, q4_k or q6_k (an unquantized model)");
  infer_cmd_->add_option("--max-tokens", o.max_tokens, "new tokens per prompt at most (1..4096)")
      ->capture_default_str();
  infer_cmd_->add_option("--temperature", o.temperature, "0: greedy")->capture_default_str();
  infer_cmd_->add_option("--top-k", o.top_k, "keep the k most likely tokens (0: off)")
      ->capture_default_str();
  infer_cmd_->add_option("--top-p", o.top_p, "nucleus sampling (1: off)")->capture_default_str();
  infer_cmd_->add_option("--seed", o.seed, "prompt i samples with seed + i")
      ->capture_default_str();
  infer_cmd_->add_option("--prompts-per-shard", o.prompts_per_shard,
                         "prompts per shard (0: from a token budget per shard)")
      ->capture_default_str();
  infer_cmd_->add_option("--verify", o.verify, kVerifyFlagHelp);
  infer_cmd_->add_option("--redundancy", o.redundancy,
                         "run each shard on this many different workers")
      ->capture_default_str();
  infer_cmd_->add_option("--priority", o.priority, "higher runs first")->capture_default_str();
  add_json(infer_cmd_);

  AddFinetuneCommand(submit);

  fetch_cmd_ = app->add_subcommand(
      "fetch", "write a job's results to a file (a finetune job: its adapter, to a directory)");
  fetch_cmd_->add_option("JOB", job_, "job id")->required();
  fetch_cmd_->add_option("--out", out_,
                         "the file to write (a finetune job: the directory to write)")
      ->required();
  fetch_cmd_->add_flag("--partial", partial_,
                       "a job that has not finished: write what is accepted so far");
  add_json(fetch_cmd_);

  upload_cmd_ = app->add_subcommand(
      "upload", "put a file into the coordinator's blob store; prints its hash last");
  upload_cmd_->add_option("FILE", upload_path_, "the file")->required();
  add_json(upload_cmd_);

  auto* client = app->add_subcommand("client", "the CLI users of the farm (admin only)");
  client->require_subcommand(1);
  client_add_ = client->add_subcommand("add", "register a new CLI key and write its profile");
  client_add_->add_option("--name", client_name_, "its name (letters, digits, - _ . @)")
      ->required();
  client_add_->add_option("--role", client_role_, "submitter or admin")->capture_default_str();
  client_add_->add_option("--out", client_out_, "the profile file to write (mode 0600)")
      ->required();
  add_json(client_add_);
  client_list_ = client->add_subcommand("list", "list the registered CLI keys");
  add_json(client_list_);
  client_remove_ = client->add_subcommand("remove", "unregister a CLI key");
  client_remove_->add_option("NAME", client_name_, "its name")->required();
  add_json(client_remove_);
}

bool FarmCommands::selected() const {
  return infer_cmd_->parsed() || finetune_cmd_->parsed() || fetch_cmd_->parsed() || upload_cmd_->parsed() || client_add_->parsed() ||
         client_list_->parsed() || client_remove_->parsed();
}

int FarmCommands::Run() {
  if (infer_cmd_->parsed()) return SubmitInfer();
  if (finetune_cmd_->parsed()) return SubmitFinetune();
  if (fetch_cmd_->parsed()) return Fetch();
  if (upload_cmd_->parsed()) return Upload();
  if (client_add_->parsed()) return ClientAdd();
  if (client_list_->parsed()) return ClientList();
  if (client_remove_->parsed()) return ClientRemove();
  return Fail("no command given");
}

// ---- submit infer ------------------------------------------------------------

int FarmCommands::SubmitInfer() {
  const auto& o = infer_;
  if (o.max_tokens < 1 || o.max_tokens > 4096) return Fail("--max-tokens must be 1..4096");
  if (!(o.temperature >= 0 && o.temperature <= 100)) {
    return Fail("--temperature must be 0..100 (0: greedy)");
  }
  if (o.top_k < 0 || o.top_k > (1 << 20)) return Fail("--top-k must be 0..1048576 (0: off)");
  if (!(o.top_p > 0 && o.top_p <= 1)) return Fail("--top-p must be in (0, 1]");
  if (o.prompts_per_shard < 0 || o.prompts_per_shard > 256) {
    return Fail("--prompts-per-shard must be 0..256 (0: chosen from a token budget)");
  }
  if (o.redundancy < 1 || o.redundancy > 16) return Fail("--redundancy must be 1..16");
  if (Status v = CheckVerifyFlag(o.verify, o.redundancy); !v.ok()) return Fail(v);
  auto quantize = ParseWeightQuantization(o.quantize);
  if (!quantize.ok()) return Fail(quantize.status().WithContext("--quantize"));
  const bool progress = !g_->json;

  // Everything is checked here, before anything is uploaded or queued.
  auto model_files = FilesToSend(o.model, false);
  if (!model_files.ok()) return Fail(model_files.status());
  auto loaded = LoadModel(o.model);
  if (!loaded.ok()) return Fail(loaded.status().WithContext("--model " + o.model));
  int64_t parameters = 0;
  for (const auto& [name, t] : loaded->weights.tensors()) parameters += int64_t(t.numel());
  std::vector<std::pair<std::string, std::string>> adapter_files;
  if (!o.adapter.empty()) {
    auto files = FilesToSend(o.adapter, true);
    if (!files.ok()) return Fail(files.status());
    adapter_files = std::move(*files);
  }
  // The model as a worker loads it (quantized with --quantize): that checks
  // the quantization and the adapter, and gives the weights' bytes.
  int64_t weight_bytes = 0;
  {
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
    weight_bytes = (*model)->WeightBytes();
    if (!o.adapter.empty()) {
      Status a = (*model)->LoadAdapter(o.adapter);
      if (!a.ok()) return Fail(a.WithContext("--adapter " + o.adapter));
    }
  }
  auto prompts = ReadPromptsJsonl(o.prompts);
  if (!prompts.ok()) return Fail(prompts.status());
  if (prompts->empty()) return Fail(o.prompts + ": no prompts");
  const int64_t context = loaded->config.max_position_embeddings;
  std::string normalized;
  for (size_t i = 0; i < prompts->size(); ++i) {
    auto ids = loaded->tokenizer.Encode((*prompts)[i], true);
    std::string where = o.prompts + ":" + std::to_string(i + 1);
    if (ids.empty()) return Fail(where + ": the prompt encodes to no tokens");
    if (context > 0 && int64_t(ids.size()) + o.max_tokens > context) {
      return Fail(where + ": the prompt's " + std::to_string(ids.size()) +
                  " tokens + --max-tokens " + std::to_string(o.max_tokens) +
                  " are over the model's context of " + std::to_string(context));
    }
    normalized += json{{"prompt", (*prompts)[i]}, {"tokens", ids.size()}}.dump(
                      -1, ' ', false, json::error_handler_t::strict) +
                  "\n";
  }

  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  json model_map = json::object(), adapter_map = json::object();
  int64_t model_bytes = 0, sent = 0;
  if (Status up = UploadModelFiles(client->get(), *model_files, progress, &model_map,
                                   &model_bytes, &sent);
      !up.ok()) {
    return Fail(up);
  }
  for (const auto& [name, path] : adapter_files) {
    CliUploadOptions uo;
    uo.label = "adapter/" + name;
    uo.progress = progress;
    auto r = UploadFile(client->get(), path, uo);
    if (!r.ok()) return Fail(r.status());
    adapter_map[name] = r->hash_hex;
    sent += r->sent;
  }
  CliUploadOptions uo;
  uo.label = "prompts";
  uo.progress = false;
  auto pr = UploadBytes(client->get(), normalized, uo);
  if (!pr.ok()) return Fail(pr.status());

  json params = {{"model", model_map},
                 {"prompts_blob", pr->hash_hex},
                 {"prompts", prompts->size()},
                 {"max_tokens", o.max_tokens},
                 {"temperature", o.temperature},
                 {"top_k", o.top_k},
                 {"top_p", o.top_p},
                 {"seed", o.seed},
                 {"prompts_per_shard", o.prompts_per_shard},
                 {"model_parameters", parameters},
                 {"model_bytes", model_bytes}};
  if (!adapter_map.empty()) params["adapter"] = adapter_map;
  if (*quantize != StorageType::kF32) params["quantize"] = QuantizeParamName(*quantize);
  params["model_dims"] = ModelDimsParam(loaded->config, weight_bytes);
  wire::ClientRequest req;
  auto* s = req.mutable_submit();
  s->set_kind("infer");
  s->set_priority(o.priority);
  s->set_redundancy(o.redundancy);
  s->set_verify(o.verify);
  s->set_params(params.dump());
  auto submitted = SubmitJob(client->get(), req);
  if (!submitted.ok()) return Fail(submitted.status());
  uint64_t id = *submitted;
  if (g_->json) {
    std::cout << json{{"job_id", id}, {"prompts", prompts->size()},
                      {"uploaded_bytes", sent}, {"model_bytes", model_bytes}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("submitted infer job: %zu prompt(s), model %s (%s, %s sent now)\n",
              prompts->size(), o.model.c_str(), Human(model_bytes).c_str(),
              Human(sent).c_str());
  std::printf("%llu\n", (unsigned long long)id);
  return 0;
}

// ---- fetch -------------------------------------------------------------------

int FarmCommands::Fetch() {
  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  std::string data;
  uint32_t from = 0;
  wire::JobInfo job;
  // The first page has the one --timeout; once pages come, a coordinator
  // that stops answering (a restart) is waited for up to kFetchPatienceS.
  constexpr double kFetchPatienceS = 120;
  PatientCaller caller(client->get(), "the fetch of job " + std::to_string(job_) +
                                          " goes on when it answers");
  while (true) {
    wire::ClientRequest req;
    req.mutable_fetch()->set_job_id(job_);
    req.mutable_fetch()->set_from_shard(from);
    req.mutable_fetch()->set_partial(partial_);
    auto reply = from == 0 ? (*client)->Call(req)
                           : caller.Call(req, std::chrono::steady_clock::now() +
                                                  std::chrono::seconds(int(kFetchPatienceS)));
    if (!reply.ok()) {
      if (from > 0 && Retryable(reply.status())) {
        return Fail("fetch of job " + std::to_string(job_) + ": gave up after " +
                    std::to_string(int(kFetchPatienceS)) + " s without an answer, " +
                    "nothing written: " + reply.status().message());
      }
      return Fail(reply.status());
    }
    const auto& f = reply->fetch();
    job = f.job();
    data += f.data();
    if (f.done()) break;
    if (f.next_shard() <= from) return Fail("the coordinator's fetch did not advance");
    from = f.next_shard();
  }
  if (job.kind() == "finetune") {
    int64_t bytes = 0;
    Status w = WriteFinetuneOutput(client->get(), data, out_, &bytes);
    if (!w.ok()) return Fail(w.WithContext("--out " + out_));
    json m = json::parse(data, nullptr, false);
    const int64_t step = m.is_object() ? m.value("step", int64_t(0)) : 0;
    const bool done = job.state() == "succeeded";
    if (g_->json) {
      std::cout << json{{"job_id", job_}, {"out", out_}, {"bytes", bytes}, {"step", step},
                        {"state", job.state()}, {"complete", done}}
                       .dump()
                << "\n";
      return 0;
    }
    const bool full = m.is_object() && m.value("method", "lora") == "full";
    std::printf("job %llu (finetune, %s): wrote the %s after step %lld and "
                "trainer_log.jsonl to %s%s\n",
                (unsigned long long)job_, job.state().c_str(), full ? "model" : "adapter",
                (long long)step, out_.c_str(),
                done ? "" : " (partial: the job has not finished)");
    return 0;
  }
  Status w = WriteFileAtomic(out_, data);
  if (!w.ok()) return Fail(w.WithContext("--out " + out_));
  int64_t lines = std::count(data.begin(), data.end(), '\n');
  bool complete = job.state() == "succeeded";
  if (g_->json) {
    std::cout << json{{"job_id", job_}, {"out", out_}, {"bytes", data.size()},
                      {"lines", lines}, {"state", job.state()}, {"complete", complete}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("job %llu (%s, %s): wrote %lld line(s), %zu bytes to %s%s\n",
              (unsigned long long)job_, job.kind().c_str(), job.state().c_str(),
              (long long)lines, data.size(), out_.c_str(),
              complete ? "" : " (partial: only the shards accepted so far)");
  return 0;
}

// ---- upload ------------------------------------------------------------------

int FarmCommands::Upload() {
  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  CliUploadOptions uo;
  uo.label = fs::path(upload_path_).filename().string();
  uo.progress = !g_->json;
  auto start = std::chrono::steady_clock::now();
  auto r = UploadFile(client->get(), upload_path_, uo);
  if (!r.ok()) return Fail(r.status());
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (g_->json) {
    std::cout << json{{"hash", r->hash_hex}, {"size", r->size}, {"sent", r->sent},
                      {"deduplicated", r->deduplicated}, {"seconds", secs}}
                     .dump()
              << "\n";
    return 0;
  }
  std::printf("%s: %s in %.2f s (%s)\n", upload_path_.c_str(), Human(r->size).c_str(), secs,
              r->deduplicated ? "the coordinator had it already" : "uploaded");
  std::printf("%s\n", r->hash_hex.c_str());
  return 0;
}

// ---- clients -----------------------------------------------------------------

int FarmCommands::ClientAdd() {
  if (client_role_ != "submitter" && client_role_ != "admin") {
    return Fail("--role must be submitter or admin");
  }
  std::error_code ec;
  if (fs::exists(client_out_, ec)) return Fail("--out " + client_out_ + " exists; not replacing it");
  std::string path = g_->profile_path;
  if (path.empty() && std::getenv("PCFARM_PROFILE")) path = std::getenv("PCFARM_PROFILE");
  auto mine = LoadClientProfile(path);
  if (!mine.ok()) return Fail(mine.status().WithContext("your profile"));
  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  CurveKeyPair keys = CurveKeyPair::Generate();
  wire::ClientRequest req;
  auto* a = req.mutable_client_add();
  a->set_name(client_name_);
  a->set_role(client_role_);
  a->set_curve_pk(keys.public_key());
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  ClientProfile p;
  p.endpoint = mine->endpoint;
  p.server_curve_pk = mine->server_curve_pk;
  p.client_curve_pk = keys.public_key();
  p.client_curve_sk = keys.secret_key();
  p.role = client_role_;
  p.name = client_name_;
  Status s = SaveClientProfile(client_out_, p);
  if (!s.ok()) {
    return Fail(s.WithContext("client '" + client_name_ +
                              "' was registered but its profile could not be written; "
                              "remove it with `pcfarm client remove` and try again"));
  }
  if (g_->json) {
    std::cout << json{{"client_id", reply->client_add().client_id()}, {"name", client_name_},
                      {"role", client_role_}, {"profile", client_out_}}
                     .dump()
              << "\n";
  } else {
    std::printf("client '%s' (%s) added; its profile is %s (give it to them; it holds a "
                "secret key)\n",
                client_name_.c_str(), client_role_.c_str(), client_out_.c_str());
  }
  return 0;
}

int FarmCommands::ClientList() {
  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_client_list();
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  if (g_->json) {
    json arr = json::array();
    for (const auto& c : reply->client_list().clients()) {
      arr.push_back({{"client_id", c.client_id()}, {"name", c.name()}, {"role", c.role()},
                     {"created_ms", c.created_ms()}});
    }
    std::cout << arr.dump() << "\n";
    return 0;
  }
  std::printf("%-6s %-24s %-10s %s\n", "ID", "NAME", "ROLE", "ADDED");
  for (const auto& c : reply->client_list().clients()) {
    std::printf("%-6llu %-24s %-10s %s\n", (unsigned long long)c.client_id(),
                Safe(c.name()).c_str(), c.role().c_str(), FormatTime(c.created_ms()).c_str());
  }
  return 0;
}

int FarmCommands::ClientRemove() {
  auto client = OpenClient(*g_);
  if (!client.ok()) return Fail(client.status());
  wire::ClientRequest req;
  req.mutable_client_remove()->set_name(client_name_);
  auto reply = (*client)->Call(req);
  if (!reply.ok()) return Fail(reply.status());
  if (g_->json) {
    std::cout << json{{"removed", client_name_}}.dump() << "\n";
  } else {
    std::printf("client '%s' removed: its key is refused from now on\n", client_name_.c_str());
  }
  return 0;
}

}  // namespace pcfarm
