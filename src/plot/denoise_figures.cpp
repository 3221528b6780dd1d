// Figures of a denoiser study: accuracy under noise vs parameter overhead (the Pareto figure,
// also drawn alone as a named operating-point figure) and accuracy vs noise level per curve. The
// gnuplot run is in gnuplot.cpp.

#include "quell/plot.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <filesystem>
#include <locale>
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
using plot::display_length;
using plot::FigureScript;
using plot::finish_sigma_axis;
using plot::format_extensions;
using plot::gnuplot_for;
using plot::gp_string;
using plot::join_plot;
using plot::kChanceStyle;
using plot::kCleanStyle;
using plot::kDynColors;
using plot::kDynPoints;
using plot::num;
using plot::one_line;
using plot::plottable_sigma;
using plot::render;
using plot::ScratchDirectory;
using plot::sigma_text;
using plot::SigmaAxis;
using plot::value_log_tics;

// ---------------------------------------------------------------------------------------------
// Denoiser study: accuracy under noise vs parameter overhead, and robustness curves.

const char* const kUnmitigatedStyle = "lc rgb '#d62728' lw 1.5 dt (7,4)";
const char* const kBudgetColor = "#6a3d9a";
const char* const kBudgetStyle = "lc rgb '#6a3d9a' lw 2.2 dt (2,3)";
const char* const kTrainLevelStyle = "lc rgb '#6a3d9a' lw 2.2 dt (2,3)";
const char* const kFrontColor = "#222222";

std::string titled(const std::string& title, const std::string& what) {
  return title.empty() ? what : title + " — " + what;
}

// A horizontal reference line across the panel at accuracy `y` (nothing if not finite).
std::string horizontal_line(double y, const char* style) {
  if (!std::isfinite(y)) return "";
  return "set arrow from graph 0, first " + num(y) + " to graph 1, first " + num(y) +
         " nohead back " + style + "\n";
}

// `text` on one line, cut to `max_chars` characters (UTF-8 aware) with an ellipsis.
std::string shortened(const std::string& text, size_t max_chars) {
  const std::string line = one_line(text);
  if (display_length(line) <= max_chars) return line;
  std::string out;
  size_t chars = 0;
  for (const char c : line) {
    const bool starts_char = (static_cast<unsigned char>(c) & 0xC0) != 0x80;
    if (starts_char && ++chars > max_chars - 1) break;
    out += c;
  }
  return out + "…";
}

// A value for a legend entry: 3 significant digits in the C locale ("0.482", "20").
std::string short_num(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(3);
  out << value;
  return out.str();
}

bool plottable_point(const OperatingPoint& p) {
  return std::isfinite(p.overhead) && std::isfinite(p.mean);
}

// "overhead mean lo hi" with a missing CI collapsed to the mean.
std::string operating_row(const OperatingPoint& p) {
  const bool band = std::isfinite(p.lo) && std::isfinite(p.hi);
  return num(p.overhead) + ' ' + num(p.mean) + ' ' + num(band ? p.lo : p.mean) + ' ' +
         num(band ? p.hi : p.mean) + '\n';
}

