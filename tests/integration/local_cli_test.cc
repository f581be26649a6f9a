// `pcfarm local …` as a user runs it: real processes of the built pcfarm
// binary ($PCFARM_BIN_DIR/pcfarm) on a tiny random model written by
// `pcfarm local make-model`.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

#include "tasks/model/model_loader.h"
#include "tasks/model/tokenizer.h"

extern char** environ;

namespace pcfarm {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

struct Run {
  int exit_code = -1;  // -1: killed (deadline) or a signal
  std::string out, err, command;
  std::string Describe() const {
    return "`" + command + "` exited " + std::to_string(exit_code) + "\nstdout: " + out +
           "\nstderr: " + err;
  }
  // Every stdout line parsed as JSON.
  std::vector<json> JsonLines() const {
    std::vector<json> lines;
    std::istringstream in(out);
    std::string line;
    while (std::getline(in, line)) {
      if (!line.empty()) lines.push_back(json::parse(line));
    }
    return lines;
  }
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// A temporary directory for the whole test program, removed at exit unless
// $PCFARM_KEEP_TEST_DIR is set.
struct TestDir {
  std::string path = "/tmp/pcfarm-local-cli-" + std::to_string(::getpid());
  TestDir() { fs::create_directories(path); }
  ~TestDir() {
    if (!std::getenv("PCFARM_KEEP_TEST_DIR")) fs::remove_all(path);
  }
};

const std::string& Dir() {
  static TestDir dir;
  return dir.path;
}

std::string Pcfarm() {
  const char* bin = std::getenv("PCFARM_BIN_DIR");
  return std::string(bin ? bin : ".") + "/pcfarm";
}

// Runs `pcfarm args...` with stdout/stderr captured (stdout is a file, not a
// terminal), killed after `deadline_s`.
Run Pcf(const std::vector<std::string>& args, double deadline_s = 60) {
  static int n = 0;
  Run r;
  std::vector<std::string> argv = {Pcfarm()};
  argv.insert(argv.end(), args.begin(), args.end());
  for (const auto& a : argv) r.command += (r.command.empty() ? "" : " ") + a;
  const std::string base = Dir() + "/cmd" + std::to_string(++n);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_addopen(&fa, 1, (base + ".out").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&fa, 2, (base + ".err").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> cargv;
  for (auto& a : argv) cargv.push_back(a.data());
  cargv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, cargv[0], &fa, nullptr, cargv.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    r.err = "spawn failed: " + std::string(std::strerror(rc));
    return r;
  }
  const auto deadline = std::chrono::steady_clock::now() +
                        std::chrono::milliseconds(int64_t(deadline_s * 1000));
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.out = ReadAll(base + ".out");
  r.err = ReadAll(base + ".err");
  return r;
}

std::string WriteText(const std::string& name, const std::string& text) {
  const std::string path = Dir() + "/" + name;
  std::ofstream(path, std::ios::binary) << text;
  return path;
}

// The tiny model, written once per test program.
const std::string& TinyModel() {
  static const std::string dir = [] {
    const std::string d = Dir() + "/tiny";
    Run r = Pcf({"local", "make-model", "--out", d, "--config", "tiny", "--seed", "3"});
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    return d;
  }();
  return dir;
}

// A small repeated dataset the tiny model can learn in a few dozen steps.
const std::string& TrainData() {
  static const std::string path = [] {
    std::string text;
    for (int i = 0; i < 4; ++i) {
      text += "{\"text\": \"The capital of France is Paris.\"}\n";
      text += "{\"prompt\": \"How many legs does a spider have?\", \"completion\": \" Eight.\"}\n";
    }
    return WriteText("train.jsonl", text);
  }();
  return path;
}

json GenerateOne(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"local", "generate", "--model", TinyModel(), "--prompt",
                                    "The farm", "--max-tokens", "12", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  Run r = Pcf(args);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto lines = r.JsonLines();
  REQUIRE(lines.size() == 1);
  return lines[0];
}

json EvalJson(const std::vector<std::string>& extra) {
  std::vector<std::string> args = {"local", "eval", "--model", TinyModel(), "--data",
                                   TrainData(), "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  Run r = Pcf(args);
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto lines = r.JsonLines();
  REQUIRE(lines.size() == 1);
  return lines[0];
}

TEST_CASE("make-model writes a loadable tiny llama, the same bytes for the same seed", "[local]") {
  const std::string& model = TinyModel();
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"})
    CHECK(fs::exists(model + "/" + f));
  const std::string again = Dir() + "/tiny-again";
  Run r = Pcf({"local", "make-model", "--out", again, "--config", "tiny", "--seed", "3", "--json"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  json info = r.JsonLines().at(0);
  CHECK(info["hidden_size"] == 64);
  CHECK(info["num_hidden_layers"] == 2);
  CHECK(info["vocab_size"].get<int>() >= 300);
  CHECK(info["vocab_size"].get<int>() <= 512);
  CHECK(ReadAll(again + "/model.safetensors") == ReadAll(model + "/model.safetensors"));
  CHECK(ReadAll(again + "/tokenizer.json") == ReadAll(model + "/tokenizer.json"));
  r = Pcf({"local", "make-model", "--out", again, "--config", "tiny", "--seed", "4"});
  REQUIRE(r.exit_code == 0);
  CHECK(ReadAll(again + "/model.safetensors") != ReadAll(model + "/model.safetensors"));
}

TEST_CASE("generate is deterministic: greedy, and sampled with a seed", "[local]") {
  json g1 = GenerateOne({});
  json g2 = GenerateOne({});
  CHECK(g1["prompt"] == "The farm");
  REQUIRE(g1["tokens"].is_array());
  CHECK(g1["tokens"] == g2["tokens"]);
  CHECK(g1["text"] == g2["text"]);
  CHECK(g1["logprobs"].size() == g1["tokens"].size());
  for (const auto& lp : g1["logprobs"]) CHECK(lp.get<double>() <= 0);
  const std::string finish = g1["finish_reason"];
  if (finish == "length") {
    CHECK(g1["tokens"].size() == 12);
  } else {
    REQUIRE(finish == "stop");
  }
  // The text is the decoded tokens.
  auto tok = Tokenizer::Load(TinyModel() + "/tokenizer.json");
  REQUIRE(tok.ok());
  CHECK(g1["text"] == tok->Decode(g1["tokens"].get<std::vector<int32_t>>(), true));

  json s1 = GenerateOne({"--temperature", "1", "--seed", "7"});
  json s2 = GenerateOne({"--temperature", "1", "--seed", "7"});
  json s3 = GenerateOne({"--temperature", "1", "--seed", "8"});
  CHECK(s1["tokens"] == s2["tokens"]);
  CHECK(s1["tokens"] != s3["tokens"]);

  // A prompts file: prompt i samples with seed + i, whatever the batch.
  const std::string prompts = WriteText(
      "prompts.jsonl", "{\"prompt\": \"The river\"}\n{\"prompt\": \"The farm\"}\n"
                       "{\"prompt\": \"A computer\"}\n");
  Run r = Pcf({"local", "generate", "--model", TinyModel(), "--prompts", prompts, "--max-tokens",
               "12", "--temperature", "1", "--seed", "6", "--json"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto lines = r.JsonLines();
  REQUIRE(lines.size() == 3);
  CHECK(lines[0]["prompt"] == "The river");
  CHECK(lines[1]["tokens"] == s1["tokens"]);  // "The farm", seed 6 + 1

  // Plain mode prints the text.
  r = Pcf({"local", "generate", "--model", TinyModel(), "--prompt", "The farm", "--max-tokens",
           "12"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.out == g1["text"].get<std::string>() + "\n");
}

TEST_CASE("eval reports loss, perplexity = exp(loss) and the counted tokens", "[local]") {
  json e = EvalJson({});
  const double loss = e["loss"];
  CHECK(std::isfinite(loss));
  CHECK(loss > 0);
  CHECK(e["perplexity"].get<double>() == Approx(std::exp(loss)).epsilon(1e-12));
  // Counted tokens: text lines count every token after the first; prompt /
  // completion lines count the completion and the EOS.
  auto tok = Tokenizer::Load(TinyModel() + "/tokenizer.json");
  REQUIRE(tok.ok());
  const int64_t text = int64_t(tok->Encode("The capital of France is Paris.", true).size()) - 1;
  const int64_t completion = int64_t(tok->Encode(" Eight.", false).size()) + 1;
  CHECK(e["tokens"] == 4 * (text + completion));
  CHECK(e["examples"] == 8);

  Run r = Pcf({"local", "eval", "--model", TinyModel(), "--data", TrainData()});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("loss") != std::string::npos);
  CHECK(r.out.find("perplexity") != std::string::npos);

  // Cutting every example to 4 tokens counts fewer tokens and says so.
  r = Pcf({"local", "eval", "--model", TinyModel(), "--data", TrainData(), "--max-length", "4",
           "--json"});
  REQUIRE(r.exit_code == 0);
  CHECK(r.JsonLines().at(0)["tokens"].get<int64_t>() < e["tokens"].get<int64_t>());
  CHECK(r.err.find("cut to 4 tokens") != std::string::npos);
}

TEST_CASE("finetune lowers the eval loss; the adapter loads in eval and generate", "[local]") {
  const std::string adapter = Dir() + "/adapter";
  Run r = Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(), "--out",
               adapter, "--steps", "25", "--batch", "4", "--lr", "0.01", "--seed", "1", "--json"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  auto lines = r.JsonLines();
  REQUIRE(lines.size() == 26);
  for (int i = 0; i < 25; ++i) {
    CHECK(lines[i]["step"] == i + 1);
    CHECK(lines[i]["steps"] == 25);
    CHECK(lines[i]["tokens"].get<int64_t>() > 0);
  }
  CHECK(lines[24]["loss"].get<double>() < lines[0]["loss"].get<double>());
  CHECK(lines[25]["adapter"] == adapter);
  CHECK(fs::exists(adapter + "/adapter_config.json"));
  CHECK(fs::exists(adapter + "/adapter_model.safetensors"));

  const double before = EvalJson({})["loss"];
  const double after = EvalJson({"--adapter", adapter})["loss"];
  INFO("eval loss before " << before << ", after " << after);
  CHECK(after < 0.6 * before);

  json g = GenerateOne({"--adapter", adapter});
  CHECK(g["tokens"].is_array());

  // Piped (not a terminal): one plain line per step.
  r = Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(), "--out",
           Dir() + "/adapter2", "--steps", "3", "--lr", "0.01"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("step 1/3 loss ") != std::string::npos);
  CHECK(r.out.find("step 3/3 loss ") != std::string::npos);
  CHECK(r.out.find('\r') == std::string::npos);
  CHECK(r.out.find("adapter written to") != std::string::npos);
}

TEST_CASE("finetune --quantize q8_0/q4_0 (QLoRA) tracks the F32 base's loss curve", "[local]") {
  auto curve = [](const std::string& out, const std::string& quantize) {
    std::vector<std::string> args = {"local", "finetune", "--model", TinyModel(), "--data",
                                     TrainData(), "--out", out, "--steps", "20", "--batch", "4",
                                     "--lr", "0.01", "--seed", "1", "--json"};
    if (!quantize.empty()) args.insert(args.end(), {"--quantize", quantize});
    Run r = Pcf(args);
    INFO(r.Describe());
    REQUIRE(r.exit_code == 0);
    auto lines = r.JsonLines();
    REQUIRE(lines.size() == 21);
    std::vector<double> loss;
    for (int i = 0; i < 20; ++i) loss.push_back(lines[i]["loss"].get<double>());
    return loss;
  };
  const std::vector<double> f32 = curve(Dir() + "/qlora_f32", "");
  for (const std::string q : {"q8_0", "q4_0"}) {
    const std::string adapter = Dir() + "/qlora_" + q;
    const std::vector<double> ql = curve(adapter, q);
    INFO(q << ": loss " << ql.front() << " -> " << ql.back() << "; F32 base " << f32.front()
            << " -> " << f32.back());
    CHECK(ql.back() < 0.7 * ql.front());
    // The quantized base computes nearly the F32 function: the curves
    // track (Q4_0's step is 16 times Q8_0's).
    const double tol = q == "q8_0" ? 0.02 : 0.1;
    CHECK(std::abs(ql.front() - f32.front()) < tol * f32.front());
    CHECK(std::abs(ql.back() - f32.back()) < 2 * tol * f32.front());
    // The adapter loads back over the same quantized base and lowers eval.
    const double before = EvalJson({"--quantize", q})["loss"];
    const double after = EvalJson({"--quantize", q, "--adapter", adapter})["loss"];
    CHECK(after < 0.7 * before);
    json g = GenerateOne({"--quantize", q, "--adapter", adapter});
    CHECK(g["tokens"].is_array());
  }
}

// Exit 1 and exactly one line on stderr that contains `says`.
void ExpectOneLineError(const Run& r, const std::string& says) {
  INFO(r.Describe());
  CHECK(r.exit_code == 1);
  CHECK(r.err.find(says) != std::string::npos);
  CHECK(std::count(r.err.begin(), r.err.end(), '\n') == 1);
  CHECK(r.err.rfind("pcfarm: ", 0) == 0);
}

TEST_CASE("finetune --method full trains every weight and writes a model that loads",
          "[local]") {
  auto base = LoadModel(TinyModel());
  REQUIRE(base.ok());
  int64_t parameters = 0;
  for (const auto& e : ExpectedTensors(base->config)) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    parameters += n;
  }
  // One AdamW step from fresh moments moves each weight by lr·g/(|g|+eps):
  // by lr, up to eps, wherever its gradient is not ~0 (no weight decay).
  const std::string one = Dir() + "/full-1";
  const double lr = 1e-3;
  Run r = Pcf({"local", "finetune", "--method", "full", "--model", TinyModel(), "--data",
               TrainData(), "--out", one, "--steps", "1", "--batch", "4", "--lr", "0.001",
               "--seed", "1", "--json"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  json last = r.JsonLines().back();
  CHECK(last["model"] == one);
  CHECK(last["method"] == "full");
  CHECK(last["trainable_parameters"] == parameters);
  for (const char* f : {"config.json", "tokenizer.json", "model.safetensors"})
    CHECK(fs::exists(one + "/" + f));
  CHECK_FALSE(fs::exists(one + "/adapter_config.json"));
  CHECK(ReadAll(one + "/config.json") == ReadAll(TinyModel() + "/config.json"));
  auto tuned = LoadModel(one);
  REQUIRE(tuned.ok());
  int64_t moved = 0, total = 0;
  for (const auto& e : ExpectedTensors(base->config)) {
    INFO(e.name);
    REQUIRE(base->weights.Find(e.name) != nullptr);
    REQUIRE(tuned->weights.Find(e.name) != nullptr);
    const std::vector<float> a = base->weights.Find(e.name)->ToF32();
    const std::vector<float> b = tuned->weights.Find(e.name)->ToF32();
    REQUIRE(a.size() == b.size());
    double worst = 0;
    for (size_t i = 0; i < a.size(); ++i) {
      const double d = std::abs(double(b[i]) - double(a[i]));
      worst = std::max(worst, d);
      moved += d > 0.5 * lr;
    }
    total += int64_t(a.size());
    CHECK(worst <= lr * 1.001 + 1e-6);
    CHECK(worst > 0.5 * lr);  // every tensor trains, norms included
  }
  INFO(moved << " of " << total << " weights moved by over lr/2");
  CHECK(moved > total * 9 / 10);

  // Trained longer, it learns the data: the eval loss of the written model
  // falls well below the base's, and it generates.
  const std::string full = Dir() + "/full-25";
  r = Pcf({"local", "finetune", "--method", "full", "--model", TinyModel(), "--data",
           TrainData(), "--out", full, "--steps", "25", "--batch", "4", "--lr", "0.003",
           "--seed", "1"});
  INFO(r.Describe());
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.find("model written to " + full) != std::string::npos);
  const double before = EvalJson({})["loss"];
  Run eval = Pcf({"local", "eval", "--model", full, "--data", TrainData(), "--json"});
  INFO(eval.Describe());
  REQUIRE(eval.exit_code == 0);
  const double after = eval.JsonLines().at(0)["loss"];
  INFO("eval loss before " << before << ", after " << after);
  CHECK(after < 0.6 * before);
  Run gen = Pcf({"local", "generate", "--model", full, "--prompt", "The capital of France",
                 "--max-tokens", "4", "--json"});
  INFO(gen.Describe());
  CHECK(gen.exit_code == 0);
}

TEST_CASE("bad data, paths and arguments are one-line errors", "[local]") {
  const std::string bad = WriteText(
      "bad.jsonl", "{\"text\": \"fine\"}\n{\"prompt\": \"p\", \"completion\": \"c\"}\n"
                   "{\"prompt\": \"no completion\"}\n{\"text\": \"fine\"}\n");
  // The data is checked before the model is even opened.
  ExpectOneLineError(Pcf({"local", "eval", "--model", Dir() + "/no-model", "--data", bad}),
                     bad + ":3: missing \"completion\"");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel(), "--data", bad, "--out",
                          Dir() + "/never"}),
                     bad + ":3: missing \"completion\"");
  CHECK_FALSE(fs::exists(Dir() + "/never"));
  const std::string garbage = WriteText("garbage.jsonl", "{\"text\": \"a\"}\nnot json\n");
  ExpectOneLineError(Pcf({"local", "eval", "--model", TinyModel(), "--data", garbage}),
                     garbage + ":2: not valid JSON");
  ExpectOneLineError(Pcf({"local", "eval", "--model", TinyModel(), "--data", Dir() + "/none.jsonl"}),
                     "none.jsonl");
  ExpectOneLineError(Pcf({"local", "generate", "--model", Dir() + "/no-model", "--prompt", "x"}),
                     "no-model");
  ExpectOneLineError(Pcf({"local", "generate", "--model", TinyModel(), "--prompt", "x",
                          "--backend", "no-such-backend"}),
                     "no-such-backend");
  ExpectOneLineError(Pcf({"local", "generate", "--model", TinyModel(), "--prompt", "x",
                          "--top-p", "0"}),
                     "--top-p");
  ExpectOneLineError(Pcf({"local", "generate", "--model", TinyModel()}), "exactly one of");
  ExpectOneLineError(Pcf({"local", "generate", "--model", TinyModel(), "--prompt", "x",
                          "--adapter", Dir() + "/no-adapter"}),
                     "no-adapter");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(),
                          "--out", Dir() + "/never", "--lora-targets", "q_proj,nope"}),
                     "nope");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(),
                          "--out", Dir() + "/never", "--quantize", "q5_k"}),
                     "--quantize: quantize: 'q5_k' is not a weight format to quantize to; use "
                     "q8_0, q4_0, q4_k or q6_k");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(),
                          "--out", Dir() + "/never", "--method", "partial"}),
                     "--method must be lora or full");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel(), "--data", TrainData(),
                          "--out", Dir() + "/never", "--method", "full", "--quantize", "q8_0"}),
                     "--method full trains every weight in f32: it does not take --quantize");
  ExpectOneLineError(Pcf({"local", "finetune", "--model", TinyModel() + "/model.safetensors",
                          "--data", TrainData(), "--out", Dir() + "/never", "--method", "full"}),
                     "--method full writes a Hugging Face model directory");
  CHECK_FALSE(fs::exists(Dir() + "/never"));
  // Command-line syntax errors exit 64, as every pcfarm command.
  CHECK(Pcf({"local", "make-model", "--out", Dir() + "/x", "--config", "huge"}).exit_code == 64);
  CHECK(Pcf({"local", "eval", "--model", TinyModel()}).exit_code == 64);  // no --data
}

