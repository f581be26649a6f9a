// Test helpers (tests only): tiny random llama models built in memory, and a
// plain double-precision reference of the llama forward pass and loss,
// written straight from the Hugging Face modelling code with no shared code
// with the engine.
#pragma once

#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "tasks/engine/llama.h"
#include "tasks/model/model_config.h"
#include "tasks/model/model_weights.h"

namespace pcfarm::testing {

// hidden 16, 2 layers, 4 heads of 4, 2 kv heads, ffn 32, vocab 40.
inline ModelConfig TinyConfig(bool tied = false, bool bias = false) {
  ModelConfig c;
  c.architecture = bias ? "Qwen2ForCausalLM" : "LlamaForCausalLM";
  c.hidden_size = 16;
  c.intermediate_size = 32;
  c.num_hidden_layers = 2;
  c.num_attention_heads = 4;
  c.num_key_value_heads = 2;
  c.head_dim = 4;
  c.vocab_size = 40;
  c.max_position_embeddings = 256;
  c.rms_norm_eps = 1e-5;
  c.rope_theta = 10000.0;
  c.tie_word_embeddings = tied;
  c.attention_bias = bias;
  c.bos_token_id = 1;
  c.eos_token_ids = {2};
  return c;
}

using WeightMap = std::map<std::string, std::vector<double>>;

// Norm weights 1 + 0.1·N(0,1); everything else std·N(0,1).
inline WeightMap RandomWeights(const ModelConfig& c, uint64_t seed, double std = 0.35) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> nd(0, 1);
  WeightMap w;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    size_t n = 1;
    for (int64_t d : e.shape) n *= size_t(d);
    std::vector<double> v(n);
    const bool norm = e.name.find("norm") != std::string::npos;
    for (double& x : v) x = norm ? 1 + 0.1 * nd(rng) : std * nd(rng);
    w[e.name] = v;
  }
  return w;
}

inline ModelWeights ToModelWeights(const WeightMap& w, const ModelConfig& c) {
  std::map<std::string, HostTensor> t;
  for (const ExpectedTensor& e : ExpectedTensors(c)) {
    const std::vector<double>& v = w.at(e.name);
    t[e.name] = HostTensor::FromF32(e.shape, std::vector<float>(v.begin(), v.end()));
  }
  auto r = ModelWeights::FromTensors(std::move(t), c, "test");
  assert(r.ok());
  return std::move(r).value();
}

// Rounds every weight to f32 (what the engine holds), so the reference and
// the engine start from the same numbers.
inline WeightMap RoundToF32(WeightMap w) {
  for (auto& [name, v] : w)
    for (double& x : v) x = double(float(x));
  return w;
}

// ---- the double reference ----------------------------------------------------

struct RefModel {
  ModelConfig c;
  WeightMap w;
};

// y[n][out] = x[n][in] · W[out][in]ᵀ (+ b).
inline std::vector<double> RefLinear(const std::vector<double>& x, int64_t n, int64_t in,
                                     const std::vector<double>& W, int64_t out,
                                     const std::vector<double>* b) {
  std::vector<double> y(size_t(n * out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      double s = b ? (*b)[o] : 0;
      for (int64_t k = 0; k < in; ++k) s += x[i * in + k] * W[o * in + k];
      y[i * out + o] = s;
    }
  return y;
}

inline std::vector<double> RefRmsNorm(const std::vector<double>& x, int64_t n, int64_t h,
                                      const std::vector<double>& w, double eps) {
  std::vector<double> y(x.size());
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t k = 0; k < h; ++k) ss += x[i * h + k] * x[i * h + k];
    const double r = 1 / std::sqrt(ss / double(h) + eps);
    for (int64_t k = 0; k < h; ++k) y[i * h + k] = x[i * h + k] * r * w[k];
  }
  return y;
}

