#include "coordinator/http/status_api.h"

#include <stdlib.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <memory>

#include "base/clock.h"
#include "coordinator/http/status_board.h"
#include "coordinator/server.h"
#include "coordinator/store.h"

#include "coordinator/admin_queries.h"
#include "coordinator/cli/cli_common.h"

namespace pcfarm {
namespace {

using nlohmann::json;
using Params = std::multimap<std::string, std::string>;

WorkerInfo Worker(int64_t id, const std::string& name, double gflops) {
  WorkerInfo w;
  w.id = id;
  w.name = name;
  w.speed_gflops = gflops;
  w.last_seen_ms = 1000 + id;
  return w;
}

std::vector<int64_t> Ids(const json& page) {
  std::vector<int64_t> ids;
  for (const auto& w : page["workers"]) ids.push_back(w["worker_id"].get<int64_t>());
  return ids;
}

TEST_CASE("workers query: parameters, defaults and clear refusals", "[http]") {
  auto none = ParseWorkerQuery({});
  REQUIRE(none.ok());
  CHECK_FALSE(none->has_value());

  auto q = ParseWorkerQuery({{"limit", "20"}});
  REQUIRE(q.ok());
  REQUIRE(q->has_value());
  CHECK((*q)->limit == 20);
  CHECK((*q)->offset == 0);
  CHECK((*q)->sort == "worker_id");
  CHECK_FALSE((*q)->descending);

  q = ParseWorkerQuery({{"limit", "5"}, {"offset", "10"}, {"sort", "gflops"}, {"order", "desc"},
                        {"state", "idle"}});
  REQUIRE(q.ok());
  CHECK((*q)->Key() == "limit=5&offset=10&sort=gflops&order=desc&state=idle");

  struct Bad {
    Params params;
    const char* says;
  };
  for (const Bad& b : std::vector<Bad>{
           {{{"offset", "10"}}, "need limit"},
           {{{"limit", "0"}}, "from 1 to 1000"},
           {{{"limit", "1001"}}, "from 1 to 1000"},
           {{{"limit", "-1"}}, "from 1 to 1000"},
           {{{"limit", "ten"}}, "not 'ten'"},
           {{{"limit", "5"}, {"offset", "-5"}}, "offset=K"},
           {{{"limit", "5"}, {"sort", "secret"}}, "sort='secret' is not a field"},
           {{{"limit", "5"}, {"order", "up"}}, "order takes asc or desc"},
           {{{"limit", "5"}, {"state", "asleep"}}, "state takes"},
           {{{"limit", "5"}, {"limit", "6"}}, "given twice"},
           {{{"limit", "5"}, {"page", "2"}}, "unknown parameter 'page'"}}) {
    auto r = ParseWorkerQuery(b.params);
    INFO(b.says);
    REQUIRE_FALSE(r.ok());
    CHECK(r.status().code() == StatusCode::kInvalidArgument);
    CHECK(r.status().message().find(b.says) != std::string::npos);
  }
}

TEST_CASE("workers page: sorted on the server, stable, numeric, cut and counted", "[http]") {
  // In id order, as Store::ListWorkers lists them; all but 5 connected.
  std::vector<WorkerInfo> all = {Worker(1, "pc-b", 10), Worker(2, "pc-a", 9.5),
                                 Worker(3, "pc-c", 100), Worker(4, "pc-a", 10),
                                 Worker(5, "pc-d", 2)};
  all[0].devices_json = R"([{"index": 0, "backend": "cpu", "name": "x"}])";
  LiveView view;
  for (int64_t id : {1, 2, 3, 4}) view.running[id] = 0;
  view.running[3] = 2;
  WorkerQuery q;
  q.limit = 2;
  json p = PageOfWorkers(all, view, q);
  CHECK(p["total"] == 5);
  CHECK(p["offset"] == 0);
  CHECK(p["limit"] == 2);
  CHECK(Ids(p) == std::vector<int64_t>{1, 2});
  // Whole rows, as the unpaged list has them.
  WorkerLiveState live;
  live.connected = true;
  CHECK(p["workers"][0] == WorkerJson(WorkerToWire(all[0], live)));
  CHECK(p["workers"][0]["devices"].size() == 1);

  // Numbers as numbers (100 after 9.5), equal keys in worker_id order both ways.
  q.limit = 10;
  q.sort = "gflops";
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{5, 2, 1, 4, 3});
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{3, 1, 4, 2, 5});
  q.sort = "name";
  q.descending = false;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{2, 4, 1, 3, 5});
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{5, 3, 1, 2, 4});

  // Pages follow one another; past the end is empty, with the total.
  q.limit = 2;
  q.offset = 4;
  p = PageOfWorkers(all, view, q);
  CHECK(Ids(p) == std::vector<int64_t>{4});
  q.offset = 50;
  p = PageOfWorkers(all, view, q);
  CHECK(p["workers"].empty());
  CHECK(p["total"] == 5);

  // A state filter counts what matches.
  q = WorkerQuery();
  q.state = "offline";
  p = PageOfWorkers(all, view, q);
  CHECK(p["total"] == 1);
  CHECK(Ids(p) == std::vector<int64_t>{5});
  q.state = "busy";
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{3});
  q.state = "quarantined";
  CHECK(PageOfWorkers(all, view, q)["total"] == 0);
  CHECK(PageOfWorkers({}, view, WorkerQuery())["total"] == 0);

  // Keys that need the stored devices and the live state.
  q = WorkerQuery();
  q.sort = "devices";
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{1, 2, 3, 4, 5});
  q.sort = "state";  // busy, idle x3, offline
  q.descending = false;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{3, 1, 2, 4, 5});
  q.sort = "running";
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, view, q)) == std::vector<int64_t>{3, 1, 2, 4, 5});
}

}  // namespace
}  // namespace pcfarm

namespace pcfarm {
namespace {

// Workers sorted by id with no state filter come straight from SQLite (a
// page and a count); the answer must be the one PageOfWorkers gives from
// every worker.
TEST_CASE("workers page by id from SQLite equals the page cut from every worker", "[http]") {
  char tmpl[] = "/tmp/pcfarm_status_api_test.XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  const std::string dir = tmpl;
  FakeClock clock;
  {
    auto store = Store::Open(dir + "/state.db", &clock);
    REQUIRE(store.ok());
    for (int i = 0; i < 7; ++i) {
      const std::string n = std::to_string(i);
      REQUIRE((*store)->AddWorker("pc-" + n, "sign-" + n, "curve-" + n).ok());
    }
    auto board = StatusBoard::Make();
    REQUIRE(board.ok());
    auto view = std::make_shared<LiveView>();
    view->running[2] = 1;  // worker 2 busy, worker 5 connected and idle
    view->running[5] = 0;
    (*board)->Publish(view);
    ServerCounters counters;
    StatusApi api(store->get(), board->get(), &counters);
    auto all = (*store)->ListWorkers();
    REQUIRE(all.ok());
    for (bool desc : {false, true}) {
      for (int64_t offset : {0, 3, 6, 7, 20}) {
        for (int limit : {1, 3, 100}) {
          WorkerQuery q;
          q.limit = limit;
          q.offset = offset;
          q.descending = desc;
          INFO("desc " << desc << " offset " << offset << " limit " << limit);
          auto fast = api.Workers(q);
          REQUIRE(fast.ok());
          CHECK(*fast == PageOfWorkers(*all, *view, q));
        }
      }
    }
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace pcfarm
