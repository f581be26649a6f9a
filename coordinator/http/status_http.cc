#include "coordinator/http/status_http.h"

#include <httplib.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
#include <thread>

#include "base/clock.h"
#include "coordinator/http/http_auth.h"
#include "coordinator/http/status_api.h"
#include "coordinator/http/status_pages.h"
#include "coordinator/setup.h"
#include "crypto/keys.h"

namespace pcfarm {

using nlohmann::json;

class StatusHttpServer::Impl {
 public:
  Impl(const StatusHttpOptions& o, StatusBoard* board, const ServerCounters* counters,
       std::unique_ptr<Store> store, std::string token)
      : opts(o),
        board(board),
        store(std::move(store)),
        api(this->store.get(), board, counters),
        token(std::move(token)),
        sessions(o.http_session_ttl_ms) {}

  Status Start(const HostPort& hp);
  void Stop();

  // ---- per request ----
  struct Auth {
    bool ok = false;
    std::string session;  // the session id when it came by cookie
    std::string csrf;
  };
  Auth Authenticate(const httplib::Request& req);
  // The JSON answer for `key` made by `make`, reused for http_cache_ms.
  void ServeJson(const std::string& key, httplib::Response& res,
                 const std::function<Result<json>()>& make);
  void ServeAction(const httplib::Request& req, httplib::Response& res, StatusAction action);
  static void Fail(httplib::Response& res, const Status& s);
  void Routes();

  StatusHttpOptions opts;
  StatusBoard* board;
  std::unique_ptr<Store> store;
  StatusApi api;
  const std::string token;
  SessionTable sessions;
  std::unique_ptr<httplib::Server> server;
  std::thread thread;
  bool tls = false;
  std::string login_url;