// Logits of each sequence (rows = tokens), concatenated.
inline std::vector<double> RefLogits(const RefModel& m,
                                     const std::vector<std::vector<int32_t>>& seqs) {
  const ModelConfig& c = m.c;
  const int64_t h = c.hidden_size, d = c.head_dim, hq = c.num_attention_heads,
                hkv = c.num_key_value_heads, ff = c.intermediate_size, V = c.vocab_size;
  std::vector<float> inv_f = RopeInverseFrequencies(c);
  std::vector<double> inv(inv_f.begin(), inv_f.end());
  std::vector<double> all;
  for (const auto& toks : seqs) {
    const int64_t n = int64_t(toks.size());
    std::vector<double> x(size_t(n * h));
    const auto& emb = m.w.at("model.embed_tokens.weight");
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < h; ++k) x[i * h + k] = emb[toks[i] * h + k];
    for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto W = [&](const std::string& s) -> const std::vector<double>& { return m.w.at(p + s); };
      auto B = [&](const std::string& s) -> const std::vector<double>* {
        return c.attention_bias ? &m.w.at(p + s) : nullptr;
      };
      auto n1 = RefRmsNorm(x, n, h, W("input_layernorm.weight"), c.rms_norm_eps);
      auto q = RefLinear(n1, n, h, W("self_attn.q_proj.weight"), hq * d, B("self_attn.q_proj.bias"));
      auto k = RefLinear(n1, n, h, W("self_attn.k_proj.weight"), hkv * d, B("self_attn.k_proj.bias"));
      auto v = RefLinear(n1, n, h, W("self_attn.v_proj.weight"), hkv * d, B("self_attn.v_proj.bias"));
      auto rope = [&](std::vector<double>& t, int64_t heads) {
        for (int64_t i = 0; i < n; ++i)
          for (int64_t hh = 0; hh < heads; ++hh) {
            double* r = &t[(i * heads + hh) * d];
            for (int64_t j = 0; j < d / 2; ++j) {
              const double a = double(i) * inv[j], x0 = r[j], x1 = r[j + d / 2];
              r[j] = x0 * std::cos(a) - x1 * std::sin(a);
              r[j + d / 2] = x1 * std::cos(a) + x0 * std::sin(a);
            }
          }
      };
      rope(q, hq);
      rope(k, hkv);
      std::vector<double> att(size_t(n * hq * d), 0.0);
      for (int64_t i = 0; i < n; ++i)
        for (int64_t hh = 0; hh < hq; ++hh) {
          const int64_t g = hh / (hq / hkv);
          std::vector<double> s(size_t(i + 1));
          double mx = -1e300;
          for (int64_t j = 0; j <= i; ++j) {
            double dot = 0;
            for (int64_t e = 0; e < d; ++e) dot += q[(i * hq + hh) * d + e] * k[(j * hkv + g) * d + e];
            s[j] = dot / std::sqrt(double(d));
            mx = std::max(mx, s[j]);
          }
          double sum = 0;
          for (double& e : s) sum += (e = std::exp(e - mx));
          for (int64_t j = 0; j <= i; ++j)
            for (int64_t e = 0; e < d; ++e)
              att[(i * hq + hh) * d + e] += s[j] / sum * v[(j * hkv + g) * d + e];
        }
      auto o = RefLinear(att, n, hq * d, W("self_attn.o_proj.weight"), h, nullptr);
      for (size_t e = 0; e < x.size(); ++e) x[e] += o[e];
      auto n2 = RefRmsNorm(x, n, h, W("post_attention_layernorm.weight"), c.rms_norm_eps);
      auto gt = RefLinear(n2, n, h, W("mlp.gate_proj.weight"), ff, nullptr);
      auto up = RefLinear(n2, n, h, W("mlp.up_proj.weight"), ff, nullptr);
      for (size_t e = 0; e < gt.size(); ++e) gt[e] = gt[e] / (1 + std::exp(-gt[e])) * up[e];
      auto dn = RefLinear(gt, n, ff, W("mlp.down_proj.weight"), h, nullptr);
      for (size_t e = 0; e < x.size(); ++e) x[e] += dn[e];
    }
    auto fin = RefRmsNorm(x, n, h, m.w.at("model.norm.weight"), c.rms_norm_eps);
    const auto& head =
        m.w.at(c.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
    auto logits = RefLinear(fin, n, h, head, V, nullptr);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

// Σ w·(−log p(target)) / Σ w, with the TokenSequence weight convention.
inline double RefLoss(const RefModel& m, const std::vector<TokenSequence>& batch) {
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& s : batch) seqs.push_back(s.tokens);
  std::vector<double> logits = RefLogits(m, seqs);
  const int64_t V = m.c.vocab_size;
  double num = 0, den = 0;
  size_t row = 0;
  for (const auto& s : batch) {
    for (size_t j = 0; j < s.tokens.size(); ++j, ++row) {
      if (j + 1 == s.tokens.size()) continue;
      const double w = s.weights.empty() ? 1.0 : s.weights[j + 1];
      if (w == 0) continue;
      const double* r = &logits[row * V];
      double mx = *std::max_element(r, r + V), sum = 0;
      for (int64_t e = 0; e < V; ++e) sum += std::exp(r[e] - mx);
      num += w * (mx + std::log(sum) - r[s.tokens[j + 1]]);
      den += w;
    }
  }
  return num / den;
}

// The effective weights W + (alpha/r)·B·A of a LoRA flat parameter buffer laid
// out as LlamaModel::TrainableParameters() says.
inline WeightMap MergeLora(const WeightMap& base, const std::vector<ParameterInfo>& layout,
                           const std::vector<double>& flat, double scale) {
  WeightMap w = base;
  for (size_t i = 0; i + 1 < layout.size(); i += 2) {
    const ParameterInfo& a = layout[i];
    const ParameterInfo& b = layout[i + 1];
    // "base_model.model.<module>.lora_A.weight" -> "<module>.weight"
    std::string module = a.name.substr(std::string("base_model.model.").size());
    module = module.substr(0, module.size() - std::string(".lora_A.weight").size());
    std::vector<double>& W = w.at(module + ".weight");
    const int64_t r = a.shape[0], in = a.shape[1], out = b.shape[0];
    for (int64_t o = 0; o < out; ++o)
      for (int64_t k = 0; k < in; ++k) {
        double s = 0;
        for (int64_t j = 0; j < r; ++j) s += flat[b.offset + o * r + j] * flat[a.offset + j * in + k];
        W[o * in + k] += scale * s;
      }
  }
  return w;
}

}  // namespace pcfarm::testing
