// The Vulkan backend: device, memory, pipelines, batches and transfers.
// The ops are in vulkan_ops.cc.
#include "tasks/backend/vulkan/vulkan_backend.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "tasks/backend/ggml_quants.h"
#include "tasks/backend/half.h"
#include "tasks/backend/vulkan/vulkan_internal.h"
#include "tasks/backend/vulkan/vulkan_shaders.h"

namespace pcfarm {

int VulkanBackendScore(const BackendOptions& options) {
  auto devs = ListVulkanDevices();
  if (!devs.ok() || options.device_index < 0 ||
      options.device_index >= static_cast<int>(devs->size()))
    return 0;
  switch ((*devs)[static_cast<size_t>(options.device_index)].type) {
    case VulkanDeviceType::kDiscreteGpu: return 40;
    case VulkanDeviceType::kIntegratedGpu: return 30;
    case VulkanDeviceType::kVirtualGpu: return 20;
    default: return 0;  // CPU implementations and unknown kinds: by name only
  }
}

Result<std::unique_ptr<Backend>> CreateVulkanBackend(const BackendOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(auto b, vk::VulkanBackend::Create(options));
  return std::unique_ptr<Backend>(std::move(b));
}

namespace vk {

// ---- DeviceContext -------------------------------------------------------------

DeviceContext::~DeviceContext() {
  if (device != VK_NULL_HANDLE && !hung) {
    api.vkDeviceWaitIdle(device);
    FreeDeferred();
    api.vkDestroyDevice(device, nullptr);
  }
  if (instance != VK_NULL_HANDLE && !hung) api.vkDestroyInstance(instance, nullptr);
}

Result<RawBuffer> DeviceContext::CreateBuffer(uint64_t bytes, uint32_t memory_type, bool map,
                                              bool counted, const std::string& what) {
  const uint64_t size = std::max<uint64_t>(4, (bytes + 3) / 4 * 4);
  if (size > info.max_buffer_bytes)
    return ResourceExhausted("vulkan: " + what + " (" + std::to_string(bytes) +
                             " bytes) exceeds the largest buffer device " + info.name +
                             " allows (" + std::to_string(info.max_buffer_bytes) + " bytes)");
  const uint64_t heap = memory.memoryHeaps[memory.memoryTypes[memory_type].heapIndex].size;
  if (size > heap)
    return ResourceExhausted("vulkan: " + what + " (" + std::to_string(bytes) +
                             " bytes) exceeds the device memory heap (" +
                             std::to_string(heap) + " bytes)");
  if (counted) {
    const uint64_t now = used_bytes.fetch_add(bytes) + bytes;
    if (limit_bytes != 0 && now > limit_bytes) {
      used_bytes -= bytes;
      return ResourceExhausted("vulkan: " + what + " (" + std::to_string(bytes) +
                               " bytes) exceeds the memory limit of " +
                               std::to_string(limit_bytes) + " bytes (" +
                               std::to_string(now - bytes) + " in use)");
    }
  }
  RawBuffer b;
  b.bytes = bytes;
  b.counted = counted;
  auto fail = [&](const std::string& call, VkResult r) {
    DestroyBuffer(b);
    return VkFailure(call + " for " + what + " (" + std::to_string(bytes) + " bytes)", r);
  };
  VkBufferCreateInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO;
  bi.size = size;
  bi.usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
             VK_BUFFER_USAGE_TRANSFER_DST_BIT;
  bi.sharingMode = VK_SHARING_MODE_EXCLUSIVE;
  VkResult r = api.vkCreateBuffer(device, &bi, nullptr, &b.buffer);
  if (r != VK_SUCCESS) return fail("vkCreateBuffer", r);
  VkMemoryRequirements req{};
  api.vkGetBufferMemoryRequirements(device, b.buffer, &req);
  if ((req.memoryTypeBits & (1u << memory_type)) == 0)
    return fail("memory type", VK_ERROR_FEATURE_NOT_PRESENT);
  VkMemoryAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO;
  ai.allocationSize = req.size;
  ai.memoryTypeIndex = memory_type;
  r = api.vkAllocateMemory(device, &ai, nullptr, &b.memory);
  if (r != VK_SUCCESS) return fail("vkAllocateMemory", r);
  r = api.vkBindBufferMemory(device, b.buffer, b.memory, 0);
  if (r != VK_SUCCESS) return fail("vkBindBufferMemory", r);
  if (map) {
    r = api.vkMapMemory(device, b.memory, 0, VK_WHOLE_SIZE, 0, &b.mapped);
    if (r != VK_SUCCESS) return fail("vkMapMemory", r);
  }
  return b;
}

void DeviceContext::DestroyBuffer(const RawBuffer& b) {
  if (b.buffer != VK_NULL_HANDLE) api.vkDestroyBuffer(device, b.buffer, nullptr);
  if (b.memory != VK_NULL_HANDLE) api.vkFreeMemory(device, b.memory, nullptr);
  if (b.counted) used_bytes -= b.bytes;
}

void DeviceContext::DeferFree(const RawBuffer& b) {
  std::lock_guard<std::mutex> lock(mu_);
  deferred_.push_back(b);
}

void DeviceContext::FreeDeferred() {
  std::vector<RawBuffer> list;
  {
    std::lock_guard<std::mutex> lock(mu_);
    list.swap(deferred_);
  }
  for (const RawBuffer& b : list) DestroyBuffer(b);
}

bool DeviceContext::HasDeferred() {
  std::lock_guard<std::mutex> lock(mu_);
  return !deferred_.empty();
}

// ---- creation ----------------------------------------------------------------------

namespace {

// The first memory type with all of `want` (and, if possible, all of
// `prefer`); -1 when none.
int FindMemoryType(const VkPhysicalDeviceMemoryProperties& mem, VkMemoryPropertyFlags want,
                   VkMemoryPropertyFlags prefer) {
  int fallback = -1;
  for (uint32_t i = 0; i < mem.memoryTypeCount; ++i) {
    const VkMemoryPropertyFlags f = mem.memoryTypes[i].propertyFlags;
    if ((f & want) != want) continue;
    if ((f & prefer) == prefer) return static_cast<int>(i);
    if (fallback < 0) fallback = static_cast<int>(i);
  }
  return fallback;
}

}  // namespace

Result<std::unique_ptr<VulkanBackend>> VulkanBackend::Create(const BackendOptions& options) {
  auto ctx = std::make_shared<DeviceContext>();
  PCFARM_ASSIGN_OR_RETURN(ctx->api, LoadVulkanLoader());
  PCFARM_ASSIGN_OR_RETURN(ctx->instance, CreateInstance(&ctx->api));
  const VulkanApi& api = ctx->api;
  PCFARM_ASSIGN_OR_RETURN(auto devs, EnumerateDevices(api, ctx->instance));
  if (devs.empty()) return Unavailable("vulkan: the loader reports no Vulkan device");
  if (options.device_index < 0 || options.device_index >= static_cast<int>(devs.size()))
    return Unavailable("vulkan: device_index " + std::to_string(options.device_index) +
                       " is out of range: this machine has " +
                       std::to_string(devs.size()) + " Vulkan device(s)");
  ctx->phys = devs[static_cast<size_t>(options.device_index)];
  ctx->info = DescribeDevice(api, ctx->phys, options.device_index);
  if (ctx->info.api_version < VK_API_VERSION_1_1)
    return Unavailable("vulkan: device " + ctx->info.name + " supports only Vulkan 1.0");
  VkPhysicalDeviceProperties props{};
  api.vkGetPhysicalDeviceProperties(ctx->phys, &props);
  ctx->limits = props.limits;
  api.vkGetPhysicalDeviceMemoryProperties(ctx->phys, &ctx->memory);
  ctx->limit_bytes = options.memory_limit_bytes;

  uint32_t nq = 0;
  api.vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, nullptr);
  std::vector<VkQueueFamilyProperties> families(nq);
  api.vkGetPhysicalDeviceQueueFamilyProperties(ctx->phys, &nq, families.data());
  int family = -1;
  for (uint32_t i = 0; i < nq; ++i) {  // prefer a compute queue without graphics
    if ((families[i].queueFlags & VK_QUEUE_COMPUTE_BIT) == 0) continue;
    if (family < 0 || (families[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) == 0)
      family = static_cast<int>(i);
    if ((families[i].queueFlags & VK_QUEUE_GRAPHICS_BIT) == 0) break;
  }
  if (family < 0) return Unavailable("vulkan: device " + ctx->info.name + " has no compute queue");
  ctx->queue_family = static_cast<uint32_t>(family);

  const int dev_type = FindMemoryType(ctx->memory, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
  const int host_type = FindMemoryType(
      ctx->memory, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
      VK_MEMORY_PROPERTY_HOST_CACHED_BIT);
  if (dev_type < 0 || host_type < 0)
    return Unavailable("vulkan: device " + ctx->info.name +
                       " lacks device-local or host-coherent memory");
  ctx->device_type_index = static_cast<uint32_t>(dev_type);
  ctx->host_type_index = static_cast<uint32_t>(host_type);

  const float priority = 1.0f;
  VkDeviceQueueCreateInfo qi{};
  qi.sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO;
  qi.queueFamilyIndex = ctx->queue_family;
  qi.queueCount = 1;
  qi.pQueuePriorities = &priority;
  VkDeviceCreateInfo di{};
  di.sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO;
  di.queueCreateInfoCount = 1;
  di.pQueueCreateInfos = &qi;
  const VkResult r = api.vkCreateDevice(ctx->phys, &di, nullptr, &ctx->device);
  if (r != VK_SUCCESS) return VkFailure("vkCreateDevice on " + ctx->info.name, r);
  api.vkGetDeviceQueue(ctx->device, ctx->queue_family, 0, &ctx->queue);

  std::unique_ptr<VulkanBackend> b(new VulkanBackend(std::move(ctx)));
  PCFARM_RETURN_IF_ERROR(b->Init());
  return b;
}

Status VulkanBackend::Init() {
  const VulkanApi& api = ctx_->api;
  use_subgroups_ = ctx_->info.subgroup_arithmetic;
  VkCommandPoolCreateInfo pi{};
  pi.sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO;
  pi.flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT;
  pi.queueFamilyIndex = ctx_->queue_family;
  VkResult r = api.vkCreateCommandPool(ctx_->device, &pi, nullptr, &command_pool_);
  if (r != VK_SUCCESS) return VkFailure("vkCreateCommandPool", r);
  VkCommandBufferAllocateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO;
  ci.commandPool = command_pool_;
  ci.level = VK_COMMAND_BUFFER_LEVEL_PRIMARY;
  ci.commandBufferCount = 1;
  r = api.vkAllocateCommandBuffers(ctx_->device, &ci, &cmd_);
  if (r != VK_SUCCESS) return VkFailure("vkAllocateCommandBuffers", r);
  VkFenceCreateInfo fi{};
  fi.sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO;
  r = api.vkCreateFence(ctx_->device, &fi, nullptr, &fence_);
  if (r != VK_SUCCESS) return VkFailure("vkCreateFence", r);
  VkDescriptorPoolSize size{VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
                            kMaxDispatchesPerBatch * kMaxBindings};
  VkDescriptorPoolCreateInfo dpi{};
  dpi.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO;
  dpi.maxSets = kMaxDispatchesPerBatch;
  dpi.poolSizeCount = 1;
  dpi.pPoolSizes = &size;
  r = api.vkCreateDescriptorPool(ctx_->device, &dpi, nullptr, &descriptor_pool_);
  if (r != VK_SUCCESS) return VkFailure("vkCreateDescriptorPool", r);
  PCFARM_ASSIGN_OR_RETURN(args_, ctx_->CreateBuffer(1 << 20, ctx_->host_type_index, true,
                                                    false, "argument arena"));
  return Status::Ok();
}

VulkanBackend::~VulkanBackend() {
  const VulkanApi& api = ctx_->api;
  if (!ctx_->hung) {
    if (recording_) Flush().IgnoreError();
    api.vkDeviceWaitIdle(ctx_->device);
  } else {
    return;  // the device may still be running our batch: leak rather than crash
  }
  for (auto& [name, p] : pipelines_) {
    api.vkDestroyPipeline(ctx_->device, p.pipeline, nullptr);
    api.vkDestroyPipelineLayout(ctx_->device, p.layout, nullptr);
    api.vkDestroyDescriptorSetLayout(ctx_->device, p.set_layout, nullptr);
  }
  ctx_->DestroyBuffer(staging_);
  ctx_->DestroyBuffer(args_);
  if (descriptor_pool_) api.vkDestroyDescriptorPool(ctx_->device, descriptor_pool_, nullptr);
  if (fence_) api.vkDestroyFence(ctx_->device, fence_, nullptr);
  if (command_pool_) api.vkDestroyCommandPool(ctx_->device, command_pool_, nullptr);
}

DeviceInfo VulkanBackend::info() const {
  DeviceInfo d;
  const VulkanDeviceInfo& v = ctx_->info;
  d.description = "Vulkan " + std::to_string(VK_API_VERSION_MAJOR(v.api_version)) + "." +
                  std::to_string(VK_API_VERSION_MINOR(v.api_version)) + ", " + v.ToString() +
                  ", F16/BF16 stored as 2 bytes, " +
                  (use_subgroups_ ? "subgroup reductions" : "shared-memory reductions");
  d.memory_bytes = ctx_->limit_bytes != 0 ? ctx_->limit_bytes : v.memory_bytes;
  d.threads = 1;
  return d;
}

// ---- pipelines --------------------------------------------------------------------------

Result<const VulkanBackend::Pipeline*> VulkanBackend::GetPipeline(const std::string& shader,
                                                                 uint32_t bindings) {
  auto it = pipelines_.find(shader);
  if (it != pipelines_.end()) {
    assert(it->second.bindings == bindings);
    return &it->second;
  }
  const std::span<const uint32_t> code = SpirvFor(shader);
  assert(!code.empty() && "no embedded SPIR-V for this shader");
  const VulkanApi& api = ctx_->api;
  const VkDevice dev = ctx_->device;
  Pipeline p;
  p.bindings = bindings;
  VkDescriptorSetLayoutBinding lb[kMaxBindings]{};
  for (uint32_t i = 0; i < bindings; ++i) {
    lb[i].binding = i;
    lb[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    lb[i].descriptorCount = 1;
    lb[i].stageFlags = VK_SHADER_STAGE_COMPUTE_BIT;
  }
  VkDescriptorSetLayoutCreateInfo li{};
  li.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO;
  li.bindingCount = bindings;
  li.pBindings = lb;
  VkResult r = api.vkCreateDescriptorSetLayout(dev, &li, nullptr, &p.set_layout);
  if (r != VK_SUCCESS) return VkFailure("vkCreateDescriptorSetLayout for " + shader, r);
  VkPushConstantRange pcr{VK_SHADER_STAGE_COMPUTE_BIT, 0, 128};
  VkPipelineLayoutCreateInfo pli{};
  pli.sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO;
  pli.setLayoutCount = 1;
  pli.pSetLayouts = &p.set_layout;
  pli.pushConstantRangeCount = 1;
  pli.pPushConstantRanges = &pcr;
  r = api.vkCreatePipelineLayout(dev, &pli, nullptr, &p.layout);
  if (r != VK_SUCCESS) {
    api.vkDestroyDescriptorSetLayout(dev, p.set_layout, nullptr);
    return VkFailure("vkCreatePipelineLayout for " + shader, r);
  }
  VkShaderModuleCreateInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO;
  si.codeSize = code.size_bytes();
  si.pCode = code.data();
  VkShaderModule module = VK_NULL_HANDLE;
  r = api.vkCreateShaderModule(dev, &si, nullptr, &module);
  if (r == VK_SUCCESS) {
    VkComputePipelineCreateInfo ci{};
    ci.sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO;
    ci.stage.sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO;
    ci.stage.stage = VK_SHADER_STAGE_COMPUTE_BIT;
    ci.stage.module = module;
    ci.stage.pName = "main";
    ci.layout = p.layout;
    r = api.vkCreateComputePipelines(dev, VK_NULL_HANDLE, 1, &ci, nullptr, &p.pipeline);
    api.vkDestroyShaderModule(dev, module, nullptr);
  }
  if (r != VK_SUCCESS) {
    api.vkDestroyPipelineLayout(dev, p.layout, nullptr);
    api.vkDestroyDescriptorSetLayout(dev, p.set_layout, nullptr);
    return VkFailure("creating the compute pipeline for shader " + shader, r);
  }
  return &pipelines_.emplace(shader, p).first->second;
}

// ---- batches ----------------------------------------------------------------------------

Status VulkanBackend::Begin() {
  PCFARM_RETURN_IF_ERROR(Usable());
  if (recording_) return Status::Ok();
  VkCommandBufferBeginInfo bi{};
  bi.sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO;
  bi.flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT;
  const VkResult r = ctx_->api.vkBeginCommandBuffer(cmd_, &bi);
  if (r != VK_SUCCESS) return VkFailure("vkBeginCommandBuffer", r);
  recording_ = true;
  return Status::Ok();
}

void VulkanBackend::RecordBarrier() {
  // Every op may read what any earlier op (dispatch or copy) wrote.
  VkMemoryBarrier mb{};
  mb.sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER;
  mb.srcAccessMask = VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  mb.dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_SHADER_WRITE_BIT |
                     VK_ACCESS_TRANSFER_READ_BIT | VK_ACCESS_TRANSFER_WRITE_BIT;
  const VkPipelineStageFlags stages =
      VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT;
  ctx_->api.vkCmdPipelineBarrier(cmd_, stages, stages, 0, 1, &mb, 0, nullptr, 0, nullptr);
}

Status VulkanBackend::Flush() {
  PCFARM_RETURN_IF_ERROR(Usable());
  const VulkanApi& api = ctx_->api;
  if (!recording_) {
    ctx_->FreeDeferred();  // nothing submitted can use them
    return Status::Ok();
  }
  recording_ = false;
  VkResult r = api.vkEndCommandBuffer(cmd_);
  if (r != VK_SUCCESS) return broken_ = VkFailure("vkEndCommandBuffer", r);
  VkSubmitInfo si{};
  si.sType = VK_STRUCTURE_TYPE_SUBMIT_INFO;
  si.commandBufferCount = 1;
  si.pCommandBuffers = &cmd_;
  r = api.vkQueueSubmit(ctx_->queue, 1, &si, fence_);
  if (r != VK_SUCCESS) {
    broken_ = VkFailure("vkQueueSubmit of a batch of " + std::to_string(dispatches_) + " ops", r);
    return broken_;
  }
  ++submits_;
  r = api.vkWaitForFences(ctx_->device, 1, &fence_, VK_TRUE, kFenceTimeoutMs * 1000000ull);
  if (r == VK_TIMEOUT) {
    ctx_->hung = true;
    broken_ = Timeout("vulkan: device " + ctx_->info.name + " did not finish a batch of " +
                      std::to_string(dispatches_) + " ops within " +
                      std::to_string(kFenceTimeoutMs) +
                      " ms; the backend is unusable and must be recreated");
    return broken_;
  }
  if (r != VK_SUCCESS) {
    if (r == VK_ERROR_DEVICE_LOST) ctx_->hung = true;
    broken_ = VkFailure("waiting for a batch on device " + ctx_->info.name +
                            " (the backend is unusable and must be recreated)",
                        r);
    return broken_;
  }
  api.vkResetFences(ctx_->device, 1, &fence_);
  api.vkResetCommandBuffer(cmd_, 0);
  api.vkResetDescriptorPool(ctx_->device, descriptor_pool_, 0);
  dispatches_ = 0;
  args_used_ = 0;
  ctx_->FreeDeferred();
  return Status::Ok();
}

Status VulkanBackend::Synchronize() { return Flush(); }

Result<std::vector<Binding>> VulkanBackend::PushArgs(std::initializer_list<HostArray> arrays,
                                                    uint32_t dispatches) {
  PCFARM_RETURN_IF_ERROR(Usable());
  assert(dispatches <= kMaxDispatchesPerBatch);
  const uint64_t align = std::max<uint64_t>(16, ctx_->limits.minStorageBufferOffsetAlignment);
  auto round_up = [&](uint64_t x) { return (x + align - 1) / align * align; };
  uint64_t total = 0;
  for (const HostArray& a : arrays) total += round_up(std::max<uint64_t>(4, a.bytes));
  if (round_up(args_used_) + total > args_.bytes ||
      dispatches_ + dispatches > kMaxDispatchesPerBatch) {
    PCFARM_RETURN_IF_ERROR(Flush());
    if (total > args_.bytes) {
      const uint64_t want = std::max<uint64_t>(total, 2 * args_.bytes);
      PCFARM_ASSIGN_OR_RETURN(RawBuffer bigger,
                              ctx_->CreateBuffer(want, ctx_->host_type_index, true, false,
                                                 "argument arena"));
      ctx_->DestroyBuffer(args_);
      args_ = bigger;
    }
  }
  std::vector<Binding> out;
  uint64_t offset = round_up(args_used_);
  for (const HostArray& a : arrays) {
    const uint64_t size = std::max<uint64_t>(4, (a.bytes + 3) / 4 * 4);
    if (a.bytes > 0) std::memcpy(static_cast<char*>(args_.mapped) + offset, a.data, a.bytes);
    out.push_back(Binding{args_.buffer, offset, size});
    offset = round_up(offset + size);
  }
  args_used_ = offset;
  return out;
}

Status VulkanBackend::Dispatch(const std::string& shader, std::initializer_list<Binding> bindings,
                               const void* push, uint32_t push_bytes, uint32_t groups_x,
                               uint32_t groups_y) {
  PCFARM_RETURN_IF_ERROR(Usable());
  assert(bindings.size() <= kMaxBindings);
  if (groups_x == 0 || groups_y == 0) return Status::Ok();
  const uint32_t n = static_cast<uint32_t>(bindings.size());
  PCFARM_ASSIGN_OR_RETURN(const Pipeline* p, GetPipeline(shader, n));
  if (dispatches_ >= kMaxDispatchesPerBatch) PCFARM_RETURN_IF_ERROR(Flush());
  PCFARM_RETURN_IF_ERROR(Begin());
  const VulkanApi& api = ctx_->api;
  VkDescriptorSetAllocateInfo ai{};
  ai.sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO;
  ai.descriptorPool = descriptor_pool_;
  ai.descriptorSetCount = 1;
  ai.pSetLayouts = &p->set_layout;
  VkDescriptorSet set = VK_NULL_HANDLE;
  const VkResult r = api.vkAllocateDescriptorSets(ctx_->device, &ai, &set);
  if (r != VK_SUCCESS) return VkFailure("vkAllocateDescriptorSets for " + shader, r);
  VkDescriptorBufferInfo infos[kMaxBindings];
  VkWriteDescriptorSet writes[kMaxBindings]{};
  uint32_t i = 0;
  for (const Binding& b : bindings) {
    infos[i] = {b.buffer, b.offset, b.range};
    writes[i].sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET;
    writes[i].dstSet = set;
    writes[i].dstBinding = i;
    writes[i].descriptorCount = 1;
    writes[i].descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER;
    writes[i].pBufferInfo = &infos[i];
    ++i;
  }
  api.vkUpdateDescriptorSets(ctx_->device, n, writes, 0, nullptr);
  api.vkCmdBindPipeline(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p->pipeline);
  api.vkCmdBindDescriptorSets(cmd_, VK_PIPELINE_BIND_POINT_COMPUTE, p->layout, 0, 1, &set, 0,
                              nullptr);
  if (push_bytes > 0)
    api.vkCmdPushConstants(cmd_, p->layout, VK_SHADER_STAGE_COMPUTE_BIT, 0, push_bytes, push);
  api.vkCmdDispatch(cmd_, groups_x, groups_y, 1);
  RecordBarrier();
  ++dispatches_;
  return Status::Ok();
}

Status VulkanBackend::RecordCopy(VkBuffer src, VkBuffer dst, uint64_t bytes) {
  PCFARM_RETURN_IF_ERROR(Begin());
  VkBufferCopy region{0, 0, bytes};
  ctx_->api.vkCmdCopyBuffer(cmd_, src, dst, 1, &region);
  RecordBarrier();
  return Status::Ok();
}

// ---- memory and transfers ------------------------------------------------------------------

Result<Tensor> VulkanBackend::AllocImpl(Shape shape, StorageType type) {
  PCFARM_RETURN_IF_ERROR(Usable());
  const uint64_t bytes = StorageBytes(type, shape.numel());
  const std::string what =
      "allocating " + shape.ToString() + " " + StorageTypeName(type);
  // Buffers dropped since the last submit still count: give them back first.
  if (ctx_->limit_bytes != 0 && ctx_->used_bytes + bytes > ctx_->limit_bytes &&
      ctx_->HasDeferred())
    PCFARM_RETURN_IF_ERROR(Flush());
  auto raw = ctx_->CreateBuffer(bytes, ctx_->device_type_index, false, true, what);
  if (!raw.ok() && raw.status().code() == StatusCode::kResourceExhausted &&
      ctx_->HasDeferred()) {
    PCFARM_RETURN_IF_ERROR(Flush());
    raw = ctx_->CreateBuffer(bytes, ctx_->device_type_index, false, true, what);
  }
  if (!raw.ok()) return raw.status();
  return Tensor(this, std::make_shared<VulkanBuffer>(ctx_, *raw), shape, type);
}

Status VulkanBackend::EnsureStaging(uint64_t bytes) {
  if (staging_.bytes >= bytes) return Status::Ok();
  PCFARM_RETURN_IF_ERROR(Flush());  // the old staging buffer may be in use
  ctx_->DestroyBuffer(staging_);
  staging_ = {};
  PCFARM_ASSIGN_OR_RETURN(staging_, ctx_->CreateBuffer(bytes, ctx_->host_type_index, true,
                                                       false, "staging buffer"));
  return Status::Ok();
}

namespace {
constexpr uint64_t kStagingChunkBytes = 16 << 20;
}

Status VulkanBackend::WriteBuffer(
    VkBuffer dst, uint64_t bytes,
    const std::function<void(void*, uint64_t, uint64_t)>& fill) {
  PCFARM_RETURN_IF_ERROR(Usable());
  PCFARM_RETURN_IF_ERROR(EnsureStaging(std::min(bytes, kStagingChunkBytes)));
  for (uint64_t off = 0; off < bytes; off += kStagingChunkBytes) {
    const uint64_t n = std::min(kStagingChunkBytes, bytes - off);
    fill(staging_.mapped, off, n);
    PCFARM_RETURN_IF_ERROR(Begin());
    VkBufferCopy region{0, off, n};
    ctx_->api.vkCmdCopyBuffer(cmd_, staging_.buffer, dst, 1, &region);
    RecordBarrier();
    PCFARM_RETURN_IF_ERROR(Flush());  // staging is reused by the next chunk
  }
  return Status::Ok();
}

Status VulkanBackend::ReadBuffer(
    VkBuffer src, uint64_t bytes,
    const std::function<void(const void*, uint64_t, uint64_t)>& take) {
  PCFARM_RETURN_IF_ERROR(Usable());
  PCFARM_RETURN_IF_ERROR(EnsureStaging(std::min(bytes, kStagingChunkBytes)));
  for (uint64_t off = 0; off < bytes; off += kStagingChunkBytes) {
    const uint64_t n = std::min(kStagingChunkBytes, bytes - off);
    PCFARM_RETURN_IF_ERROR(Begin());
    VkBufferCopy region{off, 0, n};
    ctx_->api.vkCmdCopyBuffer(cmd_, src, staging_.buffer, 1, &region);
    RecordBarrier();
    PCFARM_RETURN_IF_ERROR(Flush());
    take(staging_.mapped, off, n);
  }
  return Status::Ok();
}

namespace {

// Converts elements [first, first + count) of f32 `src` into `dst` storage.
void EncodeElements(StorageType type, const float* src, void* dst, uint64_t count) {
  if (type == StorageType::kF32) {
    std::memcpy(dst, src, count * 4);
    return;
  }
  auto* d = static_cast<uint16_t*>(dst);
  for (uint64_t i = 0; i < count; ++i)
    d[i] = type == StorageType::kF16 ? F32ToF16(src[i]) : F32ToBF16(src[i]);
}

void DecodeElements(StorageType type, const void* src, float* dst, uint64_t count) {
  if (type == StorageType::kF32) {
    std::memcpy(dst, src, count * 4);
    return;
  }
  const auto* s = static_cast<const uint16_t*>(src);
  for (uint64_t i = 0; i < count; ++i)
    dst[i] = type == StorageType::kF16 ? F16ToF32(s[i]) : BF16ToF32(s[i]);
}

}  // namespace

Status VulkanBackend::UploadImpl(const Tensor& t, std::span<const float> src) {
  const uint64_t es = StorageTypeSize(t.type());
  return WriteBuffer(Bind(t).buffer, t.bytes(), [&](void* staging, uint64_t off, uint64_t n) {
    EncodeElements(t.type(), src.data() + off / es, staging, n / es);
  });
}

Status VulkanBackend::DownloadImpl(const Tensor& t, std::span<float> dst) {
  if (IsQuantized(t.type())) {
    // Whole blocks on the host (staging chunks would cut them), then the
    // reference dequantizer.
    std::vector<std::byte> raw(t.bytes());
    PCFARM_RETURN_IF_ERROR(DownloadBytesImpl(t, raw));
    const uint32_t g = StorageGgmlType(t.type());
    DequantizeBlocks(g, reinterpret_cast<const uint8_t*>(raw.data()),
                     t.numel() / GgmlBlockValues(g), dst.data());
    return Status::Ok();
  }
  const uint64_t es = StorageTypeSize(t.type());
  return ReadBuffer(Bind(t).buffer, t.bytes(), [&](const void* staging, uint64_t off, uint64_t n) {
    DecodeElements(t.type(), staging, dst.data() + off / es, n / es);
  });
}

Status VulkanBackend::UploadBytesImpl(const Tensor& t, std::span<const std::byte> src) {
  return WriteBuffer(Bind(t).buffer, t.bytes(), [&](void* staging, uint64_t off, uint64_t n) {
    std::memcpy(staging, src.data() + off, n);
  });
}

Status VulkanBackend::DownloadBytesImpl(const Tensor& t, std::span<std::byte> dst) {
  return ReadBuffer(Bind(t).buffer, t.bytes(), [&](const void* staging, uint64_t off, uint64_t n) {
    std::memcpy(dst.data() + off, staging, n);
  });
}

}  // namespace vk
}  // namespace pcfarm
