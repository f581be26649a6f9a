#include "bench/engine/engine_bench_storage.h"

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <random>
#include <sstream>
#include <thread>
#include <vector>

#include "base/status.h"
#include "bench/engine/bench_model.h"
#include "bench/engine/engine_bench_util.h"
#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/registry.h"
#include "tasks/engine/llama.h"
#include "tasks/model/dtype.h"
#include "tasks/model/gguf.h"
#include "tasks/model/gguf_writer.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {
namespace {

const std::vector<std::string> kStorages = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K", "Q6_K"};

// The random model's tensors with every element converted to 16 bits.
std::vector<NamedTensor> HalfTensors(const ModelConfig& c, DType type) {
  std::vector<NamedTensor> out;
  for (NamedTensor& t : EngineBenchTensors(c)) {
    const std::vector<float> f = t.tensor.ToF32();
    auto h = std::make_shared<std::vector<uint16_t>>(f.size());
    for (size_t i = 0; i < f.size(); ++i)
      (*h)[i] = type == DType::kF16 ? F32ToF16(f[i]) : F32ToBF16(f[i]);
    HostTensor ht;
    ht.dtype = type;
    ht.shape = t.tensor.shape;
    ht.data = h->data();
    ht.owner = h;
    out.push_back({t.name, std::move(ht)});
  }
  return out;
}

// The model of `storage` (written on first use beside the F32 one).
Result<std::string> EnsureStorageModel(const std::string& f32_dir, const ModelConfig& c,
                                       const std::string& storage) {
  if (storage == "F32") {
    PCFARM_RETURN_IF_ERROR(EnsureEngineBenchModel(f32_dir, c));
    return f32_dir;
  }
  const bool half = storage == "F16" || storage == "BF16";
  const std::string path = f32_dir + "_" + storage + (half ? "" : ".gguf");
  if (std::filesystem::exists(half ? path + "/model.safetensors" : path)) {
    Result<LoadedModel> m = LoadModel(path);
    if (m.ok() && m->config.hidden_size == c.hidden_size &&
        m->config.num_hidden_layers == c.num_hidden_layers &&
        m->config.vocab_size == c.vocab_size)
      return path;
  }
  std::fprintf(stderr, "writing the random model as %s to %s\n", storage.c_str(), path.c_str());
  if (half) {
    PCFARM_RETURN_IF_ERROR(WriteHfModel(path, c,
                                        HalfTensors(c, storage == "F16" ? DType::kF16 : DType::kBF16),
                                        EngineBenchTokenizerJson()));
    return path;
  }
  GgufWriteOptions o;
  o.matrix_type = storage == "Q8_0"   ? kGgmlQ8_0
                  : storage == "Q4_0" ? kGgmlQ4_0
                  : storage == "Q4_K" ? kGgmlQ4_K
                                      : kGgmlQ6_K;
  PCFARM_RETURN_IF_ERROR(
      WriteGgufModel(path, c, EngineBenchTensors(c), EngineBenchTokenizerJson(), o));
  return path;
}

struct StorageFigures {
  int64_t weight_bytes = 0;
  double read_bytes_per_s = 0;
  double decode_tok_s = 0, batch_tok_s = 0, prefill_tok_s = 0;
  std::vector<int32_t> tokens;  // greedy decode at batch 1
};

StorageFigures Better(const StorageFigures& a, const StorageFigures& b) {
  StorageFigures f = a;
  f.read_bytes_per_s = std::max(a.read_bytes_per_s, b.read_bytes_per_s);
  f.decode_tok_s = std::max(a.decode_tok_s, b.decode_tok_s);
  f.batch_tok_s = std::max(a.batch_tok_s, b.batch_tok_s);
  f.prefill_tok_s = std::max(a.prefill_tok_s, b.prefill_tok_s);
  return f;
}

struct Prompts {
  std::vector<int32_t> one;                   // batch-1 decode prompt
  std::vector<GenerationRequest> batch;       // the batched decode's prompts
  std::vector<std::vector<int32_t>> prefill;  // one long sequence
};

Prompts MakePrompts(const StorageBenchOptions& o, int64_t vocab) {
  std::mt19937 rng(11);
  std::uniform_int_distribution<int32_t> id(0, int32_t(vocab - 1));
  auto seq = [&](int len) {
    std::vector<int32_t> v(static_cast<size_t>(len));
    for (int32_t& t : v) t = id(rng);
    return v;
  };
  Prompts p;
  p.one = seq(32);
  for (int i = 0; i < o.batch; ++i) p.batch.push_back({seq(32), 0});
  p.prefill = {seq(o.prefill)};
  return p;
}

Result<StorageFigures> Measure(const std::string& path, const StorageBenchOptions& o,
                               const Prompts& prompts) {
  BackendOptions bo;
  bo.cpu_threads = o.threads;
  PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> backend, CreateBackend("cpu", bo));
  LlamaOptions lo;
  lo.keep_half_weights = true;
  PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::Load(path, backend.get(), lo));
  StorageFigures f;
  f.weight_bytes = model->WeightBytes();
  // As many bytes as a decode step's weights, written so that every page
  // is really there.
  std::vector<uint64_t> words(size_t(f.weight_bytes) / sizeof(uint64_t));
  for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9e3779b97f4a7c15ull;

  GenerationConfig gc;
  gc.sampling.temperature = 0;
  gc.stop_ids = {-1};  // never emitted: always generate max_new_tokens
  auto generate = [&](const std::vector<GenerationRequest>& req, int n, bool keep) -> Status {
    gc.max_new_tokens = n;
    PCFARM_ASSIGN_OR_RETURN(std::vector<Generation> g, model->Generate(req, gc));
    if (keep) f.tokens = g[0].tokens;
    return Status::Ok();
  };
  const std::vector<GenerationRequest> one = {{prompts.one, 0}};
  // The read bandwidth right before and right after the decode runs.
  f.read_bytes_per_s = ReadBandwidth(words, o.threads, o.reps);
  PCFARM_ASSIGN_OR_RETURN(double t1, BestSeconds(o.reps, [&] { return generate(one, 1, false); }));
  PCFARM_ASSIGN_OR_RETURN(double tn,
                          BestSeconds(o.reps, [&] { return generate(one, o.decode_new, true); }));
  f.read_bytes_per_s = std::max(f.read_bytes_per_s, ReadBandwidth(words, o.threads, o.reps));
  f.decode_tok_s = double(o.decode_new - 1) / (tn - t1);
  words = {};
  PCFARM_ASSIGN_OR_RETURN(double b1,
                          BestSeconds(o.reps, [&] { return generate(prompts.batch, 1, false); }));
  PCFARM_ASSIGN_OR_RETURN(
      double bn, BestSeconds(o.reps, [&] { return generate(prompts.batch, o.decode_new, false); }));
  f.batch_tok_s = double(o.batch) * double(o.decode_new - 1) / (bn - b1);
  PCFARM_ASSIGN_OR_RETURN(double tp, BestSeconds(o.reps, [&]() -> Status {
    return model->BatchLogits(prompts.prefill, /*last_only=*/true).status();
  }));
  f.prefill_tok_s = double(o.prefill) / tp;
  return f;
}

