// The CPU backend: memory, transfers, elementwise ops, embedding, AdamW.
#include "tasks/backend/cpu/cpu_backend.h"

#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/cpu/cpu_internal.h"
#include "tasks/backend/half.h"

namespace pcfarm {

int CpuBackendScore(const BackendOptions&) { return 1; }

Result<std::unique_ptr<Backend>> CreateCpuBackend(const BackendOptions& options) {
  if (options.cpu_threads < 0)
    return InvalidArgument("cpu_threads must be >= 0, is " +
                           std::to_string(options.cpu_threads));
  PCFARM_RETURN_IF_ERROR(blas::Load());
  return std::unique_ptr<Backend>(new cpu::CpuBackend(options));
}

namespace cpu {

CpuBuffer::~CpuBuffer() {
  if (memory_ == nullptr) return;  // a host view: owner_ goes with us
  memory_->used -= bytes_;
  memory_->Release(data_, RoundedBytes(bytes_));
}

CpuMemory::~CpuMemory() { DropLocked(); }

void* CpuMemory::Allocate(size_t rounded) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint64_t live = used.load();
  peak_used_ = std::max(peak_used_, live);
  if (rounded >= kMinCachedBytes) {
    auto it = cache_.find(rounded);
    if (it != cache_.end()) {
      void* data = it->second;
      cache_.erase(it);
      cached_bytes_ -= rounded;
      return data;
    }
  }
  // A new block: the cache gives up what would push the total past the peak.
  EvictLocked(peak_used_ - live);
  void* data = std::aligned_alloc(64, rounded);
  if (data == nullptr) {
    DropLocked();  // the cache's blocks may be what is missing
    data = std::aligned_alloc(64, rounded);
  }
  return data;
}

void CpuMemory::Release(void* data, size_t rounded) {
  if (rounded >= kMinCachedBytes) {
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t live = used.load();
    if (live + cached_bytes_ + rounded <= peak_used_) {
      cache_.emplace(rounded, data);
      cached_bytes_ += rounded;
      return;
    }
  }
  std::free(data);
}

void CpuMemory::EvictLocked(uint64_t room) {
  for (auto it = cache_.begin(); cached_bytes_ > room && it != cache_.end();) {
    std::free(it->second);
    cached_bytes_ -= it->first;
    it = cache_.erase(it);
  }
}

void CpuMemory::DropLocked() { EvictLocked(0); }

void ToF32(StorageType type, const void* src, float* dst, int64_t count) {
  if (ToF32Fast(type, src, dst, count)) return;
  switch (type) {
    case StorageType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(count) * 4);
      return;
    case StorageType::kF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; ++i) dst[i] = F16ToF32(s[i]);
      return;
    }
    case StorageType::kBF16: {
      const auto* s = static_cast<const uint16_t*>(src);
      for (int64_t i = 0; i < count; ++i) dst[i] = BF16ToF32(s[i]);
      return;
    }
    case StorageType::kQ8_0: case StorageType::kQ4_0: case StorageType::kQ4_K:
    case StorageType::kQ6_K: {
      const uint32_t g = StorageGgmlType(type);
      assert(count % GgmlBlockValues(g) == 0);
      DequantizeBlocks(g, static_cast<const uint8_t*>(src), count / GgmlBlockValues(g), dst);
      return;
    }
  }
}

void FromF32(StorageType type, const float* src, void* dst, int64_t count) {
  switch (type) {
    case StorageType::kF32:
      std::memcpy(dst, src, static_cast<size_t>(count) * 4);
      return;
    case StorageType::kF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < count; ++i) d[i] = F32ToF16(src[i]);
      return;
    }
    case StorageType::kBF16: {
      auto* d = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < count; ++i) d[i] = F32ToBF16(src[i]);
      return;
    }
    case StorageType::kQ8_0: case StorageType::kQ4_0: case StorageType::kQ4_K:
    case StorageType::kQ6_K:
      assert(false && "FromF32 into a quantized type (Upload refuses it)");
      return;
  }
}

const float* AsF32(const Tensor& t, std::vector<float>& scratch) {
  if (t.type() == StorageType::kF32) return F32(t);
  scratch.resize(static_cast<size_t>(t.numel()));
  ToF32(t.type(), Raw(t), scratch.data(), t.numel());
  return scratch.data();
}

CpuBackend::CpuBackend(const BackendOptions& options)
    : memory_(std::make_shared<CpuMemory>()) {
  memory_->limit = options.memory_limit_bytes;
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  physical_bytes_ = pages > 0 && page > 0
                        ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page)
                        : UINT64_MAX;
  int threads = options.cpu_threads;
  if (threads == 0) threads = std::max(1u, std::thread::hardware_concurrency());
  pool_ = std::make_unique<ThreadPool>(threads);
  // OpenBLAS runs single-threaded inside the pool's chunks (ParallelSgemm):
  // its own threads would spin against ours on the same cores.
  blas::SetThreads(1);
}

