#include "tasks/backend/cuda/cuda_devices.h"

#include <algorithm>

#include <cuda_runtime_api.h>
#include <dlfcn.h>

#include <cstdio>
#include <mutex>

namespace pcfarm {
namespace {

// The few NVML entry points we call, declared here (their C ABI is stable)
// so that building needs no NVML header and running needs no NVML library.
using NvmlReturn = int;  // nvmlReturn_t; 0 = NVML_SUCCESS
using NvmlDevice = struct NvmlDeviceOpaque*;
struct NvmlUtilization {
  unsigned int gpu;
  unsigned int memory;
};
constexpr int kNvmlTemperatureGpu = 0;

struct Nvml {
  NvmlReturn (*init)() = nullptr;
  NvmlReturn (*by_pci_bus_id)(const char*, NvmlDevice*) = nullptr;
  NvmlReturn (*utilization)(NvmlDevice, NvmlUtilization*) = nullptr;
  NvmlReturn (*temperature)(NvmlDevice, int, unsigned int*) = nullptr;
  bool ok = false;
};

// Opens and initialises NVML once per process; never closed (the driver's
// library stays loaded anyway while the CUDA runtime is).
const Nvml& GetNvml() {
  static const Nvml nvml = [] {
    Nvml n;
    void* lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (lib == nullptr) return n;
    n.init = reinterpret_cast<NvmlReturn (*)()>(dlsym(lib, "nvmlInit_v2"));
    n.by_pci_bus_id = reinterpret_cast<NvmlReturn (*)(const char*, NvmlDevice*)>(
        dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2"));
    n.utilization = reinterpret_cast<NvmlReturn (*)(NvmlDevice, NvmlUtilization*)>(
        dlsym(lib, "nvmlDeviceGetUtilizationRates"));
    n.temperature = reinterpret_cast<NvmlReturn (*)(NvmlDevice, int, unsigned int*)>(
        dlsym(lib, "nvmlDeviceGetTemperature"));
    n.ok = n.init != nullptr && n.by_pci_bus_id != nullptr && n.utilization != nullptr &&
           n.temperature != nullptr && n.init() == 0;
    return n;
  }();
  return nvml;
}

// NVML numbers devices differently from CUDA unless CUDA_DEVICE_ORDER is
// PCI_BUS_ID, so devices are matched by PCI bus id.
void AddNvmlFields(CudaDeviceInfo& d) {
  const Nvml& nvml = GetNvml();
  if (!nvml.ok || d.pci_bus_id.empty()) return;
  NvmlDevice dev = nullptr;
  if (nvml.by_pci_bus_id(d.pci_bus_id.c_str(), &dev) != 0) return;
  NvmlUtilization util{};
  if (nvml.utilization(dev, &util) == 0) d.utilization_percent = static_cast<int>(util.gpu);
  unsigned int temp = 0;
  if (nvml.temperature(dev, kNvmlTemperatureGpu, &temp) == 0)
    d.temperature_c = static_cast<int>(temp);
}

}  // namespace

std::string CudaDeviceInfo::ToString() const {
  char mem[32];
  std::snprintf(mem, sizeof(mem), "%.1f GiB",
                static_cast<double>(memory_bytes) / (1024.0 * 1024.0 * 1024.0));
  return name + ", sm_" + std::to_string(compute_major) + std::to_string(compute_minor) +
         ", " + mem;
}

CudaVersions GetCudaVersions() {
  CudaVersions v;
  if (cudaDriverGetVersion(&v.driver) != cudaSuccess) v.driver = 0;
  if (cudaRuntimeGetVersion(&v.runtime) != cudaSuccess) v.runtime = 0;
  return v;
}

Result<std::vector<CudaDeviceInfo>> ListCudaDevices() {
  int count = 0;
  const cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess) {
    cudaGetLastError();  // not sticky; clear it for later calls
    return Unavailable(std::string("cuda: no usable driver or device: ") +
                       cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
  }
  if (count == 0) return Unavailable("cuda: the driver reports no CUDA device");
  std::vector<CudaDeviceInfo> devices;
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (const cudaError_t pe = cudaGetDeviceProperties(&prop, i); pe != cudaSuccess)
      return Unavailable("cuda: reading the properties of device " + std::to_string(i) +
                         ": " + cudaGetErrorString(pe));
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.compute_major = prop.major;
    d.compute_minor = prop.minor;
    d.memory_bytes = prop.totalGlobalMem;
    d.multiprocessors = prop.multiProcessorCount;
    char bus[64] = {};
    if (cudaDeviceGetPCIBusId(bus, sizeof(bus), i) == cudaSuccess) d.pci_bus_id = bus;
    int previous = 0;
    if (cudaGetDevice(&previous) == cudaSuccess && cudaSetDevice(i) == cudaSuccess) {
      size_t free_bytes = 0, total = 0;
      if (cudaMemGetInfo(&free_bytes, &total) == cudaSuccess) d.free_bytes = free_bytes;
      cudaSetDevice(previous);
    }
    cudaGetLastError();
    AddNvmlFields(d);
    devices.push_back(std::move(d));
  }
  return devices;
}

Result<uint64_t> CudaDeviceFreeBytes(int index) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || index < 0 || index >= count) {
    cudaGetLastError();
    return Unavailable("cuda: no device " + std::to_string(index));
  }
  int previous = 0;
  if (cudaGetDevice(&previous) != cudaSuccess || cudaSetDevice(index) != cudaSuccess) {
    cudaGetLastError();
    return Unavailable("cuda: cannot select device " + std::to_string(index));
  }
  size_t free_bytes = 0, total = 0;
  const cudaError_t e = cudaMemGetInfo(&free_bytes, &total);
  cudaSetDevice(previous);
  cudaGetLastError();
  if (e != cudaSuccess)
    return Unavailable(std::string("cuda: cudaMemGetInfo: ") + cudaGetErrorString(e));
  return std::min<uint64_t>(uint64_t(free_bytes) + CudaBytesHeld(index), uint64_t(total));
}

}  // namespace pcfarm
