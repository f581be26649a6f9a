// Reading GGUF v3 files (ggml-org/ggml docs/gguf.md).
//
// Layout: "GGUF", u32 version, u64 tensor_count, u64 kv_count, the KV pairs,
// the tensor infos, padding to general.alignment (default 32), the data
// section. Every length, count and offset is checked against the bytes left
// before anything is read or allocated; a truncated or lying file is an
// InvalidArgument naming the file and the key or tensor.
//
// Tensors: F32, F16, BF16, Q8_0, Q4_0, Q4_K and Q6_K come back as views into
// the file, held as stored (blocks along GGUF's first, fastest dimension).
// Other ggml types are size-checked (for the common ones) but cannot be
// loaded. Shapes are returned row-major,
// outermost first, i.e. GGUF's dims reversed: a GGUF weight with dims
// [in, out] becomes a HostTensor of shape [out, in].
//
// Thread-safety: a GgufFile is immutable after parsing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/model/host_tensor.h"

namespace pcfarm {

enum class GgufType : uint32_t {
  kU8 = 0, kI8 = 1, kU16 = 2, kI16 = 3, kU32 = 4, kI32 = 5, kF32 = 6,
  kBool = 7, kString = 8, kArray = 9, kU64 = 10, kI64 = 11, kF64 = 12,
};

// ggml tensor types the engine can load.
enum GgmlType : uint32_t {
  kGgmlF32 = 0, kGgmlF16 = 1, kGgmlQ4_0 = 2, kGgmlQ8_0 = 8, kGgmlQ4_K = 12,
  kGgmlQ6_K = 14, kGgmlBF16 = 30,
};

struct GgufValue {
  GgufType type = GgufType::kU8;
  int64_t i = 0;        // integer and bool scalars (u64 as its bit pattern)
  double f = 0;         // f32 / f64 scalars
  std::string s;        // string scalar
  // Arrays: elem_type plus the values in the matching vector. Arrays of
  // arrays are checked and skipped (array_size set, no values kept).
  GgufType elem_type = GgufType::kU8;
  uint64_t array_size = 0;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strings;
};

struct GgufTensorInfo {
  std::string name;
  std::vector<uint64_t> dims;  // GGUF order: fastest-varying first
  uint32_t type = 0;
  uint64_t offset = 0;         // relative to the data section
  uint64_t nbytes = 0;         // 0 for a ggml type of unknown size
};

class GgufFile {
 public:
  static Result<GgufFile> Open(const std::string& path);
  // Parses a whole file held in `bytes`; see SafetensorsFile::Parse for
  // `owner`.
  static Result<GgufFile> Parse(std::string_view bytes, std::string display_name,
                                std::shared_ptr<const void> owner);

  const std::string& display_name() const { return display_name_; }
  uint32_t version() const { return version_; }
  uint64_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue, std::less<>>& kv() const { return kv_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }

  // Null when absent.
  const GgufValue* Find(std::string_view key) const;
  // Typed reads; NotFound when absent, InvalidArgument on a type mismatch.
  Result<int64_t> GetInt(std::string_view key) const;   // any integer or bool
  Result<double> GetFloat(std::string_view key) const;  // f32, f64 or integer
  Result<std::string> GetString(std::string_view key) const;

  const GgufTensorInfo* FindTensor(std::string_view name) const;
  // Tensor `name` as a view into the file (see above).
  Result<HostTensor> Tensor(std::string_view name) const;

 private:
  std::string display_name_;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  std::map<std::string, GgufValue, std::less<>> kv_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
  std::string_view data_;
  std::shared_ptr<const void> owner_;
  const MappedFile* mapped_ = nullptr;  // set by Open: the file owner_ holds
};

// Dequantizes `numel` elements of ggml type Q8_0, Q4_0, Q4_K or Q6_K
// (tasks/backend/ggml_quants.h gives the layouts). REQUIRES: `data` holds
// the numel/block blocks. InvalidArgument when numel is not a whole number
// of blocks or the type is another one.
Result<std::vector<float>> DequantizeGgml(uint32_t type, const uint8_t* data,
                                          uint64_t numel);

// Bytes that `numel` elements of ggml `type` take; 0 when the type's size is
// unknown or numel does not fill whole blocks.
uint64_t GgmlTypeBytes(uint32_t type, uint64_t numel);

}  // namespace pcfarm
