#include "worker/worker_config.h"

#include <cmath>
#include <cstdio>
#include <functional>
#include <map>

#include <toml++/toml.h>

#include "base/file.h"

namespace pcfarm {

bool ScheduleWindow::Contains(int minute_of_day) const {
  if (start_minute == end_minute) return true;  // the whole day
  if (start_minute < end_minute) {
    return minute_of_day >= start_minute && minute_of_day < end_minute;
  }
  // Across midnight: from the start to midnight, and from midnight to the end.
  return minute_of_day >= start_minute || minute_of_day < end_minute;
}

Result<ScheduleWindow> ParseScheduleWindow(std::string_view text) {
  auto bad = [&](const std::string& why) {
    return InvalidArgument("\"" + std::string(text) + "\" is not HH:MM-HH:MM (" + why + ")");
  };
  if (text.size() != 11 || text[2] != ':' || text[5] != '-' || text[8] != ':') {
    return bad("expected e.g. 22:00-07:00");
  }
  auto two = [&](size_t at, int* out) {
    if (text[at] < '0' || text[at] > '9' || text[at + 1] < '0' || text[at + 1] > '9') {
      return false;
    }
    *out = (text[at] - '0') * 10 + (text[at + 1] - '0');
    return true;
  };
  int h1, m1, h2, m2;
  if (!two(0, &h1) || !two(3, &m1) || !two(6, &h2) || !two(9, &m2)) {
    return bad("hours and minutes are two digits each");
  }
  // 24:00 is allowed as an end ("18:00-24:00").
  if (h1 > 23 || m1 > 59 || h2 > 24 || m2 > 59 || (h2 == 24 && m2 != 0)) {
    return bad("hours 00..23, minutes 00..59");
  }
  ScheduleWindow w;
  w.start_minute = h1 * 60 + m1;
  w.end_minute = (h2 * 60 + m2) % (24 * 60);
  return w;
}

bool InsideSchedule(const std::vector<ScheduleWindow>& windows, int minute_of_day) {
  if (windows.empty()) return true;
  for (const auto& w : windows) {
    if (w.Contains(minute_of_day)) return true;
  }
  return false;
}

int MinutesUntilScheduleOpens(const std::vector<ScheduleWindow>& windows,
                              int minute_of_day) {
  for (int d = 0; d < 24 * 60; ++d) {
    if (InsideSchedule(windows, (minute_of_day + d) % (24 * 60))) return d;
  }
  return -1;
}

namespace {

// Reads one table's keys into fields, refusing unknown keys and wrong types.
class TableReader {
 public:
  TableReader(const toml::table& table, std::string prefix, std::string source)
      : table_(table), prefix_(std::move(prefix)), source_(std::move(source)) {}

