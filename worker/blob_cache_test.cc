#include "worker/blob_cache.h"

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "base/file.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

std::string TempDir(const std::string& name) {
  fs::path p = fs::temp_directory_path() /
               ("pcfarm_blobs_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  return p.string();
}

std::string Bytes(char c, size_t n) { return std::string(n, c); }

std::unique_ptr<BlobCache> OpenCache(const std::string& dir, uint64_t cap,
                                     Clock* clock) {
  auto c = BlobCache::Open(dir, cap, clock);
  REQUIRE(c.ok());
  return std::move(c).value();
}

TEST_CASE("blob cache stores verified blobs by hash") {
  std::string dir = TempDir("basic");
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  std::string data = "weights of a tiny model";
  Hash256 h = Blake2b256(data);
  CHECK_FALSE(cache->Has(h));
  CHECK(cache->Get(h).status().code() == StatusCode::kNotFound);
  REQUIRE(cache->Put(h, data).ok());
  CHECK(cache->Has(h));
  CHECK(*cache->Get(h) == data);
  auto path = cache->Path(h);
  REQUIRE(path.ok());
  CHECK(*path == dir + "/" + HashToHex(h));
  CHECK(*ReadFile(*path) == data);
  CHECK(cache->size_bytes() == data.size());
  CHECK(cache->List() == std::vector<Hash256>{h});
  REQUIRE(cache->Put(h, data).ok());  // again: no change
  CHECK(cache->size_bytes() == data.size());
  REQUIRE(cache->Remove(h).ok());
  CHECK_FALSE(cache->Has(h));
  CHECK(cache->size_bytes() == 0);
  CHECK_FALSE(fs::exists(*path));
  fs::remove_all(dir);
}

TEST_CASE("blob cache refuses bytes that do not match the hash") {
  std::string dir = TempDir("mismatch");
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  Hash256 h = Blake2b256("the real bytes");
  Status s = cache->Put(h, "forged bytes");
  CHECK(s.code() == StatusCode::kCorruption);
  CHECK_THAT(s.message(), Catch::Contains(HashToHex(h)));
  CHECK_FALSE(cache->Has(h));
  CHECK(fs::is_empty(dir));
  // Too big for the cache at all.
  std::string big = Bytes('b', (1 << 20) + 1);
  CHECK(cache->Put(Blake2b256(big), big).code() ==
        StatusCode::kResourceExhausted);
  fs::remove_all(dir);
}

TEST_CASE("blob cache evicts the least recently used, also after restart") {
  std::string dir = TempDir("lru");
  FakeClock clock;
  std::string a = Bytes('a', 400), b = Bytes('b', 400), c = Bytes('c', 400),
              d = Bytes('d', 400);
  Hash256 ha = Blake2b256(a), hb = Blake2b256(b), hc = Blake2b256(c),
          hd = Blake2b256(d);
  {
    auto cache = OpenCache(dir, 1000, &clock);
    REQUIRE(cache->Put(ha, a).ok());
    clock.AdvanceMs(1000);
    REQUIRE(cache->Put(hb, b).ok());
    clock.AdvanceMs(1000);
    REQUIRE(cache->Get(ha).ok());  // a is now more recent than b
    clock.AdvanceMs(1000);
    REQUIRE(cache->Put(hc, c).ok());  // 1200 > 1000: b goes
    CHECK(cache->List() == std::vector<Hash256>{ha, hc});
    CHECK_FALSE(cache->Has(hb));
    CHECK_FALSE(fs::exists(dir + "/" + HashToHex(hb)));
    CHECK(cache->evictions() == 1);
    clock.AdvanceMs(1000);
    REQUIRE(cache->Path(ha).ok());  // a used again: c is the oldest
    clock.AdvanceMs(1000);
  }
  {
    // The order comes back from the files' mtimes.
    auto cache = OpenCache(dir, 1000, &clock);
    CHECK(cache->List() == std::vector<Hash256>{hc, ha});
    CHECK(cache->size_bytes() == 800);
    REQUIRE(cache->Put(hd, d).ok());
    CHECK(cache->List() == std::vector<Hash256>{ha, hd});
  }
  {
    // A smaller cap at Open evicts down to it, oldest first.
    auto cache = OpenCache(dir, 500, &clock);
    CHECK(cache->List() == std::vector<Hash256>{hd});
  }
  fs::remove_all(dir);
}

TEST_CASE("pinned blobs are not evicted") {
  std::string dir = TempDir("pin");
  FakeClock clock;
  auto cache = OpenCache(dir, 1000, &clock);
  std::string a = Bytes('a', 600), b = Bytes('b', 600), c = Bytes('c', 300);
  REQUIRE(cache->Put(Blake2b256(a), a).ok());
  REQUIRE(cache->Pin(Blake2b256(a)).ok());
  CHECK(cache->Pin(Blake2b256(b)).code() == StatusCode::kNotFound);
  CHECK(cache->Put(Blake2b256(b), b).code() == StatusCode::kResourceExhausted);
  REQUIRE(cache->Put(Blake2b256(c), c).ok());
  cache->Unpin(Blake2b256(a));
  clock.AdvanceMs(10);
  REQUIRE(cache->Put(Blake2b256(b), b).ok());  // now a can go
  CHECK_FALSE(cache->Has(Blake2b256(a)));
  CHECK(cache->Has(Blake2b256(c)));
  fs::remove_all(dir);
}

TEST_CASE("blob cache detects a blob damaged on disk") {
  std::string dir = TempDir("damaged");
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  std::string data = Bytes('x', 1000);
  Hash256 h = Blake2b256(data);
  REQUIRE(cache->Put(h, data).ok());
  REQUIRE(WriteFileAtomic(dir + "/" + HashToHex(h), Bytes('y', 1000)).ok());
  CHECK(cache->Get(h).status().code() == StatusCode::kCorruption);
  CHECK_FALSE(cache->Has(h));
  CHECK(cache->size_bytes() == 0);
  fs::remove_all(dir);
}

TEST_CASE("a blob found at open is re-hashed the first time its path is taken") {
  std::string dir = TempDir("rehash");
  FakeClock clock;
  const std::string good = Bytes('g', 1000), bad = Bytes('b', 1000);
  const Hash256 hg = Blake2b256(good), hb = Blake2b256(bad);
  {
    auto cache = OpenCache(dir, 1 << 20, &clock);
    REQUIRE(cache->Put(hg, good).ok());
    REQUIRE(cache->Put(hb, bad).ok());
    // Stored by this process: not hashed again (a damage from now on goes
    // unseen until the next start).
    REQUIRE(WriteFileAtomic(dir + "/" + HashToHex(hb), Bytes('x', 1000)).ok());
    CHECK(cache->Path(hb).ok());
  }
  // The next start (the worker restarted): the damaged one is found by the
  // first Path, deleted and no longer cached; the whole one is hashed once.
  auto cache = OpenCache(dir, 1 << 20, &clock);
  REQUIRE(cache->Has(hb));
  auto damaged = cache->Path(hb);
  CHECK(damaged.status().code() == StatusCode::kCorruption);
  CHECK(damaged.status().message().find("damaged on this PC's disk") != std::string::npos);
  CHECK_FALSE(cache->Has(hb));
  CHECK_FALSE(fs::exists(dir + "/" + HashToHex(hb)));
  CHECK(cache->size_bytes() == 1000);
  auto path = cache->Path(hg);
  REQUIRE(path.ok());
  REQUIRE(WriteFileAtomic(*path, Bytes('x', 1000)).ok());
  CHECK(cache->Path(hg).ok());  // hashed once per process
  fs::remove_all(dir);
}

TEST_CASE("blob cache ignores strangers and deletes temp files at open") {
  std::string dir = TempDir("strays");
  REQUIRE(MakeDirs(dir).ok());
  { std::ofstream(dir + "/notes.txt") << "hi"; }
  { std::ofstream(dir + "/" + std::string(64, 'a') + ".tmp.1.2") << "torn"; }
  fs::create_directory(dir + "/" + std::string(64, 'b'));
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  CHECK(cache->List().empty());
  CHECK(fs::exists(dir + "/notes.txt"));
  CHECK_FALSE(fs::exists(dir + "/" + std::string(64, 'a') + ".tmp.1.2"));
  fs::remove_all(dir);
}

TEST_CASE("downloads arrive in order and are verified") {
  std::string dir = TempDir("download");
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  std::string data;
  for (int i = 0; i < 5000; ++i) data.push_back(char(i * 7));
  Hash256 h = Blake2b256(data);
  auto dl = cache->BeginDownload(h, data.size());
  REQUIRE(dl.ok());
  BlobDownload& w = **dl;
  CHECK(w.offset() == 0);
  CHECK(cache->BeginDownload(h, data.size()).status().code() ==
        StatusCode::kFailedPrecondition);
  REQUIRE(w.Append(0, std::string_view(data).substr(0, 1000)).ok());
  // Out of order, repeated, overlapping, past the end: all refused.
  CHECK(w.Append(2000, std::string_view(data).substr(2000, 10)).code() ==
        StatusCode::kInvalidArgument);
  CHECK(w.Append(0, std::string_view(data).substr(0, 1000)).code() ==
        StatusCode::kInvalidArgument);
  CHECK(w.Append(999, std::string_view(data).substr(999, 10)).code() ==
        StatusCode::kInvalidArgument);
  CHECK(w.Append(1000, std::string(4001, 'z')).code() ==
        StatusCode::kInvalidArgument);
  CHECK(w.Finish().code() == StatusCode::kFailedPrecondition);  // incomplete
  REQUIRE(w.Append(1000, std::string_view(data).substr(1000)).ok());
  CHECK_FALSE(cache->Has(h));
  REQUIRE(w.Finish().ok());
  CHECK(w.Append(5000, "x").code() == StatusCode::kFailedPrecondition);
  CHECK(*cache->Get(h) == data);
  CHECK_FALSE(fs::exists(dir + "/" + HashToHex(h) + ".part"));
  dl->reset();
  CHECK(cache->BeginDownload(h, data.size()).status().code() ==
        StatusCode::kAlreadyExists);
  // An empty blob.
  Hash256 empty = Blake2b256("");
  auto e = cache->BeginDownload(empty, 0);
  REQUIRE(e.ok());
  REQUIRE((*e)->Finish().ok());
  CHECK(cache->Has(empty));
  fs::remove_all(dir);
}

TEST_CASE("a download with the wrong bytes is discarded") {
  std::string dir = TempDir("baddl");
  FakeClock clock;
  auto cache = OpenCache(dir, 1 << 20, &clock);
  Hash256 h = Blake2b256(Bytes('g', 100));
  auto dl = cache->BeginDownload(h, 100);
  REQUIRE(dl.ok());
  REQUIRE((*dl)->Append(0, Bytes('e', 100)).ok());
  CHECK((*dl)->Finish().code() == StatusCode::kCorruption);
  CHECK_FALSE(cache->Has(h));
  CHECK_FALSE(fs::exists(dir + "/" + HashToHex(h) + ".part"));
  CHECK(cache->BeginDownload(h, 1 << 21).status().code() ==
        StatusCode::kResourceExhausted);
  fs::remove_all(dir);
}

TEST_CASE("a download resumes after a restart") {
  std::string dir = TempDir("resume");
  FakeClock clock;
  std::string data;
  for (int i = 0; i < 3000; ++i) data.push_back(char(i % 251));
  Hash256 h = Blake2b256(data);
  {
    auto cache = OpenCache(dir, 1 << 20, &clock);
    auto dl = cache->BeginDownload(h, data.size());
    REQUIRE(dl.ok());
    REQUIRE((*dl)->Append(0, std::string_view(data).substr(0, 1200)).ok());
    // The worker dies here: writer and cache go away, the .part stays.
  }
  {
    auto cache = OpenCache(dir, 1 << 20, &clock);
    CHECK_FALSE(cache->Has(h));
    auto dl = cache->BeginDownload(h, data.size());
    REQUIRE(dl.ok());
    CHECK((*dl)->offset() == 1200);
    REQUIRE((*dl)->Append(1200, std::string_view(data).substr(1200)).ok());
    REQUIRE((*dl)->Finish().ok());
    CHECK(*cache->Get(h) == data);
  }
  {
    // A .part longer than the declared size starts over from zero.
    Hash256 h2 = Blake2b256("short");
    REQUIRE(WriteFileAtomic(dir + "/" + HashToHex(h2) + ".part",
                            "much longer than five").ok());
    auto cache = OpenCache(dir, 1 << 20, &clock);
    auto dl = cache->BeginDownload(h2, 5);
    REQUIRE(dl.ok());
    CHECK((*dl)->offset() == 0);
    REQUIRE((*dl)->Append(0, "short").ok());
    REQUIRE((*dl)->Finish().ok());
    CHECK(*cache->Get(h2) == "short");
  }
  fs::remove_all(dir);
}

TEST_CASE("a finished download evicts older blobs to fit") {
  std::string dir = TempDir("dlevict");
  FakeClock clock;
  auto cache = OpenCache(dir, 1000, &clock);
  std::string a = Bytes('a', 700), b = Bytes('b', 700);
  REQUIRE(cache->Put(Blake2b256(a), a).ok());
  clock.AdvanceMs(5);
  auto dl = cache->BeginDownload(Blake2b256(b), b.size());
  REQUIRE(dl.ok());
  REQUIRE((*dl)->Append(0, b).ok());
  REQUIRE((*dl)->Finish().ok());
  CHECK(cache->List() == std::vector<Hash256>{Blake2b256(b)});
  fs::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
