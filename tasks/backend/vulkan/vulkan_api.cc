#include "tasks/backend/vulkan/vulkan_api.h"

#include <dlfcn.h>

#include <mutex>

namespace pcfarm::vk {

const char* VkResultName(VkResult r) {
  switch (r) {
#define PCFARM_VK_CASE(x) \
  case x:                 \
    return #x;
    PCFARM_VK_CASE(VK_SUCCESS)
    PCFARM_VK_CASE(VK_NOT_READY)
    PCFARM_VK_CASE(VK_TIMEOUT)
    PCFARM_VK_CASE(VK_INCOMPLETE)
    PCFARM_VK_CASE(VK_ERROR_OUT_OF_HOST_MEMORY)
    PCFARM_VK_CASE(VK_ERROR_OUT_OF_DEVICE_MEMORY)
    PCFARM_VK_CASE(VK_ERROR_INITIALIZATION_FAILED)
    PCFARM_VK_CASE(VK_ERROR_DEVICE_LOST)
    PCFARM_VK_CASE(VK_ERROR_MEMORY_MAP_FAILED)
    PCFARM_VK_CASE(VK_ERROR_LAYER_NOT_PRESENT)
    PCFARM_VK_CASE(VK_ERROR_EXTENSION_NOT_PRESENT)
    PCFARM_VK_CASE(VK_ERROR_FEATURE_NOT_PRESENT)
    PCFARM_VK_CASE(VK_ERROR_INCOMPATIBLE_DRIVER)
    PCFARM_VK_CASE(VK_ERROR_TOO_MANY_OBJECTS)
    PCFARM_VK_CASE(VK_ERROR_FORMAT_NOT_SUPPORTED)
    PCFARM_VK_CASE(VK_ERROR_FRAGMENTED_POOL)
    PCFARM_VK_CASE(VK_ERROR_OUT_OF_POOL_MEMORY)
    PCFARM_VK_CASE(VK_ERROR_INVALID_SHADER_NV)
    PCFARM_VK_CASE(VK_ERROR_UNKNOWN)
#undef PCFARM_VK_CASE
    default:
      return "VkResult (unnamed)";
  }
}

Status VkFailure(const std::string& what, VkResult r) {
  std::string msg = "vulkan: " + what + ": " + VkResultName(r) + " (" +
                    std::to_string(static_cast<int>(r)) + ")";
  if (r == VK_ERROR_OUT_OF_DEVICE_MEMORY || r == VK_ERROR_OUT_OF_HOST_MEMORY ||
      r == VK_ERROR_OUT_OF_POOL_MEMORY || r == VK_ERROR_TOO_MANY_OBJECTS)
    return ResourceExhausted(std::move(msg));
  if (r == VK_TIMEOUT) return Timeout(std::move(msg));
  return Internal(std::move(msg));
}

namespace {

struct Loader {
  void* handle = nullptr;
  PFN_vkGetInstanceProcAddr get_proc = nullptr;
  std::string error;
};

const Loader& TheLoader() {
  static const Loader loader = [] {
    Loader l;
    for (const char* name : {"libvulkan.so.1", "libvulkan.so"}) {
      l.handle = dlopen(name, RTLD_NOW | RTLD_LOCAL);
      if (l.handle != nullptr) break;
    }
    if (l.handle == nullptr) {
      const char* e = dlerror();
      l.error = "vulkan: no Vulkan loader (libvulkan.so.1) on this machine" +
                std::string(e ? std::string(": ") + e : "");
      return l;
    }
    l.get_proc = reinterpret_cast<PFN_vkGetInstanceProcAddr>(
        dlsym(l.handle, "vkGetInstanceProcAddr"));
    if (l.get_proc == nullptr)
      l.error = "vulkan: libvulkan.so.1 has no vkGetInstanceProcAddr";
    return l;
  }();
  return loader;
}

}  // namespace

Result<VulkanApi> LoadVulkanLoader() {
  const Loader& l = TheLoader();
  if (l.get_proc == nullptr) return Unavailable(l.error);
  VulkanApi api;
#define PCFARM_VK_LOAD_GLOBAL(name) \
  api.name = reinterpret_cast<PFN_##name>(l.get_proc(nullptr, #name));
  PCFARM_VK_GLOBAL_FUNCS(PCFARM_VK_LOAD_GLOBAL)
#undef PCFARM_VK_LOAD_GLOBAL
  if (api.vkCreateInstance == nullptr)
    return Unavailable("vulkan: the loader does not export vkCreateInstance");
  return api;
}

Result<VkInstance> CreateInstance(VulkanApi* api) {
  uint32_t version = VK_API_VERSION_1_0;
  if (api->vkEnumerateInstanceVersion != nullptr)
    api->vkEnumerateInstanceVersion(&version);
  if (version < VK_API_VERSION_1_1)
    return Unavailable("vulkan: the loader offers Vulkan " +
                       std::to_string(VK_API_VERSION_MAJOR(version)) + "." +
                       std::to_string(VK_API_VERSION_MINOR(version)) +
                       "; the backend needs 1.1");
  VkApplicationInfo app{};
  app.sType = VK_STRUCTURE_TYPE_APPLICATION_INFO;
  app.pApplicationName = "pcfarm";
  app.pEngineName = "pcfarm";
  app.apiVersion = VK_API_VERSION_1_1;
  VkInstanceCreateInfo ci{};
  ci.sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO;
  ci.pApplicationInfo = &app;
  VkInstance instance = VK_NULL_HANDLE;
  const VkResult r = api->vkCreateInstance(&ci, nullptr, &instance);
  if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
    return Unavailable("vulkan: the loader found no Vulkan driver (ICD) on this machine");
  if (r != VK_SUCCESS) return VkFailure("vkCreateInstance", r);
  const Loader& l = TheLoader();
#define PCFARM_VK_LOAD_INSTANCE(name)                                          \
  api->name = reinterpret_cast<PFN_##name>(l.get_proc(instance, #name));     \
  if (api->name == nullptr) {                                                  \
    if (api->vkDestroyInstance != nullptr) api->vkDestroyInstance(instance, nullptr); \
    return Unavailable("vulkan: the loader does not provide " #name);         \
  }
  PCFARM_VK_INSTANCE_FUNCS(PCFARM_VK_LOAD_INSTANCE)
#undef PCFARM_VK_LOAD_INSTANCE
  return instance;
}

}  // namespace pcfarm::vk
