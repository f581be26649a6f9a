#include "tasks/backend/cuda/cuda_module.h"

#include <dlfcn.h>
#include <unistd.h>

#include <climits>
#include <cstdlib>
#include <mutex>

namespace pcfarm {
namespace {

// The directory of this program (/proc/self/exe), or "" when unknown.
std::string ProgramDir() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return "";
  std::string path(buf, size_t(n));
  size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

}  // namespace

Result<const CudaModuleApi*> LoadCudaModuleFrom(const std::string& path) {
  // RTLD_LOCAL: the module's symbols (and those of the CUDA libraries it
  // brings) stay out of the program's global scope.
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* e = ::dlerror();
    return Unavailable(e ? e : path + ": cannot be opened");
  }
  using Entry = const CudaModuleApi* (*)();
  auto entry = reinterpret_cast<Entry>(::dlsym(handle, "pcfarm_cuda_module"));
  const CudaModuleApi* api = entry ? entry() : nullptr;
  std::string why;
  if (api == nullptr) {
    why = "no pcfarm_cuda_module entry point";
  } else if (api->abi != kCudaModuleAbi || api->sizeof_status != sizeof(Status) ||
             api->sizeof_options != sizeof(BackendOptions) ||
             api->sizeof_device_info != sizeof(CudaDeviceInfo) || !api->score ||
             !api->create || !api->list_devices || !api->device_free_bytes ||
             !api->versions) {
    why = "built from another pcfarm (module interface " + std::to_string(api->abi) +
          ", this program's " + std::to_string(kCudaModuleAbi) + "); reinstall both";
  }
  if (!why.empty()) {
    ::dlclose(handle);
    return Unavailable(path + ": " + why);
  }
  // Never closed: backends and tensors it made may live to the end.
  return api;
}

Result<const CudaModuleApi*> LoadCudaModule() {
  static std::once_flag once;
  static Result<const CudaModuleApi*> loaded = Unavailable("not loaded");
  std::call_once(once, [] {
    std::vector<std::string> tries;
    if (const char* env = std::getenv("PCFARM_CUDA_MODULE"); env != nullptr && *env != '\0') {
      tries.push_back(env);
    } else {
      const std::string dir = ProgramDir();
      if (!dir.empty()) {
        tries.push_back(dir + "/" + kCudaModuleFile);
        tries.push_back(dir + "/../lib/pcfarm/" + kCudaModuleFile);
      }
      tries.push_back(kCudaModuleFile);
    }
    std::string why;
    for (const std::string& path : tries) {
      auto api = LoadCudaModuleFrom(path);
      if (api.ok()) {
        loaded = api;
        return;
      }
      why += (why.empty() ? "" : "; ") + api.status().message();
    }
    loaded = Unavailable("cuda: cannot load the CUDA backend module: " + why);
  });
  return loaded;
}

int CudaModuleScore(const BackendOptions& options) {
  auto api = LoadCudaModule();
  return api.ok() ? (*api)->score(options) : 0;
}

Result<std::unique_ptr<Backend>> CreateCudaModuleBackend(const BackendOptions& options) {
  PCFARM_ASSIGN_OR_RETURN(const CudaModuleApi* api, LoadCudaModule());
  return api->create(options);
}

}  // namespace pcfarm
