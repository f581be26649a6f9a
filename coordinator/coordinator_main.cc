// pcfarm-coordinator: `init` makes a data directory, `serve` runs the daemon.
#include <algorithm>
#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "coordinator/cli/duration.h"
#include "coordinator/http/http_auth.h"
#include "coordinator/server.h"
#include "coordinator/setup.h"
#include "base/malloc_tuning.h"
#include "base/rlimit.h"
#include "crypto/hash.h"

namespace {

pcfarm::CoordinatorServer* g_server = nullptr;

void OnSignal(int) {
  if (g_server) g_server->RequestStop();
}

int Fail(const pcfarm::Status& s) {
  std::fprintf(stderr, "pcfarm-coordinator: %s\n", s.message().c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  pcfarm::CryptoInit();
  pcfarm::RaiseOpenFileLimit();
  pcfarm::TuneMallocForChunkedIo();
  // Logs go to stderr: stdout is for what a command prints for people.
  spdlog::set_default_logger(spdlog::stderr_color_mt("pcfarm"));
  CLI::App app{"pcfarm-coordinator: holds jobs and hands shards to workers"};
  app.require_subcommand(1);

  std::string data;
  pcfarm::CoordinatorConfig config;
  auto* init = app.add_subcommand("init", "create a data directory with keys, database and admin profile");
  init->add_option("--data", data, "data directory to create")->required();
  init->add_option("--workers-endpoint", config.workers_endpoint,
                   "where workers connect (ZeroMQ endpoint to bind)")->capture_default_str();
  init->add_option("--clients-endpoint", config.clients_endpoint,
                   "where the pcfarm CLI connects")->capture_default_str();
  init->add_option("--advertise", config.advertise_endpoint,
                   "endpoint put in enrollment tokens (default: the workers "
                   "endpoint with this host's name)");
  init->add_option("--http-endpoint", config.http_endpoint,
                   "the status page's HOST:PORT (\"\" for none)")->capture_default_str();

  pcfarm::ServerOptions opts;
  std::string log_level = "info";
  auto* serve = app.add_subcommand("serve", "run the coordinator");
  serve->add_option("--data", opts.data_dir, "data directory made by init")->required();
  serve->add_option("--workers-endpoint", opts.workers_endpoint, "override the configured workers endpoint");
  serve->add_option("--clients-endpoint", opts.clients_endpoint, "override the configured clients endpoint");
  serve->add_option("--heartbeat-interval-ms", opts.coordinator_heartbeat_interval_ms,
                    "heartbeat interval in ms")->capture_default_str();
  serve->add_option("--heartbeat-liveness", opts.coordinator_heartbeat_liveness,
                    "silent intervals before a worker is lost")->capture_default_str();
  serve->add_option("--lease-ms", opts.scheduler_lease_ms,
                    "how long a worker holds a shard without a heartbeat that says it "
                    "still runs it")
      ->capture_default_str();
  serve->add_option("--max-attempt-ms", opts.scheduler_max_attempt_ms,
                    "the longest a worker may hold one shard, renewals included")
      ->check(CLI::Range(int64_t(100), int64_t(30) * 86'400'000))
      ->capture_default_str();
  serve->add_option("--max-attempts", opts.scheduler_max_attempts,
                    "failed attempts before a shard fails its job")->capture_default_str();
  serve->add_option("--max-slots-per-worker", opts.coordinator_max_slots_per_worker,
                    "most shards one worker holds at once, whatever it declares")
      ->check(CLI::Range(1, 1024))->capture_default_str();
  double events_max_age_days = double(opts.coordinator_events_max_age_ms) / 86'400'000;
  serve->add_option("--events-max-age-days", events_max_age_days,
                    "delete events older than this")
      ->check(CLI::PositiveNumber)->capture_default_str();
  serve->add_option("--events-max-rows", opts.coordinator_events_max_rows,
                    "keep at most this many events (the newest)")
      ->check(CLI::Range(int64_t(100), int64_t(1) << 40))->capture_default_str();
  std::string min_free_disk = "1GiB";
  serve->add_option("--min-free-disk", min_free_disk,
                    "refuse uploads that would leave less free disk than this (e.g. 1GiB, 500MiB, 0)")
      ->capture_default_str();
  std::string rewind_keep = "4GiB";
  serve->add_option("--rewind-keep", rewind_keep,
                    "bytes of a running fine-tuning job's earlier versions and optimizer "
                    "states kept, so that a quarantine can rewind it")
      ->capture_default_str();
  std::string blob_grace = "1h";
  serve->add_option("--blob-grace", blob_grace,
                    "delete a blob no job needs once it was stored this long ago "
                    "(e.g. 1h, 10m, 30s)")
      ->capture_default_str();
  std::string http_endpoint;
  auto* http_opt = serve->add_option("--http-endpoint", http_endpoint,
                                     "status page, JSON API and /metrics: HOST:PORT to bind, "
                                     "\"\" for none (default: config.json's, 127.0.0.1:7072)");
  serve->add_option("--http-tls-cert", opts.http_tls_cert_file,
                    "PEM certificate: serve the status page over HTTPS");
  serve->add_option("--http-tls-key", opts.http_tls_key_file, "PEM private key of --http-tls-cert");
  serve->add_flag("--http-insecure", opts.http_insecure,
                  "allow a non-loopback --http-endpoint without TLS");
  serve->add_flag("--metrics-public", opts.http_metrics_public,
                  "serve /metrics without the HTTP token");
  serve->add_option("--log-level", log_level, "trace, debug, info, warn, error")->capture_default_str();

  std::string url_data;
  auto* status_url = app.add_subcommand("status-url", "print the URL that logs in to the status page");
  status_url->add_option("--data", url_data, "data directory made by init")->required();
  bool url_https = false;
  status_url->add_flag("--https", url_https, "the status page is served with --http-tls-cert");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::fprintf(stderr, "pcfarm-coordinator: %s\n", e.what());
    return 64;
  }
  opts.coordinator_events_max_age_ms = static_cast<int64_t>(events_max_age_days * 86'400'000);
  if (*serve) {
    auto reserve = pcfarm::ParseByteSize(min_free_disk);
    if (!reserve.ok()) return Fail(reserve.status().WithContext("--min-free-disk"));
    opts.min_free_disk_bytes = *reserve;
    auto keep = pcfarm::ParseByteSize(rewind_keep);
    if (!keep.ok()) return Fail(keep.status().WithContext("--rewind-keep"));
    opts.rewind_keep_bytes = *keep;
    auto grace = pcfarm::ParseDurationMs(blob_grace);
    if (!grace.ok()) return Fail(grace.status().WithContext("--blob-grace"));
    opts.blob_grace_ms = *grace;
    // A short grace (tests, small disks) is looked at as often.
    opts.coordinator_blob_collect_interval_ms =
        std::clamp<int64_t>(opts.blob_grace_ms, 1000, opts.coordinator_blob_collect_interval_ms);
    if (http_opt->count() > 0) opts.http_endpoint = http_endpoint;
  }

  if (*status_url) {
    auto loaded = pcfarm::LoadCoordinatorConfig(url_data);
    if (!loaded.ok()) return Fail(loaded.status());
    if (loaded->http_endpoint.empty()) {
      return Fail(pcfarm::FailedPrecondition("the status page is off (config.json has no http_endpoint)"));
    }
    auto token = pcfarm::ReadHttpToken(pcfarm::CoordinatorPaths(url_data).http_token);
    if (!token.ok()) return Fail(token.status());
    std::printf("%s\n", pcfarm::StatusLoginUrl(loaded->http_endpoint, url_https, *token).c_str());
    return 0;
  }

  if (*init) {
    pcfarm::Status s = pcfarm::InitCoordinatorDir(data, config);
    if (!s.ok()) return Fail(s);
    pcfarm::CoordinatorPaths paths(data);
    std::printf("coordinator data directory ready: %s\n", data.c_str());
    std::printf("  workers endpoint: %s (tokens advertise %s)\n",
                config.workers_endpoint.c_str(),
                pcfarm::AdvertisedEndpoint(config).c_str());
    std::printf("  clients endpoint: %s\n", config.clients_endpoint.c_str());
    std::printf("  admin profile:    %s (export PCFARM_PROFILE=%s)\n",
                paths.admin_profile.c_str(), paths.admin_profile.c_str());
    if (!config.http_endpoint.empty()) {
      auto token = pcfarm::ReadHttpToken(paths.http_token);
      if (!token.ok()) return Fail(token.status());
      std::printf("  status page:      %s\n",
                  pcfarm::StatusLoginUrl(config.http_endpoint, false, *token).c_str());
    }
    return 0;
  }

  spdlog::set_level(spdlog::level::from_str(log_level));
  spdlog::set_pattern("%Y-%m-%d %H:%M:%S.%e %^%l%$ coordinator: %v");
  auto server = pcfarm::CoordinatorServer::Open(opts);
  if (!server.ok()) return Fail(server.status());
  g_server = server->get();
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  pcfarm::Status s = (*server)->Run();
  g_server = nullptr;
  if (!s.ok()) return Fail(s);
  return 0;
}
