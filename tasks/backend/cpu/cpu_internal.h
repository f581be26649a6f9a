// Internals of the CPU backend shared by its .cc files (one per op family).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <thread>
#include <unordered_map>
#include <vector>

#include "tasks/backend/backend.h"

namespace pcfarm::cpu {

// A fixed set of threads that run one ParallelFor at a time; the calling
// thread takes part. Not reentrant: fn must not call ParallelFor.
//
// Between jobs the workers spin for a short while (kSpinIterations pauses,
// ~0.1 ms) before they sleep on a condition variable, and the caller spins
// the same way for the last chunks: a decode step is hundreds of small
// ParallelFors, and a futex wake-up per call cost more than the work. The
// pool is the process's only compute threads (OpenBLAS runs single-threaded
// inside its chunks, see Gemm), so the spinning takes no core from anyone.
class ThreadPool {
 public:
  // REQUIRES: threads >= 1 (the caller counts as one).
  explicit ThreadPool(int threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return static_cast<int>(workers_.size()) + 1; }
  // Calls fn(begin, end) on disjoint chunks covering [0, n), each at least
  // `grain` long (except when n < grain), and returns when all are done.
  void ParallelFor(int64_t n, int64_t grain,
                   const std::function<void(int64_t, int64_t)>& fn);

 private:
  static constexpr int kSpinIterations = 4000;

  void WorkerLoop();
  // Runs chunks of job `job` (its 32-bit number) until none is left.
  void RunChunks(uint32_t job);

  // The job, written by ParallelFor before it publishes the job in claim_,
  // and left alone until every chunk is done.
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  // job number << 32 | chunk count << 16 | next chunk to claim. A thread
  // reads the fields above only after claiming a chunk of the current job
  // (so they cannot change under it).
  std::atomic<uint64_t> claim_{0};
  std::atomic<int> unfinished_{0};
  std::atomic<bool> stop_{false};

  std::mutex mu_;  // only for sleeping and waking
  std::condition_variable work_cv_;
  std::condition_variable done_cv_;
  std::vector<std::thread> workers_;
};

// The backend's allocations: what is in use, its limit, and a cache of freed
// blocks. A training step frees and allocates the same large activations
// every step; handed back to the system (glibc unmaps blocks above 32 MiB
// at free) each one page-faulted in again (7% of a LoRA step in the
// kernel). Freed blocks of at least kMinCachedBytes wait for an allocation
// of the same rounded size -- as long as live tensors plus cached blocks
// stay within the most the live tensors alone have used so far, so the
// cache never raises the process's high-water mark.
struct CpuMemory {
  static constexpr size_t kMinCachedBytes = 256 * 1024;

  std::atomic<uint64_t> used{0};  // live tensors, not the cache
  uint64_t limit = 0;             // 0 = none

  ~CpuMemory();
  // Allocates `rounded` bytes for a tensor (64-byte aligned), from the cache
  // when it holds a block of exactly that size; nullptr when out of memory.
  // REQUIRES: `used` already counts the tensor.
  void* Allocate(size_t rounded);
  // Keeps `data` for a later Allocate, or frees it. REQUIRES: `used` no
  // longer counts it.
  void Release(void* data, size_t rounded);

 private:
  void EvictLocked(uint64_t room);  // frees cached blocks until they fit in room
  void DropLocked();

  std::mutex mu_;
  uint64_t peak_used_ = 0;
  std::unordered_multimap<size_t, void*> cache_;
  uint64_t cached_bytes_ = 0;
};

// Allocation sizes are rounded up to 64 bytes (the alignment).
inline size_t RoundedBytes(size_t bytes) { return (bytes + 63) / 64 * 64; }

// A tensor's bytes: a block of CpuMemory, or (WrapHostBytes) host memory
// kept alive by `owner` and not counted as the backend's.
class CpuBuffer final : public TensorBuffer {
 public:
  CpuBuffer(void* data, size_t bytes, std::shared_ptr<CpuMemory> memory)
      : data_(data), bytes_(bytes), memory_(std::move(memory)) {}
  CpuBuffer(const void* data, std::shared_ptr<const void> owner)
      : data_(const_cast<void*>(data)), bytes_(0), owner_(std::move(owner)) {}
  ~CpuBuffer() override;
  void* data() const { return data_; }

