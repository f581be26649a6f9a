// The CUDA backend's ops: argument preparation on the host (index arrays
// packed into one upload, tiles, scratch), then the launchers of the .cu
// files or cuBLAS.
#include <algorithm>
#include <cmath>
#include <map>
#include <numeric>
#include <utility>

#include "tasks/backend/cuda/cuda_internal.h"

namespace pcfarm::cuda {

namespace {

// f32 elements per widened 16-bit Gemm tile (64 MiB).
constexpr int64_t kTileFloats = int64_t{1} << 24;

template <typename T>
const T* At(const std::byte* base, size_t offset) {
  return reinterpret_cast<const T*>(base + offset);
}

cudaDataType_t BlasType(StorageType t) {
  switch (t) {
    case StorageType::kF32: return CUDA_R_32F;
    case StorageType::kF16: return CUDA_R_16F;
    case StorageType::kBF16: return CUDA_R_16BF;
    // Block types go through the gemv kernel or a widened tile, never to
    // cuBLAS as they are (GemmImpl).
    case StorageType::kQ8_0: case StorageType::kQ4_0: case StorageType::kQ4_K:
    case StorageType::kQ6_K: break;
  }
  return CUDA_R_32F;
}

}  // namespace

// ---- elementwise ------------------------------------------------------------

Status CudaBackend::FillImpl(const Tensor& t, float value) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::Fill(stream_, F32(t), t.numel(), value), "Fill");
}

Status CudaBackend::CopyImpl(const Tensor& dst, const Tensor& src) {
  PCFARM_RETURN_IF_ERROR(Enter());
  if (dst.type() == src.type()) {
    if (dst.buffer() == src.buffer()) return Status::Ok();
    return Check(cudaMemcpyAsync(Raw(dst), Raw(src), dst.bytes(), cudaMemcpyDeviceToDevice,
                                 stream_),
                 "Copy");
  }
  return Check(cuda::Convert(stream_, Raw(dst), ElemOf(dst), Raw(src), ElemOf(src), dst.numel()),
               "Copy");
}

Status CudaBackend::AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::Add(stream_, F32(out), F32(a), F32(b), out.numel()), "Add");
}

Status CudaBackend::AxpyImpl(const Tensor& y, float alpha, const Tensor& x) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::Axpy(stream_, F32(y), alpha, F32(x), y.numel()), "Axpy");
}

Status CudaBackend::ScaleImpl(const Tensor& t, float s) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::Scale(stream_, F32(t), s, t.numel()), "Scale");
}

// ---- matrix multiply ----------------------------------------------------------
//
// Row-major C[M, N] = op(A)·op(B) is column-major Cᵀ[N, M] = op(B)ᵀ·op(A)ᵀ,
// and a row-major matrix read column-major is its transpose: so cuBLAS gets
// B first, then A, each with its own transpose flag, and ldc = N.

