// DiLoCo's outer optimizer (Douillard et al. 2023, "DiLoCo: Distributed
// Low-Communication Training of Language Models", Algorithm 1): SGD with
// Nesterov momentum applied to the outer gradient of a round,
//   g = θ − θ̄   (the round's start minus the replicas' average end,
//                i.e. minus the aggregated pseudo-gradient the shards send).
//
// The step, per coordinate, in f32 (what torch.optim.SGD(params, lr=η,
// momentum=μ, dampening=0, weight_decay=0, nesterov=True) does to an f32
// tensor, _single_tensor_sgd in torch/optim/sgd.py):
//   b ← μ·b + g        (torch: buf = clone(g) on the first step, which is
//                       this rule from b = 0, since dampening is 0)
//   d ← g + μ·b        (nesterov)
//   θ ← θ − η·d
// With μ = 0 it is plain SGD (torch refuses nesterov without momentum; the
// rule still holds). With η = 1 and μ = 0, θ becomes θ̄: federated averaging.
//
// The state (momentum buffer and the steps taken) travels between
// coordinator restarts as a blob, little-endian:
//   offset 0   4 bytes   magic "POM1"
//   offset 4   u32       version, 1
//   offset 8   i64       step: outer steps taken, >= 0
//   offset 16  i64       count: floats in the buffer
//   offset 24  count f32 the momentum buffer b, in the flat layout of the
//                        parameters (every value finite)
// 24 + 4·count bytes in all.
//
// Thread-safety: pure functions.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"

namespace pcfarm {

struct OuterOptimizerConfig {
  float lr = 0.7f;        // η, in (0, 10]; the DiLoCo paper's 0.7
  float momentum = 0.9f;  // μ, in [0, 1); the DiLoCo paper's 0.9
};

struct OuterOptimizerState {
  int64_t step = 0;              // outer steps taken
  std::vector<float> momentum;   // b; empty before the first step
};

// InvalidArgument naming the field when `config` is out of range.
Status CheckOuterOptimizerConfig(const OuterOptimizerConfig& config);

// One outer Nesterov step (the rule above): updates `params` and `state` in
// place. An empty state.momentum is taken as zeros of params.size().
// InvalidArgument, changing nothing, when the config is out of range, the
// sizes differ (outer_gradient, or a non-empty momentum, vs params), or a
// value of outer_gradient is not finite.
Status OuterNesterovStep(std::span<float> params, std::span<const float> outer_gradient,
                         const OuterOptimizerConfig& config, OuterOptimizerState* state);

// The state blob (see the top of this file).
std::string EncodeOuterOptimizerState(const OuterOptimizerState& state);
// The state in `bytes`, whose buffer must hold `expected_count` floats.
// InvalidArgument naming what is wrong: size, magic, version, step, count,
// or a value that is not finite.
Result<OuterOptimizerState> DecodeOuterOptimizerState(std::string_view bytes,
                                                      int64_t expected_count);

}  // namespace pcfarm
