#include "tasks/engine/llama.h"

#include <algorithm>
#include <array>
#include <cassert>
#include <cctype>
#include <cmath>
#include <random>
#include <set>

#include "tasks/backend/ggml_quants.h"
#include "tasks/engine/adapter_io.h"
#include "tasks/engine/llama_internal.h"
#include "tasks/engine/optimizer.h"
#include "tasks/model/mapped_file.h"
#include "tasks/model/model_loader.h"

namespace pcfarm {

struct LlamaModel::Packed {
  int64_t n = 0;
  std::vector<int32_t> tokens, positions, seq_starts, slots, last_rows;
  std::vector<int32_t> targets;  // PackBatch only
  std::vector<float> weights;    // PackBatch only
};

namespace {
// What the backward pass needs of one layer's forward.
struct LayerActs {
  Tensor x, ln1, q, k, v, att, lse, x1, ln2, g, u, s;
  Tensor tq, tk, tv, to, tg, tu, td;  // x·Aᵀ of each LoRA'd projection
};

Shape ShapeOf(const std::vector<int64_t>& v) {
  assert(v.size() == 1 || v.size() == 2);
  return v.size() == 1 ? Shape{v[0]} : Shape{v[0], v[1]};
}

// True for the weight of a q/k/v/o/gate/up/down projection.
bool IsProjectionWeight(const std::string& name) {
  const std::string suffix = "_proj.weight";
  return name.rfind("model.layers.", 0) == 0 && name.size() > suffix.size() &&
         name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// InvalidArgument naming `what` and the first id outside [0, vocab).
Status CheckTokenIds(std::span<const int32_t> ids, int64_t vocab, const std::string& what) {
  for (size_t j = 0; j < ids.size(); ++j) {
    if (ids[j] < 0 || ids[j] >= vocab)
      return InvalidArgument(what + " token " + std::to_string(j) + " is " +
                             std::to_string(ids[j]) + ", outside [0, " + std::to_string(vocab) +
                             ")");
  }
  return Status::Ok();
}

// `ht` quantized to `type` (Q8_0, Q4_0, Q4_K or Q6_K) row by row, in an
// owned buffer.
Result<HostTensor> QuantizeHostTensor(const std::string& name, const HostTensor& ht,
                                      StorageType type) {
  const std::string what = std::string("LlamaModel: quantize ") + StorageTypeName(type) + ": ";
  if (IsQuantized(ht.dtype))
    return InvalidArgument(what + name + " is already quantized (" + DTypeName(ht.dtype) +
                           "); load a quantized GGUF as it is, without quantizing again");
  const int64_t cols = ht.shape.back(), rows = int64_t(ht.numel()) / cols;
  assert(cols % StorageBlockValues(type) == 0);
  // Beyond this, a block's f16 scale overflows: max|x|/127 (Q8_0), max/-8
  // (Q4_0), the largest −min/63 (Q4_K's dmin), max|x|/31/127 (Q6_K).
  const float limit = 65504.0f * (type == StorageType::kQ8_0   ? 127.0f
                                  : type == StorageType::kQ4_0 ? 8.0f
                                  : type == StorageType::kQ4_K ? 63.0f
                                                               : 127.0f * 31.0f);
  const uint64_t row_bytes = StorageBytes(type, cols);
  auto buf = std::make_shared<std::vector<uint8_t>>(size_t(row_bytes) * size_t(rows));
  std::vector<float> row(static_cast<size_t>(cols));
  const auto* src = static_cast<const uint8_t*>(ht.data);
  for (int64_t r = 0; r < rows; ++r) {
    ConvertToF32(ht.dtype, src + DTypeBytes(ht.dtype, size_t(r * cols)), size_t(cols), row.data());
    for (float x : row)
      if (!(std::fabs(x) <= limit))
        return InvalidArgument(what + name + " row " + std::to_string(r) + " holds " +
                               std::to_string(x) + ", outside the format's range");
    PCFARM_RETURN_IF_ERROR(QuantizeBlocks(StorageGgmlType(type), row.data(), cols,
                                          buf->data() + r * row_bytes));
  }
  HostTensor q;
  q.dtype = static_cast<DType>(type);
  q.shape = ht.shape;
  q.data = buf->data();
  q.owner = buf;
  return q;
}

}  // namespace

struct LlamaModel::Acts {
  std::vector<LayerActs> layers;
  Tensor final_in, ones;
};

struct LlamaModel::KvCache {
  std::vector<Tensor> k, v;
};

LlamaModel::LlamaModel(const ModelConfig& config, Backend* backend)
    : config_(config), backend_(backend) {}
LlamaModel::~LlamaModel() = default;

Result<StorageType> ParseWeightQuantization(const std::string& name) {
  std::string lower;
  for (char ch : name) lower += char(std::tolower(static_cast<unsigned char>(ch)));
  if (lower.empty() || lower == "none") return StorageType::kF32;
  if (lower == "q8_0") return StorageType::kQ8_0;
  if (lower == "q4_0") return StorageType::kQ4_0;
  if (lower == "q4_k") return StorageType::kQ4_K;
  if (lower == "q6_k") return StorageType::kQ6_K;
  return InvalidArgument("quantize: '" + name + "' is not a weight format to quantize to; use "
                         "q8_0, q4_0, q4_k or q6_k (or none)");
}

Result<std::unique_ptr<LlamaModel>> LlamaModel::Create(const ModelConfig& config,
                                                       const ModelWeights& weights,
                                                       Backend* backend,
                                                       const LlamaOptions& options) {
  assert(backend != nullptr);
  const ModelConfig& c = config;
  if (c.hidden_size < 1 || c.num_hidden_layers < 1 || c.num_attention_heads < 1 ||
      c.num_key_value_heads < 1 || c.head_dim < 2 || c.head_dim % 2 != 0 ||
      c.num_attention_heads % c.num_key_value_heads != 0 || c.vocab_size < 1 ||
      c.intermediate_size < 1)
    return InvalidArgument("LlamaModel: inconsistent config (hidden " +
                           std::to_string(c.hidden_size) + ", heads " +
                           std::to_string(c.num_attention_heads) + "/" +
                           std::to_string(c.num_key_value_heads) + ", head_dim " +
                           std::to_string(c.head_dim) + ")");
  std::unique_ptr<LlamaModel> m(new LlamaModel(config, backend));
  PCFARM_RETURN_IF_ERROR(m->Upload(weights, options));
  return m;
}

Result<std::unique_ptr<LlamaModel>> LlamaModel::Load(const std::string& path, Backend* backend,
                                                     const LlamaOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(path));
  return Create(loaded.config, loaded.weights, backend, options);
}

std::map<std::string, LlamaModel::Slot> LlamaModel::WeightSlots() {
  std::map<std::string, Slot> m;
  m["model.embed_tokens.weight"] = {&embed_, &d_embed_};
  for (size_t i = 0; i < layers_.size(); ++i) {
    Layer& L = layers_[i];
    const std::string p = "model.layers." + std::to_string(i) + ".";
    m[p + "input_layernorm.weight"] = {&L.ln1, &L.dln1};
    m[p + "post_attention_layernorm.weight"] = {&L.ln2, &L.dln2};
    for (const std::string& t : LoraTargetOrder()) {
      Linear& lin = L.ByTarget(t);
      const std::string name = p + (t.size() == 6 ? "self_attn." : "mlp.") + t;
      m[name + ".weight"] = {&lin.w, &lin.dw};
      if (config_.attention_bias && (t == "q_proj" || t == "k_proj" || t == "v_proj"))
        m[name + ".bias"] = {&lin.b, &lin.db};
    }
  }
  m["model.norm.weight"] = {&norm_, &d_norm_};
  if (!config_.tie_word_embeddings) m["lm_head.weight"] = {&lm_head_, &d_lm_head_};
  return m;
}

int64_t LlamaModel::WeightBytes() const {
  // WeightSlots only takes the weights' addresses; nothing is changed.
  int64_t bytes = 0;
  for (const auto& [name, slot] : const_cast<LlamaModel*>(this)->WeightSlots()) {
    if (slot.value->valid()) bytes += int64_t(slot.value->bytes());
  }
  return bytes;
}

Status LlamaModel::Upload(const ModelWeights& weights, const LlamaOptions& options) {
  if (options.quantize == StorageType::kF16 || options.quantize == StorageType::kBF16)
    return InvalidArgument(std::string("LlamaModel: cannot quantize weights to ") +
                           StorageTypeName(options.quantize) +
                           "; Q8_0, Q4_0, Q4_K and Q6_K can");
  layers_.resize(config_.num_hidden_layers);
  std::map<std::string, Slot> slots = WeightSlots();
  for (const ExpectedTensor& e : ExpectedTensors(config_)) {
    const HostTensor* ht = weights.Find(e.name);
    if (ht == nullptr) return InvalidArgument("LlamaModel: missing weight " + e.name);
    if (ht->shape != e.shape)
      return InvalidArgument("LlamaModel: " + e.name + " has shape " + ShapeString(ht->shape) +
                             ", expected " + ShapeString(e.shape));
    auto it = slots.find(e.name);
    assert(it != slots.end());
    HostTensor quantized;
    if (options.quantize != StorageType::kF32 && IsProjectionWeight(e.name)) {
      if (!IsQuantized(ht->dtype) && e.shape.back() % StorageBlockValues(options.quantize) != 0) {
        // Rows that are not whole blocks stay as loaded (llama.cpp does the
        // same); the caller can say so from UnquantizedProjections().
        unquantized_.push_back(e.name);
      } else {
        PCFARM_ASSIGN_OR_RETURN(quantized, QuantizeHostTensor(e.name, *ht, options.quantize));
        // The f32 rows were read once; the model keeps only the blocks.
        if (ht->mapped != nullptr) ht->mapped->DropPages(ht->data, ht->nbytes());
        ht = &quantized;
      }
    }
    const StorageType native = static_cast<StorageType>(ht->dtype);
    const StorageType st = options.keep_half_weights && backend_->SupportsStorage(native)
                               ? native
                               : StorageType::kF32;
    const Shape shape = ShapeOf(e.shape);
    Tensor t;
    if (st == native && backend_->CanWrapHostBytes()) {
      // The CPU uses the (mapped) host bytes as they are: no second copy.
      // Misaligned data (a hand-made file) falls back to a copy below.
      auto view = backend_->WrapHostBytes(shape, st, ht->data, ht->owner);
      if (view.ok()) t = *view;
    }
    if (!t.valid()) {
      PCFARM_ASSIGN_OR_RETURN(t, backend_->Alloc(shape, st));
      if (st == native) {
        PCFARM_RETURN_IF_ERROR(backend_->UploadBytes(
            t, std::span(static_cast<const std::byte*>(ht->data), ht->nbytes())));
      } else {
        std::vector<float> f = ht->ToF32();
        PCFARM_RETURN_IF_ERROR(backend_->Upload(t, f));
      }
    }
    *it->second.value = t;
  }
  for (Layer& L : layers_) {
    for (const std::string& t : LoraTargetOrder()) {
      Linear& lin = L.ByTarget(t);
      lin.out = lin.w.shape()[0];
      lin.in = lin.w.shape()[1];
    }
  }
  std::vector<float> inv = RopeInverseFrequencies(config_);
  PCFARM_ASSIGN_OR_RETURN(inv_freq_, backend_->Alloc({int64_t(inv.size())}, StorageType::kF32));
  return backend_->Upload(inv_freq_, inv);
}

Result<Tensor> LlamaModel::Alloc(Shape s) { return backend_->Alloc(s, StorageType::kF32); }

const Tensor& LlamaModel::LmHead() const { return lm_head_.valid() ? lm_head_ : embed_; }

int64_t LlamaModel::TrainableCount() const {
  return param_info_.empty() ? 0 : param_info_.back().offset + param_info_.back().numel;
}

// ---- packing ------------------------------------------------------------------

Result<LlamaModel::Packed> LlamaModel::Pack(const std::vector<std::vector<int32_t>>& seqs) const {
  if (seqs.empty()) return InvalidArgument("LlamaModel: empty batch");
  Packed p;
  p.seq_starts.push_back(0);
  for (size_t s = 0; s < seqs.size(); ++s) {
    if (seqs[s].empty())
      return InvalidArgument("LlamaModel: sequence " + std::to_string(s) + " is empty");
    PCFARM_RETURN_IF_ERROR(
        CheckTokenIds(seqs[s], config_.vocab_size, "LlamaModel: sequence " + std::to_string(s)));
    for (size_t j = 0; j < seqs[s].size(); ++j) {
      p.tokens.push_back(seqs[s][j]);
      p.positions.push_back(int32_t(j));
      p.slots.push_back(int32_t(s));
    }
    p.last_rows.push_back(int32_t(p.tokens.size() - 1));
    p.seq_starts.push_back(int32_t(p.tokens.size()));
  }
  p.n = int64_t(p.tokens.size());
  return p;
}

Result<LlamaModel::Packed> LlamaModel::PackBatch(const std::vector<TokenSequence>& batch) const {
  std::vector<std::vector<int32_t>> seqs;
  for (const TokenSequence& s : batch) seqs.push_back(s.tokens);
  PCFARM_ASSIGN_OR_RETURN(Packed p, Pack(seqs));
  for (size_t s = 0; s < batch.size(); ++s) {
    const TokenSequence& seq = batch[s];
    const size_t n = seq.tokens.size();
    if (!seq.weights.empty() && seq.weights.size() != n)
      return InvalidArgument("LlamaModel: sequence " + std::to_string(s) + " has " +
                             std::to_string(seq.weights.size()) + " weights for " +
                             std::to_string(n) + " tokens");
    for (size_t j = 0; j < n; ++j) {
      if (!seq.weights.empty() && !(std::isfinite(seq.weights[j]) && seq.weights[j] >= 0))
        return InvalidArgument("LlamaModel: sequence " + std::to_string(s) + " weight " +
                               std::to_string(j) + " is not a finite number >= 0");
      // Row j predicts token j+1.
      if (j + 1 < n) {
        p.targets.push_back(seq.tokens[j + 1]);
        p.weights.push_back(seq.weights.empty() ? 1.0f : seq.weights[j + 1]);
      } else {
        p.targets.push_back(-1);
        p.weights.push_back(0.0f);
      }
    }
  }
  return p;
}

// ---- forward ------------------------------------------------------------------

Status LlamaModel::LinearForward(const Linear& l, const Tensor& x, const Tensor& y,
                                 const Tensor& ones, Tensor* lora_t) {
  PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(y, x, l.w));
  return LinearExtras(l, x, y, ones, lora_t);
}

