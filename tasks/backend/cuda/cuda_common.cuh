// Device helpers shared by the CUDA backend's kernels: 16-bit storage
// conversions (bit-exact ports of tasks/backend/half.h), warp and block
// reductions, grid sizing.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "tasks/backend/cuda/cuda_kernels.h"

namespace pcfarm::cuda {

// ---- storage conversions ----------------------------------------------------

// Exact (block_decode.h, shared with the host so that a test without a GPU
// checks it against half.h).
__device__ __forceinline__ float F16ToF32Dev(uint16_t h) { return HalfBitsToF32(h); }

__device__ __forceinline__ uint16_t F32ToF16Dev(float f) {
  const uint32_t f32_infty = 255u << 23;
  const uint32_t f16_max = (127u + 16u) << 23;
  const uint32_t denorm_magic_bits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
  uint32_t u = __float_as_uint(f);
  const uint32_t sign = u & 0x80000000u;
  u ^= sign;
  uint32_t o;
  if (u >= f16_max) {
    o = u > f32_infty ? 0x7e00u : 0x7c00u;
  } else if (u < (113u << 23)) {
    // __fadd_rn: never contracted, rounds to nearest even like the host.
    const float ff = __fadd_rn(__uint_as_float(u), __uint_as_float(denorm_magic_bits));
    o = __float_as_uint(ff) - denorm_magic_bits;
  } else {
    const uint32_t mant_odd = (u >> 13) & 1u;
    u += ((15u - 127u) << 23) + 0xfffu;
    u += mant_odd;
    o = u >> 13;
  }
  return static_cast<uint16_t>(o | (sign >> 16));
}

__device__ __forceinline__ float BF16ToF32Dev(uint16_t h) {
  return __uint_as_float(static_cast<uint32_t>(h) << 16);
}

__device__ __forceinline__ uint16_t F32ToBF16Dev(float f) {
  const uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

// Storage<E>::T is the stored element; Load widens it, Store narrows an f32.
template <Elem E>
struct Storage;
template <>
struct Storage<Elem::kF32> {
  using T = float;
  __device__ static float Load(float x) { return x; }
  __device__ static float Store(float x) { return x; }
};
template <>
struct Storage<Elem::kF16> {
  using T = uint16_t;
  __device__ static float Load(uint16_t x) { return F16ToF32Dev(x); }
  __device__ static uint16_t Store(float x) { return F32ToF16Dev(x); }
};
template <>
struct Storage<Elem::kBF16> {
  using T = uint16_t;
  __device__ static float Load(uint16_t x) { return BF16ToF32Dev(x); }
  __device__ static uint16_t Store(float x) { return F32ToBF16Dev(x); }
};

// Element i of a tensor stored as E (any Elem).
template <Elem E>
__device__ __forceinline__ float LoadAt(const void* p, int64_t i) {
  if constexpr (kIsBlockElem<E>) {
    return BlockValue<E>(static_cast<const uint8_t*>(p), i);
  } else {
    return Storage<E>::Load(static_cast<const typename Storage<E>::T*>(p)[i]);
  }
}

// ---- storage dispatch -----------------------------------------------------------
//
// f(std::integral_constant<Elem, E>{}) for the E that `e` names, in a
// launcher: WithAnyElem takes every Elem, WithValueElem the ones stored
// value by value (F32, F16, BF16); cudaErrorInvalidValue for the rest.
template <Elem E>
using ElemTag = std::integral_constant<Elem, E>;

template <typename F>
cudaError_t WithValueElem(Elem e, F&& f) {
  switch (e) {
    case Elem::kF32: return f(ElemTag<Elem::kF32>{});
    case Elem::kF16: return f(ElemTag<Elem::kF16>{});
    case Elem::kBF16: return f(ElemTag<Elem::kBF16>{});
    case Elem::kQ8_0: case Elem::kQ4_0: case Elem::kQ4_K: case Elem::kQ6_K: break;
  }
  return cudaErrorInvalidValue;
}

template <typename F>
cudaError_t WithAnyElem(Elem e, F&& f) {
  switch (e) {
    case Elem::kQ8_0: return f(ElemTag<Elem::kQ8_0>{});
    case Elem::kQ4_0: return f(ElemTag<Elem::kQ4_0>{});
    case Elem::kQ4_K: return f(ElemTag<Elem::kQ4_K>{});
    case Elem::kQ6_K: return f(ElemTag<Elem::kQ6_K>{});
    case Elem::kF32: case Elem::kF16: case Elem::kBF16: break;
  }
  return WithValueElem(e, static_cast<F&&>(f));
}

// ---- reductions -------------------------------------------------------------

constexpr unsigned kFullMask = 0xffffffffu;

template <typename T>
__device__ __forceinline__ T WarpSum(T v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float WarpMax(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// The sum over the block, returned to every thread, in a fixed order.
// REQUIRES: blockDim.x a multiple of 32 (<= 1024), every thread calls it,
// `shared` holds 32 Ts.
template <typename T>
__device__ __forceinline__ T BlockSum(T v, T* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();  // `shared` may still be read by a previous call
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return WarpSum(lane < warps ? shared[lane] : T(0));
}

__device__ __forceinline__ float BlockMax(float v, float* shared) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int warps = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  return WarpMax(lane < warps ? shared[lane] : -INFINITY);
}

// ---- launch geometry ----------------------------------------------------------

constexpr int kThreads = 256;

// Blocks for a grid-stride loop over n elements (capped; the loop covers the rest).
inline unsigned GridFor(int64_t n, int threads = kThreads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > 65535 * 4 ? 65535 * 4 : blocks));
}

// The index of this thread in a 1-D grid, and the grid's stride.
__device__ __forceinline__ int64_t GlobalIndex() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t GridStride() {
  return static_cast<int64_t>(gridDim.x) * blockDim.x;
}

}  // namespace pcfarm::cuda
