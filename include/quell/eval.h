// Monte-Carlo evaluation of a model under a noise configuration.
#pragma once

#include <functional>
#include <vector>

#include "quell/data.h"
#include "quell/metric.h"
#include "quell/models.h"
#include "quell/progress.h"
#include "quell/stats.h"

namespace quell {



struct EvalOptions {
  int draws = 5;             ///< dynamic-noise draws per chip instance
  int chips = 1;             ///< chip instances (static / aging noise, weight noise)
  /// Chips evaluated are first_chip … first_chip + chips − 1 (e.g. one chip at a time: chips 1).
  int first_chip = 0;
  int64_t batch_size = 256;  // measured fastest on CPU (docs/bench.md)
  /// Under MPI: the (chip, draw) passes go round robin to the ranks and every rank returns all
  /// of them, the same as one process (each pass depends only on its seeds).
  bool distributed = false;
  /// What a pass measures (bound to the data: Metric::bind); accuracy by default.
  Metric metric;
  ProgressFn progress;
};

/// One noisy pass over the dataset.
struct DrawResult {
  int chip = 0;
  int draw = 0;
  double accuracy = 0.0;  ///< the metric's value (EvalOptions::metric; accuracy by default)
  double loss = 0.0;      ///< mean task loss (cross-entropy, or MSE for real targets)
};

/// The passes and their summaries; "accuracy" is the value of the metric evaluated (accuracy
/// unless EvalOptions::metric says otherwise).
struct EvalResult {
  std::vector<DrawResult> draws;
  Summary accuracy;            ///< over all draws (n = chips × draws)
  Summary chip_accuracy;       ///< over per-chip mean values (n = chips)
  bool deterministic = false;  ///< no random noise (none, or ADC only): one pass is exact
  /// The CI a reader should quote: over chips when the noise has per-chip parts and chips > 1,
  /// over all draws otherwise.
  const Summary& headline() const;
  bool chip_level = false;
};

/// Evaluates `model` on `data` with the noise `config`: chips × draws passes (one pass when the
/// configuration is empty). Chip c, draw d use SiteEngine::set_draw(c, d); weight noise is drawn
/// per chip and the clean weights are restored afterwards.
EvalResult evaluate(ModelImpl& model, const Dataset& data, const NoiseConfig& config,
                    const EvalOptions& opts);

/// The summaries of `evaluate` from its passes (e.g. passes run by several processes):
/// accuracy over all draws, chip_accuracy over per-chip means, the CI level and determinism
/// as evaluate sets them for a configuration with (without) per-chip and dynamic noise.
EvalResult summarize_draws(std::vector<DrawResult> draws, bool chips_matter, bool draws_matter);
/// The passes `evaluate(model, data, config, o)` would make (chips o.first_chip … + o.chips − 1
/// and draws 0 … o.draws − 1, as far as `config` makes them matter), taken from a larger
/// evaluation of the same model, data and configuration, and summarised; no draws if `from`
/// lacks any of them. The passes depend only on their chip and draw, so the result is what
/// evaluate would return.
EvalResult passes_within(const EvalResult& from, const NoiseConfig& config, const EvalOptions& o);
/// The metric (accuracy by default) and mean loss of one pass over the data with the engine as
/// configured.
DrawResult run_pass(ModelImpl& model, const Dataset& data, int64_t batch_size,
                    const Metric& metric = Metric());

/// Sets the analog (conv/linear/weight-matmul) weights of `model` to what chip `chip` holds:
/// weight noise (programming variation) and, for layers on device tiles, the programmed
/// conductances at the device's time (program_weight). The guard restores the clean weights
/// when destroyed. Throws std::invalid_argument when the device names a layer that is not an
/// analog layer.
class WeightNoiseGuard {
 public:
  /// `draw`: the evaluation draw (the device's read noise with DeviceConfig::read_per_draw).
  WeightNoiseGuard(ModelImpl& model, const NoiseConfig& config, uint64_t chip, uint64_t draw = 0);
  WeightNoiseGuard(ModelImpl& model, const WeightNoise& noise, uint64_t seed, uint64_t chip);
  ~WeightNoiseGuard();
  WeightNoiseGuard(const WeightNoiseGuard&) = delete;
  WeightNoiseGuard& operator=(const WeightNoiseGuard&) = delete;

 private:
  std::vector<std::pair<torch::Tensor, torch::Tensor>> saved_;  ///< (live weight, clean copy)
};

}  // namespace quell
