// The pieces the gnuplot figures share (walk_figures.cpp, dynamics_figures.cpp,
// denoise_figures.cpp; implemented in gnuplot.cpp): text and numbers for gnuplot, σ axes and
// ticks, curve tables, the scratch directory, the shared styles and the one gnuplot run that
// draws every figure of a call. Internal to the library.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <vector>

#include "quell/plot.h"

namespace quell::plot {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Text and numbers for gnuplot.

/// A gnuplot single-quoted string literal ('' for a quote; line breaks become spaces).
std::string gp_string(const std::string& text);
/// A number in the C locale (the caller's locale may use a decimal comma).
std::string num(double value);
/// Tick label for a σ value: 3 significant digits, a power of ten outside [10⁻⁴, 10⁶).
std::string sigma_text(double value);
/// The text on one line (line breaks and tabs become spaces).
std::string one_line(const std::string& text);
/// Number of characters of a UTF-8 string (for layout estimates).
size_t display_length(const std::string& text);

// ---------------------------------------------------------------------------------------------
// σ axes, ticks and curve tables.

// The σ axis of the accuracy curves: log or linear, with the range covered by the data.
struct SigmaAxis {
  bool log = true;
  double lo = 0.0;
  double hi = 1.0;
};

/// σ can be placed on the axis: finite, and > 0 on a log axis.
bool plottable_sigma(double sigma, bool log);
/// Completes an axis from the σ range [lo, hi] of the plotted data (lo > hi: nothing plottable).
SigmaAxis finish_sigma_axis(SigmaAxis axis, double lo, double hi);
/// Tick commands for a log axis `name` ("x" or "y") over [lo, hi]: a tick per decade, at most
/// about `max_labels` of them labelled.
std::string log_tics(const std::string& name, double lo, double hi, int max_labels);
/// Ticks of a log value axis: 1-2-5 labels in plain numbers over up to ~3.5 decades, decades
/// beyond.
std::string value_log_tics(const std::string& name, double lo, double hi);
/// The plottable points of a curve as "σ mean lo hi" lines; a missing band collapses to the mean.
std::string curve_table(const SiteCurve& curve, bool log);

// ---------------------------------------------------------------------------------------------
// Scratch files.

// A directory inside the output directory holding scripts, data and the not-yet-renamed
// outputs; removed with everything in it on destruction.

class ScratchDirectory {
 public:
  explicit ScratchDirectory(const fs::path& parent);
  ~ScratchDirectory();
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const fs::path& path() const { return path_; }

  // Writes a file inside the directory and returns its path.
  fs::path write(const std::string& name, const std::string& content) const;

 private:
  fs::path path_;
};

// ---------------------------------------------------------------------------------------------
// Figures. Each builder returns the gnuplot commands that draw the figure after the terminal
// and output are set, plus the canvas size and base font size it wants.

struct FigureScript {
  std::string name;  // file name without extension
  int width = 800;
  int height = 600;
  int font = 10;
  std::string body;
};

// Styles used by several figures (defined in gnuplot.cpp).
extern const char* const kCleanStyle;   // clean accuracy, clean-trained models: dashed black
extern const char* const kChanceStyle;  // chance accuracy: dotted dark grey
extern const char* const kDynColors[];  // 8 categorical colours
extern const int kDynPoints[];          // 8 markers to go with them

/// The plot command of `elements`, one per line ("plot NaN notitle" if there is none).
std::string join_plot(const std::vector<std::string>& elements);

// ---------------------------------------------------------------------------------------------
// The gnuplot run.

/// The gnuplot executable, after checking that `dir` can take figures. Throws naming the problem.
std::string gnuplot_for(const std::string& dir);
/// Draws every figure in every format with one gnuplot run into `scratch`, then renames the
/// outputs into `dir` once all of them exist. Returns the final paths.
std::vector<std::string> render(const std::vector<FigureScript>& figures,
                                const std::vector<std::string>& extensions,
                                const ScratchDirectory& scratch, const std::string& dir,
                                const std::string& exe);
/// The file extensions of the formats switched on ("png", "svg").
std::vector<std::string> format_extensions(const PlotFormats& formats);

}  // namespace quell::plot
