// The CUDA backend is a module opened only when CUDA is asked for
// (cuda_module.h): a CPU run maps neither it nor the CUDA libraries.
// Links pcfarm_backend alone, as pcfarm's programs do.
#include <catch2/catch.hpp>

#include <string>

#include "base/file.h"
#include "tasks/backend/cuda/cuda_module.h"
#include "tasks/backend/registry.h"

namespace pcfarm {
namespace {

std::string Maps() {
  auto maps = ReadFile("/proc/self/maps", 64 << 20);
  REQUIRE(maps.ok());
  return *maps;
}

bool Mapped(const std::string& maps, const char* lib) {
  return maps.find(lib) != std::string::npos;
}

TEST_CASE("a CPU run maps no CUDA library; asking for CUDA opens the module",
          "[cuda][module]") {
  // One process, in order: nothing has asked for CUDA yet.
  {
    auto cpu = CreateBackend("cpu");
    REQUIRE(cpu.ok());
    auto t = (*cpu)->Alloc(Shape{4, 4}, StorageType::kF32);
    REQUIRE(t.ok());
    const std::string maps = Maps();
    CHECK_FALSE(Mapped(maps, kCudaModuleFile));
    CHECK_FALSE(Mapped(maps, "libcudart"));
    CHECK_FALSE(Mapped(maps, "libcublas"));
  }
  // A module that is not there, or not ours, is a clear kUnavailable.
  auto missing = LoadCudaModuleFrom("/nonexistent/libpcfarm_cuda.so");
  CHECK(missing.status().code() == StatusCode::kUnavailable);
  CHECK(missing.status().message().find("/nonexistent/libpcfarm_cuda.so") !=
        std::string::npos);
  auto foreign = LoadCudaModuleFrom("libz.so.1");
  CHECK(foreign.status().code() == StatusCode::kUnavailable);
  CHECK(foreign.status().message().find("no pcfarm_cuda_module entry point") !=
        std::string::npos);
  // Asked for, CUDA comes from the module built beside this test: a backend
  // on a GPU, or the driver's own reason where there is none.
  auto api = LoadCudaModule();
  INFO(api.status().ToString());
  REQUIRE(api.ok());
  CHECK((*api)->abi == kCudaModuleAbi);
  auto cuda = CreateBackend("cuda");
  if (!cuda.ok()) {
    INFO(cuda.status().ToString());
    CHECK(cuda.status().code() == StatusCode::kUnavailable);
    CHECK(cuda.status().message().find("cannot load") == std::string::npos);
    CHECK((*api)->list_devices().status().code() == StatusCode::kUnavailable);
    WARN("no CUDA device here (" << cuda.status().message()
                                 << "): the module loads, its backend was not run");
  } else {
    CHECK((*cuda)->name() == "cuda");
    REQUIRE((*api)->list_devices().ok());
    CHECK((*api)->device_free_bytes(0).ok());
  }
  const std::string maps = Maps();
  CHECK(Mapped(maps, kCudaModuleFile));
  CHECK(Mapped(maps, "libcublas"));
  CHECK(Mapped(maps, "libcudart"));
}

}  // namespace
}  // namespace pcfarm
