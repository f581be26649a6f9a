// MappedFile: a whole regular file mapped read-only into memory.
//
// Owns the mapping; the bytes stay valid until the last shared_ptr to the
// MappedFile goes away. Weight views point into it, so they share ownership.
// If another process truncates the file while it is mapped, reading the lost
// pages raises SIGBUS; pcfarm only maps files it does not modify.
//
// Thread-safety: immutable after Open; safe to read from many threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "base/status.h"

namespace pcfarm {

class MappedFile {
 public:
  // Maps `path`. NotFound when missing, InvalidArgument when it is not a
  // regular file, IoError when open/fstat/mmap fail. An empty file maps to
  // size() == 0 and data() == nullptr.
  static Result<std::shared_ptr<const MappedFile>> Open(const std::string& path);

  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  std::string_view bytes() const {
    return {reinterpret_cast<const char*>(data_), size_};
  }
  const std::string& path() const { return path_; }

  // Gives back the whole pages of [p, p + n) that lie in this mapping: they
  // leave the process's resident memory (madvise MADV_DONTNEED) and are
  // read from the file again if touched later, so the bytes never change.
  // For a caller done with a range it read once (a weight quantized at
  // load). Ranges outside the mapping are ignored.
  void DropPages(const void* p, size_t n) const;

 private:
  MappedFile(std::string path, const uint8_t* data, size_t size)
      : path_(std::move(path)), data_(data), size_(size) {}

  std::string path_;
  const uint8_t* data_;
  size_t size_;
};

}  // namespace pcfarm