Status LlamaModel::LinearsForward(std::initializer_list<LinearCall> calls, const Tensor& x,
                                  const Tensor& ones) {
  std::array<Tensor, Backend::kMaxSharedWeights> ys, ws;
  assert(calls.size() <= ys.size());
  size_t n = 0;
  for (const LinearCall& c : calls) {
    ys[n] = c.y;
    ws[n++] = c.l->w;
  }
  PCFARM_RETURN_IF_ERROR(backend_->MatMulForwardShared({ys.data(), n}, x, {ws.data(), n}));
  for (const LinearCall& c : calls)
    PCFARM_RETURN_IF_ERROR(LinearExtras(*c.l, x, c.y, ones, c.lora_t));
  return Status::Ok();
}

Status LlamaModel::LinearExtras(const Linear& l, const Tensor& x, const Tensor& y,
                                const Tensor& ones, Tensor* lora_t) {
  Backend& be = *backend_;
  if (l.b.valid())
    PCFARM_RETURN_IF_ERROR(be.Gemm(y, ones, false, l.b.Reshaped({1, l.out}), false, 1, 1));
  if (l.lora_a.valid()) {
    PCFARM_ASSIGN_OR_RETURN(Tensor t, Alloc({x.shape()[0], lora_.rank}));
    PCFARM_RETURN_IF_ERROR(be.Gemm(t, x, false, l.lora_a, true, 1, 0));
    PCFARM_RETURN_IF_ERROR(be.Gemm(y, t, false, l.lora_b, true, l.lora_scale, 1));
    if (lora_t != nullptr) *lora_t = t;
  }
  return Status::Ok();
}

