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
  bool log_sigma = true;                 ///< log σ axis (false for linear grids)
  double clean_accuracy = 0.0;
  double chance = 0.1;
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

}  // namespace quell