// Labels of the Pareto front's points in a small font, placed greedily along the front: up-left
// of the point first (no point can lie there: it would dominate this one), else up-right, else
// down-right; a label that would leave the plot or overlap another label or a point is left out.
// `range` is {x_lo, x_hi, y_lo, y_hi}; the plot area is estimated as plot_w × plot_h pixels.
std::string front_labels(const std::vector<const OperatingPoint*>& front,
                         const std::vector<OperatingPoint>& points,
                         const std::array<double, 4>& range, double plot_w, double plot_h,
                         int font) {
  struct Box {
    double x0, x1, y0, y1;
    bool overlaps(const Box& o) const { return x0 < o.x1 && o.x0 < x1 && y0 < o.y1 && o.y0 < y1; }
  };
  auto px = [&](double x) { return (x - range[0]) / (range[1] - range[0]) * plot_w; };
  auto py = [&](double y) { return (y - range[2]) / (range[3] - range[2]) * plot_h; };
  std::vector<Box> taken;
  for (const auto& p : points) {  // markers with their error bars
    if (!plottable_point(p)) continue;
    const bool band = std::isfinite(p.lo) && std::isfinite(p.hi);
    const double lo = band ? std::min(p.lo, p.mean) : p.mean;
    const double hi = band ? std::max(p.hi, p.mean) : p.mean;
    taken.push_back({px(p.overhead) - 6, px(p.overhead) + 6, py(lo) - 6, py(hi) + 6});
  }
  // Offsets in characters of the figure's base font (about 8 × 16 px), the label's box in pixels.
  struct Place {
    const char* align;
    double dx, dy;  // characters
  };
  const Place places[] = {{"right", -1.0, 0.8}, {"left", 1.0, 0.8}, {"left", 1.0, -0.8}};
  const double char_w = 0.7 * font + 0.5, char_h = 1.4 * font;
  std::ostringstream s;
  for (const auto* p : front) {
    const std::string text = shortened(p->label, 28);
    if (text.empty()) continue;
    const double w = char_w * static_cast<double>(display_length(text));
    const double x = px(p->overhead), y = py(p->mean);
    for (const Place& place : places) {
      const double ax = x + place.dx * 8.0, ay = y + place.dy * 16.0;
      const Box box = place.align[0] == 'r' ? Box{ax - w, ax, ay - char_h / 2, ay + char_h / 2}
                                            : Box{ax, ax + w, ay - char_h / 2, ay + char_h / 2};
      if (box.x0 < 4 || box.x1 > plot_w - 4 || box.y0 < 0 || box.y1 > plot_h) continue;
      if (std::any_of(taken.begin(), taken.end(), [&](const Box& t) { return t.overlaps(box); })) {
        continue;
      }
      taken.push_back(box);
      s << "set label " << gp_string(text) << " at first " << num(p->overhead) << ", first "
        << num(p->mean) << ' ' << place.align << " offset " << num(place.dx) << ',' << num(place.dy)
        << " front tc rgb '#333333' font '," << font << "'\n";
      break;
    }
  }
  return s.str();
}

