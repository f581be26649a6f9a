#include "worker/worker_config.h"

#include <catch2/catch.hpp>

using namespace pcfarm;

namespace {

std::string ErrorOf(const std::string& toml) {
  auto c = ParseWorkerConfig(toml, "worker.toml");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == StatusCode::kInvalidArgument);
  // One line, naming the file.
  CHECK(c.status().message().find('\n') == std::string::npos);
  CHECK(c.status().message().rfind("worker.toml", 0) == 0);
  return c.status().message();
}

int M(int h, int m) { return h * 60 + m; }

}  // namespace

TEST_CASE("schedule windows: inside, across midnight, whole day") {
  auto day = ParseScheduleWindow("09:00-17:30");
  REQUIRE(day.ok());
  CHECK_FALSE(day->Contains(M(8, 59)));
  CHECK(day->Contains(M(9, 0)));
  CHECK(day->Contains(M(17, 29)));
  CHECK_FALSE(day->Contains(M(17, 30)));  // the end is not included

  auto night = ParseScheduleWindow("22:00-07:00");
  REQUIRE(night.ok());
  CHECK(night->Contains(M(22, 0)));
  CHECK(night->Contains(M(23, 59)));
  CHECK(night->Contains(M(0, 0)));
  CHECK(night->Contains(M(6, 59)));
  CHECK_FALSE(night->Contains(M(7, 0)));
  CHECK_FALSE(night->Contains(M(12, 0)));
  CHECK_FALSE(night->Contains(M(21, 59)));

  auto all = ParseScheduleWindow("00:00-00:00");
  REQUIRE(all.ok());
  for (int m = 0; m < 24 * 60; m += 7) CHECK(all->Contains(m));

  auto evening = ParseScheduleWindow("18:00-24:00");
  REQUIRE(evening.ok());
  CHECK(evening->Contains(M(23, 59)));
  CHECK_FALSE(evening->Contains(M(0, 0)));
}

TEST_CASE("schedule: several windows, none, and the wait until one opens") {
  std::vector<ScheduleWindow> ws = {*ParseScheduleWindow("22:00-07:00"),
                                    *ParseScheduleWindow("12:00-13:00")};
  CHECK(InsideSchedule(ws, M(12, 30)));
  CHECK(InsideSchedule(ws, M(3, 0)));
  CHECK_FALSE(InsideSchedule(ws, M(10, 0)));
  CHECK(MinutesUntilScheduleOpens(ws, M(10, 0)) == 120);
  CHECK(MinutesUntilScheduleOpens(ws, M(13, 0)) == 9 * 60);
  CHECK(MinutesUntilScheduleOpens(ws, M(23, 0)) == 0);
  CHECK(InsideSchedule({}, M(10, 0)));  // no schedule: any time
  CHECK(MinutesUntilScheduleOpens({}, M(10, 0)) == 0);
}

TEST_CASE("schedule window text that is not HH:MM-HH:MM") {
  for (const char* bad : {"", "22:00", "22:00-7:00", "2200-0700", "25:00-07:00",
                          "22:60-07:00", "22:00-24:01", "aa:00-07:00", "22:00 07:00",
                          "22:00-07:00 "}) {
    INFO(bad);
    CHECK_FALSE(ParseScheduleWindow(bad).ok());
  }
}

TEST_CASE("an empty config gives the defaults; a full one is read") {
  auto d = ParseWorkerConfig("", "worker.toml");
  REQUIRE(d.ok());
  CHECK(d->data_dir == "/var/lib/pcfarm-worker");
  CHECK(d->slots == 1);
  CHECK(d->idle_minutes == 5);
  CHECK(d->run_between.empty());
  CHECK_FALSE(d->run_on_battery);

  auto c = ParseWorkerConfig(R"(
data_dir = "/srv/w"
[devices]
backend = "cpu"
device = 1
slots = 2
cpu_threads = 4
max_gpu_memory_mib = 6000
blob_cache_mib = 1024
[schedule]
run_between = ["22:00-07:00", "12:00-13:00"]
[idle]
idle_minutes = 10
max_other_cpu_percent = 12.5
check_interval_ms = 100
max_pause_s = 30
[power]
run_on_battery = true
[gpu]
max_temperature_c = 80
max_power_w = 150
[testing]
idle_source_dir = "/tmp/x"
)", "worker.toml");
  REQUIRE(c.ok());
  CHECK(c->data_dir == "/srv/w");
  CHECK(c->backend == "cpu");
  CHECK(c->device == 1);
  CHECK(c->slots == 2);
  CHECK(c->cpu_threads == 4);
  CHECK(c->max_gpu_memory_mib == 6000);
  CHECK(c->blob_cache_mib == 1024);
  REQUIRE(c->run_between.size() == 2);
  CHECK(c->run_between[0].start_minute == M(22, 0));
  CHECK(c->run_between[1].end_minute == M(13, 0));
  CHECK(c->idle_minutes == 10);
  CHECK(c->max_other_cpu_percent == 12.5);
  CHECK(c->check_interval_ms == 100);
  CHECK(c->max_pause_s == 30);
  CHECK(c->run_on_battery);
  CHECK(c->max_temperature_c == 80);
  CHECK(c->max_power_w == 150);
  CHECK(c->idle_source_dir == "/tmp/x");
}

