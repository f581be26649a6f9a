// The compute backend: tensors on a device, and the ops a llama-family
// forward pass, backward pass and AdamW need.
//
// A Backend owns one device (the CPU, a GPU). A Tensor is an opaque,
// ref-counted handle to storage on that device: the host reads and writes it
// only through Upload/Download (f32 on the host, converted to and from the
// tensor's storage type) or UploadBytes/DownloadBytes (the raw storage). Ops
// are methods on the backend that take tensor handles, like ggml's backend
// interface over an opaque context. The CPU backend (tasks/backend/cpu/) is
// the reference; every other backend is tested op by op against it in
// tasks/backend/backend_ops_test.cc.
//
// Conventions shared by every op (checked by the public methods below before
// any backend code runs, so all backends reject the same bad calls):
//   * Tensors are contiguous, row-major (last dimension fastest), at most 4
//     dimensions. "[N, C]" below names the dimensions in order.
//   * Activations, gradients, optimizer state and every output are kF32.
//     Read-only parameters may be stored kF16 or kBF16 where an op says so
//     ("any storage"); they are converted to f32 for compute. Weights may
//     also be block-quantized (kQ8_0, kQ4_0, kQ4_K, kQ6_K: GGUF's blocks
//     byte for byte, tasks/backend/ggml_quants.h) where an op says "any
//     storage, quantized too", on backends whose SupportsStorage says so; a
//     quantized tensor's last dimension is a whole number of blocks, and its
//     host transfers are UploadBytes/DownloadBytes and Download (which
//     dequantizes), not Upload.
//   * A read-only tensor (WrapHostBytes) is never an op's output.
//   * Forward ops overwrite their outputs. Backward ops ADD into their
//     gradient outputs (dx += ...), like llm.c: the caller zeroes gradients
//     (Fill(t, 0)) before the first contribution. This makes residual
//     branches, tied embeddings and gradient accumulation plain calls.
//     A null gradient pointer means "not needed" (frozen weights under LoRA).
//   * Host index arrays (token ids, positions, sequence starts, targets) are
//     std::spans the backend reads during the call; the caller may reuse
//     them once the call returns.
//   * Outputs must not alias inputs unless an op says so.
//   * A wrong shape, storage type, index or a tensor of another backend is
//     kInvalidArgument naming the op and the argument. Out of device memory is
//     kResourceExhausted. A device failure is kInternal.
//   * Ops may run asynchronously on devices that can; Download, DownloadBytes,
//     the ops that return a value, and Synchronize() wait for all earlier
//     work. On the CPU every op is synchronous.
//
// LoRA needs no op of its own: y += (alpha/r)·(x·Aᵀ)·Bᵀ is
//   Gemm(t, x, false, A, true, 1, 0);  Gemm(y, t, false, B, true, alpha/r, 1);
// and its backward is four more Gemm calls with alpha = alpha/r, beta = 1.
//
// Thread-safety: a Backend and its tensors are used from one thread at a
// time (the backend may use its own threads inside a call). Tensor handles
// may be copied freely; the storage is freed when the last handle goes.
// REQUIRES: every Tensor handle is destroyed before the Backend that made it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>

#include "base/status.h"

namespace pcfarm {

// How a tensor's elements are stored on the device. (Named StorageType, not
// DType, so that it does not collide with tasks/model's host-side DType; the
// enumerators are in the same order, so static_cast converts between them.)
// The last four are GGML's block formats (ggml_quants.h).
enum class StorageType { kF32, kF16, kBF16, kQ8_0, kQ4_0, kQ4_K, kQ6_K };

// True for the block-quantized types.
bool IsQuantized(StorageType t);
// Values per block: 1 for F32/F16/BF16, 32 (Q8_0, Q4_0) or 256 (Q4_K, Q6_K).
int64_t StorageBlockValues(StorageType t);
// Bytes of `numel` values. REQUIRES: numel % StorageBlockValues(t) == 0.
uint64_t StorageBytes(StorageType t, int64_t numel);
// Bytes per element: 4 or 2. REQUIRES: !IsQuantized(t).
size_t StorageTypeSize(StorageType t);
// The ggml type number (F32 0, F16 1, BF16 30, Q8_0 8, ...).
uint32_t StorageGgmlType(StorageType t);
// "F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_K" or "Q6_K".
const char* StorageTypeName(StorageType t);

// A tensor shape: 1 to 4 dimensions (0 for a default-constructed, empty shape).
class Shape {
 public:
  static constexpr int kMaxRank = 4;
  Shape() = default;
  // REQUIRES: 1 <= dims.size() <= kMaxRank. Dimensions are checked by
  // Backend::Alloc, not here.
  Shape(std::initializer_list<int64_t> dims);

