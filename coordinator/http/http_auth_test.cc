#include "coordinator/http/http_auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <string>

#include "base/file.h"
#include "crypto/hash.h"
#include "crypto/keys.h"

namespace pcfarm {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/pcfarm-http-auth-XXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  return tmpl;
}

TEST_CASE("http token: written 0600, read back, bad files refused", "[http]") {
  CryptoInit();
  std::string path = TempDir() + "/http.token";
  auto made = WriteNewHttpToken(path);
  REQUIRE(made.ok());
  CHECK(made->size() == 64);
  struct stat st {};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  auto read = ReadHttpToken(path);
  REQUIRE(read.ok());
  CHECK(*read == *made);
  CHECK(*LoadOrCreateHttpToken(path) == *made);

  ::chmod(path.c_str(), 0644);
  CHECK(ReadHttpToken(path).status().code() == StatusCode::kPermissionDenied);
  REQUIRE(WriteFileAtomic(path, "not hex at all\n", 0600).ok());
  CHECK(ReadHttpToken(path).status().code() == StatusCode::kInvalidArgument);
  REQUIRE(WriteFileAtomic(path, std::string(63, 'a'), 0600).ok());
  CHECK(ReadHttpToken(path).status().code() == StatusCode::kInvalidArgument);
  CHECK(ReadHttpToken(path + ".none").status().code() == StatusCode::kNotFound);
  auto fresh = LoadOrCreateHttpToken(path + ".new");
  REQUIRE(fresh.ok());
  CHECK(*fresh != *made);
}

TEST_CASE("http endpoint: HOST:PORT parsed, loopback told apart", "[http]") {
  auto hp = ParseHostPort("127.0.0.1:7072");
  REQUIRE(hp.ok());
  CHECK(hp->host == "127.0.0.1");
  CHECK(hp->port == 7072);
  auto v6 = ParseHostPort("[::1]:80");
  REQUIRE(v6.ok());
  CHECK(v6->host == "::1");
  for (const char* bad : {"", "7072", ":7072", "host:", "host:0", "host:65536", "host:x1",
                          "::1:80", "[::1:80", "host:123456"}) {
    INFO(bad);
    CHECK(ParseHostPort(bad).status().code() == StatusCode::kInvalidArgument);
  }
  CHECK(IsLoopbackHost("127.0.0.1"));
  CHECK(IsLoopbackHost("127.1.2.3"));
  CHECK(IsLoopbackHost("localhost"));
  CHECK(IsLoopbackHost("::1"));
  CHECK_FALSE(IsLoopbackHost("0.0.0.0"));
  CHECK_FALSE(IsLoopbackHost("10.0.0.1"));
  CHECK_FALSE(IsLoopbackHost("::"));
  CHECK(StatusLoginUrl("0.0.0.0:8080", true, "ab") == "https://127.0.0.1:8080/login?token=ab");
  CHECK(StatusLoginUrl("[::1]:80", false, "ab") == "http://[::1]:80/login?token=ab");
}

TEST_CASE("cookies: the named value, nothing for look-alikes", "[http]") {
  CHECK(CookieValue("a=1; pcfarm_session=xyz; b=2", "pcfarm_session") == "xyz");
  CHECK(CookieValue("pcfarm_session=xyz", "pcfarm_session") == "xyz");
  CHECK(CookieValue("xpcfarm_session=xyz", "pcfarm_session") == "");
  CHECK(CookieValue("", "pcfarm_session") == "");
  CHECK(CookieValue("pcfarm_session", "pcfarm_session") == "");
}

TEST_CASE("sessions: found until they expire, bounded, ended", "[http]") {
  CryptoInit();
  SessionTable t(1000, 3);
  std::string a = t.Start(0);
  auto s = t.Find(a, 500);
  REQUIRE(s);
  CHECK(s->csrf.size() == 64);
  CHECK(s->csrf != a);
  CHECK_FALSE(t.Find(a, 1000));
  CHECK_FALSE(t.Find("nope", 0));
  std::string b = t.Start(10), c = t.Start(20), d = t.Start(30), e = t.Start(40);
  CHECK_FALSE(t.Find(b, 50));  // the oldest went
  CHECK(t.Find(e, 50));
  t.End(e);
  CHECK_FALSE(t.Find(e, 50));
  (void)c;
  (void)d;
}

}  // namespace
}  // namespace pcfarm
