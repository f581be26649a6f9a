// Argument checking shared by every backend: the public Backend methods check
// what the contract in backend.h states, then call the backend's Impl.
#include "tasks/backend/backend.h"

#include <cassert>
#include <cmath>
#include <limits>
#include <string>

#include "tasks/backend/ggml_quants.h"

namespace pcfarm {

bool IsQuantized(StorageType t) {
  return t != StorageType::kF32 && t != StorageType::kF16 && t != StorageType::kBF16;
}

uint32_t StorageGgmlType(StorageType t) {
  switch (t) {
    case StorageType::kF32: return 0;
    case StorageType::kF16: return 1;
    case StorageType::kBF16: return 30;
    case StorageType::kQ8_0: return kGgmlTypeQ8_0;
    case StorageType::kQ4_0: return kGgmlTypeQ4_0;
    case StorageType::kQ4_K: return kGgmlTypeQ4_K;
    case StorageType::kQ6_K: return kGgmlTypeQ6_K;
  }
  return 0;
}

int64_t StorageBlockValues(StorageType t) {
  return IsQuantized(t) ? GgmlBlockValues(StorageGgmlType(t)) : 1;
}

uint64_t StorageBytes(StorageType t, int64_t numel) {
  if (!IsQuantized(t)) return static_cast<uint64_t>(numel) * StorageTypeSize(t);
  const uint32_t g = StorageGgmlType(t);
  assert(numel % GgmlBlockValues(g) == 0);
  return static_cast<uint64_t>(numel / GgmlBlockValues(g)) * GgmlBlockBytes(g);
}

size_t StorageTypeSize(StorageType t) {
  assert(!IsQuantized(t));
  return t == StorageType::kF32 ? 4 : 2;
}

const char* StorageTypeName(StorageType t) {
  switch (t) {
    case StorageType::kF32: return "F32";
    case StorageType::kF16: return "F16";
    case StorageType::kBF16: return "BF16";
    case StorageType::kQ8_0: return "Q8_0";
    case StorageType::kQ4_0: return "Q4_0";
    case StorageType::kQ4_K: return "Q4_K";
    case StorageType::kQ6_K: return "Q6_K";
  }
  return "?";
}

Shape::Shape(std::initializer_list<int64_t> dims) {
  assert(dims.size() >= 1 && dims.size() <= static_cast<size_t>(kMaxRank));
  for (int64_t d : dims) dims_[rank_++] = d;
}

int64_t Shape::operator[](int i) const {
  assert(i >= 0 && i < rank_);
  return dims_[i];
}

int64_t Shape::numel() const {
  int64_t n = 1;
  for (int i = 0; i < rank_; ++i) n *= dims_[i];
  return n;
}

std::string Shape::ToString() const {
  std::string s = "[";
  for (int i = 0; i < rank_; ++i) {
    if (i) s += ", ";
    s += std::to_string(dims_[i]);
  }
  return s + "]";
}

bool Shape::operator==(const Shape& o) const {
  if (rank_ != o.rank_) return false;
  for (int i = 0; i < rank_; ++i)
    if (dims_[i] != o.dims_[i]) return false;
  return true;
}

Tensor::Tensor(const Backend* owner, std::shared_ptr<TensorBuffer> buffer,
               Shape shape, StorageType type, bool read_only)
    : owner_(owner),
      buffer_(std::move(buffer)),
      shape_(shape),
      type_(type),
      read_only_(read_only) {}

Tensor Tensor::Reshaped(Shape shape) const {
  assert(valid() && shape.numel() == numel());
  Tensor t = *this;
  t.shape_ = shape;
  return t;
}

namespace {

std::string Desc(const Tensor& t) {
  return t.shape().ToString() + " " + StorageTypeName(t.type());
}

// Shared checks; each returns OK or an InvalidArgument naming op and argument.
class Check {
 public:
  Check(const Backend* b, const char* op) : backend_(b), op_(op) {}

