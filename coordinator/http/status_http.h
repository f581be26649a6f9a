// StatusHttpServer: the coordinator's admin status page, JSON API and
// Prometheus metrics over HTTP(S) (cpp-httplib, its own threads).
//
//   GET  /login?token=T          starts a session (cookie), then redirects to /
//   GET  /, /workers, /workers/ID, /jobs, /jobs/ID        HTML pages
//   GET  /static/app.js, /static/style.css                served by us (no CDN)
//   GET  /api/v1/overview|workers|workers/ID|jobs|jobs/ID|events?after=N
//   GET  /api/v1/workers?limit=N&offset=K&sort=F&order=asc|desc&state=S  one page
//   POST /api/v1/jobs/ID/cancel, /api/v1/workers/ID/quarantine|unban,
//        /api/v1/tokens (uses, ttl_s)                      session + CSRF
//   GET  /metrics                Prometheus text (public with metrics_public)
//
// Every request but /login (and a public /metrics) needs a session cookie
// or `Authorization: Bearer <token>`; without one the answer is 401 and
// nothing else. A POST needs the session cookie and its CSRF token in the
// X-CSRF-Token header (403 otherwise): a bearer token alone changes
// nothing. State changes run on the event loop (StatusBoard) and are
// answered once durable. JSON answers are reused for up to `cache_ms`, so
// many open pages cost about as much as one.
//
// Thread-safety: Start/Stop from one thread.
#pragma once

#include <memory>
#include <string>

#include "base/status.h"
#include "coordinator/http/status_board.h"
#include "coordinator/server.h"

namespace pcfarm {

struct StatusHttpOptions {
  std::string endpoint;  // HOST:PORT
  std::string tls_cert_file, tls_key_file;  // both or neither
  bool insecure = false;        // allow a non-loopback host without TLS
  bool metrics_public = false;  // /metrics without auth
  std::string data_dir;         // http.token, coordinator.db
  // How long a browser session lasts.
  int64_t http_session_ttl_ms = 12LL * 3600 * 1000;
  // How long one JSON answer is reused for other requests of the same URL.
  int http_cache_ms = 900;
  // Requests served at once.
  int http_threads = 2;
};

class StatusHttpServer {
 public:
  // Checks the options, opens the token and a read-only database
  // connection, binds and starts serving. InvalidArgument for a malformed
  // endpoint, for a non-loopback host without TLS and without `insecure`,
  // or for half a TLS pair; Unavailable when it cannot bind.
  // REQUIRES: `board` and `counters` outlive the server.
  static Result<std::unique_ptr<StatusHttpServer>> Start(const StatusHttpOptions& options,
                                                         StatusBoard* board,
                                                         const ServerCounters* counters);
  ~StatusHttpServer();  // Stop()
  // Stops accepting and waits for the requests under way.
  void Stop();
  // The URL the admin logs in with (StatusLoginUrl).
  std::string login_url() const;

  class Impl;

 private:
  explicit StatusHttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace pcfarm
