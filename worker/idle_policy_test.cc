#include "worker/idle_policy.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <memory>
#include <vector>

using namespace pcfarm;

namespace {

// Sources whose readings the test sets.
struct Readings {
  std::optional<int64_t> idle_ms;
  double cpu = 0;
  bool on_ac = true;
  GpuReading gpu;
  int minute = 12 * 60;
};

IdleSources FakeSources(Readings* r) {
  struct In : InputActivitySource {
    Readings* r;
    std::optional<int64_t> IdleMs(int64_t) override { return r->idle_ms; }
    std::string Describe() const override { return "fake"; }
  };
  struct Cpu : CpuLoadSource {
    Readings* r;
    std::optional<double> OtherCpuPercent() override { return r->cpu; }
  };
  struct Pow : PowerSource {
    Readings* r;
    bool OnAc() override { return r->on_ac; }
  };
  struct Gpu : GpuSensorSource {
    Readings* r;
    GpuReading Read() override { return r->gpu; }
  };
  struct Time : LocalTimeSource {
    Readings* r;
    int MinuteOfDay() override { return r->minute; }
  };
  IdleSources s;
  auto in = std::make_unique<In>();
  in->r = r;
  auto cpu = std::make_unique<Cpu>();
  cpu->r = r;
  auto pow = std::make_unique<Pow>();
  pow->r = r;
  auto gpu = std::make_unique<Gpu>();
  gpu->r = r;
  auto time = std::make_unique<Time>();
  time->r = r;
  s.input = std::move(in);
  s.cpu = std::move(cpu);
  s.power = std::move(pow);
  s.gpu = std::move(gpu);
  s.time = std::move(time);
  return s;
}

std::string TempDir() {
  char tmpl[] = "/tmp/pcfarm-idle-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

void Write(const std::string& path, const std::string& text) {
  std::filesystem::create_directories(std::filesystem::path(path).parent_path());
  std::ofstream(path) << text << "\n";
}

}  // namespace

TEST_CASE("idle policy: each rule alone says no, with its reason") {
  WorkerConfig c;
  c.idle_minutes = 5;
  c.max_other_cpu_percent = 25;
  c.max_temperature_c = 85;
  c.max_power_w = 200;
  c.run_between = {*ParseScheduleWindow("22:00-07:00")};
  Readings r;
  r.minute = 23 * 60;
  r.idle_ms = 6 * 60'000;
  IdlePolicy p(c, FakeSources(&r));
  CHECK(p.Evaluate(0).may_run);

  r.minute = 7 * 60;
  auto v = p.Evaluate(0);
  CHECK_FALSE(v.may_run);
  CHECK(v.reason.find("outside run_between (opens in 15 h 00 min)") != std::string::npos);
  r.minute = 2 * 60;  // across midnight: inside
  CHECK(p.Evaluate(0).may_run);

  r.idle_ms = 3000;
  v = p.Evaluate(0);
  CHECK_FALSE(v.may_run);
  CHECK(v.reason.find("keyboard or mouse used 3 s ago") != std::string::npos);
  r.idle_ms = std::nullopt;  // the PC cannot tell: input does not hold it
  CHECK(p.Evaluate(0).may_run);
  r.idle_ms = 5 * 60'000;
  CHECK(p.Evaluate(0).may_run);

  r.on_ac = false;
  v = p.Evaluate(0);
  CHECK_FALSE(v.may_run);
  CHECK(v.reason == "on battery");
  r.on_ac = true;

  r.gpu.temperature_c = 90;
  v = p.Evaluate(0);
  CHECK_FALSE(v.may_run);
  CHECK(v.reason.find("GPU at 90 C") != std::string::npos);
  r.gpu.temperature_c = 60;
  r.gpu.power_w = 250;
  CHECK(p.Evaluate(0).reason.find("GPU draws 250 W") != std::string::npos);
  r.gpu.power_w = 100;
  CHECK(p.Evaluate(0).may_run);

  c.max_other_gpu_percent = 20;
  IdlePolicy q(c, FakeSources(&r));
  r.gpu.other_gpu_percent = 35;  // a game
  v = q.Evaluate(0);
  CHECK_FALSE(v.may_run);
  CHECK(v.reason == "other programs use 35% of the GPU (max_other_gpu_percent 20)");
  r.gpu.other_gpu_percent = 20;  // at the cap: runs
  CHECK(q.Evaluate(0).may_run);
  r.gpu.other_gpu_percent = std::nullopt;  // no source can tell
  CHECK(q.Evaluate(0).may_run);
}

TEST_CASE("idle policy: other CPU is the mean of the last four readings") {
  WorkerConfig c;
  c.max_other_cpu_percent = 25;
  Readings r;
  IdlePolicy p(c, FakeSources(&r));
  for (int i = 0; i < 4; ++i) CHECK(p.Evaluate(0).may_run);
  r.cpu = 90;  // one busy instant: mean (0+0+0+90)/4 = 22.5
  CHECK(p.Evaluate(0).may_run);
  auto v = p.Evaluate(0);  // (0+0+90+90)/4 = 45
  CHECK_FALSE(v.may_run);
  CHECK(v.reason.find("other programs use 45% CPU") != std::string::npos);
  r.cpu = 0;
  p.Evaluate(0);
  p.Evaluate(0);
  CHECK(p.Evaluate(0).may_run);  // (90+0+0+0)/4
}

TEST_CASE("idle policy: battery allowed by run_on_battery, caps of 0 are off") {
  WorkerConfig c;
  c.run_on_battery = true;
  c.max_temperature_c = 0;
  Readings r;
  r.on_ac = false;
  r.gpu.temperature_c = 120;
  IdlePolicy p(c, FakeSources(&r));
  CHECK(p.Evaluate(0).may_run);
}

TEST_CASE("sysfs power: mains online, battery only, no battery, a mouse battery") {
  std::string root = TempDir();
  Write(root + "/BAT0/type", "Battery");
  Write(root + "/AC/type", "Mains");
  Write(root + "/AC/online", "1");
  CHECK(SysfsPowerSource(root)->OnAc());
  Write(root + "/AC/online", "0");
  CHECK_FALSE(SysfsPowerSource(root)->OnAc());
  std::string desk = TempDir();  // a desktop: no battery, no Mains entry
  Write(desk + "/hidpp_battery_0/type", "Battery");
  Write(desk + "/hidpp_battery_0/scope", "Device");
  CHECK(SysfsPowerSource(desk)->OnAc());
  CHECK(SysfsPowerSource("/nonexistent")->OnAc());
  std::filesystem::remove_all(root);
  std::filesystem::remove_all(desk);
}

TEST_CASE("hwmon GPU: the GPU drivers' sensors, the hottest wins, others ignored") {
  std::string root = TempDir();
  Write(root + "/hwmon0/name", "coretemp");  // the CPU: not a GPU
  Write(root + "/hwmon0/temp1_input", "99000");
  Write(root + "/hwmon1/name", "amdgpu");
  Write(root + "/hwmon1/temp1_input", "71000");
  Write(root + "/hwmon1/power1_average", "145000000");
  Write(root + "/hwmon2/name", "nouveau");
  Write(root + "/hwmon2/temp1_input", "64000");
  // A powered-down card is not read (a stale figure stays unread).
  Write(root + "/hwmon3/name", "amdgpu");
  Write(root + "/hwmon3/temp1_input", "95000");
  Write(root + "/hwmon3/device/power/runtime_status", "suspended");
  Write(root + "/hwmon1/device/power/runtime_status", "active");
  auto r = HwmonGpuSource(root)->Read();
  REQUIRE(r.temperature_c);
  CHECK(*r.temperature_c == 71.0);
  REQUIRE(r.power_w);
  CHECK(*r.power_w == 145.0);
  auto none = HwmonGpuSource("/nonexistent")->Read();
  CHECK_FALSE(none.temperature_c);
  std::filesystem::remove_all(root);
}

TEST_CASE("GPU sources combined: each field the largest any source gives") {
  struct Fixed : GpuSensorSource {
    GpuReading r;
    explicit Fixed(GpuReading g) : r(g) {}
    GpuReading Read() override { return r; }
  };
  std::vector<std::unique_ptr<GpuSensorSource>> parts;
  parts.push_back(std::make_unique<Fixed>(GpuReading{70.0, std::nullopt, 12.0}));
  parts.push_back(std::make_unique<Fixed>(GpuReading{64.0, 180.0, std::nullopt}));
  auto g = MaxGpuSource(std::move(parts))->Read();
  CHECK(g.temperature_c == 70.0);
  CHECK(g.power_w == 180.0);
  CHECK(g.other_gpu_percent == 12.0);
  auto none = MaxGpuSource({})->Read();
  CHECK_FALSE(none.temperature_c);
  CHECK_FALSE(none.other_gpu_percent);
}

// NVML through a fake libnvidia-ml (tests/fakes/fake_nvml.cc) that answers
// from files: units, the hottest device, other processes' SM use without
// this process's, the sample window, and every way the library can be
// missing or refuse.
TEST_CASE("NVML GPU source: readings, other processes, window, and failures") {
  std::string dir = TempDir();
  REQUIRE(setenv("PCFARM_FAKE_NVML_DIR", dir.c_str(), 1) == 0);
  const std::string lib = PCFARM_FAKE_NVML;
  const unsigned self = static_cast<unsigned>(getpid());
  Write(dir + "/count", "2");
  Write(dir + "/temp0", "66");
  Write(dir + "/temp1", "79");
  Write(dir + "/power_mw0", "231500");
  // Device 0: a game (pid 4242) in two samples, the newer one counts; this
  // process's own use does not. Device 1: no process samples at all.
  Write(dir + "/procs0", "4242 30 5000000\n4242 45 6000000\n" + std::to_string(self) +
                             " 90 6000000\n77 10 5500000");
  Write(dir + "/procs1", "");
  std::string why;
  auto nvml = NvmlGpuSource(lib, &why);
  REQUIRE(nvml != nullptr);
  CHECK(why.empty());
  GpuReading r = nvml->Read();
  CHECK(r.temperature_c == 79.0);
  CHECK(r.power_w == 231.5);
  CHECK(r.other_gpu_percent == 55.0);  // 45 + 10, not this process's 90
  // The next read asks for the last 2 s before the newest sample seen.
  r = nvml->Read();
  CHECK(r.other_gpu_percent == 55.0);
  std::ifstream seen(dir + "/last_seen0");
  std::vector<unsigned long long> asked;
  for (unsigned long long v; seen >> v;) asked.push_back(v);
  CHECK(asked == std::vector<unsigned long long>{0, 0, 4000000, 4000000});
  // Over 100% (several busy processes) is capped.
  Write(dir + "/procs0", "1 80 7000000\n2 70 7000000");
  CHECK(nvml->Read().other_gpu_percent == 100.0);
  // No device reports process use: unknown, not 0.
  std::filesystem::remove(dir + "/procs0");
  std::filesystem::remove(dir + "/procs1");
  Write(dir + "/count", "1");
  auto one = NvmlGpuSource(lib, &why);
  REQUIRE(one != nullptr);
  r = one->Read();
  CHECK(r.temperature_c == 66.0);
  CHECK_FALSE(r.other_gpu_percent);

  CHECK(NvmlGpuSource("/nonexistent/libnvidia-ml.so.1", &why) == nullptr);
  CHECK(why.find("cannot open /nonexistent/libnvidia-ml.so.1") == 0);
  CHECK(NvmlGpuSource("libc.so.6", &why) == nullptr);  // a library without NVML
  CHECK(why == "libc.so.6 has no nvmlInit_v2");
  Write(dir + "/init", "9");  // NVML_ERROR_DRIVER_NOT_LOADED
  CHECK(NvmlGpuSource(lib, &why) == nullptr);
  CHECK(why == "nvmlInit_v2 failed with NVML error 9");
  Write(dir + "/init", "0");
  Write(dir + "/count", "0");
  CHECK(NvmlGpuSource(lib, &why) == nullptr);
  CHECK(why == "NVML sees no NVIDIA GPU");
  unsetenv("PCFARM_FAKE_NVML_DIR");
  std::filesystem::remove_all(dir);
}

// A /proc tree of DRM clients: fd/<n> links to /dev/dri nodes (targets
// need not exist) and fdinfo/<n> with the kernel's drm-usage-stats keys.
void DrmClient(const std::string& proc, const std::string& pid, int fd, const std::string& node,
               const std::string& fdinfo) {
  std::filesystem::create_directories(proc + "/" + pid + "/fd");
  std::filesystem::remove(proc + "/" + pid + "/fd/" + std::to_string(fd));
  std::filesystem::create_symlink(node, proc + "/" + pid + "/fd/" + std::to_string(fd));
  Write(proc + "/" + pid + "/fdinfo/" + std::to_string(fd), fdinfo);
}

std::string AmdInfo(uint64_t client, uint64_t gfx_ns, uint64_t dec_ns = 0) {
  return "pos:\t0\nflags:\t02100002\ndrm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\n"
         "drm-client-id:\t" + std::to_string(client) + "\ndrm-engine-gfx:\t" +
         std::to_string(gfx_ns) + " ns\ndrm-engine-dec:\t" + std::to_string(dec_ns) +
         " ns\ndrm-memory-vram:\t1024 KiB";
}

TEST_CASE("DRM usage: other processes' busy engines from fdinfo, once per client") {
  std::string proc = TempDir();
  int64_t now = 5'000'000'000;
  auto drm = DrmUsageGpuSource(proc, [&] { return now; });
  const std::string self = std::to_string(getpid());
  // A game (two fds of one client), a video player, this process, a
  // process with a file open, a process whose fdinfo cannot be read.
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 1'000'000'000));
  DrmClient(proc, "4242", 9, "/dev/dri/card0", AmdInfo(11, 1'000'000'000));
  DrmClient(proc, "777", 3, "/dev/dri/renderD128", AmdInfo(12, 0, 4'000'000'000));
  DrmClient(proc, self, 5, "/dev/dri/renderD128", AmdInfo(13, 0));
  std::filesystem::create_directories(proc + "/100/fd");
  std::filesystem::create_symlink("/home/u/notes.txt", proc + "/100/fd/3");
  Write(proc + "/100/fdinfo/3", "pos:\t0\nflags:\t0100000");
  CHECK_FALSE(drm->Read().other_gpu_percent);  // one reading: no rate yet

  // One second later: the game's gfx engine was busy 0.6 s (counted once,
  // not per fd), the player's decoder 0.1 s; this process's 0.9 s does not
  // count. The busiest engine: gfx, 60%.
  now += 1'000'000'000;
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 1'600'000'000));
  DrmClient(proc, "4242", 9, "/dev/dri/card0", AmdInfo(11, 1'600'000'000));
  DrmClient(proc, "777", 3, "/dev/dri/renderD128", AmdInfo(12, 0, 4'100'000'000));
  DrmClient(proc, self, 5, "/dev/dri/renderD128", AmdInfo(13, 900'000'000));
  auto r = drm->Read().other_gpu_percent;
  REQUIRE(r);
  CHECK(*r == Approx(60.0));
  // Within a second: the last value, the files not read again.
  now += 500'000'000;
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 9'000'000'000));
  CHECK(drm->Read().other_gpu_percent == r);
  // Two clients on one engine add up; the game quits (its files go).
  now += 500'000'000;
  std::filesystem::remove_all(proc + "/4242");
  DrmClient(proc, "777", 3, "/dev/dri/renderD128", AmdInfo(12, 200'000'000, 4'100'000'000));
  DrmClient(proc, "888", 4, "/dev/dri/renderD128", AmdInfo(14, 0));  // new: found at a rescan
  r = drm->Read().other_gpu_percent;
  REQUIRE(r);
  CHECK(*r == Approx(20.0));
  // xe's cycle counters, and an engine capacity of 2, on another device;
  // the rescan (10 s on) finds the new client.
  now += 10'000'000'000;
  auto xe = [](uint64_t cycles, uint64_t total) {
    return "drm-driver:\txe\ndrm-pdev:\t0000:00:02.0\ndrm-client-id:\t21\n"
           "drm-cycles-rcs:\t" + std::to_string(cycles) + "\ndrm-total-cycles-rcs:\t" +
           std::to_string(total) + "\ndrm-engine-capacity-ccs:\t2\ndrm-engine-ccs:\t0 ns";
  };
  DrmClient(proc, "900", 6, "/dev/dri/renderD129", xe(1000, 10000));
  drm->Read();
  now += 1'000'000'000;
  DrmClient(proc, "900", 6, "/dev/dri/renderD129", xe(5500, 20000));
  r = drm->Read().other_gpu_percent;
  REQUIRE(r);
  CHECK(*r == Approx(45.0));  // 4500 of 10000 cycles
  // No DRM client left: unknown, not 0.
  std::filesystem::remove_all(proc + "/777");
  std::filesystem::remove_all(proc + "/888");
  std::filesystem::remove_all(proc + "/900");
  now += 1'000'000'000;
  CHECK_FALSE(drm->Read().other_gpu_percent);
  CHECK_FALSE(DrmUsageGpuSource("/nonexistent")->Read().other_gpu_percent);
  std::filesystem::remove_all(proc);
}

TEST_CASE("DRM usage: a pass over /proc is spread over reads, 32 processes a read") {
  std::string proc = TempDir();
  for (int pid = 1000; pid < 1070; ++pid)  // 70 processes without a GPU
    std::filesystem::create_directories(proc + "/" + std::to_string(pid) + "/fd");
  int64_t now = 0;
  auto drm = DrmUsageGpuSource(proc, [&] { return now; });
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 0));
  CHECK_FALSE(drm->Read().other_gpu_percent);  // 32 of 71 processes looked at
  now += 1'000'000'000;
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 500'000'000));
  CHECK_FALSE(drm->Read().other_gpu_percent);  // 64: the game not known yet
  now += 1'000'000'000;
  CHECK_FALSE(drm->Read().other_gpu_percent);  // 71: found, its first reading
  now += 1'000'000'000;
  DrmClient(proc, "4242", 7, "/dev/dri/renderD128", AmdInfo(11, 1'250'000'000));
  CHECK(drm->Read().other_gpu_percent == Approx(75.0));
  std::filesystem::remove_all(proc);
}

TEST_CASE("amdgpu busy: the device's figure less this process's own share, any user's use") {
  namespace fs = std::filesystem;
  const std::string root = TempDir(), cls = root + "/class/drm";
  // cardN/device links to the PCI device, named by its address as drm-pdev names it.
  auto card = [&](const std::string& name, const std::string& pdev) {
    const std::string dev = root + "/devices/" + pdev;
    fs::create_directories(dev + "/power");
    fs::create_directories(cls + "/" + name);
    fs::create_symlink(dev, cls + "/" + name + "/device");
    return dev;
  };
  const std::string amd = card("card0", "0000:03:00.0");
  const std::string other_amd = card("card2", "0000:0a:00.0");
  card("card1", "0000:00:02.0");  // an Intel GPU: no gpu_busy_percent
  // A connector and a render node are not cards (their figure would win).
  const std::string connector = card("card0-DP-1", "0000:99:00.0");
  Write(connector + "/gpu_busy_percent", "100");
  const std::string render = card("renderD128", "0000:98:00.0");
  Write(render + "/gpu_busy_percent", "100");
  Write(amd + "/power/runtime_status", "active");
  Write(amd + "/gpu_busy_percent", "70");
  Write(other_amd + "/gpu_busy_percent", "5");
  int64_t now = 0;
  auto src = AmdgpuBusyGpuSource(cls, root + "/self", [&] { return now; });

  // No DRM client of this process: the card's figure as it is.
  CHECK(src->Read().other_gpu_percent == Approx(70.0));
  // Reads within a second are averaged at the next sample.
  now += 500'000'000;
  Write(amd + "/gpu_busy_percent", "30");
  CHECK(src->Read().other_gpu_percent == Approx(70.0));
  now += 500'000'000;
  Write(amd + "/gpu_busy_percent", "50");
  CHECK(src->Read().other_gpu_percent == Approx(40.0));

  // This process opens the GPU (a compute queue): its share is not known
  // at the first sample, so no figure for that card (the other card's 5%).
  auto mine = [](uint64_t compute_ns, uint64_t dec_ns) {
    return "drm-driver:\tamdgpu\ndrm-pdev:\t0000:03:00.0\ndrm-client-id:\t5\n"
           "drm-engine-gfx:\t0 ns\ndrm-engine-compute:\t" + std::to_string(compute_ns) +
           " ns\ndrm-engine-dec:\t" + std::to_string(dec_ns) + " ns";
  };
  DrmClient(root, "self", 5, "/dev/dri/renderD128", mine(1'000'000'000, 0));
  now += 1'000'000'000;
  Write(amd + "/gpu_busy_percent", "90");
  CHECK(src->Read().other_gpu_percent == Approx(5.0));
  // Its compute engine busy 0.8 s of the second, the card 95%: others 15%.
  // A decoder's time is not the graphics block's and is not taken off.
  now += 1'000'000'000;
  Write(amd + "/gpu_busy_percent", "95");
  DrmClient(root, "self", 5, "/dev/dri/renderD128", mine(1'800'000'000, 900'000'000));
  CHECK(src->Read().other_gpu_percent == Approx(15.0));
  // A game (another user's) takes the card: 100%, this process 0.3 s.
  now += 1'000'000'000;
  Write(amd + "/gpu_busy_percent", "100");
  DrmClient(root, "self", 5, "/dev/dri/renderD128", mine(2'100'000'000, 900'000'000));
  CHECK(src->Read().other_gpu_percent == Approx(70.0));
  // A suspended card is idle and not read (its stale figure is ignored);
  // the busiest card wins.
  now += 1'000'000'000;
  Write(amd + "/power/runtime_status", "suspended");
  Write(amd + "/gpu_busy_percent", "99");
  CHECK(src->Read().other_gpu_percent == Approx(5.0));
  now += 1'000'000'000;
  Write(other_amd + "/gpu_busy_percent", "85");
  CHECK(src->Read().other_gpu_percent == Approx(85.0));
  // No amdgpu card: unknown, not 0.
  CHECK_FALSE(AmdgpuBusyGpuSource(root + "/nonexistent", root + "/self")->Read().other_gpu_percent);
  fs::remove_all(root);
}

TEST_CASE("file sources: input idle counts from the file's mtime") {
  std::string dir = TempDir();
  auto s = FileIdleSources(dir);
  CHECK_FALSE(s.input->IdleMs(0));  // no file: no input source
  CHECK(s.power->OnAc());
  CHECK(*s.cpu->OtherCpuPercent() == 0);
  Write(dir + "/input_idle_ms", "0");
  int64_t now = std::chrono::duration_cast<std::chrono::milliseconds>(
                    std::chrono::system_clock::now().time_since_epoch())
                    .count();
  auto idle = s.input->IdleMs(now + 2000);
  REQUIRE(idle);
  CHECK(*idle >= 1500);
  CHECK(*idle <= 2500);
  Write(dir + "/on_ac", "0");
  CHECK_FALSE(s.power->OnAc());
  Write(dir + "/minute_of_day", "123");
  CHECK(s.time->MinuteOfDay() == 123);
  Write(dir + "/other_cpu_percent", "40");
  CHECK(*s.cpu->OtherCpuPercent() == 40);
  CHECK_FALSE(s.gpu->Read().other_gpu_percent);
  Write(dir + "/other_gpu_percent", "33");
  CHECK(s.gpu->Read().other_gpu_percent == 33.0);
  std::filesystem::remove_all(dir);
}

TEST_CASE("system sources read this machine without failing") {
  auto s = SystemIdleSources();
  CHECK_FALSE(s.input->Describe().empty());
  s.cpu->OtherCpuPercent();
  usleep(20'000);
  auto cpu = s.cpu->OtherCpuPercent();
  if (cpu) CHECK((*cpu >= 0 && *cpu <= 100));
  int m = s.time->MinuteOfDay();
  CHECK((m >= 0 && m < 24 * 60));
}