Result<Tensor> LlamaModel::Forward(const Packed& p, Acts* acts, KvCache* cache) {
  Backend& be = *backend_;
  const int64_t n = p.n, h = config_.hidden_size, d = config_.head_dim,
                hq = config_.num_attention_heads, hkv = config_.num_key_value_heads,
                ff = config_.intermediate_size;
  const float eps = float(config_.rms_norm_eps);
  PCFARM_ASSIGN_OR_RETURN(Tensor ones, Alloc({n, 1}));
  PCFARM_RETURN_IF_ERROR(be.Fill(ones, 1.0f));
  PCFARM_ASSIGN_OR_RETURN(Tensor x, Alloc({n, h}));
  PCFARM_RETURN_IF_ERROR(be.EmbeddingForward(x, embed_, p.tokens));
  if (acts != nullptr) acts->layers.clear();
  // Without acts nothing a layer makes outlives the next layer, so every
  // layer reuses the first one's tensors and the residual stream takes
  // turns in two: a decode step allocates 15 tensors instead of 13 a layer
  // (each allocation ~0.3 µs on the CPU, 3% of a Q4_0 step), and the
  // activations stay in the same cache lines from layer to layer.
  LayerActs kept;
  Tensor kept_o, residual[2] = {x, Tensor()};
  auto take = [&](Tensor& t, Tensor& keep, Shape s) -> Status {
    if (acts == nullptr && keep.valid()) {
      t = keep;
      return Status::Ok();
    }
    PCFARM_ASSIGN_OR_RETURN(t, Alloc(s));
    if (acts == nullptr) keep = t;
    return Status::Ok();
  };
  for (size_t l = 0; l < layers_.size(); ++l) {
    const Layer& L = layers_[l];
    LayerActs a;
    a.x = x;
    PCFARM_RETURN_IF_ERROR(take(a.ln1, kept.ln1, {n, h}));
    PCFARM_RETURN_IF_ERROR(be.RmsNormForward(a.ln1, x, L.ln1, eps));
    PCFARM_RETURN_IF_ERROR(take(a.q, kept.q, {n, hq * d}));
    PCFARM_RETURN_IF_ERROR(take(a.k, kept.k, {n, hkv * d}));
    PCFARM_RETURN_IF_ERROR(take(a.v, kept.v, {n, hkv * d}));
    PCFARM_RETURN_IF_ERROR(LinearsForward(
        {{&L.q, a.q, &a.tq}, {&L.k, a.k, &a.tk}, {&L.v, a.v, &a.tv}}, a.ln1, ones));
    const Tensor q3 = a.q.Reshaped({n, hq, d}), k3 = a.k.Reshaped({n, hkv, d}),
                 v3 = a.v.Reshaped({n, hkv, d});
    PCFARM_RETURN_IF_ERROR(be.RopeForward(q3, q3, inv_freq_, p.positions));
    PCFARM_RETURN_IF_ERROR(be.RopeForward(k3, k3, inv_freq_, p.positions));
    PCFARM_RETURN_IF_ERROR(take(a.att, kept.att, {n, hq * d}));
    const Tensor att3 = a.att.Reshaped({n, hq, d});
    if (cache != nullptr) {
      PCFARM_RETURN_IF_ERROR(be.KvCacheWrite(cache->k[l], k3, p.slots, p.positions));
      PCFARM_RETURN_IF_ERROR(be.KvCacheWrite(cache->v[l], v3, p.slots, p.positions));
      PCFARM_RETURN_IF_ERROR(
          be.AttentionDecode(att3, q3, cache->k[l], cache->v[l], p.slots, p.positions));
    } else {
      if (acts != nullptr) {
        PCFARM_ASSIGN_OR_RETURN(a.lse, Alloc({n, hq}));
      }
      PCFARM_RETURN_IF_ERROR(be.AttentionForward(att3, acts != nullptr ? &a.lse : nullptr, q3,
                                                 k3, v3, p.seq_starts));
    }
    Tensor o;
    PCFARM_RETURN_IF_ERROR(take(o, kept_o, {n, h}));
    PCFARM_RETURN_IF_ERROR(LinearForward(L.o, a.att, o, ones, &a.to));
    PCFARM_RETURN_IF_ERROR(take(a.x1, kept.x1, {n, h}));
    PCFARM_RETURN_IF_ERROR(be.Add(a.x1, x, o));
    PCFARM_RETURN_IF_ERROR(take(a.ln2, kept.ln2, {n, h}));
    PCFARM_RETURN_IF_ERROR(be.RmsNormForward(a.ln2, a.x1, L.ln2, eps));
    PCFARM_RETURN_IF_ERROR(take(a.g, kept.g, {n, ff}));
    PCFARM_RETURN_IF_ERROR(take(a.u, kept.u, {n, ff}));
    PCFARM_RETURN_IF_ERROR(
        LinearsForward({{&L.gate, a.g, &a.tg}, {&L.up, a.u, &a.tu}}, a.ln2, ones));
    PCFARM_RETURN_IF_ERROR(take(a.s, kept.s, {n, ff}));
    PCFARM_RETURN_IF_ERROR(be.SwiGluForward(a.s, a.g, a.u));
    PCFARM_RETURN_IF_ERROR(LinearForward(L.down, a.s, o, ones, &a.td));
    // The other residual buffer: the previous layer's input, read by no one
    // after this layer's x1.
    Tensor next;
    PCFARM_RETURN_IF_ERROR(take(next, residual[(l + 1) % 2], {n, h}));
    PCFARM_RETURN_IF_ERROR(be.Add(next, a.x1, o));
    if (acts != nullptr) acts->layers.push_back(std::move(a));
    x = next;
  }
  PCFARM_ASSIGN_OR_RETURN(Tensor out, Alloc({n, h}));
  PCFARM_RETURN_IF_ERROR(be.RmsNormForward(out, x, norm_, eps));
  if (acts != nullptr) {
    acts->final_in = x;
    acts->ones = ones;
  }
  return out;
}

