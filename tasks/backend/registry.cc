#include "tasks/backend/registry.h"

#include <algorithm>

#include "tasks/backend/cpu/cpu_backend.h"
#if PCFARM_HAVE_CUDA
#include "tasks/backend/cuda/cuda_module.h"
#endif
#if PCFARM_HAVE_VULKAN
#include "tasks/backend/vulkan/vulkan_backend.h"
#endif

namespace pcfarm {

const std::vector<BackendRegistration>& RegisteredBackends() {
  static const std::vector<BackendRegistration> kBackends = {
      {"cpu", &CpuBackendScore, &CreateCpuBackend},
#if PCFARM_HAVE_CUDA
      {"cuda", &CudaModuleScore, &CreateCudaModuleBackend},
#endif
#if PCFARM_HAVE_VULKAN
      {"vulkan", &VulkanBackendScore, &CreateVulkanBackend},
#endif
  };
  return kBackends;
}

std::vector<std::string> RegisteredBackendNames() {
  std::vector<std::string> names;
  for (const auto& r : RegisteredBackends()) names.push_back(r.name);
  return names;
}

Result<std::unique_ptr<Backend>> CreateBackend(std::string_view name,
                                               const BackendOptions& options) {
  std::string known;
  for (const auto& r : RegisteredBackends()) {
    if (r.name == name) return r.create(options);
    known += (known.empty() ? "" : ", ") + r.name;
  }
  return NotFound("backend \"" + std::string(name) +
                  "\" is not built into this binary (have: " + known + ")");
}

Result<std::unique_ptr<Backend>> CreateBestBackend(const BackendOptions& options) {
  std::vector<std::pair<int, const BackendRegistration*>> ranked;
  for (const auto& r : RegisteredBackends()) {
    const int score = r.score(options);
    if (score > 0) ranked.emplace_back(score, &r);
  }
  std::stable_sort(ranked.begin(), ranked.end(),
                   [](const auto& a, const auto& b) { return a.first > b.first; });
  Status last = Unavailable("no backend has a usable device");
  for (const auto& [score, r] : ranked) {
    auto backend = r->create(options);
    if (backend.ok()) return backend;
    last = backend.status().WithContext("backend " + r->name);
  }
  return last;
}

}  // namespace pcfarm
