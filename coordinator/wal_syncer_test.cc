#include "coordinator/wal_syncer.h"

#include <poll.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <filesystem>
#include <mutex>

#include "coordinator/store.h"

namespace pcfarm {
namespace {

// A sync function the test holds until it says go.
struct Gate {
  std::mutex mu;
  std::condition_variable cv;
  int entered = 0;
  int released = 0;
  Status result;
  Status Sync() {
    std::unique_lock l(mu);
    int me = ++entered;
    cv.notify_all();
    cv.wait(l, [&] { return released >= me; });
    return result;
  }
  void WaitEntered(int n) {
    std::unique_lock l(mu);
    cv.wait(l, [&] { return entered >= n; });
  }
  void Release() {
    std::lock_guard l(mu);
    ++released;
    cv.notify_all();
  }
};

bool Readable(int fd, int timeout_ms) {
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1;
}

TEST_CASE("an epoch is synced only after a sync that started after it",
          "[wal_syncer]") {
  Gate gate;
  auto s = WalSyncer::Start([&] { return gate.Sync(); });
  REQUIRE(s.ok());
  WalSyncer& syncer = **s;
  CHECK(syncer.synced() == 0);
  CHECK_FALSE(Readable(syncer.notify_fd(), 0));

  syncer.Request(1);
  gate.WaitEntered(1);  // the sync for epoch 1 is running
  syncer.Request(2);    // committed while the disk works on 1
  syncer.Request(3);
  CHECK(syncer.synced() == 0);
  gate.Release();
  REQUIRE(Readable(syncer.notify_fd(), 5000));
  gate.WaitEntered(2);  // one more sync covers 2 and 3 together
  CHECK(syncer.synced() == 1);
  syncer.Drain();
  CHECK_FALSE(Readable(syncer.notify_fd(), 0));
  gate.Release();
  REQUIRE(syncer.WaitFor(3).ok());
  CHECK(syncer.synced() == 3);
  CHECK(syncer.syncs() == 2);
  syncer.Request(2);  // an old epoch asks for nothing
  CHECK(syncer.syncs() == 2);
  CHECK(syncer.error().ok());
}

TEST_CASE("a failed sync stops the syncer and says why", "[wal_syncer]") {
  Gate gate;
  gate.result = IoError("disk on fire");
  auto s = WalSyncer::Start([&] { return gate.Sync(); });
  REQUIRE(s.ok());
  (*s)->Request(1);
  gate.Release();
  Status st = (*s)->WaitFor(1);
  CHECK(st.code() == StatusCode::kIoError);
  CHECK((*s)->synced() == 0);
  CHECK((*s)->error().message().find("disk on fire") != std::string::npos);
  CHECK(Readable((*s)->notify_fd(), 0));  // the loop wakes up to see it
}

TEST_CASE("the store syncs its WAL only in deferred mode", "[wal_syncer]") {
  char tmpl[] = "/tmp/pcfarm_wal_test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string dir = tmpl;
  FakeClock clock;
  {
    auto store = Store::Open(dir + "/c.db", &clock);
    REQUIRE(store.ok());
    CHECK((*store)->SyncWal().code() == StatusCode::kFailedPrecondition);
    REQUIRE((*store)->EnableDeferredSync().ok());
    REQUIRE((*store)->AddWorker("pc", "s", "c").ok());
    auto syncer = WalSyncer::Start([st = store->get()] { return st->SyncWal(); });
    REQUIRE(syncer.ok());
    REQUIRE((*syncer)->WaitFor(1).ok());
  }
  // Reopened (the WAL replayed or checkpointed), the worker is there.
  auto again = Store::Open(dir + "/c.db", &clock);
  REQUIRE(again.ok());
  CHECK((*again)->FindWorkerByCurveKey("c").ok());
  again->reset();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