 private:
  void* data_;
  size_t bytes_;
  std::shared_ptr<CpuMemory> memory_;  // null for a host view
  std::shared_ptr<const void> owner_;
};

inline void* Raw(const Tensor& t) {
  return static_cast<CpuBuffer*>(t.buffer())->data();
}
// REQUIRES: t.type() == kF32 (checked by the public Backend methods).
inline float* F32(const Tensor& t) { return static_cast<float*>(Raw(t)); }

// Converts `count` elements stored as `type` at src to f32 at dst (a
// quantized type: count whole blocks, dequantized), and back (not quantized).
void ToF32(StorageType type, const void* src, float* dst, int64_t count);
void FromF32(StorageType type, const float* src, void* dst, int64_t count);
// A read-only f32 view of t: its own data when kF32, else a converted copy in
// `scratch`.
const float* AsF32(const Tensor& t, std::vector<float>& scratch);

// cpu_vec.cc: row kernels with a vectorised exp (AVX-512 / AVX2 / x86-64
// clones). VecExpF is the scalar form of that exp (for tests).
float VecExpF(float x);
float RowMax(const float* x, int64_t n);
// Σ exp(x[j] − shift).
float RowSumExp(const float* x, int64_t n, float shift);
// x[j] = exp(x[j] − shift); returns their sum.
float RowExpInPlace(float* x, int64_t n, float shift);
// d[j] += k·exp(x[j] − shift).
void RowAddScaledExp(float* d, const float* x, int64_t n, float shift, float k);
// p[j] = exp(p[j] − lse); ds[j] = p[j]·(ds[j] − delta)·scale (attention backward).
void RowSoftmaxGrad(float* p, float* ds, int64_t n, float lse, float delta, float scale);
// o = silu(g)·u, and its gradients added into dg and du.
void SwiGluSpan(float* o, const float* g, const float* u, int64_t n);
void SwiGluGradSpan(float* dg, float* du, const float* dy, const float* g, const float* u,
                    int64_t n);
// Decode attention for one (query row, head): out[0..d) = Σ_j softmax_j ·
// v_j over nkeys keys at k + j·stride (v likewise), softmax of scale·q·k_j;
// returns the log-sum-exp of the scaled scores. scores: nkeys floats of
// scratch. Head sizes 64 and 128 keep q and out in registers.
float AttendRow(const float* q, const float* k, const float* v, int64_t stride, int64_t nkeys,
                int64_t d, float scale, float* out, float* scores);

// 32 activation values held for integer dot products with Q8_0, Q4_0,
// Q4_K and Q6_K weight blocks: x[j] ≈ d·t[j], d = max|x| / 32512,
// |t[j]| ≤ 32512, so |x[j] − d·t[j]| ≤ 0.51·d: about 15 bits of the block's
// largest value, against the 7 of the int8 activations llama.cpp uses.
// sum8[l] = 8·(t[2l] + t[2l+1] + t[16+2l] + t[17+2l]) (the Q4_0 codes'
// offset of 8, in the lanes the kernel's sums come out in).
struct alignas(32) ActBlock {
  int16_t t[32];
  int32_t sum8[8];
};

// Blocks 2p and 2p + 1 of a row side by side for the 512-bit kernels: lo
// holds values 0..15 of block 2p then of block 2p + 1, hi values 16..31 of
// both (the order a Q4_0 pair's codes widen into), d16 their d eight times
// each: one vpmaddwd pair then gives 8 lanes of each block.
struct alignas(64) ActPair {
  int16_t lo[32];
  int16_t hi[32];
  float d16[16];
};

// m activation rows of k values as QuantizeActRows makes them: block b of
// row i at i·(k/32) + b in each array: its ActBlock, its d, and d·Σt (Q4_K's
// minimums multiply it). The scales are arrays of their own so that the
// K-quant kernels load the 8 blocks of a 256-value super-block as one vector.
// pairs: pair p of row i at i·(k/64) + p, only where the AVX-512 kernels
// are in use. The arrays may be longer than m rows need (QuantizeActRows
// keeps them from call to call).
struct ActRows {
  std::vector<ActBlock> blocks;
  std::vector<float> d, dsum;
  std::vector<ActPair> pairs;
};

// Whether WeightRowDots takes `type` with activations as ActRows.
inline bool UsesActBlocks(StorageType type) {
  return type == StorageType::kQ8_0 || type == StorageType::kQ4_0 ||
         type == StorageType::kQ4_K || type == StorageType::kQ6_K;
}

// Fills `out` (resized) with the m activation rows at x (row stride ldx).
// Returns false, and WeightRowDots must take the f32 rows, when the
// instruction set in use has no integer kernel (baseline x86-64), or a
// value is not finite (NaN and ∞ then reach the output as in f32), or a
// block's largest |value| is nonzero but below 2^-64 (its scale would lose
// precision). REQUIRES: k % 32 == 0.
bool QuantizeActRows(const float* x, int64_t ldx, int64_t m, int64_t k, ActRows* out);

// cpu_quant.cc: c[i, r] = alpha·(b[r, :]·x[i, :]) + beta·c[i, r] for the m
// activation rows x (row stride ldx) and weight rows r0..r1 of a [N, k]
// weight b stored as `type`, c row stride ldc; beta = 0 ignores c. F32
// takes one activation row only (m = 1). Dequantizes in registers,
// accumulates in f32.
// With xq (the rows as QuantizeActRows made them; the block formats only),
// the products are integer dot products per 32 values instead, scaled in f32.
struct WeightRowsArgs {
  StorageType type;
  const uint8_t* b;
  int64_t k;
  const float* x;
  int64_t ldx;
  int64_t m;
  float* c;
  int64_t ldc;
  float alpha, beta;
  const ActRows* xq = nullptr;
};
void WeightRowDots(const WeightRowsArgs& args, int64_t r0, int64_t r1);
// ToF32 for F16, BF16 and the block formats with 8-lane code where the
// instruction set has it (WeightRowIsa), value for value the reference
// conversion; false (nothing written) for F32 or on baseline x86-64.
bool ToF32Fast(StorageType type, const void* src, float* dst, int64_t count);

// The instruction sets WeightRowDots is built for, in increasing order.
enum class CpuIsa { kBaseline, kAvx2, kAvx512 };
// The best one this CPU has (cpuid), and the one in use (the best, unless a
// test chose a lower one).
CpuIsa BestCpuIsa();
CpuIsa WeightRowIsa();
// Tests: use `isa` (or the best this CPU has, when that is lower).
void SetWeightRowIsaForTesting(CpuIsa isa);
const char* CpuIsaName(CpuIsa isa);

// blas::Sgemm split over the pool by column blocks (n >= m) or row blocks,
// each part one single-threaded OpenBLAS call; small products run on the
// calling thread. Not from inside a ParallelFor (use blas::Sgemm there).
void ParallelSgemm(ThreadPool& pool, bool trans_a, bool trans_b, int64_t m, int64_t n,
                   int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float beta, float* c, int64_t ldc);

class CpuBackend final : public Backend {
 public:
  explicit CpuBackend(const BackendOptions& options);

