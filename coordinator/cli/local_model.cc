#include "coordinator/cli/local_model.h"

#include <cmath>
#include <random>

#include "tasks/model/gguf_writer.h"
#include "tasks/model/model_loader.h"
#include "tasks/model/model_weights.h"
#include "tasks/model/tokenizer.h"

namespace pcfarm {
namespace {

// The tokenizer's merges are learned from this text; it is plain English so
// that the demo's prompts tokenize into words rather than single bytes.
constexpr std::string_view kCorpus =
    "The farm wakes up before the sun. The farmer walks to the barn, opens the "
    "door and feeds the animals: the cows, the goats, the chickens and the old "
    "horse. Then she checks the weather, because the weather decides the work "
    "of the day. When it rains, she repairs the tools and the fences; when the "
    "sun is out, she works in the fields until the evening.\n"
    "A computer is a machine that follows instructions. It reads numbers from "
    "memory, adds and multiplies them, and writes the results back. A graphics "
    "card does the same work on thousands of numbers at once, which is why it "
    "is good at training language models. Many computers sit idle at night, in "
    "homes and in offices, and their time could be put to work.\n"
    "A language model reads a text one token at a time and predicts the next "
    "token. Training shows the model many texts and nudges its weights so that "
    "the right next token becomes more likely. Fine-tuning starts from a model "
    "that is already trained and teaches it a new task with a small set of "
    "examples. Low-rank adapters make fine-tuning cheap: only two thin matrices "
    "per layer are trained, and the rest of the model stays as it was.\n"
    "Questions and answers. What is the capital of France? The capital of "
    "France is Paris. How many legs does a spider have? A spider has eight "
    "legs. What colour is the sky on a clear day? The sky is blue. Who wrote "
    "the letter? The teacher wrote the letter to the parents of the students.\n"
    "The river runs past the village, under the stone bridge and into the "
    "forest. Children play on its banks in the summer, and in the winter the "
    "water freezes and the whole village comes out to skate. In the spring "
    "the river is high and fast, and nobody goes near it.\n"
    "Numbers: one, two, three, four, five, six, seven, eight, nine, ten. "
    "1 2 3 4 5 6 7 8 9 10 100 1000. Days: Monday, Tuesday, Wednesday, "
    "Thursday, Friday, Saturday, Sunday.\n";

struct Preset {
  const char* name;
  int64_t hidden, layers, heads, kv_heads, ffn;
  int merges;
};

constexpr Preset kPresets[] = {
    {"tiny", 64, 2, 4, 2, 128, 200},
    {"small", 256, 4, 8, 4, 688, 1000},
};

}  // namespace

std::vector<std::string> RandomModelPresetNames() {
  std::vector<std::string> names;
  for (const Preset& p : kPresets) names.push_back(p.name);
  return names;
}

Result<RandomModelInfo> WriteRandomModel(const std::string& dir, std::string_view preset,
                                         uint64_t seed, const std::string& gguf_path) {
  const Preset* p = nullptr;
  for (const Preset& candidate : kPresets)
    if (preset == candidate.name) p = &candidate;
  if (p == nullptr) {
    return InvalidArgument("unknown model config \"" + std::string(preset) +
                           "\" (expected tiny or small)");
  }
  const std::string tokenizer_json = MakeByteLevelTokenizerJson(kCorpus, p->merges);
  PCFARM_ASSIGN_OR_RETURN(Tokenizer tokenizer,
                          Tokenizer::FromJson(tokenizer_json, "built-in tokenizer"));

  ModelConfig c;
  c.architecture = "LlamaForCausalLM";
  c.hidden_size = p->hidden;
  c.intermediate_size = p->ffn;
  c.num_hidden_layers = p->layers;
  c.num_attention_heads = p->heads;
  c.num_key_value_heads = p->kv_heads;
  c.head_dim = p->hidden / p->heads;
  c.vocab_size = tokenizer.vocab_size();
  c.max_position_embeddings = 1024;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = true;
  c.bos_token_id = tokenizer.bos_id();
  c.eos_token_ids = {tokenizer.eos_id()};

  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  RandomModelInfo info{c, 0};
  std::vector<NamedTensor> tensors;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    int64_t n = 1;
    for (int64_t d : e.shape) n *= d;
    std::vector<float> v(size_t(n), 1.0f);
    if (e.shape.size() == 2) {
      const float std = 1.0f / std::sqrt(float(e.shape[1]));
      for (float& x : v) x = std * normal(rng);
    }
    info.parameters += n;
    tensors.push_back({e.name, HostTensor::FromF32(e.shape, std::move(v))});
  }
  PCFARM_RETURN_IF_ERROR(WriteHfModel(dir, c, tensors, tokenizer_json));
  if (!gguf_path.empty()) {
    PCFARM_RETURN_IF_ERROR(
        WriteGgufModel(gguf_path, c, tensors, tokenizer_json));
  }
  return info;
}

}  // namespace pcfarm
