// The learning-dynamics figure of a noisy-training sweep: weight RMS and binarisation index vs σ
// per site. The gnuplot run is in gnuplot.cpp.

#include "quell/plot.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "plot/gnuplot.h"

namespace quell {
namespace {

namespace fs = std::filesystem;

using plot::display_length;
using plot::FigureScript;
using plot::finish_sigma_axis;
using plot::format_extensions;
using plot::gnuplot_for;
using plot::gp_string;
using plot::join_plot;
using plot::kCleanStyle;
using plot::kDynColors;
using plot::kDynPoints;
using plot::log_tics;
using plot::num;
using plot::one_line;
using plot::plottable_sigma;
using plot::render;
using plot::ScratchDirectory;
using plot::SigmaAxis;
using plot::value_log_tics;

// ---------------------------------------------------------------------------------------------
// Learning dynamics of a noisy-training sweep: weight RMS and binarisation index vs σ.

// Up to this many sites get categorical colours and markers; up to kMaxLegendSites a colour
// gradient with a legend; beyond, the gradient with a colour box labelled by site.
constexpr int kMaxCategoricalSites = 8;
constexpr int kMaxLegendSites = 30;

const int kGradientPoints[] = {7, 5, 9, 11, 13};  // neighbours differ in marker too

// The site gradient in network order: dark at both ends and never light, so that every line
// stands out on white (indigo, blue, teal, green, amber, red, crimson).
struct ColorStop {
  double at;
  int r, g, b;
};
const ColorStop kGradient[] = {{0.00, 0x2c, 0x1e, 0x8c}, {0.20, 0x1f, 0x6f, 0xd1},
                               {0.40, 0x11, 0x9c, 0x8a}, {0.60, 0x4f, 0x9a, 0x12},
                               {0.75, 0xd0, 0x86, 0x00}, {0.90, 0xd6, 0x3a, 0x1f},
                               {1.00, 0x8c, 0x12, 0x37}};

std::string hex_color(int r, int g, int b) {
  static const char* const kHex = "0123456789abcdef";
  std::string out = "#";
  for (const int v : {r, g, b}) {
    const int c = std::clamp(v, 0, 255);
    out += kHex[c / 16];
    out += kHex[c % 16];
  }
  return out;
}

// Colour at position t in [0, 1] of the gradient (linear in RGB between stops).
std::string gradient_color(double t) {
  t = std::clamp(t, 0.0, 1.0);
  const size_t count = sizeof(kGradient) / sizeof(kGradient[0]);
  size_t k = 0;
  while (k + 2 < count && kGradient[k + 1].at < t) ++k;
  const ColorStop& a = kGradient[k];
  const ColorStop& b = kGradient[k + 1];
  const double f = (t - a.at) / (b.at - a.at);
  auto mix = [f](int x, int y) { return static_cast<int>(std::lround(x + f * (y - x))); };
  return hex_color(mix(a.r, b.r), mix(a.g, b.g), mix(a.b, b.b));
}

// The gradient as a gnuplot palette, reversed (gray 1 = first site) so that a vertical colour
// box lists the sites top to bottom.
std::string reversed_gradient_palette() {
  const size_t count = sizeof(kGradient) / sizeof(kGradient[0]);
  std::ostringstream s;
  s << "set palette defined (";
  for (size_t i = 0; i < count; ++i) {
    const ColorStop& c = kGradient[count - 1 - i];
    s << (i ? ", " : "") << num(1.0 - c.at) << " '" << hex_color(c.r, c.g, c.b) << "'";
  }
  s << ")\n";
  return s.str();
}

enum class SiteStyling { kCategorical, kGradientLegend, kGradientColorbox };

SiteStyling site_styling(size_t n) {
  if (n <= kMaxCategoricalSites) return SiteStyling::kCategorical;
  if (n <= kMaxLegendSites) return SiteStyling::kGradientLegend;
  return SiteStyling::kGradientColorbox;
}

// Line and marker of site i of n: "lc rgb '#…' lw … pt … ps …".
std::string site_line_style(size_t i, size_t n, SiteStyling styling) {
  std::ostringstream s;
  switch (styling) {
    case SiteStyling::kCategorical:
      s << "lc rgb '" << kDynColors[i % 8] << "' lw 2 pt " << kDynPoints[i % 8] << " ps 0.8";
      break;
    case SiteStyling::kGradientLegend:
      s << "lc rgb '" << gradient_color(n > 1 ? double(i) / double(n - 1) : 0.0) << "' lw 1.6 pt "
        << kGradientPoints[i % 5] << " ps 0.65";
      break;
    case SiteStyling::kGradientColorbox:
      // Palette value n-1-i: the reversed palette gives site i the colour at i / (n - 1).
      s << "lc palette cb " << (n - 1 - i) << " lw 1.3 pt 7 ps 0.3";
      break;
  }
  return s.str();
}

// "σ value" rows of one statistic: σ plottable on the σ axis, value finite (and > 0 on a log
// value axis).
std::string dynamics_table(const std::vector<double>& sigma, const std::vector<double>& value,
                           bool log_sigma, bool log_value) {
  std::ostringstream out;
  for (size_t k = 0; k < sigma.size() && k < value.size(); ++k) {
    if (!plottable_sigma(sigma[k], log_sigma) || !std::isfinite(value[k])) continue;
    if (log_value && value[k] <= 0.0) continue;
    out << num(sigma[k]) << ' ' << num(value[k]) << '\n';
  }
  return out.str();
}

// σ axis covering every plotted point of either statistic.
SigmaAxis dynamics_sigma_axis(const DynamicsPlotData& data) {
  SigmaAxis axis;
  axis.log = data.log_sigma;
  double lo = INFINITY, hi = -INFINITY;
  for (const auto& series : data.series) {
    for (size_t k = 0; k < series.sigma.size(); ++k) {
      const double sigma = series.sigma[k];
      if (!plottable_sigma(sigma, axis.log)) continue;
      const bool rms = k < series.rms.size() && std::isfinite(series.rms[k]) && series.rms[k] > 0;
      const bool bin = k < series.binarization.size() && std::isfinite(series.binarization[k]);
      if (!rms && !bin) continue;
      lo = std::min(lo, sigma);
      hi = std::max(hi, sigma);
    }
  }
  return finish_sigma_axis(axis, lo, hi);
}

// Log range of the RMS panel: every plotted RMS and the clean reference, padded, spanning at
// least a factor 5 (so at least two of the 1-2-5 ticks fall inside).
std::pair<double, double> rms_range(const DynamicsPlotData& data) {
  double lo = INFINITY, hi = -INFINITY;
  auto take = [&](double v) {
    if (!std::isfinite(v) || v <= 0.0) return;
    lo = std::min(lo, v);
    hi = std::max(hi, v);
  };
  for (const auto& series : data.series) {
    for (size_t k = 0; k < series.sigma.size() && k < series.rms.size(); ++k) {
      if (plottable_sigma(series.sigma[k], data.log_sigma)) take(series.rms[k]);
    }
  }
  take(data.clean_rms);
  if (!(lo <= hi)) return {0.1, 1.0};
  lo /= 1.2;
  hi *= 1.2;
  const double ratio = hi / lo;
  if (ratio < 5.0) {
    const double grow = std::sqrt(5.0 / ratio);
    lo /= grow;
    hi *= grow;
  }
  return {lo, hi};
}

// The σ axis of one dynamics panel.
std::string dynamics_sigma_commands(const SigmaAxis& axis, int max_labels) {
  std::ostringstream s;
  s << "set xrange [" << num(axis.lo) << ":" << num(axis.hi) << "]\n";
  if (axis.log) {
    s << "set logscale x 10\n" << log_tics("x", axis.lo, axis.hi, max_labels);
  } else {
    s << "unset logscale x\nset xtics autofreq format '%g'\nset mxtics default\n";
  }
  return s.str();
}

// The dynamics figure: RMS panel (log y) left, binarisation panel right, sites in the legend or
// colour box on the right.
FigureScript dynamics_figure(const DynamicsPlotData& data, const ScratchDirectory& scratch) {
  const size_t n = data.series.size();
  const SiteStyling styling = site_styling(n);
  const SigmaAxis axis = dynamics_sigma_axis(data);
  const auto [rms_lo, rms_hi] = rms_range(data);
  const bool clean_rms = std::isfinite(data.clean_rms) && data.clean_rms > 0.0;
  const bool clean_bin = std::isfinite(data.clean_binarization);

  std::vector<std::string> rms_files, bin_files;
  std::vector<bool> has_rms, has_bin;
  for (size_t i = 0; i < n; ++i) {
    const DynamicsSeries& series = data.series[i];
    const std::string rms = dynamics_table(series.sigma, series.rms, axis.log, true);
    const std::string bin = dynamics_table(series.sigma, series.binarization, axis.log, false);
    rms_files.push_back(scratch.write("dyn_rms" + std::to_string(i) + ".dat", rms).string());
    bin_files.push_back(scratch.write("dyn_bin" + std::to_string(i) + ".dat", bin).string());
    has_rms.push_back(!rms.empty());
    has_bin.push_back(!bin.empty());
  }

  // Widest legend text: site labels (cut at 40 characters for the layout), the legend title
  // and the clean entry.
  const std::string clean_title = "clean-trained models";
  const std::string sites_title =
      styling == SiteStyling::kCategorical ? "site" : "site (network order)";
  size_t longest = std::max(display_length(clean_title), display_length(sites_title));
  for (const auto& series : data.series) {
    longest = std::max(longest, std::min<size_t>(display_length(one_line(series.label)), 40));
  }

  FigureScript fig;
  fig.name = "dynamics";
  fig.font = 11;
  // Geometry in pixels: two panels with the site legend (or colour box) on their right.
  const int left = 95, gap = 110, top = 105, bottom = 75, pw = 540;
  const int legend_w = 70 + static_cast<int>(longest) * 8;
  const int legend_rows = styling == SiteStyling::kGradientColorbox
                              ? 0
                              : static_cast<int>(n) + ((clean_rms || clean_bin) ? 2 : 1);
  const int ph = styling == SiteStyling::kGradientColorbox
                     ? std::clamp(static_cast<int>(n) * 9, 460, 800)
                     : std::max(460, 40 + legend_rows * 21);
  fig.width = left + 2 * pw + gap + legend_w + 20;
  fig.height = top + ph + bottom;
  const double W = fig.width, H = fig.height;
  auto sx = [&](double px) { return num(px / W); };
  auto sy = [&](double px) { return num(1.0 - px / H); };
  const double x_rms = left, x_bin = left + pw + gap, x_legend = x_bin + pw + 25;

  std::ostringstream s;
  s << "set multiplot\n";
  const std::string what = "learning dynamics of noisy training";
  s << "set label 1 " << gp_string(data.title.empty() ? what : data.title + " — " + what)
    << " at screen 0.5, screen " << sy(26) << " center font '," << fig.font + 4 << "'\n";
  s << "set label 2 "
    << gp_string(std::string("each point: weights of the model trained with noise injected at "
                             "one site at level σ (mean over repeats)") +
                 (clean_rms || clean_bin ? "; dashed: models trained without noise" : ""))
    << " at screen 0.5, screen " << sy(52) << " center tc rgb '#444444' font '," << fig.font
    << "'\n";
  s << "set border lw 1\nset tics front\nset grid xtics ytics lc rgb '#e6e6e6' lw 1 dt 1\n";
  s << "set xlabel " << gp_string(data.sigma_label) << " offset 0,0.3\n";
  s << "set tmargin at screen " << sy(top) << "\nset bmargin at screen " << sy(top + ph) << "\n";
  if (styling == SiteStyling::kGradientColorbox) {
    s << reversed_gradient_palette() << "set cbrange [0:" << num(std::max<double>(1, n - 1))
      << "]\n";
  }

  // Panel 1: weight RMS, log y.
  s << "# weight RMS\n";
  s << "set lmargin at screen " << sx(x_rms) << "\nset rmargin at screen " << sx(x_rms + pw)
    << "\n";
  s << "set title 'weight magnitude: RMS of all analog weights' font '," << fig.font + 2 << "'\n";
  s << dynamics_sigma_commands(axis, 9);
  s << "set logscale y 10\nset yrange [" << num(rms_lo) << ":" << num(rms_hi) << "]\n";
  s << value_log_tics("y", rms_lo, rms_hi);
  s << "set ylabel 'weight RMS (log scale)'\n";
  if (clean_rms) {
    s << "set arrow 1 from graph 0, first " << num(data.clean_rms) << " to graph 1, first "
      << num(data.clean_rms) << " nohead front " << kCleanStyle << "\n";
  }
  s << "unset key\nunset colorbox\n";
  std::vector<std::string> elements;
  for (size_t i = 0; i < n; ++i) {
    if (!has_rms[i]) continue;
    elements.push_back(gp_string(rms_files[i]) + " using 1:2 with linespoints " +
                       site_line_style(i, n, styling) + " notitle");
  }
  s << join_plot(elements);

  // Panel 2: binarisation index in [0, 1]; carries the legend / colour box.
  s << "# binarisation index\n";
  s << "unset arrow\nunset label\n";
  s << "set lmargin at screen " << sx(x_bin) << "\nset rmargin at screen " << sx(x_bin + pw)
    << "\n";
  s << "set title 'binarisation index (0: Gaussian-like, 1: binary ±c)' font '," << fig.font + 2
    << "'\n";
  s << "unset logscale y\nset yrange [0:1]\nset ytics 0.2 format '%.1f'\nset mytics 2\n";
  s << "set ylabel 'binarisation index'\n";
  if (clean_bin) {
    s << "set arrow 1 from graph 0, first " << num(data.clean_binarization) << " to graph 1, first "
      << num(data.clean_binarization) << " nohead front " << kCleanStyle << "\n";
  }
  elements.clear();
  if (styling == SiteStyling::kGradientColorbox) {
    // Colour box under a one-entry key for the clean line, labelled with every k-th site.
    const int box_top = top + 60;
    const int box_h = ph - 60;
    s << "set key at screen " << sx(x_legend - 10) << ", screen " << sy(top)
      << " top left vertical Left reverse samplen 2.5\n";
    s << "set label 3 " << gp_string(sites_title) << " at screen " << sx(x_legend) << ", screen "
      << sy(top + 38) << " left font '," << fig.font << "'\n";
    s << "set colorbox user origin screen " << sx(x_legend) << ", screen " << sy(box_top + box_h)
      << " size screen " << sx(18) << ", screen " << num(box_h / H) << " noborder\n";
    const size_t every = std::max<size_t>(1, (n * 15 + box_h - 1) / std::max(1, box_h));
    s << "set cbtics (";
    for (size_t i = 0; i < n; i += every) {
      s << (i ? ", " : "") << gp_string(one_line(data.series[i].label)) << ' ' << (n - 1 - i);
    }
    s << ") scale 0.5 font '," << fig.font - 1 << "'\n";
    for (size_t i = 0; i < n; ++i) {
      if (!has_bin[i]) continue;
      elements.push_back(gp_string(bin_files[i]) + " using 1:2 with linespoints " +
                         site_line_style(i, n, styling) + " notitle");
    }
    if (clean_rms || clean_bin) {
      elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title " +
                         gp_string(clean_title));
    } else {
      // The colour box is drawn only with a palette-coloured element in the plot.
      elements.push_back("NaN with lines lc palette cb 0 notitle");
    }
  } else {
    s << "set key at screen " << sx(x_legend) << ", screen " << sy(top)
      << " top left vertical Left reverse samplen 2.5 spacing 1.15 width 1 title "
      << gp_string(sites_title) << " left\n";
    for (size_t i = 0; i < n; ++i) {
      const std::string label = one_line(data.series[i].label);
      if (has_bin[i]) {
        elements.push_back(gp_string(bin_files[i]) + " using 1:2 with linespoints " +
                           site_line_style(i, n, styling) + " title " + gp_string(label));
      } else {
        elements.push_back("NaN with linespoints " + site_line_style(i, n, styling) + " title " +
                           gp_string(has_rms[i] ? label : label + " (no data)"));
      }
    }
    if (clean_rms || clean_bin) {
      elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title " +
                         gp_string(clean_title));
    }
  }
  s << join_plot(elements);
  s << "unset multiplot\n";
  fig.body = s.str();
  return fig;
}

}  // namespace

std::vector<std::string> write_dynamics_figures(const DynamicsPlotData& data,
                                                const std::string& dir,
                                                const PlotFormats& formats) {
  const std::vector<std::string> extensions = format_extensions(formats);
  if (extensions.empty()) return {};
  if (data.series.empty()) {
    throw std::runtime_error("cannot draw the dynamics figure: no sites to plot");
  }
  for (const auto& series : data.series) {
    if (series.rms.size() != series.sigma.size() ||
        series.binarization.size() != series.sigma.size()) {
      throw std::runtime_error("cannot draw the dynamics figure: site '" + one_line(series.label) +
                               "' has " + std::to_string(series.sigma.size()) + " sigma, " +
                               std::to_string(series.rms.size()) + " rms and " +
                               std::to_string(series.binarization.size()) + " binarization values");
    }
  }
  const std::string exe = gnuplot_for(dir);

  std::error_code ec;
  const ScratchDirectory scratch(fs::absolute(dir, ec));
  return render({dynamics_figure(data, scratch)}, extensions, scratch, dir, exe);
}

}  // namespace quell
