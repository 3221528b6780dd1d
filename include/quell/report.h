// Results as data: the provenance of every result (RunContext), summaries as JSON, and the
// small pieces every result type's writers share.
#pragma once

#include <string>
#include <vector>

#include "quell/io.h"
#include "quell/metric.h"
#include "quell/stats.h"

namespace quell {

/// Who produced a result and how: filled once per run and handed to every writer, so no output
/// carries a stale field. Its JSON is the "provenance" block of every result file.
struct RunContext {
  std::string quell_version;
  std::string git_commit;
  std::string libtorch_version;
  std::string build_type;
  int threads = 0;             ///< LibTorch intra-op threads
  std::string device = "cpu";  ///< "cpu", "cuda", "cuda:1"
  int mpi_ranks = 1;           ///< processes of the job (1 without MPI)
  std::string utc_time;        ///< ISO 8601, when the context was captured
  std::string hostname;

  /// The running process: version, commit, LibTorch, build type, threads, MPI ranks, hostname
  /// and the UTC time now, on `device`.
  static RunContext capture(const std::string& device = "cpu");
  /// {"quell_version", "git_commit", "libtorch_version", "build_type", "threads", "device",
  ///  "utc_time", "hostname"} and "mpi_ranks" when the job has more than one rank.
  Json to_json() const;
  /// Reads to_json()'s block; missing fields keep their defaults.
  static RunContext from_json(const Json& j);
};

/// {"n", "mean", "std", "ci95_low", "ci95_high"}, with "min" and "max" when `with_range`.
Json summary_to_json(const Summary& s, bool with_range = false);
/// Reads summary_to_json()'s object; absent bounds default to the mean.
Summary summary_from_json(const Json& j);

/// A finite number, or the string "inf" / "-inf" / "nan" (JSON has no such numbers).
Json number_or_string(double v);
/// Reads number_or_string()'s value back.
double number_from_json(const Json& j);

/// The JSON document in the file `path`; throws std::invalid_argument naming the file if it is
/// missing or not valid JSON (result readers: DenoiseReport::read, PlanReport::read).
Json read_json_document(const std::string& path);

/// "a, b, c"
std::string join(const std::vector<std::string>& items, const std::string& sep = ", ");

/// A report in the terms of its metric: for a metric other than accuracy, "accuracy" in every
/// key becomes Metric::key() (clean_accuracy -> clean_perplexity, accuracy_drop ->
/// perplexity_drop) and the key "chance" becomes "floor", recursively (not inside "provenance"
/// or "fingerprint"); for accuracy `j` is returned unchanged.
Json keys_for_metric(const Json& j, const Metric& metric);
/// The inverse of keys_for_metric, for reading a report back.
Json keys_from_metric(const Json& j, const Metric& metric);
/// The metric a report names ({"metric": name}; accuracy when absent).
Metric metric_of_report(const Json& j);
/// Text (a table, a CSV header) in the terms of its metric: "accuracy" becomes `with` (the
/// metric's label or key) and "chance" becomes "floor"; unchanged for accuracy.
std::string text_for_metric(const std::string& text, const Metric& metric, const std::string& with);
/// A CSV in the terms of its metric: "accuracy" in the header line becomes Metric::key().
std::string csv_for_metric(const std::string& csv, const Metric& metric);

}  // namespace quell
