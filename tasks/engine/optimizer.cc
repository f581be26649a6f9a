#include "tasks/engine/optimizer.h"

#include <bit>
#include <cmath>
#include <cstring>

namespace pcfarm {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the state file is little-endian and written with memcpy");

constexpr char kStateMagic[4] = {'P', 'A', 'W', '1'};
constexpr uint32_t kStateVersion = 1;
constexpr size_t kStateHeaderBytes = 24;
// Far above any model, far below an overflow of numel · 8 bytes.
constexpr int64_t kMaxNumel = int64_t(1) << 40;

Shape ShapeOf(const std::vector<int64_t>& d) {
  switch (d.size()) {
    case 1: return Shape{d[0]};
    case 2: return Shape{d[0], d[1]};
    case 3: return Shape{d[0], d[1], d[2]};
    default: assert(d.size() == 4); return Shape{d[0], d[1], d[2], d[3]};
  }
}

Status CheckLayout(const std::vector<ParameterInfo>& layout) {
  if (layout.empty()) return InvalidArgument("FlatAdamW: the layout has no tensor");
  int64_t offset = 0;
  for (size_t i = 0; i < layout.size(); ++i) {
    const ParameterInfo& p = layout[i];
    const std::string where = "FlatAdamW: tensor " + std::to_string(i) + " (" + p.name + ")";
    if (p.shape.empty() || p.shape.size() > size_t(Shape::kMaxRank))
      return InvalidArgument(where + " has " + std::to_string(p.shape.size()) +
                             " dimensions, expected 1 to 4");
    int64_t numel = 1;
    for (int64_t d : p.shape) {
      if (d < 1 || d > kMaxNumel || numel > kMaxNumel / d)
        return InvalidArgument(where + " has shape " + ShapeString(p.shape));
      numel *= d;
    }
    if (p.numel != numel)
      return InvalidArgument(where + " has numel " + std::to_string(p.numel) + ", its shape " +
                             ShapeString(p.shape) + " has " + std::to_string(numel));
    if (p.offset != offset)
      return InvalidArgument(where + " is at offset " + std::to_string(p.offset) + ", expected " +
                             std::to_string(offset) + " (tensors are back to back from 0)");
    offset += numel;
    if (offset > kMaxNumel) return InvalidArgument("FlatAdamW: the layout is too large");
  }
  return Status::Ok();
}

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof(v));
}

template <typename T>
T Get(std::string_view bytes, size_t offset) {
  T v;
  std::memcpy(&v, bytes.data() + offset, sizeof(v));
  return v;
}

}  // namespace

double GradClipScale(double grad_norm, float max_grad_norm) {
  if (max_grad_norm > 0 && grad_norm > max_grad_norm) return max_grad_norm / (grad_norm + 1e-6);
  return 1;
}

Result<StepStats> ClipAndStepAdamW(Backend* backend, std::span<const AdamWSlot> slots,
                                   const OptimizerConfig& opt, int64_t step) {
  assert(step >= 1);
  StepStats stats;
  double ss = 0;
  for (const AdamWSlot& s : slots) {
    PCFARM_ASSIGN_OR_RETURN(double x, backend->SumSquares(s.grad));
    ss += x;
  }
  stats.grad_norm = std::sqrt(ss);
  stats.clip_scale = GradClipScale(stats.grad_norm, opt.max_grad_norm);
  AdamWConfig c;
  c.lr = opt.lr;
  c.beta1 = opt.beta1;
  c.beta2 = opt.beta2;
  c.eps = opt.eps;
  c.weight_decay = opt.weight_decay;
  c.step = step;
  c.grad_scale = float(stats.clip_scale);
  for (const AdamWSlot& s : slots)
    PCFARM_RETURN_IF_ERROR(backend->AdamWStep(s.value, s.grad, s.m, s.v, c));
  stats.step = step;
  return stats;
}

FlatAdamW::FlatAdamW(std::vector<ParameterInfo> layout, Backend* backend)
    : layout_(std::move(layout)), backend_(backend) {}

Result<std::unique_ptr<FlatAdamW>> FlatAdamW::Create(std::vector<ParameterInfo> layout,
                                                     Backend* backend) {
  assert(backend != nullptr);
  PCFARM_RETURN_IF_ERROR(CheckLayout(layout));
  std::unique_ptr<FlatAdamW> o(new FlatAdamW(std::move(layout), backend));
  for (const ParameterInfo& p : o->layout_) {
    AdamWSlot s;
    for (Tensor* t : {&s.value, &s.grad, &s.m, &s.v}) {
      PCFARM_ASSIGN_OR_RETURN(*t, backend->Alloc(ShapeOf(p.shape), StorageType::kF32));
    }
    o->slots_.push_back(std::move(s));
  }
  o->count_ = o->layout_.back().offset + o->layout_.back().numel;
  o->m_.assign(size_t(o->count_), 0.0f);
  o->v_.assign(size_t(o->count_), 0.0f);
  return o;
}