// ---- backward -----------------------------------------------------------------

Status LlamaModel::LinearBackward(const Linear& l, const Tensor& x, const Tensor& dy,
                                  const Tensor& dx, const Tensor& ones, const Tensor& lora_t) {
  Backend& be = *backend_;
  PCFARM_RETURN_IF_ERROR(
      be.MatMulBackward(&dx, l.dw.valid() ? &l.dw : nullptr, dy, x, l.w));
  if (l.db.valid())
    PCFARM_RETURN_IF_ERROR(be.Gemm(l.db.Reshaped({1, l.out}), ones, true, dy, false, 1, 1));
  if (l.lora_a.valid()) {
    const float s = l.lora_scale;
    PCFARM_RETURN_IF_ERROR(be.Gemm(l.dlora_b, dy, true, lora_t, false, s, 1));
    PCFARM_ASSIGN_OR_RETURN(Tensor dt, Alloc({x.shape()[0], lora_.rank}));
    PCFARM_RETURN_IF_ERROR(be.Gemm(dt, dy, false, l.lora_b, false, s, 0));
    PCFARM_RETURN_IF_ERROR(be.Gemm(l.dlora_a, dt, true, x, false, 1, 1));
    PCFARM_RETURN_IF_ERROR(be.Gemm(dx, dt, false, l.lora_a, false, 1, 1));
  }
  return Status::Ok();
}