  Status Int(const char* key, int64_t lo, int64_t hi, int64_t* out) {
    return Visit(key, [&](const toml::node& n) -> Status {
      auto v = n.value<int64_t>();
      if (!n.is_integer() || !v) return Bad(key, "must be an integer");
      if (*v < lo || *v > hi) {
        return Bad(key, "must be " + std::to_string(lo) + ".." + std::to_string(hi) +
                            ", got " + std::to_string(*v));
      }
      *out = *v;
      return Status::Ok();
    });
  }
  Status Int(const char* key, int64_t lo, int64_t hi, int* out) {
    int64_t v = *out;
    PCFARM_RETURN_IF_ERROR(Int(key, lo, hi, &v));
    *out = static_cast<int>(v);
    return Status::Ok();
  }
  Status Int(const char* key, int64_t lo, int64_t hi, uint64_t* out) {
    int64_t v = static_cast<int64_t>(*out);
    PCFARM_RETURN_IF_ERROR(Int(key, lo, hi, &v));
    *out = static_cast<uint64_t>(v);
    return Status::Ok();
  }
  Status Number(const char* key, double lo, double hi, double* out) {
    return Visit(key, [&](const toml::node& n) -> Status {
      if (!n.is_number()) return Bad(key, "must be a number");
      double v = n.is_integer() ? double(*n.value<int64_t>()) : *n.value<double>();
      if (!std::isfinite(v) || v < lo || v > hi) {
        char buf[128];
        std::snprintf(buf, sizeof buf, "must be %g..%g, got %g", lo, hi, v);
        return Bad(key, buf);
      }
      *out = v;
      return Status::Ok();
    });
  }
  Status Bool(const char* key, bool* out) {
    return Visit(key, [&](const toml::node& n) -> Status {
      if (!n.is_boolean()) return Bad(key, "must be true or false");
      *out = *n.value<bool>();
      return Status::Ok();
    });
  }
  Status String(const char* key, std::string* out) {
    return Visit(key, [&](const toml::node& n) -> Status {
      if (!n.is_string()) return Bad(key, "must be a string");
      *out = *n.value<std::string>();
      return Status::Ok();
    });
  }
  Status Windows(const char* key, std::vector<ScheduleWindow>* out) {
    return Visit(key, [&](const toml::node& n) -> Status {
      const toml::array* arr = n.as_array();
      if (!arr) return Bad(key, "must be a list of \"HH:MM-HH:MM\" strings");
      out->clear();
      for (size_t i = 0; i < arr->size(); ++i) {
        const toml::node& e = *arr->get(i);
        std::string at = std::string(key) + "[" + std::to_string(i) + "]";
        if (!e.is_string()) return Bad(at.c_str(), "must be a string \"HH:MM-HH:MM\"");
        auto w = ParseScheduleWindow(*e.value<std::string>());
        if (!w.ok()) return Bad(at.c_str(), w.status().message());
        out->push_back(*w);
      }
      return Status::Ok();
    });
  }
  // A key this reader was not asked about: an error (typos must not pass).
  Status Unknown() const {
    for (auto&& [k, v] : table_) {
      std::string key(k.str());
      if (!seen_.count(key)) {
        return InvalidArgument(source_ + ": unknown key '" + prefix_ + key + "'" +
                               (v.is_table() ? " (an unknown section)" : ""));
      }
    }
    return Status::Ok();
  }
  void Allow(const char* key) { seen_[key] = true; }

 private:
  Status Visit(const char* key, const std::function<Status(const toml::node&)>& f) {
    seen_[key] = true;
    const toml::node* n = table_.get(key);
    if (!n) return Status::Ok();
    return f(*n);
  }
  Status Bad(const char* key, const std::string& why) const {
    return InvalidArgument(source_ + ": " + prefix_ + key + " " + why);
  }

