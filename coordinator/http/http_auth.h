// The status page's authentication: the admin's HTTP token (a file in the
// data directory), browser sessions and their CSRF tokens.
//
// The token is 256 random bits as 64 hex digits in DATA/http.token (mode
// 0600, refused when others may read it). Opening /login?token=T with it
// starts a session: the browser holds only a random session id in a cookie
// (HttpOnly, SameSite=Strict), and every state-changing POST must carry the
// session's CSRF token as well (X-CSRF-Token header), which pages embed.
//
// Thread-safety: SessionTable is safe to use from several threads; the
// free functions are pure or touch only their file.
#pragma once

#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "base/status.h"

namespace pcfarm {

inline constexpr char kHttpTokenFileName[] = "http.token";
inline constexpr char kSessionCookieName[] = "pcfarm_session";

// Writes a fresh token to `path` (0600, atomically) and returns it.
Result<std::string> WriteNewHttpToken(const std::string& path);
// The token in `path`. NotFound when there is none; InvalidArgument when it
// is not 64 hex digits; PermissionDenied when group or others may read it.
Result<std::string> ReadHttpToken(const std::string& path);
// ReadHttpToken, or WriteNewHttpToken when the file does not exist (a data
// directory made before the status page existed).
Result<std::string> LoadOrCreateHttpToken(const std::string& path);

// The URL that logs in with `token`: "http(s)://HOST:PORT/login?token=T".
// A wildcard host (0.0.0.0, ::, *) becomes 127.0.0.1.
std::string StatusLoginUrl(const std::string& endpoint, bool tls, const std::string& token);

// HOST:PORT split; InvalidArgument naming the flag's value when it is not
// one (a port 1..65535, a non-empty host; IPv6 hosts in brackets).
struct HostPort {
  std::string host;
  int port = 0;
};
Result<HostPort> ParseHostPort(const std::string& endpoint);
// True iff binding `host` serves only this machine: 127.0.0.0/8,
// "localhost" or ::1.
bool IsLoopbackHost(const std::string& host);

// The value of cookie `name` in a Cookie header, or "" when absent.
std::string CookieValue(std::string_view cookie_header, std::string_view name);

class SessionTable {
 public:
  struct Session {
    std::string csrf;
    int64_t expires_ms = 0;
  };
  // `ttl_ms`: how long a session lives after it starts.
  explicit SessionTable(int64_t ttl_ms, size_t max_sessions = 1000)
      : ttl_ms_(ttl_ms), max_sessions_(max_sessions) {}
  // A new session (random 256-bit id and CSRF token); the oldest are
  // forgotten past max_sessions. Returns its id.
  std::string Start(int64_t now_ms);
  // The live session with this id.
  std::optional<Session> Find(const std::string& id, int64_t now_ms);
  void End(const std::string& id);

 private:
  const int64_t ttl_ms_;
  const size_t max_sessions_;
  std::mutex mu_;
  std::unordered_map<std::string, Session> sessions_;  // guarded by mu_
};

}  // namespace pcfarm