Status LlamaModel::Backward(const Packed& p, Acts& acts, const Tensor& dhidden) {
  Backend& be = *backend_;
  const int64_t n = p.n, h = config_.hidden_size, d = config_.head_dim,
                hq = config_.num_attention_heads, hkv = config_.num_key_value_heads,
                ff = config_.intermediate_size;
  const float eps = float(config_.rms_norm_eps);
  auto zeros = [&](Shape s) -> Result<Tensor> {
    PCFARM_ASSIGN_OR_RETURN(Tensor t, Alloc(s));
    PCFARM_RETURN_IF_ERROR(be.Fill(t, 0.0f));
    return t;
  };
  const Tensor& ones = acts.ones;
  // dx carries ∂loss/∂(residual stream) down the layers.
  PCFARM_ASSIGN_OR_RETURN(Tensor dx, zeros({n, h}));
  PCFARM_RETURN_IF_ERROR(be.RmsNormBackward(dx, d_norm_.valid() ? &d_norm_ : nullptr, dhidden,
                                            acts.final_in, norm_, eps));
  for (size_t l = layers_.size(); l-- > 0;) {
    const Layer& L = layers_[l];
    const LayerActs& a = acts.layers[l];
    // MLP block: out = x1 + down(silu(gate(n2))·up(n2)).
    PCFARM_ASSIGN_OR_RETURN(Tensor ds, zeros({n, ff}));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.down, a.s, dx, ds, ones, a.td));
    PCFARM_ASSIGN_OR_RETURN(Tensor dg, zeros({n, ff}));
    PCFARM_ASSIGN_OR_RETURN(Tensor du, zeros({n, ff}));
    PCFARM_RETURN_IF_ERROR(be.SwiGluBackward(dg, du, ds, a.g, a.u));
    PCFARM_ASSIGN_OR_RETURN(Tensor dln2, zeros({n, h}));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.gate, a.ln2, dg, dln2, ones, a.tg));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.up, a.ln2, du, dln2, ones, a.tu));
    PCFARM_RETURN_IF_ERROR(
        be.RmsNormBackward(dx, L.dln2.valid() ? &L.dln2 : nullptr, dln2, a.x1, L.ln2, eps));
    // Attention block: x1 = x + o(attn(rope(q), rope(k), v)).
    PCFARM_ASSIGN_OR_RETURN(Tensor datt, zeros({n, hq * d}));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.o, a.att, dx, datt, ones, a.to));
    PCFARM_ASSIGN_OR_RETURN(Tensor dqr, zeros({n, hq, d}));
    PCFARM_ASSIGN_OR_RETURN(Tensor dkr, zeros({n, hkv, d}));
    PCFARM_ASSIGN_OR_RETURN(Tensor dv, zeros({n, hkv * d}));
    PCFARM_RETURN_IF_ERROR(be.AttentionBackward(
        dqr, dkr, dv.Reshaped({n, hkv, d}), datt.Reshaped({n, hq, d}), a.q.Reshaped({n, hq, d}),
        a.k.Reshaped({n, hkv, d}), a.v.Reshaped({n, hkv, d}), a.att.Reshaped({n, hq, d}), a.lse,
        p.seq_starts));
    PCFARM_ASSIGN_OR_RETURN(Tensor dq, zeros({n, hq * d}));
    PCFARM_ASSIGN_OR_RETURN(Tensor dk, zeros({n, hkv * d}));
    PCFARM_RETURN_IF_ERROR(be.RopeBackward(dq.Reshaped({n, hq, d}), dqr, inv_freq_, p.positions));
    PCFARM_RETURN_IF_ERROR(
        be.RopeBackward(dk.Reshaped({n, hkv, d}), dkr, inv_freq_, p.positions));
    PCFARM_ASSIGN_OR_RETURN(Tensor dln1, zeros({n, h}));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.q, a.ln1, dq, dln1, ones, a.tq));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.k, a.ln1, dk, dln1, ones, a.tk));
    PCFARM_RETURN_IF_ERROR(LinearBackward(L.v, a.ln1, dv, dln1, ones, a.tv));
    PCFARM_RETURN_IF_ERROR(
        be.RmsNormBackward(dx, L.dln1.valid() ? &L.dln1 : nullptr, dln1, a.x, L.ln1, eps));
  }
  if (d_embed_.valid()) PCFARM_RETURN_IF_ERROR(be.EmbeddingBackward(d_embed_, dx, p.tokens));
  return Status::Ok();
}

// ---- inference ----------------------------------------------------------------

Result<std::vector<float>> LlamaModel::Logits(std::span<const int32_t> tokens) {
  return BatchLogits({std::vector<int32_t>(tokens.begin(), tokens.end())}, false);
}

Result<std::vector<float>> LlamaModel::BatchLogits(
    const std::vector<std::vector<int32_t>>& sequences, bool last_only) {
  PCFARM_ASSIGN_OR_RETURN(Packed p, Pack(sequences));
  PCFARM_ASSIGN_OR_RETURN(Tensor hidden, Forward(p, nullptr, nullptr));
  const int64_t h = config_.hidden_size, vocab = config_.vocab_size;
  if (last_only) {
    PCFARM_ASSIGN_OR_RETURN(Tensor last, Alloc({int64_t(p.last_rows.size()), h}));
    PCFARM_RETURN_IF_ERROR(backend_->EmbeddingForward(last, hidden, p.last_rows));
    hidden = last;
  }
  const int64_t rows = hidden.shape()[0];
  PCFARM_ASSIGN_OR_RETURN(Tensor logits, Alloc({rows, vocab}));
  PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(logits, hidden, LmHead()));
  std::vector<float> out(size_t(rows * vocab));
  PCFARM_RETURN_IF_ERROR(backend_->Download(logits, out));
  return out;
}

Result<CrossEntropySums> LlamaModel::Loss(const std::vector<TokenSequence>& batch) {
  PCFARM_ASSIGN_OR_RETURN(Packed p, PackBatch(batch));
  PCFARM_ASSIGN_OR_RETURN(Tensor hidden, Forward(p, nullptr, nullptr));
  PCFARM_ASSIGN_OR_RETURN(Tensor logits, Alloc({p.n, config_.vocab_size}));
  PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(logits, hidden, LmHead()));
  return backend_->CrossEntropyForward(nullptr, logits, p.targets, p.weights);
}

