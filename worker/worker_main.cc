// pcfarm-worker: `enroll` joins a farm once, `run` serves shards, `status`
// says what it does, `devices` shows what this PC can do and how fast.
#include <pwd.h>
#include <sys/stat.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <nlohmann/json.hpp>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "base/malloc_tuning.h"
#include "base/rlimit.h"
#include "base/file.h"
#include "crypto/hash.h"
#include "worker/daemon.h"
#include "worker/devices.h"
#include "worker/idle_policy.h"
#include "worker/worker_config.h"
#include "worker/worker_dir.h"

namespace {

pcfarm::WorkerDaemon* g_daemon = nullptr;

void OnSignal(int) {
  if (g_daemon) g_daemon->RequestStop();
}

int Fail(const pcfarm::Status& s) {
  std::fprintf(stderr, "pcfarm-worker: %s\n", s.message().c_str());
  return 1;
}

constexpr char kSystemConfig[] = "/etc/pcfarm/worker.toml";
constexpr char kServiceUser[] = "pcfarm";

// Gives the state directory to the service's user (enroll runs as root).
pcfarm::Status ChownTree(const std::string& dir, uid_t uid, gid_t gid) {
  std::error_code ec;
  if (chown(dir.c_str(), uid, gid) != 0) {
    return pcfarm::IoError("cannot give " + dir + " to user " + kServiceUser);
  }
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (lchown(it->path().c_str(), uid, gid) != 0) {
      return pcfarm::IoError("cannot give " + it->path().string() + " to user " +
                             kServiceUser);
    }
  }
  return pcfarm::Status::Ok();
}

// `enroll` without --data: the system's worker, run by pcfarm-worker.service.
int EnrollSystem(const std::string& token, const std::string& config_path,
                 const std::string& name, int timeout_ms) {
  if (geteuid() != 0) {
    return Fail(pcfarm::PermissionDenied(
        "enrolling this PC's service needs root: run it with sudo (or give "
        "--data DIR to enroll a worker of your own)"));
  }
  pcfarm::WorkerConfig config;
  auto loaded = pcfarm::LoadWorkerConfig(config_path);
  bool write_config = false;
  if (loaded.ok()) {
    config = *loaded;
  } else if (loaded.status().code() == pcfarm::StatusCode::kNotFound) {
    write_config = true;  // after the enrollment worked, with the defaults
  } else {
    return Fail(loaded.status());
  }
  pcfarm::Status s = pcfarm::EnrollWorker(token, config.data_dir, name, timeout_ms);
  if (!s.ok()) return Fail(s);
  if (write_config) {
    s = pcfarm::MakeDirs(std::filesystem::path(config_path).parent_path().string(), 0755);
    if (s.ok()) {
      s = pcfarm::WriteFileAtomic(config_path,
                                  pcfarm::DefaultWorkerConfigText(config.data_dir), 0644);
    }
    if (!s.ok()) return Fail(s);
    std::printf("wrote %s (edit it to choose when this PC works)\n", config_path.c_str());
  }
  if (passwd* pw = getpwnam(kServiceUser)) {
    s = ChownTree(config.data_dir, pw->pw_uid, pw->pw_gid);
    if (!s.ok()) return Fail(s);
  }
  std::printf("enrolled as '%s'; keys in %s\n", name.c_str(), config.data_dir.c_str());
  if (sd_booted() > 0) {
    int rc = std::system("systemctl enable --now pcfarm-worker.service");
    if (rc != 0) {
      return Fail(pcfarm::Internal(
          "systemctl enable --now pcfarm-worker.service failed; see: systemctl status "
          "pcfarm-worker"));
    }
    std::printf("pcfarm-worker.service is enabled and started; it works while this "
                "PC is idle. See: pcfarm-worker status\n");
  } else {
    std::printf("systemd is not running here: start the worker with\n"
                "  sudo -u %s pcfarm-worker run --config %s\n",
                kServiceUser, config_path.c_str());
  }
  return 0;
}

std::string Duration(int64_t ms) {
  int64_t min = ms / 60'000;
  char buf[64];
  if (min >= 60) {
    std::snprintf(buf, sizeof buf, "%lld h %02lld min", (long long)(min / 60),
                  (long long)(min % 60));
  } else {
    std::snprintf(buf, sizeof buf, "%lld min %02lld s", (long long)min,
                  (long long)(ms / 1000 % 60));
  }
  return buf;
}