std::string MiB(int64_t b) { return Fixed(double(b) / (1 << 20), 0) + " MiB"; }
std::string Times(double r) { return Fixed(r, 2) + "×"; }

}  // namespace

// Decode attention against a KV cache of `positions` positions in every
// layer (the model's shape, one query row): the bytes of K and V it reads a
// step, a second, beside the plain read of as many bytes with as many
// threads. Each layer's cache is its own tensor, so that the caches of all
// layers together exceed the last-level cache as a long generation's do.
struct AttentionFigures {
  double kv_bytes = 0, ours_bytes_per_s = 0, read_bytes_per_s = 0;
};

Result<AttentionFigures> MeasureAttention(const ModelConfig& c, const StorageBenchOptions& o,
                                          int64_t positions) {
  BackendOptions bo;
  bo.cpu_threads = o.threads;
  PCFARM_ASSIGN_OR_RETURN(std::unique_ptr<Backend> be, CreateBackend("cpu", bo));
  const int64_t layers = c.num_hidden_layers, hq = c.num_attention_heads,
                hkv = c.num_key_value_heads, d = c.head_dim;
  std::vector<Tensor> ks, vs;
  std::vector<float> host(size_t(positions * hkv * d));
  for (int64_t l = 0; l < 2 * layers; ++l) {
    for (size_t i = 0; i < host.size(); ++i) host[i] = float((i * 7 + size_t(l)) % 13) * 0.01f;
    PCFARM_ASSIGN_OR_RETURN(Tensor t, be->Alloc({1, positions, hkv, d}, StorageType::kF32));
    PCFARM_RETURN_IF_ERROR(be->Upload(t, host));
    (l % 2 == 0 ? ks : vs).push_back(t);
  }
  PCFARM_ASSIGN_OR_RETURN(Tensor q, be->Alloc({1, hq, d}, StorageType::kF32));
  PCFARM_ASSIGN_OR_RETURN(Tensor out, be->Alloc({1, hq, d}, StorageType::kF32));
  PCFARM_RETURN_IF_ERROR(be->Fill(q, 0.05f));
  const std::vector<int32_t> slots = {0}, pos = {int32_t(positions - 1)};
  auto step = [&]() -> Status {
    for (int64_t l = 0; l < layers; ++l) {
      PCFARM_RETURN_IF_ERROR(be->AttentionDecode(out, q, ks[size_t(l)], vs[size_t(l)], slots, pos));
    }
    return be->Synchronize();
  };
  PCFARM_RETURN_IF_ERROR(step());
  double best = 1e300;
  for (int r = 0; r < 5 * o.reps; ++r) {
    const double t0 = NowSeconds();
    PCFARM_RETURN_IF_ERROR(step());
    best = std::min(best, NowSeconds() - t0);
  }
  AttentionFigures f;
  f.kv_bytes = double(2 * layers * positions * hkv * d * 4);
  f.ours_bytes_per_s = f.kv_bytes / best;
  std::vector<uint64_t> words(size_t(f.kv_bytes) / sizeof(uint64_t));
  for (size_t i = 0; i < words.size(); ++i) words[i] = i * 0x9e3779b97f4a7c15ull;
  f.read_bytes_per_s = ReadBandwidth(words, o.threads, 5 * o.reps);
  return f;
}

