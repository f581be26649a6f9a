// The Vulkan backend's ops: each packs its push constants and host index
// arrays and records dispatches of the shaders in shaders/ (the "kernels"
// live there; this file is the launchers).
#include <algorithm>
#include <cmath>
#include <map>
#include <vector>

#include "tasks/backend/vulkan/vulkan_internal.h"

namespace pcfarm::vk {

namespace {

constexpr uint32_t kMaxGroups = 65535;  // the minimum maxComputeWorkGroupCount
// Products with at most this many rows of c and a weight-shaped b ([N, K],
// trans_b) use the gemv shader (decode); shaders/gemv.comp's MAX_M.
constexpr int64_t kGemvMaxRows = 8;

// Workgroups for `items` items at `per_group` each (shaders loop over the rest).
uint32_t Groups(int64_t items, int64_t per_group = 256) {
  const int64_t g = (items + per_group - 1) / per_group;
  return static_cast<uint32_t>(std::clamp<int64_t>(g, 1, kMaxGroups));
}

uint32_t U(int64_t x) { return static_cast<uint32_t>(x); }
uint32_t TypeCode(StorageType t) { return static_cast<uint32_t>(t); }

struct ElementwisePush {
  uint32_t n, mode;
  float alpha;
};
enum ElementwiseMode : uint32_t { kFill = 0, kAdd = 1, kAxpy = 2, kScale = 3, kSwiGlu = 4 };

}  // namespace

// ---- elementwise ----------------------------------------------------------------

Status VulkanBackend::FillImpl(const Tensor& t, float value) {
  return Dispatch("elementwise", {Bind(t), Bind(t), Bind(t)},
                  ElementwisePush{U(t.numel()), kFill, value}, Groups(t.numel()));
}

Status VulkanBackend::AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) {
  return Dispatch("elementwise", {Bind(out), Bind(a), Bind(b)},
                  ElementwisePush{U(out.numel()), kAdd, 0}, Groups(out.numel()));
}

Status VulkanBackend::AxpyImpl(const Tensor& y, float alpha, const Tensor& x) {
  return Dispatch("elementwise", {Bind(y), Bind(x), Bind(x)},
                  ElementwisePush{U(y.numel()), kAxpy, alpha}, Groups(y.numel()));
}

Status VulkanBackend::ScaleImpl(const Tensor& t, float s) {
  return Dispatch("elementwise", {Bind(t), Bind(t), Bind(t)},
                  ElementwisePush{U(t.numel()), kScale, s}, Groups(t.numel()));
}

Status VulkanBackend::SwiGluForwardImpl(const Tensor& out, const Tensor& gate,
                                        const Tensor& up) {
  return Dispatch("elementwise", {Bind(out), Bind(gate), Bind(up)},
                  ElementwisePush{U(out.numel()), kSwiGlu, 0}, Groups(out.numel()));
}

Status VulkanBackend::SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                                         const Tensor& dout, const Tensor& gate,
                                         const Tensor& up) {
  struct {
    uint32_t n;
  } push{U(dout.numel())};
  return Dispatch("swiglu_bwd", {Bind(dgate), Bind(dup), Bind(dout), Bind(gate), Bind(up)},
                  push, Groups(dout.numel()));
}

Status VulkanBackend::CopyImpl(const Tensor& dst, const Tensor& src) {
  if (dst.type() == src.type()) {
    if (dst.buffer() == src.buffer()) return Status::Ok();
    PCFARM_RETURN_IF_ERROR(Usable());
    return RecordCopy(Bind(src).buffer, Bind(dst).buffer, dst.bytes());
  }
  struct {
    uint32_t n, dst_type, src_type;
  } push{U(dst.numel()), TypeCode(dst.type()), TypeCode(src.type())};
  return Dispatch("copy", {Bind(dst), Bind(src)}, push, Groups(dst.numel()));
}

// ---- matrix multiply ------------------------------------------------------------------

