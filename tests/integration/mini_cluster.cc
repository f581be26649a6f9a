#include "tests/integration/mini_cluster.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <thread>

#include "base/clock.h"
#include "base/file.h"

extern char** environ;

namespace pcfarm {

namespace fs = std::filesystem;

namespace {

using Steady = std::chrono::steady_clock;

double SecondsSince(Steady::time_point t) {
  return std::chrono::duration<double>(Steady::now() - t).count();
}

// argv as one line, the program by its file name.
std::string Join(const std::vector<std::string>& argv) {
  std::string s;
  for (size_t i = 0; i < argv.size(); ++i) {
    if (i > 0) s += ' ';
    s += i == 0 ? fs::path(argv[0]).filename().string() : argv[i];
  }
  return s;
}

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string Tail(const std::string& text, size_t max_bytes) {
  if (text.size() <= max_bytes) return text;
  return "[... " + std::to_string(text.size() - max_bytes) + " bytes ...]\n" +
         text.substr(text.size() - max_bytes);
}

// The environment every child gets: ours, with OpenBLAS kept to one thread
// (the test machines have few cores, shared by several processes).
std::vector<std::string> ChildEnvironment() {
  std::vector<std::string> env;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "OPENBLAS_NUM_THREADS=", 21) == 0) continue;
    env.emplace_back(*e);
  }
  env.emplace_back("OPENBLAS_NUM_THREADS=1");
  return env;
}

std::vector<char*> CStrings(std::vector<std::string>& v) {
  std::vector<char*> out;
  for (auto& s : v) out.push_back(s.data());
  out.push_back(nullptr);
  return out;
}

// Forks and execs argv with stdout to `out_path` and stderr to `err_path`
// (appended). Only async-signal-safe calls run in the child before exec.
Result<pid_t> Spawn(std::vector<std::string> argv, const std::string& out_path,
                    const std::string& err_path) {
  std::vector<std::string> env = ChildEnvironment();
  std::vector<char*> cargv = CStrings(argv);
  std::vector<char*> cenv = CStrings(env);
  int out_fd = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int err_fd = err_path == out_path
                   ? out_fd
                   : ::open(err_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (out_fd < 0 || err_fd < 0 || null_fd < 0) {
    std::string why = std::strerror(errno);
    for (int fd : {out_fd, err_fd == out_fd ? -1 : err_fd, null_fd}) {
      if (fd >= 0) ::close(fd);
    }
    return IoError("cannot open the log files " + out_path + ": " + why);
  }
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) {
    std::string why = std::strerror(errno);
    ::close(out_fd);
    if (err_fd != out_fd) ::close(err_fd);
    ::close(null_fd);
    return IoError("fork: " + why);
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(127);
    ::dup2(null_fd, 0);
    ::dup2(out_fd, 1);
    ::dup2(err_fd, 2);
    ::execve(cargv[0], cargv.data(), cenv.data());
    const char msg[] = "exec failed\n";
    ssize_t ignored = ::write(2, msg, sizeof msg - 1);
    (void)ignored;
    ::_exit(127);
  }
  ::close(out_fd);
  if (err_fd != out_fd) ::close(err_fd);
  ::close(null_fd);
  return pid;
}

// Reaps `pid` if it has exited: true then, with its exit code (-1 for a
// signal).
bool Reap(pid_t pid, int* exit_code) {
  int status = 0;
  pid_t r = ::waitpid(pid, &status, WNOHANG);
  if (r == 0) return false;
  if (r < 0) {
    *exit_code = -1;
    return true;  // not our child any more
  }
  *exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return true;
}

}  // namespace

bool WaitUntil(const std::function<bool()>& cond, int timeout_ms, int poll_ms) {
  auto deadline = Steady::now() + std::chrono::milliseconds(timeout_ms);
  while (true) {
    if (cond()) return true;
    if (Steady::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(poll_ms));
  }
}

