#include "coordinator/http/status_api.h"

#include <algorithm>
#include <map>
#include <sstream>

#include "base/clock.h"
#include "coordinator/admin_queries.h"
#include "coordinator/cli/cli_common.h"
#include "coordinator/http/status_pages.h"

namespace pcfarm {
namespace {

using nlohmann::json;

// JSON that holds text a worker sent (names, errors) keeps invalid UTF-8
// as U+FFFD instead of failing, as the CLI prints it.
WorkerLiveState LiveStateOf(const LiveView& view, int64_t id) {
  WorkerLiveState live;
  if (auto r = view.running.find(id); r != view.running.end()) {
    live.connected = true;
    live.running = r->second;
  }
  if (auto o = view.outdated.find(id); o != view.outdated.end()) {
    live.outdated = true;
    live.outdated_version = o->second;
  }
  if (auto p = view.paused.find(id); p != view.paused.end()) {
    live.paused = true;
    live.paused_reason = p->second;
  }
  return live;
}

json EventJson(const EventInfo& e) {
  return {{"id", e.id},           {"ts_ms", e.ts_ms},         {"kind", e.kind},
          {"job_id", e.job_id},   {"worker_id", e.worker_id}, {"message", e.message}};
}

// Prometheus label values escape backslash, double quote and newline.
std::string LabelValue(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

class Exposition {
 public:
  void Family(const char* name, const char* type, const char* help) {
    out_ << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
  }
  void Sample(const std::string& name, const std::string& labels, double value) {
    out_ << name;
    if (!labels.empty()) out_ << '{' << labels << '}';
    out_ << ' ' << Number(value) << '\n';
  }
  void Histogram(const char* name, const char* help, const LatencyHistogram& h) {
    Family(name, "histogram", help);
    uint64_t cumulative = 0;
    for (size_t i = 0; i < h.bounds().size(); ++i) {
      cumulative += h.bucket(i);
      Sample(std::string(name) + "_bucket", "le=\"" + Number(h.bounds()[i]) + "\"",
             double(cumulative));
    }
    cumulative += h.bucket(h.bounds().size());
    Sample(std::string(name) + "_bucket", "le=\"+Inf\"", double(cumulative));
    Sample(std::string(name) + "_sum", "", h.sum_seconds());
    Sample(std::string(name) + "_count", "", double(cumulative));
  }
  std::string str() const { return out_.str(); }

 private:
  static std::string Number(double v) {
    std::ostringstream s;
    s.precision(12);
    s << v;
    return s.str();
  }
  std::ostringstream out_;
};

// A whole decimal number of at most 18 digits.
bool ParseCount(const std::string& text, int64_t* n) {
  if (text.empty() || text.size() > 18) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  *n = std::stoll(text);
  return true;
}

bool IsNumericSortField(const std::string& f) {
  return f != "name" && f != "state" && f != "backend";
}

// The sort key of a worker for `field`: `num` for numeric fields, `text`
// else; the values the worker's JSON shows (WorkerJson of WorkerToWire).
struct SortKey {
  double num = 0;
  std::string text;
};

SortKey KeyOf(const WorkerInfo& w, const WorkerLiveState& live, const std::string& field) {
  SortKey k;
  if (field == "worker_id") k.num = double(w.id);
  else if (field == "name") k.text = w.name;
  else if (field == "gflops") k.num = w.speed_gflops;
  else if (field == "trust") k.num = w.trust;
  else if (field == "agreed") k.num = double(w.agreed);
  else if (field == "disagreed") k.num = double(w.disagreed);
  else if (field == "checks") k.num = double(w.checks);
  else if (field == "strikes") k.num = double(w.strikes);
  else if (field == "running") k.num = live.connected ? live.running : 0;
  else if (field == "last_seen_ms") k.num = double(w.last_seen_ms);
  else if (field == "state") {
    k.text = w.banned ? "quarantined" : live.outdated ? "outdated" : !live.connected ? "offline"
             : live.running > 0 ? "busy" : "idle";
  } else {  // devices, backend: from the stored devices, as the JSON has them
    json j = WorkerJson(WorkerToWire(w, live));
    if (field == "backend") k.text = WorkerBackends(j);
    else k.num = double(j["devices"].size());
  }
  return k;
}

}  // namespace

std::string WorkerQuery::Key() const {
  return "limit=" + std::to_string(limit) + "&offset=" + std::to_string(offset) +
         "&sort=" + sort + "&order=" + (descending ? "desc" : "asc") + "&state=" + state;
}

Result<std::optional<WorkerQuery>> ParseWorkerQuery(
    const std::multimap<std::string, std::string>& params) {
  if (params.empty()) return std::optional<WorkerQuery>();
  for (const auto& [name, value] : params) {
    if (name != "limit" && name != "offset" && name != "sort" && name != "order" &&
        name != "state") {
      return InvalidArgument("unknown parameter '" + name +
                             "' (the workers list takes limit, offset, sort, order, state)");
    }
    if (params.count(name) > 1) return InvalidArgument("parameter '" + name + "' given twice");
  }
  auto value = [&](const char* name) -> const std::string* {
    auto it = params.find(name);
    return it == params.end() ? nullptr : &it->second;
  };
  WorkerQuery q;
  int64_t n = 0;
  if (!value("limit")) {
    return InvalidArgument("offset, sort, order and state need limit=N (1 to " +
                           std::to_string(WorkerQuery::kMaxLimit) + " workers per page)");
  }
  if (!ParseCount(*value("limit"), &n) || n < 1 || n > WorkerQuery::kMaxLimit) {
    return InvalidArgument("limit=N takes a number of workers from 1 to " +
                           std::to_string(WorkerQuery::kMaxLimit) + ", not '" +
                           *value("limit") + "'");
  }
  q.limit = int(n);
  if (const std::string* v = value("offset")) {
    if (!ParseCount(*v, &q.offset)) {
      return InvalidArgument("offset=K takes a number of workers to skip (0 or more), not '" +
                             *v + "'");
    }
  }
  if (const std::string* v = value("sort")) {
    if (std::find_if(std::begin(kWorkerSortFields), std::end(kWorkerSortFields),
                     [&](const char* f) { return *v == f; }) == std::end(kWorkerSortFields)) {
      std::string fields;
      for (const char* f : kWorkerSortFields) fields += (fields.empty() ? "" : ", ") + std::string(f);
      return InvalidArgument("sort='" + *v + "' is not a field to sort by (" + fields + ")");
    }
    q.sort = *v;
  }
  if (const std::string* v = value("order")) {
    if (*v != "asc" && *v != "desc") {
      return InvalidArgument("order takes asc or desc, not '" + *v + "'");
    }
    q.descending = *v == "desc";
  }
  if (const std::string* v = value("state")) {
    if (*v != "idle" && *v != "busy" && *v != "offline" && *v != "quarantined" &&
        *v != "outdated") {
      return InvalidArgument("state takes idle, busy, offline, quarantined or outdated, not '" +
                             *v + "'");
    }
    q.state = *v;
  }
  return std::optional<WorkerQuery>(q);
}

json PageOfWorkers(const std::vector<WorkerInfo>& workers, const LiveView& view,
                   const WorkerQuery& q) {
  std::vector<WorkerLiveState> live;
  live.reserve(workers.size());
  for (const auto& w : workers) live.push_back(LiveStateOf(view, w.id));
  std::vector<size_t> order;
  order.reserve(workers.size());
  for (size_t i = 0; i < workers.size(); ++i) {
    if (q.state.empty() || KeyOf(workers[i], live[i], "state").text == q.state) {
      order.push_back(i);
    }
  }
  std::vector<SortKey> keys(workers.size());
  for (size_t i : order) keys[i] = KeyOf(workers[i], live[i], q.sort);
  const bool numeric = IsNumericSortField(q.sort);
  auto less = [&](size_t a, size_t b) {
    return numeric ? keys[a].num < keys[b].num : keys[a].text < keys[b].text;
  };
  // Stable both ways: descending compares (b, a), so ties keep their order.
  if (q.descending) {
    std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return less(b, a); });
  } else {
    std::stable_sort(order.begin(), order.end(), less);
  }
  json rows = json::array();
  const size_t begin = size_t(std::min<int64_t>(q.offset, int64_t(order.size())));
  const size_t end = std::min(order.size(), begin + size_t(q.limit));
  for (size_t i = begin; i < end; ++i) {
    rows.push_back(WorkerJson(WorkerToWire(workers[order[i]], live[order[i]])));
  }
  return {{"total", int64_t(order.size())}, {"offset", q.offset},   {"limit", q.limit},
          {"sort", q.sort},                 {"order", q.descending ? "desc" : "asc"},
          {"state", q.state},               {"workers", std::move(rows)}};
}

