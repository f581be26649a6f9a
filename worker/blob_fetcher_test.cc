#include "worker/blob_fetcher.h"

#include <unistd.h>

#include <catch2/catch.hpp>
#include <deque>
#include <filesystem>

#include "base/clock.h"

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

// The coordinator's side: the BLOB_GETs the fetcher sent, answered from
// `served` (which a test may corrupt) in the order they were sent.
struct FakeServer {
  std::string served;
  std::deque<wire::BlobGet> gets;

  wire::BlobChunk Answer(const wire::BlobGet& g) const {
    wire::BlobChunk c;
    c.set_hash(g.hash());
    c.set_offset(g.offset());
    c.set_total_size(served.size());
    if (g.offset() < served.size()) c.set_data(served.substr(g.offset(), g.length()));
    return c;
  }
};

struct FetcherFixture {
  std::string dir = (fs::temp_directory_path() /
                     ("pcfarm_fetcher_" + std::to_string(::getpid()))).string();
  FakeClock clock;
  std::unique_ptr<BlobCache> cache;
  FakeServer server;
  std::unique_ptr<BlobFetcher> fetcher;

  FetcherFixture() {
    fs::remove_all(dir);
    auto c = BlobCache::Open(dir, 1 << 20, &clock);
    REQUIRE(c.ok());
    cache = std::move(c).value();
    fetcher = std::make_unique<BlobFetcher>(
        cache.get(), [this](wire::WorkerFrame f) { server.gets.push_back(f.blob_get()); },
        /*credit=*/2, /*chunk_bytes=*/1000);
  }
  ~FetcherFixture() { fs::remove_all(dir); }
  // Answers the oldest request; returns what the fetcher made of it.
  Result<std::optional<Hash256>> Serve() {
    REQUIRE_FALSE(server.gets.empty());
    wire::BlobGet g = server.gets.front();
    server.gets.pop_front();
    return fetcher->OnChunk(server.Answer(g));
  }
};

std::string Data(size_t n) {
  std::string d;
  for (size_t i = 0; i < n; ++i) d.push_back(char(i * 13 + 5));
  return d;
}

TEST_CASE_METHOD(FetcherFixture, "a resynchronisation right after a Want: the second probe's "
                 "answer is ignored, not a broken transfer") {
  server.served = Data(4500);
  const Hash256 h = Blake2b256(server.served);
  fetcher->Want(h);
  REQUIRE(server.gets.size() == 1);  // one probe until the size is known
  // The coordinator asks the worker to resynchronise: the transfer is
  // forgotten and asked for again, with the first probe still unanswered.
  fetcher->Reset();
  fetcher->Restart();
  REQUIRE(server.gets.size() == 2);
  CHECK(server.gets[1].offset() == 0);
  auto r = Serve();  // the first probe: bytes 0..999, then two requests
  REQUIRE(r.ok());
  r = Serve();  // the second probe's answer: bytes 0..999 again
  INFO(r.status().ToString());
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
  std::optional<Hash256> done;
  while (!server.gets.empty() && !done) {
    r = Serve();
    INFO(r.status().ToString());
    REQUIRE(r.ok());
    done = *r;
  }
  REQUIRE(done);
  CHECK(*done == h);
  CHECK(*cache->Get(h) == server.served);
  CHECK(fetcher->TakeFailed().empty());
  CHECK_FALSE(fetcher->Busy());
}

TEST_CASE_METHOD(FetcherFixture, "a blob whose bytes do not hash right is fetched again, "
                 "then given up") {
  const std::string good = Data(2500);
  const Hash256 h = Blake2b256(good);
  server.served = good;
  server.served[1700] ^= 1;  // the coordinator serves damaged bytes
  fetcher->Want(h);
  int errors = 0;
  while (!server.gets.empty()) {
    auto r = Serve();
    if (!r.ok()) {
      ++errors;
      CHECK(r.status().code() == StatusCode::kCorruption);
    }
  }
  CHECK(errors == BlobFetcher::kMaxTries);
  auto failed = fetcher->TakeFailed();
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].hash == h);
  // Why, for the failed result the worker sends.
  CHECK(failed[0].why.find("given up after 3 tries") != std::string::npos);
  CHECK(fetcher->TakeFailed().empty());  // once
  CHECK_FALSE(fetcher->Busy());
  CHECK_FALSE(cache->Has(h));
  // Asked for again (the bytes mended): fetched.
  server.served = good;
  fetcher->Want(h);
  std::optional<Hash256> done;
  while (!server.gets.empty() && !done) {
    auto r = Serve();
    REQUIRE(r.ok());
    done = *r;
  }
  CHECK(done == std::optional<Hash256>(h));

  // One failure, then a good transfer: no give-up.
  const std::string other = Data(1800) + "x";
  const Hash256 h2 = Blake2b256(other);
  server.served = other;
  server.served[5] ^= 1;
  fetcher->Want(h2);
  bool mended = false;
  done.reset();
  while (!server.gets.empty() && !done) {
    auto r = Serve();
    if (!r.ok() && !mended) {
      server.served = other;
      mended = true;
    } else {
      REQUIRE(r.ok());
      done = *r;
    }
  }
  CHECK(mended);
  CHECK(done == std::optional<Hash256>(h2));
  CHECK(fetcher->TakeFailed().empty());
}

