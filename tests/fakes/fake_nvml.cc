// A stand-in for NVIDIA's libnvidia-ml.so.1, for worker tests on machines
// without an NVIDIA driver: the functions NvmlGpuSource (worker/nvml_gpu.cc)
// opens, with NVML's C signatures and return codes, answering from files in
// the directory named by $PCFARM_FAKE_NVML_DIR (read at every call):
//   init          nvmlInit_v2's return code (missing: 0, success)
//   count         devices (missing: 1)
//   temp<i>       device i's temperature in C (missing: NOT_SUPPORTED)
//   power_mw<i>   its power in milliwatts (missing: NOT_SUPPORTED)
//   procs<i>      its process samples, one "pid sm_util time_us" a line
//                 (missing: NOT_SUPPORTED); only samples newer than the
//                 caller's lastSeenTimeStamp count (none: NOT_FOUND)
// Each nvmlDeviceGetProcessUtilization call appends its lastSeenTimeStamp
// to last_seen<i>. Test code only: never shipped.
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

namespace {

struct Sample {
  unsigned int pid;
  unsigned long long time_stamp_us;
  unsigned int sm_util, mem_util, enc_util, dec_util;
};

std::string Dir() {
  const char* d = std::getenv("PCFARM_FAKE_NVML_DIR");
  return d != nullptr ? d : "/nonexistent";
}

bool ReadNumber(const std::string& name, long long* v) {
  std::ifstream f(Dir() + "/" + name);
  return static_cast<bool>(f >> *v);
}

int kDevices[64];  // the handles: &kDevices[i]

int IndexOf(void* device) { return static_cast<int>(static_cast<int*>(device) - kDevices); }

}  // namespace

extern "C" {

int nvmlInit_v2() {
  long long rc = 0;
  return ReadNumber("init", &rc) ? static_cast<int>(rc) : 0;
}

int nvmlShutdown() { return 0; }

int nvmlDeviceGetCount_v2(unsigned int* count) {
  long long n = 1;
  ReadNumber("count", &n);
  *count = static_cast<unsigned int>(n);
  return 0;
}

int nvmlDeviceGetHandleByIndex_v2(unsigned int index, void** device) {
  if (index >= 64) return 2;  // INVALID_ARGUMENT
  *device = &kDevices[index];
  return 0;
}

int nvmlDeviceGetTemperature(void* device, int sensor, unsigned int* temp) {
  long long v = 0;
  if (sensor != 0) return 2;
  if (!ReadNumber("temp" + std::to_string(IndexOf(device)), &v)) return 3;  // NOT_SUPPORTED
  *temp = static_cast<unsigned int>(v);
  return 0;
}

int nvmlDeviceGetPowerUsage(void* device, unsigned int* power) {
  long long v = 0;
  if (!ReadNumber("power_mw" + std::to_string(IndexOf(device)), &v)) return 3;
  *power = static_cast<unsigned int>(v);
  return 0;
}

int nvmlDeviceGetProcessUtilization(void* device, Sample* out, unsigned int* count,
                                    unsigned long long last_seen) {
  const std::string i = std::to_string(IndexOf(device));
  std::ofstream(Dir() + "/last_seen" + i, std::ios::app) << last_seen << "\n";
  std::ifstream f(Dir() + "/procs" + i);
  if (!f) return 3;
  std::vector<Sample> fresh;
  Sample s{};
  while (f >> s.pid >> s.sm_util >> s.time_stamp_us)
    if (s.time_stamp_us > last_seen) fresh.push_back(s);
  if (fresh.empty()) return 6;  // NOT_FOUND
  if (out == nullptr || *count < fresh.size()) {
    *count = static_cast<unsigned int>(fresh.size());
    return 7;  // INSUFFICIENT_SIZE
  }
  for (size_t k = 0; k < fresh.size(); ++k) out[k] = fresh[k];
  *count = static_cast<unsigned int>(fresh.size());
  return 0;
}

}  // extern "C"
