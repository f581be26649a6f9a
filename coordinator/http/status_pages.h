// The status page's HTML (server-rendered, then kept live by
// /static/app.js polling the JSON API once a second) and its SVG plots,
// drawn here: no external script, font or CDN.
//
// Every piece of text that comes from the database (worker and device
// names, job reasons, event messages) goes through HtmlEscape; app.js sets
// text with textContent only.
//
// Thread-safety: pure functions.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace pcfarm {

// & < > " ' as character references.
std::string HtmlEscape(std::string_view text);

// What the pages show of a worker (`w` as StatusApi::Workers lists it): its
// state (quarantined, outdated, offline, busy or idle, the first that
// holds) and its devices' backends, each once, comma-separated.
std::string WorkerStateName(const nlohmann::json& w);
std::string WorkerBackends(const nlohmann::json& w);

// A line plot of `points` (x, y) as an inline <svg> element with axes, the
// first and last x and the min and max y written on them. `name` becomes
// its data-plot attribute. No points: an <svg> saying "no data yet".
std::string SvgLinePlot(const std::vector<std::pair<double, double>>& points,
                        const std::string& name, const std::string& title,
                        const std::string& x_label, const std::string& y_label);

// Whole pages. `csrf` is the session's CSRF token (a <meta> app.js reads).
std::string OverviewPage(const nlohmann::json& overview, const std::string& csrf);
// `page` as PageOfWorkers answers: its rows, the total and paging controls.
std::string WorkersPage(const nlohmann::json& page, const std::string& csrf);
std::string WorkerPage(const nlohmann::json& worker, const std::string& csrf);
std::string JobsPage(const nlohmann::json& jobs, const std::string& csrf);
// `job` as StatusApi::Job answers.
std::string JobPage(const nlohmann::json& job, const std::string& csrf);
// The plots of a job page (loss and bytes per step for jobs with rounds;
// shards accepted over time otherwise): an HTML fragment app.js reloads.
std::string JobPlots(const nlohmann::json& job);

// /static/app.js and /static/style.css.
std::string_view StatusAppJs();
std::string_view StatusStyleCss();

}  // namespace pcfarm
