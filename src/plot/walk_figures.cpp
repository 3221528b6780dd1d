// Figures of a Walking Noise sweep: accuracy vs σ per site (one panel, or a grid of panels),
// midpoint per site, and the site × σ heatmap of mean accuracy. The gnuplot run is in gnuplot.cpp.

#include "quell/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "plot/gnuplot.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

using plot::curve_table;
using plot::FigureScript;
using plot::finish_sigma_axis;
using plot::format_extensions;
using plot::gnuplot_for;
using plot::gp_string;
using plot::join_plot;
using plot::kChanceStyle;
using plot::kCleanStyle;
using plot::log_tics;
using plot::num;
using plot::plottable_sigma;
using plot::render;
using plot::ScratchDirectory;
using plot::sigma_text;
using plot::SigmaAxis;

// ---------------------------------------------------------------------------------------------
// Data preparation.

SigmaAxis sigma_axis(const WalkPlotData& data) {
  SigmaAxis axis;
  axis.log = data.log_sigma;
  double lo = INFINITY, hi = -INFINITY;
  auto take = [&](const std::vector<SiteCurve>& curves) {
    for (const auto& curve : curves) {
      for (const auto& p : curve.points) {
        if (!plottable_sigma(p.sigma, axis.log) || !std::isfinite(p.mean)) continue;
        lo = std::min(lo, p.sigma);
        hi = std::max(hi, p.sigma);
      }
    }
  };
  take(data.sites);
  take(data.reference);
  return finish_sigma_axis(axis, lo, hi);
}

