#include "bench/grid/grid_bench.h"

#include <dirent.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <thread>

#include "crypto/keys.h"

namespace pcfarm {

// ---------------------------------------------------------------- the table

std::string FormatFixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double MonotonicSeconds() {
  return std::chrono::duration<double>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

void PrintBenchTable(const std::string& title, const std::vector<BenchRow>& rows,
                     const std::vector<std::string>& notes) {
  std::vector<std::vector<std::string>> cells = {
      {"measure", "ours", "baseline (same run)", "ratio", "target"}};
  for (const auto& r : rows) {
    cells.push_back({r.measure, r.ours, r.baseline, r.ratio, r.target});
  }
  std::vector<size_t> width(5, 0);
  for (const auto& row : cells) {
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  auto line = [&](const std::vector<std::string>& row) {
    std::string out = "|";
    for (size_t i = 0; i < row.size(); ++i) {
      out += " " + row[i] + std::string(width[i] - row[i].size(), ' ') + " |";
    }
    std::printf("%s\n", out.c_str());
  };
  std::printf("\n%s\n\n", title.c_str());
  line(cells[0]);
  std::string rule = "|";
  for (size_t w : width) rule += std::string(w + 2, '-') + "|";
  std::printf("%s\n", rule.c_str());
  for (size_t i = 1; i < cells.size(); ++i) line(cells[i]);
  std::printf("\n");
  for (const auto& n : notes) std::printf("- %s\n", n.c_str());
  std::fflush(stdout);
}

// ------------------------------------------------------------ /proc sampling

namespace {

// The fields of /proc/PID/stat after the command name, which is in
// parentheses and may itself hold spaces and parentheses.
Result<std::vector<std::string>> StatFields(pid_t pid, std::string* comm) {
  std::string path = "/proc/" + std::to_string(pid) + "/stat";
  std::ifstream in(path);
  if (!in) return NotFound("no process " + std::to_string(pid));
  std::string text((std::istreambuf_iterator<char>(in)),
                   std::istreambuf_iterator<char>());
  size_t open = text.find('(');
  size_t close = text.rfind(')');
  if (open == std::string::npos || close == std::string::npos || close < open) {
    return Corruption(path + ": no command name in parentheses");
  }
  if (comm) *comm = text.substr(open + 1, close - open - 1);
  std::istringstream rest(text.substr(close + 1));
  std::vector<std::string> fields;  // fields[0] is field 3 (state)
  for (std::string f; rest >> f;) fields.push_back(f);
  if (fields.size() < 13) return Corruption(path + ": too few fields");
  return fields;
}

}  // namespace

Result<ProcSample> SampleProcess(pid_t pid) {
  ProcSample s;
  s.taken_at = MonotonicSeconds();
  PCFARM_ASSIGN_OR_RETURN(auto fields, StatFields(pid, nullptr));
  // utime and stime are fields 14 and 15 (1-based), in clock ticks.
  double ticks = static_cast<double>(::sysconf(_SC_CLK_TCK));
  try {
    s.cpu_seconds = (std::stod(fields[11]) + std::stod(fields[12])) / ticks;
  } catch (const std::exception&) {
    return Corruption("/proc/" + std::to_string(pid) + "/stat: utime/stime");
  }
  std::string path = "/proc/" + std::to_string(pid) + "/status";
  std::ifstream status(path);
  if (!status) return NotFound("no process " + std::to_string(pid));
  bool rss = false;
  for (std::string line; std::getline(status, line);) {
    int64_t* field = line.rfind("VmRSS:", 0) == 0   ? &s.rss_kib
                     : line.rfind("VmHWM:", 0) == 0 ? &s.hwm_kib
                                                    : nullptr;
    if (!field) continue;
    try {
      *field = std::stoll(line.substr(6));
    } catch (const std::exception&) {
      return Corruption(path + ": line '" + line + "'");
    }
    rss = rss || field == &s.rss_kib;
  }
  if (!rss) return Corruption(path + ": no VmRSS line (a zombie?)");
  return s;
}

Result<pid_t> FindChildProcess(std::string_view name) {
  std::string want(name.substr(0, 15));
  DIR* d = ::opendir("/proc");
  if (!d) return IoError("cannot list /proc");
  pid_t found = -1;
  pid_t self = ::getpid();
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0) continue;
    std::string comm;
    auto fields = StatFields(static_cast<pid_t>(pid), &comm);
    if (!fields.ok() || comm != want) continue;
    // fields[0] is the state (Z: a zombie), fields[1] the parent pid.
    if ((*fields)[0] == "Z" || (*fields)[1] != std::to_string(self)) continue;
    found = std::max<pid_t>(found, static_cast<pid_t>(pid));
  }
  ::closedir(d);
  if (found < 0) return NotFound("no running child process named " + want);
  return found;
}

// -------------------------------------------------------- the per-shard floor

Result<ShardFloor> MeasureShardFloor(const std::string& dir, double seconds) {
  std::string path = dir + "/floor.db";
  sqlite3* db = nullptr;
  auto fail = [&](const std::string& what) -> Status {
    std::string msg = path + ": " + what + ": " +
                      (db ? sqlite3_errmsg(db) : "cannot open");
    sqlite3_close(db);
    return IoError(msg);
  };
  if (sqlite3_open(path.c_str(), &db) != SQLITE_OK) return fail("open");
  const char* setup =
      "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;"
      "CREATE TABLE results(id INTEGER PRIMARY KEY, attempt_id INTEGER NOT NULL,"
      " envelope BLOB NOT NULL);";
  if (sqlite3_exec(db, setup, nullptr, nullptr, nullptr) != SQLITE_OK) {
    return fail("setup");
  }
  sqlite3_stmt* insert = nullptr;
  if (sqlite3_prepare_v2(db,
                         "INSERT INTO results(attempt_id, envelope) VALUES(?1, ?2)",
                         -1, &insert, nullptr) != SQLITE_OK) {
    return fail("prepare");
  }
  SigningKeyPair worker = SigningKeyPair::Generate();
  // About the size of a bench kind's ResultBody.
  std::string body = RandomBytes(200);
  ShardFloor f;
  double crypto_s = 0, commit_s = 0;
  double start = MonotonicSeconds();
  while (f.iterations < 20 || MonotonicSeconds() - start < seconds) {
    body[0] = static_cast<char>(f.iterations);
    double t0 = MonotonicSeconds();
    std::string sig = worker.Sign(body);
    Status v = Verify(worker.public_key(), body, sig);
    if (!v.ok()) {
      sqlite3_finalize(insert);
      sqlite3_close(db);
      return v.WithContext("floor: verify");
    }
    double t1 = MonotonicSeconds();
    std::string envelope = sig + body;
    if (sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_finalize(insert);
      return fail("begin");
    }
    sqlite3_bind_int64(insert, 1, f.iterations);
    sqlite3_bind_blob(insert, 2, envelope.data(), static_cast<int>(envelope.size()),
                      SQLITE_TRANSIENT);
    int rc = sqlite3_step(insert);
    sqlite3_reset(insert);
    if (rc != SQLITE_DONE ||
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr) != SQLITE_OK) {
      sqlite3_finalize(insert);
      return fail("insert/commit");
    }
    double t2 = MonotonicSeconds();
    crypto_s += t1 - t0;
    commit_s += t2 - t1;
    f.iterations++;
  }
  double total = MonotonicSeconds() - start;
  sqlite3_finalize(insert);
  sqlite3_close(db);
  for (const char* suffix : {"", "-wal", "-shm"}) {
    ::unlink((path + suffix).c_str());
  }
  f.per_second = f.iterations / total;
  f.sign_verify_us = crypto_s / f.iterations * 1e6;
  f.commit_us = commit_s / f.iterations * 1e6;
  return f;
}