DeviceInfo CpuBackend::info() const {
  DeviceInfo d;
  d.threads = pool_->size();
  d.description = "CPU, " + std::to_string(d.threads) + " threads, OpenBLAS " + blas::CoreName();
  d.memory_bytes = memory_->limit != 0 ? memory_->limit : physical_bytes_;
  return d;
}

void CpuBackend::ParallelRows(int64_t rows, int64_t row_len,
                              const std::function<void(int64_t, int64_t)>& fn) {
  pool_->ParallelFor(rows, std::max<int64_t>(1, 16384 / std::max<int64_t>(row_len, 1)),
                     fn);
}

Result<Tensor> CpuBackend::AllocImpl(Shape shape, StorageType type) {
  const uint64_t bytes = StorageBytes(type, shape.numel());
  const uint64_t used = memory_->used.fetch_add(bytes) + bytes;
  if (memory_->limit != 0 && used > memory_->limit) {
    memory_->used -= bytes;
    return ResourceExhausted("cpu: allocating " + shape.ToString() + " " +
                             StorageTypeName(type) + " (" + std::to_string(bytes) +
                             " bytes) exceeds the memory limit of " +
                             std::to_string(memory_->limit) + " bytes (" +
                             std::to_string(used - bytes) + " in use)");
  }
  // Without a limit, more than the machine's physical memory is refused up
  // front rather than left to overcommit and the OOM killer.
  if (memory_->limit == 0 && bytes > physical_bytes_) {
    memory_->used -= bytes;
    return ResourceExhausted("cpu: allocating " + shape.ToString() + " " +
                             StorageTypeName(type) + " (" + std::to_string(bytes) +
                             " bytes) exceeds physical memory (" +
                             std::to_string(physical_bytes_) + " bytes)");
  }
  void* data = memory_->Allocate(RoundedBytes(bytes));
  if (data == nullptr) {
    memory_->used -= bytes;
    return ResourceExhausted("cpu: out of memory allocating " + shape.ToString() + " " +
                             StorageTypeName(type) + " (" + std::to_string(bytes) +
                             " bytes)");
  }
  return Tensor(this, std::make_shared<CpuBuffer>(data, bytes, memory_), shape, type);
}

Result<Tensor> CpuBackend::WrapHostBytesImpl(Shape shape, StorageType type, const void* data,
                                             std::shared_ptr<const void> owner) {
  return Tensor(this, std::make_shared<CpuBuffer>(data, std::move(owner)), shape, type,
                /*read_only=*/true);
}

Status CpuBackend::UploadImpl(const Tensor& t, std::span<const float> src) {
  FromF32(t.type(), src.data(), Raw(t), t.numel());
  return Status::Ok();
}

Status CpuBackend::DownloadImpl(const Tensor& t, std::span<float> dst) {
  ToF32(t.type(), Raw(t), dst.data(), t.numel());
  return Status::Ok();
}

Status CpuBackend::UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) {
  std::memcpy(Raw(t), src.data(), src.size());
  return Status::Ok();
}

Status CpuBackend::DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) {
  std::memcpy(dst.data(), Raw(t), dst.size());
  return Status::Ok();
}

// ---- elementwise ------------------------------------------------------------

Status CpuBackend::FillImpl(const Tensor& t, float value) {
  float* p = F32(t);
  pool_->ParallelFor(t.numel(), 1 << 16, [&](int64_t b, int64_t e) {
    std::fill(p + b, p + e, value);
  });
  return Status::Ok();
}

Status CpuBackend::CopyImpl(const Tensor& dst, const Tensor& src) {
  if (dst.buffer() == src.buffer() && dst.type() == src.type()) return Status::Ok();
  if (IsQuantized(src.type())) {
    // Whole blocks at a time, each converted to f32 and then to dst's type.
    const int64_t bv = StorageBlockValues(src.type());
    const size_t bb = StorageBytes(src.type(), bv), ds = StorageTypeSize(dst.type());
    const auto* s = static_cast<const char*>(Raw(src));
    auto* d = static_cast<char*>(Raw(dst));
    pool_->ParallelFor(src.numel() / bv, 64, [&](int64_t b, int64_t e) {
      std::vector<float> buf(static_cast<size_t>(bv));
      for (int64_t blk = b; blk < e; ++blk) {
        ToF32(src.type(), s + blk * static_cast<int64_t>(bb), buf.data(), bv);
        FromF32(dst.type(), buf.data(), d + blk * bv * static_cast<int64_t>(ds), bv);
      }
    });
    return Status::Ok();
  }
  const size_t ds = StorageTypeSize(dst.type()), ss = StorageTypeSize(src.type());
  auto* d = static_cast<char*>(Raw(dst));
  const auto* s = static_cast<const char*>(Raw(src));
  pool_->ParallelFor(dst.numel(), 1 << 14, [&](int64_t b, int64_t e) {
    if (dst.type() == src.type()) {
      std::memcpy(d + b * ds, s + b * ss, static_cast<size_t>(e - b) * ds);
      return;
    }
    float buf[1024];
    for (int64_t i = b; i < e; i += 1024) {
      const int64_t n = std::min<int64_t>(1024, e - i);
      ToF32(src.type(), s + i * ss, buf, n);
      FromF32(dst.type(), buf, d + i * ds, n);
    }
  });
  return Status::Ok();
}

