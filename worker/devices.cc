#include "worker/devices.h"

#include "base/file.h"

#include "tasks/backend/cpu/blas.h"
#include "tasks/backend/gemm_probe.h"
#include "tasks/backend/registry.h"
#if PCFARM_HAVE_VULKAN
#include "tasks/backend/vulkan/vulkan_devices.h"
#endif
#if PCFARM_HAVE_CUDA
#include "tasks/backend/cuda/cuda_module.h"
#endif

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tasks/kinds/kind.h"

namespace pcfarm {
namespace {

std::string_view Trim(std::string_view s) {
  size_t b = s.find_first_not_of(" \t\r");
  if (b == std::string_view::npos) return {};
  size_t e = s.find_last_not_of(" \t\r");
  return s.substr(b, e - b + 1);
}

// Calls fn(line_number, key, value) for every "key : value" line.
template <typename Fn>
void ForEachField(std::string_view text, Fn fn) {
  int line_no = 0;
  while (!text.empty()) {
    size_t nl = text.find('\n');
    std::string_view line = text.substr(0, nl);
    text = nl == std::string_view::npos ? std::string_view() : text.substr(nl + 1);
    ++line_no;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    if (!fn(line_no, Trim(line.substr(0, colon)), Trim(line.substr(colon + 1)))) {
      return;
    }
  }
}

std::string HumanBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
  return buf;
}

}  // namespace

Result<std::string> ParseCpuModelName(std::string_view cpuinfo) {
  // In order of preference; the first key found wins.
  const std::string_view keys[] = {"model name", "Model", "Hardware",
                                   "Processor"};
  for (std::string_view key : keys) {
    std::string found;
    ForEachField(cpuinfo, [&](int, std::string_view k, std::string_view v) {
      if (k == key && !v.empty()) {
        found.assign(v);
        return false;
      }
      return true;
    });
    if (!found.empty()) return found;
  }
  return NotFound("cpuinfo: no \"model name\", \"Model\", \"Hardware\" or "
                  "\"Processor\" line");
}

Result<int> ParseCpuLogicalCores(std::string_view cpuinfo) {
  int count = 0;
  ForEachField(cpuinfo, [&](int, std::string_view k, std::string_view) {
    if (k == "processor") ++count;
    return true;
  });
  if (count == 0) return InvalidArgument("cpuinfo: no \"processor\" lines");
  return count;
}

Result<uint64_t> ParseMemTotalBytes(std::string_view meminfo) {
  return ParseMeminfoBytes(meminfo, "MemTotal");
}

Result<uint64_t> ParseMeminfoBytes(std::string_view meminfo, std::string_view key) {
  Status status = InvalidArgument("meminfo: no " + std::string(key) + " line");
  uint64_t bytes = 0;
  ForEachField(meminfo, [&](int line_no, std::string_view k, std::string_view v) {
    if (k != key) return true;
    std::string where =
        "meminfo line " + std::to_string(line_no) + ": " + std::string(key) + " ";
    size_t digits = v.find_first_not_of("0123456789");
    std::string_view number = v.substr(0, digits);
    std::string_view unit =
        digits == std::string_view::npos ? std::string_view() : Trim(v.substr(digits));
    if (number.empty()) {
      status = InvalidArgument(where + "\"" + std::string(v) + "\" is not a number");
    } else if (unit != "kB") {
      status = InvalidArgument(where + "unit \"" + std::string(unit) +
                               "\", expected kB");
    } else if (number.size() > 15) {  // over 2^49 kB: no real machine
      status = InvalidArgument(where + std::string(number) + " kB is too large");
    } else {
      bytes = std::stoull(std::string(number)) * 1024;
      status = Status::Ok();
    }
    return false;
  });
  if (!status.ok()) return status;
  return bytes;
}