Status CudaBackend::GemmImpl(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
                             bool trans_b, float alpha, float beta) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t m = c.shape()[0], n = c.shape()[1];
  const int64_t k = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t lda = a.shape()[1], ldb = b.shape()[1];
  const bool a16 = a.type() != StorageType::kF32, b16 = b.type() != StorageType::kF32;
  float* cp = F32(c);

  if (!a16 && b16 && trans_b && m <= kGemvMaxRows) {
    // A few rows against a [N, K] 16-bit or block weight (decode): read it once.
    return Check(cuda::GemvSmallM(stream_, cp, F32(a), trans_a ? 1 : lda, trans_a ? lda : 1, Raw(b),
                            ElemOf(b), m, n, k, alpha, beta),
                 "Gemm (gemv)");
  }
  const cublasOperation_t op_a = trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
  const cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
  if (a16 && b16 && a.type() == b.type()) {  // never a block type: a is not one
    return CheckBlas(cublasGemmEx(blas_, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                                  static_cast<int>(k), &alpha, Raw(b), BlasType(b.type()),
                                  static_cast<int>(ldb), Raw(a), BlasType(a.type()),
                                  static_cast<int>(lda), &beta, cp, CUDA_R_32F,
                                  static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                     "cublasGemmEx");
  }
  const float* ap = nullptr;
  if (a16) {  // rare (a 16-bit activation): widen it whole
    PCFARM_ASSIGN_OR_RETURN(void* s, Scratch(0, a.numel() * sizeof(float)));
    PCFARM_RETURN_IF_ERROR(
        Check(cuda::Convert(stream_, s, Elem::kF32, Raw(a), ElemOf(a), a.numel()), "Gemm (widen a)"));
    ap = static_cast<const float*>(s);
  } else {
    ap = F32(a);
  }
  if (!b16) {
    return CheckBlas(cublasSgemm(blas_, op_b, op_a, static_cast<int>(n), static_cast<int>(m),
                                 static_cast<int>(k), &alpha, F32(b), static_cast<int>(ldb), ap,
                                 static_cast<int>(lda), &beta, cp, static_cast<int>(n)),
                     "cublasSgemm");
  }
  // b is 16-bit or block-quantized beside an f32 a: widen a block of its
  // stored rows at a time (a row is whole blocks, so a run of rows starts
  // on a block). With trans_b they are output columns r0..r1 (a column
  // block of C); otherwise they are the reduction index, and the blocks
  // accumulate.
  const int64_t rows = b.shape()[0], row_len = b.shape()[1];
  const int64_t tile_rows = std::max<int64_t>(1, kTileFloats / row_len);
  PCFARM_ASSIGN_OR_RETURN(
      void* tile_mem, Scratch(1, std::min(rows, tile_rows) * row_len * sizeof(float)));
  float* tile = static_cast<float*>(tile_mem);
  const uint64_t row_bytes = StorageBytes(b.type(), row_len);
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t nr = std::min(tile_rows, rows - r0);
    PCFARM_RETURN_IF_ERROR(Check(cuda::Convert(stream_, tile, Elem::kF32,
                                         static_cast<const char*>(Raw(b)) + r0 * row_bytes,
                                         ElemOf(b), nr * row_len),
                                 "Gemm (widen b)"));
    if (trans_b) {
      PCFARM_RETURN_IF_ERROR(CheckBlas(
          cublasSgemm(blas_, CUBLAS_OP_T, op_a, static_cast<int>(nr), static_cast<int>(m),
                      static_cast<int>(k), &alpha, tile, static_cast<int>(row_len), ap,
                      static_cast<int>(lda), &beta, cp + r0, static_cast<int>(n)),
          "cublasSgemm"));
    } else {
      const float* a_block = trans_a ? ap + r0 * lda : ap + r0;
      const float beta_block = r0 == 0 ? beta : 1.0f;
      PCFARM_RETURN_IF_ERROR(CheckBlas(
          cublasSgemm(blas_, CUBLAS_OP_N, op_a, static_cast<int>(n), static_cast<int>(m),
                      static_cast<int>(nr), &alpha, tile, static_cast<int>(row_len), a_block,
                      static_cast<int>(lda), &beta_block, cp, static_cast<int>(n)),
          "cublasSgemm"));
    }
  }
  return Status::Ok();
}

// ---- embedding ----------------------------------------------------------------

Status CudaBackend::EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                                         std::span<const int32_t> ids) {
  PCFARM_RETURN_IF_ERROR(Enter());
  ArgPack pack;
  const size_t o_ids = pack.Add(ids);
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::EmbeddingForward(stream_, F32(out), Raw(table), ElemOf(table),
                                At<int32_t>(args, o_ids), static_cast<int64_t>(ids.size()),
                                table.shape()[1]),
               "EmbeddingForward");
}

Status CudaBackend::EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                                          std::span<const int32_t> ids) {
  PCFARM_RETURN_IF_ERROR(Enter());
  // Tokens grouped by id (stable, so each id's rows keep token order): one
  // segment per distinct id, owned by one block.
  std::vector<int32_t> order(ids.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t x, int32_t y) { return ids[x] < ids[y]; });
  std::vector<int32_t> seg_start, seg_id;
  for (size_t t = 0; t < order.size(); ++t) {
    if (t == 0 || ids[order[t]] != ids[order[t - 1]]) {
      seg_start.push_back(static_cast<int32_t>(t));
      seg_id.push_back(ids[order[t]]);
    }
  }
  const int64_t segments = static_cast<int64_t>(seg_id.size());
  seg_start.push_back(static_cast<int32_t>(order.size()));
  ArgPack pack;
  const size_t o_order = pack.Add(std::span<const int32_t>(order));
  const size_t o_start = pack.Add(std::span<const int32_t>(seg_start));
  const size_t o_id = pack.Add(std::span<const int32_t>(seg_id));
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::EmbeddingBackward(stream_, F32(dtable), F32(dout), At<int32_t>(args, o_order),
                                 At<int32_t>(args, o_start), At<int32_t>(args, o_id), segments,
                                 dtable.shape()[1]),
               "EmbeddingBackward");
}

