#include "worker/daemon.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <vector>
#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "base/clock.h"
#include "base/file.h"
#include "base/peer_text.h"
#include "base/service_notify.h"
#include "crypto/codec.h"
#include "crypto/hash.h"
#include "crypto/keys.h"
#include "crypto/token.h"
#include "proto/wire.h"
#include "tasks/backend/registry.h"
#include "tasks/kinds/kind.h"
#include "worker/blob_cache.h"
#include "worker/blob_fetcher.h"
#include "worker/devices.h"
#include "worker/idle_policy.h"
#include "worker/output_uploader.h"
#include "worker/result_spool.h"
#include "worker/seen_attempts.h"
#include "worker/worker_dir.h"

namespace pcfarm {

namespace {

constexpr char kWakeEndpoint[] = "inproc://pcfarm-worker-done";

// Outputs over this size travel as blobs (when the coordinator takes them),
// whatever their kind; a train result's always do (OutputAsBlob).
constexpr uint64_t kInlineOutputBytes = uint64_t(4) << 20;
// Output chunks in flight, and the wait after the coordinator refused one.
constexpr int kOutputWindow = 4;
constexpr int64_t kOutputRetryMs = 10'000;

// Failures of a device rather than of the shard's inputs.
bool DeviceFailure(StatusCode code) {
  return code == StatusCode::kResourceExhausted || code == StatusCode::kUnavailable ||
         code == StatusCode::kInternal || code == StatusCode::kTimeout;
}

// One shard this worker accepted.
struct Task {
  uint64_t attempt_id = 0;
  uint64_t shard_id = 0;
  std::string body_hash;  // BLAKE2b-256 of the signed ShardBody bytes
  std::string kind;
  std::string params;
  std::vector<Hash256> blobs;  // pinned in the cache while the task runs
  bool pinned = false;         // `blobs` are pinned (it was started)
  BlobCache* cache = nullptr;
  std::string backend = "cpu";
  int device_index = 0;
  std::atomic<bool> cancel{false};
  std::atomic<bool> pause{false};  // the idle policy said no
  bool released = false;           // handed back; its result is not wanted
  int64_t deadline_ms = 0;         // the lease's end (wall clock)
  int cpu_threads = 0;
  uint64_t memory_limit_bytes = 0;
  std::atomic<float> progress{0};
  // Filled by the executor.
  bool ok = false;
  std::string output, error;
  int64_t started_ms = 0, finished_ms = 0;
  std::string unfetched_blob;  // ResultBody.unfetched_blob (never started)
};

// Runs tasks on `slots` threads; finished tasks go to done() and each
// completion pokes the event loop through an inproc socket.
class Executor {
 public:
  Executor(zmq::context_t* ctx, int slots) : ctx_(ctx) {
    for (int i = 0; i < slots; ++i) threads_.emplace_back([this] { Loop(); });
  }
  ~Executor() {
    {
      std::lock_guard<std::mutex> l(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (auto& t : threads_) t.join();
  }
  void Submit(std::shared_ptr<Task> t) {
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.push_back(std::move(t));
    }
    cv_.notify_one();
  }
  std::vector<std::shared_ptr<Task>> TakeDone() {
    std::lock_guard<std::mutex> l(mu_);
    std::vector<std::shared_ptr<Task>> out(done_.begin(), done_.end());
    done_.clear();
    return out;
  }
  size_t busy() {
    std::lock_guard<std::mutex> l(mu_);
    return queue_.size() + running_;
  }

 private:
  void Loop() {
    zmq::socket_t wake(*ctx_, zmq::socket_type::push);
    wake.set(zmq::sockopt::linger, 0);
    wake.connect(kWakeEndpoint);
    while (true) {
      std::shared_ptr<Task> t;
      {
        std::unique_lock<std::mutex> l(mu_);
        cv_.wait(l, [&] { return stop_ || !queue_.empty(); });
        if (stop_) return;
        t = queue_.front();
        queue_.pop_front();
        running_++;
      }
      Run(*t);
      {
        std::lock_guard<std::mutex> l(mu_);
        running_--;
        done_.push_back(t);
      }
      try {
        wake.send(zmq::str_buffer("x"), zmq::send_flags::dontwait);
      } catch (const zmq::error_t&) {
      }
    }
  }
  static void Run(Task& t) {
    t.started_ms = SystemClock::Get()->NowMs();
    const TaskKind* kind = TaskKindRegistry::Builtin().Find(t.kind);
    if (!kind) {
      t.ok = false;
      t.error = "this worker has no task kind '" + t.kind + "'";
    } else {
      RunContext ctx;
      ctx.cancel = &t.cancel;
      ctx.pause = &t.pause;
      ctx.cpu_threads = t.cpu_threads;
      ctx.memory_limit_bytes = t.memory_limit_bytes;
      ctx.backend = t.backend;
      ctx.device_index = t.device_index;
      ctx.blob_path = [&t](std::string_view hex) -> Result<std::string> {
        auto hash = HashFromHex(hex);
        if (!hash.ok()) return hash.status();
        return t.cache->Path(*hash);
      };
      ctx.progress = [&t](double f) { t.progress = static_cast<float>(f); };
      auto r = kind->Run(t.params, ctx);
      if (!r.ok() && ctx.backend != "cpu" && DeviceFailure(r.status().code())) {
        // A lost device, out of device memory, a driver that stopped
        // answering: the CPU gives the same answer, only slower.
        spdlog::warn("attempt {} failed on {}: {}; running it on the CPU",
                     t.attempt_id, ctx.backend, r.status().ToString());
        ctx.backend = "cpu";
        ctx.device_index = 0;
        r = kind->Run(t.params, ctx);
      }
      t.backend = ctx.backend;  // the device the result names
      t.device_index = ctx.device_index;
      t.ok = r.ok();
      if (r.ok()) {
        t.output = std::move(*r);
      } else {
        t.error = r.status().ToString();
      }
    }
    t.finished_ms = SystemClock::Get()->NowMs();
  }

  zmq::context_t* ctx_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Task>> queue_;
  std::deque<std::shared_ptr<Task>> done_;
  size_t running_ = 0;
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

zmq::socket_t MakeDealer(zmq::context_t& ctx, const CoordinatorPin& pin,
                         const IdentityKeys& keys) {
  zmq::socket_t s(ctx, zmq::socket_type::dealer);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::curve_serverkey,
        zmq::const_buffer(pin.curve_pk.data(), pin.curve_pk.size()));
  s.set(zmq::sockopt::curve_publickey,
        zmq::const_buffer(keys.curve.public_key().data(), 32));
  std::string sk = keys.curve.secret_key();
  s.set(zmq::sockopt::curve_secretkey, zmq::const_buffer(sk.data(), sk.size()));
  s.set(zmq::sockopt::maxmsgsize, int64_t(MaxCoordinatorFrameBytes(WireLimits{})));
  s.connect(pin.endpoint);
  return s;
}

}  // namespace

class WorkerDaemon::Impl {
 public:
  WorkerOptions opts;
  WorkerPaths paths;
  IdentityKeys keys;
  CoordinatorPin pin;
  std::unique_ptr<ResultSpool> spool;
  std::unique_ptr<BlobCache> cache;
  std::unique_ptr<SeenAttempts> seen;
  std::vector<WorkerDevice> devices;
  int64_t free_memory_read_ms = 0;  // monotonic; 0 = never
  zmq::context_t ctx{1};
  std::unique_ptr<zmq::socket_t> sock;
  std::unique_ptr<BlobFetcher> fetcher;
  std::unique_ptr<OutputUploader> uploader;
  // From the last WELCOME: outputs up to this size may travel as blobs
  // (0: inline only, an older coordinator).
  uint64_t max_output_blob_bytes = 0;
  std::map<uint64_t, std::shared_ptr<Task>> tasks;          // accepted, not done
  std::vector<std::shared_ptr<Task>> waiting_for_blobs;
  WorkerCounters* counters = nullptr;
  std::string backend_name = "cpu";  // what shards run on when they fit
  // devices[preferred_device] is backend_name's device: shards run there
  // unless they need a backend or memory it lacks (ChooseShardDevice).
  size_t preferred_device = 0;
  const Clock* clock = SystemClock::Get();
  int64_t last_send_ms = 0, last_recv_ms = 0;
  bool welcomed = false;
  // A WELCOME asked for our HELLO again (Welcome.hello_wanted); the next
  // WELCOME is the coordinator's answer to it.
  bool resynchronising = false;
  uint64_t assigns_received = 0;  // on this connection, reported in READY
  bool ready_due = false;         // send READY once the socket is drained
  // GOING_AWAY heard: reconnect after this many ms (-1: not asked).
  int64_t going_away_reconnect_ms = -1;
  // Since the last GOING_AWAY until the next WELCOME: its silence is expected.
  bool coordinator_away = false;
  bool version_refusal_logged = false;  // on this connection
  // The idle policy's last answer: paused since (wall ms), and why.
  bool paused = false;
  std::string paused_reason;
  int64_t paused_since_ms = 0;
  int64_t next_idle_check_ms = 0;  // monotonic
  // For status.json: today's work (local date) and when it was last written.
  std::string today;
  uint64_t shards_today = 0;
  int64_t busy_ms_today = 0;
  int64_t status_written_ms = -1;  // monotonic

