#include "coordinator/http/status_pages.h"

#include <catch2/catch.hpp>

namespace pcfarm {
namespace {

using nlohmann::json;

TEST_CASE("html: text from workers is escaped", "[http]") {
  CHECK(HtmlEscape("<script>alert('x')&\"</script>") ==
        "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;");
  json w = {{"worker_id", 7},  {"name", "<script>alert(1)</script>"},
            {"connected", true}, {"banned", false}, {"trust", 0.5}, {"agreed", 1},
            {"disagreed", 0}, {"gflops", 2.0}, {"running", 0}, {"last_seen_ms", 0},
            {"outdated", false}, {"protocol_version", 0},
            {"devices", json::array({{{"backend", "<b>"}, {"name", "x\"y"}}})}};
  for (const std::string& page : {WorkersPage({{"total", 1}, {"workers", json::array({w})}}, "c"), WorkerPage(w, "c")}) {
    CHECK(page.find("<script>alert") == std::string::npos);
    CHECK(page.find("&lt;script&gt;alert(1)&lt;/script&gt;") != std::string::npos);
    CHECK(page.find("<b></td>") == std::string::npos);
    CHECK(page.find("&lt;b&gt;") != std::string::npos);
  }
  json job = {{"job_id", 3}, {"kind", "bench"}, {"state", "failed"},
              {"reason", "<img src=x onerror=alert(1)>"}, {"shards_total", 4},
              {"shards_accepted", 1}, {"owner", "admin"}, {"shard_states", {{"pending", 3}}}};
  std::string page = JobPage(job, "c");
  CHECK(page.find("<img") == std::string::npos);
  CHECK(page.find("&lt;img src=x") != std::string::npos);
}

TEST_CASE("svg plot: points scaled into the frame, labels escaped", "[http]") {
  std::string svg = SvgLinePlot({{1, 2.0}, {2, 1.0}, {3, 0.5}}, "loss", "a<b", "step", "loss");
  CHECK(svg.rfind("<svg", 0) == 0);
  CHECK(svg.find("data-plot=\"loss\"") != std::string::npos);
  CHECK(svg.find("<polyline") != std::string::npos);
  CHECK(svg.find("a&lt;b") != std::string::npos);
  // x from 60 (left) to 468 (width - right); the largest y at the top (24).
  CHECK(svg.find("points=\"60.0,24.0 264.0,") != std::string::npos);
  CHECK(svg.find("468.0,184.0") != std::string::npos);
  std::string empty = SvgLinePlot({}, "loss", "t", "x", "y");
  CHECK(empty.find("no data yet") != std::string::npos);
  CHECK(empty.find("<polyline") == std::string::npos);
  // One point, or all equal: no division by zero.
  CHECK(SvgLinePlot({{5, 3.0}}, "l", "t", "x", "y").find("nan") == std::string::npos);
}

TEST_CASE("job plots: loss and bytes per step from rounds", "[http]") {
  json job = {{"rounds", json::array({{{"step", 1}, {"loss", 3.0}, {"bytes_up", 10}, {"bytes_down", 5}},
                                      {{"step", 2}, {"loss", 2.0}, {"bytes_up", 10}, {"bytes_down", 5}}})}};
  std::string plots = JobPlots(job);
  CHECK(plots.find("data-plot=\"loss\"") != std::string::npos);
  CHECK(plots.find("data-plot=\"bytes\"") != std::string::npos);
  CHECK(JobPlots(json::object()).empty());
}

TEST_CASE("pages name no icon, so browsers do not ask for /favicon.ico", "[http]") {
  // Headless Chromium logged a 404 for /favicon.ico on every page.
  CHECK(OverviewPage(json::object(), "c").find("<link rel=\"icon\" href=\"data:,\">") !=
        std::string::npos);
}

}  // namespace
}  // namespace pcfarm