Result<StepStats> FlatAdamW::Apply(std::vector<float>* params,
                                   std::span<const float> mean_gradient,
                                   const OptimizerConfig& opt) {
  if (int64_t(params->size()) != count_ || int64_t(mean_gradient.size()) != count_)
    return InvalidArgument("FlatAdamW: " + std::to_string(params->size()) + " parameters and " +
                           std::to_string(mean_gradient.size()) + " gradient values, expected " +
                           std::to_string(count_) + " of each");
  for (size_t i = 0; i < mean_gradient.size(); ++i)
    if (!std::isfinite(mean_gradient[i]))
      return InvalidArgument("FlatAdamW: gradient value " + std::to_string(i) +
                             " is not finite");
  auto part = [&](std::span<const float> flat, size_t i) {
    return flat.subspan(size_t(layout_[i].offset), size_t(layout_[i].numel));
  };
  for (size_t i = 0; i < slots_.size(); ++i) {
    PCFARM_RETURN_IF_ERROR(backend_->Upload(slots_[i].value, part(*params, i)));
    PCFARM_RETURN_IF_ERROR(backend_->Upload(slots_[i].grad, part(mean_gradient, i)));
    PCFARM_RETURN_IF_ERROR(backend_->Upload(slots_[i].m, part(m_, i)));
    PCFARM_RETURN_IF_ERROR(backend_->Upload(slots_[i].v, part(v_, i)));
  }
  PCFARM_ASSIGN_OR_RETURN(StepStats stats, ClipAndStepAdamW(backend_, slots_, opt, step_ + 1));
  // Everything comes back before anything is replaced.
  const size_t n = static_cast<size_t>(count_);
  std::vector<float> value(n), m(n), v(n);
  auto out = [&](std::vector<float>& flat, size_t i) {
    return std::span<float>(flat.data() + layout_[i].offset, size_t(layout_[i].numel));
  };
  for (size_t i = 0; i < slots_.size(); ++i) {
    PCFARM_RETURN_IF_ERROR(backend_->Download(slots_[i].value, out(value, i)));
    PCFARM_RETURN_IF_ERROR(backend_->Download(slots_[i].m, out(m, i)));
    PCFARM_RETURN_IF_ERROR(backend_->Download(slots_[i].v, out(v, i)));
  }
  *params = std::move(value);
  m_ = std::move(m);
  v_ = std::move(v);
  step_ = stats.step;
  return stats;
}

std::string FlatAdamW::EncodeState() const {
  std::string out;
  out.reserve(kStateHeaderBytes + 8 * size_t(count_));
  out.append(kStateMagic, sizeof(kStateMagic));
  Put<uint32_t>(&out, kStateVersion);
  Put<int64_t>(&out, step_);
  Put<int64_t>(&out, count_);
  out.append(reinterpret_cast<const char*>(m_.data()), m_.size() * sizeof(float));
  out.append(reinterpret_cast<const char*>(v_.data()), v_.size() * sizeof(float));
  return out;
}

Status FlatAdamW::RestoreState(std::string_view bytes) {
  const std::string what = "FlatAdamW state: ";
  if (bytes.size() < kStateHeaderBytes)
    return InvalidArgument(what + std::to_string(bytes.size()) + " bytes, shorter than the " +
                           std::to_string(kStateHeaderBytes) + "-byte header");
  if (std::memcmp(bytes.data(), kStateMagic, sizeof(kStateMagic)) != 0)
    return InvalidArgument(what + "bad magic (not a PAW1 optimizer state)");
  const uint32_t version = Get<uint32_t>(bytes, 4);
  if (version != kStateVersion)
    return InvalidArgument(what + "version " + std::to_string(version) + ", expected " +
                           std::to_string(kStateVersion));
  const int64_t step = Get<int64_t>(bytes, 8);
  if (step < 0) return InvalidArgument(what + "step " + std::to_string(step) + " is negative");
  const int64_t count = Get<int64_t>(bytes, 16);
  if (count != count_)
    return InvalidArgument(what + "count " + std::to_string(count) + ", this optimizer has " +
                           std::to_string(count_) + " parameters");
  const size_t want = kStateHeaderBytes + 8 * size_t(count_);
  if (bytes.size() != want)
    return InvalidArgument(what + std::to_string(bytes.size()) + " bytes, expected " +
                           std::to_string(want) + (bytes.size() < want ? " (truncated)" : ""));
  const size_t n = static_cast<size_t>(count_);
  std::vector<float> m(n), v(n);
  std::memcpy(m.data(), bytes.data() + kStateHeaderBytes, m.size() * sizeof(float));
  std::memcpy(v.data(), bytes.data() + kStateHeaderBytes + m.size() * sizeof(float),
              v.size() * sizeof(float));
  for (size_t i = 0; i < m.size(); ++i) {
    if (!std::isfinite(m[i]))
      return InvalidArgument(what + "m[" + std::to_string(i) + "] is not finite");
    if (!std::isfinite(v[i]) || v[i] < 0)
      return InvalidArgument(what + "v[" + std::to_string(i) + "] is " + std::to_string(v[i]) +
                             ", expected a finite value >= 0");
  }
  step_ = step;
  m_ = std::move(m);
  v_ = std::move(v);
  return Status::Ok();
}

}  // namespace pcfarm
