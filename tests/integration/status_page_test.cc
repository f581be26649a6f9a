// The coordinator's status page over HTTP against a real coordinator and
// workers (MiniCluster): the JSON API equals the CLI's --json, nothing
// answers without the token, changes need the session's CSRF token, worker
// names are escaped in HTML, and /metrics passes `promtool check metrics`.
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch

#include <httplib.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "base/file.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// An HTTP client of the cluster's status page, logged in or not.
struct Browser {
  explicit Browser(MiniCluster& c) : http("http://" + c.http_endpoint()) {
    http.set_connection_timeout(5, 0);
    http.set_read_timeout(15, 0);
  }
  // Logs in with `token`; true when a session cookie came back.
  bool Login(const std::string& token) {
    auto r = http.Get(("/login?token=" + token).c_str());
    if (!r || r->status != 303) return false;
    std::string set = r->get_header_value("Set-Cookie");
    cookie_header = set.substr(0, set.find(';'));
    set_cookie = set;
    return !cookie_header.empty();
  }
  httplib::Headers Headers() const {
    httplib::Headers h;
    if (!cookie_header.empty()) h.emplace("Cookie", cookie_header);
    return h;
  }
  httplib::Result Get(const std::string& path) { return http.Get(path.c_str(), Headers()); }
  json GetJson(const std::string& path) {
    auto r = Get(path);
    REQUIRE(r);
    INFO(path << ": " << r->body);
    REQUIRE(r->status == 200);
    return json::parse(r->body);
  }
  httplib::Result Post(const std::string& path, const std::string& csrf) {
    httplib::Headers h = Headers();
    if (!csrf.empty()) h.emplace("X-CSRF-Token", csrf);
    return http.Post(path.c_str(), h, "{}", "application/json");
  }
  // The CSRF token a page embeds.
  std::string Csrf() {
    auto r = Get("/");
    REQUIRE(r);
    // (Not std::regex: GCC 12's <regex> trips -Wmaybe-uninitialized under
    // the sanitizer build's -O1.)
    const std::string meta = "name=\"csrf-token\" content=\"";
    const size_t at = r->body.find(meta);
    REQUIRE(at != std::string::npos);
    const std::string token = r->body.substr(at + meta.size(), 64);
    REQUIRE(token.size() == 64);
    REQUIRE(token.find_first_not_of("0123456789abcdef") == std::string::npos);
    REQUIRE(r->body.compare(at + meta.size() + 64, 1, "\"") == 0);
    return token;
  }
  httplib::Client http;
  std::string cookie_header, set_cookie;
};

// A worker as the API and the CLI show it, but for last_seen_ms, which the
// coordinator moves every heartbeat.
json Stable(json workers) {
  for (auto& w : workers) w.erase("last_seen_ms");
  return workers;
}

