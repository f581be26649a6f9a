#include "base/service_notify.h"

#include <systemd/sd-daemon.h>

#include <atomic>
#include <chrono>

namespace pcfarm {

namespace {

int64_t NowUs() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace

void NotifyServiceReady() { sd_notify(0, "READY=1"); }
void NotifyServiceStopping() { sd_notify(0, "STOPPING=1"); }

void NotifyServiceWatchdog() {
  // sd_watchdog_enabled reads the environment: once, then remember.
  static const int64_t interval_us = [] {
    uint64_t us = 0;
    return sd_watchdog_enabled(0, &us) > 0 ? int64_t(us) : int64_t(0);
  }();
  if (interval_us <= 0) return;
  static std::atomic<int64_t> last_us{0};
  int64_t now = NowUs();
  int64_t last = last_us.load();
  if (now - last < interval_us / 4) return;
  if (!last_us.compare_exchange_strong(last, now)) return;
  sd_notify(0, "WATCHDOG=1");
}

void NotifyServiceStatus(const std::string& line) {
  sd_notify(0, ("STATUS=" + line).c_str());
}

}  // namespace pcfarm
