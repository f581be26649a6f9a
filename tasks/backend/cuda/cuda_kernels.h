// The CUDA backend's kernel launchers: one .cu file per op (a "kernels"
// section, then a "launchers" section), called by cuda_ops.cc.
//
// Launchers take raw device pointers and sizes already checked by the public
// Backend methods, enqueue work on `stream` and return the launch status
// (cudaGetLastError); they never synchronize. Host index arrays (ids,
// positions, ...) must already be on the device. Plain C++ types only, so
// this header is shared by nvcc and the host compiler.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "tasks/backend/cuda/block_decode.h"

namespace pcfarm::cuda {

// Elem, how a tensor's elements are stored: block_decode.h.

// ---- elementwise.cu ----
// cudaSuccess iff this binary holds code the current device can run
// (cudaErrorNoKernelImageForDevice otherwise).
cudaError_t ProbeKernelImage();
cudaError_t Fill(cudaStream_t s, float* p, int64_t n, float value);
// dst[i] = src[i] converted from `st` to `dt` (f32 -> 16-bit rounds to
// nearest even, exactly as tasks/backend/half.h; a block type dequantizes
// as ggml_quants.cc's DequantizeBlocks). cudaErrorInvalidValue for a block
// type `dt`.
cudaError_t Convert(cudaStream_t s, void* dst, Elem dt, const void* src, Elem st, int64_t n);
cudaError_t Add(cudaStream_t s, float* out, const float* a, const float* b, int64_t n);
cudaError_t Axpy(cudaStream_t s, float* y, float alpha, const float* x, int64_t n);
cudaError_t Scale(cudaStream_t s, float* p, float scale, int64_t n);

// ---- gemm.cu ----
// The most rows GemvSmallM takes.
inline constexpr int64_t kGemvMaxRows = 8;
// c[i, r] = alpha·Σ_k a(i, k)·b[r, k] + beta·c[i, r] (beta = 0 ignores c), for
// i < m <= kGemvMaxRows, r < n; a(i, k) = a[i·a_row_stride + k·a_col_stride];
// b is row-major [n, k] (any Elem; block types: k a whole number of
// blocks); c row-major [m, n]. Reads b once (decode).
cudaError_t GemvSmallM(cudaStream_t s, float* c, const float* a, int64_t a_row_stride,
                       int64_t a_col_stride, const void* b, Elem bt, int64_t m, int64_t n,
                       int64_t k, float alpha, float beta);

// ---- embedding.cu ----
// out[i, :] = table[ids[i], :] for i < n; rows of c elements.
cudaError_t EmbeddingForward(cudaStream_t s, float* out, const void* table, Elem tt,
                             const int32_t* ids, int64_t n, int64_t c);
// For each segment g < segments: dtable[seg_id[g], :] += dout[order[t], :] for
// t in [seg_start[g], seg_start[g + 1]), in that order (deterministic: one
// block owns one table row).
cudaError_t EmbeddingBackward(cudaStream_t s, float* dtable, const float* dout,
                              const int32_t* order, const int32_t* seg_start,
                              const int32_t* seg_id, int64_t segments, int64_t c);

// ---- rmsnorm.cu ----
cudaError_t RmsNormForward(cudaStream_t s, float* out, const float* inp, const void* w,
                           Elem wt, int64_t rows, int64_t c, float eps);
// rstd: scratch of `rows` floats. dweight may be null.
cudaError_t RmsNormBackward(cudaStream_t s, float* dinp, float* dweight, float* rstd,
                            const float* dout, const float* inp, const void* w, Elem wt,
                            int64_t rows, int64_t c, float eps);

// ---- rope.cu ----
// [n, h, d] rows; positions on the device. backward: out += rotation by −angle.
cudaError_t Rope(cudaStream_t s, float* out, const float* inp, const float* inv_freq,
                 const int32_t* positions, int64_t n, int64_t h, int64_t d, bool backward);

// ---- attention.cu ----
// The largest head dimension the attention kernels take.
inline constexpr int64_t kMaxHeadDim = 2048;
// Query row i (q, out: [n, hq, d]) attends to the kv_count[i] key rows
// kv_first[i], kv_first[i] + 1, ... of k and v (rows of [hkv, d]): causal
// prefill (first = sequence start, count = i − start + 1) and decode against
// a [S, T, hkv, d] cache (first = slot·T, count = position + 1) alike. Online
// softmax in one pass over the keys (flash-style). lse [n, hq] may be null.
cudaError_t AttendRows(cudaStream_t s, float* out, float* lse, const float* q,
                       const float* k, const float* v, const int32_t* kv_first,
                       const int32_t* kv_count, int64_t n, int64_t hq, int64_t hkv,
                       int64_t d);
// Backward of causal prefill attention: dq, dk, dv += gradients. row_start[i]
// / row_end[i]: first / one-past-last row of row i's sequence. delta: scratch
// of n·hq floats. Deterministic (no atomics).
cudaError_t AttentionBackward(cudaStream_t s, float* dq, float* dk, float* dv,
                              const float* dout, const float* q, const float* k,
                              const float* v, const float* out, const float* lse,
                              const int32_t* row_start, const int32_t* row_end, float* delta,
                              int64_t n, int64_t hq, int64_t hkv, int64_t d);
// cache[dst_row[r], :] = src[src_row[r], :] for r < count, rows of row_len.
// REQUIRES: dst_row has no repeats.
cudaError_t CopyRows(cudaStream_t s, float* cache, const float* src, const int32_t* src_row,
                     const int32_t* dst_row, int64_t count, int64_t row_len);

// ---- swiglu.cu ----
cudaError_t SwiGluForward(cudaStream_t s, float* out, const float* gate, const float* up,
                          int64_t n);
cudaError_t SwiGluBackward(cudaStream_t s, float* dgate, float* dup, const float* dout,
                           const float* gate, const float* up, int64_t n);

// ---- cross_entropy.cu ----
// losses[i] = logsumexp(logits[i]) − logits[i, targets[i]], 0 where
// weights[i] == 0.
cudaError_t CrossEntropyRows(cudaStream_t s, float* losses, const float* logits,
                             const int32_t* targets, const float* weights, int64_t n,
                             int64_t v);
cudaError_t CrossEntropyBackward(cudaStream_t s, float* dlogits, const float* logits,
                                 const int32_t* targets, const float* weights, int64_t n,
                                 int64_t v, float grad_scale);
cudaError_t LogProbs(cudaStream_t s, float* out, const float* logits, const int32_t* targets,
                     int64_t n, int64_t v);

// ---- adamw.cu ----
// bc1 = 1/(1−β1^t), bc2 = 1/(1−β2^t), computed by the caller.
cudaError_t AdamW(cudaStream_t s, float* p, const float* g, float* m, float* v, int64_t n,
                  float lr, float beta1, float beta2, float eps, float weight_decay,
                  float grad_scale, float bc1, float bc2);

// ---- sum_squares.cu ----
// Partial sums for SumSquares: kSumSquaresBlocks doubles, to be added on the
// host in order (the same answer for the same n, every run).
inline constexpr int kSumSquaresBlocks = 256;
cudaError_t SumSquaresPartials(cudaStream_t s, double* partials, const float* p, int64_t n);

}  // namespace pcfarm::cuda