  Status Fail(const std::string& what) const {
    return InvalidArgument(std::string(op_) + ": " + what);
  }
  // Valid, owned by this backend.
  Status Owned(const Tensor& t, const char* arg) const {
    if (!t.valid()) return Fail(std::string(arg) + " is an empty tensor");
    if (t.backend() != backend_)
      return Fail(std::string(arg) + " belongs to another backend");
    return Status::Ok();
  }
  Status Unquantized(const Tensor& t, const char* arg) const {
    if (IsQuantized(t.type()))
      return Fail(std::string(arg) + " may not be quantized, is " + Desc(t));
    return Status::Ok();
  }
  // For outputs: not a read-only view of host memory.
  Status Writable(const Tensor& t, const char* arg) const {
    if (t.read_only())
      return Fail(std::string(arg) + " " + Desc(t) +
                  " is a read-only view of host memory (WrapHostBytes)");
    return Status::Ok();
  }
  Status F32(const Tensor& t, const char* arg) const {
    PCFARM_RETURN_IF_ERROR(Owned(t, arg));
    if (t.type() != StorageType::kF32)
      return Fail(std::string(arg) + " must be F32, is " + Desc(t));
    return Status::Ok();
  }
  Status Rank(const Tensor& t, const char* arg, int rank) const {
    if (t.shape().rank() != rank)
      return Fail(std::string(arg) + " must have " + std::to_string(rank) +
                  " dimensions, is " + Desc(t));
    return Status::Ok();
  }
  Status SameShape(const Tensor& a, const char* an, const Tensor& b,
                   const char* bn) const {
    if (!(a.shape() == b.shape()))
      return Fail(std::string(an) + " " + Desc(a) + " and " + bn + " " + Desc(b) +
                  " must have the same shape");
    return Status::Ok();
  }
  Status SameNumel(const Tensor& a, const char* an, const Tensor& b,
                   const char* bn) const {
    if (a.numel() != b.numel())
      return Fail(std::string(an) + " " + Desc(a) + " and " + bn + " " + Desc(b) +
                  " must have as many elements");
    return Status::Ok();
  }
  Status Dim(const Tensor& t, const char* arg, int i, int64_t want,
             const char* why) const {
    if (t.shape()[i] != want)
      return Fail(std::string(arg) + " " + Desc(t) + ": dimension " +
                  std::to_string(i) + " must be " + std::to_string(want) + " (" +
                  why + ")");
    return Status::Ok();
  }
  Status Count(size_t have, const char* arg, int64_t want) const {
    if (static_cast<int64_t>(have) != want)
      return Fail(std::string(arg) + " has " + std::to_string(have) +
                  " entries, needs " + std::to_string(want));
    return Status::Ok();
  }
  // Every ids[i] in [0, limit).
  Status Indices(std::span<const int32_t> ids, const char* arg, int64_t limit) const {
    for (size_t i = 0; i < ids.size(); ++i)
      if (ids[i] < 0 || ids[i] >= limit)
        return Fail(std::string(arg) + "[" + std::to_string(i) + "] = " +
                    std::to_string(ids[i]) + " is outside [0, " +
                    std::to_string(limit) + ")");
    return Status::Ok();
  }

