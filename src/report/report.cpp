// Provenance and the JSON pieces shared by the result types.
#include "quell/report.h"

#include <ATen/Parallel.h>
#include <torch/version.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <mutex>

#include "quell/dist.h"
#include "quell/progress.h"
// Generated at every build by cmake/version.cmake.
#include "quell/version_info.h"
#include "util/json.h"

namespace quell {

RunContext RunContext::capture(const std::string& device) {
  RunContext c;
  c.quell_version = QUELL_VERSION;
  c.git_commit = QUELL_GIT_COMMIT;
  c.libtorch_version = TORCH_VERSION;
  c.build_type = QUELL_BUILD_TYPE;
  c.threads = at::get_num_threads();
  c.device = device;
  c.mpi_ranks = dist::size();
  c.utc_time = utc_now();
  char host[256] = {};
  // gethostname may truncate without terminating; the last byte stays '\0'.
  if (::gethostname(host, sizeof(host) - 1) != 0) std::strcpy(host, "unknown");
  c.hostname = host;
  return c;
}

Json RunContext::to_json() const {
  Json j = Json::object();
  j["quell_version"] = quell_version;
  j["git_commit"] = git_commit;
  j["libtorch_version"] = libtorch_version;
  j["build_type"] = build_type;
  j["threads"] = threads;
  j["device"] = device;
  j["utc_time"] = utc_time;
  j["hostname"] = hostname;
  if (mpi_ranks > 1) j["mpi_ranks"] = mpi_ranks;
  return j;
}

RunContext RunContext::from_json(const Json& j) {
  RunContext c;
  if (!j.is_object()) return c;
  c.quell_version = j.value("quell_version", "");
  c.git_commit = j.value("git_commit", "");
  c.libtorch_version = j.value("libtorch_version", "");
  c.build_type = j.value("build_type", "");
  c.threads = json::integer_or(j, "threads", 0);
  c.device = j.value("device", "cpu");
  c.mpi_ranks = json::integer_or(j, "mpi_ranks", 1);
  c.utc_time = j.value("utc_time", "");
  c.hostname = j.value("hostname", "");
  return c;
}

Json provenance() { return RunContext::capture().to_json(); }

Json summary_to_json(const Summary& s, bool with_range) {
  Json j{{"n", s.n},
         {"mean", s.mean},
         {"std", s.std},
         {"ci95_low", s.ci_low},
         {"ci95_high", s.ci_high}};
  if (with_range) {
    j["min"] = s.min;
    j["max"] = s.max;
  }
  return j;
}

Summary summary_from_json(const Json& j) {
  Summary s;
  s.n = json::integer_or<int64_t>(j, "n", 0);
  s.mean = j.value("mean", 0.0);
  s.std = j.value("std", 0.0);
  s.ci_low = j.value("ci95_low", s.mean);
  s.ci_high = j.value("ci95_high", s.mean);
  s.min = j.value("min", s.mean);
  s.max = j.value("max", s.mean);
  return s;
}

Json number_or_string(double v) {
  if (std::isfinite(v)) return Json(v);
  if (std::isnan(v)) return Json("nan");
  return Json(v > 0 ? "inf" : "-inf");
}

double number_from_json(const Json& j) {
  if (j.is_number()) return j.get<double>();
  if (j.is_string()) {
    const auto s = j.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
  }
  return std::numeric_limits<double>::quiet_NaN();
}

Json read_json_document(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::invalid_argument(path + ": no such file");
  try {
    Json j;
    in >> j;
    return j;
  } catch (const Json::exception& e) {
    throw std::invalid_argument(path + ": not valid JSON: " + e.what());
  }
}

std::string join(const std::vector<std::string>& items, const std::string& sep) {
  std::string s;
  for (const auto& n : items) s += (s.empty() ? "" : sep) + n;
  return s;
}

namespace {
std::mutex& sink_mutex() {
  static std::mutex m;
  return m;
}
NoteSink& sink() {
  static NoteSink s;
  return s;
}
}  // namespace

void set_note_sink(NoteSink s) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  sink() = std::move(s);
}

void note(const std::string& line) {
  std::lock_guard<std::mutex> lock(sink_mutex());
  if (sink()) sink()(line);
}

namespace {

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  if (from.empty()) return s;
  for (size_t p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size())) {
    s.replace(p, from.size(), to);
  }
  return s;
}

Json rename_keys(const Json& j, const std::string& from, const std::string& to,
                 const std::string& chance_from, const std::string& chance_to) {
  if (j.is_array()) {
    Json out = Json::array();
    for (const auto& v : j) out.push_back(rename_keys(v, from, to, chance_from, chance_to));
    return out;
  }
  if (!j.is_object()) return j;
  Json out = Json::object();
  for (const auto& [k, v] : j.items()) {
    if (k == "provenance" || k == "fingerprint") {
      out[k] = v;
      continue;
    }
    const std::string key = k == chance_from ? chance_to : replace_all(k, from, to);
    out[key] = rename_keys(v, from, to, chance_from, chance_to);
  }
  return out;
}

}  // namespace

Json keys_for_metric(const Json& j, const Metric& metric) {
  if (metric.is_accuracy()) return j;
  return rename_keys(j, "accuracy", metric.key(), "chance", "floor");
}

Json keys_from_metric(const Json& j, const Metric& metric) {
  if (metric.is_accuracy()) return j;
  return rename_keys(j, metric.key(), "accuracy", "floor", "chance");
}

std::string csv_for_metric(const std::string& csv, const Metric& metric) {
  if (metric.is_accuracy()) return csv;
  const size_t eol = csv.find('\n');
  const std::string header = csv.substr(0, eol);
  return replace_all(header, "accuracy", metric.key()) +
         (eol == std::string::npos ? "" : csv.substr(eol));
}

Metric metric_of_report(const Json& j) {
  if (j.is_object() && j.contains("metric") && j.at("metric").is_string()) {
    return Metric::parse(j.at("metric").get<std::string>());
  }
  return Metric();
}

std::string text_for_metric(const std::string& text, const Metric& metric,
                            const std::string& with) {
  if (metric.is_accuracy()) return text;
  return replace_all(replace_all(text, "accuracy", with), "chance", "floor");
}

}  // namespace quell
