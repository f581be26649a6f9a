// Scheduler: hands shards to workers and takes their results back, on top
// of Store, with the lease and retry policy and the per-kind comparators.
//
// Pull scheduling (DESIGN.md §6): a READY worker gets the best pending shard
// it can run: highest job priority first, then the job with the fewest live
// attempts (fair across jobs), then the oldest job. A shard with redundancy
// N is run by N different workers (never twice by one worker) and accepted
// when N results agree; disagreement schedules one more run per missing
// agreeing result, and the odd workers lose trust when the shard is
// accepted. Expired leases, lost workers, attempts a worker could not run
// and disagreeing full result sets count as failures of the shard; at
// scheduler_max_attempts failures the shard and its job fail with a reason
// naming the last failure. A worker that fails far more often than it
// delivers stops counting against that budget (FailureCounts in store.h).
//
// Independence (Sybil resistance, DESIGN.md §8): one person's several
// identities must not make up a shard's redundancy. The copies of a shard
// (and its re-runs after a disagreement) go to workers that are independent
// as far as the coordinator can tell: enrolled with different tokens, and,
// where both connect from public addresses, from different networks
// (IndependenceNetwork). Workers on private or loopback addresses (a home
// LAN) are told apart by their tokens alone. So redundancy R needs workers
// of R different enrollment tokens; a farm whose PCs all enrolled with one
// token runs redundancy-1 jobs only.
//
// Every call is one Store transaction, durable when it returns OK: the
// daemon sends ACK only after RecordResult returned OK.
//
// Thread-safety: as Store's (calls are serialized inside the Store). Register
// comparators (verifier()) before the Scheduler is shared.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/status.h"
#include "coordinator/store.h"
#include "coordinator/verifier.h"

namespace pcfarm {

// The network a peer address belongs to, for the independence rule:
// "v4:a.b.c.0/24" for a public IPv4 address, "v6:xxxx:xxxx:xxxx::/48" for a
// public IPv6 address (an IPv4-mapped IPv6 address counts as IPv4), and ""
// for loopback, private (RFC 1918, fc00::/7), link-local, carrier-grade NAT
// (100.64/10), unspecified and unparsable addresses: nothing is known of
// those. `peer_address` is what ZeroMQ reports ("Peer-Address"), with or
// without a port or brackets.
std::string IndependenceNetwork(std::string_view peer_address);

// A worker's claimed speed (its HELLO's bench figure) orders the idle
// workers offered work only once it has this many agreeing results: a new
// identity claiming a huge speed does not jump the queue (BOINC's rule of
// thumb: 10 valid results before a host is trusted more).
constexpr int64_t kAgreedBeforeSpeedCounts = 10;
// ...and only as far as its measured shard times bear it out: once
// kShardsToMeasureSpeed of its shards of known work (JobPlanner::ShardFlops)
// came back, the speed that orders it is at most kClaimedSpeedSlack times
// the measured one (work / time from ASSIGN to RESULT, which includes the
// network and blob fetches, hence the slack); before that, none.
constexpr int64_t kShardsToMeasureSpeed = 3;
constexpr double kClaimedSpeedSlack = 2.0;

// What a worker measured so far: the work (FLOP) of its shards of known
// work and the seconds they took, assignment to result.
struct MeasuredSpeed {
  double flops = 0;
  double seconds = 0;
  int64_t shards = 0;
};

// The GFLOP/s that orders a worker among idle ones (AssignAll): 0 until it
// has kAgreedBeforeSpeedCounts agreeing results and kShardsToMeasureSpeed
// measured shards, then min(claimed, kClaimedSpeedSlack * measured).
double EarnedSpeed(double claimed_gflops, int64_t agreed, const MeasuredSpeed& measured);

struct SchedulerOptions {
  // How long a worker holds a leased shard before it is issued again.
  int64_t scheduler_lease_ms = 60000;
  // Failed attempts (expired, lost, disagreeing) after which a shard and its
  // job fail.
  int scheduler_max_attempts = 5;
  // A worker is a candidate to be drawn for a check while the daemon found
  // it available (connected, heard from, not paused) this recently
  // (Store::LeaseShard): the daemon sets 3 heartbeat intervals, so a
  // worker that stalls, pauses or leaves stops holding a check within them.
  int64_t scheduler_checker_available_ms = 15'000;
};

class Scheduler {
 public:
  // `store` must outlive the Scheduler.
  explicit Scheduler(Store* store, SchedulerOptions options = {});

  Verifier& verifier() { return verifier_; }
  // How an accepted result updates its job's summary (none by default).
  void set_summary_fold(SummaryFold fold) { summary_fold_ = std::move(fold); }
  const SchedulerOptions& options() const { return options_; }

  // The best shard `worker_id` can run, leased until now + lease, or nullopt
  // when there is none. PermissionDenied for a banned worker, NotFound for
  // an unknown one.
  Result<std::optional<Lease>> LeaseNext(int64_t worker_id,
                                         const DeviceCaps& caps);
  // The workers drawn now for the checks that wait (Store::DrawnCheckers).
  Result<std::vector<int64_t>> DrawnCheckers();
  // Ends every lease past its deadline (the shard is pending again).
  Result<TransitionReport> ExpireLeases();
  // Ends every lease of a worker that went silent or said BYE.
  Result<TransitionReport> WorkerLost(int64_t worker_id);
  // A worker said HELLO on a new connection: ends its leases but those in
  // `still_held` (attempts it still runs or holds a result for); the rest
  // were lost with a restart.
  Result<TransitionReport> WorkerRejoined(int64_t worker_id,
                                          const std::vector<int64_t>& still_held);
  // The worker reported it could not run the attempt; see Store::FailAttempt
  // for the error codes. Whether the failure counts against the shard:
  // FailureCounts (store.h).
  Result<TransitionReport> AttemptFailed(int64_t attempt_id, int64_t worker_id,
                                         const std::string& error);
  // Bans (quarantines) a worker; its unchecked results in running jobs run
  // again and their jobs' summaries are folded again (Store::BanWorker).
  Result<TransitionReport> Quarantine(int64_t worker_id,
                                      const std::string& reason);
  // The draw that decides whether a lone result is checked
  // (verify_policy.h); libsodium's randombytes unless set (tests).
  void set_check_die(CheckDie die) { die_ = std::move(die); }
  // Stores and verifies a result; see Store::RecordResult for the error
  // codes (AlreadyExists = replay or duplicate).
  Result<RecordOutcome> RecordResult(int64_t attempt_id, int64_t worker_id,
                                     std::string_view body,
                                     std::string_view signature);

 private:
  Store* store_;
  SchedulerOptions options_;
  Verifier verifier_;
  SummaryFold summary_fold_;
  CheckDie die_;
};

}  // namespace pcfarm
