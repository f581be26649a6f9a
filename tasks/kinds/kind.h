// TaskKind: the contract of a compiled-in kind of work a shard can name.
//
// A task kind is a pure function of its shard: Run(params) on any device
// gives an answer that Agree() accepts against any other honest run of the
// same params. Workers never run code from the network; a shard carries only
// a kind name, parameters and blob hashes, and the worker looks the kind up
// in TaskKindRegistry::Builtin().
//
// Params and results are JSON text (UTF-8, one object). Each kind documents
// its fields in its own header (see tasks/kinds/bench.h).
//
// Thread-safety: kinds hold no mutable state; every method may be called
// from several threads at once. The registry is immutable after creation.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "base/status.h"

namespace pcfarm {

// Params larger than this are rejected before parsing.
inline constexpr size_t kMaxTaskParamsBytes = 64 * 1024;

// What a running task may see of the world besides its params.
struct RunContext {
  // Called with the fraction done, non-decreasing in [0, 1]; a successful
  // Run ends with a call with 1.0. May be empty. Called on Run's thread.
  std::function<void(double fraction)> progress;
  // When non-null and it becomes true, Run stops at its next check point
  // and returns a kCancelled status. Owned by the caller; must outlive Run.
  const std::atomic<bool>* cancel = nullptr;
  // When non-null and true, Run waits at its next check point (between
  // bench repetitions, training steps, decode steps) until it turns false
  // or `cancel` is set: the PC's owner came back (worker/idle_policy.h).
  // Waiting changes nothing in the answer. Owned by the caller.
  const std::atomic<bool>* pause = nullptr;
  // Limits for the backend a kind creates (BackendOptions): CPU threads
  // (0 = all cores) and device memory (0 = the device's own).
  int cpu_threads = 0;
  uint64_t memory_limit_bytes = 0;
  // Resolves a blob named by its BLAKE2b-256 hex hash to a local file that
  // holds exactly its verified bytes (the worker's blob cache). Empty when
  // the caller has no blobs; kinds that need blobs then fail with
  // FailedPrecondition.
  std::function<Result<std::string>(std::string_view hash_hex)> blob_path;
  // The compute backend to use ("cpu", "vulkan", "cuda") and its device.
  std::string backend = "cpu";
  int device_index = 0;

  bool cancelled() const {
    return cancel != nullptr && cancel->load(std::memory_order_relaxed);
  }
  // A check point: waits while `pause` is set (polling every 5 ms, so a
  // pause or resume takes effect within that of the flag), then returns
  // cancelled().
  bool CheckPoint() const {
    while (pause != nullptr && pause->load(std::memory_order_relaxed) && !cancelled()) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return cancelled();
  }
  void ReportProgress(double fraction) const {
    if (progress) progress(fraction);
  }
};

// Parses `text` as one JSON value nested at most `max_depth` arrays and
// objects deep, checking the depth before it builds anything (a megabyte of
// '[' must not become a megabyte of nested arrays). InvalidArgument names
// `what` and the fault.
Result<nlohmann::json> ParseBoundedJson(std::string_view text, int max_depth,
                                        std::string_view what);

class TaskKind {
 public:
  virtual ~TaskKind() = default;

  // The name a shard uses, e.g. "bench". Stable: it is part of the protocol.
  virtual std::string_view name() const = 0;

  // OK iff `params` is a well-formed params object for this kind. The
  // InvalidArgument message names the field that is wrong. Cheap: the
  // coordinator calls it before queueing work.
  virtual Status ValidateParams(std::string_view params) const = 0;

  // Runs the task. Returns the result JSON, InvalidArgument for bad params,
  // kCancelled when ctx.cancel was set, or another status for a failure of
  // the device.
  virtual Result<std::string> Run(std::string_view params,
                                  const RunContext& ctx) const = 0;

  // The longest result (bytes of Run's JSON) this kind can produce. The
  // coordinator refuses a longer RESULT before it stores or parses it.
  virtual size_t max_output_bytes() const = 0;

  // OK iff `output` is shaped as this kind's result of a shard with
  // `params` (which ValidateParams accepted): at most max_output_bytes(),
  // JSON nested no deeper than the result format needs, every field that
  // Agree() and the job summary read present with the right type, range and
  // count. The coordinator checks every result with it, also at redundancy
  // 1 where Agree() never runs. InvalidArgument names what is wrong. Linear
  // in the output's size, with memory bounded by it.
  virtual Status ValidateOutput(std::string_view params,
                                std::string_view output) const = 0;

  // Returns true iff two results of the same shard agree within this kind's
  // tolerance. Malformed results never agree with anything.
  virtual bool Agree(std::string_view result_a,
                     std::string_view result_b) const = 0;
};

// The set of kinds this binary can run.
class TaskKindRegistry {
 public:
  // REQUIRES: kinds have distinct names and none is null.
  explicit TaskKindRegistry(std::vector<std::unique_ptr<TaskKind>> kinds);

  // The kinds compiled into pcfarm (bench, ...). Lives for the process.
  static const TaskKindRegistry& Builtin();

  // Returns the kind called `name`, or nullptr. The pointer lives as long as
  // the registry.
  const TaskKind* Find(std::string_view name) const;

  // Names of all kinds, sorted.
  std::vector<std::string> Names() const;

 private:
  std::vector<std::unique_ptr<TaskKind>> kinds_;
};

}  // namespace pcfarm
