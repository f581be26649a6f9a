#include "tasks/model/safetensors.h"

#include <algorithm>
#include <cstring>
#include <nlohmann/json.hpp>
#include <set>

#include "base/file.h"
#include "tasks/model/mapped_file.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// Element size of every safetensors dtype; 0 for an unknown name.
size_t SafetensorsDTypeSize(const std::string& d) {
  static const std::map<std::string, size_t> kSizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},
      {"U32", 4},  {"F32", 4}, {"F64", 8}, {"I64", 8},     {"U64", 8}};
  auto it = kSizes.find(d);
  return it == kSizes.end() ? 0 : it->second;
}

bool GetU64(const json& j, uint64_t* out) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0))
    return false;
  *out = j.get<uint64_t>();
  return true;
}

}  // namespace

Result<SafetensorsFile> SafetensorsFile::Open(const std::string& path) {
  PCFARM_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  PCFARM_ASSIGN_OR_RETURN(SafetensorsFile out, Parse(file->bytes(), path, file));
  out.mapped_ = file.get();
  return out;
}

Result<SafetensorsFile> SafetensorsFile::Parse(std::string_view bytes,
                                               std::string display_name,
                                               std::shared_ptr<const void> owner) {
  SafetensorsFile out;
  out.display_name_ = std::move(display_name);
  out.owner_ = std::move(owner);
  const std::string& f = out.display_name_;
  if (bytes.size() < 8)
    return InvalidArgument(f + ": " + std::to_string(bytes.size()) +
                           " bytes is too short for a safetensors file");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | uint8_t(bytes[i]);
  if (n > kSafetensorsMaxHeaderBytes)
    return InvalidArgument(f + ": header length " + std::to_string(n) +
                           " exceeds the 100 MB limit");
  if (n > bytes.size() - 8)
    return InvalidArgument(f + ": header length " + std::to_string(n) +
                           " runs past the end of the file (" +
                           std::to_string(bytes.size()) + " bytes)");
  std::string_view header = bytes.substr(8, n);
  if (header.empty() || header[0] != '{')
    return InvalidArgument(f + ": header does not start with '{'");
  json j;
  try {
    j = json::parse(header.begin(), header.end());
  } catch (const json::exception& e) {
    return InvalidArgument(f + ": header is not valid JSON: " + e.what());
  }
  if (!j.is_object()) return InvalidArgument(f + ": header is not a JSON object");

  out.buffer_ = bytes.substr(8 + n);
  const uint64_t buf_size = out.buffer_.size();

  for (auto& [name, v] : j.items()) {
    if (name == "__metadata__") {
      if (!v.is_object()) return InvalidArgument(f + ": __metadata__ is not an object");
      for (auto& [k, mv] : v.items()) {
        if (!mv.is_string())
          return InvalidArgument(f + ": __metadata__." + k + " is not a string");
        out.metadata_[k] = mv.get<std::string>();
      }
      continue;
    }
    std::string where = f + ": tensor " + name;
    if (!v.is_object()) return InvalidArgument(where + ": entry is not an object");
    SafetensorsEntry e;
    e.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string())
      return InvalidArgument(where + ": missing string field dtype");
    e.dtype_name = dt->get<std::string>();
    size_t esize = SafetensorsDTypeSize(e.dtype_name);
    if (esize == 0) return InvalidArgument(where + ": unknown dtype " + e.dtype_name);
    e.dtype = DTypeFromName(e.dtype_name);
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array())
      return InvalidArgument(where + ": missing array field shape");
    uint64_t numel = 1;
    for (auto& d : *sh) {
      uint64_t dim;
      if (!GetU64(d, &dim) || dim > uint64_t(INT64_MAX))
        return InvalidArgument(where + ": shape holds a non-integer or negative dimension");
      if (__builtin_mul_overflow(numel, dim, &numel))
        return InvalidArgument(where + ": shape product overflows");
      e.shape.push_back(int64_t(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 ||
        !GetU64((*off)[0], &e.begin) || !GetU64((*off)[1], &e.end))
      return InvalidArgument(where + ": data_offsets is not [begin, end]");
    uint64_t nbytes;
    if (__builtin_mul_overflow(numel, uint64_t(esize), &nbytes))
      return InvalidArgument(where + ": byte size overflows");
    if (e.begin > e.end || e.end > buf_size)
      return InvalidArgument(where + ": data_offsets [" + std::to_string(e.begin) +
                             ", " + std::to_string(e.end) + "] outside the " +
                             std::to_string(buf_size) + "-byte buffer");
    if (e.end - e.begin != nbytes)
      return InvalidArgument(where + ": data_offsets span " +
                             std::to_string(e.end - e.begin) + " bytes, but " +
                             e.dtype_name + " " + ShapeString(e.shape) + " needs " +
                             std::to_string(nbytes));
    out.entries_.push_back(std::move(e));
  }
  std::sort(out.entries_.begin(), out.entries_.end(), [](const auto& a, const auto& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  uint64_t pos = 0;
  for (const auto& e : out.entries_) {
    if (e.begin != pos)
      return InvalidArgument(f + ": tensor " + e.name + " starts at " +
                             std::to_string(e.begin) + ", expected " +
                             std::to_string(pos) +
                             (e.begin < pos ? " (overlaps the previous tensor)"
                                            : " (hole in the buffer)"));
    pos = e.end;
  }
  if (pos != buf_size)
    return InvalidArgument(f + ": tensors cover " + std::to_string(pos) + " of " +
                           std::to_string(buf_size) + " buffer bytes");
  for (size_t i = 0; i < out.entries_.size(); ++i) out.index_[out.entries_[i].name] = i;
  return out;
}

const SafetensorsEntry* SafetensorsFile::Find(std::string_view name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &entries_[it->second];
}

Result<HostTensor> SafetensorsFile::Tensor(std::string_view name) const {
  const SafetensorsEntry* e = Find(name);
  if (e == nullptr)
    return NotFound(display_name_ + ": no tensor " + std::string(name));
  if (!e->dtype)
    return InvalidArgument(display_name_ + ": tensor " + e->name + " has dtype " +
                           e->dtype_name + "; supported: F32, F16, BF16");
  HostTensor t;
  t.dtype = *e->dtype;
  t.shape = e->shape;
  t.data = buffer_.data() + e->begin;
  t.owner = owner_;
  t.mapped = mapped_;
  return t;
}

Result<std::string> SerializeSafetensors(
    const std::vector<NamedTensor>& tensors,
    const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  std::set<std::string> seen;
  uint64_t pos = 0;
  for (const auto& t : tensors) {
    if (t.name.empty() || t.name == "__metadata__" || !seen.insert(t.name).second)
      return InvalidArgument("safetensors writer: bad or duplicate tensor name '" +
                             t.name + "'");
    if (IsQuantized(t.tensor.dtype))
      return InvalidArgument("safetensors writer: tensor " + t.name + " is " +
                             DTypeName(t.tensor.dtype) +
                             ", which safetensors cannot hold (dequantize it first)");
    uint64_t nb = t.tensor.nbytes();
    header[t.name] = {{"dtype", DTypeName(t.tensor.dtype)},
                      {"shape", t.tensor.shape},
                      {"data_offsets", {pos, pos + nb}}};
    pos += nb;
  }
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out;
  out.reserve(8 + h.size() + pos);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(char((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& t : tensors)
    if (t.tensor.nbytes() > 0)
      out.append(static_cast<const char*>(t.tensor.data), t.tensor.nbytes());
  return out;
}

Status WriteSafetensors(const std::string& path,
                        const std::vector<NamedTensor>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  PCFARM_ASSIGN_OR_RETURN(std::string bytes, SerializeSafetensors(tensors, metadata));
  return WriteFileAtomic(path, bytes);
}

}  // namespace pcfarm
