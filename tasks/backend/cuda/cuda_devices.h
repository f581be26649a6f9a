// The NVIDIA GPUs this machine has, as the CUDA runtime and (when installed)
// NVML see them: for pcfarm-worker's device list and the backend's choice.
//
// NVML (libnvidia-ml.so.1, part of the driver) is opened at run time with
// dlopen; where it is absent the NVML fields stay empty (std::nullopt).
//
// Thread-safety: ListCudaDevices may be called from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/status.h"

namespace pcfarm {

struct CudaDeviceInfo {
  int index = 0;                  // CUDA ordinal (options.device_index)
  std::string name;               // "NVIDIA H100 80GB HBM3"
  int compute_major = 0;          // compute capability, e.g. 9.0
  int compute_minor = 0;
  uint64_t memory_bytes = 0;      // total device memory
  uint64_t free_bytes = 0;        // free when listed (cudaMemGetInfo)
  int multiprocessors = 0;
  std::string pci_bus_id;         // "0000:65:00.0"
  // From NVML; empty where NVML is not installed or does not answer.
  std::optional<int> utilization_percent;  // GPU busy over the last sample period
  std::optional<int> temperature_c;        // GPU core temperature

  // "NVIDIA H100 80GB HBM3, sm_90, 79.2 GiB".
  std::string ToString() const;
};

// The versions of the CUDA driver and of the runtime this binary was linked
// with, as 1000·major + 10·minor (13000 = 13.0); 0 = no driver.
struct CudaVersions {
  int driver = 0;
  int runtime = 0;
};
CudaVersions GetCudaVersions();

// Device memory this process could use on `index` now: the driver's free
// memory (cudaMemGetInfo) plus what this process's CUDA backends hold there
// (CudaBytesHeld), at most the device's total. kUnavailable without a
// driver or with no such device.
Result<uint64_t> CudaDeviceFreeBytes(int index);

// Bytes this process's CUDA backends hold on device `index` (their live
// tensors), across all backends.
uint64_t CudaBytesHeld(int index);

// Every CUDA device, in ordinal order. kUnavailable (with the runtime's
// reason) when there is no driver or no device.
Result<std::vector<CudaDeviceInfo>> ListCudaDevices();

}  // namespace pcfarm
