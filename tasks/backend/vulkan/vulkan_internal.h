// Internals of the Vulkan backend shared by its .cc files and its test.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tasks/backend/backend.h"
#include "tasks/backend/vulkan/vulkan_api.h"
#include "tasks/backend/vulkan/vulkan_devices.h"

namespace pcfarm::vk {

VulkanDeviceInfo DescribeDevice(const VulkanApi& api, VkPhysicalDevice phys, int index);
Result<std::vector<VkPhysicalDevice>> EnumerateDevices(const VulkanApi& api,
                                                       VkInstance instance);

// A buffer and its memory (one allocation per buffer).
struct RawBuffer {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceMemory memory = VK_NULL_HANDLE;
  uint64_t bytes = 0;        // as requested (counted against the limit when `counted`)
  bool counted = false;
  void* mapped = nullptr;    // host-visible buffers only
};

// The instance and device; shared by the backend and its tensors' buffers,
// so a buffer can always give its memory back.
class DeviceContext {
 public:
  ~DeviceContext();

  // A buffer of `bytes` (rounded up to 4) in memory type `memory_type`,
  // mapped when `map`. `counted` buffers (tensors) count against the memory
  // limit. kResourceExhausted beyond the limit, the heap or the device's
  // largest buffer, or when the driver is out of memory.
  Result<RawBuffer> CreateBuffer(uint64_t bytes, uint32_t memory_type, bool map,
                                 bool counted, const std::string& what);
  void DestroyBuffer(const RawBuffer& b);
  // Frees `b` once the work recorded so far has finished (at the next
  // completed submit, or now when none is pending).
  void DeferFree(const RawBuffer& b);
  // Frees every deferred buffer. REQUIRES: no submitted work uses them.
  void FreeDeferred();
  bool HasDeferred();

  VulkanApi api;
  VkInstance instance = VK_NULL_HANDLE;
  VkPhysicalDevice phys = VK_NULL_HANDLE;
  VkDevice device = VK_NULL_HANDLE;
  VkQueue queue = VK_NULL_HANDLE;
  uint32_t queue_family = 0;
  VulkanDeviceInfo info;
  VkPhysicalDeviceLimits limits{};
  VkPhysicalDeviceMemoryProperties memory{};
  uint32_t device_type_index = 0;  // device-local memory for tensors
  uint32_t host_type_index = 0;    // host-visible, coherent: staging and arguments
  uint64_t limit_bytes = 0;        // 0 = the device heap only
  std::atomic<uint64_t> used_bytes{0};
  // Set when a submit timed out: the device may still run it, so nothing
  // it might use is freed or destroyed (leaked on purpose, not a crash).
  std::atomic<bool> hung{false};

 private:
  std::mutex mu_;
  std::vector<RawBuffer> deferred_;
};

// A tensor's storage.
class VulkanBuffer final : public TensorBuffer {
 public:
  VulkanBuffer(std::shared_ptr<DeviceContext> ctx, RawBuffer raw)
      : ctx_(std::move(ctx)), raw_(raw) {}
  ~VulkanBuffer() override { ctx_->DeferFree(raw_); }
  VkBuffer buffer() const { return raw_.buffer; }
  uint64_t bytes() const { return raw_.bytes; }

 private:
  std::shared_ptr<DeviceContext> ctx_;
  RawBuffer raw_;
};

// One storage-buffer binding of a dispatch.
struct Binding {
  VkBuffer buffer = VK_NULL_HANDLE;
  VkDeviceSize offset = 0;
  VkDeviceSize range = VK_WHOLE_SIZE;
};

inline Binding Bind(const Tensor& t) {
  return {static_cast<VulkanBuffer*>(t.buffer())->buffer(), 0, VK_WHOLE_SIZE};
}

class VulkanBackend final : public Backend {
 public:
  // Dispatches a batch may hold before it is submitted.
  static constexpr uint32_t kMaxDispatchesPerBatch = 512;
  static constexpr uint32_t kMaxBindings = 10;
  static constexpr uint64_t kFenceTimeoutMs = 120000;

  static Result<std::unique_ptr<VulkanBackend>> Create(const BackendOptions& options);
  ~VulkanBackend() override;