  std::mutex cache_mu;
  struct Cached {
    int64_t made_ms = 0;
    int status = 200;
    std::string body;
  };
  std::map<std::string, Cached> cache;  // guarded by cache_mu
};

namespace {

int64_t NowMs() { return SystemClock::Get()->NowMs(); }

int HttpStatusOf(const Status& s) {
  switch (s.code()) {
    case StatusCode::kNotFound: return 404;
    case StatusCode::kInvalidArgument: return 400;
    case StatusCode::kFailedPrecondition: return 409;
    case StatusCode::kPermissionDenied: return 403;
    case StatusCode::kUnavailable: return 503;
    default: return 500;
  }
}

void Unauthorized(httplib::Response& res) {
  res.status = 401;
  res.set_header("WWW-Authenticate", "Bearer realm=\"pcfarm\"");
  res.set_content("401 unauthorized: open the login URL (pcfarm-coordinator status-url)\n",
                  "text/plain; charset=utf-8");
}

bool ParseId(const std::string& text, int64_t* id) {
  if (text.empty() || text.size() > 18) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  *id = std::stoll(text);
  return true;
}

}  // namespace

void StatusHttpServer::Impl::Fail(httplib::Response& res, const Status& s) {
  res.status = HttpStatusOf(s);
  res.set_content(json{{"error", StatusCodeName(s.code())}, {"message", s.message()}}.dump(
                      -1, ' ', false, json::error_handler_t::replace) + "\n",
                  "application/json");
}

StatusHttpServer::Impl::Auth StatusHttpServer::Impl::Authenticate(const httplib::Request& req) {
  Auth a;
  std::string sid = CookieValue(req.get_header_value("Cookie"), kSessionCookieName);
  if (!sid.empty()) {
    if (auto s = sessions.Find(sid, NowMs())) {
      a.ok = true;
      a.session = sid;
      a.csrf = s->csrf;
      return a;
    }
  }
  const std::string header = req.get_header_value("Authorization");
  const std::string bearer = "Bearer ";
  if (header.size() > bearer.size() && header.compare(0, bearer.size(), bearer) == 0) {
    a.ok = ConstantTimeEqual(header.substr(bearer.size()), token);
  }
  return a;
}

void StatusHttpServer::Impl::ServeJson(const std::string& key, httplib::Response& res,
                                       const std::function<Result<json>()>& make) {
  int64_t now = NowMs();
  {
    std::lock_guard l(cache_mu);
    auto it = cache.find(key);
    if (it != cache.end() && now - it->second.made_ms < opts.http_cache_ms) {
      res.status = it->second.status;
      res.set_content(it->second.body, "application/json");
      return;
    }
  }
  Result<json> made = make();
  Cached c;
  c.made_ms = now;
  if (made.ok()) {
    c.body = made->dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
  } else {
    httplib::Response r;
    Fail(r, made.status());
    c.status = r.status;
    c.body = r.body;
  }
  res.status = c.status;
  res.set_content(c.body, "application/json");
  std::lock_guard l(cache_mu);
  if (cache.size() > 1000) cache.clear();
  cache[key] = std::move(c);
}

void StatusHttpServer::Impl::ServeAction(const httplib::Request& req, httplib::Response& res,
                                         StatusAction action) {
  (void)req;
  StatusActionResult r = board->Run(action, 10'000);
  {
    std::lock_guard l(cache_mu);
    cache.clear();  // the next poll shows the change
  }
  if (!r.status.ok()) return Fail(res, r.status);
  res.set_content(r.body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n",
                  "application/json");
}

void StatusHttpServer::Impl::Routes() {
  httplib::Server& s = *server;
  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (req.path == "/login") return httplib::Server::HandlerResponse::Unhandled;
    if (req.path == "/metrics" && opts.metrics_public) {
      return httplib::Server::HandlerResponse::Unhandled;
    }
    Auth a = Authenticate(req);
    if (!a.ok) {
      Unauthorized(res);
      return httplib::Server::HandlerResponse::Handled;
    }
    if (req.method != "GET" && req.method != "HEAD") {
      // Only a browser session with its CSRF token may change anything.
      if (a.session.empty() || !ConstantTimeEqual(req.get_header_value("X-CSRF-Token"), a.csrf)) {
        res.status = 403;
        res.set_content("403 forbidden: a change needs the session's CSRF token\n",
                        "text/plain; charset=utf-8");
        return httplib::Server::HandlerResponse::Handled;
      }
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });

  s.Get("/login", [this](const httplib::Request& req, httplib::Response& res) {
    if (!ConstantTimeEqual(req.get_param_value("token"), token)) return Unauthorized(res);
    std::string sid = sessions.Start(NowMs());
    res.set_header("Set-Cookie", std::string(kSessionCookieName) + "=" + sid +
                                     "; Path=/; HttpOnly; SameSite=Strict" +
                                     (tls ? "; Secure" : ""));
    res.set_redirect("/", 303);
  });
  s.Post("/logout", [this](const httplib::Request& req, httplib::Response& res) {
    sessions.End(CookieValue(req.get_header_value("Cookie"), kSessionCookieName));
    res.set_content("logged out\n", "text/plain");
  });

  // ---- pages ----
  auto csrf_of = [this](const httplib::Request& req) { return Authenticate(req).csrf; };
  auto html = [](httplib::Response& res, const std::string& body) {
    res.set_header("Content-Security-Policy",
                   "default-src 'self'; img-src 'self' data:; style-src 'self'");
    res.set_header("X-Content-Type-Options", "nosniff");
    res.set_content(body, "text/html; charset=utf-8");
  };
  s.Get("/", [this, csrf_of, html](const httplib::Request& req, httplib::Response& res) {
    auto o = api.Overview();
    if (!o.ok()) return Fail(res, o.status());
    html(res, OverviewPage(*o, csrf_of(req)));
  });
  s.Get("/workers", [this, csrf_of, html](const httplib::Request& req, httplib::Response& res) {
    auto w = api.Workers(WorkerQuery());
    if (!w.ok()) return Fail(res, w.status());
    html(res, WorkersPage(*w, csrf_of(req)));
  });
  s.Get(R"(/workers/(\d+))", [this, csrf_of, html](const httplib::Request& req,
                                                  httplib::Response& res) {
    int64_t id = 0;
    if (!ParseId(req.matches[1], &id)) return Fail(res, NotFound("no such worker"));
    auto w = api.Worker(id);
    if (!w.ok()) return Fail(res, w.status());
    html(res, WorkerPage(*w, csrf_of(req)));
  });
  s.Get("/jobs", [this, csrf_of, html](const httplib::Request& req, httplib::Response& res) {
    auto j = api.Jobs();
    if (!j.ok()) return Fail(res, j.status());
    html(res, JobsPage(*j, csrf_of(req)));
  });
  s.Get(R"(/jobs/(\d+))", [this, csrf_of, html](const httplib::Request& req,
                                               httplib::Response& res) {
    int64_t id = 0;
    if (!ParseId(req.matches[1], &id)) return Fail(res, NotFound("no such job"));
    auto j = api.Job(id);
    if (!j.ok()) return Fail(res, j.status());
    html(res, JobPage(*j, csrf_of(req)));
  });
  s.Get(R"(/jobs/(\d+)/plots)", [this](const httplib::Request& req, httplib::Response& res) {
    int64_t id = 0;
    if (!ParseId(req.matches[1], &id)) return Fail(res, NotFound("no such job"));
    auto j = api.Job(id);
    if (!j.ok()) return Fail(res, j.status());
    res.set_content(JobPlots(*j), "text/html; charset=utf-8");
  });
  s.Get("/static/app.js", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(StatusAppJs()), "text/javascript; charset=utf-8");
  });
  s.Get("/static/style.css", [](const httplib::Request&, httplib::Response& res) {
    res.set_content(std::string(StatusStyleCss()), "text/css; charset=utf-8");
  });

  // ---- JSON API ----
  s.Get("/api/v1/overview", [this](const httplib::Request&, httplib::Response& res) {
    ServeJson("overview", res, [this] { return api.Overview(); });
  });
  s.Get("/api/v1/workers", [this](const httplib::Request& req, httplib::Response& res) {
    auto q = ParseWorkerQuery(req.params);
    if (!q.ok()) return Fail(res, q.status());
    if (!q->has_value()) return ServeJson("workers", res, [this] { return api.Workers(); });
    const WorkerQuery page = **q;
    ServeJson("workers?" + page.Key(), res, [this, page] { return api.Workers(page); });
  });
  s.Get(R"(/api/v1/workers/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    int64_t id = 0;
    if (!ParseId(req.matches[1], &id)) return Fail(res, InvalidArgument("a worker id is a number"));
    ServeJson("worker/" + std::to_string(id), res, [this, id] { return api.Worker(id); });
  });
  s.Get("/api/v1/jobs", [this](const httplib::Request&, httplib::Response& res) {
    ServeJson("jobs", res, [this] { return api.Jobs(); });
  });
  s.Get(R"(/api/v1/jobs/([^/]+))", [this](const httplib::Request& req, httplib::Response& res) {
    int64_t id = 0;
    if (!ParseId(req.matches[1], &id)) return Fail(res, InvalidArgument("a job id is a number"));
    ServeJson("job/" + std::to_string(id), res, [this, id] { return api.Job(id); });
  });
  s.Get("/api/v1/events", [this](const httplib::Request& req, httplib::Response& res) {
    int64_t after = 0;
    if (req.has_param("after") && !ParseId(req.get_param_value("after"), &after)) {
      return Fail(res, InvalidArgument("after=N takes an event id (a number)"));
    }
    ServeJson("events/" + std::to_string(after), res,
              [this, after] { return api.Events(after, 1000); });
  });
  s.Get("/metrics", [this](const httplib::Request&, httplib::Response& res) {
    auto m = api.Metrics();
    if (!m.ok()) return Fail(res, m.status());
    res.set_content(*m, "text/plain; version=0.0.4; charset=utf-8");
  });

  // ---- changes (session + CSRF, checked above) ----
  s.Post(R"(/api/v1/jobs/(\d+)/cancel)", [this](const httplib::Request& req,
                                              httplib::Response& res) {
    StatusAction a;
    a.kind = StatusAction::Kind::kCancelJob;
    if (!ParseId(req.matches[1], &a.id)) return Fail(res, NotFound("no such job"));
    ServeAction(req, res, a);
  });
  s.Post(R"(/api/v1/workers/(\d+)/(quarantine|unban))", [this](const httplib::Request& req,
                                                              httplib::Response& res) {
    StatusAction a;
    a.kind = req.matches[2] == "quarantine" ? StatusAction::Kind::kQuarantineWorker
                                            : StatusAction::Kind::kUnbanWorker;
    if (!ParseId(req.matches[1], &a.id)) return Fail(res, NotFound("no such worker"));
    ServeAction(req, res, a);
  });
  s.Post("/api/v1/tokens", [this](const httplib::Request& req, httplib::Response& res) {
    json body = json::parse(req.body.empty() ? "{}" : req.body, nullptr, false);
    if (!body.is_object()) return Fail(res, InvalidArgument("the body is a JSON object"));
    StatusAction a;
    a.kind = StatusAction::Kind::kCreateToken;
    try {
      a.uses = body.value("uses", 1u);
      a.ttl_ms = int64_t(body.value("ttl_s", 86400.0) * 1000);
    } catch (const json::exception&) {
      return Fail(res, InvalidArgument("uses is a count and ttl_s a number of seconds"));
    }
    ServeAction(req, res, a);
  });
}

