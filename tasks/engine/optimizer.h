// The engine's optimizer step (global-norm clipping, then AdamW), shared by
// LlamaModel and by FlatAdamW, which runs it over a flat parameter buffer
// with no model loaded: the farm's coordinator applies the mean gradient its
// workers sent and takes the same step `pcfarm local finetune` takes.
//
// The step, for tensors t = 1..T of one trainable layout:
//   grad_norm  = sqrt(Σ_t Backend::SumSquares(grad_t))   (in order t = 1..T)
//   clip_scale = GradClipScale(grad_norm, max_grad_norm)
//   Backend::AdamWStep(value_t, grad_t, m_t, v_t, {..., step, clip_scale})
//                                                         (in order t = 1..T)
// so a FlatAdamW on the same backend kind computes bit for bit what a
// LlamaModel computes from the same mean gradient.
//
// FlatAdamW's state file (EncodeState / RestoreState), little-endian:
//   offset 0   4 bytes   magic "PAW1"
//   offset 4   u32       version, 1
//   offset 8   i64       step: AdamW steps taken, >= 0
//   offset 16  i64       count: floats in the flat buffer, = count()
//   offset 24  count f32 m, the first moments, in the flat layout
//   then       count f32 v, the second moments (each >= 0)
// 24 + 8·count bytes in all; every value finite.
//
// Thread-safety: one thread at a time (as the Backend).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/backend/backend.h"
#include "tasks/engine/llama.h"

namespace pcfarm {

// The factor a gradient of global L2 norm `grad_norm` is multiplied by:
// max_grad_norm / (grad_norm + 1e-6) when max_grad_norm > 0 and grad_norm >
// max_grad_norm (torch's clip_grad_norm_), 1 otherwise.
double GradClipScale(double grad_norm, float max_grad_norm);

// One trainable tensor's device state: its value, the gradient to apply,
// and the AdamW moments. All kF32 and of one shape.
struct AdamWSlot {
  Tensor value, grad, m, v;
};

// The step above over `slots` in order, taking AdamW step number `step`
// (1-based). Returns grad_norm, clip_scale and `step`. On an error the
// values and moments may be partly updated.
Result<StepStats> ClipAndStepAdamW(Backend* backend, std::span<const AdamWSlot> slots,
                                   const OptimizerConfig& opt, int64_t step);

class FlatAdamW {
 public:
  // An optimizer with zero moments at step 0 for parameters laid out as
  // `layout` (as LlamaModel::TrainableParameters(): tensors of 1 to 4
  // dimensions >= 1, numel their product, offsets from 0 with no gap or
  // overlap). InvalidArgument naming the tensor on a bad layout; the
  // backend's status when it cannot hold the tensors.
  // REQUIRES: `backend` outlives the optimizer.
  static Result<std::unique_ptr<FlatAdamW>> Create(std::vector<ParameterInfo> layout,
                                                   Backend* backend);

  const std::vector<ParameterInfo>& layout() const { return layout_; }
  // AdamW steps taken.
  int64_t step() const { return step_; }
  // Floats in the flat buffer.
  int64_t count() const { return count_; }

  // Clips `mean_gradient` and takes one AdamW step (ClipAndStepAdamW),
  // updating `params` in place. InvalidArgument when either does not hold
  // count() floats or the gradient holds a non-finite value. On any error,
  // `params` and the optimizer state are unchanged.
  Result<StepStats> Apply(std::vector<float>* params, std::span<const float> mean_gradient,
                          const OptimizerConfig& opt);

  // The state file (see the top of this file).
  std::string EncodeState() const;
  // Replaces the state with `bytes` of EncodeState. InvalidArgument naming
  // what is wrong (size, magic, version, count, a non-finite or negative
  // value), leaving the state unchanged.
  Status RestoreState(std::string_view bytes);

  FlatAdamW(const FlatAdamW&) = delete;
  FlatAdamW& operator=(const FlatAdamW&) = delete;

 private:
  FlatAdamW(std::vector<ParameterInfo> layout, Backend* backend);

  std::vector<ParameterInfo> layout_;
  Backend* backend_;
  int64_t count_ = 0;
  int64_t step_ = 0;
  // The moments live on the host between steps, so that a failed step
  // changes nothing and EncodeState needs no device; the device tensors are
  // scratch for one step.
  std::vector<float> m_, v_;
  std::vector<AdamWSlot> slots_;
};

}  // namespace pcfarm