  std::string name() const override { return "vulkan"; }
  DeviceInfo info() const override;
  // Every storage type: the GGML block types are held as their bytes and
  // dequantized by the shaders that read weights (gemv, gemm, gather, copy:
  // shaders/common.glsl's DEFINE_LOAD_ANY) and on the host by Download.
  bool SupportsStorage(StorageType) const override { return true; }
  Status Synchronize() override;

  const VulkanDeviceInfo& device_info() const { return ctx_->info; }
  // Pipelines created so far (each shader's is created once, on first use).
  int pipelines_created() const { return static_cast<int>(pipelines_.size()); }
  // Command buffers submitted so far.
  int64_t submits() const { return submits_; }
  bool uses_subgroups() const { return use_subgroups_; }
  // For tests: use the shared-memory reductions even where subgroup
  // arithmetic is available. REQUIRES: !on or the device supports it.
  void set_use_subgroups(bool on) { use_subgroups_ = on && ctx_->info.subgroup_arithmetic; }

  // ---- used by the ops (vulkan_ops.cc) ----
  // Records one dispatch of `shader` with these bindings and push constants
  // (<= 128 bytes), then a barrier. Every dispatch of a shader passes the
  // same number of bindings.
  Status Dispatch(const std::string& shader, std::initializer_list<Binding> bindings,
                  const void* push, uint32_t push_bytes, uint32_t groups_x,
                  uint32_t groups_y = 1);
  template <typename P>
  Status Dispatch(const std::string& shader, std::initializer_list<Binding> bindings,
                  const P& push, uint32_t groups_x, uint32_t groups_y = 1) {
    static_assert(sizeof(P) <= 128 && sizeof(P) % 4 == 0);
    return Dispatch(shader, bindings, &push, sizeof(P), groups_x, groups_y);
  }
  // The name of a reduction shader's variant for this device ("x_sg" with
  // subgroup arithmetic, else "x").
  std::string Reduction(const std::string& shader) const {
    return use_subgroups_ ? shader + "_sg" : shader;
  }
  // Copies host arrays (pointer, bytes) into this batch's argument arena and
  // returns one binding each. They stay valid for the op's next `dispatches`
  // dispatches: the batch is submitted first if those would not fit.
  struct HostArray {
    const void* data;
    size_t bytes;
  };
  Result<std::vector<Binding>> PushArgs(std::initializer_list<HostArray> arrays,
                                        uint32_t dispatches = 1);
  // Records a buffer-to-buffer copy and a barrier.
  Status RecordCopy(VkBuffer src, VkBuffer dst, uint64_t bytes);
  // Submits the open batch, if any, and waits for it.
  Status Flush();
  // A device buffer for intermediate values, freed after the batch.
  Result<Tensor> Scratch(int64_t numel) { return AllocImpl(Shape{numel}, StorageType::kF32); }

