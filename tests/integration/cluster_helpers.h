// What the integration tests that run a MiniCluster share: a Cluster that
// prints every process log when the test case failed, REQUIRE_OK, and short
// readers of the CLI's counters and the coordinator's database. Include it
// from exactly one source file of a test program (it registers a Catch
// listener).
#pragma once

#define CATCH_CONFIG_EXTERNAL_INTERFACES  // for the failure listener
#include <catch2/catch.hpp>

#include <atomic>
#include <iostream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/clock.h"
#include "tests/integration/mini_cluster.h"

namespace pcfarm {
namespace {

// ------------------------------------------------------------ test plumbing

// Set when an assertion of the running test case fails, so that the
// cluster's logs are printed.
std::atomic<bool> g_test_failed{false};

struct FailureListener : Catch::TestEventListenerBase {
  using TestEventListenerBase::TestEventListenerBase;
  void testCaseStarting(const Catch::TestCaseInfo& info) override {
    g_test_failed = false;
    TestEventListenerBase::testCaseStarting(info);
  }
  bool assertionEnded(const Catch::AssertionStats& stats) override {
    if (!stats.assertionResult.isOk()) g_test_failed = true;
    return true;
  }
};
CATCH_REGISTER_LISTENER(FailureListener)

// A MiniCluster that prints every log when the test failed.
struct Cluster {
  explicit Cluster(MiniClusterOptions o = {}) : c(std::move(o)) {}
  ~Cluster() {
    if (g_test_failed) std::cerr << c.DumpLogs() << std::flush;
  }
  MiniCluster* operator->() { return &c; }
  MiniCluster c;
};

const Status& StatusOf(const Status& s) { return s; }
template <typename T>
const Status& StatusOf(const Result<T>& r) { return r.status(); }

#define REQUIRE_OK(expr)                                  \
  do {                                                    \
    const auto& _r = (expr);                              \
    INFO(#expr << ": " << ::pcfarm::StatusOf(_r).ToString()); \
    REQUIRE(::pcfarm::StatusOf(_r).ok());                 \
  } while (0)

inline int64_t NowMs() { return SystemClock::Get()->NowMs(); }

inline std::string Trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t\r\n");
  return s.substr(b, e - b + 1);
}

// Init, start the coordinator and `workers` real workers, wait until all
// are connected.
inline void StartCluster(MiniCluster* c, int workers) {
  REQUIRE_OK(c->Init());
  REQUIRE_OK(c->StartCoordinator());
  for (int i = 0; i < workers; ++i) {
    REQUIRE_OK(c->AddWorker("w" + std::to_string(i)));
  }
  if (workers > 0) REQUIRE_OK(c->WaitForConnectedWorkers(workers, 30'000));
}

inline uint64_t Counter(MiniCluster* c, const std::string& name) {
  auto stats = c->Stats();
  REQUIRE_OK(stats);
  INFO("stats: " << stats->dump());
  REQUIRE(stats->contains(name));
  return (*stats)[name].get<uint64_t>();
}

inline int64_t DbInt(MiniCluster* c, const std::string& sql) {
  auto v = c->db().QueryInt(sql);
  REQUIRE_OK(v);
  return *v;
}

inline std::vector<DbView::Row> DbRows(MiniCluster* c, const std::string& sql) {
  auto rows = c->db().Query(sql);
  REQUIRE_OK(rows);
  return *rows;
}

inline int64_t WorkerId(MiniCluster* c, const std::string& name) {
  return DbInt(c, "SELECT id FROM workers WHERE name='" + name + "'");
}

}  // namespace
}  // namespace pcfarm
