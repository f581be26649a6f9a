#include "coordinator/advancer.h"

#include <poll.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <thread>

namespace pcfarm {
namespace {

// Waits up to `ms` for the advancer's fd to become readable.
bool Readable(const Advancer& a, int ms) {
  pollfd p{a.notify_fd(), POLLIN, 0};
  return ::poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

std::vector<Advancer::Done> WaitDone(Advancer& a, size_t n) {
  std::vector<Advancer::Done> all;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (all.size() < n && std::chrono::steady_clock::now() < until) {
    if (!Readable(a, 100)) continue;
    a.Drain();
    for (auto& d : a.TakeDone()) all.push_back(std::move(d));
  }
  return all;
}

JobAdvance Round(int64_t round) {
  JobAdvance adv;
  adv.round = round;
  return adv;
}

TEST_CASE("the advancer runs tasks off the caller's thread, in order, and wakes the fd") {
  auto a = Advancer::Start();
  REQUIRE(a.ok());
  Advancer& adv = **a;
  CHECK_FALSE(Readable(adv, 0));
  const auto caller = std::this_thread::get_id();
  std::atomic<bool> other_thread{true};
  for (int64_t job = 1; job <= 3; ++job) {
    CHECK(adv.Submit(job, uint64_t(10 * job), [job, caller, &other_thread]() -> Result<JobAdvance> {
      if (std::this_thread::get_id() == caller) other_thread = false;
      return Round(job * 100);
    }));
  }
  auto done = WaitDone(adv, 3);
  REQUIRE(done.size() == 3);
  CHECK(other_thread);
  for (int64_t i = 0; i < 3; ++i) {
    CHECK(done[size_t(i)].job_id == i + 1);
    CHECK(done[size_t(i)].tag == uint64_t(10 * (i + 1)));
    REQUIRE(done[size_t(i)].advance.ok());
    CHECK(done[size_t(i)].advance->round == (i + 1) * 100);
    CHECK_FALSE(adv.InFlight(i + 1));
  }
  CHECK(adv.TakeDone().empty());
}

TEST_CASE("a job is in flight from Submit until its answer is taken; errors come back") {
  auto a = Advancer::Start();
  REQUIRE(a.ok());
  Advancer& adv = **a;
  std::promise<void> release;
  std::shared_future<void> gate = release.get_future().share();
  REQUIRE(adv.Submit(7, 0, [gate]() -> Result<JobAdvance> {
    gate.wait();
    return Unavailable("the disk is full");
  }));
  CHECK(adv.InFlight(7));
  CHECK_FALSE(adv.InFlight(8));
  // The same job again is refused while the first runs.
  CHECK_FALSE(adv.Submit(7, 0, [] { return Result<JobAdvance>(Round(1)); }));
  CHECK_FALSE(Readable(adv, 50));
  release.set_value();
  auto done = WaitDone(adv, 1);
  REQUIRE(done.size() == 1);
  CHECK(done[0].job_id == 7);
  REQUIRE_FALSE(done[0].advance.ok());
  CHECK(done[0].advance.status().message() == "the disk is full");
  CHECK_FALSE(adv.InFlight(7));
  CHECK(adv.Submit(7, 0, [] { return Result<JobAdvance>(Round(2)); }));
  done = WaitDone(adv, 1);
  REQUIRE(done.size() == 1);
  CHECK(done[0].advance->round == 2);
}

TEST_CASE("the caller's loop keeps turning while a long advance runs") {
  auto a = Advancer::Start();
  REQUIRE(a.ok());
  Advancer& adv = **a;
  REQUIRE(adv.Submit(1, 0, [] {
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    return Result<JobAdvance>(Round(1));
  }));
  // Meanwhile "turns" of 10 ms go on; most of them before the answer.
  int turns = 0;
  while (!Readable(adv, 10)) ++turns;
  CHECK(turns >= 10);
  adv.Drain();
  auto done = adv.TakeDone();
  REQUIRE(done.size() == 1);
  CHECK(done[0].ms >= 250);
}

TEST_CASE("stopping finishes the task that runs and drops the queued ones") {
  std::atomic<int> ran{0};
  std::promise<void> started;
  {
    auto a = Advancer::Start();
    REQUIRE(a.ok());
    REQUIRE((*a)->Submit(1, 0, [&] {
      started.set_value();
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      ++ran;
      return Result<JobAdvance>(Round(1));
    }));
    REQUIRE((*a)->Submit(2, 0, [&] {
      ++ran;
      return Result<JobAdvance>(Round(2));
    }));
    started.get_future().wait();
  }  // the destructor stops it
  CHECK(ran == 1);
}

}  // namespace
}  // namespace pcfarm
