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

}  // namespace quell
