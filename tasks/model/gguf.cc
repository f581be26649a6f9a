#include "tasks/model/gguf.h"

#include <cstring>

#include "tasks/backend/ggml_quants.h"

#include "tasks/model/mapped_file.h"

namespace pcfarm {
namespace {

constexpr uint64_t kMaxStringBytes = uint64_t(1) << 30;
constexpr int kMaxArrayDepth = 4;

// A bounds-checked little-endian reader over the file's bytes.
class Reader {
 public:
  Reader(std::string_view bytes, const std::string& file) : b_(bytes), file_(file) {}

  size_t pos() const { return pos_; }
  size_t left() const { return b_.size() - pos_; }

  Status Need(uint64_t n, const std::string& what) const {
    if (n > left())
      return InvalidArgument(file_ + ": " + what + " needs " + std::to_string(n) +
                             " bytes at offset " + std::to_string(pos_) + ", only " +
                             std::to_string(left()) + " left (truncated or lying file)");
    return Status::Ok();
  }
  template <typename T>
  Status Read(T* out, const std::string& what) {
    PCFARM_RETURN_IF_ERROR(Need(sizeof(T), what));
    std::memcpy(out, b_.data() + pos_, sizeof(T));
    pos_ += sizeof(T);
    return Status::Ok();
  }
  Status ReadString(std::string* out, const std::string& what) {
    uint64_t n = 0;
    PCFARM_RETURN_IF_ERROR(Read(&n, what + " length"));
    if (n > kMaxStringBytes) return InvalidArgument(file_ + ": " + what + " length " + std::to_string(n) + " is too large");
    PCFARM_RETURN_IF_ERROR(Need(n, what));
    out->assign(b_.data() + pos_, n);
    pos_ += n;
    return Status::Ok();
  }
  Status Skip(uint64_t n, const std::string& what) {
    PCFARM_RETURN_IF_ERROR(Need(n, what));
    pos_ += n;
    return Status::Ok();
  }