  int rank() const { return rank_; }
  // REQUIRES: 0 <= i < rank().
  int64_t operator[](int i) const;
  // Product of the dimensions (1 for rank 0).
  int64_t numel() const;
  // "[2, 3, 4]".
  std::string ToString() const;
  bool operator==(const Shape& o) const;

 private:
  int rank_ = 0;
  std::array<int64_t, kMaxRank> dims_{};
};

// Device storage behind a tensor; each backend derives its own.
class TensorBuffer {
 public:
  virtual ~TensorBuffer() = default;
};

class Backend;

// An opaque handle to a tensor on one backend's device. Copying the handle
// shares the storage. A default-constructed Tensor is empty (!valid()).
class Tensor {
 public:
  Tensor() = default;
  // For Backend implementations only (inside AllocImpl).
  Tensor(const Backend* owner, std::shared_ptr<TensorBuffer> buffer,
         Shape shape, StorageType type, bool read_only = false);

  bool valid() const { return buffer_ != nullptr; }
  const Shape& shape() const { return shape_; }
  StorageType type() const { return type_; }
  int64_t numel() const { return shape_.numel(); }
  size_t bytes() const { return static_cast<size_t>(StorageBytes(type_, numel())); }
  const Backend* backend() const { return owner_; }
  // True for a view of host memory made by WrapHostBytes: ops refuse it as
  // an output.
  bool read_only() const { return read_only_; }

  // A handle to the same storage viewed with another shape (a reshape, not a
  // copy). REQUIRES: valid() and shape.numel() == numel().
  Tensor Reshaped(Shape shape) const;

  // For Backend implementations only: the device storage.
  TensorBuffer* buffer() const { return buffer_.get(); }

 private:
  const Backend* owner_ = nullptr;
  std::shared_ptr<TensorBuffer> buffer_;
  Shape shape_;
  StorageType type_ = StorageType::kF32;
  bool read_only_ = false;
};

struct DeviceInfo {
  std::string description;      // e.g. "CPU, 16 threads, OpenBLAS"
  uint64_t memory_bytes = 0;    // usable device memory (the limit when set); 0 = unknown
  int threads = 0;              // host threads the backend uses
};

// Options every backend understands; a backend ignores what does not apply.
struct BackendOptions {
  // Host threads for the CPU backend's kernels and its BLAS; 0 = all cores.
  int cpu_threads = 0;
  // Refuse allocations beyond this many bytes in total; 0 = no limit other
  // than the device's own.
  uint64_t memory_limit_bytes = 0;
  // Which device when there are several of a kind (GPU ordinal).
  int device_index = 0;
};

struct AdamWConfig {
  float lr = 1e-3f;
  float beta1 = 0.9f;
  float beta2 = 0.999f;
  float eps = 1e-8f;
  float weight_decay = 0.0f;  // decoupled: p -= lr·wd·p
  int64_t step = 1;           // 1-based, for bias correction
  float grad_scale = 1.0f;    // g is read as grad_scale·grad (clipping)
};

// Sums from CrossEntropyForward; the mean loss is weighted_loss / weight.
struct CrossEntropySums {
  double weighted_loss = 0;  // Σ w_i · (−log softmax(logits_i)[target_i])
  double weight = 0;         // Σ w_i
  int64_t counted = 0;       // tokens with w_i > 0
  double mean() const { return weight > 0 ? weighted_loss / weight : 0.0; }
};

class Backend {
 public:
  virtual ~Backend() = default;
  Backend() = default;
  Backend(const Backend&) = delete;
  Backend& operator=(const Backend&) = delete;

