#include "coordinator/http/status_pages.h"

#include <algorithm>
#include <cstdio>
#include <ctime>

namespace pcfarm {
namespace {

using nlohmann::json;

std::string Num(double v, const char* fmt = "%.4g") {
  char b[64];
  std::snprintf(b, sizeof b, fmt, v);
  return b;
}

std::string Time(int64_t ms) {
  if (ms <= 0) return "-";
  std::time_t t = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  localtime_r(&t, &tm);
  char b[32];
  std::strftime(b, sizeof b, "%Y-%m-%d %H:%M:%S", &tm);
  return b;
}

// Strings from JSON that may hold a worker's text (invalid UTF-8 was
// replaced when it was built).
std::string Str(const json& j, const char* key) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_string()) return "";
  return it->get<std::string>();
}

std::string Layout(const std::string& title, const std::string& page, const std::string& id,
                   const std::string& csrf, const std::string& body) {
  return "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
         "<meta name=\"csrf-token\" content=\"" + HtmlEscape(csrf) + "\">"
         "<title>" + HtmlEscape(title) + " - pcfarm</title>"
         // No icon: else every page load asks for /favicon.ico, a 404.
         "<link rel=\"icon\" href=\"data:,\">"
         "<link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
         "<body data-page=\"" + page + "\" data-id=\"" + HtmlEscape(id) + "\">"
         "<nav><b>pcfarm</b> <a href=\"/\">Overview</a> <a href=\"/workers\">Workers</a> "
         "<a href=\"/jobs\">Jobs</a> <span id=\"live\"></span></nav><main>" +
         body + "</main><script src=\"/static/app.js\"></script></body></html>\n";
}

std::string WorkerRow(const json& w) {
  std::string id = std::to_string(w.value("worker_id", 0));
  return "<tr><td>" + id + "</td><td><a href=\"/workers/" + id + "\">" +
         HtmlEscape(Str(w, "name")) + "</a></td><td>" + WorkerStateName(w) + "</td><td>" +
         std::to_string(w.value("devices", json::array()).size()) + "</td><td>" +
         HtmlEscape(WorkerBackends(w)) + "</td><td>" + Num(w.value("gflops", 0.0), "%.1f") +
         "</td><td>" + Num(w.value("trust", 0.0), "%.2f") + "</td><td>" +
         std::to_string(w.value("agreed", 0)) + "/" + std::to_string(w.value("disagreed", 0)) +
         "</td><td>" + std::to_string(w.value("checks", 0)) + "</td><td>" +
         std::to_string(w.value("strikes", 0)) + "</td><td>" +
         std::to_string(w.value("running", 0)) + "</td><td>" +
         Time(w.value("last_seen_ms", int64_t(0))) + "</td></tr>";
}

std::string Progress(const json& j) {
  double total = j.value("shards_total", 0), done = j.value("shards_accepted", 0);
  double pct = total > 0 ? 100.0 * done / total : 0;
  return "<progress max=\"100\" value=\"" + Num(pct, "%.1f") + "\"></progress> " +
         std::to_string(int64_t(done)) + "/" + std::to_string(int64_t(total));
}

std::string JobRow(const json& j) {
  std::string id = std::to_string(j.value("job_id", 0));
  return "<tr><td><a href=\"/jobs/" + id + "\">" + id + "</a></td><td>" +
         HtmlEscape(Str(j, "kind")) + "</td><td>" + HtmlEscape(Str(j, "state")) +
         "</td><td>" + Progress(j) + "</td><td>" + Time(j.value("created_ms", int64_t(0))) +
         "</td><td class=\"eta\">-</td><td>" + HtmlEscape(Str(j, "owner")) + "</td></tr>";
}

std::string Tiles(const json& o) {
  std::string out = "<div class=\"tiles\">";
  for (const char* k : {"workers_online", "workers_idle", "workers_busy", "workers_quarantined",
                        "workers_offline", "gflops_online", "results_per_second", "jobs_running",
                        "jobs_queued"}) {
    const json& v = o.contains(k) ? o[k] : json(0);
    std::string text = v.is_number_float() ? Num(v.get<double>(), "%.1f") : v.dump();
    out += "<div class=\"tile\"><span class=\"v\" id=\"" + std::string(k) + "\">" +
           HtmlEscape(text) + "</span><span class=\"k\">" + k + "</span></div>";
  }
  return out + "</div>";
}

