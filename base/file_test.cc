#include "base/file.h"

#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <filesystem>

namespace pcfarm {
namespace {

std::string TempDir() {
  char tmpl[] = "/tmp/pcfarm_file_test_XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  return tmpl;
}

TEST_CASE("WriteFileAtomic writes, replaces and sets the mode") {
  std::string dir = TempDir();
  std::string path = dir + "/key";
  REQUIRE(WriteFileAtomic(path, "first", 0600).ok());
  REQUIRE(WriteFileAtomic(path, "second", 0600).ok());
  auto got = ReadFile(path);
  REQUIRE(got.ok());
  CHECK(*got == "second");
  struct stat st;
  REQUIRE(stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(CheckPrivateFile(path).ok());
  REQUIRE(chmod(path.c_str(), 0644) == 0);
  Status s = CheckPrivateFile(path);
  CHECK(s.code() == StatusCode::kPermissionDenied);
  CHECK(s.message().find("0644") != std::string::npos);
  // No temporary files are left behind.
  int n = 0;
  for (auto& e : std::filesystem::directory_iterator(dir)) { (void)e; ++n; }
  CHECK(n == 1);
  std::filesystem::remove_all(dir);
}

TEST_CASE("ReadFile reports missing and oversized files") {
  std::string dir = TempDir();
  CHECK(ReadFile(dir + "/none").status().code() == StatusCode::kNotFound);
  REQUIRE(WriteFileAtomic(dir + "/big", std::string(100, 'x')).ok());
  CHECK(ReadFile(dir + "/big", 10).status().code() ==
        StatusCode::kResourceExhausted);
  // A file of exactly the limit fits, at and above the first buffer's size.
  for (size_t n : {size_t(100), size_t(4096), size_t(10000)}) {
    REQUIRE(WriteFileAtomic(dir + "/exact", std::string(n, 'y')).ok());
    auto exact = ReadFile(dir + "/exact", n);
    REQUIRE(exact.ok());
    CHECK(exact->size() == n);
    CHECK(ReadFile(dir + "/exact", n - 1).status().code() == StatusCode::kResourceExhausted);
  }
  std::filesystem::remove_all(dir);
}

TEST_CASE("ReadFile reads files whose size stat does not know") {
  auto meminfo = ReadFile("/proc/self/status");
  REQUIRE(meminfo.ok());
  CHECK(meminfo->find("VmRSS") != std::string::npos);
}

}  // namespace
}  // namespace pcfarm
