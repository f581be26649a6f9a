#include "worker/idle_policy.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

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
  auto r = HwmonGpuSource(root)->Read();
  REQUIRE(r.temperature_c);
  CHECK(*r.temperature_c == 71.0);
  REQUIRE(r.power_w);
  CHECK(*r.power_w == 145.0);
  auto none = HwmonGpuSource("/nonexistent")->Read();
  CHECK_FALSE(none.temperature_c);
  std::filesystem::remove_all(root);
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