Result<double> MeasureCpuGflops(int n, int reps) {
  const TaskKind* bench = TaskKindRegistry::Builtin().Find("bench");
  assert(bench != nullptr);
  nlohmann::json params = {{"n", n}, {"seed", 1}, {"reps", reps}};
  PCFARM_ASSIGN_OR_RETURN(std::string out, bench->Run(params.dump(), {}));
  nlohmann::json result = nlohmann::json::parse(out, nullptr, false);
  if (result.is_discarded() || !result.contains("gflops") ||
      !result["gflops"].is_number()) {
    return Internal("bench probe returned no gflops: " + out);
  }
  return result["gflops"].get<double>();
}

namespace {

// Measured GEMM GFLOP/s of device `index` of `backend`; 0, with a warning,
// when the backend does not start or the probe fails.
[[maybe_unused]] double ProbeDeviceGflops(const std::string& backend, int index, int n,
                                          int reps) {
  BackendOptions bo;
  bo.device_index = index;
  auto be = CreateBackend(backend, bo);
  auto gflops = be.ok() ? MeasureGemmGflops(be->get(), n, reps) : Result<double>(be.status());
  if (gflops.ok()) return *gflops;
  spdlog::warn("devices: {}:{} speed probe failed: {}", backend, index,
               gflops.status().ToString());
  return 0;
}

// The CPU's free_bytes: MemAvailable plus this process's RssAnon (what it
// holds it would reuse: a cached model, buffers). Unknown (0) when
// meminfo cannot be read; RssAnon missing counts as 0.
void RefreshCpuFreeMemory(WorkerDevice* cpu, const DeviceProbeOptions& options) {
  auto meminfo = ReadFile(options.proc_dir + "/meminfo", 1 << 20);
  auto avail = meminfo.ok() ? ParseMeminfoBytes(*meminfo, "MemAvailable") : meminfo.status();
  if (!avail.ok()) {
    spdlog::debug("devices: cpu free memory unknown: {}", avail.status().ToString());
    cpu->free_bytes = 0;
    return;
  }
  auto status = ReadFile(options.proc_dir + "/self/status", 1 << 20);
  auto own = status.ok() ? ParseMeminfoBytes(*status, "RssAnon") : status.status();
  uint64_t free = *avail + (own.ok() ? *own : 0);
  // Never more than the device has (a strange meminfo).
  cpu->free_bytes = cpu->memory_bytes != 0 ? std::min(free, cpu->memory_bytes) : free;
}

#if PCFARM_HAVE_CUDA
uint64_t CudaFreeBytesOrZero(int index) {
  auto api = LoadCudaModule();
  auto free = api.ok() ? (*api)->device_free_bytes(index) : Result<uint64_t>(api.status());
  if (free.ok()) return *free;
  spdlog::debug("devices: cuda:{} free memory unknown: {}", index, free.status().ToString());
  return 0;
}
#endif

}  // namespace

void RefreshFreeMemory(std::vector<WorkerDevice>* devices, const DeviceProbeOptions& options) {
  bool any_vulkan = false;
  for (WorkerDevice& d : *devices) {
    if (d.backend == "cpu") RefreshCpuFreeMemory(&d, options);
#if PCFARM_HAVE_CUDA
    if (d.backend == "cuda") d.free_bytes = CudaFreeBytesOrZero(d.index);
#endif
    if (d.backend == "vulkan") any_vulkan = true;
  }
#if PCFARM_HAVE_VULKAN
  if (!any_vulkan) return;
  auto vk = ListVulkanDevices();
  for (WorkerDevice& d : *devices) {
    if (d.backend != "vulkan") continue;
    d.free_bytes = 0;
    if (vk.ok() && d.index >= 0 && size_t(d.index) < vk->size())
      d.free_bytes = (*vk)[size_t(d.index)].budget_bytes;
  }
#else
  (void)any_vulkan;
#endif
}