namespace {

// Whether 127.0.0.1:port can be bound now (without SO_REUSEADDR, so a port
// with connections in TIME_WAIT does not count as free).
bool PortBindable(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

}  // namespace

Result<int> PickFreePort() {
  // Below the kernel's ephemeral range. A port bind(0) hands out is an
  // ephemeral one: once closed, any outgoing connection on the machine may
  // take it as its source port, and a coordinator restarted on it then
  // failed to bind (CI, ASan stage, restart_test: "cannot bind the status
  // page ... in use"). A port outside the range is only ever taken by an
  // explicit bind.
  int first_ephemeral = 32768;
  if (auto range = ReadFile("/proc/sys/net/ipv4/ip_local_port_range", 256); range.ok()) {
    std::istringstream in(*range);
    int lo = 0;
    if (in >> lo && lo > 1024) first_ephemeral = lo;
  }
  constexpr int kLowest = 10000;
  if (first_ephemeral - kLowest >= 1000) {
    static std::mt19937 rng(std::random_device{}() ^ static_cast<uint32_t>(::getpid()));
    std::uniform_int_distribution<int> pick(kLowest, first_ephemeral - 1);
    for (int attempt = 0; attempt < 200; ++attempt) {
      const int port = pick(rng);
      if (PortBindable(port)) return port;
    }
  }
  // A machine whose ephemeral range leaves no room below it: bind(0).
  int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return IoError(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    return IoError(std::string("bind 127.0.0.1:0: ") + std::strerror(errno));
  }
  ::close(fd);
  return static_cast<int>(ntohs(addr.sin_port));
}

// ------------------------------------------------------------ CommandResult

std::string CommandResult::LastLine() const {
  size_t end = out.find_last_not_of("\r\n \t");
  if (end == std::string::npos) return "";
  size_t start = out.rfind('\n', end);
  start = start == std::string::npos ? 0 : start + 1;
  return out.substr(start, end - start + 1);
}

std::string CommandResult::Describe() const {
  std::ostringstream s;
  s << "`" << command << "` ";
  if (timed_out) {
    s << "was killed at its deadline";
  } else {
    s << "exited " << exit_code;
  }
  s << " after " << seconds << " s; stdout: " << Tail(out, 2000)
    << "; stderr: " << Tail(err, 2000);
  return s.str();
}

// ------------------------------------------------------------- ChildProcess

ChildProcess::~ChildProcess() {
  if (pid_ > 0 && running()) Signal(SIGKILL, 5000).IgnoreError();
}

Status ChildProcess::Start(const std::vector<std::string>& argv,
                           const std::string& log_path) {
  if (pid_ > 0 && running()) {
    return FailedPrecondition("process " + std::to_string(pid_) + " still running");
  }
  {
    std::ofstream log(log_path, std::ios::app);
    log << "==== start: " << Join(argv) << "\n";
  }
  PCFARM_ASSIGN_OR_RETURN(pid_t pid, Spawn(argv, log_path, log_path));
  pid_ = pid;
  exit_code_ = -1;
  return Status::Ok();
}

bool ChildProcess::running() {
  if (pid_ <= 0) return false;
  int code = -1;
  if (Reap(pid_, &code)) {
    exit_code_ = code;
    pid_ = -1;
    return false;
  }
  return true;
}

Status ChildProcess::Wait(int timeout_ms) {
  if (WaitUntil([&] { return !running(); }, timeout_ms, 5)) return Status::Ok();
  return Timeout("process " + std::to_string(pid_) + " still running after " +
                 std::to_string(timeout_ms) + " ms");
}

Status ChildProcess::Signal(int sig, int timeout_ms) {
  if (!running()) return Status::Ok();
  ::kill(pid_, sig);
  return Wait(timeout_ms);
}

// ------------------------------------------------------------------- DbView

Result<std::vector<DbView::Row>> DbView::Query(const std::string& sql) const {
  sqlite3* db = nullptr;
  int rc = sqlite3_open_v2(path_.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = db ? sqlite3_errmsg(db) : sqlite3_errstr(rc);
    sqlite3_close(db);
    return IoError("open " + path_ + " read-only: " + m);
  }
  sqlite3_busy_timeout(db, 5000);
  sqlite3_stmt* st = nullptr;
  rc = sqlite3_prepare_v2(db, sql.c_str(), -1, &st, nullptr);
  if (rc != SQLITE_OK) {
    std::string m = sqlite3_errmsg(db);
    sqlite3_close(db);
    return InvalidArgument("query `" + sql + "`: " + m);
  }
  std::vector<Row> rows;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    Row row;
    int n = sqlite3_column_count(st);
    for (int c = 0; c < n; ++c) {
      if (sqlite3_column_type(st, c) == SQLITE_NULL) {
        row.emplace_back();
        continue;
      }
      const void* p = sqlite3_column_blob(st, c);
      int bytes = sqlite3_column_bytes(st, c);
      row.emplace_back(static_cast<const char*>(p), p ? bytes : 0);
    }
    rows.push_back(std::move(row));
  }
  Status s = Status::Ok();
  if (rc != SQLITE_DONE) s = IoError("query `" + sql + "`: " + sqlite3_errmsg(db));
  sqlite3_finalize(st);
  sqlite3_close(db);
  if (!s.ok()) return s;
  return rows;
}

