// LlamaModel's private parts shared by llama.cc and adapter.cc.
#pragma once

#include <cassert>
#include <string>

#include "tasks/engine/llama.h"

namespace pcfarm {

struct LlamaModel::Linear {
  Tensor w, b;        // w [out, in]; b [out] or empty
  Tensor dw, db;      // full training only
  Tensor lora_a, lora_b, dlora_a, dlora_b;  // LoRA only: A [r, in], B [out, r]
  float lora_scale = 0;
  int64_t in = 0, out = 0;
};

struct LlamaModel::Layer {
  Tensor ln1, ln2, dln1, dln2;
  Linear q, k, v, o, gate, up, down;
  Linear& ByTarget(const std::string& t) {
    if (t == "q_proj") return q;
    if (t == "k_proj") return k;
    if (t == "v_proj") return v;
    if (t == "o_proj") return o;
    if (t == "gate_proj") return gate;
    if (t == "up_proj") return up;
    assert(t == "down_proj");
    return down;
  }
};

struct LlamaModel::Param {
  Tensor value, grad, m, v;
};

}  // namespace pcfarm