  std::string name() const override { return "cpu"; }
  DeviceInfo info() const override;
  Status Synchronize() override { return Status::Ok(); }

 protected:
  bool SupportsStorage(StorageType) const override { return true; }
  bool CanWrapHostBytes() const override { return true; }
  Result<Tensor> AllocImpl(Shape shape, StorageType type) override;
  Result<Tensor> WrapHostBytesImpl(Shape shape, StorageType type, const void* data,
                                   std::shared_ptr<const void> owner) override;
  Status UploadImpl(const Tensor& t, std::span<const float> src) override;
  Status DownloadImpl(const Tensor& t, std::span<float> dst) override;
  Status UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) override;
  Status DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) override;
  Status FillImpl(const Tensor& t, float value) override;
  Status CopyImpl(const Tensor& dst, const Tensor& src) override;
  Status AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) override;
  Status AxpyImpl(const Tensor& y, float alpha, const Tensor& x) override;
  Status ScaleImpl(const Tensor& t, float s) override;
  Status GemmImpl(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
                  bool trans_b, float alpha, float beta) override;
  Status MatMulSharedImpl(std::span<const Tensor> outs, const Tensor& inp,
                          std::span<const Tensor> weights) override;
  Status EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                              std::span<const int32_t> ids) override;
  Status EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                               std::span<const int32_t> ids) override;
  Status RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                            const Tensor& weight, float eps) override;
  Status RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                             const Tensor& dout, const Tensor& inp,
                             const Tensor& weight, float eps) override;
  Status RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                  std::span<const int32_t> positions, bool backward) override;
  Status AttentionForwardImpl(const Tensor& out, const Tensor* lse, const Tensor& q,
                              const Tensor& k, const Tensor& v,
                              std::span<const int32_t> seq_starts) override;
  Status AttentionBackwardImpl(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               std::span<const int32_t> seq_starts) override;
  Status KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                          std::span<const int32_t> slots,
                          std::span<const int32_t> positions) override;
  Status AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                             const Tensor& k_cache, const Tensor& v_cache,
                             std::span<const int32_t> slots,
                             std::span<const int32_t> positions) override;
  Status SwiGluForwardImpl(const Tensor& out, const Tensor& gate,
                           const Tensor& up) override;
  Status SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                            const Tensor& dout, const Tensor& gate,
                            const Tensor& up) override;
  Result<CrossEntropySums> CrossEntropyForwardImpl(
      const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
      std::span<const float> weights) override;
  Status CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                  std::span<const int32_t> targets,
                                  std::span<const float> weights,
                                  float grad_scale) override;
  Status LogProbsImpl(const Tensor& out, const Tensor& logits,
                      std::span<const int32_t> targets) override;
  Status AdamWStepImpl(const Tensor& param, const Tensor& grad, const Tensor& m,
                       const Tensor& v, const AdamWConfig& config) override;
  Result<double> SumSquaresImpl(const Tensor& t) override;

 private:
  // cpu_matmul.cc: the few-rows products that read each weight as stored,
  // in one pass over the pool. outs[i][r, :] = alpha·x[r, :]·weights[i]ᵀ +
  // beta·outs[i][r, :] for the m rows of x (row stride ldx), each weight
  // [N_i, K] as TakesRowDots allows; the activations rounded once.
  static bool TakesRowDots(int64_t m, const Tensor& b);
  void RowDots(std::span<const Tensor> outs, const float* x, int64_t ldx, int64_t m,
               std::span<const Tensor> weights, float alpha, float beta);
  // Rows-at-a-time parallel loop: grain chosen so a chunk holds >= ~16k values.
  void ParallelRows(int64_t rows, int64_t row_len,
                    const std::function<void(int64_t, int64_t)>& fn);

  std::shared_ptr<CpuMemory> memory_;
  uint64_t physical_bytes_ = 0;  // of the machine; UINT64_MAX when unknown
  std::unique_ptr<ThreadPool> pool_;
  // cpu_layers.cc: RoPE's cosines and sines of the last call's rows (row t:
  // half values each), kept while the frequencies and positions repeat: a
  // forward pass rotates q and k at the same positions in every layer, and
  // the backward pass again.
  struct RopeAngles {
    std::vector<float> freq, cos, sin;
    std::vector<int32_t> positions;
  } rope_;
};

}  // namespace pcfarm::cpu