Status StatusHttpServer::Impl::Start(const HostPort& hp) {
  if (!opts.tls_cert_file.empty()) {
    auto ssl = std::make_unique<httplib::SSLServer>(opts.tls_cert_file.c_str(),
                                                    opts.tls_key_file.c_str());
    if (!ssl->is_valid()) {
      return InvalidArgument("cannot use the TLS certificate " + opts.tls_cert_file +
                             " and key " + opts.tls_key_file);
    }
    server = std::move(ssl);
    tls = true;
  } else {
    server = std::make_unique<httplib::Server>();
  }
  int threads = std::max(1, opts.http_threads);
  server->new_task_queue = [threads] { return new httplib::ThreadPool(size_t(threads)); };
  server->set_read_timeout(10, 0);
  server->set_write_timeout(10, 0);
  Routes();
  if (!server->bind_to_port(hp.host, hp.port)) {
    return Unavailable("cannot bind the status page to " + opts.endpoint +
                       " (in use, or no such address)");
  }
  thread = std::thread([this] { server->listen_after_bind(); });
  login_url = StatusLoginUrl(opts.endpoint, tls, token);
  return Status::Ok();
}

void StatusHttpServer::Impl::Stop() {
  if (server) server->stop();
  if (thread.joinable()) thread.join();
}

