// HostTensor: a read-only view of one weight tensor in host memory.
//
// `data` points either into a memory-mapped model file or into an owned
// buffer (after dequantization or a layout fix); `owner` keeps whichever it
// is alive, so a HostTensor stays valid however long it is held, and copies
// are cheap. Data is row-major, little-endian, shape outermost first (a
// Linear weight is [out_features, in_features]).
//
// Thread-safety: immutable; safe to share between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "tasks/model/dtype.h"

namespace pcfarm {

class MappedFile;

struct HostTensor {
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const void* data = nullptr;
  std::shared_ptr<const void> owner;
  // The mapped file `data` points into, when it does (owner keeps it
  // alive); null for owned buffers. MappedFile::DropPages ignores a range
  // outside it, so a copy whose data moved to a buffer stays safe.
  const MappedFile* mapped = nullptr;

  size_t numel() const {
    size_t n = 1;
    for (int64_t d : shape) n *= static_cast<size_t>(d);
    return n;
  }
  size_t nbytes() const { return DTypeBytes(dtype, numel()); }

  // Wraps an owned f32 buffer. REQUIRES: values.size() == product of shape.
  static HostTensor FromF32(std::vector<int64_t> shape, std::vector<float> values) {
    auto buf = std::make_shared<std::vector<float>>(std::move(values));
    HostTensor t;
    t.dtype = DType::kF32;
    t.shape = std::move(shape);
    t.data = buf->data();
    t.owner = buf;
    return t;
  }

  // The elements converted to f32 (a copy; quantized blocks dequantized).
  std::vector<float> ToF32() const {
    std::vector<float> out(numel());
    ConvertToF32(dtype, data, out.size(), out.data());
    return out;
  }
};

// "[64,32]".
inline std::string ShapeString(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

}  // namespace pcfarm