 private:
  std::string_view b_;
  const std::string& file_;
  size_t pos_ = 0;
};

// Size of a fixed-size scalar type; 0 for string/array/unknown.
size_t ScalarSize(GgufType t) {
  switch (t) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    default: return 0;
  }
}

bool IsInteger(GgufType t) {
  return ScalarSize(t) != 0 && t != GgufType::kF32 && t != GgufType::kF64;
}

// Reads one scalar of fixed-size type `t` into *i or *f.
Status ReadScalar(Reader& r, GgufType t, int64_t* i, double* f, const std::string& what) {
  switch (t) {
    case GgufType::kU8: { uint8_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kI8: { int8_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kBool: { uint8_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v != 0; break; }
    case GgufType::kU16: { uint16_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kI16: { int16_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kU32: { uint32_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kI32: { int32_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kU64: { uint64_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = int64_t(v); break; }
    case GgufType::kI64: { int64_t v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *i = v; break; }
    case GgufType::kF32: { float v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *f = v; break; }
    case GgufType::kF64: { double v = 0; PCFARM_RETURN_IF_ERROR(r.Read(&v, what)); *f = v; break; }
    default: assert(false);
  }
  return Status::Ok();
}

Status ReadValue(Reader& r, GgufType type, GgufValue* v, const std::string& what,
                 const std::string& file, int depth) {
  v->type = type;
  if (type == GgufType::kString) return r.ReadString(&v->s, what);
  if (ScalarSize(type) != 0) return ReadScalar(r, type, &v->i, &v->f, what);
  if (type != GgufType::kArray)
    return InvalidArgument(file + ": " + what + " has unknown value type " + std::to_string(uint32_t(type)));
  if (depth >= kMaxArrayDepth) return InvalidArgument(file + ": " + what + " nests arrays too deeply");
  uint32_t et = 0;
  PCFARM_RETURN_IF_ERROR(r.Read(&et, what + " element type"));
  v->elem_type = GgufType(et);
  PCFARM_RETURN_IF_ERROR(r.Read(&v->array_size, what + " count"));
  const uint64_t n = v->array_size;
  // Every element takes at least this many bytes: check before allocating.
  size_t min_size = ScalarSize(v->elem_type);
  if (v->elem_type == GgufType::kString) min_size = 8;
  else if (v->elem_type == GgufType::kArray) min_size = 12;
  else if (min_size == 0)
    return InvalidArgument(file + ": " + what + " has unknown element type " + std::to_string(et));
  if (n > r.left() / min_size)
    return InvalidArgument(file + ": " + what + " claims " + std::to_string(n) +
                           " elements, more than the " + std::to_string(r.left()) +
                           " bytes left can hold");
  if (v->elem_type == GgufType::kString) {
    v->strings.resize(n);
    for (uint64_t k = 0; k < n; ++k)
      PCFARM_RETURN_IF_ERROR(r.ReadString(&v->strings[k], what + "[" + std::to_string(k) + "]"));
  } else if (v->elem_type == GgufType::kArray) {
    for (uint64_t k = 0; k < n; ++k) {
      GgufValue inner;
      PCFARM_RETURN_IF_ERROR(ReadValue(r, GgufType::kArray, &inner,
                                       what + "[" + std::to_string(k) + "]", file, depth + 1));
    }
  } else if (IsInteger(v->elem_type)) {
    v->ints.resize(n);
    double unused;
    for (uint64_t k = 0; k < n; ++k)
      PCFARM_RETURN_IF_ERROR(ReadScalar(r, v->elem_type, &v->ints[k], &unused, what));
  } else {
    v->floats.resize(n);
    int64_t unused;
    for (uint64_t k = 0; k < n; ++k)
      PCFARM_RETURN_IF_ERROR(ReadScalar(r, v->elem_type, &unused, &v->floats[k], what));
  }
  return Status::Ok();
}

}  // namespace

uint64_t GgmlTypeBytes(uint32_t type, uint64_t numel) {
  struct Info { uint32_t type; uint64_t block; uint64_t bytes; };
  static const Info kInfo[] = {
      {0, 1, 4},     {1, 1, 2},     {2, 32, 18},   {3, 32, 20},   {6, 32, 22},
      {7, 32, 24},   {8, 32, 34},   {9, 32, 36},   {10, 256, 84}, {11, 256, 110},
      {12, 256, 144}, {13, 256, 176}, {14, 256, 210}, {15, 256, 292}, {24, 1, 1},
      {25, 1, 2},    {26, 1, 4},    {27, 1, 8},    {28, 1, 8},    {30, 1, 2}};
  for (const Info& i : kInfo) {
    if (i.type != type) continue;
    if (numel % i.block != 0) return 0;
    uint64_t out;
    if (__builtin_mul_overflow(numel / i.block, i.bytes, &out)) return 0;
    return out;
  }
  return 0;
}

Result<std::vector<float>> DequantizeGgml(uint32_t type, const uint8_t* data, uint64_t numel) {
  if (!IsGgmlQuantType(type))
    return InvalidArgument("dequantize: ggml type " + std::to_string(type) +
                           " is not Q8_0, Q4_0, Q4_K or Q6_K");
  const uint64_t bv = uint64_t(GgmlBlockValues(type));
  if (numel % bv != 0)
    return InvalidArgument("dequantize: " + std::to_string(numel) + " elements is not a multiple of " +
                           std::to_string(bv));
  std::vector<float> out(numel);
  DequantizeBlocks(type, data, int64_t(numel / bv), out.data());
  return out;
}

Result<GgufFile> GgufFile::Open(const std::string& path) {
  PCFARM_ASSIGN_OR_RETURN(auto file, MappedFile::Open(path));
  PCFARM_ASSIGN_OR_RETURN(GgufFile g, Parse(file->bytes(), path, file));
  g.mapped_ = file.get();
  return g;
}

Result<GgufFile> GgufFile::Parse(std::string_view bytes, std::string display_name,
                                 std::shared_ptr<const void> owner) {
  GgufFile g;
  g.display_name_ = std::move(display_name);
  g.owner_ = std::move(owner);
  const std::string& f = g.display_name_;
  Reader r(bytes, f);
  char magic[4] = {};
  PCFARM_RETURN_IF_ERROR(r.Read(&magic, "magic"));
  if (std::memcmp(magic, "GGUF", 4) != 0) return InvalidArgument(f + ": not a GGUF file (bad magic)");
  PCFARM_RETURN_IF_ERROR(r.Read(&g.version_, "version"));
  if (g.version_ != 3 && g.version_ != 2)
    return InvalidArgument(f + ": GGUF version " + std::to_string(g.version_) + " is not supported (3)");
  uint64_t n_tensors = 0, n_kv = 0;
  PCFARM_RETURN_IF_ERROR(r.Read(&n_tensors, "tensor_count"));
  PCFARM_RETURN_IF_ERROR(r.Read(&n_kv, "kv_count"));
  // A KV pair takes at least 8 (key length) + 4 (type) + 1 bytes; a tensor
  // info at least 8 + 4 + 4 + 8.
  if (n_kv > r.left() / 13) return InvalidArgument(f + ": kv_count " + std::to_string(n_kv) + " exceeds the file size");
  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key;
    PCFARM_RETURN_IF_ERROR(r.ReadString(&key, "key " + std::to_string(k)));
    uint32_t type = 0;
    PCFARM_RETURN_IF_ERROR(r.Read(&type, "type of " + key));
    GgufValue v;
    PCFARM_RETURN_IF_ERROR(ReadValue(r, GgufType(type), &v, "key " + key, f, 0));
    if (!g.kv_.emplace(key, std::move(v)).second) return InvalidArgument(f + ": duplicate key " + key);
  }
  if (const GgufValue* a = g.Find("general.alignment")) {
    if (!IsInteger(a->type) || a->i <= 0 || (a->i & (a->i - 1)) != 0 || a->i > (1 << 20))
      return InvalidArgument(f + ": general.alignment is not a power of two");
    g.alignment_ = uint64_t(a->i);
  }
  if (n_tensors > r.left() / 24) return InvalidArgument(f + ": tensor_count " + std::to_string(n_tensors) + " exceeds the file size");
  for (uint64_t k = 0; k < n_tensors; ++k) {
    GgufTensorInfo t;
    PCFARM_RETURN_IF_ERROR(r.ReadString(&t.name, "tensor " + std::to_string(k) + " name"));
    const std::string what = "tensor " + t.name;
    uint32_t n_dims = 0;
    PCFARM_RETURN_IF_ERROR(r.Read(&n_dims, what + " n_dims"));
    if (n_dims == 0 || n_dims > 4)
      return InvalidArgument(f + ": " + what + " has " + std::to_string(n_dims) + " dims (1..4)");
    uint64_t numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t dim = 0;
      PCFARM_RETURN_IF_ERROR(r.Read(&dim, what + " dims"));
      if (dim > uint64_t(INT64_MAX) || __builtin_mul_overflow(numel, dim, &numel))
        return InvalidArgument(f + ": " + what + " dims overflow");
      t.dims.push_back(dim);
    }
    PCFARM_RETURN_IF_ERROR(r.Read(&t.type, what + " type"));
    PCFARM_RETURN_IF_ERROR(r.Read(&t.offset, what + " offset"));
    t.nbytes = GgmlTypeBytes(t.type, numel);
    if (t.nbytes == 0 && numel != 0)
      return InvalidArgument(f + ": " + what + " has ggml type " + std::to_string(t.type) +
                             " of unknown size, or dims that do not fill whole blocks");
    if (t.offset % g.alignment_ != 0)
      return InvalidArgument(f + ": " + what + " offset " + std::to_string(t.offset) +
                             " is not a multiple of the alignment " + std::to_string(g.alignment_));
    if (!g.tensor_index_.emplace(t.name, g.tensors_.size()).second)
      return InvalidArgument(f + ": duplicate tensor " + t.name);
    g.tensors_.push_back(std::move(t));
  }
  uint64_t data_start = (r.pos() + g.alignment_ - 1) / g.alignment_ * g.alignment_;
  if (data_start > bytes.size()) data_start = bytes.size();  // only valid with no tensor data
  g.data_ = bytes.substr(data_start);
  for (const GgufTensorInfo& t : g.tensors_) {
    if (t.offset > g.data_.size() || t.nbytes > g.data_.size() - t.offset)
      return InvalidArgument(f + ": tensor " + t.name + " [" + std::to_string(t.offset) + ", +" +
                             std::to_string(t.nbytes) + ") runs past the " +
                             std::to_string(g.data_.size()) + "-byte data section");
  }
  return g;
}

const GgufValue* GgufFile::Find(std::string_view key) const {
  auto it = kv_.find(key);
  return it == kv_.end() ? nullptr : &it->second;
}

Result<int64_t> GgufFile::GetInt(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(display_name_ + ": missing key " + std::string(key));
  if (!IsInteger(v->type)) return InvalidArgument(display_name_ + ": key " + std::string(key) + " is not an integer");
  return v->i;
}

Result<double> GgufFile::GetFloat(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(display_name_ + ": missing key " + std::string(key));
  if (v->type == GgufType::kF32 || v->type == GgufType::kF64) return v->f;
  if (IsInteger(v->type)) return double(v->i);
  return InvalidArgument(display_name_ + ": key " + std::string(key) + " is not a number");
}

Result<std::string> GgufFile::GetString(std::string_view key) const {
  const GgufValue* v = Find(key);
  if (v == nullptr) return NotFound(display_name_ + ": missing key " + std::string(key));
  if (v->type != GgufType::kString) return InvalidArgument(display_name_ + ": key " + std::string(key) + " is not a string");
  return v->s;
}

const GgufTensorInfo* GgufFile::FindTensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

Result<HostTensor> GgufFile::Tensor(std::string_view name) const {
  const GgufTensorInfo* t = FindTensor(name);
  if (t == nullptr) return NotFound(display_name_ + ": no tensor " + std::string(name));
  HostTensor out;
  for (auto it = t->dims.rbegin(); it != t->dims.rend(); ++it) out.shape.push_back(int64_t(*it));
  const uint8_t* p = reinterpret_cast<const uint8_t*>(data_.data()) + t->offset;
  switch (t->type) {
    case kGgmlF32: out.dtype = DType::kF32; break;
    case kGgmlF16: out.dtype = DType::kF16; break;
    case kGgmlBF16: out.dtype = DType::kBF16; break;
    case kGgmlQ8_0: out.dtype = DType::kQ8_0; break;
    case kGgmlQ4_0: out.dtype = DType::kQ4_0; break;
    case kGgmlQ4_K: out.dtype = DType::kQ4_K; break;
    case kGgmlQ6_K: out.dtype = DType::kQ6_K; break;
    default:
      return InvalidArgument(display_name_ + ": tensor " + t->name + " has ggml type " +
                             std::to_string(t->type) +
                             "; supported: F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K");
  }
  // Parse checked that the dims fill whole blocks and the bytes are there.
  out.data = p;
  out.owner = owner_;
  out.mapped = mapped_;
  return out;
}

}  // namespace pcfarm