TEST_CASE("the config enroll writes is accepted as written") {
  auto c = ParseWorkerConfig(DefaultWorkerConfigText("/var/lib/pcfarm-worker"),
                             "worker.toml");
  REQUIRE(c.ok());
  CHECK(c->data_dir == "/var/lib/pcfarm-worker");
}

TEST_CASE("each invalid key gives one line naming it") {
  struct Case {
    const char* toml;
    const char* names;
  };
  const Case cases[] = {
      {"data_dir = 3", "data_dir must be a string"},
      {"data_dir = \"relative\"", "data_dir must be an absolute path"},
      {"dta_dir = \"/x\"", "unknown key 'dta_dir'"},
      {"[devices]\nbackend = \"tpu\"", "devices.backend must be auto, cpu, vulkan or cuda"},
      {"[devices]\ndevice = -1", "devices.device must be 0..63, got -1"},
      {"[devices]\nslots = 0", "devices.slots must be 1..64, got 0"},
      {"[devices]\nslots = \"2\"", "devices.slots must be an integer"},
      {"[devices]\ncpu_threads = 1.5", "devices.cpu_threads must be an integer"},
      {"[devices]\nmax_gpu_memory_mib = -5", "devices.max_gpu_memory_mib must be"},
      {"[devices]\nblob_cache_mib = 1", "devices.blob_cache_mib must be 64.."},
      {"[devices]\ngpus = 2", "unknown key 'devices.gpus'"},
      {"devices = 3", "devices must be a section"},
      {"[schedule]\nrun_between = \"22:00-07:00\"", "schedule.run_between must be a list"},
      {"[schedule]\nrun_between = [\"22:00-7:00\"]", "schedule.run_between[0]"},
      {"[schedule]\nrun_between = [\"22:00-07:00\", 5]", "schedule.run_between[1] must be a string"},
      {"[schedule]\nrun_betwen = []", "unknown key 'schedule.run_betwen'"},
      {"[idle]\nidle_minutes = -3", "idle.idle_minutes must be 0..1440, got -3"},
      {"[idle]\nmax_other_cpu_percent = 150", "idle.max_other_cpu_percent must be 0..100, got 150"},
      {"[idle]\nmax_other_cpu_percent = \"x\"", "idle.max_other_cpu_percent must be a number"},
      {"[idle]\ncheck_interval_ms = 5", "idle.check_interval_ms must be 20..10000, got 5"},
      {"[idle]\nmax_pause_s = 0", "idle.max_pause_s must be 1.."},
      {"[power]\nrun_on_battery = \"yes\"", "power.run_on_battery must be true or false"},
      {"[gpu]\nmax_temperature_c = 400", "gpu.max_temperature_c must be 0..150, got 400"},
      {"[gpu]\nmax_power_w = -1", "gpu.max_power_w must be 0..5000, got -1"},
      {"[testing]\nidle_source_dir = 1", "testing.idle_source_dir must be a string"},
      {"[nonsense]\na = 1", "unknown key 'nonsense' (an unknown section)"},
      {"[idle\nidle_minutes = 3", "worker.toml:1: not valid TOML"},
      {"a = = 1", "not valid TOML"},
  };
  for (const auto& c : cases) {
    INFO(c.toml);
    std::string e = ErrorOf(c.toml);
    INFO(e);
    CHECK(e.find(c.names) != std::string::npos);
  }
}

TEST_CASE("a missing config file is NotFound naming the path") {
  auto c = LoadWorkerConfig("/nonexistent/pcfarm/worker.toml");
  REQUIRE_FALSE(c.ok());
  CHECK(c.status().code() == StatusCode::kNotFound);
  CHECK(c.status().message().find("/nonexistent/pcfarm/worker.toml") != std::string::npos);
}