int RunStorageBench(const StorageBenchOptions& o) {
  const std::string load_before = LoadAverage();
  std::vector<std::string> storages;
  {
    std::stringstream ss(o.only);
    for (std::string s; std::getline(ss, s, ',');) {
      for (char& ch : s) ch = char(std::toupper(static_cast<unsigned char>(ch)));
      if (std::find(kStorages.begin(), kStorages.end(), s) == kStorages.end()) {
        std::fprintf(stderr, "engine_bench: --only: unknown storage '%s' (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K)\n",
                     s.c_str());
        return 2;
      }
      storages.push_back(s);
    }
  }
  if (storages.empty()) storages = kStorages;
  if (std::find(storages.begin(), storages.end(), "F32") == storages.end())
    storages.insert(storages.begin(), "F32");  // the batched rows' baseline
  if (o.decode_new < 2 || o.reps < 1 || o.rounds < 1 || o.batch < 1 || o.prefill < 1) {
    std::fprintf(stderr, "engine_bench: --decode-new must be >= 2; reps, rounds, batch, prefill >= 1\n");
    return 2;
  }
  const ModelConfig c = EngineBenchConfig(o.small);
  const std::string f32_dir = o.cache_dir + "/pcfarm_engine_bench_h" +
                              std::to_string(c.hidden_size) + "_l" +
                              std::to_string(c.num_hidden_layers) + "_v" +
                              std::to_string(c.vocab_size);
  std::vector<std::string> paths;
  for (const std::string& s : storages) {
    Result<std::string> p = EnsureStorageModel(f32_dir, c, s);
    if (!p.ok()) {
      std::fprintf(stderr, "engine_bench: %s: %s\n", s.c_str(), p.status().ToString().c_str());
      return 1;
    }
    paths.push_back(*p);
  }
  Status st = blas::Load();
  if (!st.ok()) {
    std::fprintf(stderr, "engine_bench: %s\n", st.ToString().c_str());
    return 1;
  }
  const Prompts prompts = MakePrompts(o, c.vocab_size);
  std::vector<std::optional<StorageFigures>> best(storages.size());
  constexpr int64_t kAttentionPositions = 1024;
  std::optional<AttentionFigures> att;
  for (int round = 0; round < o.rounds; ++round) {
    // Odd rounds go in the reverse order: no storage always meets the
    // machine just after the same other one.
    for (size_t k = 0; k < storages.size(); ++k) {
      const size_t i = round % 2 == 0 ? k : storages.size() - 1 - k;
      std::fprintf(stderr, "round %d: %s\n", round + 1, storages[i].c_str());
      Result<StorageFigures> f = Measure(paths[i], o, prompts);
      if (!f.ok()) {
        std::fprintf(stderr, "engine_bench: %s: %s\n", storages[i].c_str(),
                     f.status().ToString().c_str());
        return 1;
      }
      best[i] = best[i] ? Better(*best[i], *f) : *f;
    }
    // Decode attention once a round too: its fastest round beside the
    // fastest plain read of any round.
    Result<AttentionFigures> a = MeasureAttention(c, o, kAttentionPositions);
    if (!a.ok()) {
      std::fprintf(stderr, "engine_bench: attention: %s\n", a.status().ToString().c_str());
      return 1;
    }
    if (!att) att = *a;
    att->ours_bytes_per_s = std::max(att->ours_bytes_per_s, a->ours_bytes_per_s);
    att->read_bytes_per_s = std::max(att->read_bytes_per_s, a->read_bytes_per_s);
  }

  const StorageFigures& f32 = *best[0];
  std::vector<EngineBenchRow> rows;
  std::vector<std::string> notes;
  std::string bandwidths = "read bandwidth of the plain read (GB/s):", sizes = "weight bytes a decode step reads:",
              agree = "greedy tokens equal to F32's for the first:";
  for (size_t i = 0; i < storages.size(); ++i) {
    const StorageFigures& f = *best[i];
    const double bound = f.read_bytes_per_s / double(f.weight_bytes);
    rows.push_back({"decode b1 " + storages[i] + " tok/s (baseline: bound)",
                    Fixed(f.decode_tok_s, 1), Fixed(bound, 1), Times(f.decode_tok_s / bound),
                    "≥ 0.85×"});
    bandwidths += " " + storages[i] + " " + Fixed(f.read_bytes_per_s / 1e9, 1);
    sizes += " " + storages[i] + " " + MiB(f.weight_bytes);
    size_t same = 0;
    while (same < f.tokens.size() && same < f32.tokens.size() && f.tokens[same] == f32.tokens[same])
      ++same;
    if (i > 0) agree += " " + storages[i] + " " + std::to_string(same) + " of " + std::to_string(f.tokens.size());
  }
  for (size_t i = 0; i < storages.size(); ++i) {
    const StorageFigures& f = *best[i];
    rows.push_back({"decode b" + std::to_string(o.batch) + " " + storages[i] +
                        " tok/s (baseline: F32)",
                    Fixed(f.batch_tok_s, 1), Fixed(f32.batch_tok_s, 1),
                    Times(f.batch_tok_s / f32.batch_tok_s), storages[i] == "Q8_0" ? "≥ 2.00×" : "-"});
  }
  for (size_t i = 0; i < storages.size(); ++i) {
    const StorageFigures& f = *best[i];
    rows.push_back({"prefill 1×" + std::to_string(o.prefill) + " " + storages[i] +
                        " tok/s (baseline: F32)",
                    Fixed(f.prefill_tok_s, 0), Fixed(f32.prefill_tok_s, 0),
                    Times(f.prefill_tok_s / f32.prefill_tok_s),
                    storages[i] == "Q8_0" ? "≥ 1.00×" : "-"});
  }
  rows.push_back({"decode attention, " + std::to_string(kAttentionPositions) +
                      " positions, KV GB/s (baseline: plain read)",
                  Fixed(att->ours_bytes_per_s / 1e9, 1), Fixed(att->read_bytes_per_s / 1e9, 1),
                  Times(att->ours_bytes_per_s / att->read_bytes_per_s), "-"});
  const int64_t kv_per_token = 2 * c.num_hidden_layers * c.num_key_value_heads * c.head_dim * 4;
  notes = {
      "model: llama, hidden " + std::to_string(c.hidden_size) + ", " +
          std::to_string(c.num_hidden_layers) + " layers, vocab " + std::to_string(c.vocab_size) +
          ", tied embeddings (read whole as lm_head each step), " +
          Fixed(double(ParamCount(c)) / 1e6, 1) +
          "M parameters; F16/BF16: every tensor 16-bit (HF directory); Q8_0/Q4_0/Q4_K/Q6_K: GGUF, "
          "every matrix quantized (the K-quants by our plain fit), norms F32",
      sizes,
      "bound = read bandwidth / weight bytes; the KV cache a step also reads (" +
          Fixed(double(kv_per_token) / 1024, 0) + " KiB a position, up to " +
          std::to_string(32 + o.decode_new) + " positions) is not in it",
      bandwidths + " (" + std::to_string(o.threads) +
          " threads, each summing its slice once; fastest pass, before or after the decode runs)",
      agree,
      "ours: CPU backend, " + std::to_string(o.threads) + " threads; decode = Generate(" +
          std::to_string(o.decode_new) + ") − Generate(1) from a 32-token prompt (batched: " +
          std::to_string(o.batch) + " prompts of 32); prefill: BatchLogits, last row",
      std::to_string(o.rounds) + " rounds (odd rounds in reverse order), best round per figure; "
          "in a round: fastest of " + std::to_string(o.reps) + " runs after a warm-up",
      "decode attention: AttentionDecode of one query row over " +
          std::to_string(kAttentionPositions) + " cached positions in each of " +
          std::to_string(c.num_hidden_layers) + " layers (" +
          MiB(int64_t(att->kv_bytes)) + " of K and V, each layer its own cache), fastest of " +
          std::to_string(5 * o.reps) + " steps, once a round; the fastest round beside the fastest "
          "plain read of as many bytes (one right after each)",
      "load average before / after: " + load_before + " / " + LoadAverage(),
  };
  PrintEngineTable("engine_bench --storage", "ours", "baseline", rows, notes);
  return 0;
}

}  // namespace pcfarm