// ------------------------------------------------------------------ SimFleet

namespace {

int64_t NowMs() {
  return static_cast<int64_t>(MonotonicSeconds() * 1000.0);
}

}  // namespace

Status SimFleet::WaitForWelcomes(const std::vector<size_t>& which,
                                 uint64_t welcomes, int64_t deadline_ms,
                                 const char* phase) {
  std::vector<size_t> pending = which;
  std::vector<zmq::pollitem_t> items;
  while (!pending.empty()) {
    if (NowMs() > deadline_ms) {
      return Timeout(std::string(phase) + ": " + std::to_string(pending.size()) +
                     " of " + std::to_string(which.size()) +
                     " workers got no WELCOME in time");
    }
    items.clear();
    for (size_t i : pending) {
      items.push_back({workers_[i]->socket()->handle(), 0, ZMQ_POLLIN, 0});
    }
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(100));
    } catch (const zmq::error_t& e) {
      return Unavailable(std::string(phase) + ": poll: " + e.what());
    }
    std::vector<size_t> still;
    for (size_t k = 0; k < pending.size(); ++k) {
      SimWorker& w = *workers_[pending[k]];
      if (items[k].revents & ZMQ_POLLIN) {
        while (true) {
          PCFARM_ASSIGN_OR_RETURN(auto f, w.Receive(0));
          if (!f) break;
        }
        if (w.stats().rejects > 0) {
          return PermissionDenied(
              std::string(phase) + ": worker " + std::to_string(pending[k]) +
              " rejected: " + RejectReasonName(w.stats().last_reject.reason()) +
              ": " + w.stats().last_reject.detail());
        }
      }
      if (w.stats().welcomes < welcomes) still.push_back(pending[k]);
    }
    pending.swap(still);
    PCFARM_RETURN_IF_ERROR(HeartbeatJoined(join_heartbeat_ms_));
  }
  return Status::Ok();
}