// The Pareto figure: one error-bar series per group (first-appearance order), the front as a
// step line, clean / unmitigated / chance lines, the budget line; legend outside on the right.
FigureScript pareto_figure(const DenoisePlotData& data, const ScratchDirectory& scratch) {
  // Groups in order of first appearance.
  std::vector<std::string> groups;
  for (const auto& p : data.points) {
    if (std::find(groups.begin(), groups.end(), p.group) == groups.end()) {
      groups.push_back(p.group);
    }
  }
  std::vector<std::string> group_files;
  std::vector<bool> group_rows;
  for (size_t g = 0; g < groups.size(); ++g) {
    std::string rows;
    for (const auto& p : data.points) {
      if (p.group == groups[g] && plottable_point(p)) rows += operating_row(p);
    }
    group_files.push_back(scratch.write("pareto_g" + std::to_string(g) + ".dat", rows).string());
    group_rows.push_back(!rows.empty());
  }
  std::vector<const OperatingPoint*> front;
  for (const auto& p : data.points) {
    if (p.pareto && plottable_point(p)) front.push_back(&p);
  }
  std::stable_sort(
      front.begin(), front.end(),
      [](const OperatingPoint* a, const OperatingPoint* b) { return a->overhead < b->overhead; });
  std::string front_rows;
  for (const auto* p : front) front_rows += num(p->overhead) + ' ' + num(p->mean) + '\n';
  const std::string front_file = scratch.write("pareto_front.dat", front_rows).string();
  const bool budget = std::isfinite(data.budget);

  // Ranges: x from 0 (or the smallest overhead) to the largest overhead or budget, y over every
  // mean, CI end and reference line, each with a little headroom.
  double x_lo = 0.0, x_hi = -INFINITY, y_lo = INFINITY, y_hi = -INFINITY;
  auto take_y = [&](double v) {
    if (!std::isfinite(v)) return;
    y_lo = std::min(y_lo, v);
    y_hi = std::max(y_hi, v);
  };
  // One point far to the right of all others (e.g. blocks at every site) would squeeze the
  // rest into the left edge: leave it out of the range and name it at the right edge instead.
  const OperatingPoint* outlier = nullptr;
  {
    const OperatingPoint* first = nullptr;
    double second = -INFINITY;
    for (const auto& p : data.points) {
      if (!plottable_point(p)) continue;
      if (!first || p.overhead > first->overhead) {
        if (first) second = std::max(second, first->overhead);
        first = &p;
      } else {
        second = std::max(second, p.overhead);
      }
    }
    const double reference = std::max(second, budget ? data.budget : -INFINITY);
    if (first && reference > 0 && first->overhead > 3.0 * reference) outlier = first;
  }
  for (const auto& p : data.points) {
    if (!plottable_point(p)) continue;
    take_y(p.mean);
    if (&p == outlier) continue;
    x_lo = std::min(x_lo, p.overhead);
    x_hi = std::max(x_hi, p.overhead);
  }
  if (budget) {
    x_lo = std::min(x_lo, data.budget);
    x_hi = std::max(x_hi, data.budget);
  }
  for (const double v : {data.clean_accuracy, data.noisy_accuracy, data.chance}) take_y(v);
  // CI ends (wide with few draws) stretch the axis at most to [0, 1]: accuracy cannot leave it,
  // the bars are clipped at the border.
  const double ci_floor = std::min(0.0, y_lo), ci_ceiling = std::max(1.0, y_hi);
  for (const auto& p : data.points) {
    if (!plottable_point(p) || !std::isfinite(p.lo) || !std::isfinite(p.hi)) continue;
    take_y(std::clamp(p.lo, ci_floor, ci_ceiling));
    take_y(std::clamp(p.hi, ci_floor, ci_ceiling));
  }
  if (!(x_hi > x_lo)) x_hi = x_lo + 1.0;
  x_hi += 0.08 * (x_hi - x_lo);
  if (x_lo < 0.0) x_lo -= 0.04 * (x_hi - x_lo);
  if (!(y_lo <= y_hi)) {
    y_lo = 0.0;
    y_hi = 1.0;
  }
  const double y_span = std::max(y_hi - y_lo, 0.05);
  const double y_data_lo = y_lo, y_data_hi = y_hi;
  y_lo -= 0.05 * y_span;
  y_hi += 0.08 * y_span;
  // Ends on multiples of a round step (0.05 for spans around 0.5).
  const double step = std::pow(10.0, std::floor(std::log10(y_span))) / 2.0;
  y_lo = std::floor(y_lo / step + 1e-9) * step;
  y_hi = std::ceil(y_hi / step - 1e-9) * step;
  if (y_data_lo >= 0.0) y_lo = std::max(0.0, y_lo);
  if (y_data_hi <= 1.0) y_hi = std::min(1.0, y_hi);
  if (!(y_hi > y_lo)) y_hi = y_lo + 0.1;

  FigureScript fig;
  fig.name = data.points_name;
  fig.width = 1100;
  fig.height = 660;
  fig.font = 11;
  std::ostringstream s;
  s << "set title "
    << gp_string(titled(data.title, data.points_what)) << " font ',13'\n";
  s << "set xlabel " << gp_string(data.x_label) << "\n";
  s << "set ylabel 'accuracy under noise'\n";
  s << "set xrange [" << num(x_lo) << ":" << num(x_hi) << "]\n";
  s << "set yrange [" << num(y_lo) << ":" << num(y_hi) << "]\n";
  s << "set xtics autofreq format '%g'\nset mxtics default\n";
  // Same number of decimals on every accuracy tick (0.9, 1.0 rather than 0.9, 1).
  const double y_range = y_hi - y_lo;
  const int decimals =
      y_range >= 0.5 ? 1 : std::clamp(static_cast<int>(std::floor(-std::log10(y_range))) + 2, 2, 4);
  s << "set ytics autofreq format '%." << decimals << "f'\nset mytics 2\n";
  s << "set grid xtics ytics lc rgb '#e6e6e6' lw 1 dt 1\nset tics front\n";
  s << "set key outside right top vertical Left reverse samplen 3 spacing 1.3 box lc rgb "
       "'#cccccc'\n";
  s << "set lmargin 9\nset bmargin 4\n";
  s << "set errorbars small\n";
  s << horizontal_line(data.clean_accuracy, kCleanStyle);
  s << horizontal_line(data.noisy_accuracy, kUnmitigatedStyle);
  s << horizontal_line(data.chance, kChanceStyle);
  if (budget) {
    s << "set arrow from first " << num(data.budget) << ", graph 0 to first " << num(data.budget)
      << ", graph 1 nohead back " << kBudgetStyle << "\n";
    const bool right_edge = data.budget - x_lo > 0.85 * (x_hi - x_lo);
    s << "set label 'budget η' at first " << num(data.budget) << ", graph 0.02 "
      << (right_edge ? "right offset -0.5,0" : "left offset 0.5,0") << " front tc rgb '"
      << kBudgetColor << "' font '," << fig.font - 1 << "'\n";
  }
  // Plot area in pixels (estimated: canvas less margins and the legend) for label placement.
  size_t legend_chars = 22;
  for (const auto& g : groups)
    legend_chars = std::max(legend_chars, display_length(one_line(g)) + 10);
  const double plot_w = fig.width - 90.0 - (70.0 + 7.0 * static_cast<double>(legend_chars));
  const double plot_h = fig.height - 120.0;
  s << front_labels(front, data.points, {x_lo, x_hi, y_lo, y_hi}, plot_w, plot_h, fig.font - 2);
  if (outlier) {
    s << "set arrow from graph 0.90, first " << num(outlier->mean) << " to graph 1, first "
      << num(outlier->mean) << " head filled front lc rgb '#555555' lw 1.5\n";
    s << "set label " << gp_string(shortened(outlier->label, 24) + " at " +
                                   short_num(outlier->overhead) + ": " +
                                   short_num(outlier->mean))
      << " at graph 0.89, first " << num(outlier->mean)
      << " right offset 0,0.9 front tc rgb '#333333' font '," << fig.font - 2 << "'\n";
  }

  std::vector<std::string> elements;
  if (!front_rows.empty()) {
    elements.push_back(gp_string(front_file) + " using 1:2 with steps lc rgb '" + kFrontColor +
                       "' lw 2 title 'Pareto front'");
    elements.push_back(gp_string(front_file) + " using 1:2 with points lc rgb '" + kFrontColor +
                       "' pt 6 ps 2.0 lw 1.5 notitle");
  }
  for (size_t g = 0; g < groups.size(); ++g) {
    const std::string style = std::string("lc rgb '") + kDynColors[g % 8] + "' pt " +
                              std::to_string(kDynPoints[(g + g / 8) % 8]) + " ps 1.1 lw 1.3";
    const std::string name = groups[g].empty() ? std::string("(no group)") : one_line(groups[g]);
    if (group_rows[g]) {
      elements.push_back(gp_string(group_files[g]) + " using 1:2:3:4 with yerrorbars " + style +
                         " title " + gp_string(name));
    } else {
      elements.push_back("NaN with points " + style + " title " + gp_string(name + " (no data)"));
    }
  }
  if (std::isfinite(data.clean_accuracy)) {
    elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title " +
                       gp_string("clean (" + short_num(data.clean_accuracy) + ")"));
  }
  if (std::isfinite(data.noisy_accuracy)) {
    elements.push_back(std::string("NaN with lines ") + kUnmitigatedStyle + " title " +
                       gp_string("unmitigated (" + short_num(data.noisy_accuracy) + ")"));
  }
  if (std::isfinite(data.chance)) {
    elements.push_back(std::string("NaN with lines ") + kChanceStyle + " title " +
                       gp_string("chance (" + short_num(data.chance) + ")"));
  }
  if (budget) {
    elements.push_back(std::string("NaN with lines ") + kBudgetStyle + " title " +
                       gp_string("budget η (" + short_num(data.budget) + "%)"));
  }
  s << join_plot(elements);
  fig.body = s.str();
  return fig;
}