Status VulkanBackend::GemmImpl(const Tensor& c, const Tensor& a, bool trans_a,
                               const Tensor& b, bool trans_b, float alpha, float beta) {
  const int64_t m = c.shape()[0], n = c.shape()[1];
  const int64_t k = trans_a ? a.shape()[0] : a.shape()[1];
  if (m <= kGemvMaxRows && !trans_a && trans_b) {
    struct {
      uint32_t m, n, k, a_type, b_type;
      float alpha, beta;
    } push{U(m), U(n), U(k), TypeCode(a.type()), TypeCode(b.type()), alpha, beta};
    return Dispatch(Reduction("gemv"), {Bind(c), Bind(a), Bind(b)}, push, Groups(n, 1));
  }
  struct {
    uint32_t m, n, k, ta, tb, a_type, b_type;
    float alpha, beta;
  } push{U(m), U(n), U(k), trans_a, trans_b, TypeCode(a.type()), TypeCode(b.type()),
         alpha, beta};
  return Dispatch("gemm", {Bind(c), Bind(a), Bind(b)}, push,
                  static_cast<uint32_t>((n + 63) / 64), static_cast<uint32_t>((m + 63) / 64));
}

// ---- embedding ------------------------------------------------------------------------

Status VulkanBackend::EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                                           std::span<const int32_t> ids) {
  const int64_t n = static_cast<int64_t>(ids.size()), c = table.shape()[1];
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{ids.data(), ids.size_bytes()}}));
  struct {
    uint32_t n, c, type;
  } push{U(n), U(c), TypeCode(table.type())};
  return Dispatch("gather", {Bind(out), Bind(table), args[0]}, push, Groups(n * c));
}

Status VulkanBackend::EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                                            std::span<const int32_t> ids) {
  if (ids.empty()) return Status::Ok();
  // Group token indices by id on the host: rows[U], offsets[U + 1], order[N],
  // each row's tokens in token order (the CPU backend's order of additions).
  std::map<int32_t, std::vector<int32_t>> by_id;
  for (size_t i = 0; i < ids.size(); ++i) by_id[ids[i]].push_back(static_cast<int32_t>(i));
  std::vector<int32_t> packed;
  packed.reserve(2 * by_id.size() + 1 + ids.size());
  for (const auto& [id, tokens] : by_id) packed.push_back(id);
  int32_t offset = 0;
  for (const auto& [id, tokens] : by_id) {
    packed.push_back(offset);
    offset += static_cast<int32_t>(tokens.size());
  }
  packed.push_back(offset);
  for (const auto& [id, tokens] : by_id) packed.insert(packed.end(), tokens.begin(), tokens.end());
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{packed.data(), packed.size() * 4}}));
  const int64_t c = dtable.shape()[1], unique = static_cast<int64_t>(by_id.size());
  struct {
    uint32_t unique, c;
  } push{U(unique), U(c)};
  return Dispatch("embedding_bwd", {Bind(dtable), Bind(dout), args[0]}, push, Groups(unique * c));
}

// ---- RMSNorm ---------------------------------------------------------------------------

namespace {
struct RmsPush {
  uint32_t rows, c, w_type;
  float eps;
};
}  // namespace

Status VulkanBackend::RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                                         const Tensor& weight, float eps) {
  const int64_t c = weight.numel(), rows = inp.numel() / c;
  return Dispatch(Reduction("rmsnorm_fwd"), {Bind(out), Bind(inp), Bind(weight)},
                  RmsPush{U(rows), U(c), TypeCode(weight.type()), eps}, Groups(rows, 1));
}

Status VulkanBackend::RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                                          const Tensor& dout, const Tensor& inp,
                                          const Tensor& weight, float eps) {
  const int64_t c = weight.numel(), rows = inp.numel() / c;
  PCFARM_ASSIGN_OR_RETURN(Tensor rstd, Scratch(rows));
  PCFARM_RETURN_IF_ERROR(Dispatch(Reduction("rmsnorm_bwd"),
                                  {Bind(dinp), Bind(dout), Bind(inp), Bind(weight), Bind(rstd)},
                                  RmsPush{U(rows), U(c), TypeCode(weight.type()), eps},
                                  Groups(rows, 1)));
  if (dweight == nullptr) return Status::Ok();
  struct {
    uint32_t rows, c;
  } push{U(rows), U(c)};
  return Dispatch("rmsnorm_dw", {Bind(*dweight), Bind(dout), Bind(inp), Bind(rstd)}, push,
                  Groups(c));
}

// ---- RoPE ------------------------------------------------------------------------------

Status VulkanBackend::RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                               std::span<const int32_t> positions, bool backward) {
  const int64_t n = inp.shape()[0], h = inp.shape()[1], d = inp.shape()[2];
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{positions.data(), positions.size_bytes()}}));
  struct {
    uint32_t n, h, d, backward;
  } push{U(n), U(h), U(d), backward};
  return Dispatch("rope", {Bind(out), Bind(inp), Bind(inv_freq), args[0]}, push,
                  Groups(n * h * (d / 2)));
}

