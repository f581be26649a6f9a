// WalSyncer: the coordinator's durability thread (pipelined group commit).
//
// The event loop commits each poll turn to SQLite without waiting for the
// disk (Store::EnableDeferredSync) and numbers the commits 1, 2, 3, ...
// (epochs). It hands each epoch to Request() and keeps that turn's replies
// until synced() reaches the epoch. The thread here runs the sync function
// (Store::SyncWal) whenever an epoch is waiting; one sync covers every
// epoch requested before it started, so while the disk works on one sync
// the loop goes on with the next turns, and a slow fsync costs latency, not
// throughput.
//
// notify_fd() is an eventfd that becomes readable each time synced()
// advances (zmq_poll can wait on it); Drain() empties it. If the sync
// function fails, synced() stops for good and error() says why: what is in
// the WAL may not be durable, so the caller must stop promising (the
// coordinator exits and is restarted from what is on disk).
//
// Thread-safety: every method may be called from any thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>

#include "base/status.h"

namespace pcfarm {

class WalSyncer {
 public:
  using SyncFn = std::function<Status()>;

  static Result<std::unique_ptr<WalSyncer>> Start(SyncFn sync);
  // Finishes a sync in progress (not the ones only requested), then stops.
  ~WalSyncer();
  WalSyncer(const WalSyncer&) = delete;
  WalSyncer& operator=(const WalSyncer&) = delete;

  // Asks for a sync that covers commit `epoch`. Epochs only grow; a smaller
  // one than already requested changes nothing.
  void Request(uint64_t epoch);
  // The highest epoch known to be durable (0 before the first sync).
  uint64_t synced() const;
  // Blocks until synced() >= epoch; the sync error if one happened first.
  Status WaitFor(uint64_t epoch);
  // Readable when synced() advanced since the last Drain().
  int notify_fd() const { return event_fd_; }
  void Drain();
  // OK, or the first failure of the sync function.
  Status error() const;
  // How many times the sync function ran.
  uint64_t syncs() const;

 private:
  WalSyncer(SyncFn sync, int event_fd);
  void Loop();

  SyncFn sync_;
  int event_fd_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  uint64_t requested_ = 0;
  uint64_t synced_ = 0;
  uint64_t syncs_ = 0;
  bool stop_ = false;
  Status error_;
  std::thread thread_;
};

}  // namespace pcfarm