  // The registry name: "cpu", "cuda", "vulkan".
  virtual std::string name() const = 0;
  virtual DeviceInfo info() const = 0;

  // Generation's licence to round activations: while on, a product with a
  // Q8_0 or Q4_0 weight may take its activations rounded to about 15 bits
  // for integer dot products (the CPU on AVX2/AVX-512: each value within
  // 0.51·max|x|/32512 of its 32-block's largest |x|; cpu_internal.h
  // ActBlock). Off by default, so losses, gradients and scored logits are
  // the dequantized product up to f32 summation; LlamaModel::Generate turns
  // it on (ScopedRoundedActivations) for its steps. Backends without such
  // a kernel ignore it.
  void set_rounded_activations(bool on) { rounded_activations_ = on; }
  bool rounded_activations() const { return rounded_activations_; }

  // ---- memory -------------------------------------------------------------

  // Whether tensors of `type` can live on this backend (every backend holds
  // F32, F16 and BF16; the CPU, Vulkan and CUDA hold the quantized types
  // too).
  virtual bool SupportsStorage(StorageType type) const { return !IsQuantized(type); }
  // Whether WrapHostBytes works here (the CPU: host memory is its memory).
  virtual bool CanWrapHostBytes() const { return false; }

  // Allocates an uninitialised tensor. kInvalidArgument for a dimension < 1,
  // a size that overflows, a storage type the backend does not hold or a
  // quantized tensor whose last dimension is not a whole number of blocks;
  // kResourceExhausted when the memory is not there.
  Result<Tensor> Alloc(Shape shape, StorageType type);
  // A read-only tensor over t.bytes() bytes of host memory at `data` (e.g. a
  // weight in a memory-mapped model file), without a copy; `owner` keeps the
  // memory alive for as long as any handle to the tensor exists. The bytes
  // must not change while the tensor exists. Checks as Alloc, plus `data`
  // aligned to 4 bytes (F32) or 2 (the rest); kFailedPrecondition where
  // !CanWrapHostBytes() (allocate and UploadBytes instead).
  Result<Tensor> WrapHostBytes(Shape shape, StorageType type, const void* data,
                               std::shared_ptr<const void> owner);
  // Writes src (numel floats) into t, rounding to nearest even for kF16/kBF16.
  // Not for quantized tensors (they take UploadBytes).
  Status Upload(const Tensor& t, std::span<const float> src);
  // Reads t into dst (numel floats), dequantizing a quantized tensor.
  Status Download(const Tensor& t, std::span<float> dst);
  // Raw storage bytes (little-endian elements, t.bytes() of them), e.g. BF16
  // weights straight from a memory-mapped safetensors file.
  Status UploadBytes(const Tensor& t, std::span<const std::byte> src);
  Status DownloadBytes(const Tensor& t, std::span<std::byte> dst);
  // Waits until every op issued so far has finished.
  virtual Status Synchronize() = 0;

  // ---- elementwise (all kF32 unless said; any shapes with equal numel) ----

  // t[i] = value.
  Status Fill(const Tensor& t, float value);
  // dst[i] = src[i], converting between storage types (src any storage,
  // quantized too: dequantized; dst not quantized).
  Status Copy(const Tensor& dst, const Tensor& src);
  // out = a + b. out may alias a or b.
  Status Add(const Tensor& out, const Tensor& a, const Tensor& b);
  // y += alpha·x.
  Status Axpy(const Tensor& y, float alpha, const Tensor& x);
  // t *= s.
  Status Scale(const Tensor& t, float s);

  // ---- matrix multiply ----------------------------------------------------