Result<int64_t> DbView::QueryInt(const std::string& sql) const {
  PCFARM_ASSIGN_OR_RETURN(auto rows, Query(sql));
  if (rows.empty() || rows[0].empty()) return NotFound("no rows for `" + sql + "`");
  try {
    return static_cast<int64_t>(std::stoll(rows[0][0]));
  } catch (const std::exception&) {
    return InvalidArgument("`" + sql + "` gave '" + rows[0][0] + "', not an integer");
  }
}

// -------------------------------------------------------------- MiniCluster

MiniCluster::MiniCluster(MiniClusterOptions options)
    : options_(std::move(options)) {}

MiniCluster::~MiniCluster() {
  for (auto& w : workers_) w.proc.reset();  // SIGKILL the live ones
  if (coordinator_.running()) coordinator_.Signal(SIGKILL, 5000).IgnoreError();
  if (!dir_.empty() && std::getenv("PCFARM_KEEP_TEST_DIR") == nullptr) {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }
}

std::string MiniCluster::Binary(const std::string& name) const {
  return bin_dir_ + "/" + name;
}

Status MiniCluster::Init() { return InitDir(""); }

Status MiniCluster::InitFromDataDir(const std::string& source) {
  if (source.empty()) return InvalidArgument("no data directory to copy");
  return InitDir(source);
}

namespace {

// Points the endpoints of a copied data directory at `workers` / `clients`.
Status RewriteEndpoints(const std::string& dir, const std::string& workers,
                        const std::string& clients) {
  auto rewrite = [](const std::string& path,
                    const std::function<void(nlohmann::json*)>& change) -> Status {
    PCFARM_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
    nlohmann::json j = nlohmann::json::parse(text, nullptr, false);
    if (!j.is_object()) return Corruption(path + ": not a JSON object");
    change(&j);
    return WriteFileAtomic(path, j.dump(2) + "\n", 0600);
  };
  PCFARM_RETURN_IF_ERROR(rewrite(dir + "/config.json", [&](nlohmann::json* j) {
    (*j)["workers_endpoint"] = workers;
    (*j)["clients_endpoint"] = clients;
    (*j)["advertise_endpoint"] = workers;
  }));
  for (const auto& e : fs::directory_iterator(dir)) {
    if (e.path().extension() != ".profile") continue;
    PCFARM_RETURN_IF_ERROR(rewrite(e.path().string(), [&](nlohmann::json* j) {
      (*j)["endpoint"] = clients;
    }));
  }
  return Status::Ok();
}

}  // namespace

