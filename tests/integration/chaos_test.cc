// The chaos driver (chaos.h) in CI: 10 trials of random kill -9 of the
// coordinator and of workers during infer, sync finetune and diloco jobs,
// with fixed seeds (a failing trial prints its seed and schedule, and
// `chaos_bench --trials 1 --seed S --kinds K` runs it again). Every trial:
// the job succeeds, no shard's result is lost or accepted twice, the
// coordinator's store is consistent and the output is the undisturbed
// run's, byte for byte. bench/farm/chaos_bench runs 100 trials.
#include <stdlib.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>
#include <vector>

#include "tests/integration/chaos.h"
#include "tests/integration/cluster_helpers.h"  // first: it configures Catch

namespace pcfarm {
namespace {

namespace fs = std::filesystem;

TEST_CASE("a seed gives one schedule, in the job's bounds, ordered by progress", "[chaos]") {
  ChaosOptions o;
  o.workers = 3;
  int coordinator = 0, worker = 0, both = 0;
  for (uint64_t seed = 1; seed <= 200; ++seed) {
    auto a = ChaosDriver::Schedule(seed, 9, o), b = ChaosDriver::Schedule(seed, 9, o);
    REQUIRE(a.size() == b.size());
    REQUIRE(a.size() >= 1);
    REQUIRE(int(a.size()) <= o.max_kills);
    for (size_t i = 0; i < a.size(); ++i) {
      INFO("seed " << seed << " kill " << i << ": " << a[i].Describe());
      CHECK(a[i].Describe() == b[i].Describe());
      CHECK((a[i].coordinator || a[i].worker >= 0));
      CHECK(a[i].worker < o.workers);
      CHECK(a[i].at_accepted >= 0);
      CHECK(a[i].at_accepted < 9);
      CHECK(a[i].delay_permille >= 0);
      CHECK(a[i].delay_permille < 1000);
      CHECK(a[i].down_ms <= o.down_max_ms);
      if (i > 0) CHECK(a[i - 1].at_accepted <= a[i].at_accepted);
      coordinator += a[i].coordinator && a[i].worker < 0;
      worker += !a[i].coordinator;
      both += a[i].coordinator && a[i].worker >= 0;
    }
  }
  // Every kind of kill comes up.
  CHECK(coordinator > 20);
  CHECK(worker > 20);
  CHECK(both > 5);
}

TEST_CASE("infer and finetune jobs ride out 10 random kill -9 trials", "[chaos][farm]") {
  std::string tmpl = (fs::temp_directory_path() / "pcfarm-chaos-XXXXXX").string();
  REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
  const std::string work_dir = tmpl;
  ChaosDriver driver(work_dir);
  struct Plan {
    uint64_t seed;
    ChaosJob job;
  };
  const Plan kPlans[] = {
      {101, ChaosJob::kInfer},          {102, ChaosJob::kFinetuneSync},
      {103, ChaosJob::kFinetuneDiloco}, {104, ChaosJob::kInfer},
      {105, ChaosJob::kFinetuneSync},   {106, ChaosJob::kFinetuneDiloco},
      {107, ChaosJob::kInfer},          {108, ChaosJob::kFinetuneSync},
      {109, ChaosJob::kInfer},          {110, ChaosJob::kFinetuneDiloco},
  };
  int coordinator_kills = 0, worker_kills = 0;
  for (const Plan& p : kPlans) {
    auto t = driver.RunTrial(p.seed, p.job);
    INFO("seed " << p.seed << " " << ChaosJobName(p.job));
    REQUIRE_OK(t);
    std::cout << t->Describe() << std::endl;
    INFO(t->Describe() << "\n" << t->logs);
    CHECK(t->ok());
    coordinator_kills += t->coordinator_kills();
    worker_kills += t->worker_kills();
  }
  // The trials did kill (a schedule whose kills all came after the job's
  // end would test nothing).
  CHECK(coordinator_kills >= 3);
  CHECK(worker_kills >= 3);
  if (!std::getenv("PCFARM_KEEP_TEST_DIR")) {
    std::error_code ec;
    fs::remove_all(work_dir, ec);
  }
}

}  // namespace
}  // namespace pcfarm
