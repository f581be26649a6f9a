// Simulated open status pages for the grid benches: each poller is one
// browser tab doing what app.js does (log in with the coordinator's HTTP
// token, load the page and its static files, then GET an API path once a
// second), on its own thread with its own keep-alive connection.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "base/status.h"

namespace pcfarm {

// Counters the pollers add to.
struct PollCounts {
  std::atomic<uint64_t> requests{0}, failures{0}, bytes{0};
};

class StatusPollers {
 public:
  // Starts `browsers` pollers of `api` (after loading `page`), spread over
  // the second: poller i polls at i/browsers s into each second.
  StatusPollers(const std::string& endpoint, const std::string& token, const std::string& page,
                const std::string& api, int browsers);
  // Stops and joins them.
  ~StatusPollers();
  StatusPollers(const StatusPollers&) = delete;
  StatusPollers& operator=(const StatusPollers&) = delete;

  const PollCounts& counts() const { return counts_; }

 private:
  PollCounts counts_;
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// The status page's login token (the first 64 characters of
// DIR/http.token, which `pcfarm-coordinator serve` writes).
Result<std::string> ReadHttpToken(const std::string& coordinator_dir);

}  // namespace pcfarm
