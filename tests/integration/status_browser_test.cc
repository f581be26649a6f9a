// The status page in a real browser: headless Chromium, driven by Selenium
// (status_browser.py), against a real coordinator and workers running a
// bench job and a fine-tuning job. The script checks what only a browser
// shows (app.js runs, the page updates itself, buttons work, tables sort);
// this test sets the farm up, compares with the CLI and judges the result.
// Without python3-selenium, chromium or chromedriver it says so and checks
// nothing (a warning, not a pass of the browser checks).
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch

#include <filesystem>
#include <fstream>
#include <string>

#include "base/file.h"

namespace pcfarm {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

// A python3 that can run the script (`--probe` exits 0): the system's
// first, as Debian's python3-selenium is installed for it.
std::string FindPython(MiniCluster* c, std::string* why_not) {
  for (const char* python : {"/usr/bin/python3", "/usr/local/bin/python3"}) {
    if (!fs::exists(python)) continue;
    CommandResult r = c->Run({python, PCFARM_STATUS_BROWSER_SCRIPT, "--probe"}, 30'000);
    if (r.exit_code == 0) return python;
    *why_not += std::string(python) + ": " + r.err;
  }
  if (why_not->empty()) *why_not = "no python3";
  return "";
}

std::string TrainData() {
  std::string out;
  for (int i = 0; i < 12; ++i) {
    out += json{{"text", "idle PCs hum quietly, fact " + std::to_string(i % 4) + "."}}.dump() +
           "\n";
  }
  return out;
}

TEST_CASE("status page in headless Chromium: login, counts, live progress, loss curve, "
          "cancel, sorting",
          "[integration][http][browser]") {
  MiniClusterOptions o;
  // Paused workers (SIGSTOP) stay connected for 60 s, so the page and the
  // CLI agree on them while the browser looks (slow under ASan and load).
  o.heartbeat_liveness = 300;
  // No lease ends while they are paused: they run their shards on resume.
  o.lease_ms = 90'000;
  Cluster c(o);
  REQUIRE_OK(c->Init());
  std::string why_not;
  const std::string python = FindPython(&c.c, &why_not);
  if (python.empty()) {
    WARN("SKIPPED: the browser test needs python3-selenium, chromium and chromium-driver "
         "(installer/install-deps.sh): " << why_not);
    return;
  }
  REQUIRE_OK(c->StartCoordinator());
  // Names out of id order, so that sorting by name moves rows.
  REQUIRE_OK(c->AddWorker("pc-charlie"));
  REQUIRE_OK(c->AddWorker("pc-alpha"));
  REQUIRE_OK(c->AddWorker("pc-bravo"));
  REQUIRE_OK(c->WaitForConnectedWorkers(3, 20'000));

  // A small fine-tuning job, finished, so its page has a loss curve.
  const std::string model = c->dir() + "/model", data = c->dir() + "/train.jsonl";
  CommandResult made = c->Run({c->Binary("pcfarm"), "local", "make-model", "--out", model,
                               "--config", "tiny", "--seed", "3"},
                              60'000);
  INFO(made.Describe());
  REQUIRE(made.exit_code == 0);
  REQUIRE_OK(WriteFileAtomic(data, TrainData()));
  CommandResult sub = c->Cli({"submit", "finetune", "--model", model, "--data", data, "--steps",
                              "4", "--batch", "3", "--micro-batch", "1", "--lr", "0.01",
                              "--lora-rank", "4", "--seed", "7"},
                             30, 120'000);
  INFO(sub.Describe());
  REQUIRE(sub.exit_code == 0);
  const int64_t finetune = std::stoll(sub.LastLine());
  auto end = c->WaitForJobEnd(finetune, 120'000);
  REQUIRE_OK(end);
  REQUIRE(*end == "succeeded");

  // One worker offline, two connected but paused: the bench jobs wait.
  REQUIRE_OK(c->StopWorker(2));
  REQUIRE_OK(c->PauseWorker(0));
  REQUIRE_OK(c->PauseWorker(1));
  auto progress_job = c->SubmitBench(40, 32, 1);
  REQUIRE_OK(progress_job);
  auto cancel_job = c->SubmitBench(8, 32, 1);
  REQUIRE_OK(cancel_job);
  int64_t online = 0, idle = 0, busy = 0;
  REQUIRE(WaitUntil(
      [&] {
        auto ws = c->Workers();
        if (!ws.ok()) return false;
        online = idle = busy = 0;
        for (const auto& w : *ws) {
          if (!w["connected"].get<bool>()) continue;
          ++online;
          (w["running"].get<int64_t>() > 0 ? busy : idle)++;
        }
        return online == 2;
      },
      10'000, 100));

  const std::string out = c->dir() + "/browser";
  const std::string shots = PCFARM_SCREENSHOT_DIR;
  fs::create_directories(out);
  auto token = ReadFile(c->coordinator_dir() + "/http.token", 4096);
  REQUIRE_OK(token);
  ChildProcess browser;
  REQUIRE_OK(browser.Start(
      {python, PCFARM_STATUS_BROWSER_SCRIPT, "--url", "http://" + c->http_endpoint(), "--token",
       token->substr(0, 64), "--expect-workers",
       std::to_string(online) + "," + std::to_string(idle) + "," + std::to_string(busy),
       "--progress-job", std::to_string(*progress_job), "--finetune-job",
       std::to_string(finetune), "--cancel-job", std::to_string(*cancel_job), "--out", out,
       "--screenshots", shots},
      out + ".log"));
  // The script asks for the workers once it has seen the job's first
  // progress; it gives up on its own waits well before this deadline.
  bool resumed = false;
  REQUIRE(WaitUntil(
      [&] {
        if (!resumed && fs::exists(out + "/resume-workers")) {
          resumed = c->ResumeWorker(0).ok() && c->ResumeWorker(1).ok();
        }
        return !browser.running();
      },
      150'000, 50));
  if (!resumed) {
    (void)c->ResumeWorker(0);
    (void)c->ResumeWorker(1);
  }
  auto log = ReadFile(out + ".log", 1 << 20);
  INFO("status_browser.py:\n" << (log.ok() ? *log : log.status().ToString()));
  REQUIRE(browser.exit_code() == 0);
  auto result_text = ReadFile(out + "/result.json", 1 << 20);
  REQUIRE_OK(result_text);
  json result = json::parse(*result_text);
  for (const char* name : {"wrong_token_401", "no_session_401", "api_without_token_401", "login",
                           "overview_counts", "workers_sort", "workers_sort_numeric", "workers_paging",
                           "loss_curve", "cancel_button", "live_progress", "quarantine_unban",
                           "no_console_errors"}) {
    CHECK(result["checks"].contains(name));
  }
  for (const auto& [name, check] : result["checks"].items()) {
    INFO(name << ": " << check.value("detail", ""));
    CHECK(check.value("ok", false));
  }
  for (const char* png : {"overview.png", "job-finetune.png", "job-bench.png"}) {
    INFO(png);
    CHECK(fs::file_size(fs::path(shots) / png) > 1000);
  }

  // The page's cancel is the farm's: the CLI sees it, and the other job
  // still finishes.
  auto st = c->JobStatus(*cancel_job);
  REQUIRE_OK(st);
  CHECK((*st)["state"] == "cancelled");
  auto done = c->WaitForJobEnd(*progress_job, 60'000);
  REQUIRE_OK(done);
  CHECK(*done == "succeeded");
}

}  // namespace
}  // namespace pcfarm
