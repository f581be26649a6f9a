#include "worker/result_spool.h"

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>
#include <filesystem>
#include <fstream>

#include "base/file.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() /
               ("pcfarm_spool_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

std::vector<uint64_t> Ids(ResultSpool& spool) {
  auto list = spool.List();
  REQUIRE(list.ok());
  std::vector<uint64_t> ids;
  for (const auto& e : *list) ids.push_back(e.attempt_id);
  return ids;
}

std::string EntryPath(const std::string& dir, const char* hex16) {
  return dir + "/" + hex16 + ".result";
}

TEST_CASE("spool keeps results oldest first until removed") {
  std::string dir = TempDir("order");
  auto spool = ResultSpool::Open(dir);
  REQUIRE(spool.ok());
  ResultSpool& s = **spool;
  // Ids in an order unlike numeric order, to see that Put order counts.
  REQUIRE(s.Put(30, "thirty").ok());
  REQUIRE(s.Put(7, "seven").ok());
  REQUIRE(s.Put(0xffffffffffffffffull, std::string(100000, 'x')).ok());
  REQUIRE(s.Put(12, "").ok());
  CHECK(Ids(s) == std::vector<uint64_t>{30, 7, 0xffffffffffffffffull, 12});
  auto list = s.List();
  CHECK((*list)[2].size_bytes == 100000);
  CHECK(*s.Get(7) == "seven");
  CHECK(*s.Get(12) == "");
  CHECK(s.Get(99).status().code() == StatusCode::kNotFound);

  REQUIRE(s.Remove(7).ok());
  CHECK(s.Remove(7).ok());  // already gone is fine
  CHECK(Ids(s) == std::vector<uint64_t>{30, 0xffffffffffffffffull, 12});
  // Put again replaces and moves to the back.
  REQUIRE(s.Put(30, "thirty again").ok());
  CHECK(Ids(s) == std::vector<uint64_t>{0xffffffffffffffffull, 12, 30});
  CHECK(*s.Get(30) == "thirty again");
  CHECK(s.discarded() == 0);
  fs::remove_all(dir);
}

TEST_CASE("spool survives a restart") {
  std::string dir = TempDir("restart");
  {
    auto s = ResultSpool::Open(dir);
    REQUIRE(s.ok());
    REQUIRE((*s)->Put(5, "five").ok());
    REQUIRE((*s)->Put(3, "three").ok());
  }
  auto s = ResultSpool::Open(dir);
  REQUIRE(s.ok());
  CHECK(Ids(**s) == std::vector<uint64_t>{5, 3});
  CHECK(*(*s)->Get(3) == "three");
  // New entries still sort after the old ones: the sequence continues.
  REQUIRE((*s)->Put(1, "one").ok());
  CHECK(Ids(**s) == std::vector<uint64_t>{5, 3, 1});
  REQUIRE((*s)->Remove(5).ok());
  auto again = ResultSpool::Open(dir);
  REQUIRE(again.ok());
  CHECK(Ids(**again) == std::vector<uint64_t>{3, 1});
  fs::remove_all(dir);
}

TEST_CASE("spool discards corrupt entries and stray temp files") {
  std::string dir = TempDir("corrupt");
  {
    auto s = ResultSpool::Open(dir);
    REQUIRE(s.ok());
    for (uint64_t id = 1; id <= 6; ++id) {
      REQUIRE((*s)->Put(id, "result body " + std::to_string(id)).ok());
    }
  }
  auto read = [&](uint64_t id) {
    char hex[17];
    std::snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    auto d = ReadFile(EntryPath(dir, hex));
    REQUIRE(d.ok());
    return std::make_pair(EntryPath(dir, hex), *d);
  };
  {  // 1: one flipped body byte
    auto [path, d] = read(1);
    d.back() ^= 0x01;
    REQUIRE(WriteFileAtomic(path, d).ok());
  }
  {  // 2: torn: cut in the middle of the body
    auto [path, d] = read(2);
    REQUIRE(WriteFileAtomic(path, d.substr(0, d.size() - 3)).ok());
  }
  {  // 3: truncated header
    auto [path, d] = read(3);
    REQUIRE(WriteFileAtomic(path, d.substr(0, 20)).ok());
  }
  {  // 4: garbage
    auto [path, d] = read(4);
    REQUIRE(WriteFileAtomic(path, std::string(d.size(), '\x7f')).ok());
  }
  {  // 5: a valid entry copied under another attempt's name
    auto [path, d] = read(5);
    REQUIRE(WriteFileAtomic(EntryPath(dir, "00000000000000aa"), d).ok());
  }
  {  // 6: the length field lies (says one byte more)
    auto [path, d] = read(6);
    d[24] = char(d[24] + 1);
    REQUIRE(WriteFileAtomic(path, d).ok());
  }
  // A temp file left by a write that was killed, and an unrelated file.
  { std::ofstream(dir + "/0000000000000009.result.tmp.123.456") << "partial"; }
  { std::ofstream(dir + "/README") << "not ours"; }

  auto s = ResultSpool::Open(dir);
  REQUIRE(s.ok());
  CHECK(Ids(**s) == std::vector<uint64_t>{5});
  CHECK(*(*s)->Get(5) == "result body 5");
  CHECK((*s)->discarded() == 7);  // 6 corrupt entries + 1 temp file
  CHECK_FALSE(fs::exists(dir + "/0000000000000009.result.tmp.123.456"));
  CHECK_FALSE(fs::exists(EntryPath(dir, "0000000000000001")));
  CHECK(fs::exists(dir + "/README"));

  // Damage found after Open: Get reports it and the entry goes away.
  {
    auto [path, d] = read(5);
    d[70] ^= 0x20;
    REQUIRE(WriteFileAtomic(path, d).ok());
  }
  CHECK((*s)->Get(5).status().code() == StatusCode::kCorruption);
  CHECK(Ids(**s).empty());
  fs::remove_all(dir);
}

TEST_CASE("spool keeps an output beside its result until removed") {
  std::string dir = TempDir("output");
  {
    auto spool = ResultSpool::Open(dir);
    REQUIRE(spool.ok());
    REQUIRE((*spool)->PutOutput(7, std::string(3000, 'g')).ok());
    REQUIRE((*spool)->Put(7, "envelope-7").ok());
    // An output whose result was never Put (a crash between the two).
    REQUIRE((*spool)->PutOutput(8, "orphan").ok());
    CHECK((*spool)->GetOutput(9).status().code() == StatusCode::kNotFound);
  }
  auto spool = ResultSpool::Open(dir);
  REQUIRE(spool.ok());
  auto out = (*spool)->GetOutput(7);
  REQUIRE(out.ok());
  CHECK(*out == std::string(3000, 'g'));
  CHECK((*spool)->GetOutput(8).status().code() == StatusCode::kNotFound);
  CHECK(Ids(**spool) == std::vector<uint64_t>{7});
  REQUIRE((*spool)->Remove(7).ok());
  CHECK((*spool)->GetOutput(7).status().code() == StatusCode::kNotFound);
  CHECK(Ids(**spool).empty());
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  CHECK(files == 0);
  fs::remove_all(dir);
}

TEST_CASE("spool takes Puts and Removes from several threads") {
  std::string dir = TempDir("threads");
  auto spool = ResultSpool::Open(dir);
  REQUIRE(spool.ok());
  ResultSpool& s = **spool;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (uint64_t i = 0; i < 20; ++i) {
        uint64_t id = uint64_t(t) * 100 + i;
        if (!s.Put(id, "body " + std::to_string(id)).ok()) ++failures;
        if (i % 2 == 1 && !s.Remove(id).ok()) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures == 0);
  auto ids = Ids(s);
  CHECK(ids.size() == 40);
  for (uint64_t id : ids) CHECK(*s.Get(id) == "body " + std::to_string(id));
  fs::remove_all(dir);
}

TEST_CASE("spool refuses an unusable directory") {
  std::string dir = TempDir("file");
  { std::ofstream(dir) << "a file, not a directory"; }
  CHECK_FALSE(ResultSpool::Open(dir).ok());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
