#include "tasks/backend/vulkan/vulkan_devices.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <vector>

#include "tasks/backend/vulkan/vulkan_internal.h"

namespace pcfarm {

const char* VulkanDeviceTypeName(VulkanDeviceType t) {
  switch (t) {
    case VulkanDeviceType::kOther: return "other";
    case VulkanDeviceType::kIntegratedGpu: return "integrated GPU";
    case VulkanDeviceType::kDiscreteGpu: return "discrete GPU";
    case VulkanDeviceType::kVirtualGpu: return "virtual GPU";
    case VulkanDeviceType::kCpu: return "CPU";
  }
  return "other";
}

std::string VulkanDeviceInfo::ToString() const {
  char mem[32];
  std::snprintf(mem, sizeof mem, "%.1f GiB", static_cast<double>(memory_bytes) / (1 << 30));
  std::string s = name + " [" + VulkanDeviceTypeName(type) + ", " + vendor + ", " + mem;
  if (fp16()) s += ", fp16";
  if (subgroup_size > 0) s += ", subgroup " + std::to_string(subgroup_size);
  return s + "]";
}

namespace vk {

static bool HasDeviceExtension(const VulkanApi& api, VkPhysicalDevice phys, const char* name) {
  uint32_t count = 0;
  if (api.vkEnumerateDeviceExtensionProperties(phys, nullptr, &count, nullptr) != VK_SUCCESS)
    return false;
  std::vector<VkExtensionProperties> exts(count);
  VkResult r = api.vkEnumerateDeviceExtensionProperties(phys, nullptr, &count, exts.data());
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) return false;
  for (uint32_t i = 0; i < count && i < exts.size(); ++i)
    if (std::strcmp(exts[i].extensionName, name) == 0) return true;
  return false;
}

VulkanDeviceInfo DescribeDevice(const VulkanApi& api, VkPhysicalDevice phys, int index) {
  VulkanDeviceInfo d;
  d.index = index;
  VkPhysicalDeviceSubgroupProperties sub{};
  sub.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES;
  VkPhysicalDeviceProperties2 props{};
  props.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props.pNext = &sub;
  api.vkGetPhysicalDeviceProperties2(phys, &props);
  const VkPhysicalDeviceProperties& p = props.properties;
  d.name = p.deviceName;
  d.vendor_id = p.vendorID;
  switch (p.vendorID) {
    case 0x10de: d.vendor = "NVIDIA"; break;
    case 0x1002: d.vendor = "AMD"; break;
    case 0x8086: d.vendor = "Intel"; break;
    case 0x13b5: d.vendor = "ARM"; break;
    case 0x5143: d.vendor = "Qualcomm"; break;
    case 0x106b: d.vendor = "Apple"; break;
    case 0x10005: d.vendor = "Mesa"; break;
    default: {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%x", p.vendorID);
      d.vendor = hex;
    }
  }
  switch (p.deviceType) {
    case VK_PHYSICAL_DEVICE_TYPE_INTEGRATED_GPU: d.type = VulkanDeviceType::kIntegratedGpu; break;
    case VK_PHYSICAL_DEVICE_TYPE_DISCRETE_GPU: d.type = VulkanDeviceType::kDiscreteGpu; break;
    case VK_PHYSICAL_DEVICE_TYPE_VIRTUAL_GPU: d.type = VulkanDeviceType::kVirtualGpu; break;
    case VK_PHYSICAL_DEVICE_TYPE_CPU: d.type = VulkanDeviceType::kCpu; break;
    default: d.type = VulkanDeviceType::kOther;
  }
  d.api_version = p.apiVersion;
  d.driver = "driver version " + std::to_string(p.driverVersion);
  // Structs of Vulkan 1.2 are chained only for devices that know them.
  const bool v12 = p.apiVersion >= VK_API_VERSION_1_2;
  if (v12) {
    VkPhysicalDeviceDriverProperties drv{};
    drv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_DRIVER_PROPERTIES;
    VkPhysicalDeviceProperties2 props_drv{};
    props_drv.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
    props_drv.pNext = &drv;
    api.vkGetPhysicalDeviceProperties2(phys, &props_drv);
    d.driver = std::string(drv.driverName) + " " + drv.driverInfo;
  }
  d.subgroup_size = sub.subgroupSize;
  d.subgroup_arithmetic =
      (sub.supportedStages & VK_SHADER_STAGE_COMPUTE_BIT) != 0 &&
      (sub.supportedOperations & VK_SUBGROUP_FEATURE_BASIC_BIT) != 0 &&
      (sub.supportedOperations & VK_SUBGROUP_FEATURE_ARITHMETIC_BIT) != 0;

  VkPhysicalDeviceMaintenance3Properties m3{};
  m3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES;
  VkPhysicalDeviceProperties2 props_m3{};
  props_m3.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2;
  props_m3.pNext = &m3;
  api.vkGetPhysicalDeviceProperties2(phys, &props_m3);
  d.max_buffer_bytes = p.limits.maxStorageBufferRange;
  if (m3.maxMemoryAllocationSize != 0 && m3.maxMemoryAllocationSize < d.max_buffer_bytes)
    d.max_buffer_bytes = m3.maxMemoryAllocationSize;

  VkPhysicalDeviceShaderFloat16Int8Features f16{};
  f16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES;
  VkPhysicalDevice16BitStorageFeatures s16{};
  s16.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES;
  s16.pNext = v12 ? &f16 : nullptr;
  VkPhysicalDeviceFeatures2 feats{};
  feats.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2;
  feats.pNext = &s16;
  api.vkGetPhysicalDeviceFeatures2(phys, &feats);
  d.storage_16bit = s16.storageBuffer16BitAccess == VK_TRUE;
  // shaderFloat16 is a Vulkan 1.2 feature (left false on 1.1 devices).
  d.shader_float16 = v12 && f16.shaderFloat16 == VK_TRUE;

  VkPhysicalDeviceMemoryBudgetPropertiesEXT budget{};
  budget.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT;
  VkPhysicalDeviceMemoryProperties2 mem2{};
  mem2.sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2;
  const bool has_budget = HasDeviceExtension(api, phys, VK_EXT_MEMORY_BUDGET_EXTENSION_NAME);
  if (has_budget) mem2.pNext = &budget;
  api.vkGetPhysicalDeviceMemoryProperties2(phys, &mem2);
  const VkPhysicalDeviceMemoryProperties& mem = mem2.memoryProperties;
  for (uint32_t i = 0; i < mem.memoryHeapCount; ++i)
    if ((mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT) != 0 &&
        mem.memoryHeaps[i].size > d.memory_bytes) {
      d.memory_bytes = mem.memoryHeaps[i].size;
      d.budget_bytes = has_budget ? std::min(budget.heapBudget[i], d.memory_bytes) : 0;
    }
  return d;
}

Result<std::vector<VkPhysicalDevice>> EnumerateDevices(const VulkanApi& api,
                                                       VkInstance instance) {
  uint32_t count = 0;
  VkResult r = api.vkEnumeratePhysicalDevices(instance, &count, nullptr);
  if (r != VK_SUCCESS) return VkFailure("vkEnumeratePhysicalDevices", r);
  std::vector<VkPhysicalDevice> devs(count);
  r = api.vkEnumeratePhysicalDevices(instance, &count, devs.data());
  if (r != VK_SUCCESS && r != VK_INCOMPLETE) return VkFailure("vkEnumeratePhysicalDevices", r);
  devs.resize(count);
  return devs;
}

}  // namespace vk

Result<std::vector<VulkanDeviceInfo>> ListVulkanDevices() {
  PCFARM_ASSIGN_OR_RETURN(vk::VulkanApi api, vk::LoadVulkanLoader());
  PCFARM_ASSIGN_OR_RETURN(VkInstance instance, vk::CreateInstance(&api));
  auto devs = vk::EnumerateDevices(api, instance);
  std::vector<VulkanDeviceInfo> out;
  if (devs.ok())
    for (size_t i = 0; i < devs->size(); ++i)
      out.push_back(vk::DescribeDevice(api, (*devs)[i], static_cast<int>(i)));
  api.vkDestroyInstance(instance, nullptr);
  if (!devs.ok()) return devs.status();
  return out;
}

}  // namespace pcfarm