// ---- attention ----------------------------------------------------------------------------

namespace {

// (first key row, key count) per query row of packed causal sequences.
std::vector<int32_t> CausalKeyRanges(std::span<const int32_t> seq_starts) {
  std::vector<int32_t> r;
  for (size_t s = 0; s + 1 < seq_starts.size(); ++s)
    for (int32_t i = seq_starts[s]; i < seq_starts[s + 1]; ++i) {
      r.push_back(seq_starts[s]);
      r.push_back(i - seq_starts[s] + 1);
    }
  return r;
}

// (first query row, query count) per key row: row j is seen by rows j..end−1.
std::vector<int32_t> CausalQueryRanges(std::span<const int32_t> seq_starts) {
  std::vector<int32_t> r;
  for (size_t s = 0; s + 1 < seq_starts.size(); ++s)
    for (int32_t j = seq_starts[s]; j < seq_starts[s + 1]; ++j) {
      r.push_back(j);
      r.push_back(seq_starts[s + 1] - j);
    }
  return r;
}

}  // namespace

Status VulkanBackend::Attention(const Tensor& out, const Tensor* lse, const Tensor& q,
                                const Tensor& k, const Tensor& v,
                                const std::vector<int32_t>& ranges) {
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const int64_t hkv = k.shape()[k.shape().rank() - 2];
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{ranges.data(), ranges.size() * 4}}));
  struct {
    uint32_t n, hq, hkv, d, has_lse;
    float scale;
  } push{U(n), U(hq), U(hkv), U(d), lse != nullptr,
         static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)))};
  return Dispatch(Reduction("attention_fwd"),
                  {Bind(out), Bind(lse != nullptr ? *lse : out), Bind(q), Bind(k), Bind(v), args[0]},
                  push, Groups(n * hq, 1));
}

Status VulkanBackend::AttentionForwardImpl(const Tensor& out, const Tensor* lse, const Tensor& q,
                                           const Tensor& k, const Tensor& v,
                                           std::span<const int32_t> seq_starts) {
  return Attention(out, lse, q, k, v, CausalKeyRanges(seq_starts));
}

Status VulkanBackend::AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                                          const Tensor& k_cache, const Tensor& v_cache,
                                          std::span<const int32_t> slots,
                                          std::span<const int32_t> positions) {
  const int64_t t = k_cache.shape()[1];
  std::vector<int32_t> ranges;
  ranges.reserve(2 * slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    ranges.push_back(static_cast<int32_t>(slots[i] * t));
    ranges.push_back(positions[i] + 1);
  }
  return Attention(out, nullptr, q, k_cache, v_cache, ranges);
}

Status VulkanBackend::AttentionBackwardImpl(const Tensor& dq, const Tensor& dk,
                                            const Tensor& dv, const Tensor& dout,
                                            const Tensor& q, const Tensor& k, const Tensor& v,
                                            const Tensor& out, const Tensor& lse,
                                            std::span<const int32_t> seq_starts) {
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2], hkv = k.shape()[1];
  PCFARM_ASSIGN_OR_RETURN(Tensor delta, Scratch(n * hq));
  const std::vector<int32_t> key_ranges = CausalKeyRanges(seq_starts);
  const std::vector<int32_t> query_ranges = CausalQueryRanges(seq_starts);
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{key_ranges.data(), key_ranges.size() * 4},
                                               {query_ranges.data(), query_ranges.size() * 4}},
                                              /*dispatches=*/2));
  struct {
    uint32_t n, hq, hkv, d;
    float scale;
  } push{U(n), U(hq), U(hkv), U(d), static_cast<float>(1.0 / std::sqrt(static_cast<double>(d)))};
  PCFARM_RETURN_IF_ERROR(Dispatch(Reduction("attention_bwd_dq"),
                                  {Bind(dq), Bind(delta), Bind(dout), Bind(q), Bind(k), Bind(v),
                                   Bind(out), Bind(lse), args[0]},
                                  push, Groups(n * hq, 1)));
  return Dispatch("attention_bwd_dkdv",
                  {Bind(dk), Bind(dv), Bind(delta), Bind(dout), Bind(q), Bind(k), Bind(v),
                   Bind(lse), args[1]},
                  push, Groups(n * hkv, 1));
}

