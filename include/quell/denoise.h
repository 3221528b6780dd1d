// Denoising blocks in a frozen, pre-trained model: training, sensitivity rankings, placement
// search under a parameter budget (Azizi et al., arXiv 2409.18553; docs/denoise.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "quell/train.h"

namespace quell {

struct DenoiseTrainOptions {
  int epochs = 3;
  int64_t batch_size = 128;
  double lr = 1e-3;
  bool cosine = true;
  uint64_t seed = 1;  ///< shuffling and the per-batch noise scale
  NoiseConfig noise;  ///< the noise blocks learn to remove (fresh chip and draw every step)
  /// Per batch, every σ of `noise` is multiplied by a factor drawn uniformly from
  /// [scale_lo, scale_hi] (1:1 = a fixed level).
  double scale_lo = 1.0, scale_hi = 1.0;
  /// λ of the feature loss: mean over blocks of ‖block output − clean activation‖² / (numel ·
  /// calibrated variance of the site), added to the cross-entropy. 0 = cross-entropy only.
  double feature_weight = 0.0;
  /// Under MPI: each rank trains on its share of every batch and the block gradients are
  /// summed (as TrainOptions::data_parallel); all ranks end with rank 0's blocks.
  bool data_parallel = false;
  /// −1 (default): every step draws a new chip, so the blocks serve any chip. c ≥ 0: every step
  /// uses evaluation chip c's static/aging patterns, weight noise and device programming (as
  /// `evaluate` with that chip), with fresh dynamic noise per step: the blocks learn that chip
  /// (per-chip calibration, see calibrate_per_chip).
  int64_t chip = -1;
  ProgressFn progress;
  Json to_json(const std::vector<std::string>& site_names) const;
};

/// Trains the model's denoising blocks on `data` with the backbone frozen: its parameters get
/// no gradient and stay bit-identical, BN layers stay in eval mode (running statistics
/// unchanged), the calibration is kept. Each step draws a new chip instance and dynamic draw
/// (like noise-aware training). Throws if the model has no blocks or the loss diverges.
TrainResult train_denoisers(ModelImpl& model, const Dataset& data,
                            const DenoiseTrainOptions& opts);

/// Per-chip calibration of trained blocks, as a post-fabrication step would do it: each chip's
/// blocks are fine-tuned on a few labelled samples with that chip's fixed variation.
struct ChipCalibrationOptions {
  int64_t samples = 1000;  ///< the first N samples of the calibration data (>= 1)
  int epochs = 5;
  double lr = 1e-2;        ///< Adam, cosine, starting from the chip-agnostic blocks
  int64_t batch_size = 64;
  /// λ of DenoiseTrainOptions::feature_weight during calibration (0 = cross-entropy only). The
  /// clean activations give every block a direct target: measured, it removes most of what
  /// cross-entropy alone leaves (docs/reproduce.md).
  double feature_weight = 1.0;
  /// Fraction of the samples held out to check each chip's calibration (in [0, 0.5]): a chip
  /// keeps its calibrated blocks only when their mean task loss on the held-out samples, on that
  /// chip (check_draws draws), is below the chip-agnostic blocks'; else it keeps the
  /// chip-agnostic ones. Measured: without the check, calibration made the blocks worse under
  /// fresh read noise (docs/reproduce.md). 0 (or fewer than 1 / holdout samples): no check,
  /// every sample calibrates.
  double holdout = 0.2;
  int check_draws = 4;
  uint64_t seed = 1;
  ProgressFn progress;
  /// Throws std::invalid_argument naming the bad field.
  void validate() const;
};

struct ChipCalibrationResult {
  EvalResult noisy;         ///< every chip's passes after its own calibration
  Summary clean;            ///< noise-free accuracy of the calibrated blocks, over chips
  int64_t samples = 0;      ///< samples each chip was calibrated on (without the held-out ones)
  int64_t held_out = 0;     ///< samples held out for the check (0: no check)
  int epochs = 0;
  int chips = 0;            ///< chips calibrated
  int chips_kept = 0;       ///< chips whose calibration passed the check (all without a check)
  double seconds_per_chip = 0.0;  ///< mean wall time of one chip's calibration (and check)
};

/// What the chip-agnostic blocks gave on calibrate_per_chip's `data` with its noise and `eval`
/// options (the same chips and draws): a chip whose calibration the check refuses runs exactly
/// those blocks, so its passes and clean accuracy are taken from here instead of evaluated again.
struct UncalibratedEval {
  EvalResult noisy;
  double clean = 0.0;  ///< noise-free accuracy
};

/// For each chip c of `eval` (eval.first_chip … + eval.chips − 1): the model's blocks are
/// fine-tuned on `calib` with chip c's noise held fixed (DenoiseTrainOptions::chip = c, dynamic
/// noise fresh every step) on the first (1 - holdout) of calib's first opts.samples samples, kept
/// if they beat the chip-agnostic blocks on the rest (ChipCalibrationOptions::holdout), then
/// evaluated on `data` on chip c alone (eval.draws draws) and without noise. The model's blocks
/// are restored afterwards. A chip whose calibration is refused takes its evaluation from
/// `uncalibrated` when given (it must hold that chip's eval.draws passes; else it is evaluated).
/// Throws std::invalid_argument if the model has no blocks, `noise` has no per-chip part
/// (NoiseConfig::has_static) or an option is bad.
ChipCalibrationResult calibrate_per_chip(ModelImpl& model, const Dataset& calib,
                                         const Dataset& data, const NoiseConfig& noise,
                                         const ChipCalibrationOptions& opts,
                                         const EvalOptions& eval,
                                         const UncalibratedEval* uncalibrated = nullptr);

/// Per-site sensitivity.
struct SiteSensitivity {
  int site = 0;
  std::string name;
  double value = 0.0;  ///< larger = more sensitive (see the producing function)
};

/// The first-order Taylor criterion of Azizi et al.: for each site l, the mean over the first
/// `max_samples` images of ‖∂ℓ(x)/∂y_l‖₂, the norm of the per-sample cross-entropy's gradient at
/// the site's (clean) output. Backbone only (blocks bypassed), no noise.
std::vector<SiteSensitivity> taylor_sensitivity(ModelImpl& model, const Dataset& data,
                                                int64_t max_samples = 2048,
                                                int64_t batch_size = 256);

/// Measured sensitivity: clean accuracy minus mean accuracy with `noise`'s activation noise at
/// site l alone (weight noise off), for each site in `sites` that `noise` configures.
std::vector<SiteSensitivity> drop_sensitivity(ModelImpl& model, const Dataset& data,
                                              const NoiseConfig& noise,
                                              const std::vector<int>& sites,
                                              const EvalOptions& opts);

/// Sensitivity from a Walking Noise result (`quell walk`'s walk.json): 1/μ per crossed site
/// (a low midpoint = fragile); sites not crossed get 0, sites below the grid +inf. Sites are
/// matched by name against `site_names`; throws naming the file if a name is unknown or the
/// file is not a walk result.
std::vector<SiteSensitivity> walk_sensitivity(const std::string& walk_json,
                                              const std::vector<std::string>& site_names);

/// Sites in decreasing order of sensitivity (ties: network order).
std::vector<int> rank_sites(const std::vector<SiteSensitivity>& s);

/// One candidate block: a site and a block spec, with its exact parameter count.
struct Candidate {
  int site = 0;
  BlockSpec block;
  int64_t params = 0;
};

/// The blocks of a placement and their parameter total.
struct Placement {
  std::vector<Candidate> blocks;  ///< sorted by site
  int64_t params() const;
  std::vector<BlockPlacement> placement() const;
  /// "conv1/4+fc1/mlp8+bn2/ch": site name / ratio of an auto block, kind and ratio otherwise,
  /// "ch" for a channel block; "none" when empty.
  std::string label(const std::vector<std::string>& site_names) const;
};

/// Parses a placement label (Placement::label's format, e.g. "conv1/4+fc1/mlp8+bn2/ch"; "none"
/// = no blocks) back into blocks. Throws std::invalid_argument naming an unknown site or a bad
/// block tag.
std::vector<BlockPlacement> parse_placement_label(const std::string& label,
                                                  const std::vector<std::string>& site_names);

/// The paper's rule: walk the sites in ranking order and add the site's block (the first
/// candidate of that site in `candidates`) while the total stays within `budget_params`;
/// a block that does not fit is skipped and later (cheaper) ones are still tried.
Placement greedy_by_rank(const std::vector<int>& ranking, const std::vector<Candidate>& candidates,
                         int64_t budget_params);

/// An evaluated placement.
struct PlacementScore {
  Placement placement;
  Summary accuracy;  ///< under noise, on the search's validation data
  std::string method;
  int step = 0;
};

/// Evaluates a placement (e.g. short training + noisy validation); may be called many times.
using PlacementEvaluator = std::function<Summary(const Placement&)>;

/// Measured greedy search: starting from no blocks, repeatedly evaluate candidates that fit
/// the budget (one block per site) added to the current placement, keep the one with the
/// largest accuracy gain per added parameter, until no candidate fits or none gains more than
/// `min_gain`. Step 1 evaluates every candidate; later steps evaluate the `width` candidates
/// with the best gain per parameter at their last evaluation (lazy greedy; width 0 = all).
/// Every evaluated placement is appended to `tried` (method "search", its step). Returns the
/// final placement. Never evaluates a placement over `budget_params`.
Placement measured_greedy(const std::vector<Candidate>& candidates, int64_t budget_params,
                          const PlacementEvaluator& evaluate, const Summary& start_accuracy,
                          double min_gain, std::vector<PlacementScore>* tried,
                          const ProgressFn& progress = nullptr, int width = 0);

/// Indices of the Pareto-optimal points: no other point has overhead <= and accuracy >= with
/// one of them strict. `overhead` and `accuracy` have equal length.
std::vector<size_t> pareto_front(const std::vector<double>& overhead,
                                 const std::vector<double>& accuracy);

}  // namespace quell