Status SimFleet::HeartbeatJoined(int interval_ms) {
  int64_t now = NowMs();
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (workers_[i]->stats().welcomes < 2) continue;
    if (now - last_heartbeat_ms_[i] < interval_ms) continue;
    PCFARM_RETURN_IF_ERROR(workers_[i]->SendHeartbeat());
    last_heartbeat_ms_[i] = now;
  }
  return Status::Ok();
}

Status SimFleet::Join(std::string_view token, int n,
                      const SimWorkerOptions& options, int timeout_ms) {
  int64_t deadline = NowMs() + timeout_ms;
  join_heartbeat_ms_ = std::max(10, options.heartbeat_interval_ms);
  std::vector<size_t> added;
  for (int i = 0; i < n; ++i) {
    SimWorkerOptions o = options;
    o.name = options.name + "-" + std::to_string(workers_.size());
    PCFARM_ASSIGN_OR_RETURN(auto w, SimWorker::FromToken(ctx_, token, o));
    PCFARM_RETURN_IF_ERROR(w->Connect());
    PCFARM_RETURN_IF_ERROR(w->SendEnroll());
    added.push_back(workers_.size());
    workers_.push_back(std::move(w));
    last_heartbeat_ms_.push_back(NowMs());
  }
  PCFARM_RETURN_IF_ERROR(WaitForWelcomes(added, 1, deadline, "enroll"));
  for (size_t i : added) {
    PCFARM_RETURN_IF_ERROR(workers_[i]->SendHello());
    last_heartbeat_ms_[i] = NowMs();
  }
  return WaitForWelcomes(added, 2, deadline, "hello");
}

Status SimFleet::ReadyAll(uint32_t slots) {
  for (auto& w : workers_) PCFARM_RETURN_IF_ERROR(w->SendReady(slots));
  return Status::Ok();
}

Status SimFleet::Pump(int timeout_ms, int sweep_ms) {
  std::vector<zmq::pollitem_t> items;
  items.reserve(workers_.size());
  for (auto& w : workers_) items.push_back({w->socket()->handle(), 0, ZMQ_POLLIN, 0});
  try {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  } catch (const zmq::error_t& e) {
    return Unavailable(std::string("fleet poll: ") + e.what());
  }
  double now = MonotonicSeconds();
  bool sweep = (now - last_sweep_) * 1000.0 >= sweep_ms;
  if (sweep) last_sweep_ = now;
  for (size_t i = 0; i < workers_.size(); ++i) {
    if (sweep || (items[i].revents & ZMQ_POLLIN)) {
      PCFARM_RETURN_IF_ERROR(workers_[i]->Step(0));
    }
  }
  return Status::Ok();
}

Result<uint64_t> SimFleet::Idle(int ms, int heartbeat_interval_ms, int drain_ms) {
  const size_t n = workers_.size();
  if (n == 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return uint64_t{0};
  }
  int64_t start = NowMs();
  int64_t end = start + ms;
  // Worker i heartbeats at start + offset_i + k * interval.
  std::vector<int64_t> next(n);
  for (size_t i = 0; i < n; ++i) {
    next[i] = start + static_cast<int64_t>(i) * heartbeat_interval_ms /
                          static_cast<int64_t>(n);
  }
  uint64_t sent = 0;
  int64_t next_drain = start;
  size_t cursor = 0;  // workers are due in index order, round after round
  zmq::message_t msg;
  while (true) {
    int64_t now = NowMs();
    if (now >= end) break;
    for (size_t k = 0; k < n && next[cursor] <= now; ++k) {
      PCFARM_RETURN_IF_ERROR(workers_[cursor]->SendHeartbeat());
      next[cursor] += heartbeat_interval_ms;
      sent++;
      cursor = (cursor + 1) % n;
    }
    if (now >= next_drain) {
      for (auto& w : workers_) {
        try {
          while (w->socket()->recv(msg, zmq::recv_flags::dontwait)) {
          }
        } catch (const zmq::error_t& e) {
          return Unavailable(std::string("fleet drain: ") + e.what());
        }
      }
      next_drain = now + drain_ms;
    }
    int64_t wake = std::min({next[cursor], next_drain, end});
    int64_t wait = wake - NowMs();
    if (wait > 0) std::this_thread::sleep_for(std::chrono::milliseconds(wait));
  }
  return sent;
}

uint64_t SimFleet::acks() const {
  uint64_t t = 0;
  for (const auto& w : workers_) t += w->stats().acks;
  return t;
}

uint64_t SimFleet::results_sent() const {
  uint64_t t = 0;
  for (const auto& w : workers_) t += w->stats().results_sent;
  return t;
}

uint64_t SimFleet::rejects() const {
  uint64_t t = 0;
  for (const auto& w : workers_) t += w->stats().rejects;
  return t;
}

}  // namespace pcfarm
