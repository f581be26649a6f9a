// Gemm on the CPU: OpenBLAS cblas_sgemm (cblas_sgemv for a single f32 row),
// with F16/BF16 operands converted to f32 first (a whole, b tile by tile;
// see cpu_backend.h for the trade-off).
#include <cblas.h>

#include <algorithm>

#include "tasks/backend/cpu/cpu_internal.h"

namespace pcfarm::cpu {

namespace {
constexpr int64_t kTileFloats = 1 << 20;  // 4 MiB of f32 per converted tile
}  // namespace

Status CpuBackend::GemmImpl(const Tensor& c, const Tensor& a, bool trans_a,
                            const Tensor& b, bool trans_b, float alpha, float beta) {
  const int64_t m = c.shape()[0], n = c.shape()[1];
  const int64_t k = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t lda = a.shape()[1], ldb = b.shape()[1];
  std::vector<float> a_scratch;
  const float* ap = AsF32(a, a_scratch);
  float* cp = F32(c);
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;

  if (b.type() == StorageType::kF32 && m == 1) {
    // One row (decode): a matrix-vector product. OpenBLAS 0.3.21's sgemm
    // does not forward M = 1 to gemv; it packs all of b first, which costs
    // more than the product (gemm_bench: decode lm_head 1×32000×768).
    // op(a) is a single row either way: a[1, K], or a[K, 1] with lda = 1.
    // c = op(b)ᵀ·a: with trans_b, b is [N, K] (NoTrans); otherwise [K, N].
    // sgemv scales y by beta (0·NaN = NaN in newer OpenBLAS): clear it.
    if (beta == 0.0f) std::fill(cp, cp + n, 0.0f);
    cblas_sgemv(CblasRowMajor, trans_b ? CblasNoTrans : CblasTrans,
                static_cast<blasint>(b.shape()[0]), static_cast<blasint>(b.shape()[1]), alpha,
                F32(b), static_cast<blasint>(ldb), ap, 1, beta, cp, 1);
    return Status::Ok();
  }
  if (b.type() == StorageType::kF32) {
    cblas_sgemm(CblasRowMajor, ta, tb, static_cast<blasint>(m), static_cast<blasint>(n),
                static_cast<blasint>(k), alpha, ap, static_cast<blasint>(lda), F32(b),
                static_cast<blasint>(ldb), beta, cp, static_cast<blasint>(n));
    return Status::Ok();
  }

  // b is 16-bit: convert a block of its stored rows at a time. When trans_b,
  // stored rows are output columns n0..n1; otherwise they are the reduction
  // index k0..k1 and the blocks accumulate into c.
  const int64_t rows = b.shape()[0], row_len = b.shape()[1];
  const int64_t tile_rows = std::max<int64_t>(1, kTileFloats / row_len);
  const size_t es = StorageTypeSize(b.type());
  const auto* braw = static_cast<const char*>(Raw(b));
  std::vector<float> tile(static_cast<size_t>(std::min(rows, tile_rows) * row_len));
  for (int64_t r0 = 0; r0 < rows; r0 += tile_rows) {
    const int64_t nr = std::min(tile_rows, rows - r0);
    pool_->ParallelFor(nr, 16, [&](int64_t s, int64_t e) {
      ToF32(b.type(), braw + (r0 + s) * row_len * static_cast<int64_t>(es),
            tile.data() + s * row_len, (e - s) * row_len);
    });
    if (trans_b) {
      cblas_sgemm(CblasRowMajor, ta, CblasTrans, static_cast<blasint>(m),
                  static_cast<blasint>(nr), static_cast<blasint>(k), alpha, ap,
                  static_cast<blasint>(lda), tile.data(), static_cast<blasint>(row_len),
                  beta, cp + r0, static_cast<blasint>(n));
    } else {
      // op(a) columns r0..r0+nr: a[:, r0..] when not transposed, rows r0.. of
      // the stored [K, M] matrix when transposed.
      const float* a_block = trans_a ? ap + r0 * lda : ap + r0;
      cblas_sgemm(CblasRowMajor, ta, CblasNoTrans, static_cast<blasint>(m),
                  static_cast<blasint>(n), static_cast<blasint>(nr), alpha, a_block,
                  static_cast<blasint>(lda), tile.data(), static_cast<blasint>(row_len),
                  r0 == 0 ? beta : 1.0f, cp, static_cast<blasint>(n));
    }
  }
  return Status::Ok();
}

}  // namespace pcfarm::cpu
