#include "tests/integration/stepping.h"
#include "tests/integration/adversary_trial.h"

#include <atomic>
#include <fstream>
#include <iterator>
#include <thread>
#include <utility>

#include "base/clock.h"

namespace pcfarm {

using nlohmann::json;

namespace {

int64_t Mono() { return SystemClock::Get()->MonotonicMs(); }

Status CommandFailed(const CommandResult& r) { return Internal(r.Describe()); }

}  // namespace

std::string WithoutWorkerField(const std::string& jsonl) {
  std::string out;
  size_t pos = 0;
  while (pos < jsonl.size()) {
    size_t end = jsonl.find('\n', pos);
    if (end == std::string::npos) end = jsonl.size();
    json line = json::parse(jsonl.substr(pos, end - pos), nullptr, false);
    if (line.is_object()) {
      line.erase("worker");
      out += line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
    } else if (end > pos) {
      out += "(not JSON) " + jsonl.substr(pos, end - pos) + "\n";
    }
    pos = end + 1;
  }
  return out;
}

InferAdversaryFarm::InferAdversaryFarm(MiniCluster* cluster, zmq::context_t* ctx, SimWorkerOptions honest)
    : cluster_(cluster), ctx_(ctx), honest_options_(std::move(honest)) {
  honest_options_.auto_work = true;
}

InferAdversaryFarm::~InferAdversaryFarm() = default;

template <typename F>
auto InferAdversaryFarm::WhileStepping(F fn) {
  return pcfarm::WhileStepping([this] { (void)StepAll(5); }, fn);
}

Status InferAdversaryFarm::StepAll(int wait_ms) {
  std::vector<SimWorker*> all;
  for (auto& w : honest_) {
    if (w.get() != not_stepped_) all.push_back(w.get());
  }
  for (auto& w : adversary_workers_) all.push_back(w.get());
  if (all.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
    return Status::Ok();
  }
  std::vector<zmq::pollitem_t> items;
  for (SimWorker* w : all) {
    items.push_back({static_cast<void*>(*w->socket()), 0, ZMQ_POLLIN, 0});
  }
  zmq::poll(items.data(), items.size(), std::chrono::milliseconds(wait_ms));
  // Every worker steps (heartbeats fall due whether or not a frame came).
  for (auto& w : honest_) {
    if (w.get() != not_stepped_) PCFARM_RETURN_IF_ERROR(w->Step(0));
  }
  // An adversary's sends fail once it is quarantined and cut off: that is
  // the outcome measured, not an error of the farm.
  for (auto& a : adversaries_) {
    if (a->worker()->Step(0).ok()) (void)a->AnswerPending();
  }
  return Status::Ok();
}

Result<std::unique_ptr<SimWorker>> InferAdversaryFarm::Join(SimWorkerOptions o) {
  return WhileStepping([&]() -> Result<std::unique_ptr<SimWorker>> {
    PCFARM_ASSIGN_OR_RETURN(std::string token, cluster_->CreateToken(1, "1h"));
    PCFARM_ASSIGN_OR_RETURN(auto w, SimWorker::FromToken(ctx_, token, o));
    PCFARM_RETURN_IF_ERROR(w->Enroll(10'000));
    PCFARM_RETURN_IF_ERROR(w->Join(10'000));
    return w;
  });
}

Status InferAdversaryFarm::AddHonest(int n) {
  for (int i = 0; i < n; ++i) {
    SimWorkerOptions o = honest_options_;
    o.name = "honest-" + std::to_string(honest_.size());
    PCFARM_ASSIGN_OR_RETURN(auto w, Join(o));
    honest_.push_back(std::move(w));
  }
  return Status::Ok();
}

Result<InferTrialOutcome> InferAdversaryFarm::RunTrial(const InferTrialSpec& spec) {
  InferTrialOutcome out;
  for (const auto& ao : spec.adversaries) {
    SimWorkerOptions o = honest_options_;
    o.auto_work = false;
    o.name = std::string("cheat-") + InferCheatName(ao.cheat) + "-" + std::to_string(joined_++);
    PCFARM_ASSIGN_OR_RETURN(auto w, Join(o));
    adversaries_.push_back(std::make_unique<InferAdversary>(w.get(), ao));
    adversary_workers_.push_back(std::move(w));
  }

  std::vector<std::string> args = {"submit", "infer"};
  args.insert(args.end(), spec.submit_args.begin(), spec.submit_args.end());
  CommandResult sub = WhileStepping([&] { return cluster_->Cli(args, 30, 300'000); });
  if (sub.exit_code != 0) return CommandFailed(sub);
  out.job = std::stoll(sub.LastLine());
  const std::string job = std::to_string(out.job);

  // Until the job ends, reading its state from the database now and then.
  const int64_t start = Mono(), deadline = start + spec.timeout_ms;
  int64_t next_check = 0;
  out.state = "timeout";
  while (Mono() < deadline) {
    PCFARM_RETURN_IF_ERROR(StepAll(5));
    if (Mono() < next_check) continue;
    next_check = Mono() + 100;
    auto rows = cluster_->db().Query("SELECT state FROM jobs WHERE id=" + job);
    if (!rows.ok()) return rows.status();
    if (rows->empty()) return NotFound("job " + job);
    const std::string& state = rows->at(0).at(0);
    if (state != "queued" && state != "running") {
      out.state = state;
      break;
    }
  }
  out.seconds = double(Mono() - start) / 1000.0;

  if (out.state == "succeeded") {
    const std::string path = cluster_->dir() + "/fetch-" + job + ".jsonl";
    CommandResult f = WhileStepping(
        [&] { return cluster_->Cli({"fetch", job, "--out", path}, 30, 120'000); });
    if (f.exit_code != 0) return CommandFailed(f);
    std::ifstream in(path, std::ios::binary);
    out.output = WithoutWorkerField(std::string(std::istreambuf_iterator<char>(in), {}));
  }
  CommandResult st =
      WhileStepping([&] { return cluster_->Cli({"status", job, "--json"}, 30, 60'000); });
  if (st.exit_code != 0) return CommandFailed(st);
  json status = json::parse(st.LastLine(), nullptr, false);
  if (status.is_object()) out.verification = status.value("verification", json());

  for (auto& a : adversaries_) {
    AdversaryOutcome o;
    o.cheat = a->options().cheat;
    o.results = a->results();
    o.lies = a->lies();
    const std::string id = std::to_string(a->worker()->worker_id());
    auto banned = cluster_->db().QueryInt("SELECT banned FROM workers WHERE id=" + id);
    if (!banned.ok()) return banned.status();
    auto strikes = cluster_->db().QueryInt("SELECT strikes FROM workers WHERE id=" + id);
    if (!strikes.ok()) return strikes.status();
    o.quarantined = *banned != 0;
    o.strikes = *strikes;
    out.adversaries.push_back(o);
  }
  // This trial's adversaries leave; the honest workers stay for the next.
  adversaries_.clear();
  for (auto& w : adversary_workers_) {
    (void)w->SendBye("trial over");
    w->Disconnect();
  }
  adversary_workers_.clear();

  for (auto& w : honest_) {
    const std::string id = std::to_string(w->worker_id());
    auto banned = cluster_->db().QueryInt("SELECT banned FROM workers WHERE id=" + id);
    if (!banned.ok()) return banned.status();
    if (*banned == 0) continue;
    out.honest_quarantined++;
    CommandResult u = WhileStepping(
        [&] { return cluster_->Cli({"workers", "unban", id, "--reason", "honest"}, 30, 60'000); });
    if (u.exit_code != 0) return CommandFailed(u);
    w->pending_assignments().clear();
    PCFARM_RETURN_IF_ERROR(w->Connect());
    not_stepped_ = w.get();  // Join reads its socket on this thread
    Status joined = WhileStepping([&] { return w->Join(10'000); });
    not_stepped_ = nullptr;
    PCFARM_RETURN_IF_ERROR(joined);
  }
  return out;
}

}  // namespace pcfarm
