#include "bench/grid/status_pollers.h"

#include <httplib.h>

#include <algorithm>
#include <chrono>

#include "base/file.h"
#include "bench/grid/grid_bench.h"

namespace pcfarm {
namespace {

void Poll(const std::string& endpoint, const std::string& token, const std::string& page,
          const std::string& api, int offset_ms, const std::atomic<bool>* stop,
          PollCounts* counts) {
  httplib::Client http("http://" + endpoint);
  http.set_connection_timeout(5, 0);
  http.set_read_timeout(15, 0);
  http.set_keep_alive(true);  // as a browser does
  auto login = http.Get(("/login?token=" + token).c_str());
  if (!login || login->status != 303) {
    counts->failures++;
    return;
  }
  std::string set = login->get_header_value("Set-Cookie");
  httplib::Headers h = {{"Cookie", set.substr(0, set.find(';'))}};
  auto get = [&](const std::string& path) {
    auto r = http.Get(path.c_str(), h);
    counts->requests++;
    if (!r || r->status != 200) {
      counts->failures++;
    } else {
      counts->bytes += r->body.size();
    }
  };
  for (const std::string& p : {page, std::string("/static/app.js"),
                               std::string("/static/style.css")}) {
    get(p);
  }
  double next = MonotonicSeconds() + offset_ms / 1000.0;
  while (!stop->load()) {
    double now = MonotonicSeconds();
    if (now < next) {
      std::this_thread::sleep_for(std::chrono::milliseconds(
          std::min<int64_t>(50, int64_t((next - now) * 1000) + 1)));
      continue;
    }
    get(api);
    next += 1.0;
  }
}

}  // namespace

StatusPollers::StatusPollers(const std::string& endpoint, const std::string& token,
                             const std::string& page, const std::string& api, int browsers) {
  for (int i = 0; i < browsers; ++i) {
    threads_.emplace_back(Poll, endpoint, token, page, api, 1000 * i / browsers, &stop_,
                          &counts_);
  }
}

StatusPollers::~StatusPollers() {
  stop_ = true;
  for (auto& t : threads_) t.join();
}

Result<std::string> ReadHttpToken(const std::string& coordinator_dir) {
  PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(coordinator_dir + "/http.token", 4096));
  if (text.size() < 64) return Corruption(coordinator_dir + "/http.token is too short");
  return text.substr(0, 64);
}

}  // namespace pcfarm
