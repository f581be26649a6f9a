// The CUDA backend as a module loaded at run time: libpcfarm_cuda.so.
//
// The CUDA runtime, cuBLAS and cuBLASLt take about 150 MiB of address space
// and tens of MiB of RSS in every process that links them, used or not. So
// the CUDA backend (cuda_backend.cc, cuda_ops.cc, cuda_devices.cc and the
// kernels) is built into its own shared library, and pcfarm's programs open
// it with dlopen only when something asks for CUDA: CreateBackend("cuda"),
// CreateBestBackend, the worker's device list. A run on the CPU or on Vulkan
// never maps it or the libraries it links.
//
// The module exports one C function, pcfarm_cuda_module(), which returns a
// table of the backend's entry points. Both sides are built from this tree
// by the same compiler in the same build: the table passes C++ types
// (Result, std::vector, std::unique_ptr<Backend>), and its abi and sizes
// fields refuse a module from another build whose layout could differ.
// Everything else in the module is hidden (its own copies of the backend
// interface and Status code never mix with the program's).
//
// Where it is looked for, in order: $PCFARM_CUDA_MODULE (a path), the
// program's own directory (the build tree: build/bin), ../lib/pcfarm next to
// it (an installed package: /usr/lib/pcfarm), then the dynamic linker's
// search path.
//
// Thread-safety: LoadCudaModule may be called from any thread; the first
// call loads, later ones return the same table (or the same error).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/status.h"
#include "tasks/backend/backend.h"
#include "tasks/backend/cuda/cuda_devices.h"

namespace pcfarm {

inline constexpr uint32_t kCudaModuleAbi = 1;
inline constexpr char kCudaModuleFile[] = "libpcfarm_cuda.so";

struct CudaModuleApi {
  uint32_t abi = 0;  // kCudaModuleAbi of the module's build
  // sizeof of the types the table passes, as the module saw them.
  uint32_t sizeof_status = 0, sizeof_options = 0, sizeof_device_info = 0;
  int (*score)(const BackendOptions& options) = nullptr;
  Result<std::unique_ptr<Backend>> (*create)(const BackendOptions& options) = nullptr;
  Result<std::vector<CudaDeviceInfo>> (*list_devices)() = nullptr;
  Result<uint64_t> (*device_free_bytes)(int index) = nullptr;
  CudaVersions (*versions)() = nullptr;
};

// The module's table, loaded on the first call. kUnavailable naming every
// place tried and why (not built, a missing CUDA runtime library, ...).
Result<const CudaModuleApi*> LoadCudaModule();

// Loads the module at `path` (not cached; for tests): kUnavailable when it
// cannot be opened, has no entry point, or is of another build.
Result<const CudaModuleApi*> LoadCudaModuleFrom(const std::string& path);

// The registry's entries for "cuda": through the module; score 0 and
// kUnavailable (with the reason) when it cannot be loaded.
int CudaModuleScore(const BackendOptions& options);
Result<std::unique_ptr<Backend>> CreateCudaModuleBackend(const BackendOptions& options);

}  // namespace pcfarm

// The module's one exported symbol.
extern "C" const pcfarm::CudaModuleApi* pcfarm_cuda_module();