// ---- RMSNorm, RoPE, SwiGLU ----------------------------------------------------

Status CudaBackend::RmsNormForwardImpl(const Tensor& out, const Tensor& inp,
                                       const Tensor& weight, float eps) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t c = weight.numel();
  return Check(cuda::RmsNormForward(stream_, F32(out), F32(inp), Raw(weight), ElemOf(weight),
                              inp.numel() / c, c, eps),
               "RmsNormForward");
}

Status CudaBackend::RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight,
                                        const Tensor& dout, const Tensor& inp,
                                        const Tensor& weight, float eps) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t c = weight.numel(), rows = inp.numel() / c;
  PCFARM_ASSIGN_OR_RETURN(void* rstd, Scratch(0, rows * sizeof(float)));
  return Check(cuda::RmsNormBackward(stream_, F32(dinp), dweight ? F32(*dweight) : nullptr,
                               static_cast<float*>(rstd), F32(dout), F32(inp), Raw(weight),
                               ElemOf(weight), rows, c, eps),
               "RmsNormBackward");
}

Status CudaBackend::RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                             std::span<const int32_t> positions, bool backward) {
  PCFARM_RETURN_IF_ERROR(Enter());
  ArgPack pack;
  const size_t o_pos = pack.Add(positions);
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::Rope(stream_, F32(out), F32(inp), F32(inv_freq), At<int32_t>(args, o_pos),
                    inp.shape()[0], inp.shape()[1], inp.shape()[2], backward),
               backward ? "RopeBackward" : "RopeForward");
}

Status CudaBackend::SwiGluForwardImpl(const Tensor& out, const Tensor& gate, const Tensor& up) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::SwiGluForward(stream_, F32(out), F32(gate), F32(up), out.numel()),
               "SwiGluForward");
}

Status CudaBackend::SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup,
                                       const Tensor& dout, const Tensor& gate,
                                       const Tensor& up) {
  PCFARM_RETURN_IF_ERROR(Enter());
  return Check(cuda::SwiGluBackward(stream_, F32(dgate), F32(dup), F32(dout), F32(gate), F32(up),
                              gate.numel()),
               "SwiGluBackward");
}

// ---- attention ------------------------------------------------------------------

namespace {

Status CheckHeadDim(int64_t d, const char* op) {
  if (d <= kMaxHeadDim) return Status::Ok();
  return InvalidArgument(std::string(op) + ": head dimension " + std::to_string(d) +
                         " exceeds the CUDA backend's limit of " +
                         std::to_string(kMaxHeadDim));
}

// first[i] / end[i]: the first / one-past-last row of row i's sequence.
void SequenceBounds(std::span<const int32_t> seq_starts, std::vector<int32_t>& first,
                    std::vector<int32_t>& end) {
  for (size_t s = 0; s + 1 < seq_starts.size(); ++s)
    for (int32_t i = seq_starts[s]; i < seq_starts[s + 1]; ++i) {
      first[i] = seq_starts[s];
      end[i] = seq_starts[s + 1];
    }
}

}  // namespace

Status CudaBackend::AttentionForwardImpl(const Tensor& out, const Tensor* lse, const Tensor& q,
                                         const Tensor& k, const Tensor& v,
                                         std::span<const int32_t> seq_starts) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2], hkv = k.shape()[1];
  PCFARM_RETURN_IF_ERROR(CheckHeadDim(d, "AttentionForward"));
  std::vector<int32_t> first(n), end(n), count(n);
  SequenceBounds(seq_starts, first, end);
  for (int64_t i = 0; i < n; ++i) count[i] = static_cast<int32_t>(i - first[i] + 1);
  ArgPack pack;
  const size_t o_first = pack.Add(std::span<const int32_t>(first));
  const size_t o_count = pack.Add(std::span<const int32_t>(count));
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::AttendRows(stream_, F32(out), lse ? F32(*lse) : nullptr, F32(q), F32(k), F32(v),
                          At<int32_t>(args, o_first), At<int32_t>(args, o_count), n, hq, hkv, d),
               "AttentionForward");
}

