#include "tests/integration/stepping.h"
#include "tests/integration/adversary_train.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <fstream>
#include <iterator>
#include <numeric>
#include <nlohmann/json.hpp>
#include <thread>
#include <utility>

#include "base/clock.h"

#include "tasks/kinds/kind.h"
#include "tasks/kinds/train_result.h"

namespace pcfarm {

namespace {

constexpr const char* kNames[] = {"random", "scale100", "signflip", "zeros",
                                  "stale",  "replay",   "alie"};

// The values of the train kind's Agree and the distances beside it.
ForgeryMeasure Measure(const std::string& honest, const std::string& forged) {
  ForgeryMeasure m;
  m.changed = honest != forged;
  const TaskKind* kind = TaskKindRegistry::Builtin().Find("train");
  m.agrees = kind != nullptr && kind->Agree(honest, forged);
  auto x = DecodeTrainResult(honest), y = DecodeTrainResult(forged);
  if (!x.ok() || !y.ok() || x->values.size() != y->values.size()) {
    m.relative_l2 = 1;
    m.cosine = std::nan("");
    return m;
  }
  double dot = 0, nx = 0, ny = 0, dd = 0;
  for (size_t i = 0; i < x->values.size(); ++i) {
    const double p = x->values[i], q = y->values[i];
    dot += p * q;
    nx += p * p;
    ny += q * q;
    dd += (p - q) * (p - q);
  }
  const double norm = std::max(std::sqrt(nx), std::sqrt(ny));
  m.relative_l2 = norm > 0 ? std::sqrt(dd) / norm : 0;
  m.cosine = dot / std::sqrt(nx * ny);
  return m;
}

}  // namespace

const char* TrainCheatName(TrainCheat cheat) { return kNames[static_cast<int>(cheat)]; }

Result<TrainCheat> ParseTrainCheat(std::string_view name) {
  for (TrainCheat c : AllTrainCheats()) {
    if (name == TrainCheatName(c)) return c;
  }
  return InvalidArgument("unknown cheat '" + std::string(name) +
                         "' (random, scale100, signflip, zeros, stale, replay, alie)");
}

std::vector<TrainCheat> AllTrainCheats() {
  return {TrainCheat::kRandom, TrainCheat::kScale100, TrainCheat::kSignFlip, TrainCheat::kZeros,
          TrainCheat::kStale,  TrainCheat::kReplay,   TrainCheat::kAlie};
}

TrainForger::TrainForger(TrainCheat cheat, uint64_t seed, AlieCollusion* collusion)
    : cheat_(cheat), rng_(seed), collusion_(collusion) {}

Result<wire::ResultBody> TrainForger::Forge(const SimWorker& worker, const SimAssignment& a,
                                            const wire::ResultBody& honest,
                                            ForgeryMeasure* measure) {
  PCFARM_ASSIGN_OR_RETURN(TrainResult r, DecodeTrainResult(honest.output()));
  auto params = nlohmann::json::parse(a.body.params(), nullptr, /*allow_exceptions=*/false);
  if (params.is_discarded()) return InvalidArgument("forger: shard params are not JSON");
  // The version the shard starts from: its "adapter" files, or the "lora"
  // config of a seeded start (the job's first version, drawn by the worker).
  nlohmann::json version = nlohmann::json::object();
  for (const char* key : {"adapter", "lora"}) {
    if (params.contains(key)) version[key] = params[key];
  }
  const std::string adapter = version.dump();
  wire::ResultBody out = honest;
  std::string forged_output;

  switch (cheat_) {
    case TrainCheat::kRandom: {
      double norm = 0;
      for (float v : r.values) norm += double(v) * v;
      norm = std::sqrt(norm);
      std::normal_distribution<double> gauss(0.0, 1.0);
      double drawn = 0;
      for (float& v : r.values) {
        v = float(gauss(rng_));
        drawn += double(v) * v;
      }
      const double scale = drawn > 0 ? norm / std::sqrt(drawn) : 0;
      for (float& v : r.values) v = float(v * scale);
      break;
    }
    case TrainCheat::kScale100:
      for (float& v : r.values) v *= 100.0f;
      break;
    case TrainCheat::kSignFlip:
      for (float& v : r.values) v = -v;
      break;
    case TrainCheat::kZeros:
      for (float& v : r.values) v = 0.0f;
      break;
    case TrainCheat::kStale: {
      if (!oldest_adapter_) oldest_adapter_ = adapter;
      if (*oldest_adapter_ != adapter) {
        params.erase("adapter");
        params.erase("lora");
        const nlohmann::json oldest = nlohmann::json::parse(*oldest_adapter_);
        for (const auto& [key, value] : oldest.items()) params[key] = value;
        wire::ResultBody stale = worker.RunAssignmentWith(a, params.dump());
        if (!stale.ok()) return Internal("forger: stale run failed: " + stale.error());
        forged_output = stale.output();
      } else {
        forged_output = honest.output();  // no older version known yet
      }
      break;
    }
    case TrainCheat::kReplay: {
      forged_output = last_output_ && last_shard_id_ != a.body.shard_id() ? *last_output_
                                                                           : honest.output();
      last_output_ = honest.output();
      last_shard_id_ = a.body.shard_id();
      break;
    }
    case TrainCheat::kAlie: {
      if (r.weight <= 0) break;  // nothing to scale by: honest
      std::vector<float> mean(r.values.size());
      for (size_t j = 0; j < mean.size(); ++j) mean[j] = float(r.values[j] / r.weight);
      std::vector<std::vector<float>>* pool = nullptr;
      if (collusion_) {
        pool = &collusion_->pool[adapter];
        pool->push_back(mean);
      }
      const double z = collusion_ ? collusion_->z : 0.25;
      const size_t n = pool ? pool->size() : 1;
      for (size_t j = 0; j < mean.size(); ++j) {
        double mu = mean[j], sigma = std::fabs(mean[j]);
        if (n >= 2) {
          double s = 0, s2 = 0;
          for (const auto& g : *pool) {
            s += g[j];
            s2 += double(g[j]) * g[j];
          }
          mu = s / double(n);
          sigma = std::sqrt(std::max(0.0, s2 / double(n) - mu * mu));
        }
        r.values[j] = float(r.weight * (mu - z * sigma));
      }
      break;
    }
  }
  if (forged_output.empty()) {
    PCFARM_ASSIGN_OR_RETURN(forged_output, EncodeTrainResult(r));
  }
  out.set_output(forged_output);
  if (measure) *measure = Measure(honest.output(), forged_output);
  return out;
}

AdversarialTrainWorker::AdversarialTrainWorker(std::unique_ptr<SimWorker> sim, TrainForger forger)
    : sim_(std::move(sim)), forger_(std::move(forger)) {}

Status AdversarialTrainWorker::Step(int timeout_ms) {
  const uint64_t cancels = sim_->stats().cancels;
  PCFARM_RETURN_IF_ERROR(sim_->Step(timeout_ms));
  auto& pending = sim_->pending_assignments();
  // A CANCEL frees the slot of a shard not answered yet (as pcfarm-worker
  // says with a READY): else the coordinator counts it busy for good.
  if (sim_->stats().cancels != cancels && pending.empty()) {
    PCFARM_RETURN_IF_ERROR(sim_->SendReady(1));
  }
  while (!pending.empty()) {
    SimAssignment a = std::move(pending.front());
    pending.erase(pending.begin());
    wire::ResultBody body = sim_->RunAssignment(a);
    if (a.body.kind() == "train" && body.ok()) {
      stats_.shards++;
      ForgeryMeasure m;
      auto forged = forger_.Forge(*sim_, a, body, &m);
      if (!forged.ok()) {
        stats_.errors++;
      } else {
        body = std::move(forged).value();
        if (m.changed) {
          stats_.forged++;
          stats_.forged_attempts.push_back(a.body.attempt_id());
          if (m.agrees) stats_.agreeing++;
          if (std::isfinite(m.cosine)) stats_.max_cosine = std::max(stats_.max_cosine, m.cosine);
          stats_.min_relative_l2 = std::min(stats_.min_relative_l2, m.relative_l2);
        }
      }
    }
    PCFARM_RETURN_IF_ERROR(sim_->SendResult(sim_->SealResult(body)));
    PCFARM_RETURN_IF_ERROR(sim_->SendReady(1));
  }
  return Status::Ok();
}


// ------------------------------------------------------------- trials

namespace {

int64_t Mono() { return SystemClock::Get()->MonotonicMs(); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

AdversaryFarm::AdversaryFarm(MiniCluster* cluster)
    : c_(cluster), ctx_(std::make_unique<zmq::context_t>(1)) {}

AdversaryFarm::~AdversaryFarm() {
  adversaries_.clear();
  honest_.clear();
}

Status AdversaryFarm::StepAll(int timeout_ms) {
  // Wait (bounded) for a frame on any socket, then step every worker in a
  // fresh random order, so that no worker always answers first (a fixed
  // honest-first order was suspected of starving cheats; bench/README.md
  // shows it was not the cause, but an order no worker controls is the
  // fairer harness either way).
  std::vector<zmq::pollitem_t> items;
  for (auto& w : honest_) items.push_back({static_cast<void*>(*w->socket()), 0, ZMQ_POLLIN, 0});
  for (auto& a : adversaries_) {
    items.push_back({static_cast<void*>(*a->sim()->socket()), 0, ZMQ_POLLIN, 0});
  }
  if (items.empty()) {
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return Status::Ok();
  }
  zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  std::vector<size_t> order(items.size());
  std::iota(order.begin(), order.end(), size_t(0));
  std::shuffle(order.begin(), order.end(), order_rng_);
  for (size_t i : order) {
    if (i < honest_.size()) {
      PCFARM_RETURN_IF_ERROR(honest_[i]->Step(0));
    } else {
      PCFARM_RETURN_IF_ERROR(adversaries_[i - honest_.size()]->Step(0));
    }
  }
  return Status::Ok();
}

template <typename F>
auto AdversaryFarm::WhileStepping(F fn) {
  return pcfarm::WhileStepping([this] { (void)StepAll(5); }, fn);
}

Result<std::unique_ptr<SimWorker>> AdversaryFarm::Join(const std::string& name, bool auto_work) {
  auto token = WhileStepping([&] { return c_->CreateToken(1, "1h"); });
  if (!token.ok()) return token.status();
  SimWorkerOptions o;
  o.name = name;
  o.auto_work = auto_work;
  o.blob_path = CoordinatorBlobPath(c_->coordinator_dir());
  o.cpu_threads = 1;
  PCFARM_ASSIGN_OR_RETURN(auto w, SimWorker::FromToken(ctx_.get(), *token, o));
  Status s = WhileStepping([&] {
    PCFARM_RETURN_IF_ERROR(w->Enroll(10'000));
    return w->Join(10'000);
  });
  PCFARM_RETURN_IF_ERROR(s);
  return w;
}

Status AdversaryFarm::AddHonest(int n) {
  for (int i = 0; i < n; ++i) {
    PCFARM_ASSIGN_OR_RETURN(auto w, Join("honest-" + std::to_string(trials_) + "-" + std::to_string(honest_.size()), true));
    honest_.push_back(std::move(w));
  }
  return Status::Ok();
}

Result<double> AdversaryFarm::EvalLoss(const std::string& model, const std::string& data,
                                       const std::string& adapter) {
  std::vector<std::string> argv = {c_->Binary("pcfarm"), "local", "eval", "--json", "--model",
                                   model, "--data", data, "--threads", "1"};
  if (!adapter.empty()) {
    argv.push_back("--adapter");
    argv.push_back(adapter);
  }
  CommandResult r = WhileStepping([&] { return c_->Run(argv, 300'000); });
  if (r.exit_code != 0) return Internal(r.Describe());
  auto j = nlohmann::json::parse(r.LastLine(), nullptr, false);
  if (j.is_discarded() || !j.contains("loss")) return Internal("eval: " + r.LastLine());
  return j["loss"].get<double>();
}

Result<AdversaryTrialOutcome> AdversaryFarm::RunTrial(
    int honest, const std::vector<TrainCheat>& cheats, const std::vector<std::string>& finetune_args,
    const std::string& model, const std::string& data, uint64_t seed, int timeout_ms) {
  const int trial = ++trials_;
  for (auto& w : honest_) (void)w->SendBye("trial over");
  honest_.clear();
  PCFARM_RETURN_IF_ERROR(AddHonest(honest));
  AlieCollusion collusion;
  adversaries_.clear();
  for (size_t i = 0; i < cheats.size(); ++i) {
    const std::string name = "adv-" + std::to_string(trial) + "-" + std::to_string(i) + "-" +
                             TrainCheatName(cheats[i]);
    PCFARM_ASSIGN_OR_RETURN(auto sim, Join(name, false));
    adversaries_.push_back(std::make_unique<AdversarialTrainWorker>(
        std::move(sim), TrainForger(cheats[i], seed * 1000 + i, &collusion)));
  }

  AdversaryTrialOutcome out;
  std::vector<std::string> args = {"submit", "finetune"};
  args.insert(args.end(), finetune_args.begin(), finetune_args.end());
  const int64_t started = Mono();
  CommandResult submit = WhileStepping([&] { return c_->Cli(args, 30, 300'000); });
  if (submit.exit_code != 0) return Internal(submit.Describe());
  out.job = std::stoll(submit.LastLine());
  const std::string id = std::to_string(out.job);

  const int64_t deadline = started + timeout_ms;
  int64_t next_check = 0;
  while (true) {
    PCFARM_RETURN_IF_ERROR(StepAll(2));
    if (Mono() < next_check) continue;
    next_check = Mono() + 100;
    auto rows = c_->db().Query("SELECT state FROM jobs WHERE id=" + id);
    if (!rows.ok()) return rows.status();
    if (rows->empty()) return Internal("job " + id + " is not in the database");
    const std::string& state = rows->at(0).at(0);
    if (state != "queued" && state != "running") {
      out.state = state;
      break;
    }
    if (Mono() > deadline) {
      out.state = "timeout";
      break;
    }
  }
  out.seconds = double(Mono() - started) / 1000.0;

  auto q = [&](const std::string& sql) { return c_->db().QueryInt(sql); };
  PCFARM_ASSIGN_OR_RETURN(out.shards, q("SELECT COUNT(*) FROM shards WHERE job_id=" + id));
  for (auto& a : adversaries_) {
    AdversaryOutcome o;
    o.cheat = a->forger().cheat();
    o.stats = a->stats();
    o.worker_id = int64_t(a->sim()->worker_id());
    const std::string w = std::to_string(o.worker_id);
    PCFARM_ASSIGN_OR_RETURN(int64_t banned, q("SELECT banned FROM workers WHERE id=" + w));
    o.quarantined = banned != 0;
    PCFARM_ASSIGN_OR_RETURN(o.strikes, q("SELECT strikes FROM workers WHERE id=" + w));
    if (!o.stats.forged_attempts.empty()) {
      std::string list;
      for (uint64_t at : o.stats.forged_attempts) {
        list += (list.empty() ? "" : ",") + std::to_string(at);
      }
      PCFARM_ASSIGN_OR_RETURN(
          o.forged_accepted,
          q("SELECT COUNT(*) FROM shards s JOIN results r ON r.id=s.accepted_result_id "
            "WHERE s.job_id=" + id + " AND r.attempt_id IN (" + list + ")"));
    }
    auto name = c_->db().Query("SELECT name FROM workers WHERE id=" + w);
    if (name.ok() && !name->empty()) o.name = name->at(0).at(0);
    out.adversaries.push_back(std::move(o));
  }
  for (auto& h : honest_) {
    const std::string w = std::to_string(h->worker_id());
    PCFARM_ASSIGN_OR_RETURN(int64_t strikes, q("SELECT strikes FROM workers WHERE id=" + w));
    PCFARM_ASSIGN_OR_RETURN(int64_t banned, q("SELECT banned FROM workers WHERE id=" + w));
    out.honest_strikes += strikes;
    out.honest_quarantined += banned != 0 ? 1 : 0;
  }
  // The adversaries leave for good (a BYE, so that no check waits for them).
  for (auto& a : adversaries_) (void)a->sim()->SendBye("trial over");
  adversaries_.clear();

  if (out.state == "succeeded") {
    auto st = WhileStepping([&] { return c_->JobStatus(out.job); });
    if (!st.ok()) return st.status();
    if (st->contains("verification")) {
      const auto& v = (*st)["verification"];
      out.checked_shards = v.value("checked_shards", int64_t{0});
      out.overhead = v.value("overhead", 0.0);
    }
    const std::string dir = c_->dir() + "/trial-" + std::to_string(trial);
    CommandResult fetch =
        WhileStepping([&] { return c_->Cli({"fetch", id, "--out", dir}, 30, 120'000); });
    if (fetch.exit_code != 0) return Internal(fetch.Describe());
    out.adapter = ReadFile(dir + "/adapter_model.safetensors");
    PCFARM_ASSIGN_OR_RETURN(out.eval_loss, EvalLoss(model, data, dir));
  }
  return out;
}

}  // namespace pcfarm
