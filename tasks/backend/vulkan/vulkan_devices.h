// Listing the Vulkan devices of this machine, for `pcfarm-worker devices`
// and for the Vulkan backend's device choice and score.
//
// Needs no Vulkan at build time beyond this header's plain structs: on a
// machine without a loader or driver, ListVulkanDevices returns a status.
// Thread-safety: ListVulkanDevices may be called from any thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"

namespace pcfarm {

enum class VulkanDeviceType { kOther, kIntegratedGpu, kDiscreteGpu, kVirtualGpu, kCpu };

// "other", "integrated GPU", "discrete GPU", "virtual GPU", "CPU".
const char* VulkanDeviceTypeName(VulkanDeviceType t);

struct VulkanDeviceInfo {
  int index = 0;              // BackendOptions::device_index that selects it
  std::string name;           // e.g. "NVIDIA GeForce RTX 3060", "llvmpipe (LLVM 15.0.6, 256 bits)"
  uint32_t vendor_id = 0;     // PCI vendor id (0x10de NVIDIA, 0x1002 AMD, 0x8086 Intel)
  std::string vendor;         // "NVIDIA", "AMD", "Intel", "Mesa", or the id in hex
  VulkanDeviceType type = VulkanDeviceType::kOther;
  std::string driver;         // e.g. "llvmpipe Mesa 22.3.6 (LLVM 15.0.6)" (Vulkan 1.2 devices)
  uint32_t api_version = 0;   // VK_MAKE_API_VERSION form
  uint64_t memory_bytes = 0;  // the largest device-local heap
  // VK_EXT_memory_budget's heapBudget of that heap when the device has the
  // extension: how much of it this process may use now, counting what it
  // already holds (others' use, e.g. a game, is taken out). 0: unknown.
  uint64_t budget_bytes = 0;
  bool shader_float16 = false;     // shaderFloat16 (f16 arithmetic)
  bool storage_16bit = false;      // storageBuffer16BitAccess
  uint32_t subgroup_size = 0;      // default subgroup size (0 when unknown)
  bool subgroup_arithmetic = false;  // subgroupAdd/Max in compute shaders
  uint64_t max_buffer_bytes = 0;   // largest tensor: min(maxStorageBufferRange, maxMemoryAllocationSize)
  // fp16 in the `devices` listing: f16 arithmetic and 16-bit storage.
  bool fp16() const { return shader_float16 && storage_16bit; }
  // "llvmpipe (…) [CPU, Mesa, 31.3 GiB, fp16, subgroup 8]".
  std::string ToString() const;
};

// Every physical device the Vulkan loader reports, in its order (the order
// device_index counts in). An empty list when there is a loader but no
// device; kUnavailable when there is no loader or no driver.
Result<std::vector<VulkanDeviceInfo>> ListVulkanDevices();

}  // namespace pcfarm