Status CudaBackend::AttentionBackwardImpl(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                          const Tensor& dout, const Tensor& q, const Tensor& k,
                                          const Tensor& v, const Tensor& out, const Tensor& lse,
                                          std::span<const int32_t> seq_starts) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2], hkv = k.shape()[1];
  PCFARM_RETURN_IF_ERROR(CheckHeadDim(d, "AttentionBackward"));
  std::vector<int32_t> first(n), end(n);
  SequenceBounds(seq_starts, first, end);
  ArgPack pack;
  const size_t o_first = pack.Add(std::span<const int32_t>(first));
  const size_t o_end = pack.Add(std::span<const int32_t>(end));
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  PCFARM_ASSIGN_OR_RETURN(void* delta, Scratch(0, n * hq * sizeof(float)));
  return Check(cuda::AttentionBackward(stream_, F32(dq), F32(dk), F32(dv), F32(dout), F32(q), F32(k),
                                 F32(v), F32(out), F32(lse), At<int32_t>(args, o_first),
                                 At<int32_t>(args, o_end), static_cast<float*>(delta), n, hq,
                                 hkv, d),
               "AttentionBackward");
}

Status CudaBackend::KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                                     std::span<const int32_t> slots,
                                     std::span<const int32_t> positions) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t t = cache.shape()[1], row = src.shape()[1] * src.shape()[2];
  // A repeated (slot, position) keeps the last source row, as if written in
  // order; the kernel then writes each cache row once.
  std::map<int64_t, int32_t> last;
  for (size_t i = 0; i < slots.size(); ++i)
    last[static_cast<int64_t>(slots[i]) * t + positions[i]] = static_cast<int32_t>(i);
  std::vector<int32_t> src_row, dst_row;
  for (const auto& [dst, s] : last) {
    dst_row.push_back(static_cast<int32_t>(dst));
    src_row.push_back(s);
  }
  ArgPack pack;
  const size_t o_src = pack.Add(std::span<const int32_t>(src_row));
  const size_t o_dst = pack.Add(std::span<const int32_t>(dst_row));
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::CopyRows(stream_, F32(cache), F32(src), At<int32_t>(args, o_src),
                        At<int32_t>(args, o_dst), static_cast<int64_t>(src_row.size()), row),
               "KvCacheWrite");
}

Status CudaBackend::AttentionDecodeImpl(const Tensor& out, const Tensor& q,
                                        const Tensor& k_cache, const Tensor& v_cache,
                                        std::span<const int32_t> slots,
                                        std::span<const int32_t> positions) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t n = q.shape()[0], hq = q.shape()[1], d = q.shape()[2];
  const int64_t t = k_cache.shape()[1], hkv = k_cache.shape()[2];
  PCFARM_RETURN_IF_ERROR(CheckHeadDim(d, "AttentionDecode"));
  std::vector<int32_t> first(n), count(n);
  for (int64_t i = 0; i < n; ++i) {
    first[i] = static_cast<int32_t>(slots[i] * t);
    count[i] = positions[i] + 1;
  }
  ArgPack pack;
  const size_t o_first = pack.Add(std::span<const int32_t>(first));
  const size_t o_count = pack.Add(std::span<const int32_t>(count));
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::AttendRows(stream_, F32(out), nullptr, F32(q), F32(k_cache), F32(v_cache),
                          At<int32_t>(args, o_first), At<int32_t>(args, o_count), n, hq, hkv, d),
               "AttentionDecode");
}

// ---- loss and log-probabilities ---------------------------------------------------