  Impl(const WorkerOptions& o, IdentityKeys k)
      : opts(o), paths(o.data_dir), keys(std::move(k)) {}

  Status Run(std::atomic<bool>* stop, WorkerCounters* c);

 private:
  void Send(wire::WorkerFrame f);
  void Connect();
  void SayHello();
  void SendReady();
  // A device's memory (total or free) as lent to the farm: GPUs' at most
  // --max-gpu-memory.
  uint64_t LentBytes(const WorkerDevice& d, uint64_t bytes) const {
    return pcfarm::LentBytes(d, bytes, opts.worker_max_gpu_memory_bytes);
  }
  // Renews devices' free_bytes when forced or when the last reading is
  // over 2 s old; true when it did.
  bool RefreshFreeMemoryIfDue(bool force);
  void SendSpooled();
  // Whether `t`'s output goes as a blob (ResultBody.output_blob).
  bool OutputAsBlob(const Task& t) const;
  // Starts the upload of a spooled result's output; false when the spool
  // no longer holds it intact (the entry is then dropped).
  bool UploadSpooledOutput(uint64_t attempt, const std::string& hash);
  // Sends the spooled RESULT of `attempt` (its output is uploaded).
  void SendSpooledResult(uint64_t attempt);
  void OnFrame(const wire::CoordinatorFrame& f, Executor& exec);
  // A frame of another protocol version (a refusal of ours, most likely).
  void OnOtherVersion(std::string_view bytes);
  // After RequestStop: cancel, BYE, wait up to worker_stop_grace_ms.
  Status Stop(std::unique_ptr<Executor> exec);
  void OnAssign(const wire::SignedEnvelope& env, Executor& exec);
  void StartIfReady(Executor& exec);
  void Finish(Task& t);
  void SendHeartbeat(const std::vector<uint64_t>& released = {});
  // Evaluates the idle policy; pauses or resumes the shards.
  void CheckIdle();
  // While paused: hands back shards paused too long or near their deadline.
  void ReleaseLongPaused();
  // Hands `released` (marked released and cancelled) back to the
  // coordinator in a heartbeat; the ones not started yet are forgotten.
  void HandBack(const std::vector<uint64_t>& released);
  // Fails (a signed failed RESULT naming the blob) the shards waiting for
  // a blob the fetcher gave up.
  void FailBlobless();
  // status.json for `pcfarm-worker status`; `force`: now (a state change,
  // a finished shard), else at most every 10 s.
  void WriteStatus(bool force);
};

Result<std::unique_ptr<WorkerDaemon>> WorkerDaemon::Open(
    const WorkerOptions& options) {
  CryptoInit();
  if (options.worker_slots < 1 || options.worker_slots > 64) {
    return InvalidArgument("--slots must be 1..64");
  }
  if (options.worker_heartbeat_interval_ms < 10) {
    return InvalidArgument("heartbeat interval must be at least 10 ms");
  }
  WorkerPaths paths(options.data_dir);
  PCFARM_ASSIGN_OR_RETURN(CoordinatorPin pin,
                          LoadCoordinatorPin(paths.coordinator_file));
  PCFARM_ASSIGN_OR_RETURN(IdentityKeys keys, LoadKeyFile(paths.key_file));
  auto impl = std::make_unique<Impl>(options, std::move(keys));
  impl->pin = pin;
  PCFARM_ASSIGN_OR_RETURN(impl->spool, ResultSpool::Open(paths.spool_dir));
  PCFARM_ASSIGN_OR_RETURN(
      impl->cache, BlobCache::Open(paths.blob_dir, options.worker_blob_cache_bytes));
  impl->seen = SeenAttempts::Open(paths.seen_file);
  PCFARM_ASSIGN_OR_RETURN(impl->devices, DiscoverDevices());
  if (options.worker_backend == "auto") {
    // The best-scoring backend that starts here (lavapipe scores below the
    // CPU, so it is never picked by accident).
    BackendOptions bo;
    bo.device_index = options.worker_device_index;
    auto best = CreateBestBackend(bo);
    if (best.ok()) impl->backend_name = (*best)->name();
  } else {
    BackendOptions bo;
    bo.device_index = options.worker_device_index;
    auto chosen = CreateBackend(options.worker_backend, bo);
    if (chosen.ok()) {
      impl->backend_name = options.worker_backend;
    } else if (chosen.status().code() == StatusCode::kNotFound ||
               chosen.status().code() == StatusCode::kInvalidArgument) {
      return chosen.status().WithContext("--backend " + options.worker_backend);
    } else {
      spdlog::warn("--backend {} device {} cannot start ({}); shards run on the CPU",
                   options.worker_backend, options.worker_device_index,
                   chosen.status().ToString());
    }
  }
  // Declared in HELLO: the devices shards may run on.
  impl->devices = DevicesForShards(impl->devices, options.worker_backend == "auto",
                                   impl->backend_name, options.worker_device_index);
  for (size_t i = 0; i < impl->devices.size(); ++i) {
    const WorkerDevice& d = impl->devices[i];
    if (d.backend == impl->backend_name &&
        (d.backend == "cpu" || d.index == options.worker_device_index)) {
      impl->preferred_device = i;
      break;
    }
  }
  spdlog::info("shards run on the {} backend{}", impl->backend_name,
               impl->devices.size() > 1 ? ", or another device when they do not fit it" : "");
  return std::unique_ptr<WorkerDaemon>(new WorkerDaemon(std::move(impl)));
}

WorkerDaemon::WorkerDaemon(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WorkerDaemon::~WorkerDaemon() = default;
Status WorkerDaemon::Run() { return impl_->Run(&stop_, &counters_); }

void WorkerDaemon::Impl::Send(wire::WorkerFrame f) {
  if (!sock) return;
  f.set_version(kProtocolVersion);
  std::string bytes = f.SerializeAsString();
  try {
    sock->send(zmq::buffer(bytes), zmq::send_flags::dontwait);
    last_send_ms = clock->MonotonicMs();
  } catch (const zmq::error_t& e) {
    spdlog::warn("send failed: {}", e.what());
  }
}

void WorkerDaemon::Impl::Connect() {
  sock = std::make_unique<zmq::socket_t>(MakeDealer(ctx, pin, keys));
  welcomed = false;
  resynchronising = false;
  version_refusal_logged = false;
  assigns_received = 0;
  last_recv_ms = clock->MonotonicMs();
  fetcher->Reset();
  SayHello();
}

void WorkerDaemon::Impl::SayHello() {
  wire::WorkerFrame f;
  auto* h = f.mutable_hello();
  h->set_software_version("pcfarm-worker 0.1");
  h->set_slots(static_cast<uint32_t>(opts.worker_slots));
  for (const auto& [id, t] : tasks) {
    if (!t->released) h->add_running_attempts(id);
  }
  RefreshFreeMemoryIfDue(/*force=*/true);
  for (const auto& d : devices) {
    auto* o = h->add_devices();
    o->set_index(d.index);
    o->set_backend(d.backend);
    o->set_name(d.name);
    o->set_memory_bytes(LentBytes(d, d.memory_bytes));
    o->set_free_bytes(LentBytes(d, d.free_bytes));
    o->set_cores(d.cores);
    o->set_gflops(d.gflops);
    o->set_fp16(d.fp16);
  }
  for (const auto& hash : cache->List()) h->add_cached_blobs(HashToBytes(hash));
  auto spooled = spool->List();
  if (spooled.ok()) {
    for (const auto& e : *spooled) h->add_spooled_attempts(e.attempt_id);
  }
  Send(std::move(f));
}

void WorkerDaemon::Impl::SendSpooled() {
  auto entries = spool->List();
  if (!entries.ok()) {
    spdlog::error("cannot read the spool: {}", entries.status().ToString());
    return;
  }
  for (const auto& e : *entries) {
    auto bytes = spool->Get(e.attempt_id);
    if (!bytes.ok()) continue;
    wire::WorkerFrame f;
    wire::ResultBody body;
    if (!f.mutable_result()->ParseFromString(*bytes) ||
        !body.ParseFromString(f.result().body())) {
      spdlog::warn("spooled result {} is unreadable; dropped", e.attempt_id);
      spool->Remove(e.attempt_id).IgnoreError();
      continue;
    }
    if (!body.output_blob().empty()) {
      // Its RESULT goes once the coordinator holds the output.
      UploadSpooledOutput(e.attempt_id, body.output_blob());
      continue;
    }
    Send(std::move(f));
  }
}

bool WorkerDaemon::Impl::OutputAsBlob(const Task& t) const {
  if (!t.ok || max_output_blob_bytes == 0 || t.output.empty() ||
      t.output.size() > max_output_blob_bytes) {
    return false;
  }
  return t.kind == "train" || t.output.size() > kInlineOutputBytes;
}

bool WorkerDaemon::Impl::UploadSpooledOutput(uint64_t attempt, const std::string& hash) {
  if (uploader->Has(attempt)) return true;
  auto output = spool->GetOutput(attempt);
  if (!output.ok() || HashToBytes(Blake2b256(*output)) != hash) {
    spdlog::warn("the output of spooled result {} is {}; dropped", attempt,
                 output.ok() ? "damaged" : output.status().ToString());
    spool->Remove(attempt).IgnoreError();
    return false;
  }
  uploader->Start(attempt, hash, std::make_shared<const std::string>(std::move(*output)),
                  clock->MonotonicMs());
  return true;
}

void WorkerDaemon::Impl::SendSpooledResult(uint64_t attempt) {
  auto bytes = spool->Get(attempt);
  if (!bytes.ok()) return;  // ACKed or refused meanwhile
  wire::WorkerFrame f;
  if (!f.mutable_result()->ParseFromString(*bytes)) {
    spool->Remove(attempt).IgnoreError();
    return;
  }
  Send(std::move(f));
}

void WorkerDaemon::Impl::SendReady() {
  int busy = static_cast<int>(tasks.size());
  wire::WorkerFrame f;
  f.mutable_ready()->set_free_slots(
      paused ? 0u : static_cast<uint32_t>(std::max(0, opts.worker_slots - busy)));
  f.mutable_ready()->set_assigns_received(assigns_received);
  f.mutable_ready()->set_slots(static_cast<uint32_t>(opts.worker_slots));
  if (RefreshFreeMemoryIfDue(/*force=*/false)) {
    for (const auto& d : devices)
      f.mutable_ready()->add_device_free_bytes(LentBytes(d, d.free_bytes));
  }
  Send(std::move(f));
  ready_due = false;
}

bool WorkerDaemon::Impl::RefreshFreeMemoryIfDue(bool force) {
  // Two small reads for the CPU, a driver query per GPU backend: spaced so
  // that a stream of quick shards does not repeat them for every READY.
  constexpr int64_t kFreeMemoryRefreshMs = 2000;
  const int64_t now = clock->MonotonicMs();
  if (!force && free_memory_read_ms != 0 && now - free_memory_read_ms < kFreeMemoryRefreshMs)
    return false;
  RefreshFreeMemory(&devices);
  free_memory_read_ms = now;
  return true;
}

void WorkerDaemon::Impl::OnAssign(const wire::SignedEnvelope& env,
                                  Executor& exec) {
  auto refuse = [&](const std::string& why) {
    counters->shards_refused++;
    spdlog::warn("shard refused: {}", why);
  };
  auto body = OpenShard(env, pin.sign_pk);
  if (!body.ok()) {
    refuse("bad coordinator signature: " + body.status().message());
    return;
  }
  if (!ConstantTimeEqual(body->worker_sign_pk(), keys.sign.public_key())) {
    refuse("attempt " + std::to_string(body->attempt_id()) +
           " was assigned to another worker");
    return;
  }
  int64_t now = clock->NowMs();
  if (body->deadline_ms() <= now) {
    refuse("attempt " + std::to_string(body->attempt_id()) + " is past its deadline");
    return;
  }
  auto fresh = seen->Insert(body->attempt_id(), body->deadline_ms(), now);
  if (!fresh.ok()) {
    refuse("cannot record the attempt: " + fresh.status().message());
    return;
  }
  if (!*fresh) {
    refuse("attempt " + std::to_string(body->attempt_id()) + " is a replay");
    return;
  }
  auto t = std::make_shared<Task>();
  t->attempt_id = body->attempt_id();
  t->shard_id = body->shard_id();
  t->body_hash = HashToBytes(EnvelopeBodyHash(env));
  t->kind = body->kind();
  t->params = body->params();
  t->cache = cache.get();
  t->backend = backend_name;
  t->device_index = opts.worker_device_index;
  if (!devices.empty()) {
    // The coordinator leased it because one declared device holds it.
    const size_t d = ChooseShardDevice(devices, preferred_device, body->needs_backend(),
                                       body->needs_memory_bytes(),
                                       opts.worker_max_gpu_memory_bytes);
    t->backend = devices[d].backend;
    t->device_index = devices[d].index;
  }
  t->deadline_ms = body->deadline_ms();
  t->cpu_threads = opts.worker_cpu_threads;
  t->memory_limit_bytes = opts.worker_max_gpu_memory_bytes;
  t->pause = paused;  // arrived as the owner came back: it waits too
  for (const auto& h : body->blob_hashes()) {
    auto hash = HashFromBytes(h);
    if (!hash.ok()) {
      refuse("a blob hash in the shard is malformed");
      return;
    }
    t->blobs.push_back(*hash);
    fetcher->Want(*hash);
  }
  spdlog::info("attempt {} accepted: {} shard {} of job {}, on {}:{}", t->attempt_id,
               t->kind, body->shard_index(), body->job_id(), t->backend, t->device_index);
  tasks[t->attempt_id] = t;
  waiting_for_blobs.push_back(t);
  StartIfReady(exec);
}

void WorkerDaemon::Impl::StartIfReady(Executor& exec) {
  for (auto it = waiting_for_blobs.begin(); it != waiting_for_blobs.end();) {
    bool ready = true;
    for (const auto& h : (*it)->blobs) ready = ready && cache->Has(h);
    if (ready) {
      for (const auto& h : (*it)->blobs) cache->Pin(h).IgnoreError();
      (*it)->pinned = true;
      exec.Submit(*it);
      it = waiting_for_blobs.erase(it);
    } else {
      ++it;
    }
  }
}

void WorkerDaemon::Impl::Finish(Task& t) {
  if (t.pinned)
    for (const auto& h : t.blobs) cache->Unpin(h);
  tasks.erase(t.attempt_id);
  if (t.cancel) {
    spdlog::info("attempt {} cancelled", t.attempt_id);
    // Its slot is free now. The READY the CANCEL prompted went out while it
    // still ran (free_slots 0): without this one the coordinator would
    // never offer this worker work again.
    ready_due = true;
    return;
  }
  if (t.unfetched_blob.empty()) {  // it ran
    counters->shards_run++;
    shards_today++;
    busy_ms_today += t.finished_ms - t.started_ms;
    WriteStatus(true);
  }
  wire::ResultBody r;
  r.set_attempt_id(t.attempt_id);
  r.set_shard_id(t.shard_id);
  r.set_shard_body_hash(t.body_hash);
  r.set_ok(t.ok);
  const bool as_blob = OutputAsBlob(t);
  std::string output_hash;
  if (as_blob) {
    // The output goes to the blob store first, then the RESULT naming it.
    output_hash = HashToBytes(Blake2b256(t.output));
    r.set_output_blob(output_hash);
    r.set_output_size(t.output.size());
    Status s = spool->PutOutput(t.attempt_id, t.output);
    if (!s.ok()) spdlog::error("cannot spool the output of {}: {}", t.attempt_id, s.ToString());
  } else {
    r.set_output(t.output);
  }
  r.set_error(t.error);
  r.set_unfetched_blob(t.unfetched_blob);
  r.set_started_ms(t.started_ms);
  r.set_finished_ms(t.finished_ms);
  r.set_device(t.backend + ":" + std::to_string(t.device_index));
  wire::WorkerFrame f;
  *f.mutable_result() = SealEnvelope(keys.sign, r.SerializeAsString());
  // Durable before it leaves: a crash from here on still delivers it.
  Status s = spool->Put(t.attempt_id, f.result().SerializeAsString());
  if (!s.ok()) spdlog::error("cannot spool result {}: {}", t.attempt_id, s.ToString());
  spdlog::info("attempt {} done in {} ms{}", t.attempt_id,
               t.finished_ms - t.started_ms, t.ok ? "" : (": " + t.error));
  if (as_blob) {
    uploader->Start(t.attempt_id, output_hash,
                    std::make_shared<const std::string>(std::move(t.output)),
                    clock->MonotonicMs());
    return;
  }
  Send(std::move(f));
}

void WorkerDaemon::Impl::OnFrame(const wire::CoordinatorFrame& f,
                                 Executor& exec) {
  switch (f.msg_case()) {
    case wire::CoordinatorFrame::kWelcome:
      if (f.welcome().hello_wanted()) {
        // The coordinator took this connection up without our HELLO (it
        // restarted underneath it): it sends no shard until a HELLO has
        // told it what we run and hold spooled; its answer is the WELCOME
        // that resynchronises. Until then we count as not welcomed, so the
        // HELLO is sent again if it is lost.
        spdlog::info("the coordinator asked who we are; saying HELLO again");
        welcomed = false;
        resynchronising = true;
        SayHello();
        break;
      }
      // The first WELCOME of a connection, or a coordinator that restarted
      // underneath the same connection: either way it knows nothing of our
      // spool, our transfers or our free slots.
      if (coordinator_away) {
        spdlog::info("the coordinator is back; connected to {} as worker {}",
                     pin.endpoint, f.welcome().worker_id());
      } else if (!welcomed && !resynchronising) {
        spdlog::info("connected to {} as worker {}", pin.endpoint,
                     f.welcome().worker_id());
      } else {
        spdlog::info("the coordinator asked to resynchronise");
        fetcher->Reset();
      }
      welcomed = true;
      resynchronising = false;
      coordinator_away = false;
      max_output_blob_bytes = f.welcome().max_output_blob_bytes();
      uploader->SetChunkBytes(f.welcome().output_chunk_bytes());
      uploader->Reset();  // SendSpooled begins them again
      SendSpooled();
      fetcher->Restart();
      ready_due = true;
      break;
    case wire::CoordinatorFrame::kAssign:
      assigns_received++;
      OnAssign(f.assign().shard(), exec);
      break;
    case wire::CoordinatorFrame::kCancel: {
      auto it = tasks.find(f.cancel().attempt_id());
      if (it == tasks.end()) break;
      it->second->cancel = true;
      // Not started yet (waiting for blobs): it will never reach Finish().
      auto w = std::find(waiting_for_blobs.begin(), waiting_for_blobs.end(), it->second);
      if (w != waiting_for_blobs.end()) {
        waiting_for_blobs.erase(w);
        tasks.erase(it);
      }
      ready_due = true;
      break;
    }
    case wire::CoordinatorFrame::kAck:
      spool->Remove(f.ack().attempt_id()).IgnoreError();
      counters->results_acked++;
      ready_due = true;
      break;
    case wire::CoordinatorFrame::kBlobChunk: {
      auto done = fetcher->OnChunk(f.blob_chunk());
      if (!done.ok()) {
        spdlog::warn("blob transfer failed: {}", done.status().ToString());
        FailBlobless();
      } else if (done->has_value()) {
        StartIfReady(exec);
      }
      counters->blob_bytes_received = fetcher->bytes_received();
      break;
    }
    case wire::CoordinatorFrame::kOutputReply: {
      auto r = uploader->OnReply(f.output_reply(), clock->MonotonicMs());
      counters->output_bytes_sent = uploader->bytes_sent();
      if (r.kind == OutputUploader::Reply::kComplete) {
        SendSpooledResult(r.attempt);
      } else if (r.kind == OutputUploader::Reply::kUploadAgain) {
        UploadSpooledOutput(r.attempt, f.output_reply().hash());
      } else if (r.kind == OutputUploader::Reply::kRefused) {
        spdlog::warn("the coordinator refused the output of attempt {} for now: {}; "
                     "trying again in {} s",
                     r.attempt, EscapePeerText(r.error), kOutputRetryMs / 1000);
      }
      break;
    }
    case wire::CoordinatorFrame::kHeartbeat:
      break;
    case wire::CoordinatorFrame::kLeaseRenewal: {
      // Shards still running keep their lease: what a long pause hands
      // back before its end (ReleaseLongPaused) goes by the new deadline.
      const auto& r = f.lease_renewal();
      for (uint64_t id : r.attempt_ids()) {
        auto it = tasks.find(id);
        if (it == tasks.end() || r.deadline_ms() <= it->second->deadline_ms) continue;
        it->second->deadline_ms = r.deadline_ms();
        counters->leases_renewed++;
      }
      break;
    }
    case wire::CoordinatorFrame::kGoingAway:
      // Not lost: it is restarting. The loop reconnects after the pause.
      counters->coordinator_going_away++;
      going_away_reconnect_ms = f.going_away().reconnect_after_ms();
      spdlog::info("the coordinator is going away ({}); {} shards keep running; "
                   "reconnecting in {} ms",
                   EscapePeerText(f.going_away().reason()), tasks.size(),
                   going_away_reconnect_ms);
      break;
    case wire::CoordinatorFrame::kReject: {
      const auto& r = f.reject();
      spdlog::warn("coordinator refused: {} ({})",
                   wire::RejectReason_Name(r.reason()), r.detail());
      if (r.reason() == wire::REJECT_NOT_ENROLLED || r.reason() == wire::REJECT_BANNED) {
        break;
      }
      if (r.reason() == wire::REJECT_NOT_FOUND && !r.blob_hash().empty()) {
        if (auto h = HashFromBytes(r.blob_hash()); h.ok()) {
          fetcher->OnMissing(*h, "the coordinator does not hold it (" +
                                     EscapePeerText(r.detail(), 200) + ")");
          FailBlobless();
        }
        break;
      }
      // A result the coordinator will never take (already answered, late,
      // cancelled): keeping it would only resend it forever.
      if (r.attempt_id() != 0) {
        spool->Remove(r.attempt_id()).IgnoreError();
        uploader->Drop(r.attempt_id(), clock->MonotonicMs());
        ready_due = true;
      }
      break;
    }
    default:
      break;
  }
}

Status WorkerDaemon::Impl::Run(std::atomic<bool>* stop, WorkerCounters* c) {
  counters = c;
  zmq::socket_t wake(ctx, zmq::socket_type::pull);
  wake.bind(kWakeEndpoint);
  fetcher = std::make_unique<BlobFetcher>(
      cache.get(), [this](wire::WorkerFrame f) { Send(std::move(f)); },
      opts.worker_blob_credit, opts.worker_blob_chunk_bytes);
  uploader = std::make_unique<OutputUploader>(
      [this](wire::WorkerFrame f) { Send(std::move(f)); }, kOutputWindow, kOutputRetryMs);
  auto exec_owned = std::make_unique<Executor>(&ctx, opts.worker_slots);
  Executor& exec = *exec_owned;
  std::mt19937 rng(std::random_device{}());
  int backoff_ms = opts.worker_reconnect_initial_ms;
  int64_t reconnect_at = -1;
  // Know whether the PC is idle before the first READY: a worker started
  // (or restarted) while its owner works must not offer a slot.
  if (opts.idle_policy) {
    CheckIdle();
    next_idle_check_ms = clock->MonotonicMs() + opts.idle_policy->check_interval_ms();
  }
  Connect();
  WriteStatus(true);
  NotifyServiceReady();
  int64_t silence_limit =
      int64_t(opts.worker_heartbeat_interval_ms) * opts.worker_heartbeat_liveness;
  try {
    while (!stop->load()) {
      int64_t now = clock->MonotonicMs();
      if (!sock && now >= reconnect_at) {
        counters->reconnects++;
        Connect();
      }
      zmq::pollitem_t items[2] = {{wake.handle(), 0, ZMQ_POLLIN, 0},
                                  {sock ? sock->handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, sock ? 2 : 1, std::chrono::milliseconds(50));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;  // a signal: look at `stop` again
      }
      if (items[0].revents & ZMQ_POLLIN) {
        zmq::message_t m;
        while (wake.recv(m, zmq::recv_flags::dontwait)) {
        }
      }
      for (auto& t : exec.TakeDone()) Finish(*t);
      if (sock && (items[1].revents & ZMQ_POLLIN)) {
        zmq::message_t m;
        while (sock && sock->recv(m, zmq::recv_flags::dontwait)) {
          last_recv_ms = clock->MonotonicMs();
          auto f = DecodeCoordinatorFrame(m.to_string_view());
          if (!f.ok() && f.error() == WireError::kWrongVersion) {
            OnOtherVersion(m.to_string_view());
            continue;
          }
          if (!f.ok()) {
            spdlog::warn("bad message from the coordinator: {}", f.status().message());
            continue;
          }
          backoff_ms = opts.worker_reconnect_initial_ms;
          OnFrame(*f, exec);
        }
        // One READY for everything that arrived together, counted after
        // every ASSIGN among it.
        if (ready_due) SendReady();
      }
      now = clock->MonotonicMs();
      if (going_away_reconnect_ms >= 0) {
        // The coordinator stopped on purpose: come back when it said, then
        // back off as usual; what runs keeps running, results are spooled.
        int64_t pause = going_away_reconnect_ms;
        going_away_reconnect_ms = -1;
        coordinator_away = true;
        int jitter = std::uniform_int_distribution<int>(
            0, std::max<int>(1, int(pause / 4)))(rng);
        sock.reset();
        fetcher->Reset();
        reconnect_at = now + pause + jitter;
        backoff_ms = opts.worker_reconnect_initial_ms;
        continue;
      }
      if (sock && now - last_recv_ms > silence_limit) {
        // Paranoid Pirate: the coordinator is gone; drop the socket and
        // come back after a backoff that doubles up to a cap, with jitter.
        int jitter = std::uniform_int_distribution<int>(-backoff_ms / 4, backoff_ms / 4)(rng);
        if (coordinator_away) {
          spdlog::info("the coordinator is not back yet; reconnecting in {} ms",
                       backoff_ms + jitter);
        } else {
          spdlog::warn("coordinator silent for {} ms; reconnecting in {} ms",
                       now - last_recv_ms, backoff_ms + jitter);
        }
        sock.reset();
        fetcher->Reset();
        reconnect_at = now + backoff_ms + jitter;
        backoff_ms = std::min(backoff_ms * 2, opts.worker_reconnect_max_ms);
        continue;
      }
      if (opts.idle_policy && now >= next_idle_check_ms) {
        next_idle_check_ms = now + opts.idle_policy->check_interval_ms();
        CheckIdle();
      }
      uploader->Tick(now);
      if (sock && welcomed) {
        auto stalled = fetcher->Tick(now);
        for (const auto& why : stalled) spdlog::warn("blob transfer stalled: {}", why.ToString());
        if (!stalled.empty()) FailBlobless();
      }
      WriteStatus(false);
      NotifyServiceWatchdog();
      if (sock && now - last_send_ms >= opts.worker_heartbeat_interval_ms) {
        if (!welcomed) {
          SayHello();  // the HELLO may have been lost with a dead coordinator
        } else {
          SendHeartbeat();
        }
      }
    }
  } catch (const zmq::error_t& e) {
    return Internal(std::string("worker loop: ") + e.what());
  }
  return Stop(std::move(exec_owned));
}

Status WorkerDaemon::Impl::Stop(std::unique_ptr<Executor> exec) {
  NotifyServiceStopping();
  // Release, not finish: cancel what runs and say BYE, so the coordinator
  // leases those shards again at once.
  size_t running = tasks.size();
  for (auto& [id, t] : tasks) t->cancel = true;
  if (sock) {
    wire::WorkerFrame f;
    f.mutable_bye()->set_reason("worker stopping; " + std::to_string(running) +
                                " shards released");
    Send(std::move(f));
    sock->set(zmq::sockopt::linger, 500);
  }
  sock.reset();
  spdlog::info("stopping: {} running shards released", running);
  int64_t until = clock->MonotonicMs() + opts.worker_stop_grace_ms;
  while (exec->busy() > 0 && clock->MonotonicMs() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  for (auto& t : exec->TakeDone()) {
    if (t->pinned)
      for (const auto& h : t->blobs) cache->Unpin(h);
  }
  if (size_t left = exec->busy(); left > 0) {
    // Its thread may still use this daemon: leave the executor to the
    // process's exit rather than join it.
    exec.release();
    return Timeout(std::to_string(left) + " cancelled shards did not return within " +
                   std::to_string(opts.worker_stop_grace_ms) + " ms");
  }
  return Status::Ok();
}

void WorkerDaemon::Impl::SendHeartbeat(const std::vector<uint64_t>& released) {
  wire::WorkerFrame f;
  auto* hb = f.mutable_heartbeat();
  for (const auto& [id, t] : tasks) {
    if (t->released) continue;
    auto* p = hb->add_running();
    p->set_attempt_id(id);
    p->set_fraction(t->progress);
  }
  hb->set_paused(paused);
  if (paused) hb->set_paused_reason(paused_reason);
  for (uint64_t id : released) hb->add_released_attempts(id);
  // Done, output on its way: the lease must outlast a slow upload.
  for (uint64_t id : uploader->Attempts()) hb->add_uploading(id);
  Send(std::move(f));
}

void WorkerDaemon::Impl::CheckIdle() {
  IdleVerdict v = opts.idle_policy->Evaluate(clock->NowMs());
  if (!v.may_run) {
    paused_reason = v.reason;
    if (!paused) {
      paused = true;
      paused_since_ms = clock->NowMs();
      for (auto& [id, t] : tasks) t->pause = true;
      if (!tasks.empty()) counters->pauses++;
      spdlog::info("pausing {} shards: {}", tasks.size(), v.reason);
      NotifyServiceStatus("paused: " + v.reason);
      // Tell the coordinator now, and offer no slots.
      if (sock && welcomed) {
        SendHeartbeat();
        SendReady();
      }
      WriteStatus(true);
    }
    ReleaseLongPaused();
    return;
  }
  if (paused) {
    paused = false;
    paused_reason.clear();
    for (auto& [id, t] : tasks) t->pause = false;
    spdlog::info("the PC is idle again; {} shards resume", tasks.size());
    NotifyServiceStatus("running");
    if (sock && welcomed) {
      SendHeartbeat();
      SendReady();
    }
    WriteStatus(true);
  }
}

void WorkerDaemon::Impl::ReleaseLongPaused() {
  int64_t now = clock->NowMs();
  // The hand-back must reach the coordinator before the lease ends.
  int64_t margin_ms = std::max<int64_t>(2000, 2 * int64_t(opts.worker_heartbeat_interval_ms));
  bool too_long = now - paused_since_ms >= opts.idle_policy->max_pause_ms();
  std::vector<uint64_t> released;
  for (auto& [id, t] : tasks) {
    if (t->released || t->cancel) continue;
    if (!too_long && t->deadline_ms - now > margin_ms) continue;
    t->released = true;
    t->cancel = true;
    released.push_back(id);
  }
  if (released.empty()) return;
  spdlog::info("handing back {} paused shards ({}): {}", released.size(),
               too_long ? "paused longer than max_pause_s" : "their lease ends soon",
               paused_reason);
  HandBack(released);
}

void WorkerDaemon::Impl::HandBack(const std::vector<uint64_t>& released) {
  // Not started yet (waiting for blobs): it will never reach Finish().
  for (uint64_t id : released) {
    auto t = tasks[id];
    auto w = std::find(waiting_for_blobs.begin(), waiting_for_blobs.end(), t);
    if (w != waiting_for_blobs.end()) {
      waiting_for_blobs.erase(w);
      tasks.erase(id);
    }
  }
  counters->attempts_released += released.size();
  if (sock && welcomed) SendHeartbeat(released);
  WriteStatus(true);
}

void WorkerDaemon::Impl::FailBlobless() {
  std::vector<BlobFetcher::Failure> failed = fetcher->TakeFailed();
  if (failed.empty()) return;
  // A shard waiting for a blob given up fails, naming it: the coordinator
  // keeps this worker off that shard (a hand-back would not: the same
  // worker would take it again at once and fail the same way) and re-hashes
  // its copy of the blob.
  std::vector<std::shared_ptr<Task>> fail;
  for (auto it = waiting_for_blobs.begin(); it != waiting_for_blobs.end();) {
    const auto& t = *it;
    auto f = std::find_if(failed.begin(), failed.end(), [&](const BlobFetcher::Failure& x) {
      return std::find(t->blobs.begin(), t->blobs.end(), x.hash) != t->blobs.end();
    });
    if (f == failed.end() || t->released || t->cancel) {
      ++it;
      continue;
    }
    t->unfetched_blob = HashToBytes(f->hash);
    t->error = "cannot fetch blob " + HashToHex(f->hash) + " from the coordinator: " + f->why;
    fail.push_back(t);
    it = waiting_for_blobs.erase(it);
  }
  if (fail.empty()) return;
  spdlog::warn("{} shards fail: {}", fail.size(), fail.front()->error);
  for (auto& t : fail) {
    t->ok = false;
    t->started_ms = t->finished_ms = clock->NowMs();
    Finish(*t);
  }
  ready_due = true;  // their slots are free
}

void WorkerDaemon::Impl::WriteStatus(bool force) {
  int64_t mono = clock->MonotonicMs();
  // Unforced, every 10 s: `status` counts a file older than 30 s as a
  // stopped worker, and a laptop's disk should not be woken more often.
  if (!force && status_written_ms >= 0 && mono - status_written_ms < 10'000) return;
  status_written_ms = mono;
  time_t now_s = time(nullptr);
  struct tm tm {};
  localtime_r(&now_s, &tm);
  char day[16];
  std::strftime(day, sizeof day, "%Y-%m-%d", &tm);
  if (today != day) {
    if (today.empty()) {
      // A restart on the same day keeps counting.
      auto old = ReadFile(paths.status_file, 1 << 20);
      if (old.ok()) {
        auto j = nlohmann::json::parse(*old, nullptr, false);
        if (j.is_object() && j.value("today", "") == day) {
          shards_today = j.value("shards_today", uint64_t(0));
          busy_ms_today = j.value("busy_ms_today", int64_t(0));
        }
      }
    } else {
      shards_today = 0;
      busy_ms_today = 0;
    }
    today = day;
  }
  size_t running = 0;
  for (const auto& [id, t] : tasks) running += t->released ? 0 : 1;
  std::string state = paused ? "paused" : running > 0 ? "running" : "idle-waiting";
  nlohmann::json devs = nlohmann::json::array();
  for (const auto& d : devices) {
    devs.push_back({{"backend", d.backend}, {"index", d.index}, {"name", d.name},
                    {"memory_bytes", d.memory_bytes}, {"free_bytes", d.free_bytes},
                    {"gflops", d.gflops}});
  }
  nlohmann::json j = {{"format", "pcfarm-worker-status-1"},
                      {"pid", getpid()},
                      {"updated_ms", clock->NowMs()},
                      {"state", state},
                      {"paused_reason", paused_reason},
                      {"paused_since_ms", paused ? paused_since_ms : 0},
                      {"connected", welcomed && sock != nullptr},
                      {"coordinator", pin.endpoint},
                      {"worker_id", pin.worker_id},
                      {"name", pin.name},
                      {"backend", backend_name},
                      {"idle_policy", opts.idle_policy ? opts.idle_policy->InputDescription()
                                                       : std::string("off (no config file)")},
                      {"running", running},
                      {"devices", devs},
                      {"today", today},
                      {"shards_today", shards_today},
                      {"busy_ms_today", busy_ms_today}};
  Status s = WriteFileAtomic(paths.status_file, j.dump(), 0600);
  if (!s.ok()) spdlog::warn("cannot write {}: {}", paths.status_file, s.ToString());
}

void WorkerDaemon::Impl::OnOtherVersion(std::string_view bytes) {
  wire::CoordinatorFrame raw;
  raw.ParseFromArray(bytes.data(), static_cast<int>(bytes.size()));
  if (version_refusal_logged) return;
  version_refusal_logged = true;
  // The coordinator's refusal says what to upgrade; any other frame of its
  // version says as much.
  std::string text =
      raw.has_reject() && raw.reject().reason() == wire::REJECT_WRONG_VERSION
          ? EscapePeerText(raw.reject().detail())
          : VersionMismatchText("pcfarm-worker", kProtocolVersion, raw.version(), "");
  spdlog::error("the coordinator at {} refuses this worker: {}; asking again "
                "every {} ms", pin.endpoint, text, opts.worker_heartbeat_interval_ms);
}

// ------------------------------------------------------------------ enroll

Status EnrollWorker(const std::string& token_text, const std::string& data_dir,
                    const std::string& name, int timeout_ms) {
  CryptoInit();
  PCFARM_ASSIGN_OR_RETURN(EnrollmentToken token, DecodeEnrollmentToken(token_text));
  WorkerPaths paths(data_dir);
  if (ReadFile(paths.coordinator_file).ok()) {
    return AlreadyExists(data_dir + " already holds an enrolled worker");
  }
  if (name.empty() || name.size() > 64) {
    return InvalidArgument("--name must be 1..64 characters");
  }
  if (HasControlCharacters(name)) {
    return InvalidArgument(
        "--name must be printable UTF-8 without control characters");
  }
  PCFARM_RETURN_IF_ERROR(MakeDirs(data_dir, 0700));
  // Keys are made here, on this PC, and never leave it. A retry after a
  // failed enrollment reuses them.
  IdentityKeys keys = IdentityKeys::Generate();
  auto existing = LoadKeyFile(paths.key_file);
  if (existing.ok()) {
    keys = *existing;
  } else {
    PCFARM_RETURN_IF_ERROR(SaveKeyFile(paths.key_file, keys));
  }
  CoordinatorPin pin;
  pin.endpoint = token.endpoint;
  pin.sign_pk = token.coordinator_sign_pk;
  pin.curve_pk = token.coordinator_curve_pk;
  pin.name = name;

  zmq::context_t ctx(1);
  zmq::socket_t sock = MakeDealer(ctx, pin, keys);
  wire::WorkerFrame f;
  f.set_version(kProtocolVersion);
  auto* e = f.mutable_enroll();
  e->set_token_secret(Base64UrlEncode(token.secret));
  e->set_name(name);
  e->set_sign_pk(keys.sign.public_key());
  e->set_curve_pk(keys.curve.public_key());
  std::string bytes = f.SerializeAsString();
  sock.send(zmq::buffer(bytes), zmq::send_flags::dontwait);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < deadline) {
    zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(100));
    if (!(item.revents & ZMQ_POLLIN)) continue;
    zmq::message_t m;
    if (!sock.recv(m, zmq::recv_flags::dontwait)) continue;
    auto reply = DecodeCoordinatorFrame(m.to_string_view());
    if (!reply.ok()) continue;
    if (reply->has_reject()) {
      return PermissionDenied("enrollment refused: " + reply->reject().detail());
    }
    if (reply->has_welcome()) {
      if (!ConstantTimeEqual(reply->welcome().coordinator_sign_pk(), pin.sign_pk)) {
        return Unauthenticated(
            "the coordinator's signing key differs from the token's");
      }
      pin.worker_id = static_cast<int64_t>(reply->welcome().worker_id());
      PCFARM_RETURN_IF_ERROR(SaveCoordinatorPin(paths.coordinator_file, pin));
      return Status::Ok();
    }
  }
  return Unavailable("no answer from the coordinator at " + token.endpoint +
                     " within " + std::to_string(timeout_ms / 1000) +
                     " s (is it running and reachable from this PC?)");
}

}  // namespace pcfarm
