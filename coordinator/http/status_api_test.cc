#include "coordinator/http/status_api.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

using nlohmann::json;
using Params = std::multimap<std::string, std::string>;

json Worker(int64_t id, const std::string& name, double gflops, bool connected = true) {
  return {{"worker_id", id}, {"name", name},   {"connected", connected}, {"banned", false},
          {"trust", 0.5},    {"agreed", 0},    {"disagreed", 0},         {"gflops", gflops},
          {"running", 0},    {"outdated", false}, {"last_seen_ms", 1000 + id},
          {"devices", json::array()}};
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
  // In worker_id order, as StatusApi::Workers lists them.
  json all = json::array({Worker(1, "pc-b", 10), Worker(2, "pc-a", 9.5), Worker(3, "pc-c", 100),
                          Worker(4, "pc-a", 10), Worker(5, "pc-d", 2, /*connected=*/false)});
  WorkerQuery q;
  q.limit = 2;
  json p = PageOfWorkers(all, q);
  CHECK(p["total"] == 5);
  CHECK(p["offset"] == 0);
  CHECK(p["limit"] == 2);
  CHECK(Ids(p) == std::vector<int64_t>{1, 2});
  CHECK(p["workers"][0] == all[0]);  // whole rows, as the unpaged list has them

  // Numbers as numbers (100 after 9.5), equal keys in worker_id order both ways.
  q.limit = 10;
  q.sort = "gflops";
  CHECK(Ids(PageOfWorkers(all, q)) == std::vector<int64_t>{5, 2, 1, 4, 3});
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, q)) == std::vector<int64_t>{3, 1, 4, 2, 5});
  q.sort = "name";
  q.descending = false;
  CHECK(Ids(PageOfWorkers(all, q)) == std::vector<int64_t>{2, 4, 1, 3, 5});
  q.descending = true;
  CHECK(Ids(PageOfWorkers(all, q)) == std::vector<int64_t>{5, 3, 1, 2, 4});

  // Pages follow one another; past the end is empty, with the total.
  q.limit = 2;
  q.offset = 4;
  p = PageOfWorkers(all, q);
  CHECK(Ids(p) == std::vector<int64_t>{4});
  q.offset = 50;
  p = PageOfWorkers(all, q);
  CHECK(p["workers"].empty());
  CHECK(p["total"] == 5);

  // A state filter counts what matches.
  q = WorkerQuery();
  q.state = "offline";
  p = PageOfWorkers(all, q);
  CHECK(p["total"] == 1);
  CHECK(Ids(p) == std::vector<int64_t>{5});
  q.state = "busy";
  CHECK(PageOfWorkers(all, q)["total"] == 0);
  CHECK(PageOfWorkers(json::array(), WorkerQuery())["total"] == 0);
}

}  // namespace
}  // namespace pcfarm
