// Figures of a Walking Noise sweep and of a denoiser study: gnuplot scripts written to a temporary
// directory inside the output directory, one gnuplot run for all figures, outputs renamed into
// place.

#include "quell/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <locale>
#include <sstream>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

extern char** environ;

namespace quell {
namespace {

namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Text and numbers for gnuplot.

// A gnuplot single-quoted string literal: no escapes are interpreted inside it except '' for a
// quote. Line breaks become spaces so a label can never end the command early.
std::string gp_string(const std::string& text) {
  std::string out = "'";
  for (const char c : text) {
    if (c == '\'') {
      out += "''";
    } else if (c == '\n' || c == '\r' || c == '\t') {
      out += ' ';
    } else {
      out += c;
    }
  }
  return out + "'";
}

// A number in the C locale (the caller's locale may use a decimal comma).
std::string num(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  out.precision(10);
  out << value;
  return out.str();
}

// "10⁻²" with Unicode superscripts (the terminals run without enhanced text).
std::string power_of_ten(int exponent) {
  static const char* const kDigits[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
  std::string out = "10";
  if (exponent < 0) out += "⁻";
  const std::string digits = std::to_string(std::abs(exponent));
  for (const char d : digits) out += kDigits[d - '0'];
  return out;
}

// Tick label for a σ value: 3 significant digits, plain decimals between 10⁻⁴ and 10⁶, a power of
// ten otherwise ("1.78×10⁻⁶").
std::string sigma_text(double value) {
  std::ostringstream out;
  out.imbue(std::locale::classic());
  if (value == 0.0 || !std::isfinite(value)) {
    out << value;
    return out.str();
  }
  const int e = static_cast<int>(std::floor(std::log10(std::abs(value)) + 1e-12));
  if (e >= -4 && e <= 5) {
    out << std::fixed << std::setprecision(std::max(0, 2 - e)) << value;
    std::string text = out.str();
    if (text.find('.') != std::string::npos) {
      text.erase(text.find_last_not_of('0') + 1);
      if (text.back() == '.') text.pop_back();
    }
    return text;
  }
  const double mantissa = value / std::pow(10.0, e);
  if (std::abs(mantissa - std::round(mantissa)) < 1e-9 && std::round(mantissa) == 1.0) {
    return (value < 0 ? "-" : "") + power_of_ten(e);
  }
  out << std::setprecision(3) << mantissa << "×" << power_of_ten(e);
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// Data preparation.

// The σ axis of the accuracy curves: log or linear, with the range covered by the data.
struct SigmaAxis {
  bool log = true;
  double lo = 0.0;
  double hi = 1.0;
};

bool plottable_sigma(double sigma, bool log) {
  return std::isfinite(sigma) && (log ? sigma > 0.0 : true);
}

// Completes an axis from the σ range [lo, hi] of the plotted data (lo > hi: nothing plottable).
SigmaAxis finish_sigma_axis(SigmaAxis axis, double lo, double hi) {
  if (!(lo <= hi)) {  // nothing plottable: any sensible range
    lo = axis.log ? 1e-2 : 0.0;
    hi = axis.log ? 1e2 : 1.0;
  } else if (lo == hi) {
    if (axis.log) {
      lo /= 10.0;
      hi *= 10.0;
    } else {
      lo = lo == 0.0 ? 0.0 : lo - 0.5 * std::abs(lo);
      hi = hi == 0.0 ? 1.0 : hi + 0.5 * std::abs(hi);
    }
  }
  axis.lo = lo;
  axis.hi = hi;
  return axis;
}

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

// Tick commands for a log axis `name` ("x" or "y") over [lo, hi]: every decade gets a tick, at most
// about `max_labels` of them a label. Falls back to gnuplot's own ticks within a single decade.
std::string log_tics(const std::string& name, double lo, double hi, int max_labels) {
  const int first = static_cast<int>(std::ceil(std::log10(lo) - 1e-9));
  const int last = static_cast<int>(std::floor(std::log10(hi) + 1e-9));
  std::ostringstream out;
  if (last - first < 1) {
    out << "set " << name << "tics format '%g'\n";
    return out.str();
  }
  const int count = last - first + 1;
  const int step = std::max(1, (count + std::max(1, max_labels) - 1) / std::max(1, max_labels));
  out << "set " << name << "tics (";
  for (int e = first; e <= last; ++e) {
    if (e != first) out << ", ";
    const bool labelled = ((e % step) + step) % step == 0;
    out << (labelled ? gp_string(power_of_ten(e)) : "''") << " " << num(std::pow(10.0, e))
        << (labelled ? "" : " 1");
  }
  out << ")\n";
  // Minor ticks at 2..9 × 10^e when decades are few enough to show them.
  if (count <= 8) {
    out << "set " << name << "tics add (";
    bool any = false;
    for (int e = first - 1; e <= last; ++e) {
      for (int k = 2; k <= 9; ++k) {
        const double v = k * std::pow(10.0, e);
        if (v < lo || v > hi) continue;
        out << (any ? ", " : "") << "'' " << num(v) << " 1";
        any = true;
      }
    }
    if (!any) out << "'' " << num(lo) << " 1";
    out << ")\n";
  }
  return out.str();
}

// The plottable points of a curve as "σ mean lo hi" lines; a missing band collapses to the mean.
std::string curve_table(const SiteCurve& curve, bool log) {
  std::ostringstream out;
  for (const auto& p : curve.points) {
    if (!plottable_sigma(p.sigma, log) || !std::isfinite(p.mean)) continue;
    const bool band = std::isfinite(p.lo) && std::isfinite(p.hi);
    out << num(p.sigma) << ' ' << num(p.mean) << ' ' << num(band ? p.lo : p.mean) << ' '
        << num(band ? p.hi : p.mean) << '\n';
  }
  return out.str();
}

bool has_midpoint(const SiteCurve& site, bool log) {
  return std::isfinite(site.midpoint) && (!log || site.midpoint > 0.0);
}

// ---------------------------------------------------------------------------------------------
// Scratch files and the gnuplot process.

// A directory inside the output directory holding scripts, data and the not-yet-renamed
// outputs; removed with everything in it on destruction.
class ScratchDirectory {
 public:
  explicit ScratchDirectory(const fs::path& parent) {
    static std::atomic<unsigned> counter{0};
    for (int attempt = 0;; ++attempt) {
      path_ = parent / (".quell-plot-" + std::to_string(static_cast<long long>(::getpid())) + "-" +
                        std::to_string(counter.fetch_add(1)));
      if (::mkdir(path_.c_str(), 0700) == 0) return;
      if (errno != EEXIST || attempt > 100) {
        throw std::runtime_error("cannot write figures into '" + parent.string() +
                                 "': creating a temporary directory: " + std::strerror(errno));
      }
    }
  }
  ~ScratchDirectory() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  ScratchDirectory(const ScratchDirectory&) = delete;
  ScratchDirectory& operator=(const ScratchDirectory&) = delete;

  const fs::path& path() const { return path_; }

  // Writes a file inside the directory and returns its path.
  fs::path write(const std::string& name, const std::string& content) const {
    const fs::path file = path_ / name;
    std::ofstream out(file, std::ios::binary);
    out << content;
    out.close();
    if (!out) {
      throw std::runtime_error("cannot write figures: writing temporary file '" + file.string() +
                               "' failed");
    }
    return file;
  }

 private:
  fs::path path_;
};

// Absolute path of `name` found on PATH, "" if none. An empty PATH entry is the current directory.
std::string find_on_path(const std::string& name) {
  const char* env = std::getenv("PATH");
  const std::string path = env != nullptr ? env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find(':', start);
    if (end == std::string::npos) end = path.size();
    std::string entry = path.substr(start, end - start);
    if (entry.empty()) entry = ".";
    const std::string candidate = entry + "/" + name;
    struct stat info;
    if (::stat(candidate.c_str(), &info) == 0 && S_ISREG(info.st_mode) &&
        ::access(candidate.c_str(), X_OK) == 0) {
      return candidate;
    }
    start = end + 1;
  }
  return "";
}

// The last non-blank line of gnuplot's stderr (where it puts the error message), trimmed.
std::string last_error_line(const fs::path& log) {
  std::ifstream in(log);
  std::string line, last;
  while (std::getline(in, line)) {
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    last = line.substr(b, line.find_last_not_of(" \t\r") - b + 1);
  }
  if (last.size() > 300) last = last.substr(0, 300) + "...";
  return last;
}

// Runs `gnuplot -d script` (-d: ignore the user's initialisation files) with stderr captured.
void run_gnuplot(const std::string& exe, const fs::path& script, const fs::path& log) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 2, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  std::string arg0 = "gnuplot", arg1 = "-d", arg2 = script.string();
  char* argv[] = {arg0.data(), arg1.data(), arg2.data(), nullptr};
  pid_t pid = 0;
  const int rc = ::posix_spawn(&pid, exe.c_str(), &actions, nullptr, argv, environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    throw std::runtime_error("cannot run gnuplot '" + exe + "': " + std::strerror(rc));
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) {
      throw std::runtime_error(std::string("waiting for gnuplot failed: ") + std::strerror(errno));
    }
  }
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return;
  std::string what = WIFEXITED(status)     ? "exit status " + std::to_string(WEXITSTATUS(status))
                     : WIFSIGNALED(status) ? "signal " + std::to_string(WTERMSIG(status))
                                           : "abnormal end";
  // Name the script by its file name only: its directory is gone by the time anyone reads this.
  std::string message = last_error_line(log);
  const std::string dir_prefix = script.parent_path().string() + "/";
  for (size_t at; (at = message.find(dir_prefix)) != std::string::npos;) {
    message.erase(at, dir_prefix.size());
  }
  throw std::runtime_error("gnuplot failed (" + what + ")" +
                           (message.empty() ? "" : ": " + message));
}

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

const char* const kMeanColor = "#1f5fa8";
const char* const kMidColor = "#d62728";
const char* const kRefColor = "#7f7f7f";
const char* const kNoteColor = "#b35900";
const char* const kCleanStyle = "lc rgb '#000000' lw 1.5 dt (10,6)";
// Colours differ slightly from the clean line: the svg terminal merges consecutive arrows of one
// colour into a single path with the first arrow's dash pattern.
const char* const kChanceStyle = "lc rgb '#3a3a3a' lw 1.6 dt (2,4)";
// Distinct colours when a few sites share one panel.
const char* const kSiteColors[] = {"#1f5fa8", "#d95f02", "#1b9e77", "#7570b3"};

// Commands common to every figure.
std::string preamble() {
  return "set encoding utf8\n"
         "set datafile separator whitespace\n"
         "set style fill solid 1.0 noborder\n";
}

// The parts of one panel of accuracy curves that do not depend on the site.
std::string curve_axes(const SigmaAxis& axis, const WalkPlotData& data, int max_labels) {
  std::ostringstream s;
  s << "set xrange [" << num(axis.lo) << ":" << num(axis.hi) << "]\n";
  s << "set yrange [0:1]\n";
  if (axis.log) {
    s << "set logscale x 10\n" << log_tics("x", axis.lo, axis.hi, max_labels);
  } else {
    s << "unset logscale x\nset xtics autofreq format '%g'\nset mxtics default\n";
  }
  s << "set ytics 0.2 format '%.1f'\nset mytics 2\n";
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

std::string join_plot(const std::vector<std::string>& elements) {
  if (elements.empty()) return "plot NaN notitle\n";
  std::string out = "plot ";
  for (size_t i = 0; i < elements.size(); ++i) {
    out += (i == 0 ? "" : ", \\\n     ") + elements[i];
  }
  return out + "\n";
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
  s << "set title " << gp_string(with_title_prefix(data, "accuracy vs σ (mean, 95% band)"))
    << " font ',13'\n";
  s << "set xlabel " << gp_string(data.sigma_label) << "\nset ylabel 'accuracy'\n";
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
  elements.push_back(std::string("NaN with lines ") + kCleanStyle + " title 'clean accuracy'");
  elements.push_back(std::string("NaN with lines ") + kChanceStyle + " title 'chance'");
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
    << gp_string(with_title_prefix(data, "accuracy vs σ per site (mean, 95% band)"))
    << " at screen 0.5, screen " << sy(22) << " center font '," << fig.font + (large ? 6 : 4)
    << "'\n";
  s << "set label 2 " << gp_string(data.sigma_label) << " at screen 0.5, screen " << num(14.0 / H)
    << " center font '," << fig.font + 1 << "'\n";
  s << "set label 3 'accuracy' at screen " << num(18.0 / W) << ", screen 0.5 center rotate by 90"
    << " font '," << fig.font + 1 << "'\n";
  s << "set key at screen 0.5, screen " << sy(63)
    << " center center horizontal maxrows 1 Left reverse samplen 3 width -2\n";
  std::vector<std::string> legend = {
      "NaN with lines lc rgb '" + std::string(kMeanColor) + "' lw 2 title 'mean'",
      "NaN with filledcurves fc rgb '" + std::string(kMeanColor) +
          "' fs transparent solid 0.25 noborder title '95% band'",
      std::string("NaN with lines ") + kCleanStyle + " title 'clean'",
      std::string("NaN with lines ") + kChanceStyle + " title 'chance'",
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
    << gp_string(with_title_prefix(data, "midpoint σ per site (bar: midpoint, whiskers: interval)"))
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
                       "' title 'n.c.: not crossed in the swept σ range'");
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
  s << "set label 1 " << gp_string(with_title_prefix(data, "mean accuracy per site and σ"))
    << " at screen 0.5, screen " << num(1.0 - 22.0 / H) << " center font '," << fig.font + 3
    << "'\n";
  s << "set key at screen " << num((label_px + plot_w / 2.0) / W) << ", screen "
    << num(1.0 - 52.0 / H) << " center center horizontal maxrows 1 Left reverse samplen 1.5\n";
  s << "set xrange [-0.5:" << num(m - 0.5) << "]\n";
  s << "set yrange [" << num(n - 0.5) << ":-0.5]\n";  // first site on top
  s << "set cbrange [0:1]\nset cbtics 0.2 format '%.1f'\nset cblabel 'mean accuracy' offset "
       "1.5,0\n";
  s << "set palette defined (0 '#440154', 0.25 '#3b528b', 0.5 '#21908d', 0.75 '#5dc963', "
       "1 '#fde725')\n";
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

// ---------------------------------------------------------------------------------------------
// Learning dynamics of a noisy-training sweep: weight RMS and binarisation index vs σ.

// Up to this many sites get categorical colours and markers; up to kMaxLegendSites a colour
// gradient with a legend; beyond, the gradient with a colour box labelled by site.
constexpr int kMaxCategoricalSites = 8;
constexpr int kMaxLegendSites = 30;

const char* const kDynColors[] = {"#1f5fa8", "#d95f02", "#1b9e77", "#7570b3",
                                  "#e7298a", "#66a61e", "#a6761d", "#555555"};
const int kDynPoints[] = {7, 5, 9, 11, 13, 15, 6, 4};  // filled circle, square, triangles, ...
const int kGradientPoints[] = {7, 5, 9, 11, 13};       // neighbours differ in marker too

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

// Ticks of a log value axis: over up to ~3.5 decades 1-2-5 labels in plain numbers (0.2, 0.5,
// 1, …) with unlabelled minor ticks (the latter only up to 2 decades); wider ranges get decades.
std::string value_log_tics(const std::string& name, double lo, double hi) {
  const double decades = std::log10(hi / lo);
  if (decades > 3.5) return log_tics(name, lo, hi, 8);
  const int first = static_cast<int>(std::floor(std::log10(lo))) - 1;
  const int last = static_cast<int>(std::ceil(std::log10(hi)));
  std::ostringstream out;
  out << "set " << name << "tics (";
  bool any = false;
  for (int e = first; e <= last; ++e) {
    for (int k = 1; k <= 9; ++k) {
      const double v = k * std::pow(10.0, e);
      if (v < lo || v > hi) continue;
      const bool labelled = k == 1 || k == 2 || k == 5;
      if (!labelled && decades > 2.0) continue;
      out << (any ? ", " : "") << (labelled ? gp_string(sigma_text(v)) : std::string("''")) << ' '
          << num(v) << (labelled ? "" : " 1");
      any = true;
    }
  }
  if (!any) out << "'' " << num(lo) << " 1";
  out << ")\n";
  return out.str();
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

// The site label as shown: on one line.
std::string one_line(const std::string& text) {
  std::string out = text;
  for (char& c : out) {
    if (c == '\n' || c == '\r' || c == '\t') c = ' ';
  }
  return out;
}

// Number of characters of a UTF-8 string (for layout estimates).
size_t display_length(const std::string& text) {
  size_t n = 0;
  for (const unsigned char c : text) n += (c & 0xC0) != 0x80;
  return n;
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

// Terminal and output commands for one format.
std::string terminal(const FigureScript& fig, const std::string& format, const fs::path& output) {
  std::ostringstream s;
  s << "reset\n";
  if (format == "png") {
    s << "set terminal pngcairo noenhanced size " << fig.width << "," << fig.height
      << " font 'DejaVu Sans," << fig.font << "' background rgb '#ffffff'\n";
  } else {
    // svg font sizes are pixels, pngcairo's points: scale to look alike.
    s << "set terminal svg noenhanced size " << fig.width << "," << fig.height
      << " fontscale 1.25 font 'DejaVu Sans," << fig.font << "' background rgb '#ffffff'\n";
  }
  s << "set output " << gp_string(output.string()) << "\n";
  return s.str();
}

// The gnuplot executable, after checking that `dir` can take figures. Throws naming the problem.
std::string gnuplot_for(const std::string& dir) {
  const std::string exe = find_on_path("gnuplot");
  if (exe.empty()) {
    throw std::runtime_error("cannot draw figures: gnuplot not found on PATH");
  }
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw std::runtime_error("cannot write figures into '" + dir + "': not a directory");
  }
  return exe;
}

// Draws every figure in every format with one gnuplot run into `scratch`, then renames the
// outputs into `dir` once all of them exist. Returns the final paths.
std::vector<std::string> render(const std::vector<FigureScript>& figures,
                                const std::vector<std::string>& extensions,
                                const ScratchDirectory& scratch, const std::string& dir,
                                const std::string& exe) {
  std::string script = preamble();
  std::vector<std::pair<fs::path, fs::path>> outputs;  // temporary -> final
  for (const auto& fig : figures) {
    for (const auto& ext : extensions) {
      const fs::path tmp = scratch.path() / (fig.name + "." + ext);
      script += terminal(fig, ext, tmp) + preamble() + fig.body + "unset output\n";
      outputs.emplace_back(tmp, fs::path(dir) / (fig.name + "." + ext));
    }
  }
  const fs::path script_file = scratch.write("figures.gp", script);
  run_gnuplot(exe, script_file, scratch.path() / "gnuplot.log");

  std::error_code ec;
  for (const auto& [tmp, final_path] : outputs) {
    if (fs::file_size(tmp, ec) == 0 || ec) {
      throw std::runtime_error("gnuplot did not write '" + final_path.filename().string() + "'");
    }
  }
  std::vector<std::string> written;
  for (const auto& [tmp, final_path] : outputs) {
    fs::rename(tmp, final_path, ec);
    if (ec) {
      throw std::runtime_error("cannot write '" + final_path.string() + "': " + ec.message());
    }
    written.push_back(final_path.string());
  }
  return written;
}

std::vector<std::string> format_extensions(const PlotFormats& formats) {
  std::vector<std::string> extensions;
  if (formats.png) extensions.push_back("png");
  if (formats.svg) extensions.push_back("svg");
  return extensions;
}

}  // namespace

bool gnuplot_available() { return !find_on_path("gnuplot").empty(); }

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