 protected:
  Result<Tensor> AllocImpl(Shape shape, StorageType type) override;
  Status UploadImpl(const Tensor& t, std::span<const float> src) override;
  Status DownloadImpl(const Tensor& t, std::span<float> dst) override;
  Status UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) override;
  Status DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) override;
  Status FillImpl(const Tensor& t, float value) override;
  Status CopyImpl(const Tensor& dst, const Tensor& src) override;
  Status AddImpl(const Tensor& out, const Tensor& a, const Tensor& b) override;
  Status AxpyImpl(const Tensor& y, float alpha, const Tensor& x) override;
  Status ScaleImpl(const Tensor& t, float s) override;
  Status GemmImpl(const Tensor& c, const Tensor& a, bool trans_a, const Tensor& b,
                  bool trans_b, float alpha, float beta) override;
  Status EmbeddingForwardImpl(const Tensor& out, const Tensor& table,
                              std::span<const int32_t> ids) override;
  Status EmbeddingBackwardImpl(const Tensor& dtable, const Tensor& dout,
                               std::span<const int32_t> ids) override;
  Status RmsNormForwardImpl(const Tensor& out, const Tensor& inp, const Tensor& weight,
                            float eps) override;
  Status RmsNormBackwardImpl(const Tensor& dinp, const Tensor* dweight, const Tensor& dout,
                             const Tensor& inp, const Tensor& weight, float eps) override;
  Status RopeImpl(const Tensor& out, const Tensor& inp, const Tensor& inv_freq,
                  std::span<const int32_t> positions, bool backward) override;
  Status AttentionForwardImpl(const Tensor& out, const Tensor* lse, const Tensor& q,
                              const Tensor& k, const Tensor& v,
                              std::span<const int32_t> seq_starts) override;
  Status AttentionBackwardImpl(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                               const Tensor& dout, const Tensor& q, const Tensor& k,
                               const Tensor& v, const Tensor& out, const Tensor& lse,
                               std::span<const int32_t> seq_starts) override;
  Status KvCacheWriteImpl(const Tensor& cache, const Tensor& src,
                          std::span<const int32_t> slots,
                          std::span<const int32_t> positions) override;
  Status AttentionDecodeImpl(const Tensor& out, const Tensor& q, const Tensor& k_cache,
                             const Tensor& v_cache, std::span<const int32_t> slots,
                             std::span<const int32_t> positions) override;
  Status SwiGluForwardImpl(const Tensor& out, const Tensor& gate, const Tensor& up) override;
  Status SwiGluBackwardImpl(const Tensor& dgate, const Tensor& dup, const Tensor& dout,
                            const Tensor& gate, const Tensor& up) override;
  Result<CrossEntropySums> CrossEntropyForwardImpl(const Tensor* losses,
                                                   const Tensor& logits,
                                                   std::span<const int32_t> targets,
                                                   std::span<const float> weights) override;
  Status CrossEntropyBackwardImpl(const Tensor& dlogits, const Tensor& logits,
                                  std::span<const int32_t> targets,
                                  std::span<const float> weights,
                                  float grad_scale) override;
  Status LogProbsImpl(const Tensor& out, const Tensor& logits,
                      std::span<const int32_t> targets) override;
  Status AdamWStepImpl(const Tensor& param, const Tensor& grad, const Tensor& m,
                       const Tensor& v, const AdamWConfig& config) override;
  Result<double> SumSquaresImpl(const Tensor& t) override;

 private:
  struct Pipeline {
    VkDescriptorSetLayout set_layout = VK_NULL_HANDLE;
    VkPipelineLayout layout = VK_NULL_HANDLE;
    VkPipeline pipeline = VK_NULL_HANDLE;
    uint32_t bindings = 0;
  };

  explicit VulkanBackend(std::shared_ptr<DeviceContext> ctx) : ctx_(std::move(ctx)) {}
  Status Init();
  Result<const Pipeline*> GetPipeline(const std::string& shader, uint32_t bindings);
  // Begins the batch's command buffer if it is not open.
  Status Begin();
  void RecordBarrier();
  // Fails with the sticky status once the device hung or was lost.
  Status Usable() const { return broken_; }
  // Copies through staging: host -> buffer, buffer -> host (bytes each).
  Status WriteBuffer(VkBuffer dst, uint64_t bytes,
                     const std::function<void(void* staging, uint64_t offset, uint64_t n)>& fill);
  Status ReadBuffer(VkBuffer src, uint64_t bytes,
                    const std::function<void(const void* staging, uint64_t offset, uint64_t n)>& take);
  Status EnsureStaging(uint64_t bytes);
  // Runs the cross-entropy shader in `mode` (0 losses, 1 backward, 2 logprobs).
  Status CrossEntropy(int mode, const Tensor* out, const Tensor* dlogits, const Tensor& logits,
                      std::span<const int32_t> targets, std::span<const float> weights,
                      float grad_scale);
  // Attention over per-row key ranges (key row base, key count) of k/v rows
  // of hkv·d floats.
  Status Attention(const Tensor& out, const Tensor* lse, const Tensor& q, const Tensor& k,
                   const Tensor& v, const std::vector<int32_t>& ranges);

  std::shared_ptr<DeviceContext> ctx_;
  Status broken_;
  bool use_subgroups_ = false;
  std::map<std::string, Pipeline> pipelines_;
  VkCommandPool command_pool_ = VK_NULL_HANDLE;
  VkCommandBuffer cmd_ = VK_NULL_HANDLE;
  VkFence fence_ = VK_NULL_HANDLE;
  VkDescriptorPool descriptor_pool_ = VK_NULL_HANDLE;
  bool recording_ = false;
  uint32_t dispatches_ = 0;
  int64_t submits_ = 0;
  RawBuffer staging_;
  RawBuffer args_;
  uint64_t args_used_ = 0;
};

}  // namespace pcfarm::vk
