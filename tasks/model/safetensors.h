// Reading and writing safetensors files (huggingface/safetensors format).
//
// Layout: u64 little-endian header length N, N bytes of JSON header, then the
// byte buffer. The reader checks everything before it is used: N against the
// file size and the 100 MB limit, the JSON shape, every dtype, shape (and
// its product, for overflow), and data_offsets (begin <= end <= buffer size,
// end - begin == numel * element size, the tensors cover the buffer with no
// hole and no overlap). Any violation is an InvalidArgument/Corruption
// status naming the file and the tensor; nothing is read out of bounds.
//
// Tensors of dtypes the engine does not use (I64, F64, ...) are still
// size-checked and listed; asking for one as a HostTensor is an error naming
// it.
//
// Thread-safety: a SafetensorsFile is immutable after parsing.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/status.h"
#include "tasks/model/host_tensor.h"

namespace pcfarm {

inline constexpr uint64_t kSafetensorsMaxHeaderBytes = 100'000'000;

struct SafetensorsEntry {
  std::string name;
  std::string dtype_name;        // as written, e.g. "BF16", "I64"
  std::optional<DType> dtype;    // set iff F32/F16/BF16
  std::vector<int64_t> shape;
  uint64_t begin = 0, end = 0;   // relative to the byte buffer
};

class SafetensorsFile {
 public:
  // Maps and parses the file at `path`.
  static Result<SafetensorsFile> Open(const std::string& path);

  // Parses a whole file held in `bytes`; `display_name` is used in errors.
  // `owner` keeps `bytes` alive and is shared by every tensor handed out;
  // it may be null when the caller keeps `bytes` alive longer than the
  // tensors.
  static Result<SafetensorsFile> Parse(std::string_view bytes,
                                       std::string display_name,
                                       std::shared_ptr<const void> owner);

  const std::string& display_name() const { return display_name_; }
  // All tensors, in buffer order.
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Null when absent.
  const SafetensorsEntry* Find(std::string_view name) const;
  // A view of tensor `name` (not copied). NotFound when absent;
  // InvalidArgument when its dtype is not F32/F16/BF16.
  Result<HostTensor> Tensor(std::string_view name) const;

 private:
  std::string display_name_;
  std::string_view buffer_;
  std::shared_ptr<const void> owner_;
  const MappedFile* mapped_ = nullptr;  // set by Open: the file owner_ holds
  std::vector<SafetensorsEntry> entries_;
  std::map<std::string, size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

struct NamedTensor {
  std::string name;
  HostTensor tensor;
};

// The bytes of a safetensors file holding `tensors` (buffer in the given
// order) and `metadata`; the header is padded with spaces to a multiple of
// 8 bytes. InvalidArgument on an empty or duplicate name or "__metadata__".
Result<std::string> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata = {});

// SerializeSafetensors, then WriteFileAtomic to `path`.
Status WriteSafetensors(const std::string& path,
                        const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata = {});

}  // namespace pcfarm