std::string EventRows(const json& events) {
  std::string out;
  for (const auto& e : events) {
    out += "<tr><td>" + Time(e.value("ts_ms", int64_t(0))) + "</td><td>" +
           HtmlEscape(Str(e, "kind")) + "</td><td>" + HtmlEscape(Str(e, "message")) +
           "</td></tr>";
  }
  return out;
}

}  // namespace

std::string WorkerStateName(const json& w) {
  if (w.value("banned", false)) return "quarantined";
  if (w.value("outdated", false)) return "outdated";
  if (!w.value("connected", false)) return "offline";
  return w.value("running", 0) > 0 ? "busy" : "idle";
}

std::string WorkerBackends(const json& w) {
  std::vector<std::string> seen;
  auto devices = w.find("devices");
  if (devices == w.end() || !devices->is_array()) return "";
  for (const auto& d : *devices) {
    std::string b = Str(d, "backend");
    if (std::find(seen.begin(), seen.end(), b) == seen.end()) seen.push_back(b);
  }
  std::string out;
  for (const auto& b : seen) out += (out.empty() ? "" : ",") + b;
  return out;
}

std::string HtmlEscape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string SvgLinePlot(const std::vector<std::pair<double, double>>& points,
                        const std::string& name, const std::string& title,
                        const std::string& x_label, const std::string& y_label) {
  const int w = 480, h = 220, left = 60, right = 12, top = 24, bottom = 36;
  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" data-plot=\"" +
                    HtmlEscape(name) + "\" width=\"" + std::to_string(w) + "\" height=\"" +
                    std::to_string(h) + "\" viewBox=\"0 0 " + std::to_string(w) + " " +
                    std::to_string(h) + "\"><text x=\"" + std::to_string(left) +
                    "\" y=\"16\" class=\"title\">" + HtmlEscape(title) + "</text>";
  if (points.empty()) {
    return svg + "<text x=\"" + std::to_string(left) + "\" y=\"" + std::to_string(h / 2) +
           "\">no data yet</text></svg>";
  }
  double x0 = points.front().first, x1 = points.front().first;
  double y0 = points.front().second, y1 = points.front().second;
  for (const auto& [x, y] : points) {
    x0 = std::min(x0, x), x1 = std::max(x1, x);
    y0 = std::min(y0, y), y1 = std::max(y1, y);
  }
  if (x1 == x0) x1 = x0 + 1;
  if (y1 == y0) y1 = y0 + (y0 == 0 ? 1 : std::abs(y0) * 0.1);
  const double pw = w - left - right, ph = h - top - bottom;
  auto px = [&](double x) { return left + (x - x0) / (x1 - x0) * pw; };
  auto py = [&](double y) { return top + (1 - (y - y0) / (y1 - y0)) * ph; };
  svg += "<line class=\"axis\" x1=\"" + Num(left) + "\" y1=\"" + Num(top + ph) + "\" x2=\"" +
         Num(left + pw) + "\" y2=\"" + Num(top + ph) + "\"/>";
  svg += "<line class=\"axis\" x1=\"" + Num(left) + "\" y1=\"" + Num(top) + "\" x2=\"" +
         Num(left) + "\" y2=\"" + Num(top + ph) + "\"/>";
  svg += "<text x=\"4\" y=\"" + Num(top + 10) + "\">" + Num(y1) + "</text>";
  svg += "<text x=\"4\" y=\"" + Num(top + ph) + "\">" + Num(y0) + "</text>";
  svg += "<text x=\"" + Num(left) + "\" y=\"" + Num(h - 18) + "\">" + Num(x0) + "</text>";
  svg += "<text x=\"" + Num(left + pw - 30) + "\" y=\"" + Num(h - 18) + "\">" + Num(x1) +
         "</text>";
  svg += "<text x=\"" + Num(left + pw / 2 - 20) + "\" y=\"" + Num(h - 4) + "\">" +
         HtmlEscape(x_label) + "</text>";
  svg += "<text x=\"4\" y=\"" + Num(top - 4 + ph / 2) + "\" class=\"ylabel\">" +
         HtmlEscape(y_label) + "</text>";
  std::string pts;
  for (const auto& [x, y] : points) {
    pts += Num(px(x), "%.1f") + "," + Num(py(y), "%.1f") + " ";
  }
  svg += "<polyline class=\"line\" fill=\"none\" points=\"" + pts + "\"/>";
  if (points.size() == 1) {
    svg += "<circle class=\"dot\" r=\"3\" cx=\"" + Num(px(points[0].first), "%.1f") +
           "\" cy=\"" + Num(py(points[0].second), "%.1f") + "\"/>";
  }
  return svg + "</svg>";
}