// The robustness figure: accuracy vs noise level per curve with its band.
FigureScript robustness_figure(const DenoisePlotData& data, const ScratchDirectory& scratch) {
  SigmaAxis axis;
  axis.log = data.log_sigma;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& curve : data.curves) {
    for (const auto& p : curve.points) {
      if (!plottable_sigma(p.sigma, axis.log) || !std::isfinite(p.mean)) continue;
      lo = std::min(lo, p.sigma);
      hi = std::max(hi, p.sigma);
    }
  }
  const bool train = plottable_sigma(data.train_sigma, axis.log);
  if (train) {
    lo = std::min(lo, data.train_sigma);
    hi = std::max(hi, data.train_sigma);
  }
  axis = finish_sigma_axis(axis, lo, hi);

  FigureScript fig;
  fig.name = "robustness";
  fig.width = 1000;
  fig.height = 640;
  fig.font = 11;
  std::ostringstream s;
  s << "set title " << gp_string(titled(data.title, "accuracy vs noise level (mean, 95% band)"))
    << " font ',13'\n";
  s << "set xlabel " << gp_string(data.sigma_label) << "\nset ylabel 'accuracy'\n";
  s << "set xrange [" << num(axis.lo) << ":" << num(axis.hi) << "]\n";
  if (axis.log) {
    s << "set logscale x 10\n" << value_log_tics("x", axis.lo, axis.hi);
  } else {
    s << "unset logscale x\nset xtics autofreq format '%g'\nset mxtics default\n";
  }
  s << "set yrange [0:1]\nset ytics 0.2 format '%.1f'\nset mytics 2\n";
  s << "set grid xtics ytics lc rgb '#e6e6e6' lw 1 dt 1\nset tics front\n";
  s << "set key outside right top vertical Left reverse samplen 3 spacing 1.3 box lc rgb "
       "'#cccccc'\n";
  s << "set lmargin 9\nset bmargin 4\n";
  s << horizontal_line(data.clean_accuracy, kCleanStyle);
  s << horizontal_line(data.chance, kChanceStyle);
  if (train) {
    s << "set arrow from first " << num(data.train_sigma) << ", graph 0 to first "
      << num(data.train_sigma) << ", graph 1 nohead back " << kTrainLevelStyle << "\n";
  }
  std::vector<std::string> bands, lines;
  for (size_t i = 0; i < data.curves.size(); ++i) {
    const SiteCurve& curve = data.curves[i];
    const std::string table = curve_table(curve, axis.log);
    const std::string color = kDynColors[i % 8];
    const std::string style =
        "lc rgb '" + color + "' lw 2 pt " + std::to_string(kDynPoints[(i + i / 8) % 8]) + " ps 0.7";
    const std::string name =
        curve.label.empty() ? "curve " + std::to_string(i + 1) : one_line(curve.label);
    if (table.empty()) {
      lines.push_back("NaN with linespoints " + style + " title " + gp_string(name + " (no data)"));
      continue;
    }
    const std::string file = scratch.write("robust" + std::to_string(i) + ".dat", table).string();
    bands.push_back(gp_string(file) + " using 1:3:4 with filledcurves fc rgb '" + color +
                    "' fs transparent solid 0.18 noborder notitle");
    lines.push_back(gp_string(file) + " using 1:2 with linespoints " + style + " title " +
                    gp_string(name));
  }
  // Bands first so that no band covers another curve's line.
  std::vector<std::string> elements = bands;
  elements.insert(elements.end(), lines.begin(), lines.end());
  elements.push_back(
      "NaN with filledcurves fc rgb '#888888' fs transparent solid 0.3 noborder title '95% band'");
  if (std::isfinite(data.clean_accuracy)) {
    elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title 'clean accuracy'");
  }
  if (std::isfinite(data.chance)) {
    elements.push_back(std::string("NaN with lines ") + kChanceStyle + " title 'chance'");
  }
  if (train) {
    elements.push_back(std::string("NaN with lines ") + kTrainLevelStyle + " title " +
                       gp_string("training level (" + sigma_text(data.train_sigma) + ")"));
  }
  s << join_plot(elements);
  fig.body = s.str();
  return fig;
}

}  // namespace