TEST_CASE_METHOD(FetcherFixture, "a transfer that hears nothing for a minute begins again, then is given up",
                 "[worker][blob]") {
  const std::string data = Data(2500);
  const Hash256 h = Blake2b256(data);
  server.served = data;
  fetcher->Want(h);
  REQUIRE(server.gets.size() == 1);
  CHECK(fetcher->Tick(1'000).empty());  // measured from here
  // Chunks keep arriving: no stall however long it takes in all.
  REQUIRE(Serve().ok());
  CHECK(fetcher->Tick(1'000 + BlobFetcher::kStallMs).empty());
  REQUIRE(Serve().ok());
  CHECK(fetcher->Tick(1'000 + 2 * BlobFetcher::kStallMs - 1).empty());
  // Then the answers stop (lost): a minute later it begins again.
  server.gets.clear();
  int64_t now = 1'000 + 3 * BlobFetcher::kStallMs;
  auto stalled = fetcher->Tick(now);
  REQUIRE(stalled.size() == 1);
  CHECK(stalled[0].code() == StatusCode::kTimeout);
  CHECK(stalled[0].message().find("begun again") != std::string::npos);
  CHECK(server.gets.size() == 1);  // a new probe
  CHECK(fetcher->TakeFailed().empty());
  // Nothing again, twice more: given up, and the shards waiting can fail.
  server.gets.clear();
  CHECK(fetcher->Tick(now + BlobFetcher::kStallMs - 1).empty());
  CHECK(fetcher->Tick(now + BlobFetcher::kStallMs).size() == 1);
  server.gets.clear();
  stalled = fetcher->Tick(now + 2 * BlobFetcher::kStallMs);
  REQUIRE(stalled.size() == 1);
  CHECK(stalled[0].message().find("given up after 3 tries") != std::string::npos);
  auto failed = fetcher->TakeFailed();
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].why.find("no chunk of it arrived for 60 s") != std::string::npos);
  CHECK_FALSE(fetcher->Busy());
  // While disconnected nothing is measured: Reset starts the clock again.
  fetcher->Want(h);
  CHECK(fetcher->Tick(now).empty());
  fetcher->Reset();
  CHECK(fetcher->Tick(now + 10 * BlobFetcher::kStallMs).empty());
  CHECK(fetcher->Busy());
}

TEST_CASE_METHOD(FetcherFixture, "a blob the coordinator does not hold is given up at once",
              "[worker][blob]") {
  const std::string data = Data(2500);
  const Hash256 h = Blake2b256(data);
  fetcher->Want(h);
  REQUIRE(server.gets.size() == 1);
  // Another hash, or one not being fetched: nothing to give up.
  fetcher->OnMissing(Blake2b256("other"), "no blob");
  CHECK(fetcher->TakeFailed().empty());
  CHECK(fetcher->Busy());
  fetcher->OnMissing(h, "the coordinator does not hold it");
  auto failed = fetcher->TakeFailed();
  REQUIRE(failed.size() == 1);
  CHECK(failed[0].hash == h);
  CHECK(failed[0].why == "the coordinator does not hold it");
  CHECK_FALSE(fetcher->Busy());
  // The answer to the request sent before is stale now.
  server.served = data;
  auto r = Serve();
  REQUIRE(r.ok());
  CHECK_FALSE(r->has_value());
  // Asked for again (uploaded again): fetched.
  fetcher->Want(h);
  std::optional<Hash256> done;
  while (!server.gets.empty() && !done) {
    auto got = Serve();
    REQUIRE(got.ok());
    done = *got;
  }
  CHECK(done == std::optional<Hash256>(h));
}

}  // namespace
}  // namespace pcfarm