std::string OverviewPage(const json& o, const std::string& csrf) {
  std::string body = "<h1>Overview</h1>" + Tiles(o) +
                     "<h2>Recent events</h2><table><thead><tr><th>time</th><th>kind</th>"
                     "<th>message</th></tr></thead><tbody id=\"events\">" +
                     EventRows(o.value("events", json::array())) + "</tbody></table>";
  return Layout("Overview", "overview", "", csrf, body);
}

std::string WorkersPage(const json& page, const std::string& csrf) {
  std::string rows;
  const json workers = page.value("workers", json::array());
  for (const auto& w : workers) rows += WorkerRow(w);
  // data-sort: the API's sort field for each column (app.js sorts on the
  // server and fetches one page at a time).
  std::string heads;
  for (const auto& [label, field] : std::vector<std::pair<const char*, const char*>>{
           {"id", "worker_id"}, {"name", "name"}, {"state", "state"}, {"devices", "devices"},
           {"backend", "backend"}, {"GFLOP/s", "gflops"}, {"trust", "trust"},
           {"shards ok/bad", "agreed"}, {"checks", "checks"}, {"strikes", "strikes"},
           {"running", "running"}, {"last seen", "last_seen_ms"}}) {
    heads += std::string("<th data-sort=\"") + field + "\">" + HtmlEscape(label) + "</th>";
  }
  const int64_t total = page.value("total", int64_t(0));
  const int64_t offset = page.value("offset", int64_t(0));
  const int64_t shown = int64_t(workers.size());
  std::string range = shown == 0 ? "none" : std::to_string(offset + 1) + "-" +
                                                std::to_string(offset + shown);
  std::string body =
      "<h1>Workers</h1><p class=\"pager\"><span id=\"total\">" + std::to_string(total) +
      "</span> workers; showing <span id=\"range\">" + range +
      "</span> <button id=\"prev\">previous</button> <button id=\"next\">next</button> "
      "<label>state <select id=\"state-filter\"><option value=\"\">any</option>"
      "<option>idle</option><option>busy</option><option>offline</option>"
      "<option>quarantined</option><option>outdated</option></select></label></p>"
      "<table class=\"sortable\"><thead><tr>" + heads + "</tr></thead>"
      "<tbody id=\"rows\">" + rows + "</tbody></table>";
  return Layout("Workers", "workers", "", csrf, body);
}