bool has_midpoint(const SiteCurve& site, bool log) {
  return std::isfinite(site.midpoint) && (!log || site.midpoint > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Figures 1 (accuracy curves), 2 (midpoints) and 3 (heatmap).

const char* const kMeanColor = "#1f5fa8";
const char* const kMidColor = "#d62728";
const char* const kRefColor = "#7f7f7f";
const char* const kNoteColor = "#b35900";

// Distinct colours when a few sites share one panel.
const char* const kSiteColors[] = {"#1f5fa8", "#d95f02", "#1b9e77", "#7570b3"};

// The parts of one panel of accuracy curves that do not depend on the site.
std::string curve_axes(const SigmaAxis& axis, const WalkPlotData& data, int max_labels) {
  std::ostringstream s;
  s << "set xrange [" << num(axis.lo) << ":" << num(axis.hi) << "]\n";
  s << "set yrange [" << num(data.y_lo) << ":" << num(data.y_hi) << "]\n";
  s << (data.log_y ? "set logscale y 10\n" : "unset logscale y\n");
  if (axis.log) {
    s << "set logscale x 10\n" << log_tics("x", axis.lo, axis.hi, max_labels);
  } else {
    s << "unset logscale x\nset xtics autofreq format '%g'\nset mxtics default\n";
  }
  if (data.y_lo == 0.0 && data.y_hi == 1.0) {
    s << "set ytics 0.2 format '%.1f'\nset mytics 2\n";
  } else {
    s << "set ytics autofreq format '%g'\nset mytics default\n";
  }
  s << "set grid xtics ytics lc rgb '#e6e6e6' lw 1 dt 1\n";
  s << "set tics front\n";
  // Clean (dashed) and chance (dotted) accuracy as arrows across the panel.
  if (std::isfinite(data.clean_accuracy)) {
    s << "set arrow from graph 0, first " << num(data.clean_accuracy) << " to graph 1, first "
      << num(data.clean_accuracy) << " nohead back " << kCleanStyle << "\n";
  }
  if (std::isfinite(data.chance)) {
    s << "set arrow from graph 0, first " << num(data.chance) << " to graph 1, first "
      << num(data.chance) << " nohead back " << kChanceStyle << "\n";
  }
  return s.str();
}

// Midpoint of a site in the current panel: the interval shaded, the value as a vertical line.
std::string midpoint_marks(const SiteCurve& site, const SigmaAxis& axis, const char* color) {
  if (!has_midpoint(site, axis.log)) return "";
  std::ostringstream s;
  const double lo = site.mid_lo, hi = site.mid_hi;
  if (std::isfinite(lo) && std::isfinite(hi) && hi > lo && (!axis.log || lo > 0.0)) {
    s << "set object rectangle from first " << num(std::max(lo, axis.lo)) << ", graph 0 to first "
      << num(std::min(hi, axis.hi)) << ", graph 1 back fc rgb '" << color
      << "' fs transparent solid 0.12 noborder\n";
  }
  s << "set arrow from first " << num(site.midpoint) << ", graph 0 to first " << num(site.midpoint)
    << ", graph 1 nohead back lc rgb '" << color << "' lw 1.5\n";
  return s.str();
}

// Plot elements for the reference curves (grey, thinner, under the site).
std::vector<std::string> reference_elements(const std::vector<std::string>& ref_files) {
  std::vector<std::string> out;
  for (const auto& file : ref_files) {
    out.push_back(gp_string(file) + " using 1:3:4 with filledcurves fc rgb '" + kRefColor +
                  "' fs transparent solid 0.15 noborder notitle");
    out.push_back(gp_string(file) + " using 1:2 with lines lc rgb '" + kRefColor +
                  "' lw 2 dt (6,2,2,2) notitle");
  }
  return out;
}

// Writes the curve tables of sites and references; returns their paths (same order).
struct CurveFiles {
  std::vector<std::string> sites;
  std::vector<std::string> refs;
};

CurveFiles write_curve_files(const WalkPlotData& data, const SigmaAxis& axis,
                             const ScratchDirectory& scratch) {
  CurveFiles files;
  for (size_t i = 0; i < data.sites.size(); ++i) {
    files.sites.push_back(
        scratch.write("site" + std::to_string(i) + ".dat", curve_table(data.sites[i], axis.log))
            .string());
  }
  for (size_t i = 0; i < data.reference.size(); ++i) {
    files.refs.push_back(
        scratch.write("ref" + std::to_string(i) + ".dat", curve_table(data.reference[i], axis.log))
            .string());
  }
  return files;
}

bool has_rows(const SiteCurve& curve, bool log) { return !curve_table(curve, log).empty(); }

std::string reference_title(const WalkPlotData& data) {
  if (data.reference.size() == 1 && !data.reference[0].label.empty()) {
    return data.reference[0].label;
  }
  return "global noise";
}

std::string with_title_prefix(const WalkPlotData& data, const std::string& what) {
  return data.title.empty() ? what : data.title + " — " + what;
}

// Figure 1, few sites: one panel, sites overlaid in distinct colours.
FigureScript curves_single(const WalkPlotData& data, const SigmaAxis& axis,
                           const CurveFiles& files) {
  FigureScript fig;
  fig.name = "curves";
  fig.width = 1000;
  fig.height = 640;
  fig.font = 11;
  std::ostringstream s;
  s << curve_axes(axis, data, 10);
  s << "set title "
    << gp_string(with_title_prefix(data, data.metric_label + " vs " + data.sweep_symbol + " (mean, 95% band)"))
    << " font ',13'\n";
  s << "set xlabel " << gp_string(data.sigma_label) << "\nset ylabel "
    << gp_string(data.metric_label) << "\n";
  s << "set key outside right top vertical Left reverse samplen 3 spacing 1.3 box lc rgb "
       "'#cccccc'\n";
  s << "set lmargin 9\nset bmargin 4\n";
  std::vector<std::string> elements = reference_elements(files.refs);
  if (!files.refs.empty()) {
    elements.push_back("NaN with lines lc rgb '" + std::string(kRefColor) +
                       "' lw 2 dt (6,2,2,2) title " + gp_string(reference_title(data)));
  }
  for (size_t i = 0; i < data.sites.size(); ++i) {
    const SiteCurve& site = data.sites[i];
    const char* color = kSiteColors[i % 4];
    s << midpoint_marks(site, axis, color);
    std::string title = site.label;
    std::string notes;
    if (!has_midpoint(site, axis.log)) notes = "not crossed";
    if (site.early_stopped) notes += std::string(notes.empty() ? "" : ", ") + "early stop";
    if (!notes.empty()) title += " (" + notes + ")";
    if (has_rows(site, axis.log)) {
      elements.push_back(gp_string(files.sites[i]) + " using 1:3:4 with filledcurves fc rgb '" +
                         color + "' fs transparent solid 0.2 noborder notitle");
      elements.push_back(gp_string(files.sites[i]) + " using 1:2 with linespoints lc rgb '" +
                         color + "' lw 2 pt 7 ps 0.5 title " + gp_string(title));
    } else {
      elements.push_back("NaN with lines lc rgb '" + std::string(color) + "' lw 2 title " +
                         gp_string(title + " (no data)"));
    }
  }
  elements.push_back(
      "NaN with filledcurves fc rgb '#888888' fs transparent solid 0.3 noborder title '95% band'");
  elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title " +
                     gp_string("clean " + data.metric_label));
  elements.push_back(std::string("NaN with lines ") + kChanceStyle + " title " +
                     gp_string(data.floor_label));
  elements.push_back("NaN with lines lc rgb '#888888' lw 1.5 title 'midpoint (shade: interval)'");
  s << join_plot(elements);
  fig.body = s.str();
  return fig;
}

// Figure 1, many sites: a grid of small panels in network order, shared axes, one legend strip.
FigureScript curves_grid(const WalkPlotData& data, const SigmaAxis& axis, const CurveFiles& files) {
  const int n = static_cast<int>(data.sites.size());
  const int cols = static_cast<int>(std::ceil(std::sqrt(static_cast<double>(n)) - 1e-9));
  const int rows = (n + cols - 1) / cols;
  const bool large = n > 20;
  FigureScript fig;
  fig.name = "curves";
  fig.font = large ? 10 : 11;
  // Geometry in pixels.
  const int left = 80, right = 25, top = 100, bottom = 60;
  const int gap_x = 40, gap_y = large ? 50 : 55;
  // Panels widen for few columns so the one-row legend strip fits.
  const int pw = std::max(large ? 250 : 300, (1300 - left - right - (cols - 1) * gap_x) / cols);
  const int ph = large ? 170 : 200;
  fig.width = left + right + cols * pw + (cols - 1) * gap_x;
  fig.height = top + bottom + rows * ph + (rows - 1) * gap_y;
  const double W = fig.width, H = fig.height;
  auto sx = [&](double px) { return num(px / W); };
  auto sy = [&](double px) { return num(1.0 - px / H); };

  std::ostringstream s;
  s << "set multiplot\n";
  for (int i = 0; i < n; ++i) {
    const SiteCurve& site = data.sites[i];
    const int r = i / cols, c = i % cols;
    const double x0 = left + c * (pw + gap_x), y0 = top + r * (ph + gap_y);
    s << "# site " << i << "\n";
    s << "unset object\nunset label\n";
    // Drop only the midpoint arrow (tag-less arrows of clean/chance are re-created below).
    s << "unset arrow\n" << curve_axes(axis, data, std::max(3, pw / 50));
    s << "set lmargin at screen " << sx(x0) << "\nset rmargin at screen " << sx(x0 + pw) << "\n";
    s << "set tmargin at screen " << sy(y0) << "\nset bmargin at screen " << sy(y0 + ph) << "\n";
    s << "set title " << gp_string(site.label) << " offset 0,-0.6\n";
    s << "set format y " << (c == 0 ? "'%.1f'" : "''") << "\n";
    s << midpoint_marks(site, axis, kMidColor);
    // Notes go where the curve is not: upper right after a crossing (the curve has fallen),
    // lower right when the curve stayed up.
    const bool crossed = has_midpoint(site, axis.log);
    double note_y = crossed ? 0.76 : 0.30;
    if (!crossed) {
      s << "set label 'not crossed' at graph 0.97, graph " << num(note_y) << " right front tc rgb '"
        << kMidColor << "' font '," << fig.font << "'\n";
      note_y -= 0.11;
    }
    if (site.early_stopped) {
      s << "set label 'early stop' at graph 0.97, graph " << num(note_y) << " right front tc rgb '"
        << kNoteColor << "' font '," << fig.font << "'\n";
    }
    if (!has_rows(site, axis.log)) {
      s << "set label 'no data' at graph 0.5, graph 0.5 center front tc rgb '#666666'\n";
    }
    std::vector<std::string> elements = reference_elements(files.refs);
    if (has_rows(site, axis.log)) {
      elements.push_back(gp_string(files.sites[i]) + " using 1:3:4 with filledcurves fc rgb '" +
                         kMeanColor + "' fs transparent solid 0.25 noborder notitle");
      elements.push_back(gp_string(files.sites[i]) + " using 1:2 with linespoints lc rgb '" +
                         kMeanColor + "' lw 2 pt 7 ps 0.35 notitle");
    }
    s << "unset key\n" << join_plot(elements);
  }

  // Legend strip, figure title and shared axis labels, drawn once.
  s << "unset object\nunset arrow\nunset label\nunset title\nunset logscale\nunset grid\n";
  s << "unset xtics\nunset ytics\nunset mxtics\nunset mytics\nset border 0\n";
  s << "set xrange [0:1]\nset yrange [0:1]\n";
  s << "set lmargin at screen " << sx(left) << "\nset rmargin at screen " << sx(W - right) << "\n";
  s << "set tmargin at screen " << sy(48) << "\nset bmargin at screen " << sy(78) << "\n";
  s << "set label 1 "
    << gp_string(with_title_prefix(data, data.metric_label + " vs " + data.sweep_symbol + " per site (mean, 95% band)"))
    << " at screen 0.5, screen " << sy(22) << " center font '," << fig.font + (large ? 6 : 4)
    << "'\n";
  s << "set label 2 " << gp_string(data.sigma_label) << " at screen 0.5, screen " << num(14.0 / H)
    << " center font '," << fig.font + 1 << "'\n";
  s << "set label 3 " << gp_string(data.metric_label) << " at screen " << num(18.0 / W) << ", screen 0.5 center rotate by 90"
    << " font '," << fig.font + 1 << "'\n";
  s << "set key at screen 0.5, screen " << sy(63)
    << " center center horizontal maxrows 1 Left reverse samplen 3 width -2\n";
  std::vector<std::string> legend = {
      "NaN with lines lc rgb '" + std::string(kMeanColor) + "' lw 2 title 'mean'",
      "NaN with filledcurves fc rgb '" + std::string(kMeanColor) +
          "' fs transparent solid 0.25 noborder title '95% band'",
      std::string("NaN with lines ") + kCleanStyle + " title 'clean'",
      std::string("NaN with lines ") + kChanceStyle + " title " + gp_string(data.floor_label),
      "NaN with lines lc rgb '" + std::string(kMidColor) + "' lw 1.5 title 'midpoint ± interval'",
  };
  if (!files.refs.empty()) {
    legend.push_back("NaN with lines lc rgb '" + std::string(kRefColor) +
                     "' lw 2 dt (6,2,2,2) title " + gp_string(reference_title(data)));
  }
  s << join_plot(legend);
  s << "unset multiplot\n";
  fig.body = s.str();
  return fig;
}

// Figure 2: midpoint per site as bars with the interval as error bars; not crossed: hatched
// full-height column labelled "n.c.".
FigureScript midpoints_figure(const WalkPlotData& data, const SigmaAxis& axis,
                              const ScratchDirectory& scratch) {
  const int n = static_cast<int>(data.sites.size());
  const bool log = data.log_sigma;
  FigureScript fig;
  fig.name = "midpoints";
  fig.font = n > 30 ? 9 : 11;
  const int per_site = n > 30 ? 22 : 48;
  fig.width = std::max(1000, 160 + n * per_site);
  fig.height = n > 30 ? 700 : 620;

  // Value range: the swept σ range and every midpoint / interval end that can be drawn.
  double lo = axis.lo, hi = axis.hi;
  for (const auto& site : data.sites) {
    for (const double v : {site.midpoint, site.mid_lo, site.mid_hi}) {
      if (!std::isfinite(v) || (log && v <= 0.0)) continue;
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
  }
  if (log) {
    lo /= 1.5;
    hi *= 3.0;  // room above the tallest bar for the "n.c." marks
  } else {
    lo = std::min(0.0, lo);
    hi = hi + 0.15 * (hi - lo);
    if (hi <= lo) hi = lo + 1.0;
  }

  std::ostringstream bars, errors, missing;
  for (int i = 0; i < n; ++i) {
    const SiteCurve& site = data.sites[i];
    if (has_midpoint(site, log)) {
      bars << i << ' ' << num(site.midpoint) << '\n';
      const bool interval = std::isfinite(site.mid_lo) && std::isfinite(site.mid_hi) &&
                            (!log || (site.mid_lo > 0.0 && site.mid_hi > 0.0));
      if (interval) {
        errors << i << ' ' << num(site.midpoint) << ' ' << num(site.mid_lo) << ' '
               << num(site.mid_hi) << '\n';
      }
    } else {
      missing << i << '\n';
    }
  }
  const std::string bars_file = scratch.write("mid_bars.dat", bars.str()).string();
  const std::string errors_file = scratch.write("mid_err.dat", errors.str()).string();
  const std::string missing_file = scratch.write("mid_nc.dat", missing.str()).string();

  std::ostringstream s;
  s << "set label 1 "
    << gp_string(with_title_prefix(data, "midpoint " + data.sweep_symbol + " per site (bar: midpoint, whiskers: interval)"))
    << " at screen 0.5, screen " << num(1.0 - 22.0 / fig.height) << " center font ',"
    << fig.font + 3 << "'\n";
  s << "set key at screen 0.5, screen " << num(1.0 - 52.0 / fig.height)
    << " center center horizontal maxrows 1 Left reverse samplen 2 width 1\n";
  s << "set tmargin at screen " << num(1.0 - 75.0 / fig.height) << "\n";
  s << "set xrange [-0.6:" << num(n - 0.4) << "]\n";
  s << "set yrange [" << num(lo) << ":" << num(hi) << "]\n";
  s << "set ylabel " << gp_string("midpoint " + data.sigma_label) << "\n";
  if (log) {
    s << "set logscale y 10\n" << log_tics("y", lo, hi, 12);
  } else {
    s << "set ytics format '%g'\n";
  }
  s << "set xtics (";
  for (int i = 0; i < n; ++i) s << (i ? ", " : "") << gp_string(data.sites[i].label) << " " << i;
  s << ") rotate by " << (n > 16 ? "90 right" : "45 right") << " scale 0\n";
  s << "set grid ytics lc rgb '#e6e6e6' lw 1\nset tics front\n";
  s << "set lmargin 10\nset style textbox opaque noborder margins 1,1\n";
  const std::string base = num(lo);
  const std::string top = num(hi);
  for (int i = 0; i < n; ++i) {
    if (has_midpoint(data.sites[i], log)) continue;
    s << "set label 'n.c.' at first " << i << ", graph 0.96 center front boxed tc rgb '"
      << kMidColor << "' font '," << fig.font << "'\n";
  }
  std::vector<std::string> elements;
  if (!bars.str().empty()) {
    elements.push_back(gp_string(bars_file) + " using 1:2:($1-0.38):($1+0.38):(" + base +
                       "):2 with boxxyerror fc rgb '" + kMeanColor +
                       "' fs solid 0.75 noborder title 'midpoint'");
  }
  if (!errors.str().empty()) {
    elements.push_back(gp_string(errors_file) +
                       " using 1:3:(0):($4-$3) with vectors heads size screen 0.006,90 "
                       "lc rgb '#000000' lw 1.5 title 'interval'");
  }
  if (!missing.str().empty()) {
    elements.push_back(gp_string(missing_file) + " using 1:(" + base + "):($1-0.38):($1+0.38):(" +
                       base + "):(" + top + ") with boxxyerror fc rgb '" + kMidColor +
                       "' fs transparent pattern 4 border lc rgb '" + kMidColor +
                       "' title 'n.c.: not crossed in the swept " + data.sweep_symbol + " range'");
  }
  s << join_plot(elements);
  fig.body = s.str();
  return fig;
}

// Figure 3: site × σ grid of mean accuracy; cells not evaluated grey, midpoints marked.
FigureScript heatmap_figure(const WalkPlotData& data, const ScratchDirectory& scratch) {
  const int n = static_cast<int>(data.sites.size());
  const bool log = data.log_sigma;
  // Columns: every σ of any site (categorical, so σ = 0 has a column even on a log grid).
  std::vector<double> sigmas;
  for (const auto& site : data.sites) {
    for (const auto& p : site.points) {
      if (std::isfinite(p.sigma)) sigmas.push_back(p.sigma);
    }
  }
  std::sort(sigmas.begin(), sigmas.end());
  auto same = [](double a, double b) {
    return std::abs(a - b) <= 1e-9 * std::max(std::abs(a), std::abs(b));
  };
  sigmas.erase(std::unique(sigmas.begin(), sigmas.end(), same), sigmas.end());
  if (sigmas.empty()) sigmas.push_back(0.0);
  const int m = static_cast<int>(sigmas.size());
  auto column_of = [&](double sigma) {
    const auto it = std::lower_bound(sigmas.begin(), sigmas.end(), sigma,
                                     [&](double a, double b) { return a < b && !same(a, b); });
    return it != sigmas.end() && same(*it, sigma) ? static_cast<int>(it - sigmas.begin()) : -1;
  };

  std::ostringstream cells, blank, marks;
  for (int r = 0; r < n; ++r) {
    std::vector<double> row(m, NAN);
    for (const auto& p : data.sites[r].points) {
      if (!std::isfinite(p.sigma) || !std::isfinite(p.mean)) continue;
      const int c = column_of(p.sigma);
      if (c >= 0) row[c] = p.mean;
    }
    for (int c = 0; c < m; ++c) {
      if (std::isfinite(row[c])) {
        cells << c << ' ' << r << ' ' << num(row[c]) << '\n';
      } else {
        blank << c << ' ' << r << '\n';
      }
    }
    // Midpoint position on the categorical axis, interpolated between neighbouring columns.
    const double mid = data.sites[r].midpoint;
    if (std::isfinite(mid) && m > 1 && mid >= sigmas.front() && mid <= sigmas.back()) {
      int c = 0;
      while (c + 2 < m && sigmas[c + 1] < mid) ++c;
      const double a = sigmas[c], b = sigmas[c + 1];
      double t = 0.0;
      if (log && a > 0.0 && b > 0.0) {
        t = (std::log(mid) - std::log(a)) / (std::log(b) - std::log(a));
      } else {
        t = (mid - a) / (b - a);
      }
      marks << num(c + std::clamp(t, 0.0, 1.0)) << ' ' << r << '\n';
    }
  }
  const std::string cells_file = scratch.write("heat_cells.dat", cells.str()).string();
  const std::string blank_file = scratch.write("heat_blank.dat", blank.str()).string();
  const std::string marks_file = scratch.write("heat_mid.dat", marks.str()).string();

  size_t longest = 0;
  for (const auto& site : data.sites) longest = std::max(longest, site.label.size());
  FigureScript fig;
  fig.name = "heatmap";
  fig.font = n > 30 ? 9 : 11;
  const int cell_w = std::clamp(1000 / std::max(1, m), 16, 48);
  // Rows between 13 and 36 px, but a plot at least 200 px tall (colour bar legible).
  const int cell_h =
      std::max(std::clamp(700 / std::max(1, n), 13, 36), (200 + n - 1) / std::max(1, n));
  const int label_px = 30 + static_cast<int>(std::min<size_t>(longest, 40)) * (fig.font - 1);
  const int top = 80, bottom = 120, right = 175;
  const int plot_w = m * cell_w, plot_h = n * cell_h;
  fig.width = label_px + plot_w + right;
  fig.height = top + plot_h + bottom;
  const double W = fig.width, H = fig.height;

  std::ostringstream s;
  s << "set label 1 "
    << gp_string(with_title_prefix(data, "mean " + data.metric_label + " per site and " + data.sweep_symbol))
    << " at screen 0.5, screen " << num(1.0 - 22.0 / H) << " center font '," << fig.font + 3
    << "'\n";
  s << "set key at screen " << num((label_px + plot_w / 2.0) / W) << ", screen "
    << num(1.0 - 52.0 / H) << " center center horizontal maxrows 1 Left reverse samplen 1.5\n";
  s << "set xrange [-0.5:" << num(m - 0.5) << "]\n";
  s << "set yrange [" << num(n - 0.5) << ":-0.5]\n";  // first site on top
  if (data.y_lo == 0.0 && data.y_hi == 1.0) {
    s << "set cbrange [0:1]\nset cbtics 0.2 format '%.1f'\n";
  } else {
    s << "set cbrange [" << num(data.y_lo) << ":" << num(data.y_hi)
      << "]\nset cbtics autofreq format '%g'\n";
  }
  s << "set cblabel " << gp_string("mean " + data.metric_label) << " offset 1.5,0\n";
  // Good is yellow, bad is dark, whichever way the metric runs.
  s << (data.higher_is_better ? "set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21908d', "
                                "0.75 '#5dc963', 1 '#fde725')\n"
                              : "set palette defined (0 '#fde725', 0.25 '#5dc963', 0.5 '#21908d', "
                                "0.75 '#3b528b', 1 '#440154')\n");
  s << "set colorbox user origin screen " << num((label_px + plot_w + 25.0) / W) << ", screen "
    << num(bottom / H) << " size screen " << num(18.0 / W) << ", screen " << num(plot_h / H)
    << "\n";
  s << "set lmargin at screen " << num(label_px / W) << "\n";
  s << "set rmargin at screen " << num((label_px + plot_w) / W) << "\n";
  s << "set bmargin at screen " << num(bottom / H) << "\n";
  s << "set tmargin at screen " << num((bottom + plot_h) / H) << "\n";
  s << "set xlabel " << gp_string(data.sigma_label) << " offset 0,0.5\n";
  const int label_every = std::max(1, (m + 29) / 30);
  s << "set xtics (";
  for (int c = 0; c < m; ++c) {
    s << (c ? ", " : "")
      << (c % label_every == 0 ? gp_string(sigma_text(sigmas[c])) : std::string("''")) << " " << c;
  }
  s << ") rotate by 90 right scale 0.5 font '," << fig.font - 1 << "'\n";
  s << "set ytics (";
  for (int r = 0; r < n; ++r) s << (r ? ", " : "") << gp_string(data.sites[r].label) << " " << r;
  s << ") scale 0\n";
  s << "set border lw 0.5\nset tics front\n";
  std::vector<std::string> elements;
  elements.push_back(gp_string(cells_file) +
                     " using 1:2:(0.5):(0.5):3 with boxxyerror fc palette fs solid 1.0 noborder"
                     " notitle");
  if (!blank.str().empty()) {
    elements.push_back(gp_string(blank_file) +
                       " using 1:2:(0.5):(0.5) with boxxyerror fc rgb '#d9d9d9' fs solid 1.0 "
                       "noborder title 'not evaluated'");
  }
  if (!marks.str().empty()) {
    elements.push_back(gp_string(marks_file) +
                       " using 1:2:(0):(0.42) with boxxyerror fc rgb '#ff3030' fs solid 1.0 "
                       "border lc rgb '#ff3030' lw 3 title 'midpoint'");
  }
  s << join_plot(elements);
  fig.body = s.str();
  return fig;
}

}  // namespace

std::vector<std::string> write_walk_figures(const WalkPlotData& data, const std::string& dir,
                                            const PlotFormats& formats) {
  const std::vector<std::string> extensions = format_extensions(formats);
  if (extensions.empty()) return {};
  if (data.sites.empty()) throw std::runtime_error("cannot draw figures: no sites to plot");
  const std::string exe = gnuplot_for(dir);

  std::error_code ec;
  const ScratchDirectory scratch(fs::absolute(dir, ec));
  const SigmaAxis axis = sigma_axis(data);
  const CurveFiles files = write_curve_files(data, axis, scratch);
  std::vector<FigureScript> figures;
  figures.push_back(data.sites.size() > 4 ? curves_grid(data, axis, files)
                                          : curves_single(data, axis, files));
  figures.push_back(midpoints_figure(data, axis, scratch));
  figures.push_back(heatmap_figure(data, scratch));
  return render(figures, extensions, scratch, dir, exe);
}

}  // namespace quell
