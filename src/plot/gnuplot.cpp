// The pieces the figures share (gnuplot.h): gnuplot scripts written to a temporary directory
// inside the output directory, one gnuplot run for all figures of a call, outputs renamed into
// place. The figures themselves are in walk_figures.cpp, dynamics_figures.cpp and
// denoise_figures.cpp.

#include "plot/gnuplot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
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

namespace quell::plot {

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

namespace {

// "10⁻²" with Unicode superscripts (the terminals run without enhanced text).
std::string power_of_ten(int exponent) {
  static const char* const kDigits[] = {"⁰", "¹", "²", "³", "⁴", "⁵", "⁶", "⁷", "⁸", "⁹"};
  std::string out = "10";
  if (exponent < 0) out += "⁻";
  const std::string digits = std::to_string(std::abs(exponent));
  for (const char d : digits) out += kDigits[d - '0'];
  return out;
}

}  // namespace

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

// ---------------------------------------------------------------------------------------------
// Data preparation.

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

// ---------------------------------------------------------------------------------------------
// Scratch files and the gnuplot process.

ScratchDirectory::ScratchDirectory(const fs::path& parent) {
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

ScratchDirectory::~ScratchDirectory() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

fs::path ScratchDirectory::write(const std::string& name, const std::string& content) const {
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

namespace {

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

}  // namespace

// ---------------------------------------------------------------------------------------------
// Figures: the styles several of them share (declared in gnuplot.h) and the commands common to
// all.

const char* const kCleanStyle = "lc rgb '#000000' lw 1.5 dt (10,6)";
// Colours differ slightly from the clean line: the svg terminal merges consecutive arrows of one
// colour into a single path with the first arrow's dash pattern.
const char* const kChanceStyle = "lc rgb '#3a3a3a' lw 1.6 dt (2,4)";

// Categorical colours and markers: sites of the dynamics figure, groups and curves of the
// denoise figures.
const char* const kDynColors[] = {"#1f5fa8", "#d95f02", "#1b9e77", "#7570b3",
                                  "#e7298a", "#66a61e", "#a6761d", "#555555"};
const int kDynPoints[] = {7, 5, 9, 11, 13, 15, 6, 4};  // filled circle, square, triangles, ...

namespace {

// Commands common to every figure.
std::string preamble() {
  return "set encoding utf8\n"
         "set datafile separator whitespace\n"
         "set style fill solid 1.0 noborder\n";
}

}  // namespace

std::string join_plot(const std::vector<std::string>& elements) {
  if (elements.empty()) return "plot NaN notitle\n";
  std::string out = "plot ";
  for (size_t i = 0; i < elements.size(); ++i) {
    out += (i == 0 ? "" : ", \\\n     ") + elements[i];
  }
  return out + "\n";
}

namespace {

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

}  // namespace

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

}  // namespace quell::plot

namespace quell {

bool gnuplot_available() { return !plot::find_on_path("gnuplot").empty(); }

}  // namespace quell
