#include "coordinator/http/http_auth.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <cstdio>

#include "base/file.h"
#include "base/hex.h"
#include "crypto/keys.h"

namespace pcfarm {

Result<std::string> WriteNewHttpToken(const std::string& path) {
  std::string token = HexEncode(RandomBytes(32));
  PCFARM_RETURN_IF_ERROR(WriteFileAtomic(path, token + "\n", 0600));
  return token;
}

Result<std::string> ReadHttpToken(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return NotFound(path + ": no HTTP token");
  if (st.st_mode & 077) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%03o", unsigned(st.st_mode & 0777));
    return PermissionDenied(path + " may be read by others (mode " + mode +
                            "); chmod 600 it");
  }
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path, 4096));
  while (!text.empty() && std::isspace(static_cast<unsigned char>(text.back()))) text.pop_back();
  bool hex = text.size() == 64 &&
             std::all_of(text.begin(), text.end(), [](char c) {
               return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
             });
  if (!hex) return InvalidArgument(path + ": an HTTP token is 64 lowercase hex digits");
  return text;
}

Result<std::string> LoadOrCreateHttpToken(const std::string& path) {
  auto token = ReadHttpToken(path);
  if (token.ok() || token.status().code() != StatusCode::kNotFound) return token;
  return WriteNewHttpToken(path);
}

Result<HostPort> ParseHostPort(const std::string& endpoint) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("HTTP endpoint '" + endpoint + "': " + why +
                           " (expected HOST:PORT, e.g. 127.0.0.1:7072)");
  };
  size_t colon = endpoint.rfind(':');
  if (colon == std::string::npos || colon == 0) return bad("no host or port");
  HostPort hp;
  hp.host = endpoint.substr(0, colon);
  if (hp.host.front() == '[') {
    if (hp.host.size() < 3 || hp.host.back() != ']') return bad("unclosed IPv6 bracket");
    hp.host = hp.host.substr(1, hp.host.size() - 2);
  } else if (hp.host.find(':') != std::string::npos) {
    return bad("an IPv6 host goes in brackets");
  }
  std::string port = endpoint.substr(colon + 1);
  if (port.empty() || port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; })) {
    return bad("the port is not a number");
  }
  hp.port = std::stoi(port);
  if (hp.port < 1 || hp.port > 65535) return bad("the port is not 1..65535");
  return hp;
}

bool IsLoopbackHost(const std::string& host) {
  return host == "localhost" || host == "::1" || host.rfind("127.", 0) == 0;
}

std::string StatusLoginUrl(const std::string& endpoint, bool tls, const std::string& token) {
  std::string where = endpoint;
  auto hp = ParseHostPort(endpoint);
  if (hp.ok()) {
    std::string host = hp->host;
    if (host == "0.0.0.0" || host == "::" || host == "*") host = "127.0.0.1";
    if (host.find(':') != std::string::npos) host = "[" + host + "]";
    where = host + ":" + std::to_string(hp->port);
  }
  return std::string(tls ? "https://" : "http://") + where + "/login?token=" + token;
}

std::string CookieValue(std::string_view header, std::string_view name) {
  size_t pos = 0;
  while (pos < header.size()) {
    size_t end = header.find(';', pos);
    if (end == std::string_view::npos) end = header.size();
    std::string_view part = header.substr(pos, end - pos);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    size_t eq = part.find('=');
    if (eq != std::string_view::npos && part.substr(0, eq) == name) {
      return std::string(part.substr(eq + 1));
    }
    pos = end + 1;
  }
  return "";
}

std::string SessionTable::Start(int64_t now_ms) {
  std::string id = HexEncode(RandomBytes(32));
  std::lock_guard l(mu_);
  for (auto it = sessions_.begin(); it != sessions_.end();) {
    it = it->second.expires_ms <= now_ms ? sessions_.erase(it) : std::next(it);
  }
  while (sessions_.size() >= max_sessions_) {
    auto oldest = std::min_element(sessions_.begin(), sessions_.end(),
                                   [](const auto& a, const auto& b) {
                                     return a.second.expires_ms < b.second.expires_ms;
                                   });
    sessions_.erase(oldest);
  }
  sessions_[id] = Session{HexEncode(RandomBytes(32)), now_ms + ttl_ms_};
  return id;
}

std::optional<SessionTable::Session> SessionTable::Find(const std::string& id, int64_t now_ms) {
  if (id.size() != 64) return std::nullopt;
  std::lock_guard l(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.expires_ms <= now_ms) return std::nullopt;
  return it->second;
}

void SessionTable::End(const std::string& id) {
  std::lock_guard l(mu_);
  sessions_.erase(id);
}

}  // namespace pcfarm