std::vector<std::string> write_denoise_figures(const DenoisePlotData& data, const std::string& dir,
                                               const PlotFormats& formats) {
  const std::vector<std::string> extensions = format_extensions(formats);
  if (extensions.empty()) return {};
  if (data.points.empty()) {
    throw std::runtime_error("cannot draw the denoise figures: no operating points to plot");
  }
  const std::string exe = gnuplot_for(dir);

  std::error_code ec;
  const ScratchDirectory scratch(fs::absolute(dir, ec));
  std::vector<FigureScript> figures;
  figures.push_back(pareto_figure(data, scratch));
  if (!data.curves.empty()) figures.push_back(robustness_figure(data, scratch));
  return render(figures, extensions, scratch, dir, exe);
}

std::vector<std::string> write_points_figure(const DenoisePlotData& data, const std::string& dir,
                                             const PlotFormats& formats) {
  const std::vector<std::string> extensions = format_extensions(formats);
  if (extensions.empty()) return {};
  if (data.points.empty()) {
    throw std::runtime_error("cannot draw the " + data.points_name +
                             " figure: no operating points to plot");
  }
  const std::string exe = gnuplot_for(dir);
  std::error_code ec;
  const ScratchDirectory scratch(fs::absolute(dir, ec));
  return render({pareto_figure(data, scratch)}, extensions, scratch, dir, exe);
}

}  // namespace quell
