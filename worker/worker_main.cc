// pcfarm-worker: `enroll` joins a farm once, `run` serves shards, `devices`
// shows what this PC can do and how fast.
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "base/malloc_tuning.h"
#include "base/rlimit.h"
#include "crypto/hash.h"
#include "worker/daemon.h"
#include "worker/devices.h"

namespace {

pcfarm::WorkerDaemon* g_daemon = nullptr;

void OnSignal(int) {
  if (g_daemon) g_daemon->RequestStop();
}

int Fail(const pcfarm::Status& s) {
  std::fprintf(stderr, "pcfarm-worker: %s\n", s.message().c_str());
  return 1;
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
  enroll->add_option("--data", data, "worker data directory to create")->required();
  enroll->add_option("--name", name, "name shown to the admin (default: host name)");
  enroll->add_option("--timeout", timeout_s, "seconds to wait for the coordinator")
      ->capture_default_str();

  pcfarm::WorkerOptions opts;
  std::string log_level = "info";
  uint64_t cache_mib = opts.worker_blob_cache_bytes >> 20;
  auto* run = app.add_subcommand("run", "serve shards until stopped (SIGTERM)");
  run->add_option("--data", opts.data_dir, "worker data directory")->required();
  run->add_option("--slots", opts.worker_slots, "shards to run at once")->capture_default_str();
  run->add_option("--backend", opts.worker_backend,
                  "compute backend: auto, cpu, vulkan, cuda")->capture_default_str();
  run->add_option("--device", opts.worker_device_index,
                  "device index for the backend")->capture_default_str();
  run->add_option("--heartbeat-interval-ms", opts.worker_heartbeat_interval_ms,
                  "heartbeat interval in ms")->capture_default_str();
  run->add_option("--heartbeat-liveness", opts.worker_heartbeat_liveness,
                  "silent intervals before the coordinator counts as lost")
      ->capture_default_str();
  run->add_option("--reconnect-max-ms", opts.worker_reconnect_max_ms,
                  "cap of the reconnect backoff in ms")->capture_default_str();
  run->add_option("--blob-cache-mib", cache_mib, "blob cache size cap in MiB")
      ->capture_default_str();
  run->add_option("--log-level", log_level, "trace, debug, info, warn, error")
      ->capture_default_str();

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
    pcfarm::Status s = pcfarm::EnrollWorker(token, data, name,
                                            static_cast<int>(timeout_s * 1000));
    if (!s.ok()) return Fail(s);
    std::printf("enrolled as '%s'; start it with: pcfarm-worker run --data %s\n",
                name.c_str(), data.c_str());
    return 0;
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