std::string WorkerPage(const json& w, const std::string& csrf) {
  std::string id = std::to_string(w.value("worker_id", 0));
  std::string devices;
  const json device_list = w.value("devices", json::array());
  for (const auto& d : device_list) {
    devices += "<tr><td>" + std::to_string(d.value("index", 0)) + "</td><td>" +
               HtmlEscape(Str(d, "backend")) + "</td><td>" + HtmlEscape(Str(d, "name")) +
               "</td><td>" + Num(double(d.value("memory_bytes", uint64_t(0))) / (1 << 30), "%.1f") +
               " GiB</td><td>" +
               (d.value("free_bytes", uint64_t(0)) > 0
                    ? Num(double(d.value("free_bytes", uint64_t(0))) / (1 << 30), "%.1f") + " GiB"
                    : std::string("-")) +
               "</td><td>" + Num(d.value("gflops", 0.0), "%.1f") + "</td></tr>";
  }
  std::string body =
      "<h1>Worker " + id + ": <span id=\"name\">" + HtmlEscape(Str(w, "name")) +
      "</span></h1><table><thead><tr><th>id</th><th>name</th><th>state</th><th>devices</th>"
      "<th>backend</th><th>GFLOP/s</th><th>trust</th><th>shards ok/bad</th><th>checks</th>"
      "<th>strikes</th><th>running</th>"
      "<th>last seen</th></tr></thead><tbody id=\"rows\">" + WorkerRow(w) +
      "</tbody></table><h2>Devices</h2><table><thead><tr><th>#</th><th>backend</th>"
      "<th>name</th><th>memory</th><th>free</th><th>GFLOP/s</th></tr></thead><tbody>" + devices +
      "</tbody></table><p><button id=\"quarantine\">Quarantine</button> "
      "<button id=\"unban\">Unban</button> <span id=\"result\"></span></p>";
  return Layout("Worker " + id, "worker", id, csrf, body);
}

std::string JobsPage(const json& jobs, const std::string& csrf) {
  std::string rows;
  for (const auto& j : jobs) rows += JobRow(j);
  std::string body =
      "<h1>Jobs</h1><table class=\"sortable\"><thead><tr><th>id</th><th>kind</th>"
      "<th>state</th><th>progress</th><th>submitted</th><th>ETA</th><th>owner</th></tr>"
      "</thead><tbody id=\"rows\">" + rows + "</tbody></table>";
  return Layout("Jobs", "jobs", "", csrf, body);
}

std::string JobPlots(const json& job) {
  if (!job.contains("rounds")) return "";
  std::vector<std::pair<double, double>> loss, bytes;
  for (const auto& r : job.at("rounds")) {
    double step = r.value("step", r.value("round", 0.0));
    if (r.contains("loss") && r["loss"].is_number()) loss.emplace_back(step, r["loss"].get<double>());
    bytes.emplace_back(step, double(r.value("bytes_up", int64_t(0)) + r.value("bytes_down", int64_t(0))));
  }
  return SvgLinePlot(loss, "loss", "loss per step", "step", "loss") +
         SvgLinePlot(bytes, "bytes", "bytes per step (up + down)", "step", "bytes");
}

std::string JobPage(const json& job, const std::string& csrf) {
  std::string id = std::to_string(job.value("job_id", 0));
  std::string states;
  const json shard_states = job.value("shard_states", json::object());
  for (const auto& [state, n] : shard_states.items()) {
    states += "<tr><td>" + HtmlEscape(state) + "</td><td>" + n.dump() + "</td></tr>";
  }
  std::string summary = job.contains("summary") ? job["summary"].dump(2, ' ', false,
                                                                      json::error_handler_t::replace)
                                                : "";
  std::string body =
      "<h1>Job " + id + " (" + HtmlEscape(Str(job, "kind")) + ")</h1><table><thead><tr>"
      "<th>id</th><th>kind</th><th>state</th><th>progress</th><th>submitted</th><th>ETA</th>"
      "<th>owner</th></tr></thead><tbody id=\"rows\">" + JobRow(job) +
      "</tbody></table><p>Reason: <span id=\"reason\">" + HtmlEscape(Str(job, "reason")) +
      "</span></p><p><button id=\"cancel\">Cancel job</button> <span id=\"result\"></span></p>"
      "<h2>Shards by state</h2><table><tbody id=\"states\">" + states +
      "</tbody></table><h2>Throughput</h2><div id=\"throughput\"></div>"
      "<div id=\"plots\">" + JobPlots(job) + "</div><h2>Summary</h2><pre id=\"summary\">" +
      HtmlEscape(summary) + "</pre>";
  return Layout("Job " + id, "job", id, csrf, body);
}

}  // namespace pcfarm