  // c = alpha·op(a)·op(b) + beta·c, op(x) = xᵀ when trans_x.
  // c: [M, N] kF32; op(a): [M, K]; op(b): [K, N]; a any storage, b any
  // storage, quantized too (the fast case is a [N, K] weight with trans_b).
  // beta = 0 ignores c's old contents (even NaN).
  Status Gemm(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
              bool trans_b, float alpha, float beta);
  // A linear layer, weights [out, in] as in PyTorch / safetensors:
  // out[N, OC] = inp[N, C] · weight[OC, C]ᵀ. weight any storage, quantized too.
  Status MatMulForward(const Tensor& out, const Tensor& inp, const Tensor& weight);
  // Several linear layers over one input (q, k and v; gate and up):
  // outs[i] = inp · weights[i]ᵀ, each as MatMulForward checks and computes
  // it. A backend may run them as one product: the CPU's decode reads the
  // weights in one pass over its threads and rounds the activations once.
  // At most kMaxSharedWeights weights; the outs distinct.
  static constexpr size_t kMaxSharedWeights = 4;
  Status MatMulForwardShared(std::span<const Tensor> outs, const Tensor& inp,
                             std::span<const Tensor> weights);
  // dinp[N, C] += dout·weight;  dweight[OC, C] += doutᵀ·inp. Either may be null.
  Status MatMulBackward(const Tensor* dinp, const Tensor* dweight,
                        const Tensor& dout, const Tensor& inp, const Tensor& weight);

  // ---- embedding (also: gather rows of any [R, C] tensor) -----------------

  // out[i, :] = table[ids[i], :]. out [N, C]; table [V, C];
  // ids.size() == N, 0 <= ids[i] < V. table any storage, quantized too.
  Status EmbeddingForward(const Tensor& out, const Tensor& table,
                          std::span<const int32_t> ids);
  // dtable[ids[i], :] += dout[i, :]. dtable [V, C] kF32.
  Status EmbeddingBackward(const Tensor& dtable, const Tensor& dout,
                           std::span<const int32_t> ids);

  // ---- RMSNorm over the last dimension ------------------------------------

  // out = inp / sqrt(mean(inp²) + eps) · weight, f32 accumulation.
  // inp, out: [..., C]; weight [C] any storage. out may alias inp.
  Status RmsNormForward(const Tensor& out, const Tensor& inp,
                        const Tensor& weight, float eps);
  // dinp += ∂/∂inp, dweight += ∂/∂weight (dweight kF32, may be null).
  // Recomputes the row statistics from inp.
  Status RmsNormBackward(const Tensor& dinp, const Tensor* dweight,
                         const Tensor& dout, const Tensor& inp,
                         const Tensor& weight, float eps);

  // ---- rotary position embedding (Hugging Face rotate-half) ---------------

  // For token n with position p = positions[n], each head's vector x[0..D)
  // is rotated pairwise (x[j], x[j + D/2]) by angle p·inv_freq[j]:
  //   out[j]       = x[j]·cos − x[j+D/2]·sin
  //   out[j + D/2] = x[j+D/2]·cos + x[j]·sin
  // inp, out: [N, H, D], D even; inv_freq [D/2] kF32 (the caller applies
  // llama3 / other scaling when it fills it); positions.size() == N,
  // positions >= 0. out may alias inp.
  Status RopeForward(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                     std::span<const int32_t> positions);
  // dinp += rotation by −angle of dout. dinp may not alias dout.
  Status RopeBackward(const Tensor& dinp, const Tensor& dout, const Tensor& inv_freq,
                      std::span<const int32_t> positions);

  // ---- causal grouped-query attention -------------------------------------

  // Sequences are packed back to back (no padding), as FlashAttention's
  // varlen cu_seqlens: sequence s holds rows [seq_starts[s], seq_starts[s+1]),
  // seq_starts[0] = 0, non-decreasing, last = N. Row i of sequence s attends
  // to rows seq_starts[s]..i of the same sequence.
  // q, out: [N, Hq, D]; k, v: [N, Hkv, D]; Hq % Hkv == 0 (query head h uses
  // kv head h / (Hq / Hkv)); scores scaled by 1/sqrt(D), softmax in f32.
  // lse (may be null): [N, Hq], the log-sum-exp of each row's scaled scores,
  // saved for AttentionBackward.
  Status AttentionForward(const Tensor& out, const Tensor* lse, const Tensor& q,
                          const Tensor& k, const Tensor& v,
                          std::span<const int32_t> seq_starts);
  // dq += ∂/∂q, dk += ∂/∂k, dv += ∂/∂v, given the forward's out and lse.
  Status AttentionBackward(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                           const Tensor& dout, const Tensor& q, const Tensor& k,
                           const Tensor& v, const Tensor& out, const Tensor& lse,
                           std::span<const int32_t> seq_starts);

