// Result output: atomic file writes, provenance, CSV.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace quell {

using Json = nlohmann::json;

/// Writes `content` to `path` atomically: to a temporary file in the same directory, flushed,
/// then renamed over `path`. On failure throws std::runtime_error naming the path, and leaves
/// any existing file at `path` untouched and no temporary behind.
void write_file_atomic(const std::string& path, const std::string& content);

/// Appends `text` to `path` (created if missing) and syncs it to disk (fsync) before
/// returning; throws std::runtime_error naming the path when it cannot (e.g. the disk is full).
/// Journals use it: what was appended survives a kill.
void append_file_durably(const std::string& path, const std::string& text);

/// RunContext::capture().to_json() (quell/report.h): the provenance of a CPU run. Result types
/// take a RunContext instead, which knows the device.
Json provenance();

/// "0.1.0 (commit)": the quell version and the git commit it was built from.
std::string version_string();

/// Current UTC time as "YYYY-MM-DDTHH:MM:SSZ".
std::string utc_now();

/// A CSV table built in memory; fields with commas, quotes or newlines are quoted (RFC 4180).
class CsvTable {
 public:
  explicit CsvTable(std::vector<std::string> header);
  /// Adds a row; throws std::invalid_argument if its size differs from the header's.
  void add_row(std::vector<std::string> row);
  std::string str() const;
  size_t rows() const { return rows_.size(); }

 private:
  std::vector<std::string> header_;
  std::vector<std::vector<std::string>> rows_;
};

/// Formats a double with up to `precision` significant digits, shortest round-trip otherwise.
std::string fmt_double(double v, int precision = 6);

}  // namespace quell