Result<std::vector<WorkerDevice>> DiscoverDevices(const DeviceProbeOptions& options) {
  WorkerDevice cpu;
  cpu.index = 0;
  cpu.backend = "cpu";
  const std::string cpuinfo_path = options.proc_dir + "/cpuinfo";
  const std::string meminfo_path = options.proc_dir + "/meminfo";
  auto cpuinfo = ReadFile(cpuinfo_path, 16 << 20);
  auto name = cpuinfo.ok() ? ParseCpuModelName(*cpuinfo) : cpuinfo.status();
  if (name.ok()) {
    cpu.name = *name;
  } else {
    spdlog::warn("devices: {}: {}", cpuinfo_path, name.status().ToString());
    cpu.name = "unknown cpu";
  }
  auto cores = cpuinfo.ok() ? ParseCpuLogicalCores(*cpuinfo) : cpuinfo.status();
  if (cores.ok()) {
    cpu.cores = *cores;
  } else {
    long n = ::sysconf(_SC_NPROCESSORS_ONLN);
    cpu.cores = n > 0 ? int(n) : 1;
    spdlog::warn("devices: {}: {}; sysconf says {} cores", cpuinfo_path,
                 cores.status().ToString(), cpu.cores);
  }
  auto meminfo = ReadFile(meminfo_path, 1 << 20);
  auto mem = meminfo.ok() ? ParseMemTotalBytes(*meminfo) : meminfo.status();
  if (mem.ok()) {
    cpu.memory_bytes = *mem;
  } else {
    long pages = ::sysconf(_SC_PHYS_PAGES);
    long page = ::sysconf(_SC_PAGESIZE);
    cpu.memory_bytes = pages > 0 && page > 0 ? uint64_t(pages) * uint64_t(page) : 0;
    spdlog::warn("devices: {}: {}; sysconf says {} bytes", meminfo_path,
                 mem.status().ToString(), cpu.memory_bytes);
  }
  if (options.measure) {
    auto gflops = MeasureCpuGflops(options.probe_n, options.probe_reps);
    if (!gflops.ok()) return gflops.status().WithContext("cpu speed probe");
    cpu.gflops = *gflops;
    // The probe loaded OpenBLAS (tasks/backend/cpu/blas.h): say which kernels.
    if (blas::Load().ok())
      spdlog::info("devices: cpu runs OpenBLAS {} kernels (OPENBLAS_CORETYPE={})",
                   blas::CoreName(),
                   std::getenv("OPENBLAS_CORETYPE") ? std::getenv("OPENBLAS_CORETYPE")
                                                    : "unset");
  }
  std::vector<WorkerDevice> out{cpu};
  // GPUs' free memory is read below with the rest of their facts.
  RefreshCpuFreeMemory(&out[0], options);
#if PCFARM_HAVE_CUDA
  // NVIDIA GPUs through the CUDA runtime; no driver is normal.
  // (The CUDA backend's module is opened here: only on a worker built with
  // CUDA, which then drives any NVIDIA GPU through it.)
  auto cuda_module = LoadCudaModule();
  auto cuda = cuda_module.ok() ? (*cuda_module)->list_devices()
                               : Result<std::vector<CudaDeviceInfo>>(cuda_module.status());
  if (!cuda.ok()) {
    spdlog::info("devices: no CUDA: {}", cuda.status().message());
  } else {
    for (const auto& d : *cuda) {
      WorkerDevice g;
      g.index = d.index;
      g.backend = "cuda";
      g.name = d.name + " [sm_" + std::to_string(d.compute_major) +
               std::to_string(d.compute_minor) + "]";
      g.memory_bytes = d.memory_bytes;
      g.free_bytes = CudaFreeBytesOrZero(d.index);
      g.cores = d.multiprocessors;
      g.fp16 = d.compute_major >= 7;
      if (options.measure) g.gflops = ProbeDeviceGflops("cuda", d.index, 2048, 3);
      out.push_back(std::move(g));
    }
  }
#endif
#if PCFARM_HAVE_VULKAN
  // Every Vulkan device the loader reports; none (or no loader) is normal.
  auto vk = ListVulkanDevices();
  if (!vk.ok()) {
    spdlog::info("devices: no Vulkan: {}", vk.status().message());
  } else {
    for (const auto& d : *vk) {
      WorkerDevice g;
      g.index = d.index;
      g.backend = "vulkan";
      g.name = d.name + " [" + VulkanDeviceTypeName(d.type) + ", " + d.vendor + "]";
      g.memory_bytes = d.memory_bytes;
      g.free_bytes = d.budget_bytes;
      g.fp16 = d.fp16();
      g.emulated = d.type == VulkanDeviceType::kCpu;
      if (options.measure)
        g.gflops = ProbeDeviceGflops("vulkan", d.index, options.probe_n, options.probe_reps);
      out.push_back(std::move(g));
    }
  }
#endif
  return out;
}