Status MiniCluster::InitDir(const std::string& source) {
  if (!dir_.empty()) return FailedPrecondition("MiniCluster::Init called twice");
  const char* env_bin = std::getenv("PCFARM_BIN_DIR");
  if (env_bin && *env_bin) {
    bin_dir_ = env_bin;
  } else {
    std::error_code ec;
    bin_dir_ = fs::read_symlink("/proc/self/exe", ec).parent_path().string();
  }
  for (const char* b : {"pcfarm-coordinator", "pcfarm"}) {
    if (::access(Binary(b).c_str(), X_OK) != 0) {
      return NotFound("no executable " + Binary(b) +
                      " (build it, or set PCFARM_BIN_DIR)");
    }
  }
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/pcfarm-it-XXXXXX";
  if (!::mkdtemp(tmpl.data())) {
    return IoError("mkdtemp " + tmpl + ": " + std::strerror(errno));
  }
  dir_ = tmpl;
  PCFARM_RETURN_IF_ERROR(MakeDirs(dir_ + "/cmd", 0700));
  coordinator_dir_ = dir_ + "/coordinator";
  coordinator_log_ = dir_ + "/coordinator.log";
  admin_profile_ = coordinator_dir_ + "/admin.profile";
  db_ = DbView(coordinator_dir_ + "/coordinator.db");
  PCFARM_ASSIGN_OR_RETURN(int workers_port, PickFreePort());
  PCFARM_ASSIGN_OR_RETURN(int clients_port, PickFreePort());
  for (int i = 0; i < 10 && clients_port == workers_port; ++i) {
    PCFARM_ASSIGN_OR_RETURN(clients_port, PickFreePort());
  }
  PCFARM_ASSIGN_OR_RETURN(int http_port, PickFreePort());
  for (int i = 0; i < 10 && (http_port == workers_port || http_port == clients_port); ++i) {
    PCFARM_ASSIGN_OR_RETURN(http_port, PickFreePort());
  }
  http_endpoint_ = "127.0.0.1:" + std::to_string(http_port);
  workers_endpoint_ = "tcp://127.0.0.1:" + std::to_string(workers_port);
  clients_endpoint_ = "tcp://127.0.0.1:" + std::to_string(clients_port);
  if (!source.empty()) {
    std::error_code ec;
    fs::copy(source, coordinator_dir_, fs::copy_options::recursive, ec);
    if (ec) return IoError("copy " + source + ": " + ec.message());
    // Git keeps no modes: the keys and profiles are 0600 as init made them.
    for (const auto& e : fs::recursive_directory_iterator(coordinator_dir_)) {
      fs::permissions(e.path(),
                      e.is_directory() ? fs::perms::owner_all : fs::perms::owner_read |
                                                                    fs::perms::owner_write,
                      ec);
    }
    fs::permissions(coordinator_dir_, fs::perms::owner_all, ec);
    return RewriteEndpoints(coordinator_dir_, workers_endpoint_, clients_endpoint_);
  }
  CommandResult r = Run({Binary("pcfarm-coordinator"), "init", "--data",
                         coordinator_dir_, "--workers-endpoint", workers_endpoint_,
                         "--clients-endpoint", clients_endpoint_, "--advertise",
                         workers_endpoint_, "--http-endpoint", http_endpoint_},
                        30'000);
  if (r.exit_code != 0) return Internal("coordinator init failed: " + r.Describe());
  if (::access(admin_profile_.c_str(), R_OK) != 0) {
    return NotFound("init did not write " + admin_profile_);
  }
  return Status::Ok();
}

CommandResult MiniCluster::Run(const std::vector<std::string>& argv,
                               int deadline_ms) {
  CommandResult r;
  r.command = Join(argv);
  int n = ++commands_run_;
  std::string base = dir_.empty() ? std::string("/tmp/pcfarm-it-cmd-") +
                                        std::to_string(::getpid()) + "-" +
                                        std::to_string(n)
                                  : dir_ + "/cmd/" + std::to_string(n);
  std::string out_path = base + ".out", err_path = base + ".err";
  auto start = Steady::now();
  auto pid = Spawn(argv, out_path, err_path);
  if (!pid.ok()) {
    r.err = pid.status().ToString();
    return r;
  }
  int code = -1;
  auto deadline = start + std::chrono::milliseconds(deadline_ms);
  int sleep_us = 500;
  while (!Reap(*pid, &code)) {
    if (Steady::now() >= deadline) {
      ::kill(*pid, SIGKILL);
      while (!Reap(*pid, &code)) std::this_thread::sleep_for(std::chrono::milliseconds(1));
      r.timed_out = true;
      code = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(sleep_us));
    sleep_us = std::min(sleep_us * 2, 10'000);
  }
  r.seconds = SecondsSince(start);
  r.exit_code = code;
  r.out = ReadAll(out_path);
  r.err = ReadAll(err_path);
  if (dir_.empty()) {
    ::unlink(out_path.c_str());
    ::unlink(err_path.c_str());
  }
  return r;
}

// ------------------------------------------------------------- coordinator

Status MiniCluster::StartCoordinator(int timeout_ms) {
  if (dir_.empty()) return FailedPrecondition("call Init() first");
  std::vector<std::string> argv = {
      Binary("pcfarm-coordinator"), "serve", "--data", coordinator_dir_,
      "--heartbeat-interval-ms", std::to_string(options_.heartbeat_interval_ms),
      "--heartbeat-liveness", std::to_string(options_.heartbeat_liveness),
      "--lease-ms", std::to_string(options_.lease_ms),
      "--max-attempts", std::to_string(options_.max_attempts),
      "--http-endpoint", http_endpoint_,
      "--log-level", options_.log_level};
  argv.insert(argv.end(), options_.coordinator_args.begin(), options_.coordinator_args.end());
  PCFARM_RETURN_IF_ERROR(coordinator_.Start(argv, coordinator_log_));
  Status last = Status::Ok();
  bool up = WaitUntil(
      [&] {
        if (!coordinator_.running()) return true;
        CommandResult r = Cli({"stats", "--json"}, 1, 5000);
        return r.exit_code == 0;
      },
      timeout_ms, 20);
  if (!coordinator_.running()) {
    return Internal("the coordinator exited with " +
                    std::to_string(coordinator_.exit_code()) +
                    " while starting; log:\n" + Tail(CoordinatorLog(), 3000));
  }
  if (!up) {
    return Timeout("the coordinator did not answer within " +
                   std::to_string(timeout_ms) + " ms; log:\n" +
                   Tail(CoordinatorLog(), 3000));
  }
  return Status::Ok();
}

Status MiniCluster::StopCoordinator(int timeout_ms, bool require_clean_exit) {
  if (!coordinator_.running()) return FailedPrecondition("the coordinator is not running");
  PCFARM_RETURN_IF_ERROR(coordinator_.Signal(SIGTERM, timeout_ms));
  if (require_clean_exit && coordinator_.exit_code() != 0) {
    return Internal("the coordinator exited with " +
                    std::to_string(coordinator_.exit_code()) + " on SIGTERM");
  }
  return Status::Ok();
}

Status MiniCluster::KillCoordinator() {
  if (!coordinator_.running()) return FailedPrecondition("the coordinator is not running");
  return coordinator_.Signal(SIGKILL, 5000);
}

std::string MiniCluster::CoordinatorLog() const { return ReadAll(coordinator_log_); }

// ------------------------------------------------------------------ workers

CommandResult MiniCluster::EnrollWorker(const std::string& name,
                                        const std::string& token) {
  Worker w;
  w.name = name;
  w.dir = dir_ + "/worker-" + std::to_string(workers_.size()) + "-" + name;
  w.log = w.dir + ".log";
  w.proc = std::make_unique<ChildProcess>();
  std::string dir = w.dir;
  workers_.push_back(std::move(w));
  if (::access(Binary("pcfarm-worker").c_str(), X_OK) != 0) {
    CommandResult r;
    r.command = "pcfarm-worker enroll";
    r.err = "no executable " + Binary("pcfarm-worker");
    return r;
  }
  return Run({Binary("pcfarm-worker"), "enroll", "--token", token, "--data", dir,
              "--name", name},
             30'000);
}

Status MiniCluster::StartWorker(int index, const std::vector<std::string>& extra_args) {
  if (index < 0 || index >= worker_count()) {
    return InvalidArgument("no worker " + std::to_string(index));
  }
  Worker& w = workers_[index];
  std::vector<std::string> argv = {
      Binary("pcfarm-worker"), "run", "--data", w.dir, "--slots",
      std::to_string(options_.worker_slots), "--heartbeat-interval-ms",
      std::to_string(options_.heartbeat_interval_ms), "--log-level",
      options_.log_level};
  if (options_.worker_heartbeat_liveness > 0) {
    argv.push_back("--heartbeat-liveness");
    argv.push_back(std::to_string(options_.worker_heartbeat_liveness));
  }
  argv.insert(argv.end(), extra_args.begin(), extra_args.end());
  return w.proc->Start(argv, w.log);
}

Result<int> MiniCluster::AddWorker(const std::string& name) {
  PCFARM_ASSIGN_OR_RETURN(std::string token, CreateToken(1, "1h"));
  CommandResult r = EnrollWorker(name, token);
  if (r.exit_code != 0) return Internal("enrolling " + name + ": " + r.Describe());
  int index = worker_count() - 1;
  PCFARM_RETURN_IF_ERROR(StartWorker(index));
  return index;
}

Status MiniCluster::KillWorker(int index) {
  if (index < 0 || index >= worker_count()) {
    return InvalidArgument("no worker " + std::to_string(index));
  }
  if (!workers_[index].proc->running()) {
    return FailedPrecondition("worker " + workers_[index].name + " is not running");
  }
  return workers_[index].proc->Signal(SIGKILL, 5000);
}

bool MiniCluster::worker_running(int index) {
  return index >= 0 && index < worker_count() && workers_[index].proc->running();
}

int MiniCluster::worker_exit_code(int index) const {
  if (index < 0 || index >= worker_count()) return -1;
  return workers_[index].proc->exit_code();
}

Status MiniCluster::PauseWorker(int index) {
  if (index < 0 || index >= worker_count() || !workers_[index].proc->running()) {
    return FailedPrecondition("worker " + std::to_string(index) + " is not running");
  }
  if (::kill(workers_[index].proc->pid(), SIGSTOP) != 0) {
    return Internal(std::string("SIGSTOP: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status MiniCluster::ResumeWorker(int index) {
  if (index < 0 || index >= worker_count() || !workers_[index].proc->running()) {
    return FailedPrecondition("worker " + std::to_string(index) + " is not running");
  }
  if (::kill(workers_[index].proc->pid(), SIGCONT) != 0) {
    return Internal(std::string("SIGCONT: ") + std::strerror(errno));
  }
  return Status::Ok();
}

Status MiniCluster::StopWorker(int index, int timeout_ms) {
  if (index < 0 || index >= worker_count()) {
    return InvalidArgument("no worker " + std::to_string(index));
  }
  return workers_[index].proc->Signal(SIGTERM, timeout_ms);
}

const std::string& MiniCluster::worker_dir(int index) const {
  return workers_.at(index).dir;
}

const std::string& MiniCluster::worker_name(int index) const {
  return workers_.at(index).name;
}

// ---------------------------------------------------------------------- CLI

CommandResult MiniCluster::Cli(const std::vector<std::string>& args,
                               double timeout_s, int deadline_ms) {
  std::ostringstream t;
  t << timeout_s;
  std::vector<std::string> argv = {Binary("pcfarm"), "--profile", admin_profile_,
                                   "--timeout", t.str()};
  argv.insert(argv.end(), args.begin(), args.end());
  return Run(argv, deadline_ms);
}

Result<nlohmann::json> MiniCluster::CliJson(const std::vector<std::string>& args) {
  std::vector<std::string> a = args;
  a.push_back("--json");
  CommandResult r = Cli(a);
  if (r.exit_code != 0) return Internal(r.Describe());
  try {
    return nlohmann::json::parse(r.LastLine());
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgument("not JSON: " + r.Describe() + ": " + e.what());
  }
}

Result<std::string> MiniCluster::CreateToken(int uses, const std::string& ttl) {
  CommandResult r =
      Cli({"token", "create", "--uses", std::to_string(uses), "--ttl", ttl});
  if (r.exit_code != 0) return Internal(r.Describe());
  std::string token = r.LastLine();
  if (token.rfind("pcfarm1.", 0) != 0) {
    return InvalidArgument("token create printed no token: " + r.Describe());
  }
  return token;
}

Result<int64_t> MiniCluster::SubmitBench(int shards, int size, int redundancy,
                                         int reps) {
  CommandResult r = Cli({"submit", "bench", "--shards", std::to_string(shards),
                         "--size", std::to_string(size), "--redundancy",
                         std::to_string(redundancy), "--reps",
                         std::to_string(reps)});
  if (r.exit_code != 0) return Internal(r.Describe());
  try {
    return static_cast<int64_t>(std::stoll(r.LastLine()));
  } catch (const std::exception&) {
    return InvalidArgument("submit printed no job id: " + r.Describe());
  }
}

Result<nlohmann::json> MiniCluster::JobStatus(int64_t job) {
  return CliJson({"status", std::to_string(job)});
}

Result<nlohmann::json> MiniCluster::Stats() { return CliJson({"stats"}); }

Result<nlohmann::json> MiniCluster::Workers() { return CliJson({"workers"}); }

Status MiniCluster::WaitForConnectedWorkers(int n, int timeout_ms) {
  int connected = 0;
  Status last = Status::Ok();
  bool ok = WaitUntil(
      [&] {
        auto w = Workers();
        if (!w.ok()) {
          last = w.status();
          return false;
        }
        connected = 0;
        for (const auto& x : *w) {
          if (x.value("connected", false)) connected++;
        }
        return connected >= n;
      },
      timeout_ms, 100);
  if (ok) return Status::Ok();
  return Timeout(std::to_string(connected) + " of " + std::to_string(n) +
                 " workers connected after " + std::to_string(timeout_ms) +
                 " ms" + (last.ok() ? "" : "; last error: " + last.message()));
}

Result<std::string> MiniCluster::WaitForJobEnd(int64_t job, int timeout_ms) {
  std::string state;
  Status last = Status::Ok();
  std::string sql = "SELECT state FROM jobs WHERE id=" + std::to_string(job);
  bool ok = WaitUntil(
      [&] {
        auto rows = db_.Query(sql);
        if (!rows.ok()) {
          last = rows.status();
          return false;
        }
        if (rows->empty()) {
          last = NotFound("no job " + std::to_string(job));
          return false;
        }
        state = (*rows)[0][0];
        return state == "succeeded" || state == "failed" || state == "cancelled";
      },
      timeout_ms, 50);
  if (ok) return state;
  return Timeout("job " + std::to_string(job) + " still '" + state + "' after " +
                 std::to_string(timeout_ms) + " ms" +
                 (last.ok() ? "" : "; " + last.message()) + "; " + DescribeJob(job));
}

// What a stalled job waits for, in one line for a test's failure message
// (CI shows little more than that): its shards by state, the attempts of
// its first unfinished shards, and each worker's standing.
std::string MiniCluster::DescribeJob(int64_t job) const {
  const std::string j = std::to_string(job);
  auto join = [](const Result<std::vector<DbView::Row>>& rows, const char* sep) {
    if (!rows.ok()) return "(" + rows.status().message() + ")";
    std::string out;
    for (const auto& row : *rows) {
      if (!out.empty()) out += sep;
      for (size_t i = 0; i < row.size(); ++i) out += (i ? ":" : "") + row[i];
    }
    return out;
  };
  const int64_t now = SystemClock::Get()->NowMs();
  std::string s = "shards " + join(db_.Query("SELECT state, count(*) FROM shards WHERE "
                                             "job_id=" + j + " GROUP BY state"), ",");
  s += "; unfinished " +
       join(db_.Query("SELECT s.idx, s.copies, (SELECT group_concat(a.worker_id||'/'||a.state"
                      "||'/'||IFNULL((SELECT r.outcome FROM results r WHERE r.attempt_id=a.id),"
                      "'-'),' ') FROM attempts a WHERE a.shard_id=s.id) FROM shards s WHERE "
                      "s.job_id=" + j + " AND s.state<>'accepted' ORDER BY s.idx LIMIT 6"),
            ", ");
  s += "; workers (id:name:banned:streak:ms since available) " +
       join(db_.Query("SELECT id, name, banned, streak, " + std::to_string(now) +
                      "-available_ms FROM workers ORDER BY id"),
            ", ");
  return s;
}

// ---------------------------------------------------------------- inspection

std::string MiniCluster::DumpLogs(size_t max_bytes) const {
  std::ostringstream s;
  s << "==== MiniCluster " << dir_ << "\n";
  s << "---- coordinator log (" << coordinator_log_ << ")\n"
    << Tail(ReadAll(coordinator_log_), max_bytes) << "\n";
  for (const auto& w : workers_) {
    s << "---- worker " << w.name << " log (" << w.log << ")\n"
      << Tail(ReadAll(w.log), max_bytes) << "\n";
  }
  return s.str();
}

}  // namespace pcfarm