Result<std::vector<Generation>> LlamaModel::Generate(const std::vector<GenerationRequest>& requests,
                                                     const GenerationConfig& gc) {
  if (gc.max_new_tokens < 0)
    return InvalidArgument("Generate: max_new_tokens is " + std::to_string(gc.max_new_tokens));
  std::vector<std::vector<int32_t>> prompts;
  for (const GenerationRequest& r : requests) prompts.push_back(r.prompt);
  PCFARM_ASSIGN_OR_RETURN(Packed p, Pack(prompts));
  const int64_t b = int64_t(requests.size()), vocab = config_.vocab_size;
  std::vector<Generation> out(b);
  if (gc.max_new_tokens == 0) return out;
  const std::vector<int32_t> stop_ids = StopIds(gc);
  const std::set<int32_t> stop(stop_ids.begin(), stop_ids.end());
  // Integer dot products with Q8_0/Q4_0 weights (decode reads each weight
  // once per step, and widening it to f32 cost more than reading it).
  ScopedRoundedActivations rounded(*backend_);

  int64_t t = 0;
  for (const auto& pr : prompts) t = std::max(t, int64_t(pr.size()) + gc.max_new_tokens);
  KvCache cache;
  for (size_t l = 0; l < layers_.size(); ++l) {
    Shape s{b, t, config_.num_key_value_heads, config_.head_dim};
    PCFARM_ASSIGN_OR_RETURN(Tensor k, Alloc(s));
    PCFARM_ASSIGN_OR_RETURN(Tensor v, Alloc(s));
    cache.k.push_back(k);
    cache.v.push_back(v);
  }
  // Prefill: every prompt at once; keep only each prompt's last row.
  PCFARM_ASSIGN_OR_RETURN(Tensor hidden, Forward(p, nullptr, &cache));
  PCFARM_ASSIGN_OR_RETURN(Tensor last, Alloc({b, config_.hidden_size}));
  PCFARM_RETURN_IF_ERROR(backend_->EmbeddingForward(last, hidden, p.last_rows));
  std::vector<int32_t> live(b);
  for (int64_t i = 0; i < b; ++i) live[i] = int32_t(i);
  std::vector<float> host;
  for (;;) {
    if (gc.check_point && gc.check_point()) return Cancelled("generation cancelled");
    const int64_t rows = int64_t(live.size());
    PCFARM_ASSIGN_OR_RETURN(Tensor logits, Alloc({rows, vocab}));
    PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(logits, last, LmHead()));
    host.resize(size_t(rows * vocab));
    PCFARM_RETURN_IF_ERROR(backend_->Download(logits, host));
    std::vector<int32_t> next_live;
    Packed step;
    for (int64_t j = 0; j < rows; ++j) {
      const int32_t i = live[j];
      Generation& g = out[i];
      std::span<const float> row(host.data() + j * vocab, size_t(vocab));
      const double u = CounterUniform(requests[i].seed, g.tokens.size());
      const int32_t tok = SampleToken(row, gc.sampling, u);
      g.tokens.push_back(tok);
      g.logprobs.push_back(float(LogSoftmaxAt(row, tok)));
      if (stop.count(tok)) {
        g.finish = FinishReason::kStop;
      } else if (int64_t(g.tokens.size()) >= gc.max_new_tokens) {
        g.finish = FinishReason::kLength;
      } else {
        next_live.push_back(i);
        step.tokens.push_back(tok);
        step.positions.push_back(int32_t(prompts[i].size() + g.tokens.size() - 1));
        step.slots.push_back(i);
      }
    }
    if (next_live.empty()) break;
    live = std::move(next_live);
    step.n = int64_t(live.size());
    for (int64_t j = 0; j <= step.n; ++j) step.seq_starts.push_back(int32_t(j));
    PCFARM_ASSIGN_OR_RETURN(last, Forward(step, nullptr, &cache));
  }
  return out;
}

std::vector<int32_t> LlamaModel::StopIds(const GenerationConfig& gc) const {
  if (!gc.stop_ids.empty()) return gc.stop_ids;
  std::vector<int32_t> ids;
  for (int64_t id : config_.eos_token_ids) ids.push_back(int32_t(id));
  return ids;
}

Status LlamaModel::TeacherForcedLogits(const std::vector<std::vector<int32_t>>& prompts,
                                       const std::vector<std::vector<int32_t>>& continuations,
                                       const LogitsRowFn& row) {
  if (prompts.size() != continuations.size())
    return InvalidArgument("TeacherForcedLogits: " + std::to_string(prompts.size()) +
                           " prompts but " + std::to_string(continuations.size()) +
                           " continuations");
  // The sequences run, and for each the packed row that predicts each of
  // its continuation tokens.
  std::vector<std::vector<int32_t>> seqs;
  std::vector<size_t> seq_of;  // index into prompts of each run sequence
  for (size_t s = 0; s < prompts.size(); ++s) {
    if (prompts[s].empty())
      return InvalidArgument("TeacherForcedLogits: prompt " + std::to_string(s) + " is empty");
    PCFARM_RETURN_IF_ERROR(CheckTokenIds(continuations[s], config_.vocab_size,
                                         "TeacherForcedLogits: continuation " +
                                             std::to_string(s)));
    if (continuations[s].empty()) continue;
    std::vector<int32_t> t = prompts[s];
    t.insert(t.end(), continuations[s].begin(), continuations[s].end() - 1);
    seqs.push_back(std::move(t));
    seq_of.push_back(s);
  }
  if (seqs.empty()) return Status::Ok();
  PCFARM_ASSIGN_OR_RETURN(Packed p, Pack(seqs));
  std::vector<int32_t> rows;  // packed row of each (sequence, token), in order
  for (size_t q = 0; q < seqs.size(); ++q) {
    const int32_t first = p.seq_starts[q] + int32_t(prompts[seq_of[q]].size()) - 1;
    for (size_t k = 0; k < continuations[seq_of[q]].size(); ++k) rows.push_back(first + int32_t(k));
  }
  PCFARM_ASSIGN_OR_RETURN(Tensor hidden, Forward(p, nullptr, nullptr));
  const int64_t vocab = config_.vocab_size;
  const int64_t chunk = std::max<int64_t>(1, kTeacherForcedChunkFloats / vocab);
  std::vector<float> host;
  size_t q = 0, k = 0;  // the (sequence, token) of the next row
  for (size_t begin = 0; begin < rows.size(); begin += size_t(chunk)) {
    const size_t end = std::min(rows.size(), begin + size_t(chunk));
    const int64_t n = int64_t(end - begin);
    PCFARM_ASSIGN_OR_RETURN(Tensor picked, Alloc({n, config_.hidden_size}));
    PCFARM_RETURN_IF_ERROR(backend_->EmbeddingForward(
        picked, hidden, std::span<const int32_t>(rows.data() + begin, size_t(n))));
    PCFARM_ASSIGN_OR_RETURN(Tensor logits, Alloc({n, vocab}));
    PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(logits, picked, LmHead()));
    host.resize(size_t(n * vocab));
    PCFARM_RETURN_IF_ERROR(backend_->Download(logits, host));
    for (int64_t i = 0; i < n; ++i) {
      PCFARM_RETURN_IF_ERROR(
          row(seq_of[q], k, std::span<const float>(host.data() + i * vocab, size_t(vocab))));
      if (++k == continuations[seq_of[q]].size()) {
        ++q;
        k = 0;
      }
    }
  }
  return Status::Ok();
}

// ---- training -----------------------------------------------------------------