  const toml::table& table_;
  std::string prefix_, source_;
  std::map<std::string, bool> seen_;
};

Status ReadSection(const toml::table& root, const char* name, const std::string& source,
                   const std::function<Status(TableReader&)>& f) {
  const toml::node* n = root.get(name);
  if (!n) return Status::Ok();
  const toml::table* t = n->as_table();
  if (!t) {
    return InvalidArgument(source + ": " + name + " must be a section ([" + name + "])");
  }
  TableReader r(*t, std::string(name) + ".", source);
  PCFARM_RETURN_IF_ERROR(f(r));
  return r.Unknown();
}

}  // namespace

Result<WorkerConfig> ParseWorkerConfig(std::string_view text, std::string_view source_view) {
  std::string source(source_view);
  toml::table root;
  try {
    root = toml::parse(text, source_view);
  } catch (const toml::parse_error& e) {
    return InvalidArgument(source + ":" + std::to_string(e.source().begin.line) +
                           ": not valid TOML: " + std::string(e.description()));
  }
  WorkerConfig c;
  TableReader top(root, "", source);
  PCFARM_RETURN_IF_ERROR(top.String("data_dir", &c.data_dir));
  if (c.data_dir.empty() || c.data_dir[0] != '/') {
    return InvalidArgument(source + ": data_dir must be an absolute path");
  }
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "devices", source, [&](TableReader& r) {
    PCFARM_RETURN_IF_ERROR(r.String("backend", &c.backend));
    if (c.backend != "auto" && c.backend != "cpu" && c.backend != "vulkan" &&
        c.backend != "cuda") {
      return InvalidArgument(source + ": devices.backend must be auto, cpu, vulkan or cuda, got '" +
                             c.backend + "'");
    }
    PCFARM_RETURN_IF_ERROR(r.Int("device", 0, 63, &c.device));
    PCFARM_RETURN_IF_ERROR(r.Int("slots", 1, 64, &c.slots));
    PCFARM_RETURN_IF_ERROR(r.Int("cpu_threads", 0, 1024, &c.cpu_threads));
    PCFARM_RETURN_IF_ERROR(
        r.Int("max_gpu_memory_mib", 0, int64_t(1) << 30, &c.max_gpu_memory_mib));
    return r.Int("blob_cache_mib", 64, int64_t(1) << 32, &c.blob_cache_mib);
  }));
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "schedule", source, [&](TableReader& r) {
    return r.Windows("run_between", &c.run_between);
  }));
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "idle", source, [&](TableReader& r) {
    PCFARM_RETURN_IF_ERROR(r.Int("idle_minutes", 0, 24 * 60, &c.idle_minutes));
    PCFARM_RETURN_IF_ERROR(
        r.Number("max_other_cpu_percent", 0, 100, &c.max_other_cpu_percent));
    PCFARM_RETURN_IF_ERROR(
        r.Number("max_other_gpu_percent", 0, 100, &c.max_other_gpu_percent));
    PCFARM_RETURN_IF_ERROR(r.Int("check_interval_ms", 20, 10'000, &c.check_interval_ms));
    return r.Int("max_pause_s", 1, 7 * 24 * 3600, &c.max_pause_s);
  }));
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "power", source, [&](TableReader& r) {
    return r.Bool("run_on_battery", &c.run_on_battery);
  }));
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "gpu", source, [&](TableReader& r) {
    PCFARM_RETURN_IF_ERROR(r.Number("max_temperature_c", 0, 150, &c.max_temperature_c));
    return r.Number("max_power_w", 0, 5000, &c.max_power_w);
  }));
  PCFARM_RETURN_IF_ERROR(ReadSection(root, "testing", source, [&](TableReader& r) {
    return r.String("idle_source_dir", &c.idle_source_dir);
  }));
  for (const char* s : {"devices", "schedule", "idle", "power", "gpu", "testing"}) {
    top.Allow(s);
  }
  PCFARM_RETURN_IF_ERROR(top.Unknown());
  return c;
}

Result<WorkerConfig> LoadWorkerConfig(const std::string& path) {
  auto text = ReadFile(path);
  if (!text.ok()) {
    if (text.status().code() == StatusCode::kNotFound) {
      return NotFound("no config file at " + path);
    }
    return text.status();
  }
  return ParseWorkerConfig(*text, path);
}

std::string DefaultWorkerConfigText(const std::string& data_dir) {
  WorkerConfig d;
  std::string s;
  s += "# pcfarm-worker's config (docs/worker-config.md). Restart the service\n";
  s += "# after a change: sudo systemctl restart pcfarm-worker\n";
  s += "data_dir = \"" + data_dir + "\"\n\n";
  s += "[devices]\n";
  s += "backend = \"auto\"          # auto, cpu, vulkan, cuda\n";
  s += "device = 0                # device index for the backend\n";
  s += "slots = 1                 # shards at once\n";
  s += "cpu_threads = 0           # 0: all cores\n";
  s += "max_gpu_memory_mib = 0    # 0: no cap\n";
  s += "blob_cache_mib = " + std::to_string(d.blob_cache_mib) + "\n\n";
  s += "[schedule]\n";
  s += "run_between = []          # e.g. [\"22:00-07:00\"]; empty: any time\n\n";
  s += "[idle]\n";
  s += "idle_minutes = " + std::to_string(d.idle_minutes) +
       "          # no keyboard/mouse input for this long\n";
  s += "max_other_cpu_percent = 25  # pause while other programs use more\n";
  s += "max_other_gpu_percent = 20  # the same for a GPU, where it can be read\n";
  s += "check_interval_ms = " + std::to_string(d.check_interval_ms) + "\n";
  s += "max_pause_s = " + std::to_string(d.max_pause_s) +
       "         # a longer pause hands the shard back\n\n";
  s += "[power]\n";
  s += "run_on_battery = false\n\n";
  s += "[gpu]\n";
  s += "max_temperature_c = 85\n";
  s += "max_power_w = 0           # 0: no cap\n";
  return s;
}

}  // namespace pcfarm