std::string StatusApi::OwnerName(int64_t client_id) {
  if (client_id == 0) return "admin";
  auto clients = store_->ListClients();
  if (clients.ok()) {
    for (const auto& c : *clients) {
      if (c.id == client_id) return c.name;
    }
  }
  return "";
}

Result<json> StatusApi::Workers() {
  PCFARM_ASSIGN_OR_RETURN(auto workers, store_->ListWorkers());
  auto view = board_->view();
  json arr = json::array();
  for (const auto& w : workers) arr.push_back(WorkerJson(WorkerToWire(w, LiveStateOf(*view, w.id))));
  return arr;
}

Result<json> StatusApi::Workers(const WorkerQuery& q) {
  if (q.sort == "worker_id" && q.state.empty()) {
    // The page's default order: the page's rows and the count from SQLite,
    // not every worker (5,000 idle workers cost a second poller's worth).
    PCFARM_ASSIGN_OR_RETURN(int64_t total, store_->CountWorkers());
    PCFARM_ASSIGN_OR_RETURN(auto page, store_->ListWorkersById(q.offset, q.limit, q.descending));
    auto view = board_->view();
    json rows = json::array();
    for (const auto& w : page) rows.push_back(WorkerJson(WorkerToWire(w, LiveStateOf(*view, w.id))));
    return json{{"total", total},     {"offset", q.offset},
                {"limit", q.limit},   {"sort", q.sort},
                {"order", q.descending ? "desc" : "asc"},
                {"state", q.state},   {"workers", std::move(rows)}};
  }
  PCFARM_ASSIGN_OR_RETURN(auto workers, store_->ListWorkers());
  return PageOfWorkers(workers, *board_->view(), q);
}

