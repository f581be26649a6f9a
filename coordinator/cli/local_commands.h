// `pcfarm local …`: the compute engine on this machine alone. No profile and
// no coordinator are needed.
//
//   pcfarm local generate --model PATH (--prompt TEXT | --prompts FILE.jsonl)
//       [--max-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
//       [--adapter DIR]
//     Prompts are tokenized as the model's tokenizer does (its post-processor
//     adds BOS where it says so); prompt i samples with seed + i; generation
//     stops after an EOS id of the model's config or after N new tokens.
//     Plain output: the generated text of each prompt, one per line.
//     --json: one object per prompt {"prompt", "tokens", "text", "logprobs",
//     "finish_reason": "stop"|"length"}.
//   pcfarm local eval --model PATH --data FILE.jsonl [--adapter DIR]
//       [--max-length N]
//     The mean next-token cross-entropy over every counted token of every
//     example (tasks/engine/data.h says which count), its perplexity
//     exp(loss) and the number of counted tokens.
//   pcfarm local finetune --model PATH --data FILE.jsonl --out DIR
//       [--steps N] [--batch B] [--lr LR] [--lora-rank R] [--lora-alpha A]
//       [--lora-targets q_proj,...] [--max-length N] [--seed S]
//     LoRA fine-tuning with AdamW: each step takes the next B examples of a
//     shuffled order (reshuffled every pass, from --seed), then DIR gets a
//     PEFT adapter. Loss per step: a progress bar on a terminal, plain lines
//     when piped, one JSON object per step with --json (then one final
//     object with "adapter").
//   pcfarm local make-model --out DIR --config tiny|small [--seed S]
//     A random llama in Hugging Face format (coordinator/cli/local_model.h).
// generate, eval and finetune take --backend cpu|vulkan (default cpu),
// --device N (GPU ordinal) and --threads N (CPU threads, 0 = all cores);
// every command takes --json (one JSON object per line on stdout).
// The data file is read and validated whole before the model is loaded.
// A bad path, model, data line or argument prints one line
// "pcfarm: ..." on stderr and exits 1 (64 for command-line syntax errors,
// as every pcfarm command).
//
// Thread-safety: one thread (the CLI's).
#pragma once

#include <cstdint>
#include <string>

namespace CLI {
class App;
}

namespace pcfarm {

struct LocalOptions {
  // Engine.
  std::string backend = "cpu";
  int device = 0;
  int threads = 0;
  bool json = false;
  std::string model, adapter;
  // "q8_0" / "q4_0" / "q4_k" / "q6_k": quantize the projections at load (LlamaOptions::quantize).
  std::string quantize;
  // generate
  std::string prompt, prompts_file;
  int64_t max_tokens = 64;
  double temperature = 0;
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;
  // eval / finetune
  std::string data;
  int64_t max_length = 0;  // 0: the model's max_position_embeddings
  std::string out;
  int64_t steps = 30;
  int64_t batch = 4;
  double lr = 1e-3;
  std::string method = "lora";  // finetune: "lora" or "full"
  int64_t lora_rank = 8;
  double lora_alpha = 16;
  std::string lora_targets = "q_proj,k_proj,v_proj,o_proj";
  // make-model
  std::string config;
};

class LocalCommands {
 public:
  // Adds the `local` subcommand group to `app`. REQUIRES: `app` outlives
  // this object, and this object outlives app.parse().
  explicit LocalCommands(CLI::App* app);

  // After app.parse(): true iff a `local` command was given.
  bool selected() const;
  // Runs the chosen command; returns the process exit code. REQUIRES: selected().
  int Run();

 private:
  LocalOptions opt_;
  CLI::App* local_ = nullptr;
  CLI::App* generate_ = nullptr;
  CLI::App* eval_ = nullptr;
  CLI::App* finetune_ = nullptr;
  CLI::App* make_model_ = nullptr;
};

}  // namespace pcfarm