Status LlamaModel::EnableLora(const LoraConfig& lora) {
  if (mode_ == TrainMode::kFull)
    return FailedPrecondition("EnableLora: the model is already in full-parameter training");
  if (lora.rank < 1) return InvalidArgument("EnableLora: rank " + std::to_string(lora.rank));
  if (!(lora.alpha > 0) || !std::isfinite(lora.alpha))
    return InvalidArgument("EnableLora: lora_alpha must be > 0");
  if (lora.target_modules.empty()) return InvalidArgument("EnableLora: no target_modules");
  std::set<std::string> targets;
  for (const std::string& t : lora.target_modules) {
    const auto& order = LoraTargetOrder();
    if (std::find(order.begin(), order.end(), t) == order.end())
      return InvalidArgument("EnableLora: unknown target module \"" + t +
                             "\" (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, "
                             "down_proj)");
    if (!targets.insert(t).second)
      return InvalidArgument("EnableLora: target module \"" + t + "\" listed twice");
  }
  std::vector<Param> params;
  std::vector<ParameterInfo> info;
  std::mt19937_64 rng(lora.seed);
  const float scale = float(lora.alpha / double(lora.rank));
  auto add = [&](const std::string& name, Shape s, Tensor* value, Tensor* grad) -> Status {
    Param p;
    PCFARM_ASSIGN_OR_RETURN(p.value, Alloc(s));
    PCFARM_ASSIGN_OR_RETURN(p.grad, Alloc(s));
    PCFARM_ASSIGN_OR_RETURN(p.m, Alloc(s));
    PCFARM_ASSIGN_OR_RETURN(p.v, Alloc(s));
    for (const Tensor* t : {&p.grad, &p.m, &p.v}) PCFARM_RETURN_IF_ERROR(backend_->Fill(*t, 0));
    *value = p.value;
    *grad = p.grad;
    ParameterInfo pi{name, {s[0], s[1]}, 0, s.numel()};
    if (!info.empty()) pi.offset = info.back().offset + info.back().numel;
    info.push_back(pi);
    params.push_back(p);
    return Status::Ok();
  };
  // Build into fresh tensors; the linears are switched over only on success.
  std::vector<std::array<Tensor, 4>> per_linear;  // a, b, da, db in layout order
  for (size_t l = 0; l < layers_.size(); ++l) {
    for (const std::string& t : LoraTargetOrder()) {
      if (!targets.count(t)) continue;
      const Linear& lin = layers_[l].ByTarget(t);
      std::array<Tensor, 4> ab;
      PCFARM_RETURN_IF_ERROR(
          add(LoraTensorName(int64_t(l), t, false), {lora.rank, lin.in}, &ab[0], &ab[2]));
      PCFARM_RETURN_IF_ERROR(
          add(LoraTensorName(int64_t(l), t, true), {lin.out, lora.rank}, &ab[1], &ab[3]));
      std::vector<float> a(size_t(lora.rank * lin.in));
      DrawLoraA(a, lin.in, rng);
      PCFARM_RETURN_IF_ERROR(backend_->Upload(ab[0], a));
      PCFARM_RETURN_IF_ERROR(backend_->Fill(ab[1], 0));
      per_linear.push_back(ab);
    }
  }
  size_t k = 0;
  for (Layer& L : layers_) {
    for (const std::string& t : LoraTargetOrder()) {
      Linear& lin = L.ByTarget(t);
      if (!targets.count(t)) {
        lin.lora_a = lin.lora_b = lin.dlora_a = lin.dlora_b = Tensor();
        continue;
      }
      lin.lora_a = per_linear[k][0];
      lin.lora_b = per_linear[k][1];
      lin.dlora_a = per_linear[k][2];
      lin.dlora_b = per_linear[k][3];
      lin.lora_scale = scale;
      ++k;
    }
  }
  lora_ = lora;
  mode_ = TrainMode::kLora;
  params_ = std::move(params);
  param_info_ = std::move(info);
  accumulated_weight_ = 0;
  step_ = 0;
  return Status::Ok();
}

Status LlamaModel::EnableFullTraining() {
  if (mode_ == TrainMode::kLora)
    return FailedPrecondition("EnableFullTraining: the model already has LoRA adapters");
  if (mode_ == TrainMode::kFull) return Status::Ok();
  std::map<std::string, Slot> slots = WeightSlots();
  for (const auto& [name, slot] : slots)
    if (IsProjectionWeight(name) && IsQuantized(slot.value->type()))
      return FailedPrecondition(
          std::string("EnableFullTraining: the base model is quantized (") + name + " is " +
          StorageTypeName(slot.value->type()) +
          "); a quantized base stays frozen: train LoRA adapters on it (QLoRA), or load "
          "the weights unquantized for full fine-tuning");
  std::vector<Param> params;
  std::vector<ParameterInfo> info;
  int64_t offset = 0;
  for (const ExpectedTensor& e : ExpectedTensors(config_)) {
    Slot& s = slots.at(e.name);
    Param p;
    const Shape shape = ShapeOf(e.shape);
    if (s.value->type() == StorageType::kF32 && !s.value->read_only()) {
      p.value = *s.value;
    } else {
      PCFARM_ASSIGN_OR_RETURN(p.value, Alloc(shape));
      PCFARM_RETURN_IF_ERROR(backend_->Copy(p.value, *s.value));
    }
    PCFARM_ASSIGN_OR_RETURN(p.grad, Alloc(shape));
    PCFARM_ASSIGN_OR_RETURN(p.m, Alloc(shape));
    PCFARM_ASSIGN_OR_RETURN(p.v, Alloc(shape));
    for (const Tensor* t : {&p.grad, &p.m, &p.v}) PCFARM_RETURN_IF_ERROR(backend_->Fill(*t, 0));
    info.push_back({e.name, e.shape, offset, shape.numel()});
    offset += shape.numel();
    params.push_back(p);
  }
  // Switch over only once everything is allocated.
  size_t i = 0;
  for (const ExpectedTensor& e : ExpectedTensors(config_)) {
    Slot& s = slots.at(e.name);
    *s.value = params[i].value;
    *s.grad = params[i].grad;
    ++i;
  }
  mode_ = TrainMode::kFull;
  params_ = std::move(params);
  param_info_ = std::move(info);
  accumulated_weight_ = 0;
  step_ = 0;
  return Status::Ok();
}

