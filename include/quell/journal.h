// The journal of a resumable study: finished work, one JSON line per result, so that a study
// killed at any moment resumes where it stopped with nothing lost or repeated (the denoise and
// plan studies; the walk has its own record type, quell/walk.h's WalkJournal).
#pragma once

#include <map>
#include <string>

#include "quell/io.h"

namespace quell {

/// An append-only file of keyed results: the first line holds the fingerprint of the study (the
/// options that determine its results); every further line is {"key": ..., "value": ...},
/// flushed to disk (fsync) before append() returns. A torn last line (killed mid-write) is
/// dropped on open. An empty path keeps the journal in memory only.
class StudyJournal {
 public:
  /// Opens `path` (or creates it with `fingerprint`). An existing journal of another kind or
  /// fingerprint throws std::runtime_error naming the path and the first difference. A reader
  /// (writer = false: the other ranks of an MPI job) reads an existing file and never writes.
  StudyJournal(std::string path, std::string kind, Json fingerprint, bool writer = true);
  /// The value recorded under `key`, or null.
  const Json* find(const std::string& key) const;
  /// Records `value` under `key` (a key recorded before keeps its first value).
  void append(const std::string& key, const Json& value);
  size_t size() const { return values_.size(); }
  /// Records read from the file when it was opened (resumed work).
  size_t resumed() const { return resumed_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  bool writer_ = true;
  std::map<std::string, Json> values_;
  size_t resumed_ = 0;
};

/// The first difference between two JSON documents, as "path: a vs b" (for error messages).
std::string json_difference(const Json& a, const Json& b);

}  // namespace quell
