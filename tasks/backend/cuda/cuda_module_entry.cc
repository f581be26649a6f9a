// The entry point of libpcfarm_cuda.so (cuda_module.h): the table of the
// CUDA backend's functions. Built into the module only.
#include "tasks/backend/cuda/cuda_backend.h"
#include "tasks/backend/cuda/cuda_devices.h"
#include "tasks/backend/cuda/cuda_module.h"

extern "C" __attribute__((visibility("default"))) const pcfarm::CudaModuleApi*
pcfarm_cuda_module() {
  using namespace pcfarm;
  static const CudaModuleApi kApi = [] {
    CudaModuleApi a;
    a.abi = kCudaModuleAbi;
    a.sizeof_status = sizeof(Status);
    a.sizeof_options = sizeof(BackendOptions);
    a.sizeof_device_info = sizeof(CudaDeviceInfo);
    a.score = &CudaBackendScore;
    a.create = &CreateCudaBackend;
    a.list_devices = &ListCudaDevices;
    a.device_free_bytes = &CudaDeviceFreeBytes;
    a.versions = &GetCudaVersions;
    return a;
  }();
  return &kApi;
}