 private:
  const Backend* backend_;
  const char* op_;
};

}  // namespace

namespace {
// The checks Alloc and WrapHostBytes share.
Status CheckNewTensor(const Check& c, const Backend& b, const Shape& shape,
                      StorageType type) {
  if (shape.rank() < 1) return c.Fail("shape has no dimensions");
  const int64_t max_elems =
      std::numeric_limits<int64_t>::max() / 8;  // bytes fit in int64 with room
  int64_t n = 1;
  for (int i = 0; i < shape.rank(); ++i) {
    if (shape[i] < 1) return c.Fail("shape " + shape.ToString() + " has a dimension < 1");
    if (n > max_elems / shape[i])
      return c.Fail("shape " + shape.ToString() + " is too large");
    n *= shape[i];
  }
  if (!b.SupportsStorage(type))
    return c.Fail("the " + b.name() + " backend does not hold " + StorageTypeName(type) +
                  " tensors");
  const int64_t block = StorageBlockValues(type);
  if (shape[shape.rank() - 1] % block != 0)
    return c.Fail("shape " + shape.ToString() + " " + StorageTypeName(type) +
                  ": the last dimension must be a multiple of the block size " +
                  std::to_string(block));
  return Status::Ok();
}
}  // namespace

Result<Tensor> Backend::WrapHostBytes(Shape shape, StorageType type, const void* data,
                                      std::shared_ptr<const void> owner) {
  Check c(this, "WrapHostBytes");
  if (!CanWrapHostBytes())
    return FailedPrecondition("WrapHostBytes: the " + name() +
                              " backend cannot use host memory as a tensor");
  PCFARM_RETURN_IF_ERROR(CheckNewTensor(c, *this, shape, type));
  if (data == nullptr) return c.Fail("data is null");
  const uintptr_t align = type == StorageType::kF32 ? 4 : 2;
  if (reinterpret_cast<uintptr_t>(data) % align != 0)
    return c.Fail(std::string(StorageTypeName(type)) + " data is not aligned to " +
                  std::to_string(align) + " bytes");
  return WrapHostBytesImpl(shape, type, data, std::move(owner));
}

Result<Tensor> Backend::WrapHostBytesImpl(Shape, StorageType, const void*,
                                          std::shared_ptr<const void>) {
  return FailedPrecondition("WrapHostBytes: not supported by the " + name() + " backend");
}

Result<Tensor> Backend::Alloc(Shape shape, StorageType type) {
  Check c(this, "Alloc");
  PCFARM_RETURN_IF_ERROR(CheckNewTensor(c, *this, shape, type));
  return AllocImpl(shape, type);
}

Status Backend::Upload(const Tensor& t, std::span<const float> src) {
  Check c(this, "Upload");
  PCFARM_RETURN_IF_ERROR(c.Owned(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Writable(t, "t"));
  if (IsQuantized(t.type()))
    return c.Fail("t is " + Desc(t) + "; quantized tensors take UploadBytes");
  PCFARM_RETURN_IF_ERROR(c.Count(src.size(), "src", t.numel()));
  return UploadImpl(t, src);
}

Status Backend::Download(const Tensor& t, std::span<float> dst) {
  Check c(this, "Download");
  PCFARM_RETURN_IF_ERROR(c.Owned(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Count(dst.size(), "dst", t.numel()));
  return DownloadImpl(t, dst);
}

Status Backend::UploadBytes(const Tensor& t, std::span<const std::byte> src) {
  Check c(this, "UploadBytes");
  PCFARM_RETURN_IF_ERROR(c.Owned(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Writable(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Count(src.size(), "src bytes", static_cast<int64_t>(t.bytes())));
  return UploadBytesImpl(t, src);
}

Status Backend::DownloadBytes(const Tensor& t, std::span<std::byte> dst) {
  Check c(this, "DownloadBytes");
  PCFARM_RETURN_IF_ERROR(c.Owned(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Count(dst.size(), "dst bytes", static_cast<int64_t>(t.bytes())));
  return DownloadBytesImpl(t, dst);
}

Status Backend::Fill(const Tensor& t, float value) {
  Check c(this, "Fill");
  PCFARM_RETURN_IF_ERROR(c.F32(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Writable(t, "t"));
  return FillImpl(t, value);
}

Status Backend::Copy(const Tensor& dst, const Tensor& src) {
  Check c(this, "Copy");
  PCFARM_RETURN_IF_ERROR(c.Owned(dst, "dst"));
  PCFARM_RETURN_IF_ERROR(c.Owned(src, "src"));
  PCFARM_RETURN_IF_ERROR(c.Unquantized(dst, "dst"));
  PCFARM_RETURN_IF_ERROR(c.Writable(dst, "dst"));
  PCFARM_RETURN_IF_ERROR(c.SameNumel(dst, "dst", src, "src"));
  return CopyImpl(dst, src);
}

Status Backend::Add(const Tensor& out, const Tensor& a, const Tensor& b) {
  Check c(this, "Add");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.Writable(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.F32(a, "a"));
  PCFARM_RETURN_IF_ERROR(c.F32(b, "b"));
  PCFARM_RETURN_IF_ERROR(c.SameNumel(out, "out", a, "a"));
  PCFARM_RETURN_IF_ERROR(c.SameNumel(out, "out", b, "b"));
  return AddImpl(out, a, b);
}

Status Backend::Axpy(const Tensor& y, float alpha, const Tensor& x) {
  Check c(this, "Axpy");
  PCFARM_RETURN_IF_ERROR(c.F32(y, "y"));
  PCFARM_RETURN_IF_ERROR(c.Writable(y, "y"));
  PCFARM_RETURN_IF_ERROR(c.F32(x, "x"));
  PCFARM_RETURN_IF_ERROR(c.SameNumel(y, "y", x, "x"));
  return AxpyImpl(y, alpha, x);
}

Status Backend::Scale(const Tensor& t, float s) {
  Check c(this, "Scale");
  PCFARM_RETURN_IF_ERROR(c.F32(t, "t"));
  PCFARM_RETURN_IF_ERROR(c.Writable(t, "t"));
  return ScaleImpl(t, s);
}

Status Backend::Gemm(const Tensor& cm, const Tensor& a, bool trans_a,
                     const Tensor& b, bool trans_b, float alpha, float beta) {
  PCFARM_RETURN_IF_ERROR(CheckGemm(cm, a, trans_a, b, trans_b));
  return GemmImpl(cm, a, trans_a, b, trans_b, alpha, beta);
}

Status Backend::CheckGemm(const Tensor& cm, const Tensor& a, bool trans_a, const Tensor& b,
                          bool trans_b) {
  Check c(this, "Gemm");
  PCFARM_RETURN_IF_ERROR(c.F32(cm, "c"));
  PCFARM_RETURN_IF_ERROR(c.Writable(cm, "c"));
  PCFARM_RETURN_IF_ERROR(c.Owned(a, "a"));
  PCFARM_RETURN_IF_ERROR(c.Unquantized(a, "a"));
  PCFARM_RETURN_IF_ERROR(c.Owned(b, "b"));
  PCFARM_RETURN_IF_ERROR(c.Rank(cm, "c", 2));
  PCFARM_RETURN_IF_ERROR(c.Rank(a, "a", 2));
  PCFARM_RETURN_IF_ERROR(c.Rank(b, "b", 2));
  const int64_t m = trans_a ? a.shape()[1] : a.shape()[0];
  const int64_t ka = trans_a ? a.shape()[0] : a.shape()[1];
  const int64_t kb = trans_b ? b.shape()[1] : b.shape()[0];
  const int64_t n = trans_b ? b.shape()[0] : b.shape()[1];
  if (ka != kb)
    return c.Fail("inner dimensions differ: op(a) has " + std::to_string(ka) +
                  " columns, op(b) has " + std::to_string(kb) + " rows (a " +
                  Desc(a) + (trans_a ? " transposed" : "") + ", b " + Desc(b) +
                  (trans_b ? " transposed" : "") + ")");
  if (cm.shape()[0] != m || cm.shape()[1] != n)
    return c.Fail("c is " + Desc(cm) + ", op(a)·op(b) is [" + std::to_string(m) +
                  ", " + std::to_string(n) + "]");
  if (cm.buffer() == a.buffer() || cm.buffer() == b.buffer())
    return c.Fail("c aliases an input");
  return Status::Ok();
}

Status Backend::MatMulForward(const Tensor& out, const Tensor& inp,
                              const Tensor& weight) {
  return Gemm(out, inp, false, weight, true, 1.0f, 0.0f)
      .WithContext("MatMulForward(out, inp, weight)");
}

Status Backend::MatMulForwardShared(std::span<const Tensor> outs, const Tensor& inp,
                                    std::span<const Tensor> weights) {
  Check c(this, "MatMulForwardShared");
  if (outs.size() != weights.size())
    return c.Fail(std::to_string(outs.size()) + " outputs for " +
                  std::to_string(weights.size()) + " weights");
  if (weights.empty() || weights.size() > kMaxSharedWeights)
    return c.Fail("takes 1 to " + std::to_string(kMaxSharedWeights) + " weights, not " +
                  std::to_string(weights.size()));
  for (size_t i = 0; i < outs.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      if (outs[i].buffer() == outs[j].buffer())
        return c.Fail("outs " + std::to_string(j) + " and " + std::to_string(i) +
                      " are one buffer");
    // Gemm checks out i against its own weight; the products may run at
    // once, so it may be none of the others either.
    for (size_t j = 0; j < weights.size(); ++j)
      if (outs[i].buffer() == weights[j].buffer())
        return c.Fail("out " + std::to_string(i) + " aliases weight " + std::to_string(j));
    // Gemm's checks, without its work.
    PCFARM_RETURN_IF_ERROR(CheckGemm(outs[i], inp, false, weights[i], true)
                               .WithContext("MatMulForwardShared(weight " +
                                            std::to_string(i) + ")"));
  }
  return MatMulSharedImpl(outs, inp, weights);
}

Status Backend::MatMulSharedImpl(std::span<const Tensor> outs, const Tensor& inp,
                                 std::span<const Tensor> weights) {
  for (size_t i = 0; i < outs.size(); ++i)
    PCFARM_RETURN_IF_ERROR(GemmImpl(outs[i], inp, false, weights[i], true, 1.0f, 0.0f));
  return Status::Ok();
}

Status Backend::MatMulBackward(const Tensor* dinp, const Tensor* dweight,
                               const Tensor& dout, const Tensor& inp,
                               const Tensor& weight) {
  Check c(this, "MatMulBackward");
  PCFARM_RETURN_IF_ERROR(c.Owned(inp, "inp"));
  PCFARM_RETURN_IF_ERROR(c.Owned(weight, "weight"));
  if (dinp != nullptr)
    PCFARM_RETURN_IF_ERROR(Gemm(*dinp, dout, false, weight, false, 1.0f, 1.0f)
                               .WithContext("MatMulBackward(dinp = dout·weight)"));
  if (dweight != nullptr)
    PCFARM_RETURN_IF_ERROR(Gemm(*dweight, dout, true, inp, false, 1.0f, 1.0f)
                               .WithContext("MatMulBackward(dweight = doutᵀ·inp)"));
  return Status::Ok();
}

Status Backend::EmbeddingForward(const Tensor& out, const Tensor& table,
                                 std::span<const int32_t> ids) {
  Check c(this, "EmbeddingForward");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.Owned(table, "table"));
  PCFARM_RETURN_IF_ERROR(c.Rank(out, "out", 2));
  PCFARM_RETURN_IF_ERROR(c.Rank(table, "table", 2));
  PCFARM_RETURN_IF_ERROR(c.Dim(out, "out", 1, table.shape()[1], "table's row width"));
  PCFARM_RETURN_IF_ERROR(c.Count(ids.size(), "ids", out.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Indices(ids, "ids", table.shape()[0]));
  return EmbeddingForwardImpl(out, table, ids);
}

Status Backend::EmbeddingBackward(const Tensor& dtable, const Tensor& dout,
                                  std::span<const int32_t> ids) {
  Check c(this, "EmbeddingBackward");
  PCFARM_RETURN_IF_ERROR(c.F32(dtable, "dtable"));
  PCFARM_RETURN_IF_ERROR(c.F32(dout, "dout"));
  PCFARM_RETURN_IF_ERROR(c.Rank(dout, "dout", 2));
  PCFARM_RETURN_IF_ERROR(c.Rank(dtable, "dtable", 2));
  PCFARM_RETURN_IF_ERROR(c.Dim(dout, "dout", 1, dtable.shape()[1], "dtable's row width"));
  PCFARM_RETURN_IF_ERROR(c.Count(ids.size(), "ids", dout.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Indices(ids, "ids", dtable.shape()[0]));
  return EmbeddingBackwardImpl(dtable, dout, ids);
}

namespace {
Status CheckNormArgs(const Check& c, const Tensor& x, const char* xn,
                     const Tensor& weight) {
  PCFARM_RETURN_IF_ERROR(c.Owned(weight, "weight"));
  PCFARM_RETURN_IF_ERROR(c.Unquantized(weight, "weight"));
  const int64_t cols = x.shape()[x.shape().rank() - 1];
  if (weight.numel() != cols)
    return c.Fail("weight " + Desc(weight) + " must have " + std::to_string(cols) +
                  " elements, the last dimension of " + xn);
  return Status::Ok();
}
}  // namespace

Status Backend::RmsNormForward(const Tensor& out, const Tensor& inp,
                               const Tensor& weight, float eps) {
  Check c(this, "RmsNormForward");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.F32(inp, "inp"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, "out", inp, "inp"));
  PCFARM_RETURN_IF_ERROR(CheckNormArgs(c, inp, "inp", weight));
  if (!(eps >= 0)) return c.Fail("eps must be >= 0");
  return RmsNormForwardImpl(out, inp, weight, eps);
}

Status Backend::RmsNormBackward(const Tensor& dinp, const Tensor* dweight,
                                const Tensor& dout, const Tensor& inp,
                                const Tensor& weight, float eps) {
  Check c(this, "RmsNormBackward");
  PCFARM_RETURN_IF_ERROR(c.F32(dinp, "dinp"));
  PCFARM_RETURN_IF_ERROR(c.F32(dout, "dout"));
  PCFARM_RETURN_IF_ERROR(c.F32(inp, "inp"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dinp, "dinp", inp, "inp"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dout, "dout", inp, "inp"));
  PCFARM_RETURN_IF_ERROR(CheckNormArgs(c, inp, "inp", weight));
  if (dweight != nullptr) {
    PCFARM_RETURN_IF_ERROR(c.F32(*dweight, "dweight"));
    PCFARM_RETURN_IF_ERROR(c.SameNumel(*dweight, "dweight", weight, "weight"));
  }
  if (!(eps >= 0)) return c.Fail("eps must be >= 0");
  return RmsNormBackwardImpl(dinp, dweight, dout, inp, weight, eps);
}

namespace {
Status CheckRopeArgs(const Check& c, const Tensor& out, const char* on,
                     const Tensor& inp, const char* in, const Tensor& inv_freq,
                     std::span<const int32_t> positions) {
  PCFARM_RETURN_IF_ERROR(c.F32(out, on));
  PCFARM_RETURN_IF_ERROR(c.F32(inp, in));
  PCFARM_RETURN_IF_ERROR(c.F32(inv_freq, "inv_freq"));
  PCFARM_RETURN_IF_ERROR(c.Rank(inp, in, 3));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, on, inp, in));
  const int64_t d = inp.shape()[2];
  if (d % 2 != 0) return c.Fail(std::string(in) + " " + Desc(inp) + ": head_dim must be even");
  if (inv_freq.numel() != d / 2)
    return c.Fail("inv_freq " + Desc(inv_freq) + " must have head_dim/2 = " +
                  std::to_string(d / 2) + " elements");
  PCFARM_RETURN_IF_ERROR(c.Count(positions.size(), "positions", inp.shape()[0]));
  for (size_t i = 0; i < positions.size(); ++i)
    if (positions[i] < 0)
      return c.Fail("positions[" + std::to_string(i) + "] is negative");
  return Status::Ok();
}
}  // namespace

Status Backend::RopeForward(const Tensor& out, const Tensor& inp,
                            const Tensor& inv_freq,
                            std::span<const int32_t> positions) {
  Check c(this, "RopeForward");
  PCFARM_RETURN_IF_ERROR(CheckRopeArgs(c, out, "out", inp, "inp", inv_freq, positions));
  return RopeImpl(out, inp, inv_freq, positions, /*backward=*/false);
}

Status Backend::RopeBackward(const Tensor& dinp, const Tensor& dout,
                             const Tensor& inv_freq,
                             std::span<const int32_t> positions) {
  Check c(this, "RopeBackward");
  PCFARM_RETURN_IF_ERROR(CheckRopeArgs(c, dinp, "dinp", dout, "dout", inv_freq, positions));
  if (dinp.buffer() == dout.buffer()) return c.Fail("dinp aliases dout");
  return RopeImpl(dinp, dout, inv_freq, positions, /*backward=*/true);
}

namespace {
Status CheckAttentionArgs(const Check& c, const Tensor& q, const Tensor& k,
                          const Tensor& v, std::span<const int32_t> seq_starts) {
  PCFARM_RETURN_IF_ERROR(c.F32(q, "q"));
  PCFARM_RETURN_IF_ERROR(c.F32(k, "k"));
  PCFARM_RETURN_IF_ERROR(c.F32(v, "v"));
  PCFARM_RETURN_IF_ERROR(c.Rank(q, "q", 3));
  PCFARM_RETURN_IF_ERROR(c.Rank(k, "k", 3));
  PCFARM_RETURN_IF_ERROR(c.SameShape(k, "k", v, "v"));
  const int64_t n = q.shape()[0];
  PCFARM_RETURN_IF_ERROR(c.Dim(k, "k", 0, n, "tokens of q"));
  PCFARM_RETURN_IF_ERROR(c.Dim(k, "k", 2, q.shape()[2], "head_dim of q"));
  if (q.shape()[1] % k.shape()[1] != 0)
    return c.Fail("q's " + std::to_string(q.shape()[1]) +
                  " heads are not a multiple of k's " + std::to_string(k.shape()[1]));
  if (seq_starts.size() < 2) return c.Fail("seq_starts needs at least 2 entries");
  if (seq_starts.front() != 0) return c.Fail("seq_starts[0] must be 0");
  if (seq_starts.back() != n)
    return c.Fail("seq_starts ends at " + std::to_string(seq_starts.back()) +
                  ", q has " + std::to_string(n) + " rows");
  for (size_t i = 1; i < seq_starts.size(); ++i)
    if (seq_starts[i] < seq_starts[i - 1])
      return c.Fail("seq_starts[" + std::to_string(i) + "] decreases");
  return Status::Ok();
}

Status CheckLse(const Check& c, const Tensor& lse, const Tensor& q) {
  PCFARM_RETURN_IF_ERROR(c.F32(lse, "lse"));
  PCFARM_RETURN_IF_ERROR(c.Rank(lse, "lse", 2));
  PCFARM_RETURN_IF_ERROR(c.Dim(lse, "lse", 0, q.shape()[0], "tokens of q"));
  PCFARM_RETURN_IF_ERROR(c.Dim(lse, "lse", 1, q.shape()[1], "heads of q"));
  return Status::Ok();
}
}  // namespace

Status Backend::AttentionForward(const Tensor& out, const Tensor* lse,
                                 const Tensor& q, const Tensor& k, const Tensor& v,
                                 std::span<const int32_t> seq_starts) {
  Check c(this, "AttentionForward");
  PCFARM_RETURN_IF_ERROR(CheckAttentionArgs(c, q, k, v, seq_starts));
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, "out", q, "q"));
  if (lse != nullptr) PCFARM_RETURN_IF_ERROR(CheckLse(c, *lse, q));
  return AttentionForwardImpl(out, lse, q, k, v, seq_starts);
}

Status Backend::AttentionBackward(const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv, const Tensor& dout,
                                  const Tensor& q, const Tensor& k, const Tensor& v,
                                  const Tensor& out, const Tensor& lse,
                                  std::span<const int32_t> seq_starts) {
  Check c(this, "AttentionBackward");
  PCFARM_RETURN_IF_ERROR(CheckAttentionArgs(c, q, k, v, seq_starts));
  PCFARM_RETURN_IF_ERROR(c.F32(dq, "dq"));
  PCFARM_RETURN_IF_ERROR(c.F32(dk, "dk"));
  PCFARM_RETURN_IF_ERROR(c.F32(dv, "dv"));
  PCFARM_RETURN_IF_ERROR(c.F32(dout, "dout"));
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dq, "dq", q, "q"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dout, "dout", q, "q"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, "out", q, "q"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dk, "dk", k, "k"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dv, "dv", v, "v"));
  PCFARM_RETURN_IF_ERROR(CheckLse(c, lse, q));
  return AttentionBackwardImpl(dq, dk, dv, dout, q, k, v, out, lse, seq_starts);
}

namespace {
Status CheckCacheRows(const Check& c, const Tensor& cache, const char* cn,
                      std::span<const int32_t> slots,
                      std::span<const int32_t> positions, int64_t rows) {
  PCFARM_RETURN_IF_ERROR(c.F32(cache, cn));
  PCFARM_RETURN_IF_ERROR(c.Rank(cache, cn, 4));
  PCFARM_RETURN_IF_ERROR(c.Count(slots.size(), "slots", rows));
  PCFARM_RETURN_IF_ERROR(c.Count(positions.size(), "positions", rows));
  PCFARM_RETURN_IF_ERROR(c.Indices(slots, "slots", cache.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Indices(positions, "positions", cache.shape()[1]));
  return Status::Ok();
}
}  // namespace

Status Backend::KvCacheWrite(const Tensor& cache, const Tensor& src,
                             std::span<const int32_t> slots,
                             std::span<const int32_t> positions) {
  Check c(this, "KvCacheWrite");
  PCFARM_RETURN_IF_ERROR(c.F32(src, "src"));
  PCFARM_RETURN_IF_ERROR(c.Rank(src, "src", 3));
  PCFARM_RETURN_IF_ERROR(CheckCacheRows(c, cache, "cache", slots, positions, src.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Dim(cache, "cache", 2, src.shape()[1], "kv heads of src"));
  PCFARM_RETURN_IF_ERROR(c.Dim(cache, "cache", 3, src.shape()[2], "head_dim of src"));
  return KvCacheWriteImpl(cache, src, slots, positions);
}

Status Backend::AttentionDecode(const Tensor& out, const Tensor& q,
                                const Tensor& k_cache, const Tensor& v_cache,
                                std::span<const int32_t> slots,
                                std::span<const int32_t> positions) {
  Check c(this, "AttentionDecode");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.F32(q, "q"));
  PCFARM_RETURN_IF_ERROR(c.Rank(q, "q", 3));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, "out", q, "q"));
  PCFARM_RETURN_IF_ERROR(CheckCacheRows(c, k_cache, "k_cache", slots, positions, q.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.F32(v_cache, "v_cache"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(v_cache, "v_cache", k_cache, "k_cache"));
  PCFARM_RETURN_IF_ERROR(c.Dim(k_cache, "k_cache", 3, q.shape()[2], "head_dim of q"));
  if (q.shape()[1] % k_cache.shape()[2] != 0)
    return c.Fail("q's " + std::to_string(q.shape()[1]) +
                  " heads are not a multiple of the cache's " +
                  std::to_string(k_cache.shape()[2]));
  return AttentionDecodeImpl(out, q, k_cache, v_cache, slots, positions);
}

Status Backend::SwiGluForward(const Tensor& out, const Tensor& gate, const Tensor& up) {
  Check c(this, "SwiGluForward");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.F32(gate, "gate"));
  PCFARM_RETURN_IF_ERROR(c.F32(up, "up"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(gate, "gate", up, "up"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(out, "out", gate, "gate"));
  return SwiGluForwardImpl(out, gate, up);
}

Status Backend::SwiGluBackward(const Tensor& dgate, const Tensor& dup,
                               const Tensor& dout, const Tensor& gate,
                               const Tensor& up) {
  Check c(this, "SwiGluBackward");
  for (auto [t, n] : {std::pair{&dgate, "dgate"}, {&dup, "dup"}, {&dout, "dout"},
                      {&gate, "gate"}, {&up, "up"}}) {
    PCFARM_RETURN_IF_ERROR(c.F32(*t, n));
    PCFARM_RETURN_IF_ERROR(c.SameShape(*t, n, gate, "gate"));
  }
  return SwiGluBackwardImpl(dgate, dup, dout, gate, up);
}

namespace {
Status CheckLossArgs(const Check& c, const Tensor& logits,
                     std::span<const int32_t> targets, std::span<const float> weights) {
  PCFARM_RETURN_IF_ERROR(c.F32(logits, "logits"));
  PCFARM_RETURN_IF_ERROR(c.Rank(logits, "logits", 2));
  const int64_t n = logits.shape()[0], vocab = logits.shape()[1];
  PCFARM_RETURN_IF_ERROR(c.Count(targets.size(), "targets", n));
  PCFARM_RETURN_IF_ERROR(c.Count(weights.size(), "weights", n));
  for (int64_t i = 0; i < n; ++i) {
    if (!(weights[i] >= 0) || std::isinf(weights[i]))
      return c.Fail("weights[" + std::to_string(i) + "] must be finite and >= 0");
    if (weights[i] > 0 && (targets[i] < 0 || targets[i] >= vocab))
      return c.Fail("targets[" + std::to_string(i) + "] = " + std::to_string(targets[i]) +
                    " is outside [0, " + std::to_string(vocab) + ")");
  }
  return Status::Ok();
}
}  // namespace

Result<CrossEntropySums> Backend::CrossEntropyForward(
    const Tensor* losses, const Tensor& logits, std::span<const int32_t> targets,
    std::span<const float> weights) {
  Check c(this, "CrossEntropyForward");
  PCFARM_RETURN_IF_ERROR(CheckLossArgs(c, logits, targets, weights));
  if (losses != nullptr) {
    PCFARM_RETURN_IF_ERROR(c.F32(*losses, "losses"));
    PCFARM_RETURN_IF_ERROR(c.Count(static_cast<size_t>(losses->numel()), "losses",
                                   logits.shape()[0]));
  }
  return CrossEntropyForwardImpl(losses, logits, targets, weights);
}

Status Backend::CrossEntropyBackward(const Tensor& dlogits, const Tensor& logits,
                                     std::span<const int32_t> targets,
                                     std::span<const float> weights, float grad_scale) {
  Check c(this, "CrossEntropyBackward");
  PCFARM_RETURN_IF_ERROR(CheckLossArgs(c, logits, targets, weights));
  PCFARM_RETURN_IF_ERROR(c.F32(dlogits, "dlogits"));
  PCFARM_RETURN_IF_ERROR(c.SameShape(dlogits, "dlogits", logits, "logits"));
  return CrossEntropyBackwardImpl(dlogits, logits, targets, weights, grad_scale);
}

Status Backend::LogProbs(const Tensor& out, const Tensor& logits,
                         std::span<const int32_t> targets) {
  Check c(this, "LogProbs");
  PCFARM_RETURN_IF_ERROR(c.F32(out, "out"));
  PCFARM_RETURN_IF_ERROR(c.F32(logits, "logits"));
  PCFARM_RETURN_IF_ERROR(c.Rank(logits, "logits", 2));
  PCFARM_RETURN_IF_ERROR(c.Count(static_cast<size_t>(out.numel()), "out", logits.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Count(targets.size(), "targets", logits.shape()[0]));
  PCFARM_RETURN_IF_ERROR(c.Indices(targets, "targets", logits.shape()[1]));
  return LogProbsImpl(out, logits, targets);
}

Status Backend::AdamWStep(const Tensor& param, const Tensor& grad, const Tensor& m,
                          const Tensor& v, const AdamWConfig& config) {
  Check c(this, "AdamWStep");
  for (auto [t, n] : {std::pair{&param, "param"}, {&grad, "grad"}, {&m, "m"}, {&v, "v"}}) {
    PCFARM_RETURN_IF_ERROR(c.F32(*t, n));
    PCFARM_RETURN_IF_ERROR(c.SameShape(*t, n, param, "param"));
  }
  PCFARM_RETURN_IF_ERROR(c.Writable(param, "param"));
  if (config.step < 1) return c.Fail("step must be >= 1");
  if (!(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1))
    return c.Fail("beta1 and beta2 must be in [0, 1)");
  return AdamWStepImpl(param, grad, m, v, config);
}

Result<double> Backend::SumSquares(const Tensor& t) {
  Check c(this, "SumSquares");
  PCFARM_RETURN_IF_ERROR(c.F32(t, "t"));
  return SumSquaresImpl(t);
}

}  // namespace pcfarm
