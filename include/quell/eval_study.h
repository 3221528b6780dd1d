// Evaluation under noise as one library call: the clean accuracy and, for each noise level,
// accuracy over chips and draws with its 95% CI (`quell eval`). EvalReport writes and reads the
// JSON and CSV forms.
#pragma once

#include <string>
#include <vector>

#include "quell/eval.h"
#include "quell/progress.h"
#include "quell/report.h"

namespace quell {

struct EvalStudyOptions {
  NoiseConfig noise;                ///< the configuration at level 1
  std::vector<double> levels{1.0};  ///< every σ multiplied by each level in turn
  /// Devices (noise.device programs weights): evaluate at each of these times since programming
  /// (seconds), every level at every time; empty: at the device's own time only.
  std::vector<double> times;
  /// Devices: every time once without and once with global drift compensation (else as
  /// noise.device.compensation says).
  bool both_compensations = false;
  EvalOptions eval;                 ///< draws, chips, batch size, MPI sharing
  /// What is measured (quell/metric.h; empty = the task's usual metric); sets eval.metric.
  std::string metric;
  std::string split = "test";       ///< recorded: which split `data` is
  std::string source;               ///< the model's file, recorded
  std::string noise_description;    ///< how the noise was given, for the table's title
  DataOptions data;                 ///< recorded: limit, shuffle seed, image preprocessing
  torch::Device device = torch::kCPU;
  StudyMonitor monitor;
};

/// One noise level.
struct EvalLevel {
  double level = 1.0;
  double time = -1.0;     ///< device: seconds since programming (-1: no device time)
  int compensation = -1;  ///< device: drift compensation off (0) or on (1); -1: no device
  Json config;  ///< NoiseConfig::to_json of the scaled configuration
  EvalResult result;
};

/// The evaluation's values are those of `metric` (the fields keep the name "accuracy"; the JSON,
/// CSV and table use the metric's name).
struct EvalReport {
  RunContext context;
  Metric metric;
  std::string checkpoint;
  ModelSpec model;
  int denoising_blocks = 0;
  std::string dataset, split;
  int64_t samples = 0;
  int64_t limit = 0;
  uint64_t shuffle_seed = 0;
  double chance = 0.0;  ///< the metric's floor (chance for accuracy)
  int draws = 0, chips = 0;
  int64_t batch_size = 0;
  uint64_t noise_seed = 0;
  Json noise;
  std::string noise_description;
  double clean_accuracy = 0.0, clean_loss = 0.0;
  std::vector<EvalLevel> levels;
  Json preprocessing;  ///< image folders: the preprocessing applied (else null)
  int64_t skipped_images = 0;

  Json to_json() const;
  static EvalReport from_json(const Json& j);
  /// Whether the rows differ in device time or drift compensation (extra columns).
  bool has_times() const;
  /// One row per (level, chip, draw) (and time and compensation with has_times).
  std::string csv() const;
  /// The table `quell eval` prints.
  std::string table() const;
};

/// Evaluates `model` on `data`: once clean, then at every level (all levels are validated
/// against the model's calibration before the first evaluation).
EvalReport run_eval_study(Model model, const Dataset& data, const EvalStudyOptions& opts);

}  // namespace quell
