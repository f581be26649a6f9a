// Gemm on the CPU: OpenBLAS sgemm (blas.h), with F16/BF16/quantized operands
// converted to f32 first (a whole, b tile by tile; see cpu_backend.h for the
// trade-off). A few rows (decode, batched decode) against a [N, K] weight take
// our own kernels instead, WeightRowDots (cpu_quant.cc): one row against F32,
// up to kFusedRows rows against F16, BF16 and quantized weights; OpenBLAS
// sgemv for other f32 single-row layouts.
#include <algorithm>
#include <array>
#include <cassert>
#include <memory>

#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/cpu/cpu_internal.h"
#include "tasks/backend/half.h"

namespace pcfarm::cpu {

namespace {
constexpr int64_t kTileFloats = 1 << 20;  // 4 MiB of f32 per converted tile
// Up to this many activation rows, a 16-bit or quantized [N, K] weight is read
// once, block by block, by WeightRowDots; beyond it, converted tiles and
// sgemm are quicker (the product is compute-bound by then).
constexpr int64_t kFusedRows = 16;
constexpr double kMinSgemmFlops = 4e6;  // below this one thread is quicker
}  // namespace

void ParallelSgemm(ThreadPool& pool, bool trans_a, bool trans_b, int64_t m, int64_t n,
                   int64_t k, float alpha, const float* a, int64_t lda, const float* b,
                   int64_t ldb, float beta, float* c, int64_t ldc) {
  if (pool.size() == 1 || 2.0 * double(m) * double(n) * double(k) < kMinSgemmFlops) {
    blas::Sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
  if (n >= m) {
    // Columns in blocks of 64: each thread reads all of op(a), its part of op(b).
    constexpr int64_t kCols = 64;
    pool.ParallelFor((n + kCols - 1) / kCols, 1, [&](int64_t b0, int64_t b1) {
      const int64_t n0 = b0 * kCols, n1 = std::min(n, b1 * kCols);
      blas::Sgemm(trans_a, trans_b, m, n1 - n0, k, alpha, a, lda,
                  trans_b ? b + n0 * ldb : b + n0, ldb, beta, c + n0, ldc);
    });
  } else {
    constexpr int64_t kRows = 16;
    pool.ParallelFor((m + kRows - 1) / kRows, 1, [&](int64_t b0, int64_t b1) {
      const int64_t m0 = b0 * kRows, m1 = std::min(m, b1 * kRows);
      blas::Sgemm(trans_a, trans_b, m1 - m0, n, k, alpha, trans_a ? a + m0 : a + m0 * lda,
                  lda, b, ldb, beta, c + m0 * ldc, ldc);
    });
  }
}

// ---- launchers --------------------------------------------------------------

// Whether m activation rows against a [N, K] weight `b` take RowDots: one
// row against F32 (decode: OpenBLAS 0.3.21's sgemm packs all of b for
// M = 1, and its sgemv runs the baseline (SSE) kernel on CPUs it does not
// know), up to kFusedRows against a 16-bit or quantized weight, read as
// stored.
bool CpuBackend::TakesRowDots(int64_t m, const Tensor& b) {
  return b.type() == StorageType::kF32 ? m == 1 : m <= kFusedRows;
}

void CpuBackend::RowDots(std::span<const Tensor> outs, const float* x, int64_t ldx, int64_t m,
                         std::span<const Tensor> weights, float alpha, float beta) {
  assert(outs.size() == weights.size() && weights.size() <= kMaxSharedWeights);
  const int64_t k = weights[0].shape()[1];
  // Kept from call to call (at most kFusedRows rows): a decode step's ~85
  // products each allocated and freed its four arrays.
  static thread_local ActRows xq;
  bool round = false;
  for (const Tensor& w : weights) round |= rounded_activations() && UsesActBlocks(w.type());
  // Once for every weight (the layout serves each block format).
  const ActRows* rounded = round && QuantizeActRows(x, ldx, m, k, &xq) ? &xq : nullptr;
  // The weights' rows one after another: rows start[i]..start[i + 1] are
  // weights[i]'s.
  std::array<WeightRowsArgs, kMaxSharedWeights> args;
  std::array<int64_t, kMaxSharedWeights + 1> start{};
  for (size_t i = 0; i < weights.size(); ++i) {
    const int64_t n = weights[i].shape()[0];
    args[i] = WeightRowsArgs{weights[i].type(), static_cast<const uint8_t*>(Raw(weights[i])),
                             k, x, ldx, m, F32(outs[i]), n, alpha, beta};
    if (UsesActBlocks(weights[i].type())) args[i].xq = rounded;
    start[i + 1] = start[i] + n;
  }
  pool_->ParallelFor(start[weights.size()], 16, [&](int64_t r0, int64_t r1) {
    for (size_t i = 0; i < weights.size(); ++i) {
      const int64_t b = std::max(r0, start[i]) - start[i], e = std::min(r1, start[i + 1]) - start[i];
      if (b >= e) continue;
      WeightRowDots(args[i], b, e);
    }
  });
}

Status CpuBackend::MatMulSharedImpl(std::span<const Tensor> outs, const Tensor& inp,
                                    std::span<const Tensor> weights) {
  const int64_t m = inp.shape()[0];
  bool all = true;
  for (const Tensor& w : weights) all &= TakesRowDots(m, w);
  if (!all) return Backend::MatMulSharedImpl(outs, inp, weights);
  std::vector<float> scratch;
  RowDots(outs, AsF32(inp, scratch), inp.shape()[1], m, weights, 1.0f, 0.0f);
  return Status::Ok();
}

Status CpuBackend::GemmImpl(const Tensor& c, const Tensor& a, bool trans_a,
                            const Tensor& b, bool trans_b, float alpha, float beta) {
  const int64_t m = c.shape()[0], n = c.shape()[1];
  const int64_t k = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t lda = a.shape()[1], ldb = b.shape()[1];
  std::vector<float> a_scratch;
  const float* ap = AsF32(a, a_scratch);
  float* cp = F32(c);

  if (trans_b && TakesRowDots(m, b) && (!trans_a || m == 1)) {
    // op(a) is m rows of stride lda, or one row (a[K, 1], lda = 1).
    RowDots({&c, 1}, ap, trans_a ? 1 : lda, m, {&b, 1}, alpha, beta);
    return Status::Ok();
  }
  if (b.type() == StorageType::kF32 && m == 1) {
    // One row (decode): a matrix-vector product. OpenBLAS 0.3.21's sgemm
    // does not forward M = 1 to gemv; it packs all of b first, which costs
    // more than the product (gemm_bench: decode lm_head 1×32000×768).
    // op(a) is a single row either way: a[1, K], or a[K, 1] with lda = 1.
    // c = op(b)ᵀ·a: with trans_b, b is [N, K] (NoTrans); otherwise [K, N].
    // sgemv scales y by beta (0·NaN = NaN in newer OpenBLAS): clear it.
    if (beta == 0.0f) std::fill(cp, cp + n, 0.0f);
    blas::Sgemv(!trans_b, b.shape()[0], b.shape()[1], alpha, F32(b), ldb, ap, beta, cp);
    return Status::Ok();
  }
  if (b.type() == StorageType::kF32) {
    ParallelSgemm(*pool_, trans_a, trans_b, m, n, k, alpha, ap, lda, F32(b), ldb, beta, cp, n);
    return Status::Ok();
  }

  const int64_t rows = b.shape()[0], row_len = b.shape()[1];
  const auto row_bytes = static_cast<int64_t>(StorageBytes(b.type(), row_len));
  const auto* braw = static_cast<const char*>(Raw(b));
  if (trans_b && n >= m) {
    // b is 16-bit or quantized, [N, K]: each thread converts the 64 stored
    // rows of its next 64 output columns into a tile of its own (192 KiB at
    // K = 768: it stays in L2) and multiplies it there, ParallelSgemm's
    // column split with the conversion inside: converting 4 MiB tiles first
    // wrote them out of cache and read them back.
    constexpr int64_t kCols = 64;
    const int64_t blocks = (n + kCols - 1) / kCols;
    const bool one_thread = 2.0 * double(m) * double(n) * double(k) < kMinSgemmFlops;
    pool_->ParallelFor(blocks, one_thread ? blocks : 1, [&](int64_t b0, int64_t b1) {
      // Not zeroed: every block converts its rows into it first.
      const std::unique_ptr<float[]> tile(new float[size_t(std::min(kCols, n - b0 * kCols) * row_len)]);
      for (int64_t blk = b0; blk < b1; ++blk) {
        const int64_t n0 = blk * kCols, nr = std::min(n, n0 + kCols) - n0;
        ToF32(b.type(), braw + n0 * row_bytes, tile.get(), nr * row_len);
        blas::Sgemm(trans_a, true, m, nr, k, alpha, ap, lda, tile.get(), row_len, beta, cp + n0, n);
      }
    });
    return Status::Ok();
  }

  // b is 16-bit or quantized: convert a block of its stored rows at a time
  // (whole rows, so whole blocks). When trans_b,
  // stored rows are output columns n0..n1; otherwise they are the reduction
  // index k0..k1 and the blocks accumulate into c.
  const int64_t tile_rows = std::max<int64_t>(1, kTileFloats / row_len);
  std::vector<float> tile(static_cast<size_t>(std::min(rows, tile_rows) * row_len));
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t nr = std::min(tile_rows, rows - r0);
    pool_->ParallelFor(nr, 16, [&](int64_t s, int64_t e) {
      ToF32(b.type(), braw + (r0 + s) * row_bytes, tile.data() + s * row_len,
            (e - s) * row_len);
    });
    if (trans_b) {
      ParallelSgemm(*pool_, trans_a, true, m, nr, k, alpha, ap, lda, tile.data(), row_len,
                    beta, cp + r0, n);
    } else {
      // op(a) columns r0..r0+nr: a[:, r0..] when not transposed, rows r0.. of
      // the stored [K, M] matrix when transposed.
      const float* a_block = trans_a ? ap + r0 * lda : ap + r0;
      ParallelSgemm(*pool_, trans_a, false, m, n, nr, alpha, a_block, lda, tile.data(),
                    row_len, r0 == 0 ? beta : 1.0f, cp, n);
    }
  }
  return Status::Ok();
}

}  // namespace pcfarm::cpu
