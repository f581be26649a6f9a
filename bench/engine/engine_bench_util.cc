#include "bench/engine/engine_bench_util.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace pcfarm {

namespace {
// Columns are aligned by code points, not bytes ("×", "≥" are UTF-8).
size_t DisplayWidth(const std::string& s) {
  size_t n = 0;
  for (unsigned char ch : s) n += (ch & 0xC0) != 0x80;
  return n;
}
}  // namespace

void PrintEngineTable(const std::string& title, const std::string& ours,
                      const std::string& baseline, const std::vector<EngineBenchRow>& rows,
                      const std::vector<std::string>& notes) {
  std::vector<std::vector<std::string>> cells = {{"measure", ours, baseline, "ratio", "target"}};
  for (const EngineBenchRow& r : rows)
    cells.push_back({r.measure, r.ours, r.baseline, r.ratio, r.target});
  std::vector<size_t> width(5, 0);
  for (const auto& row : cells)
    for (size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], DisplayWidth(row[i]));
  auto line = [&](const std::vector<std::string>& row) {
    std::string s = "|";
    for (size_t i = 0; i < row.size(); ++i)
      s += " " + row[i] + std::string(width[i] - DisplayWidth(row[i]), ' ') + " |";
    std::printf("%s\n", s.c_str());
  };
  std::printf("\n## %s\n\n", title.c_str());
  line(cells[0]);
  std::string sep = "|";
  for (size_t w : width) sep += std::string(w + 2, '-') + "|";
  std::printf("%s\n", sep.c_str());
  for (size_t i = 1; i < cells.size(); ++i) line(cells[i]);
  if (!notes.empty()) std::printf("\n");
  for (const std::string& n : notes) std::printf("- %s\n", n.c_str());
  std::fflush(stdout);
}

std::string Fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

int64_t ProcStatusBytes(const std::string& field) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(field + ":", 0) != 0) continue;
    std::istringstream fields(line.substr(field.size() + 1));
    int64_t kib = -1;
    fields >> kib;
    return kib < 0 ? -1 : kib * 1024;
  }
  return -1;
}

std::string LoadAverage() {
  std::ifstream in("/proc/loadavg");
  std::string a, b, c;
  if (!(in >> a >> b >> c)) return "?";
  return a + " " + b + " " + c;
}

bool ResetPeakRss() {
  std::ofstream out("/proc/self/clear_refs");
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

Result<std::string> RunForLastLine(const std::string& cmd) {
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return Internal("popen failed: " + cmd);
  std::string out;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = ::pclose(p);
  if (rc != 0) return Internal("`" + cmd + "` exited with status " + std::to_string(rc));
  while (!out.empty() && out.back() == '\n') out.pop_back();
  const size_t nl = out.rfind('\n');
  return out.substr(nl == std::string::npos ? 0 : nl + 1);
}

}  // namespace pcfarm