Result<std::unique_ptr<StatusHttpServer>> StatusHttpServer::Start(
    const StatusHttpOptions& options, StatusBoard* board, const ServerCounters* counters) {
  PCFARM_ASSIGN_OR_RETURN(HostPort hp, ParseHostPort(options.endpoint));
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return InvalidArgument("--http-tls-cert and --http-tls-key go together");
  }
  const bool tls = !options.tls_cert_file.empty();
  if (!IsLoopbackHost(hp.host) && !tls) {
    if (!options.insecure) {
      return InvalidArgument("the status page on " + options.endpoint +
                             " would be reachable from other machines without TLS: pass "
                             "--http-tls-cert and --http-tls-key, or --http-insecure");
    }
    spdlog::warn("status page on {} without TLS (--http-insecure): its token and session "
                 "cookies cross the network in clear text", options.endpoint);
  }
  CoordinatorPaths paths(options.data_dir);
  PCFARM_ASSIGN_OR_RETURN(std::string token,
                          LoadOrCreateHttpToken(paths.dir + "/" + kHttpTokenFileName));
  PCFARM_ASSIGN_OR_RETURN(auto store, Store::OpenReadOnly(paths.db_file, SystemClock::Get()));
  auto impl = std::make_unique<Impl>(options, board, counters, std::move(store), token);
  PCFARM_RETURN_IF_ERROR(impl->Start(hp));
  spdlog::info("status page on {}{}{} (log in: pcfarm-coordinator status-url --data {})",
               tls ? "https://" : "http://", options.endpoint,
               options.metrics_public ? ", /metrics public" : "", options.data_dir);
  return std::unique_ptr<StatusHttpServer>(new StatusHttpServer(std::move(impl)));
}

StatusHttpServer::StatusHttpServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
StatusHttpServer::~StatusHttpServer() { Stop(); }
void StatusHttpServer::Stop() { impl_->Stop(); }
std::string StatusHttpServer::login_url() const { return impl_->login_url; }

}  // namespace pcfarm
