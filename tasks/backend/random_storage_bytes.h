// RandomStorageBytes: random weight bytes of any storage type, for the
// backend's tests and the engine benchmarks (not used by the engine).
// Header-only, so that tests and bench programs take it without a library.
//
// Thread-safety: pure (its own generator per call).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "tasks/backend/backend.h"
#include "tasks/backend/half.h"

namespace pcfarm::testing {

// Bytes of `type` for [n, k] from seed: uniform values in [-1, 1) for F32
// and the 16-bit types; random bits for the block formats' codes, with every
// block scale a normal f16 in [0.005, 0.05) so values stay finite.
inline std::vector<std::byte> RandomStorageBytes(StorageType type, int64_t n, int64_t k,
                                                 uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-1, 1), scale(0.005f, 0.05f);
  std::vector<std::byte> bytes(StorageBytes(type, n * k));
  if (type == StorageType::kF32) {
    for (size_t i = 0; i < bytes.size(); i += 4) {
      const float f = u(rng);
      std::memcpy(&bytes[i], &f, 4);
    }
    return bytes;
  }
  if (!IsQuantized(type)) {
    for (size_t i = 0; i < bytes.size(); i += 2) {
      const uint16_t h = type == StorageType::kF16 ? F32ToF16(u(rng)) : F32ToBF16(u(rng));
      std::memcpy(&bytes[i], &h, 2);
    }
    return bytes;
  }
  for (std::byte& b : bytes) b = std::byte(rng() & 0xff);
  const size_t bb = StorageBytes(type, StorageBlockValues(type));
  for (size_t off = 0; off < bytes.size(); off += bb) {
    auto put = [&](size_t at) {
      const uint16_t h = F32ToF16(scale(rng));
      std::memcpy(&bytes[off + at], &h, 2);
    };
    switch (type) {
      case StorageType::kQ8_0: case StorageType::kQ4_0: put(0); break;
      case StorageType::kQ4_K: put(0); put(2); break;
      case StorageType::kQ6_K: put(208); break;
      default: break;
    }
  }
  return bytes;
}

}  // namespace pcfarm::testing
