// The denoising-block study as one library call: rank the sites, search placements under
// parameter budgets, train the chosen blocks, and compare them with no mitigation, blocks at
// every site and noise-aware fine-tuning (docs/denoise.md). `quell denoise` is a thin shell
// over run_denoise_study; the report type writes and reads report.json and the CSV files.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "quell/checkpoint.h"
#include "quell/denoise.h"
#include "quell/plot.h"
#include "quell/progress.h"
#include "quell/report.h"

namespace quell {

struct DenoiseStudyOptions {
  /// What the searches maximise and the reports show: accuracy, topK or token-accuracy
  /// (quell/metric.h); empty = accuracy, or token-accuracy for ids per position.
  std::string metric;
  NoiseConfig noise;            ///< the noise to mitigate (required, not empty)
  std::string sites = "all";    ///< sites that may get a block: all, names, indices, ranges
  std::string block = "auto";   ///< BlockSpec::parse: auto | bottleneck | mlp | channel
  std::vector<int> ratios = {4, 16};       ///< reduction ratios the search may use (>= 1)
  std::vector<double> budgets = {2.0, 5.0};  ///< parameter budgets, % of the backbone (> 0)
  std::string search = "greedy";  ///< greedy (measured gain per parameter) | none
  std::string walk_json;          ///< a walk.json: rank the sites by its midpoints too
  bool drop_ranking = true;       ///< rank by measured drop with the noise at one site alone
  bool all_sites = true;          ///< compare with blocks at every site
  bool finetune = true;           ///< compare with noise-aware fine-tuning of the whole network
  double finetune_lr = 1e-4;
  int64_t train_limit = 0;        ///< first N training samples (0 = all)
  int64_t val_size = 5000;        ///< validation samples from the end of the training set (<= 1/5)
  int64_t search_limit = 10000;   ///< training samples per placement's short training (0 = all)
  int search_epochs = 1;
  int search_width = 4;           ///< lazy greedy: candidates re-evaluated per step (0 = all)
  int search_draws = 2;           ///< draws (and chips) per placement's validation
  int64_t taylor_samples = 2048;  ///< training images for the Taylor ranking
  double min_gain = 0.0;          ///< search stops when no block gains more than this
  /// Training: epochs, lr, batch size, feature weight, seed, noise level range (scale_lo/hi).
  /// noise, progress and data_parallel are set by the study.
  DenoiseTrainOptions train;
  /// Final evaluation: draws and chips (default 5 and 5) and batch size.
  EvalOptions eval = [] {
    EvalOptions e;
    e.draws = 5;
    e.chips = 5;
    return e;
  }();
  /// Per-chip calibration, for noise with per-chip parts (NoiseConfig::has_static): the blocks of
  /// every block row (Taylor, chosen, all sites) are also fine-tuned on each evaluation chip
  /// (calibrate_per_chip, on the first calibration.samples fit samples) and evaluated on that
  /// chip, beside the chip-agnostic blocks ("… per chip" rows, with the calibration's cost).
  bool calibrate = true;
  ChipCalibrationOptions calibration;
  /// Bounds: the backbone evaluated with part of the noise removed (DenoiseReport::bounds).
  bool bounds = true;
  std::vector<double> robustness_levels = {0, 0.25, 0.5, 0.75, 1, 1.25, 1.5, 1.75, 2};
  int robust_draws = 2;           ///< draws (and chips) per robustness point

  /// Output directory: points.csv and rankings.csv as soon as the search ends, then
  /// report.json/csv, robustness.csv, the checkpoints denoised-BUDGET.pt and the figures. Empty:
  /// nothing is written (the result is returned only).
  std::string out;
  /// With `out`: every finished ranking, search evaluation (with its trained blocks), final
  /// model and robustness curve goes to out/journal.jsonl (and out/journal/), so a study
  /// killed at any moment resumes there, with the results of an uninterrupted run. restart
  /// discards a journal first; a journal of another study is an error. Under MPI rank 0 writes
  /// it and every rank reads it (out on a shared file system).
  bool restart = false;
  PlotFormats figures{true, true};
  std::string source;    ///< the backbone's file, recorded in the report
  CheckpointMeta meta;   ///< the backbone's checkpoint record (for the saved checkpoints)
  torch::Device device = torch::kCPU;
  /// Under mpirun: every rank runs the study in lockstep (evaluations spread over the ranks,
  /// trainings data parallel); rank 0 writes.
  bool distributed = false;
  StudyMonitor monitor;