Result<json> StatusApi::Worker(int64_t id) {
  PCFARM_ASSIGN_OR_RETURN(WorkerInfo w, store_->GetWorker(id));
  return WorkerJson(WorkerToWire(w, LiveStateOf(*board_->view(), w.id)));
}

Result<json> StatusApi::Jobs() {
  PCFARM_ASSIGN_OR_RETURN(auto jobs, store_->ListJobs());
  PCFARM_ASSIGN_OR_RETURN(auto clients, store_->ListClients());
  std::map<int64_t, std::string> names;
  for (const auto& c : clients) names[c.id] = c.name;
  json arr = json::array();
  for (const auto& j : jobs) {
    wire::JobInfo w = JobToWire(j, j.owner_client_id == 0 ? "admin" : names[j.owner_client_id]);
    w.clear_summary();  // as `pcfarm jobs` lists them
    arr.push_back(JobJson(w));
  }
  return arr;
}

Result<json> StatusApi::Job(int64_t id) {
  PCFARM_ASSIGN_OR_RETURN(JobInfo job, store_->GetJob(id));
  wire::JobInfo w = JobToWire(job, OwnerName(job.owner_client_id));
  PCFARM_RETURN_IF_ERROR(AddJobVerification(*store_, id, &w));
  json out = JobJson(w);
  json states = json::object();
  PCFARM_ASSIGN_OR_RETURN(auto counts, store_->CountShardsByState(id));
  for (const auto& [state, n] : counts) states[state] = n;
  out["shard_states"] = states;
  if (job.open_ended) {
    PCFARM_ASSIGN_OR_RETURN(auto rounds, store_->JobRounds(id));
    json arr = json::array();
    for (const auto& r : rounds) {
      json info = json::parse(r.info, nullptr, false);
      if (!info.is_object()) info = json::object();
      info["round"] = r.round;
      info["created_ms"] = r.created_ms;
      arr.push_back(std::move(info));
    }
    out["rounds"] = std::move(arr);
  }
  return out;
}