Result<CrossEntropySums> LlamaModel::AccumulateGradients(const std::vector<TokenSequence>& batch) {
  if (mode_ == TrainMode::kNone)
    return FailedPrecondition("AccumulateGradients: call EnableLora or EnableFullTraining first");
  PCFARM_ASSIGN_OR_RETURN(Packed p, PackBatch(batch));
  Acts acts;
  PCFARM_ASSIGN_OR_RETURN(Tensor hidden, Forward(p, &acts, nullptr));
  PCFARM_ASSIGN_OR_RETURN(Tensor logits, Alloc({p.n, config_.vocab_size}));
  PCFARM_RETURN_IF_ERROR(backend_->MatMulForward(logits, hidden, LmHead()));
  PCFARM_ASSIGN_OR_RETURN(CrossEntropySums sums,
                          backend_->CrossEntropyForward(nullptr, logits, p.targets, p.weights));
  if (sums.weight <= 0) return sums;
  PCFARM_ASSIGN_OR_RETURN(Tensor dlogits, Alloc({p.n, config_.vocab_size}));
  PCFARM_RETURN_IF_ERROR(backend_->Fill(dlogits, 0));
  PCFARM_RETURN_IF_ERROR(
      backend_->CrossEntropyBackward(dlogits, logits, p.targets, p.weights, 1.0f));
  logits = Tensor();
  PCFARM_ASSIGN_OR_RETURN(Tensor dhidden, Alloc({p.n, config_.hidden_size}));
  PCFARM_RETURN_IF_ERROR(backend_->Fill(dhidden, 0));
  const Tensor& d_head = lm_head_.valid() ? d_lm_head_ : d_embed_;
  PCFARM_RETURN_IF_ERROR(backend_->MatMulBackward(&dhidden, d_head.valid() ? &d_head : nullptr,
                                                  dlogits, hidden, LmHead()));
  dlogits = Tensor();
  PCFARM_RETURN_IF_ERROR(Backward(p, acts, dhidden));
  accumulated_weight_ += sums.weight;
  return sums;
}

Status LlamaModel::ZeroGradients() {
  for (Param& p : params_) PCFARM_RETURN_IF_ERROR(backend_->Fill(p.grad, 0));
  accumulated_weight_ = 0;
  return Status::Ok();
}

Result<std::vector<float>> LlamaModel::ExportGradients() {
  if (mode_ == TrainMode::kNone || !(accumulated_weight_ > 0))
    return FailedPrecondition("ExportGradients: no gradient with weight > 0 accumulated");
  std::vector<float> flat(static_cast<size_t>(TrainableCount()));
  const float inv = float(1.0 / accumulated_weight_);
  for (size_t i = 0; i < params_.size(); ++i) {
    std::span<float> dst(flat.data() + param_info_[i].offset, size_t(param_info_[i].numel));
    PCFARM_RETURN_IF_ERROR(backend_->Download(params_[i].grad, dst));
    for (float& g : dst) g *= inv;
  }
  return flat;
}

Status LlamaModel::ApplyAccumulated(const OptimizerConfig& opt, StepStats* stats) {
  std::vector<AdamWSlot> slots;
  for (const Param& p : params_) slots.push_back({p.value, p.grad, p.m, p.v});
  PCFARM_ASSIGN_OR_RETURN(*stats, ClipAndStepAdamW(backend_, slots, opt, step_ + 1));
  ++step_;
  return ZeroGradients();
}

Result<StepStats> LlamaModel::Step(const OptimizerConfig& opt) {
  if (mode_ == TrainMode::kNone || !(accumulated_weight_ > 0))
    return FailedPrecondition("Step: no gradient with weight > 0 accumulated");
  const float inv = float(1.0 / accumulated_weight_);
  for (Param& p : params_) PCFARM_RETURN_IF_ERROR(backend_->Scale(p.grad, inv));
  StepStats stats;
  PCFARM_RETURN_IF_ERROR(ApplyAccumulated(opt, &stats));
  return stats;
}

Result<StepStats> LlamaModel::ApplyGradients(std::span<const float> mean_gradient,
                                             const OptimizerConfig& opt) {
  if (mode_ == TrainMode::kNone)
    return FailedPrecondition("ApplyGradients: call EnableLora or EnableFullTraining first");
  if (int64_t(mean_gradient.size()) != TrainableCount())
    return InvalidArgument("ApplyGradients: gradient has " + std::to_string(mean_gradient.size()) +
                           " values, the model has " + std::to_string(TrainableCount()) +
                           " trainable parameters");
  for (size_t i = 0; i < mean_gradient.size(); ++i)
    if (!std::isfinite(mean_gradient[i]))
      return InvalidArgument("ApplyGradients: gradient value " + std::to_string(i) +
                             " is not finite");
  for (size_t i = 0; i < params_.size(); ++i)
    PCFARM_RETURN_IF_ERROR(backend_->Upload(
        params_[i].grad,
        mean_gradient.subspan(size_t(param_info_[i].offset), size_t(param_info_[i].numel))));
  StepStats stats;
  PCFARM_RETURN_IF_ERROR(ApplyAccumulated(opt, &stats));
  return stats;
}

Result<std::vector<float>> LlamaModel::GetParameters() {
  std::vector<float> flat(static_cast<size_t>(TrainableCount()));
  for (size_t i = 0; i < params_.size(); ++i)
    PCFARM_RETURN_IF_ERROR(backend_->Download(
        params_[i].value,
        std::span(flat.data() + param_info_[i].offset, size_t(param_info_[i].numel))));
  return flat;
}

Result<std::vector<NamedTensor>> LlamaModel::ExportWeights() {
  std::map<std::string, Slot> slots = WeightSlots();
  std::vector<NamedTensor> out;
  for (const ExpectedTensor& e : ExpectedTensors(config_)) {
    auto it = slots.find(e.name);
    if (it == slots.end() || !it->second.value->valid())
      return Internal("ExportWeights: no weight " + e.name);
    std::vector<float> v(size_t(it->second.value->shape().numel()));
    PCFARM_RETURN_IF_ERROR(backend_->Download(*it->second.value, v).WithContext(e.name));
    out.push_back({e.name, HostTensor::FromF32(e.shape, std::move(v))});
  }
  return out;
}

Status LlamaModel::SetParameters(std::span<const float> flat) {
  if (int64_t(flat.size()) != TrainableCount())
    return InvalidArgument("SetParameters: " + std::to_string(flat.size()) +
                           " values, the model has " + std::to_string(TrainableCount()) +
                           " trainable parameters");
  for (size_t i = 0; i < params_.size(); ++i)
    PCFARM_RETURN_IF_ERROR(backend_->Upload(
        params_[i].value,
        flat.subspan(size_t(param_info_[i].offset), size_t(param_info_[i].numel))));
  return Status::Ok();
}

}  // namespace pcfarm