  // A KV cache is a kF32 tensor [S, T, Hkv, D]: S sequence slots of up to T
  // positions. Writes src[n] to cache[slots[n], positions[n]]. src [N, Hkv, D].
  Status KvCacheWrite(const Tensor& cache, const Tensor& src,
                      std::span<const int32_t> slots,
                      std::span<const int32_t> positions);
  // Query row n (slot s = slots[n], position p = positions[n]) attends to
  // k_cache[s, 0..p] and v_cache[s, 0..p] (inclusive: write the new token's
  // k and v first; every position 0..p of the slot must have been written,
  // Alloc does not zero). q, out: [N, Hq, D]. Used for decode (one row per
  // sequence) and for prefill / scoring against a cache (several rows per
  // sequence).
  Status AttentionDecode(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                         const Tensor& v_cache, std::span<const int32_t> slots,
                         std::span<const int32_t> positions);

  // ---- SwiGLU -------------------------------------------------------------

  // out = silu(gate) · up, silu(x) = x / (1 + e^−x). All the same shape.
  Status SwiGluForward(const Tensor& out, const Tensor& gate, const Tensor& up);
  Status SwiGluBackward(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                        const Tensor& gate, const Tensor& up);

  // ---- loss and log-probabilities ------------------------------------------

  // logits [N, V]; targets, weights: N entries. weights[i] >= 0; a token with
  // weight 0 is masked out and its target is not read (may be −1); otherwise
  // 0 <= targets[i] < V. losses (may be null) [N] gets each token's
  // unweighted −log p(target) (0 where masked). Returns the sums; waits.
  Result<CrossEntropySums> CrossEntropyForward(const Tensor* losses,
                                               const Tensor& logits,
                                               std::span<const int32_t> targets,
                                               std::span<const float> weights);
  // dlogits[i] += grad_scale · weights[i] · (softmax(logits[i]) − onehot).
  // For the mean loss pass grad_scale = 1 / sums.weight (or 1 / the weight
  // of the whole accumulated batch).
  Status CrossEntropyBackward(const Tensor& dlogits, const Tensor& logits,
                              std::span<const int32_t> targets,
                              std::span<const float> weights, float grad_scale);
  // out[i] = log softmax(logits[i])[targets[i]]. out [N]; every target in range.
  Status LogProbs(const Tensor& out, const Tensor& logits,
                  std::span<const int32_t> targets);

  // ---- optimizer ------------------------------------------------------------

  // One AdamW step on param with g = grad_scale·grad:
  //   m = β1·m + (1−β1)·g;  v = β2·v + (1−β2)·g²
  //   p -= lr·( (m/(1−β1^t)) / (sqrt(v/(1−β2^t)) + eps) + wd·p )
  // param, grad, m, v: kF32, equal shapes. config.step >= 1.
  Status AdamWStep(const Tensor& param, const Tensor& grad, const Tensor& m,
                   const Tensor& v, const AdamWConfig& config);
  // Σ t[i]² in double (the global gradient norm is sqrt of the sum over
  // tensors; clip with Scale or AdamWConfig::grad_scale). Waits.
  Result<double> SumSquares(const Tensor& t);