Status CpuBackend::AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) {
  float* o = F32(out);
  const float* x = F32(a);
  const float* y = F32(b);
  pool_->ParallelFor(out.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) o[i] = x[i] + y[i];
  });
  return Status::Ok();
}

Status CpuBackend::AxpyImpl(const Tensor& y, float alpha, const Tensor& x) {
  float* yp = F32(y);
  const float* xp = F32(x);
  pool_->ParallelFor(y.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) yp[i] += alpha * xp[i];
  });
  return Status::Ok();
}

Status CpuBackend::ScaleImpl(const Tensor& t, float scale) {
  float* p = F32(t);
  pool_->ParallelFor(t.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) p[i] *= scale;
  });
  return Status::Ok();
}

// ---- embedding ----------------------------------------------------------------

Status CpuBackend::EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                                        std::span<const int32_t> ids) {
  const int64_t c = table.shape()[1];
  const auto row_bytes = static_cast<int64_t>(StorageBytes(table.type(), c));
  const auto* t = static_cast<const char*>(Raw(table));
  float* o = F32(out);
  ParallelRows(static_cast<int64_t>(ids.size()), c, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i)
      ToF32(table.type(), t + static_cast<int64_t>(ids[i]) * row_bytes, o + i * c, c);
  });
  return Status::Ok();
}

Status CpuBackend::EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                                         std::span<const int32_t> ids) {
  // Split over columns, not tokens: two tokens may share an id.
  const int64_t c = dtable.shape()[1];
  float* dt = F32(dtable);
  const float* d = F32(dout);
  pool_->ParallelFor(c, 256, [&](int64_t b, int64_t e) {
    for (size_t i = 0; i < ids.size(); ++i) {
      float* row = dt + static_cast<int64_t>(ids[i]) * c;
      const float* src = d + static_cast<int64_t>(i) * c;
      for (int64_t j = b; j < e; ++j) row[j] += src[j];
    }
  });
  return Status::Ok();
}

// ---- optimizer ------------------------------------------------------------------

Status CpuBackend::AdamWStepImpl(const Tensor& param, const Tensor& grad,
                                 const Tensor& m, const Tensor& v,
                                 const AdamWConfig& cfg) {
  float* p = F32(param);
  const float* g = F32(grad);
  float* mp = F32(m);
  float* vp = F32(v);
  const double t = static_cast<double>(cfg.step);
  const float bc1 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta1}, t)));
  const float bc2 = static_cast<float>(1.0 / (1.0 - std::pow(double{cfg.beta2}, t)));
  const float b1 = cfg.beta1, b2 = cfg.beta2, lr = cfg.lr, eps = cfg.eps,
              wd = cfg.weight_decay, gs = cfg.grad_scale;
  pool_->ParallelFor(param.numel(), 1 << 14, [&](int64_t s, int64_t e) {
    for (int64_t i = s; i < e; ++i) {
      const float gi = gs * g[i];
      const float mi = b1 * mp[i] + (1.0f - b1) * gi;
      const float vi = b2 * vp[i] + (1.0f - b2) * gi * gi;
      mp[i] = mi;
      vp[i] = vi;
      p[i] -= lr * ((mi * bc1) / (std::sqrt(vi * bc2) + eps) + wd * p[i]);
    }
  });
  return Status::Ok();
}

Result<double> CpuBackend::SumSquaresImpl(const Tensor& t) {
  const float* p = F32(t);
  const int64_t n = t.numel();
  constexpr int64_t kBlock = 1 << 14;
  const int64_t blocks = (n + kBlock - 1) / kBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  // Fixed blocks summed in a fixed order: the same answer for any thread count.
  pool_->ParallelFor(blocks, 1, [&](int64_t b, int64_t e) {
    for (int64_t blk = b; blk < e; ++blk) {
      const int64_t s = blk * kBlock, end = std::min(n, s + kBlock);
      float acc = 0;
      for (int64_t i = s; i < end; ++i) acc += p[i] * p[i];
      partial[static_cast<size_t>(blk)] = acc;
    }
  });
  double sum = 0;
  for (double x : partial) sum += x;
  return sum;
}

}  // namespace cpu
}  // namespace pcfarm
