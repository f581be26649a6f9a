// GGML's block-quantized tensor formats (Q8_0, Q4_0, Q4_K, Q6_K), exactly as
// GGUF files store them (ggml-org/ggml docs/gguf.md, gguf-py quants.py):
// sizes, the reference dequantization, the reference quantizers for the
// two 32-value formats and our own for the two K-quants.
//
// A row of K values is K / BlockValues blocks, each BlockBytes long, stored
// back to back with no padding; a block's f16 scales are not aligned (a Q8_0
// block is 34 bytes), so every read here is a memcpy. Layouts:
//   Q8_0 (32 values, 34 bytes): f16 d, int8 q[32];        x = d·q
//   Q4_0 (32 values, 18 bytes): f16 d, u8 qs[16];         x = d·(nibble − 8),
//        low nibbles are values 0..15, high nibbles values 16..31
//   Q4_K (256 values, 144 bytes): f16 d, f16 dmin, u8 scales[12], u8 qs[128];
//        8 sub-blocks of 32 with a 6-bit scale sc and min m each,
//        x = (d·sc)·nibble − (dmin·m); qs chunk j (32 bytes) holds sub-block
//        2j in its low nibbles and 2j+1 in its high nibbles; sub-block i's
//        (sc, m) are (scales[i] & 63, scales[i+4] & 63) for i < 4, else
//        (scales[i+4] & 15 | (scales[i−4] >> 6) << 4,
//         scales[i+4] >> 4 | (scales[i] >> 6) << 4)
//   Q6_K (256 values, 210 bytes): u8 ql[128], u8 qh[64], int8 scales[16],
//        f16 d; 16 sub-blocks of 16, x = (d·scale)·(q − 32), q a 6-bit value
//        from a nibble of ql and two bits of qh: in each half h (128 values,
//        ql + 64h, qh + 32h, scales + 8h) value l + 32t (l < 32, t < 4) takes
//        the low (t < 2) or high (t ≥ 2) nibble of ql[l + 32·(t & 1)] and
//        bits 2t..2t+1 of qh[l], with scale index l / 16 + 2t.
// The dequantization computes in f32 in exactly the order above (products
// rounded one at a time, no fused multiply-add), so it is bit-exact against
// any reference that does the same; an Inf or NaN scale gives Inf/NaN values
// (IEEE: Inf·0 is NaN), as the spec's formula does.
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/status.h"

namespace pcfarm {

// ggml type numbers (the GGUF tensor info's type field).
enum GgmlQuantType : uint32_t {
  kGgmlTypeQ4_0 = 2, kGgmlTypeQ8_0 = 8, kGgmlTypeQ4_K = 12, kGgmlTypeQ6_K = 14,
};

// True for the four types above.
bool IsGgmlQuantType(uint32_t type);
// Values per block (32 or 256) and bytes per block; 0 for other types.
int64_t GgmlBlockValues(uint32_t type);
size_t GgmlBlockBytes(uint32_t type);
// "Q8_0", "Q4_0", "Q4_K", "Q6_K", or "?".
const char* GgmlQuantName(uint32_t type);

// Dequantizes `n_blocks` consecutive blocks at `src` into
// n_blocks·GgmlBlockValues(type) floats at dst.
// REQUIRES: IsGgmlQuantType(type); src holds n_blocks·GgmlBlockBytes bytes.
void DequantizeBlocks(uint32_t type, const uint8_t* src, int64_t n_blocks, float* dst);

// The reference quantizers for Q8_0 and Q4_0 (gguf-py's): per block of 32,
//   Q8_0: d = max|x| / 127, q = round_half_away(x / d) (0 when d = 0)
//   Q4_0: m = the x of largest |x| (the first when tied), d = m / −8,
//         q = min(15, trunc(x / d + 8.5)) (8 when d = 0)
// in f32, the division done as x·(1/d) with the f32 d, and d then stored
// as f16 (nearest even). For Q4_K and Q6_K a plain fit of our own (not
// llama.cpp's search for the scale that minimises the error, so its error
// is somewhat larger than a llama.cpp file's), per super-block of 256:
//   Q4_K: per sub-block s of 32, lo = min(0, min x), hi = max(0, max x);
//         d = max_s((hi − lo)/15)/63, dmin = max_s(−lo)/63 (stored f16);
//         sc_s = ceil(((hi − lo)/15)/d) and m_s = round(−lo/dmin), both
//         clamped to 0..63; q = round((x + dmin·m_s)/(d·sc_s)) in 0..15
//   Q6_K: per group g of 16, scale_g = max|x|/31; d = max_g(scale_g)/127
//         (stored f16); sc_g = ceil(scale_g/d) in 0..127;
//         q = round(x/(d·sc_g)) in −32..31, stored + 32
// (0 codes where a scale is 0). `n` values from src (a multiple of the
// block's values) into dst. InvalidArgument for another type or a ragged n.
Status QuantizeBlocks(uint32_t type, const float* src, int64_t n, uint8_t* dst);

}  // namespace pcfarm