Result<CrossEntropySums> CudaBackend::CrossEntropyForwardImpl(const Tensor* losses,
                                                              const Tensor& logits,
                                                              std::span<const int32_t> targets,
                                                              std::span<const float> weights) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const int64_t n = logits.shape()[0], v = logits.shape()[1];
  ArgPack pack;
  const size_t o_t = pack.Add(targets);
  const size_t o_w = pack.Add(weights);
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  float* row_loss = nullptr;
  if (losses != nullptr) {
    row_loss = F32(*losses);
  } else {
    PCFARM_ASSIGN_OR_RETURN(void* s, Scratch(0, n * sizeof(float)));
    row_loss = static_cast<float*>(s);
  }
  PCFARM_RETURN_IF_ERROR(Check(cuda::CrossEntropyRows(stream_, row_loss, F32(logits),
                                                At<int32_t>(args, o_t), At<float>(args, o_w),
                                                n, v),
                               "CrossEntropyForward"));
  std::vector<float> host(static_cast<size_t>(n));
  PCFARM_RETURN_IF_ERROR(Check(cudaMemcpyAsync(host.data(), row_loss, n * sizeof(float),
                                               cudaMemcpyDeviceToHost, stream_),
                               "CrossEntropyForward (download)"));
  PCFARM_RETURN_IF_ERROR(Check(cudaStreamSynchronize(stream_), "CrossEntropyForward"));
  // Summed on the host in double, in token order, as the CPU backend does.
  CrossEntropySums sums;
  for (int64_t i = 0; i < n; ++i) {
    if (weights[i] == 0) continue;
    sums.weighted_loss += double{weights[i]} * host[static_cast<size_t>(i)];
    sums.weight += weights[i];
    ++sums.counted;
  }
  return sums;
}

Status CudaBackend::CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                             std::span<const int32_t> targets,
                                             std::span<const float> weights, float grad_scale) {
  PCFARM_RETURN_IF_ERROR(Enter());
  ArgPack pack;
  const size_t o_t = pack.Add(targets);
  const size_t o_w = pack.Add(weights);
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::CrossEntropyBackward(stream_, F32(dlogits), F32(logits), At<int32_t>(args, o_t),
                                    At<float>(args, o_w), logits.shape()[0], logits.shape()[1],
                                    grad_scale),
               "CrossEntropyBackward");
}

Status CudaBackend::LogProbsImpl(const Tensor& out, const Tensor& logits,
                                 std::span<const int32_t> targets) {
  PCFARM_RETURN_IF_ERROR(Enter());
  ArgPack pack;
  const size_t o_t = pack.Add(targets);
  PCFARM_ASSIGN_OR_RETURN(const std::byte* args, UploadArgs(pack));
  return Check(cuda::LogProbs(stream_, F32(out), F32(logits), At<int32_t>(args, o_t),
                        logits.shape()[0], logits.shape()[1]),
               "LogProbs");
}

// ---- optimizer ----------------------------------------------------------------------

Status CudaBackend::AdamWStepImpl(const Tensor& param, const Tensor& grad, const Tensor& m,
                                  const Tensor& v, const AdamWConfig& cfg) {
  PCFARM_RETURN_IF_ERROR(Enter());
  const double t = static_cast<double>(cfg.step);
  const float bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta1}, t)));
  const float bc2 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta2}, t)));
  return Check(cuda::AdamW(stream_, F32(param), F32(grad), F32(m), F32(v), param.numel(), cfg.lr,
                     cfg.beta1, cfg.beta2, cfg.eps, cfg.weight_decay, cfg.grad_scale, bc1, bc2),
               "AdamWStep");
}

Result<double> CudaBackend::SumSquaresImpl(const Tensor& t) {
  PCFARM_RETURN_IF_ERROR(Enter());
  PCFARM_ASSIGN_OR_RETURN(void* s, Scratch(0, kSumSquaresBlocks * sizeof(double)));
  PCFARM_RETURN_IF_ERROR(
      Check(cuda::SumSquaresPartials(stream_, static_cast<double*>(s), F32(t), t.numel()),
            "SumSquares"));
  std::vector<double> partials(kSumSquaresBlocks);
  PCFARM_RETURN_IF_ERROR(Check(cudaMemcpyAsync(partials.data(), s,
                                               kSumSquaresBlocks * sizeof(double),
                                               cudaMemcpyDeviceToHost, stream_),
                               "SumSquares (download)"));
  PCFARM_RETURN_IF_ERROR(Check(cudaStreamSynchronize(stream_), "SumSquares"));
  double sum = 0;
  for (double x : partials) sum += x;
  return sum;
}

}  // namespace pcfarm::cuda