Status VulkanBackend::KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                                       std::span<const int32_t> slots,
                                       std::span<const int32_t> positions) {
  const int64_t n = src.shape()[0], row = src.numel() / n, t = cache.shape()[1];
  std::vector<int32_t> pairs;
  pairs.reserve(2 * slots.size());
  for (size_t i = 0; i < slots.size(); ++i) {
    pairs.push_back(slots[i]);
    pairs.push_back(positions[i]);
  }
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{pairs.data(), pairs.size() * 4}}));
  struct {
    uint32_t n, row, t;
  } push{U(n), U(row), U(t)};
  return Dispatch("kv_write", {Bind(cache), Bind(src), args[0]}, push, Groups(n * row));
}

// ---- loss -------------------------------------------------------------------------------

Status VulkanBackend::CrossEntropy(int mode, const Tensor* out, const Tensor* dlogits,
                                   const Tensor& logits, std::span<const int32_t> targets,
                                   std::span<const float> weights, float grad_scale) {
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  // Logprobs reads no weights (the binding is the targets again).
  PCFARM_ASSIGN_OR_RETURN(auto args, PushArgs({{targets.data(), targets.size_bytes()},
                                               {weights.data(), weights.size_bytes()}}));
  const Binding t = args[0], w = mode == 2 ? args[0] : args[1];
  struct {
    uint32_t n, v, mode;
    float grad_scale;
  } push{U(n), U(v), static_cast<uint32_t>(mode), grad_scale};
  const Tensor& o = out != nullptr ? *out : logits;
  const Tensor& dl = dlogits != nullptr ? *dlogits : o;
  return Dispatch(Reduction("cross_entropy"), {Bind(o), Bind(dl), Bind(logits), t, w}, push,
                  Groups(n, 1));
}

Result<CrossEntropySums> VulkanBackend::CrossEntropyForwardImpl(
    const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
    std::span<const float> weights) {
  const int64_t n = logits.shape()[0];
  Tensor scratch;
  if (losses == nullptr) {
    PCFARM_ASSIGN_OR_RETURN(scratch, Scratch(n));
    losses = &scratch;
  }
  PCFARM_RETURN_IF_ERROR(CrossEntropy(0, losses, nullptr, logits, targets, weights, 0));
  std::vector<float> row_loss(static_cast<size_t>(n));
  PCFARM_RETURN_IF_ERROR(DownloadImpl(*losses, row_loss));
  CrossEntropySums sums;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] == 0) continue;
    sums.weighted_loss += double{weights[i]} * row_loss[static_cast<size_t>(i)];
    sums.weight += weights[i];
    ++sums.counted;
  }
  return sums;
}

Status VulkanBackend::CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                               std::span<const int32_t> targets,
                                               std::span<const float> weights,
                                               float grad_scale) {
  return CrossEntropy(1, nullptr, &dlogits, logits, targets, weights, grad_scale);
}

Status VulkanBackend::LogProbsImpl(const Tensor& out, const Tensor& logits,
                                   std::span<const int32_t> targets) {
  return CrossEntropy(2, &out, nullptr, logits, targets, {}, 0);
}

// ---- optimizer ------------------------------------------------------------------------------

Status VulkanBackend::AdamWStepImpl(const Tensor& param, const Tensor& grad, const Tensor& m,
                                    const Tensor& v, const AdamWConfig& cfg) {
  const double t = static_cast<double>(cfg.step);
  struct {
    uint32_t n;
    float lr, b1, b2, eps, wd, gs, bc1, bc2;
  } push{U(param.numel()), cfg.lr, cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay,
         cfg.grad_scale,
         static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta1}, t))),
         static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta2}, t)))};
  return Dispatch("adamw", {Bind(param), Bind(grad), Bind(m), Bind(v)}, push,
                  Groups(param.numel()));
}

Result<double> VulkanBackend::SumSquaresImpl(const Tensor& t) {
  constexpr int64_t kBlock = 1 << 14;  // as the CPU backend's blocks
  const int64_t n = t.numel(), blocks = (n + kBlock - 1) / kBlock;
  PCFARM_ASSIGN_OR_RETURN(Tensor partial, Scratch(blocks));
  struct {
    uint32_t n, block, blocks;
  } push{U(n), U(kBlock), U(blocks)};
  PCFARM_RETURN_IF_ERROR(
      Dispatch(Reduction("sum_squares"), {Bind(partial), Bind(t)}, push, Groups(blocks, 1)));
  std::vector<float> host(static_cast<size_t>(blocks));
  PCFARM_RETURN_IF_ERROR(DownloadImpl(partial, host));
  double sum = 0;
  for (float x : host) sum += x;
  return sum;
}

}  // namespace pcfarm::vk