Result<json> StatusApi::Events(int64_t after, int limit) {
  PCFARM_ASSIGN_OR_RETURN(auto events, store_->ListEvents(after, limit));
  json arr = json::array();
  for (const auto& e : events) arr.push_back(EventJson(e));
  return arr;
}

Result<json> StatusApi::Overview() {
  PCFARM_ASSIGN_OR_RETURN(auto workers, store_->ListWorkers());
  auto view = board_->view();
  int64_t online = 0, busy = 0, quarantined = 0, outdated = 0;
  double gflops = 0;
  for (const auto& w : workers) {
    WorkerLiveState live = LiveStateOf(*view, w.id);
    if (w.banned) quarantined++;
    if (live.outdated) outdated++;
    if (!live.connected) continue;
    online++;
    if (live.running > 0) busy++;
    gflops += w.speed_gflops;
  }
  json out = {{"workers_total", int64_t(workers.size())},
              {"workers_online", online},
              {"workers_busy", busy},
              {"workers_idle", online - busy},
              {"workers_offline", int64_t(workers.size()) - online},
              {"workers_quarantined", quarantined},
              {"workers_outdated", outdated},
              {"gflops_online", gflops},
              {"results_per_second", view->results_per_s},
              {"taken_ms", view->taken_ms}};
  PCFARM_ASSIGN_OR_RETURN(auto running, store_->ListJobs("running", 0));
  PCFARM_ASSIGN_OR_RETURN(auto queued, store_->ListJobs("queued", 0));
  out["jobs_running"] = int64_t(running.size());
  out["jobs_queued"] = int64_t(queued.size());
  json shards = json::object();
  PCFARM_ASSIGN_OR_RETURN(auto counts, store_->CountShardsByState(0));
  for (const auto& [state, n] : counts) shards[state] = n;
  out["shards"] = shards;
  json events = json::array();
  PCFARM_ASSIGN_OR_RETURN(auto latest, store_->LatestEvents(20));
  for (const auto& e : latest) events.push_back(EventJson(e));
  out["events"] = std::move(events);
  return out;
}

}  // namespace pcfarm

