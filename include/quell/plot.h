// Figures of a Walking Noise sweep, drawn with gnuplot (PNG and SVG).
#pragma once

#include <limits>
#include <string>
#include <vector>

namespace quell {

/// Accuracy at one noise level: mean over repeats and its 95% band.
struct CurvePoint {
  double sigma = 0.0;
  double mean = 0.0;
  double lo = 0.0;  ///< lower end of the band (e.g. 95% CI of the mean)
  double hi = 0.0;
};

/// The accuracy-vs-σ curve of one site (or of the global reference).
struct SiteCurve {
  int site = 0;       ///< network order
  std::string label;  ///< e.g. "1 conv1"
  std::vector<CurvePoint> points;  ///< ascending σ
  double midpoint = std::numeric_limits<double>::quiet_NaN();  ///< NaN: not crossed
  double mid_lo = std::numeric_limits<double>::quiet_NaN();    ///< uncertainty interval
  double mid_hi = std::numeric_limits<double>::quiet_NaN();
  bool early_stopped = false;
};

struct WalkPlotData {
  std::string title;                     ///< e.g. "lenet5-bn, additive noise"
  std::string sigma_label = "sigma";     ///< x axis label
  std::string sweep_symbol = "σ";        ///< the swept value in titles ("σ", "time", "scale")
  bool log_sigma = true;                 ///< log σ axis (false for linear grids)
  double clean_accuracy = 0.0;           ///< the metric's clean value
  double chance = 0.1;                   ///< the metric's floor
  std::string metric_label = "accuracy";  ///< y axis (and colour bar) label
  double y_lo = 0.0, y_hi = 1.0;         ///< the metric's axis range
  bool log_y = false;                    ///< logarithmic metric axis (perplexity)
  std::string floor_label = "chance";    ///< the floor line's name in the legend
  bool higher_is_better = true;          ///< false: the heatmap's palette runs the other way
  std::vector<SiteCurve> sites;          ///< one per walked site, network order
  std::vector<SiteCurve> reference;      ///< optional: global-noise curve(s)
};

struct PlotFormats {
  bool png = true;
  bool svg = true;
};

/// True if a gnuplot executable is on PATH.
bool gnuplot_available();

/// Writes into `dir`: curves.{png,svg} (accuracy vs σ per site, mean with band, clean and
/// chance lines, midpoints marked), midpoints.{png,svg} (midpoint per site as bars in network
/// order with uncertainty; sites not crossed marked), heatmap.{png,svg} (site × σ accuracy).
/// Returns the paths written. Throws std::runtime_error naming the problem if gnuplot is
/// missing or fails, if `dir` is not a directory, or if there are no sites; files are written
/// atomically (no half-written figure or temporary is left behind). With both formats off it
/// writes nothing and returns {}. The figures are described in docs/figures.md.
std::vector<std::string> write_walk_figures(const WalkPlotData& data, const std::string& dir,
                                            const PlotFormats& formats = {});

/// Weight statistics of the models trained at each σ for one walked site (means over repeats).
struct DynamicsSeries {
  int site = 0;
  std::string label;                 ///< e.g. "1 conv1"
  std::vector<double> sigma;         ///< ascending
  std::vector<double> rms;           ///< RMS of all analog weights of the trained model
  std::vector<double> binarization;  ///< binarisation index in [0, 1]
};

/// The learning-dynamics figure of a noisy-training sweep.
struct DynamicsPlotData {
  std::string title;
  std::string sigma_label = "noise level sigma";
  bool log_sigma = true;
  /// RMS and binarisation index of the clean-trained reference models (NaN: unknown).
  double clean_rms = std::numeric_limits<double>::quiet_NaN();
  double clean_binarization = std::numeric_limits<double>::quiet_NaN();
  std::vector<DynamicsSeries> series;  ///< network order
};

/// Writes dynamics.{png,svg} into `dir`: two panels side by side: weight RMS vs σ (log y) and
/// binarisation index vs σ (y in [0,1]), one line per site (a distinguishable colour/point type
/// per site, legend with the labels; for many sites a colour gradient in network order with a
/// legend or colour box), dashed horizontal reference lines for the clean models. σ ≤ 0 points
/// are dropped on log axes, non-finite values everywhere. Same error/atomicity contract as
/// write_walk_figures (also throws if there are no series or a series' sigma, rms and
/// binarization differ in length). Returns the paths written. See docs/figures.md.
std::vector<std::string> write_dynamics_figures(const DynamicsPlotData& data,
                                                const std::string& dir,
                                                const PlotFormats& formats = {});

/// One operating point of a mitigation: its parameter overhead and its accuracy under noise.
struct OperatingPoint {
  std::string label;      ///< e.g. "conv1,fc2" (a placement) or "fine-tune"
  std::string group;      ///< series it belongs to, e.g. "search", "taylor", "all sites"
  double overhead = 0.0;  ///< parameters added, % of the backbone's
  double mean = 0.0;      ///< accuracy under noise: mean and 95% CI
  double lo = 0.0;
  double hi = 0.0;
  bool pareto = false;  ///< on the Pareto front (no other point is better in both axes)
};

/// The figures of a denoiser study (quell denoise).
struct DenoisePlotData {
  std::string title;  ///< e.g. "lenet5-bn, static+dynamic noise"
  double clean_accuracy = 0.0;
  double noisy_accuracy = 0.0;  ///< unmitigated model under the noise
  double chance = 0.1;
  double budget = std::numeric_limits<double>::quiet_NaN();  ///< η in %; NaN: none drawn
  std::vector<OperatingPoint> points;
  /// The operating-point figure's file name, x axis and what its title says.
  std::string points_name = "pareto";
  std::string x_label = "parameter overhead (% of the backbone parameters)";
  std::string points_what = "accuracy under noise vs parameter overhead (mean, 95% CI)";
  /// Robustness: accuracy vs noise level for the unmitigated and mitigated models; the labels
  /// name the models ("unmitigated", "denoisers (chosen)", "fine-tuned", ...).
  std::string sigma_label = "noise level (x training level)";
  bool log_sigma = false;
  double train_sigma = std::numeric_limits<double>::quiet_NaN();  ///< marked if finite
  std::vector<SiteCurve> curves;
};

/// Writes into `dir`: pareto.{png,svg} (accuracy vs parameter overhead: every operating point
/// with its CI as an error bar, one point type per group with a legend, the Pareto front as a
/// step line through the points marked pareto, horizontal clean / unmitigated / chance lines, a
/// vertical budget line; a single point far right of all others (over 3x the next overhead)
/// is left out of the x range and named in an arrow at the right edge instead) and, when `curves` is not empty, robustness.{png,svg} (accuracy vs
/// noise level, one line with its 95% band per curve, clean and chance lines, the training
/// level marked). Same error/atomicity contract as write_walk_figures (throws if there are no
/// points). Returns the paths written. See docs/figures.md.
std::vector<std::string> write_denoise_figures(const DenoisePlotData& data,
                                               const std::string& dir,
                                               const PlotFormats& formats = {});

/// Writes only the operating-point figure of `data` (named data.points_name, e.g. "tradeoff"
/// for quell plan's accuracy vs energy overhead). Same contract as write_denoise_figures.
std::vector<std::string> write_points_figure(const DenoisePlotData& data, const std::string& dir,
                                             const PlotFormats& formats = {});

}  // namespace quell
