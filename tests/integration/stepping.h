// WhileStepping: runs fn() on this thread while another thread calls
// step() over and over, so that in-process SimWorkers keep answering (and
// are not dropped as silent) while a test waits on a CLI command, a join
// or a status call. Returns what fn returns; the stepping thread is joined
// before it returns, also when fn throws.
#pragma once

#include <atomic>
#include <thread>

namespace pcfarm {

template <typename Step, typename F>
auto WhileStepping(Step step, F fn) {
  std::atomic<bool> busy{true};
  std::thread keep([&] {
    while (busy) step();
  });
  struct Joiner {
    std::atomic<bool>* busy;
    std::thread* t;
    ~Joiner() {
      *busy = false;
      t->join();
    }
  } joiner{&busy, &keep};
  return fn();
}

}  // namespace pcfarm
