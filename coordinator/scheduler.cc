#include "coordinator/scheduler.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cassert>
#include <cstdio>

namespace pcfarm {

namespace {

std::string V4Network(const uint8_t a[4]) {
  const bool none = a[0] == 0 || a[0] == 127 || a[0] == 10 ||      // this, loopback, private
                    (a[0] == 172 && (a[1] & 0xf0) == 16) ||         // 172.16/12
                    (a[0] == 192 && a[1] == 168) ||                 // 192.168/16
                    (a[0] == 169 && a[1] == 254) ||                 // link-local
                    (a[0] == 100 && (a[1] & 0xc0) == 64) ||         // CGNAT 100.64/10
                    a[0] >= 224;                                    // multicast, reserved
  if (none) return "";
  char buf[32];
  std::snprintf(buf, sizeof buf, "v4:%u.%u.%u.0/24", a[0], a[1], a[2]);
  return buf;
}

}  // namespace

std::string IndependenceNetwork(std::string_view peer_address) {
  std::string s(peer_address);
  // "[v6]:port", "v4:port", or a bare address.
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string::npos) return "";
    s = s.substr(1, close - 1);
  } else if (s.find(':') != std::string::npos && s.find(':') == s.rfind(':') &&
             s.find('.') != std::string::npos) {
    s = s.substr(0, s.find(':'));  // a.b.c.d:port
  }
  uint8_t v4[4];
  if (inet_pton(AF_INET, s.c_str(), v4) == 1) return V4Network(v4);
  uint8_t v6[16];
  if (inet_pton(AF_INET6, s.c_str(), v6) != 1) return "";
  bool mapped = v6[10] == 0xff && v6[11] == 0xff;
  for (int i = 0; i < 10 && mapped; ++i) mapped = v6[i] == 0;
  if (mapped) return V4Network(v6 + 12);
  const bool global = (v6[0] & 0xe0) == 0x20;  // 2000::/3, global unicast
  if (!global) return "";                      // ::1, ::, fc00::/7, fe80::/10, ...
  char buf[48];
  std::snprintf(buf, sizeof buf, "v6:%02x%02x:%02x%02x:%02x%02x::/48", v6[0], v6[1], v6[2], v6[3],
                v6[4], v6[5]);
  return buf;
}

double EarnedSpeed(double claimed_gflops, int64_t agreed, const MeasuredSpeed& measured) {
  if (agreed < kAgreedBeforeSpeedCounts || measured.shards < kShardsToMeasureSpeed ||
      measured.seconds <= 0 || !(claimed_gflops > 0)) {
    return 0;
  }
  const double gflops = measured.flops / measured.seconds / 1e9;
  return std::min(claimed_gflops, kClaimedSpeedSlack * gflops);
}

Scheduler::Scheduler(Store* store, SchedulerOptions options)
    : store_(store), options_(options) {
  assert(store_ != nullptr);
  assert(options_.scheduler_lease_ms > 0);
  assert(options_.scheduler_max_attempts >= 1);
}

Result<std::optional<Lease>> Scheduler::LeaseNext(int64_t worker_id,
                                                  const DeviceCaps& caps) {
  return store_->LeaseShard(worker_id, caps, options_.scheduler_lease_ms, &verifier_,
                            options_.scheduler_checker_available_ms);
}

Result<std::vector<int64_t>> Scheduler::DrawnCheckers() {
  return store_->DrawnCheckers(options_.scheduler_checker_available_ms);
}

Result<TransitionReport> Scheduler::ExpireLeases() {
  return store_->ExpireLeases(options_.scheduler_max_attempts);
}

Result<TransitionReport> Scheduler::WorkerLost(int64_t worker_id) {
  return store_->ReleaseWorker(worker_id, options_.scheduler_max_attempts);
}

Result<TransitionReport> Scheduler::WorkerRejoined(
    int64_t worker_id, const std::vector<int64_t>& still_held) {
  return store_->ReleaseWorker(worker_id, options_.scheduler_max_attempts,
                               still_held);
}

Result<TransitionReport> Scheduler::AttemptFailed(int64_t attempt_id,
                                                  int64_t worker_id,
                                                  const std::string& error) {
  return store_->FailAttempt(attempt_id, worker_id, error,
                             options_.scheduler_max_attempts);
}

Result<RecordOutcome> Scheduler::RecordResult(int64_t attempt_id,
                                              int64_t worker_id,
                                              std::string_view body,
                                              std::string_view signature) {
  return store_->RecordResult(attempt_id, worker_id, body, signature,
                              verifier_, options_.scheduler_max_attempts,
                              summary_fold_, die_);
}

Result<TransitionReport> Scheduler::Quarantine(int64_t worker_id,
                                               const std::string& reason) {
  return store_->BanWorker(worker_id, reason, summary_fold_);
}

}  // namespace pcfarm
