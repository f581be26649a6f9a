// The Vulkan entry points the backend uses, loaded at run time from the
// system's loader (libvulkan.so.1) so that a binary built with Vulkan still
// starts on a machine without it. Internal to tasks/backend/vulkan/.
//
// Thread-safety: LoadVulkanLoader may be called from any thread (it opens
// the library once); a VulkanApi is immutable once loaded.
#pragma once

#ifndef VK_NO_PROTOTYPES
#define VK_NO_PROTOTYPES
#endif
#include <vulkan/vulkan.h>

#include <string>

#include "base/status.h"

namespace pcfarm::vk {

// Functions loaded with vkGetInstanceProcAddr(nullptr, ...).
#define PCFARM_VK_GLOBAL_FUNCS(X) \
  X(vkCreateInstance)             \
  X(vkEnumerateInstanceVersion)

// Instance and device functions, loaded with vkGetInstanceProcAddr(instance,
// ...); device functions so loaded dispatch through the loader for any device.
#define PCFARM_VK_INSTANCE_FUNCS(X)           \
  X(vkDestroyInstance)                        \
  X(vkEnumeratePhysicalDevices)               \
  X(vkGetPhysicalDeviceProperties)            \
  X(vkGetPhysicalDeviceProperties2)           \
  X(vkGetPhysicalDeviceFeatures2)             \
  X(vkGetPhysicalDeviceMemoryProperties)      \
  X(vkGetPhysicalDeviceMemoryProperties2)     \
  X(vkEnumerateDeviceExtensionProperties)     \
  X(vkGetPhysicalDeviceQueueFamilyProperties) \
  X(vkCreateDevice)                           \
  X(vkDestroyDevice)                          \
  X(vkGetDeviceQueue)                         \
  X(vkCreateBuffer)                           \
  X(vkDestroyBuffer)                          \
  X(vkGetBufferMemoryRequirements)            \
  X(vkAllocateMemory)                         \
  X(vkFreeMemory)                             \
  X(vkBindBufferMemory)                       \
  X(vkMapMemory)                              \
  X(vkUnmapMemory)                            \
  X(vkCreateShaderModule)                     \
  X(vkDestroyShaderModule)                    \
  X(vkCreateDescriptorSetLayout)              \
  X(vkDestroyDescriptorSetLayout)             \
  X(vkCreatePipelineLayout)                   \
  X(vkDestroyPipelineLayout)                  \
  X(vkCreateComputePipelines)                 \
  X(vkDestroyPipeline)                        \
  X(vkCreateDescriptorPool)                   \
  X(vkDestroyDescriptorPool)                  \
  X(vkResetDescriptorPool)                    \
  X(vkAllocateDescriptorSets)                 \
  X(vkUpdateDescriptorSets)                   \
  X(vkCreateCommandPool)                      \
  X(vkDestroyCommandPool)                     \
  X(vkAllocateCommandBuffers)                 \
  X(vkResetCommandBuffer)                     \
  X(vkBeginCommandBuffer)                     \
  X(vkEndCommandBuffer)                       \
  X(vkCmdBindPipeline)                        \
  X(vkCmdBindDescriptorSets)                  \
  X(vkCmdPushConstants)                       \
  X(vkCmdDispatch)                            \
  X(vkCmdPipelineBarrier)                     \
  X(vkCmdCopyBuffer)                          \
  X(vkCmdFillBuffer)                          \
  X(vkCreateFence)                            \
  X(vkDestroyFence)                           \
  X(vkResetFences)                            \
  X(vkWaitForFences)                          \
  X(vkQueueSubmit)                            \
  X(vkDeviceWaitIdle)

struct VulkanApi {
#define PCFARM_VK_DECLARE(name) PFN_##name name = nullptr;
  PCFARM_VK_GLOBAL_FUNCS(PCFARM_VK_DECLARE)
  PCFARM_VK_INSTANCE_FUNCS(PCFARM_VK_DECLARE)
#undef PCFARM_VK_DECLARE
};

// "VK_ERROR_OUT_OF_DEVICE_MEMORY" etc.
const char* VkResultName(VkResult r);

// The status for a failed call: kResourceExhausted for out-of-memory
// results, kInternal otherwise; the message is "vulkan: <what>: <result>".
Status VkFailure(const std::string& what, VkResult r);

// Opens the loader (once per process) and fills the global functions.
// kUnavailable naming the library when there is no Vulkan loader.
Result<VulkanApi> LoadVulkanLoader();

// Creates a Vulkan 1.1 instance (no layers, no extensions beyond
// portability enumeration where offered) and fills the instance functions.
// kUnavailable when the loader has no driver (VK_ERROR_INCOMPATIBLE_DRIVER).
// The caller destroys the instance with api->vkDestroyInstance.
Result<VkInstance> CreateInstance(VulkanApi* api);

}  // namespace pcfarm::vk