TEST_CASE("status page: API equals the CLI, auth, CSRF, escaping, metrics",
          "[integration][http]") {
  Cluster c;
  REQUIRE_OK(c->Init());
  REQUIRE_OK(c->StartCoordinator());
  REQUIRE_OK(c->AddWorker("plain-pc"));
  REQUIRE_OK(c->AddWorker("<script>alert(1)</script>"));
  REQUIRE_OK(c->WaitForConnectedWorkers(2, 20'000));

  auto token = ReadFile(c->coordinator_dir() + "/http.token", 4096);
  REQUIRE_OK(token);
  std::string t = token->substr(0, 64);

  // `status-url` prints the login URL with this token and endpoint.
  CommandResult url = c->Run({c->Binary("pcfarm-coordinator"), "status-url", "--data",
                              c->coordinator_dir()}, 10'000);
  REQUIRE(url.exit_code == 0);
  CHECK(url.LastLine() == "http://" + c->http_endpoint() + "/login?token=" + t);

  Browser anon(c.c);
  SECTION("nothing answers without the token") {
    for (const char* path : {"/", "/workers", "/workers/1", "/jobs", "/jobs/1", "/api/v1/overview",
                             "/api/v1/workers", "/api/v1/workers/1", "/api/v1/jobs",
                             "/api/v1/jobs/1", "/api/v1/events?after=0", "/metrics",
                             "/static/app.js", "/nothing-here"}) {
      INFO(path);
      auto r = anon.Get(path);
      REQUIRE(r);
      CHECK(r->status == 401);
      CHECK(r->body.find("pcfarm_") == std::string::npos);
      CHECK(r->body.find("plain-pc") == std::string::npos);
    }
    CHECK_FALSE(anon.Login(std::string(64, '0')));
    CHECK_FALSE(anon.Login(""));
    auto r = anon.http.Post("/api/v1/jobs/1/cancel", "{}", "application/json");
    REQUIRE(r);
    CHECK(r->status == 401);
    // A forged cookie is no session.
    anon.cookie_header = "pcfarm_session=" + std::string(64, 'a');
    CHECK(anon.Get("/api/v1/workers")->status == 401);
  }

  Browser b(c.c);
  REQUIRE(b.Login(t));
  CHECK(b.set_cookie.find("HttpOnly") != std::string::npos);
  CHECK(b.set_cookie.find("SameSite=Strict") != std::string::npos);

  SECTION("workers and overview equal `pcfarm workers --json`") {
    // The page's view of live state is at most ~1 s old (a snapshot the
    // event loop publishes every 250 ms, answers reused for 0.9 s): wait
    // for it to catch up with the workers' connections, then compare.
    auto cli = c->Workers();
    REQUIRE_OK(cli);
    for (int i = 0; i < 50 && Stable(b.GetJson("/api/v1/workers")) != Stable(*cli); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      cli = c->Workers();
      REQUIRE_OK(cli);
    }
    CHECK(Stable(b.GetJson("/api/v1/workers")) == Stable(*cli));
    for (const auto& w : *cli) {
      json one = b.GetJson("/api/v1/workers/" + std::to_string(w["worker_id"].get<int64_t>()));
      CHECK(Stable(json::array({one})) == Stable(json::array({w})));
    }
    CHECK(b.Get("/api/v1/workers/999")->status == 404);
    CHECK(b.Get("/api/v1/workers/abc")->status == 400);

    // One page at a time, sorted by the server; the rows are the list's own.
    json page = b.GetJson("/api/v1/workers?limit=1");
    CHECK(page["total"] == int64_t(cli->size()));
    REQUIRE(page["workers"].size() == 1);
    CHECK(Stable(page["workers"]) == Stable(json::array({(*cli)[0]})));
    page = b.GetJson("/api/v1/workers?limit=1&offset=1");
    CHECK(Stable(page["workers"]) == Stable(json::array({(*cli)[1]})));
    // "<script>..." sorts before "plain-pc" by bytes; desc turns it round.
    page = b.GetJson("/api/v1/workers?limit=10&sort=name&order=desc");
    REQUIRE(page["workers"].size() == 2);
    CHECK(page["workers"][0]["name"] == "plain-pc");
    CHECK(page["workers"][1]["name"] == "<script>alert(1)</script>");
    CHECK(b.GetJson("/api/v1/workers?limit=10&state=offline")["total"] == 0);
    for (const char* bad : {"?limit=0", "?limit=x", "?offset=1", "?limit=5&sort=nope",
                            "?limit=5&order=sideways", "?limit=5&state=asleep", "?limit=5&pg=2"}) {
      INFO(bad);
      auto r = b.Get(std::string("/api/v1/workers") + bad);
      REQUIRE(r);
      CHECK(r->status == 400);
      CHECK(json::parse(r->body)["error"] == "invalid_argument");
      CHECK_FALSE(json::parse(r->body)["message"].get<std::string>().empty());
    }
    json o = b.GetJson("/api/v1/overview");
    int64_t online = 0, busy = 0, banned = 0;
    for (const auto& w : *cli) {
      online += w["connected"].get<bool>();
      busy += w["running"].get<int64_t>() > 0;
      banned += w["banned"].get<bool>();
    }
    CHECK(o["workers_online"] == online);
    CHECK(o["workers_busy"] == busy);
    CHECK(o["workers_idle"] == online - busy);
    CHECK(o["workers_quarantined"] == banned);
    CHECK(o["workers_total"] == int64_t(cli->size()));
  }

  SECTION("a worker's name shows as text in HTML") {
    for (std::string path : {"/workers", "/workers/2"}) {
      auto r = b.Get(path);
      REQUIRE(r);
      REQUIRE(r->status == 200);
      CHECK(r->body.find("<script>alert(1)</script>") == std::string::npos);
      CHECK(r->body.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
    }
  }

  SECTION("jobs equal `pcfarm jobs --json` and `status --json`; events page by id") {
    auto job = c->SubmitBench(4, 32, 2);
    REQUIRE_OK(job);
    REQUIRE(*c->WaitForJobEnd(*job, 60'000) == "succeeded");
    auto cli_jobs = c->CliJson({"jobs"});
    REQUIRE_OK(cli_jobs);
    // The API reuses an answer for under a second.
    CHECK(WaitUntil([&] { return b.GetJson("/api/v1/jobs") == *cli_jobs; }, 5000, 200));
    auto status = c->JobStatus(*job);
    REQUIRE_OK(status);
    json api = b.GetJson("/api/v1/jobs/" + std::to_string(*job));
    for (const auto& [k, v] : status->items()) {
      INFO(k);
      CHECK(api[k] == v);
    }
    CHECK(api["shard_states"]["accepted"] == 4);
    CHECK(b.Get("/api/v1/jobs/999")->status == 404);
    auto page = b.Get("/jobs/" + std::to_string(*job));
    REQUIRE(page);
    CHECK(page->status == 200);
    CHECK(page->body.find("<progress") != std::string::npos);

    json all = b.GetJson("/api/v1/events?after=0");
    REQUIRE(all.size() >= 3);
    int64_t mid = all[1]["id"].get<int64_t>();
    json later = b.GetJson("/api/v1/events?after=" + std::to_string(mid));
    REQUIRE(later.size() == all.size() - 2);
    CHECK(later[0]["id"].get<int64_t>() > mid);
    CHECK(b.Get("/api/v1/events?after=x")->status == 400);
  }

  SECTION("a change needs the session's CSRF token; cancel works") {
    REQUIRE_OK(c->PauseWorker(0));
    REQUIRE_OK(c->PauseWorker(1));
    auto job = c->SubmitBench(8, 32, 1);
    REQUIRE_OK(job);
    std::string path = "/api/v1/jobs/" + std::to_string(*job) + "/cancel";
    auto none = b.Post(path, "");
    REQUIRE(none);
    CHECK(none->status == 403);
    auto wrong = b.Post(path, std::string(64, 'f'));
    REQUIRE(wrong);
    CHECK(wrong->status == 403);
    // The bearer token reads, but changes nothing.
    httplib::Headers bearer = {{"Authorization", "Bearer " + t}};
    CHECK(anon.http.Get("/api/v1/jobs", bearer)->status == 200);
    CHECK(anon.http.Post(path.c_str(), bearer, "{}", "application/json")->status == 403);
    auto st = c->JobStatus(*job);
    REQUIRE_OK(st);
    CHECK((*st)["state"] != "cancelled");

    auto ok = b.Post(path, b.Csrf());
    REQUIRE(ok);
    INFO(ok->body);
    REQUIRE(ok->status == 200);
    CHECK(json::parse(ok->body)["state"] == "cancelled");
    st = c->JobStatus(*job);
    REQUIRE_OK(st);
    CHECK((*st)["state"] == "cancelled");
    auto again = b.Post(path, b.Csrf());
    REQUIRE(again);
    CHECK(again->status == 409);  // already ended
    REQUIRE_OK(c->ResumeWorker(0));
    REQUIRE_OK(c->ResumeWorker(1));
  }

  SECTION("quarantine, unban and a new token need the CSRF token; they act like the CLI's") {
    auto banned = [&](int64_t id) {
      auto ws = c->Workers();
      REQUIRE_OK(ws);
      for (const auto& w : *ws) {
        if (w["worker_id"] == id) return w["banned"].get<bool>();
      }
      FAIL("no worker " << id << " in `pcfarm workers --json`");
      return false;
    };
    httplib::Headers bearer = {{"Authorization", "Bearer " + t}};
    for (const char* path : {"/api/v1/workers/1/quarantine", "/api/v1/workers/1/unban",
                             "/api/v1/tokens"}) {
      INFO(path);
      CHECK(b.Post(path, "")->status == 403);
      CHECK(b.Post(path, std::string(64, '0'))->status == 403);
      CHECK(anon.http.Post(path, bearer, "{}", "application/json")->status == 403);
    }
    CHECK_FALSE(banned(1));
    auto events_before = b.GetJson("/api/v1/events?after=0").size();

    const std::string csrf = b.Csrf();
    auto q = b.Post("/api/v1/workers/1/quarantine", csrf);
    REQUIRE(q);
    INFO(q->body);
    REQUIRE(q->status == 200);
    CHECK(json::parse(q->body)["banned"] == true);
    CHECK(banned(1));
    CHECK_FALSE(banned(2));
    CHECK(b.Post("/api/v1/workers/999/quarantine", csrf)->status == 404);
    auto u = b.Post("/api/v1/workers/1/unban", csrf);
    REQUIRE(u);
    REQUIRE(u->status == 200);
    CHECK(json::parse(u->body)["banned"] == false);
    CHECK_FALSE(banned(1));

    // A token made by the page enrolls a worker, once.
    httplib::Headers h = b.Headers();
    h.emplace("X-CSRF-Token", csrf);
    CHECK(b.http.Post("/api/v1/tokens", h, "[1]", "application/json")->status == 400);
    CHECK(b.http.Post("/api/v1/tokens", h, R"({"uses": "two"})", "application/json")->status ==
          400);
    auto made = b.http.Post("/api/v1/tokens", h, R"({"uses": 1, "ttl_s": 600})",
                            "application/json");
    REQUIRE(made);
    INFO(made->body);
    REQUIRE(made->status == 200);
    json tok = json::parse(made->body);
    CHECK(tok["uses"] == 1);
    CommandResult enroll = c->EnrollWorker("from-the-page", tok["token"].get<std::string>());
    INFO(enroll.Describe());
    CHECK(enroll.exit_code == 0);
    CommandResult again = c->EnrollWorker("twice", tok["token"].get<std::string>());
    CHECK(again.exit_code != 0);
    auto ws = c->Workers();
    REQUIRE_OK(ws);
    CHECK(ws->size() == 3);  // plain-pc, <script>, from-the-page
    // Each change is in the event log, by the status page.
    CHECK(WaitUntil([&] { return b.GetJson("/api/v1/events?after=0").size() > events_before + 2; },
                    5000, 200));
  }

  SECTION("/metrics parses with promtool") {
    auto job = c->SubmitBench(2, 32, 1);
    REQUIRE_OK(job);
    REQUIRE(*c->WaitForJobEnd(*job, 60'000) == "succeeded");
    auto r = b.Get("/metrics");
    REQUIRE(r);
    REQUIRE(r->status == 200);
    const std::string& m = r->body;
    for (const char* name : {"pcfarm_workers{state=\"idle\"}", "pcfarm_shards{state=\"pending\"}",
                             "pcfarm_results_total{outcome=\"stored\"}",
                             "pcfarm_results_total{outcome=\"forged\"}",
                             "pcfarm_blob_bytes_total{direction=\"out\"}",
                             "pcfarm_round_trip_seconds_bucket{le=\"+Inf\"}",
                             "pcfarm_sqlite_commit_seconds_count", "pcfarm_wal_fsync_seconds_sum",
                             "pcfarm_jobs{state=\"running\"}"}) {
      INFO(name);
      CHECK(m.find(name) != std::string::npos);
    }
    CHECK(m.find("pcfarm_round_trip_seconds_count 2") != std::string::npos);
    std::string path = c->dir() + "/metrics.txt";
    std::ofstream(path) << m;
    if (std::system("command -v promtool >/dev/null 2>&1") != 0) {
      WARN("promtool is absent (Debian package prometheus): /metrics not checked by it");
    } else {
      CommandResult check = c->Run({"/bin/sh", "-c", "promtool check metrics < " + path}, 30'000);
      INFO(check.Describe() << "\n" << m);
      CHECK(check.exit_code == 0);
    }
  }
}

TEST_CASE("status page over TLS: https answers, plain http does not", "[integration][http]") {
  if (std::system("command -v openssl >/dev/null 2>&1 && command -v curl >/dev/null 2>&1") !=
      0) {
    WARN("SKIPPED: openssl and curl are needed to make a certificate and to fetch over https");
    return;
  }
  char tmpl[] = "/tmp/pcfarm-tls-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl, cert = dir + "/cert.pem", key = dir + "/key.pem";
  MiniClusterOptions o;
  o.coordinator_args = {"--http-tls-cert", cert, "--http-tls-key", key};
  Cluster c(o);
  REQUIRE_OK(c->Init());
  CommandResult made = c->Run({"/usr/bin/env", "openssl", "req", "-x509", "-newkey", "rsa:2048",
                               "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", key,
                               "-out", cert},
                              60'000);
  INFO(made.Describe());
  REQUIRE(made.exit_code == 0);
  REQUIRE_OK(c->StartCoordinator());
  auto token = ReadFile(c->coordinator_dir() + "/http.token", 4096);
  REQUIRE_OK(token);
  const std::string t = token->substr(0, 64);

  // (serve's TLS flags are not in config.json: status-url is told.)
  CommandResult url = c->Run({c->Binary("pcfarm-coordinator"), "status-url", "--https", "--data",
                              c->coordinator_dir()}, 10'000);
  CHECK(url.LastLine() == "https://" + c->http_endpoint() + "/login?token=" + t);
  auto curl = [&](const std::vector<std::string>& args) {
    std::vector<std::string> argv = {"/usr/bin/env", "curl", "-sS", "--max-time", "10"};
    argv.insert(argv.end(), args.begin(), args.end());
    return c->Run(argv, 20'000);
  };
  // With the certificate unchecked (-k) the API answers the token.
  CommandResult https = curl({"-k", "-H", "Authorization: Bearer " + t,
                              "https://" + c->http_endpoint() + "/api/v1/overview"});
  INFO(https.Describe());
  REQUIRE(https.exit_code == 0);
  CHECK(json::parse(https.out).contains("workers_online"));
  // Checked against the certificate itself too.
  CHECK(curl({"--cacert", cert, "-o", "/dev/null", "-w", "%{http_code}",
              "https://localhost:" + c->http_endpoint().substr(c->http_endpoint().find(':') + 1) +
                  "/api/v1/overview"})
            .out == "401");
  // The session cookie is Secure over TLS.
  CommandResult login = curl({"-k", "-D", "-", "-o", "/dev/null",
                              "https://" + c->http_endpoint() + "/login?token=" + t});
  CHECK(login.out.find("; Secure") != std::string::npos);
  // Plain http gets no answer at all.
  CommandResult plain = curl({"-H", "Authorization: Bearer " + t,
                              "http://" + c->http_endpoint() + "/api/v1/overview"});
  CHECK(plain.exit_code != 0);
  CHECK(plain.out.find("workers_online") == std::string::npos);
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
}

TEST_CASE("status page: a non-loopback endpoint needs TLS or --http-insecure",
          "[integration][http]") {
  Cluster c;
  REQUIRE_OK(c->Init());
  CommandResult r = c->Run({c->Binary("pcfarm-coordinator"), "serve", "--data",
                            c->coordinator_dir(), "--http-endpoint", "0.0.0.0:1"},
                           20'000);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("--http-insecure") != std::string::npos);
  r = c->Run({c->Binary("pcfarm-coordinator"), "serve", "--data", c->coordinator_dir(),
              "--http-endpoint", "nonsense"},
             20'000);
  CHECK(r.exit_code != 0);
  CHECK(r.err.find("HOST:PORT") != std::string::npos);
}

}  // namespace
}  // namespace pcfarm