// `status`: the enrolled farm from coordinator.json, the rest from the
// status.json a running worker rewrites (a stale one means it is stopped).
int PrintStatus(const std::string& data_dir, bool json_out) {
  pcfarm::WorkerPaths paths(data_dir);
  auto pin = pcfarm::LoadCoordinatorPin(paths.coordinator_file);
  if (!pin.ok()) {
    if (pin.status().code() == pcfarm::StatusCode::kNotFound) {
      return Fail(pcfarm::NotFound("not enrolled (" + data_dir +
                                   " has no coordinator.json): run sudo pcfarm-worker "
                                   "enroll --token T"));
    }
    return Fail(pin.status());
  }
  nlohmann::json st = nlohmann::json::object();
  auto text = pcfarm::ReadFile(paths.status_file, 1 << 20);
  if (text.ok()) {
    st = nlohmann::json::parse(*text, nullptr, false);
    if (!st.is_object()) st = nlohmann::json::object();
  }
  int64_t now_ms = int64_t(time(nullptr)) * 1000;
  pid_t pid = st.value("pid", 0);
  bool alive = pid > 0 && (kill(pid, 0) == 0 || errno == EPERM) &&
               now_ms - st.value("updated_ms", int64_t(0)) < 30'000;
  std::string state = alive ? st.value("state", "unknown") : "stopped";
  nlohmann::json out = {{"farm", pin->endpoint},
                        {"worker_id", pin->worker_id},
                        {"name", pin->name},
                        {"state", state},
                        {"paused_reason", alive ? st.value("paused_reason", "") : ""},
                        {"connected", alive && st.value("connected", false)},
                        {"backend", st.value("backend", "")},
                        {"idle_input", st.value("idle_policy", "")},
                        {"devices", st.value("devices", nlohmann::json::array())},
                        {"today", st.value("today", "")},
                        {"shards_today", st.value("shards_today", 0)},
                        {"busy_ms_today", st.value("busy_ms_today", 0)}};
  if (json_out) {
    std::printf("%s\n", out.dump().c_str());
    return 0;
  }
  std::printf("farm:     %s (worker %lld, '%s')%s\n", pin->endpoint.c_str(),
              (long long)pin->worker_id, pin->name.c_str(),
              alive ? (out["connected"].get<bool>() ? "" : " - not connected") : "");
  std::string line = state;
  if (state == "paused") line += " (" + out["paused_reason"].get<std::string>() + ")";
  if (state == "idle-waiting") line += " (the PC is idle; waiting for work)";
  if (state == "stopped") {
    line += sd_booted() > 0 ? " (start it: sudo systemctl start pcfarm-worker)"
                            : " (start it: pcfarm-worker run)";
  }
  std::printf("state:    %s\n", line.c_str());
  if (!out["idle_input"].get<std::string>().empty()) {
    std::printf("input:    %s\n", out["idle_input"].get<std::string>().c_str());
  }
  for (const auto& d : out["devices"]) {
    std::printf("device:   %s:%d %s, %.0f MiB, %.1f GFLOP/s\n",
                d.value("backend", "").c_str(), d.value("index", 0),
                d.value("name", "").c_str(), d.value("memory_bytes", 0.0) / 1048576.0,
                d.value("gflops", 0.0));
  }
  std::printf("today:    %llu shards, %s of compute\n",
              (unsigned long long)out["shards_today"].get<uint64_t>(),
              Duration(out["busy_ms_today"].get<int64_t>()).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  pcfarm::CryptoInit();
  pcfarm::RaiseOpenFileLimit();
  pcfarm::TuneMallocForChunkedIo();
  // Logs go to stderr: stdout is for what a command prints for people.
  spdlog::set_default_logger(spdlog::stderr_color_mt("pcfarm"));
  CLI::App app{"pcfarm-worker: runs pcfarm shards on this PC"};
  app.require_subcommand(1);

  std::string token, data, name;
  double timeout_s = 15;
  auto* enroll = app.add_subcommand("enroll", "join a farm with an enrollment token");
  enroll->add_option("--token", token, "token from `pcfarm token create`")->required();
  std::string config_path;
  enroll->add_option("--data", data,
                     "worker data directory to create (a worker of your own); without "
                     "it, enroll this PC's service (needs root)");
  enroll->add_option("--config", config_path,
                     "config file for the service (default /etc/pcfarm/worker.toml)");
  enroll->add_option("--name", name, "name shown to the admin (default: host name)");
  enroll->add_option("--timeout", timeout_s, "seconds to wait for the coordinator")
      ->capture_default_str();

  pcfarm::WorkerOptions opts;
  std::string log_level = "info";
  uint64_t cache_mib = opts.worker_blob_cache_bytes >> 20;
  auto* run = app.add_subcommand("run", "serve shards until stopped (SIGTERM)");
  auto* run_config = run->add_option(
      "--config", config_path,
      "config file (docs/worker-config.md); default /etc/pcfarm/worker.toml when "
      "--data is not given");
  auto* run_data = run->add_option("--data", opts.data_dir,
                                   "worker data directory (overrides the config's)");
  auto* run_slots = run->add_option("--slots", opts.worker_slots, "shards to run at once")
                        ->capture_default_str();
  auto* run_backend = run->add_option("--backend", opts.worker_backend,
                                      "compute backend: auto, cpu, vulkan, cuda")
                          ->capture_default_str();
  auto* run_device = run->add_option("--device", opts.worker_device_index,
                                     "device index for the backend")
                         ->capture_default_str();
  run->add_option("--heartbeat-interval-ms", opts.worker_heartbeat_interval_ms,
                  "heartbeat interval in ms")->capture_default_str();
  run->add_option("--heartbeat-liveness", opts.worker_heartbeat_liveness,
                  "silent intervals before the coordinator counts as lost")
      ->capture_default_str();
  run->add_option("--reconnect-max-ms", opts.worker_reconnect_max_ms,
                  "cap of the reconnect backoff in ms")->capture_default_str();
  auto* run_cache = run->add_option("--blob-cache-mib", cache_mib, "blob cache size cap in MiB")
                        ->capture_default_str();
  run->add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

  std::string status_data;
  bool status_json = false;
  auto* status = app.add_subcommand("status", "what this PC's worker is doing");
  status->add_option("--data", status_data, "worker data directory (default: the config's)");
  status->add_option("--config", config_path, "config file (default /etc/pcfarm/worker.toml)");
  status->add_flag("--json", status_json, "print JSON");

  bool json = false;
  auto* devices = app.add_subcommand("devices", "list this PC's devices and their measured speed");
  devices->add_flag("--json", json, "print JSON");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "pcfarm-worker: %s\n", e.what());
    return 64;
  }

  if (*enroll) {
    if (name.empty()) {
      char host[256] = {0};
      gethostname(host, sizeof host - 1);
      name = host[0] ? host : "worker";
    }
    if (data.empty()) {
      return EnrollSystem(token, config_path.empty() ? kSystemConfig : config_path, name,
                          static_cast<int>(timeout_s * 1000));
    }
    pcfarm::Status s = pcfarm::EnrollWorker(token, data, name,
                                            static_cast<int>(timeout_s * 1000));
    if (!s.ok()) return Fail(s);
    std::printf("enrolled as '%s'; start it with: pcfarm-worker run --data %s\n",
                name.c_str(), data.c_str());
    return 0;
  }
  if (*status) {
    if (status_data.empty()) {
      std::string path = config_path.empty() ? kSystemConfig : config_path;
      auto c = pcfarm::LoadWorkerConfig(path);
      if (!c.ok() && c.status().code() == pcfarm::StatusCode::kNotFound) {
        return Fail(pcfarm::NotFound("this PC's worker is not enrolled (no " + path +
                                     "): sudo pcfarm-worker enroll --token T"));
      }
      if (!c.ok()) return Fail(c.status());
      status_data = c->data_dir;
    }
    return PrintStatus(status_data, status_json);
  }
  if (*devices) {
    auto list = pcfarm::DiscoverDevices();
    if (!list.ok()) return Fail(list.status());
    if (json) {
      std::printf("%s\n", pcfarm::DevicesToJson(*list).c_str());
    } else {
      std::printf("%s", pcfarm::FormatDevicesTable(*list).c_str());
    }
    return 0;
  }

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ worker: %v");
  // The config file, then the flags given on the command line over it.
  if (!config_path.empty() || run_data->count() == 0) {
    std::string path = config_path.empty() ? kSystemConfig : config_path;
    auto c = pcfarm::LoadWorkerConfig(path);
    if (!c.ok()) {
      if (c.status().code() == pcfarm::StatusCode::kNotFound && run_config->count() == 0) {
        return Fail(pcfarm::NotFound(
            "no " + path + ": give --config FILE or --data DIR (or enroll: sudo "
            "pcfarm-worker enroll --token T)"));
      }
      return Fail(c.status());
    }
    if (run_data->count() == 0) opts.data_dir = c->data_dir;
    if (run_slots->count() == 0) opts.worker_slots = c->slots;
    if (run_backend->count() == 0) opts.worker_backend = c->backend;
    if (run_device->count() == 0) opts.worker_device_index = c->device;
    if (run_cache->count() == 0) cache_mib = c->blob_cache_mib;
    opts.worker_cpu_threads = c->cpu_threads;
    opts.worker_max_gpu_memory_bytes = c->max_gpu_memory_mib << 20;
    pcfarm::IdleSources sources;
    if (!c->idle_source_dir.empty()) {
      spdlog::warn("testing.idle_source_dir: idle inputs come from test files in {}",
                   c->idle_source_dir);
      sources = pcfarm::FileIdleSources(c->idle_source_dir);
    } else {
      sources = pcfarm::SystemIdleSources();
    }
    opts.idle_policy = std::make_shared<pcfarm::IdlePolicy>(*c, std::move(sources));
    spdlog::info("config {}: shards run only while the PC is idle (input: {})", path,
                 opts.idle_policy->InputDescription());
  }
  opts.worker_blob_cache_bytes = cache_mib << 20;
  auto daemon = pcfarm::WorkerDaemon::Open(opts);
  if (!daemon.ok()) return Fail(daemon.status());
  g_daemon = daemon->get();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  pcfarm::Status s = (*daemon)->Run();
  g_daemon = nullptr;
  if (s.code() == pcfarm::StatusCode::kTimeout) {
    // A shard still runs on a thread that uses the daemon: leave without
    // destroying it. Its shard was released; the spool is on disk.
    std::fprintf(stderr, "pcfarm-worker: stopped; %s\n", s.message().c_str());
    std::fflush(stderr);
    std::_Exit(0);
  }
  if (!s.ok()) return Fail(s);
  return 0;
}