uint64_t LentBytes(const WorkerDevice& device, uint64_t bytes, uint64_t max_gpu_memory_bytes) {
  if (device.backend != "cpu" && max_gpu_memory_bytes > 0)
    return std::min(bytes, max_gpu_memory_bytes);
  return bytes;
}

uint64_t UsableBytes(const WorkerDevice& device, uint64_t max_gpu_memory_bytes) {
  uint64_t usable = device.memory_bytes;
  if (device.free_bytes > 0) usable = std::min(usable, device.free_bytes);
  return LentBytes(device, usable, max_gpu_memory_bytes);
}

std::vector<WorkerDevice> DevicesForShards(const std::vector<WorkerDevice>& all,
                                           bool automatic, const std::string& backend,
                                           int index) {
  std::vector<WorkerDevice> out;
  for (const WorkerDevice& d : all) {
    if (automatic ? !d.emulated
                  : d.backend == backend && (backend == "cpu" || d.index == index))
      out.push_back(d);
  }
  if (out.empty()) {
    for (const WorkerDevice& d : all)
      if (d.backend == "cpu") out.push_back(d);
  }
  return out;
}

size_t ChooseShardDevice(const std::vector<WorkerDevice>& devices, size_t preferred,
                         const std::string& needs_backend, uint64_t needs_memory_bytes,
                         uint64_t max_gpu_memory_bytes) {
  auto fits = [&](const WorkerDevice& d) {
    return (needs_backend.empty() || d.backend == needs_backend) &&
           needs_memory_bytes <= UsableBytes(d, max_gpu_memory_bytes);
  };
  if (preferred < devices.size() && fits(devices[preferred])) return preferred;
  size_t best = preferred;
  for (size_t i = 0; i < devices.size(); ++i) {
    if (fits(devices[i]) && (best == preferred || devices[i].gflops > devices[best].gflops))
      best = i;
  }
  return best;
}

std::string FormatDevicesTable(const std::vector<WorkerDevice>& devices) {
  std::vector<std::vector<std::string>> rows = {
      {"#", "BACKEND", "NAME", "MEMORY", "FREE", "CORES", "GFLOPS", "FP16"}};
  for (const WorkerDevice& d : devices) {
    char gflops[32];
    std::snprintf(gflops, sizeof gflops, "%.1f", d.gflops);
    rows.push_back({std::to_string(d.index), d.backend, d.name,
                    HumanBytes(d.memory_bytes),
                    d.free_bytes > 0 ? HumanBytes(d.free_bytes) : "-", std::to_string(d.cores),
                    d.gflops > 0 ? gflops : "-", d.fp16 ? "yes" : "no"});
  }
  std::vector<size_t> width(rows[0].size(), 0);
  for (const auto& row : rows) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string DevicesToJson(const std::vector<WorkerDevice>& devices) {
  nlohmann::json arr = nlohmann::json::array();
  for (const WorkerDevice& d : devices) {
    arr.push_back({{"index", d.index},
                   {"backend", d.backend},
                   {"name", d.name},
                   {"memory_bytes", d.memory_bytes},
                   {"free_bytes", d.free_bytes},
                   {"cores", d.cores},
                   {"gflops", d.gflops},
                   {"fp16", d.fp16}});
  }
  // Replace invalid UTF-8 (a strange cpuinfo) instead of throwing.
  return arr.dump(2, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace pcfarm