  /// Throws std::invalid_argument naming the field and value of the first bad option.
  void validate() const;
};

/// One mitigation of the final comparison, on the test set.
struct DenoiseComparisonRow {
  std::string model;      ///< "unmitigated", "taylor greedy <=2%", "chosen <=2%", "all sites",
                          ///< "noise-aware fine-tune"
  std::string placement;  ///< Placement::label, or "whole network" for fine-tuning
  int64_t params = 0;     ///< block parameters
  double overhead_pct = 0.0;
  double clean_accuracy = 0.0;
  EvalResult noisy;
  int64_t trains_parameters = 0;  ///< fine-tuning: parameters it trains (else 0)
  /// Per-chip calibrated blocks: samples and epochs per chip and the mean seconds per chip
  /// (0 for every other row). clean_accuracy is then the mean over the calibrated chips.
  int64_t calibration_samples = 0;
  int calibration_epochs = 0;
  double calibration_seconds = 0.0;
  /// The calibration's check (ChipCalibrationOptions::holdout): samples held out, and the chips
  /// that kept their calibrated blocks out of those calibrated (the others kept the
  /// chip-agnostic blocks). held_out 0: no check, every chip kept its calibration.
  int64_t calibration_held_out = 0;
  int calibration_chips = 0, calibration_chips_kept = 0;
  bool is_finetune() const { return placement == "whole network"; }
  bool is_calibrated() const { return calibration_samples > 0; }
};

/// A reference point: the backbone on the test set with part of the noise removed.
/// "oracle <=B%": no noise at the chosen placement's sites (each block removing exactly its own
/// site's noise; blocks that also undo what upstream noise did can do better);
/// "static only" / "dynamic only": the per-chip (static, aging, weight) or the per-pass part
/// alone, for noise that has both.
struct DenoiseBound {
  std::string name;
  std::string removed;  ///< what was taken out, in words (site names, "dynamic noise", …)
  EvalResult noisy;
};

/// One evaluated placement of the search (validation).
struct DenoiseOperatingPoint {
  std::string method;  ///< "none", "taylor", "walk", "drop", "search"
  int step = 0;
  std::string placement;
  int64_t params = 0;
  double overhead_pct = 0.0;
  Summary validation;
  bool pareto = false;
};

struct DenoiseCandidate {
  int site = 0;
  std::string name;
  std::string block;
  int64_t params = 0;
  double overhead_pct = 0.0;
};

struct DenoiseChoice {
  std::string placement;
  int64_t params = 0;
  int64_t budget_params = 0;
  std::string checkpoint;  ///< file name in the output directory; empty when none was saved
};

/// What run_denoise_study found; writes and reads report.json and the CSV files.
struct DenoiseReport {
  /// What the values are (accuracy unless named otherwise); JSON, CSV and table use its name.
  Metric metric;
  RunContext context;
  std::string checkpoint;  ///< the backbone's file
  ModelSpec model;
  int64_t backbone_params = 0;
  std::string dataset;
  int64_t fit_size = 0, validation_size = 0, search_fit_size = 0, test_size = 0;
  double chance = 0.0;
  Json noise;     ///< NoiseConfig::to_json of the mitigated noise
  Json training;  ///< DenoiseTrainOptions::to_json
  std::string search_method;
  int search_epochs = 0, search_draws = 0, search_chips = 0;
  double min_gain = 0.0;
  int placements_trained = 0;
  int eval_draws = 0, eval_chips = 0;
  bool finetune = false;
  int finetune_epochs = 0;
  double finetune_lr = 0.0;
  std::vector<double> budgets_pct;
  std::vector<DenoiseCandidate> candidates;
  std::map<std::string, std::vector<SiteSensitivity>> rankings;  ///< taylor, walk, drop
  std::map<std::string, DenoiseChoice> chosen;                   ///< by budget tag "2%"
  std::vector<DenoiseComparisonRow> comparison;                  ///< first: unmitigated
  std::vector<DenoiseBound> bounds;
  std::vector<DenoiseOperatingPoint> operating_points;
  std::vector<SiteCurve> robustness;  ///< accuracy vs noise level per comparison row
  std::vector<std::string> written;   ///< files written into the output directory
  /// Wall time of each phase of the run that produced the report (this process only: work a
  /// resumed study read back from its journal costs nothing here), in seconds: "rankings",
  /// "search", "final" (trainings and test evaluations), "calibration", "bounds",
  /// "robustness", "total". Written under provenance.seconds (it differs between two runs).
  std::map<std::string, double> seconds;

  /// The report.json document.
  Json to_json() const;
  /// Reads a report.json; throws std::invalid_argument naming the missing or bad field.
  static DenoiseReport from_json(const Json& j);
  /// Reads a report.json file; throws naming the file if it is missing, not JSON or not a
  /// denoise report.
  static DenoiseReport read(const std::string& path);

  std::string report_csv() const;      ///< one row per comparison row
  std::string points_csv() const;      ///< operating points of the search
  std::string rankings_csv() const;    ///< every ranking, every site
  std::string robustness_csv() const;  ///< accuracy vs noise level
  /// The comparison table and the Pareto front, as `quell denoise` prints them.
  std::string table() const;
  /// The figures' data (pareto and robustness figures).
  DenoisePlotData plot_data(double train_sigma) const;
};

/// The checks run_denoise_study makes before any work, against `backbone`: the options, no
/// blocks in it, the noise valid for its calibration, the sites, a block kind some site can
/// take. A front end calls it before loading data. Throws std::invalid_argument naming the
/// field and value.
void check_denoise_study(ModelImpl& backbone, const DenoiseStudyOptions& opts);

/// Runs the study on a frozen `backbone` (no blocks; it is moved to opts.device and put in eval
/// mode) with training data `train` (fit + validation split) and test data `test`. Throws
/// std::invalid_argument for bad options, a backbone with blocks or data that does not fit.
DenoiseReport run_denoise_study(Model backbone, const Dataset& train, const Dataset& test,
                                const DenoiseStudyOptions& opts);

}  // namespace quell
