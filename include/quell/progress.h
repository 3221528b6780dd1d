// How long computations tell their caller what they are doing. The library never prints: a
// front end (the CLI's progress bar, the Python package's tqdm) receives these calls instead.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace quell {

/// Progress of a long computation, for the caller's progress bar.
struct Progress {
  int64_t done = 0;
  int64_t total = 0;
  std::string what;  ///< short label ("eval", "epoch 3/10", ...)
  double loss = 0.0;
  double accuracy = 0.0;       ///< the metric's value (accuracy unless value_label says other)
  std::string value_label = "acc";  ///< its short name for progress lines ("ppl", "mse", ...)
};
using ProgressFn = std::function<void(const Progress&)>;

/// What a study (walk, denoise, plan, ...) reports while it runs: a progress callback per
/// named step and one-line status messages. Either may be empty (silent).
struct StudyMonitor {
  /// A progress callback for the step `label` ("search", "eval chosen <=2%", ...), or null.
  std::function<ProgressFn(const std::string& label)> progress;
  /// A status line ("12 placements trained and evaluated in the search").
  std::function<void(const std::string& line)> message;
  /// A warning or note that is not part of the result ("resuming: 40 evaluations ...").
  std::function<void(const std::string& line)> note;

  ProgressFn bar(const std::string& label) const { return progress ? progress(label) : nullptr; }
  void say(const std::string& line) const {
    if (message) message(line);
  }
  void warn(const std::string& line) const {
    if (note) note(line);
  }
};

/// A note the library has for a person that is not part of any result ("skipped 3 unreadable
/// images", "--limit keeps the first files in class order"). Notes go to the sink set here;
/// by default there is none and the library is silent. The CLI prints them on stderr.
using NoteSink = std::function<void(const std::string& line)>;
/// Sets the process-wide sink (thread-safe; an empty function silences notes again).
void set_note_sink(NoteSink sink);
/// Hands `line` to the sink, if one is set.
void note(const std::string& line);

}  // namespace quell