TEST_CASE("the Vulkan backend gives the CPU's greedy tokens and loss", "[local][vulkan]") {
  Run probe = Pcf({"local", "generate", "--model", TinyModel(), "--prompt", "The farm",
                   "--max-tokens", "12", "--json", "--backend", "vulkan"});
  // Only a backend that cannot be created (not built in, no driver) skips.
  if (probe.exit_code != 0 && probe.err.rfind("pcfarm: --backend vulkan: ", 0) == 0) {
    WARN("skipped: " << probe.err);
    return;
  }
  INFO(probe.Describe());
  REQUIRE(probe.exit_code == 0);
  CHECK(probe.JsonLines().at(0)["tokens"] == GenerateOne({})["tokens"]);
  // Sampled tokens too (the same draws pick the same tokens when the
  // probabilities agree to float rounding).
  CHECK(GenerateOne({"--temperature", "1", "--seed", "7", "--backend", "vulkan"})["tokens"] ==
        GenerateOne({"--temperature", "1", "--seed", "7"})["tokens"]);
  const double cpu = EvalJson({})["loss"];
  const double vk = EvalJson({"--backend", "vulkan"})["loss"];
  CHECK(vk == Approx(cpu).epsilon(1e-4));
}

}  // namespace
}  // namespace pcfarm