namespace pcfarm {

Result<std::string> StatusApi::Metrics() {
  const ServerCounters& c = *counters_;
  Exposition m;
  // Workers by state, each worker counted once: quarantined (banned) first,
  // then outdated, offline, paused (its owner is back), busy, idle.
  PCFARM_ASSIGN_OR_RETURN(auto workers, store_->ListWorkers());
  auto view = board_->view();
  std::map<std::string, int64_t> by_state = {
      {"quarantined", 0}, {"outdated", 0}, {"paused", 0},
      {"busy", 0},        {"idle", 0},     {"offline", 0}};
  for (const auto& w : workers) {
    WorkerLiveState live = LiveStateOf(*view, w.id);
    const char* state = w.banned                ? "quarantined"
                        : live.outdated          ? "outdated"
                        : !live.connected       ? "offline"
                        : live.paused           ? "paused"
                        : live.running > 0      ? "busy"
                                                : "idle";
    by_state[state]++;
  }
  m.Family("pcfarm_workers", "gauge", "Enrolled workers by state.");
  for (const auto& [state, n] : by_state) m.Sample("pcfarm_workers", "state=\"" + state + "\"", double(n));

  m.Family("pcfarm_shards", "gauge", "Shards of the queued and running jobs by state.");
  PCFARM_ASSIGN_OR_RETURN(auto shards, store_->CountShardsByState(0));
  std::map<std::string, int64_t> shard_states = {
      {"pending", 0}, {"leased", 0}, {"accepted", 0}, {"failed", 0}, {"cancelled", 0}};
  for (const auto& [state, n] : shards) shard_states[state] = n;
  for (const auto& [state, n] : shard_states) {
    m.Sample("pcfarm_shards", "state=\"" + LabelValue(state) + "\"", double(n));
  }

  m.Family("pcfarm_results_total", "counter",
           "Results received from workers by outcome: stored (any verdict), rejected "
           "(of which forged and replayed), invalid (refused by the kind's shape check).");
  m.Sample("pcfarm_results_total", "outcome=\"stored\"", double(c.results_accepted.load()));
  m.Sample("pcfarm_results_total", "outcome=\"rejected\"", double(c.results_rejected.load()));
  m.Sample("pcfarm_results_total", "outcome=\"forged\"", double(c.results_forged.load()));
  m.Sample("pcfarm_results_total", "outcome=\"replayed\"", double(c.results_replayed.load()));
  m.Sample("pcfarm_results_total", "outcome=\"invalid\"", double(c.results_invalid.load()));

  m.Family("pcfarm_blob_bytes_total", "counter",
           "Blob bytes received from clients (in) and sent to workers (out).");
  m.Sample("pcfarm_blob_bytes_total", "direction=\"in\"", double(c.upload_bytes_received.load()));
  m.Sample("pcfarm_blob_bytes_total", "direction=\"out\"", double(c.blob_bytes_sent.load()));
  m.Family("pcfarm_blobs_removed_total", "counter",
           "Blobs the collector deleted (no job needed them), and their bytes.");
  m.Sample("pcfarm_blobs_removed_total", "", double(c.blobs_removed.load()));
  m.Family("pcfarm_blob_bytes_removed_total", "counter", "Bytes of the blobs the collector deleted.");
  m.Sample("pcfarm_blob_bytes_removed_total", "", double(c.blob_bytes_removed.load()));

  m.Family("pcfarm_shards_assigned_total", "counter", "Shards sent to workers (ASSIGN).");
  m.Sample("pcfarm_shards_assigned_total", "", double(c.shards_assigned.load()));
  m.Family("pcfarm_messages_received_total", "counter", "Frames received from workers.");
  m.Sample("pcfarm_messages_received_total", "", double(c.messages_in.load()));
  m.Family("pcfarm_bad_messages_total", "counter", "Worker frames refused as malformed.");
  m.Sample("pcfarm_bad_messages_total", "", double(c.bad_messages.load()));
  m.Family("pcfarm_workers_lost_total", "counter", "Workers dropped for silence or garbage.");
  m.Sample("pcfarm_workers_lost_total", "", double(c.workers_lost.load()));

  m.Histogram("pcfarm_round_trip_seconds",
              "From a shard's ASSIGN to the RESULT that answers it.", c.round_trip_s);
  m.Histogram("pcfarm_sqlite_commit_seconds", "One event-loop turn's SQLite COMMIT.",
              c.sqlite_commit_s);
  m.Histogram("pcfarm_wal_fsync_seconds", "One fdatasync of the SQLite WAL file.",
              c.wal_fsync_s);

  PCFARM_ASSIGN_OR_RETURN(auto running, store_->ListJobs("running", 0));
  PCFARM_ASSIGN_OR_RETURN(auto queued, store_->ListJobs("queued", 0));
  m.Family("pcfarm_jobs", "gauge", "Jobs queued and running.");
  m.Sample("pcfarm_jobs", "state=\"queued\"", double(queued.size()));
  m.Sample("pcfarm_jobs", "state=\"running\"", double(running.size()));
  running.insert(running.end(), queued.begin(), queued.end());
  m.Family("pcfarm_job_shards_accepted", "gauge", "Accepted shards of each queued or running job.");
  for (const auto& j : running) {
    m.Sample("pcfarm_job_shards_accepted",
             "job=\"" + std::to_string(j.id) + "\",kind=\"" + LabelValue(j.kind) + "\"",
             double(j.shards_accepted));
  }
  m.Family("pcfarm_job_shards", "gauge", "Shards so far of each queued or running job.");
  for (const auto& j : running) {
    m.Sample("pcfarm_job_shards",
             "job=\"" + std::to_string(j.id) + "\",kind=\"" + LabelValue(j.kind) + "\"",
             double(j.shards_total));
  }
  return m.str();
}

}  // namespace pcfarm