 protected:
  // Implementations. Called only after the public method has checked every
  // argument as its contract says, so these may assume valid input.
  virtual Result<Tensor> AllocImpl(Shape shape, StorageType type) = 0;
  // Only called where CanWrapHostBytes().
  virtual Result<Tensor> WrapHostBytesImpl(Shape shape, StorageType type, const void* data,
                                           std::shared_ptr<const void> owner);
  virtual Status UploadImpl(const Tensor& t, std::span<const float> src) = 0;
  virtual Status DownloadImpl(const Tensor& t, std::span<float> dst) = 0;
  virtual Status UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) = 0;
  virtual Status DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) = 0;
  virtual Status FillImpl(const Tensor& t, float value) = 0;
  virtual Status CopyImpl(const Tensor& dst, const Tensor& src) = 0;
  virtual Status AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) = 0;
  virtual Status AxpyImpl(const Tensor& y, float alpha, const Tensor& x) = 0;
  virtual Status ScaleImpl(const Tensor& t, float s) = 0;
  virtual Status GemmImpl(const Tensor& c, const Tensor& a, bool trans_a,
                          const Tensor& b, bool trans_b, float alpha, float beta) = 0;
  // Default: one GemmImpl per weight.
  virtual Status MatMulSharedImpl(std::span<const Tensor> outs, const Tensor& inp,
                                  std::span<const Tensor> weights);
  virtual Status EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                                      std::span<const int32_t> ids) = 0;
  virtual Status EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                                       std::span<const int32_t> ids) = 0;
  virtual Status RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                                    const Tensor& weight, float eps) = 0;
  virtual Status RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                                     const Tensor& dout, const Tensor& inp,
                                     const Tensor& weight, float eps) = 0;
  virtual Status RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                          std::span<const int32_t> positions, bool backward) = 0;
  virtual Status AttentionForwardImpl(const Tensor& out, const Tensor* lse,
                                      const Tensor& q, const Tensor& k,
                                      const Tensor& v,
                                      std::span<const int32_t> seq_starts) = 0;
  virtual Status AttentionBackwardImpl(const Tensor& dq, const Tensor& dk,
                                       const Tensor& dv, const Tensor& dout,
                                       const Tensor& q, const Tensor& k,
                                       const Tensor& v, const Tensor& out,
                                       const Tensor& lse,
                                       std::span<const int32_t> seq_starts) = 0;
  virtual Status KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                                  std::span<const int32_t> slots,
                                  std::span<const int32_t> positions) = 0;
  virtual Status AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                                     const Tensor& k_cache, const Tensor& v_cache,
                                     std::span<const int32_t> slots,
                                     std::span<const int32_t> positions) = 0;
  virtual Status SwiGluForwardImpl(const Tensor& out, const Tensor& gate,
                                   const Tensor& up) = 0;
  virtual Status SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                                    const Tensor& dout, const Tensor& gate,
                                    const Tensor& up) = 0;
  virtual Result<CrossEntropySums> CrossEntropyForwardImpl(
      const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
      std::span<const float> weights) = 0;
  virtual Status CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                          std::span<const int32_t> targets,
                                          std::span<const float> weights,
                                          float grad_scale) = 0;
  virtual Status LogProbsImpl(const Tensor& out, const Tensor& logits,
                              std::span<const int32_t> targets) = 0;
  virtual Status AdamWStepImpl(const Tensor& param, const Tensor& grad,
                               const Tensor& m, const Tensor& v,
                               const AdamWConfig& config) = 0;
  virtual Result<double> SumSquaresImpl(const Tensor& t) = 0;

 private:
  // Gemm's argument checks (shapes, types, aliasing).
  Status CheckGemm(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
                   bool trans_b);

  bool rounded_activations_ = false;
};

// Turns Backend::set_rounded_activations on for a scope, then restores it.
class ScopedRoundedActivations {
 public:
  explicit ScopedRoundedActivations(Backend& b) : b_(b), before_(b.rounded_activations()) {
    b_.set_rounded_activations(true);
  }
  ~ScopedRoundedActivations() { b_.set_rounded_activations(before_); }
  ScopedRoundedActivations(const ScopedRoundedActivations&) = delete;
  ScopedRoundedActivations& operator=(const ScopedRoundedActivations&) = delete;

 private:
  Backend& b_;
  const bool before_;
};

}  // namespace pcfarm
