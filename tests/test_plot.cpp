// Figures of a Walking Noise sweep: files, formats, atomicity and failure handling.

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/plot.h"
#include "test_util.h"

namespace {

namespace fs = std::filesystem;
using quell::testing::read_file;
using quell::testing::ScratchDir;
using quell::testing::write_file;

#define SKIP_WITHOUT_GNUPLOT()                                              \
  do {                                                                      \
    if (!quell::gnuplot_available()) GTEST_SKIP() << "gnuplot not on PATH"; \
  } while (0)

// Sigmoid accuracy curves on a log grid (with a σ = 0 point first): site 1 stops early, site 2
// never crosses (NaN midpoint), the others cross at a site-specific σ.
quell::WalkPlotData sweep(int sites, bool log_sigma = true) {
  quell::WalkPlotData data;
  data.title = "test net, additive noise";
  data.log_sigma = log_sigma;
  data.clean_accuracy = 0.9;
  data.chance = 0.1;
  for (int i = 0; i < sites; ++i) {
    quell::SiteCurve site;
    site.site = i;
    site.label = std::to_string(i) + " layer" + std::to_string(i) + ".conv_" + std::to_string(i);
    const double mid = std::pow(10.0, -1.0 + 0.5 * (i % 5));
    const bool crossed = i != 2;
    site.points.push_back({0.0, 0.9, 0.88, 0.92});
    for (int k = 0; k <= 8; ++k) {
      const double sigma = log_sigma ? std::pow(10.0, -2.0 + 0.5 * k) : 0.25 * (k + 1);
      const double x = std::log10(sigma / mid);
      const double acc = crossed ? 0.1 + 0.8 / (1.0 + std::exp(3.0 * x)) : 0.9 - 0.01 * k;
      site.points.push_back({sigma, acc, acc - 0.03, acc + 0.03});
      if (i == 1 && acc < 0.15) break;
    }
    site.early_stopped = i == 1;
    if (crossed) {
      site.midpoint = mid;
      site.mid_lo = mid / 1.2;
      site.mid_hi = mid * 1.2;
    }
    data.sites.push_back(site);
  }
  quell::SiteCurve global = data.sites.front();
  global.label = "global noise";
  data.reference.push_back(global);
  return data;
}

std::set<std::string> entries(const std::string& dir) {
  std::set<std::string> names;
  for (const auto& entry : fs::directory_iterator(dir)) names.insert(entry.path().filename());
  return names;
}

bool is_png(const std::string& path) {
  return read_file(path).compare(0, 8, "\x89PNG\r\n\x1a\n") == 0;
}

// Replaces PATH for the scope of a test.
class ScopedPath {
 public:
  explicit ScopedPath(const std::string& value) {
    const char* old = std::getenv("PATH");
    had_ = old != nullptr;
    if (had_) old_ = old;
    ::setenv("PATH", value.c_str(), 1);
  }
  ~ScopedPath() {
    if (had_) {
      ::setenv("PATH", old_.c_str(), 1);
    } else {
      ::unsetenv("PATH");
    }
  }
  ScopedPath(const ScopedPath&) = delete;
  ScopedPath& operator=(const ScopedPath&) = delete;

 private:
  bool had_ = false;
  std::string old_;
};

// A directory holding a fake `gnuplot` shell script with the given body.
std::string fake_gnuplot(const ScratchDir& scratch, const std::string& body) {
  const fs::path bin = fs::path(scratch.str()) / "bin";
  fs::create_directories(bin);
  write_file(bin / "gnuplot", "#!/bin/sh\n" + body + "\n");
  fs::permissions(bin / "gnuplot", fs::perms::owner_all);
  return bin.string();
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    return e.what();
  }
  return "<no exception>";
}

TEST(Plot, WritesThreeFiguresInBothFormats) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_walk_figures(sweep(6), dir.str());
  const std::set<std::string> expected = {"curves.png",    "curves.svg",  "midpoints.png",
                                          "midpoints.svg", "heatmap.png", "heatmap.svg"};
  std::set<std::string> returned;
  for (const auto& p : paths) returned.insert(fs::path(p).filename());
  EXPECT_EQ(returned, expected);
  EXPECT_EQ(paths.size(), expected.size());
  // Nothing else is left in the directory: no scripts, data or temporary outputs.
  EXPECT_EQ(entries(dir.str()), expected);
  for (const auto& p : paths) {
    ASSERT_TRUE(fs::exists(p)) << p;
    if (fs::path(p).extension() == ".png") {
      EXPECT_TRUE(is_png(p)) << p;
    } else {
      const std::string svg = read_file(p);
      EXPECT_NE(svg.find("<svg"), std::string::npos) << p;
      EXPECT_NE(svg.find("</svg>"), std::string::npos) << p;
    }
  }
}

TEST(Plot, LabelsAreLiteralText) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  auto data = sweep(5);
  data.sites[3].label = "3 a_b.c@d";
  const auto paths = quell::write_walk_figures(data, dir.str(), {false, true});
  ASSERT_EQ(paths.size(), 3u);
  // Enhanced text would turn "_b" into a subscript and split the label; each figure shows it.
  for (const auto& p : paths) {
    EXPECT_EQ(fs::path(p).extension(), ".svg");
    EXPECT_NE(read_file(p).find("3 a_b.c@d"), std::string::npos) << p;
  }
  EXPECT_NE(read_file(dir.file("curves.svg")).find("not crossed"), std::string::npos);
  EXPECT_NE(read_file(dir.file("curves.svg")).find("early stop"), std::string::npos);
  EXPECT_NE(read_file(dir.file("midpoints.svg")).find("n.c."), std::string::npos);
  EXPECT_NE(read_file(dir.file("heatmap.svg")).find("not evaluated"), std::string::npos);
}

TEST(Plot, PngOnlyWritesNoSvg) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_walk_figures(sweep(3), dir.str(), {true, false});
  ASSERT_EQ(paths.size(), 3u);
  for (const auto& p : paths) {
    EXPECT_EQ(fs::path(p).extension(), ".png");
    EXPECT_TRUE(is_png(p)) << p;
  }
  EXPECT_EQ(entries(dir.str()),
            (std::set<std::string>{"curves.png", "midpoints.png", "heatmap.png"}));
}

TEST(Plot, NoFormatsWritesNothing) {
  ScratchDir dir("plot");
  EXPECT_TRUE(quell::write_walk_figures(sweep(3), dir.str(), {false, false}).empty());
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, NanMidpointsAndZeroSigmaOnLinearAndLogAxes) {
  SKIP_WITHOUT_GNUPLOT();
  for (const bool log_sigma : {true, false}) {
    ScratchDir dir("plot");
    auto data = sweep(5, log_sigma);
    for (auto& site : data.sites) {
      site.midpoint = site.mid_lo = site.mid_hi = NAN;
    }
    // A site evaluated only at σ = 0 (nothing on a log axis) and one without any point.
    data.sites[0].points.resize(1);
    data.sites[4].points.clear();
    data.sites[3].points[2].lo = NAN;  // missing band at one point
    const auto paths = quell::write_walk_figures(data, dir.str(), {true, false});
    EXPECT_EQ(paths.size(), 3u) << "log_sigma=" << log_sigma;
    for (const auto& p : paths) EXPECT_TRUE(is_png(p)) << p;
  }
}

TEST(Plot, ReplacesExistingFigures) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  write_file(dir.file("curves.png"), "old figure");
  quell::write_walk_figures(sweep(2), dir.str(), {true, false});
  EXPECT_TRUE(is_png(dir.file("curves.png")));
}

TEST(Plot, NoSitesIsAnError) {
  ScratchDir dir("plot");
  quell::WalkPlotData data;
  EXPECT_THROW(quell::write_walk_figures(data, dir.str()), std::runtime_error);
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, MissingGnuplotThrowsAndWritesNothing) {
  ScratchDir dir("plot");
  ScratchDir empty_bin("plot-bin");
  const ScopedPath path(empty_bin.str());
  EXPECT_FALSE(quell::gnuplot_available());
  const std::string message = message_of([&] { quell::write_walk_figures(sweep(3), dir.str()); });
  EXPECT_NE(message.find("gnuplot not found"), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, GnuplotAvailableNeedsAnExecutableOnPath) {
  ScratchDir scratch("plot");
  const std::string bin = fake_gnuplot(scratch, "exit 0");
  {
    const ScopedPath path("/nonexistent-quell-dir:" + bin);
    EXPECT_TRUE(quell::gnuplot_available());
  }
  fs::permissions(fs::path(bin) / "gnuplot", fs::perms::owner_read | fs::perms::owner_write);
  {
    const ScopedPath path(bin);
    // Not executable (even for root: access(X_OK) needs at least one x bit).
    EXPECT_FALSE(quell::gnuplot_available());
  }
}

TEST(Plot, MissingDirectoryThrows) {
  ScratchDir dir("plot");
  const std::string missing = dir.file("no-such-dir");
  const std::string message = message_of([&] { quell::write_walk_figures(sweep(3), missing); });
  EXPECT_NE(message, "<no exception>");
  if (quell::gnuplot_available()) {
    EXPECT_NE(message.find("no-such-dir"), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(missing));
}

TEST(Plot, FailingGnuplotReportsItsErrorAndLeavesNoTemporaries) {
  ScratchDir dir("plot");
  ScratchDir scratch("plot-bin");
  // Writes half a figure next to the script (where the outputs go), then fails like gnuplot.
  const std::string bin = fake_gnuplot(scratch,
                                       "printf 'half' > \"$(dirname \"$2\")/curves.png\"\n"
                                       "echo '         plot x' >&2\n"
                                       "echo \"\\\"$2\\\" line 7: undefined variable: x\" >&2\n"
                                       "exit 1");
  const ScopedPath path(bin);
  const std::string message = message_of([&] { quell::write_walk_figures(sweep(3), dir.str()); });
  EXPECT_NE(message.find("gnuplot failed"), std::string::npos) << message;
  EXPECT_NE(message.find("\"figures.gp\" line 7: undefined variable: x"), std::string::npos)
      << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, GnuplotWritingNothingIsAnError) {
  ScratchDir dir("plot");
  ScratchDir scratch("plot-bin");
  const ScopedPath path(fake_gnuplot(scratch, "exit 0"));
  const std::string message = message_of([&] {
    quell::write_walk_figures(sweep(3), dir.str(), {true, false});
  });
  EXPECT_NE(message.find("did not write"), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

// ---------------------------------------------------------------------------------------------
// Learning dynamics (write_dynamics_figures).

// Weight statistics of a noisy-training sweep on a log grid 1e-2..1e2 (4 per decade) with a
// σ = 0 point first, or on the linear grid 0:2:0.1: the RMS of every other site grows from 0.1
// towards 1, the binarisation index of every third site rises from 0.05 towards 0.9.
quell::DynamicsPlotData dynamics(int sites, bool log_sigma = true) {
  quell::DynamicsPlotData data;
  data.title = "test net, multiplicative noise";
  data.log_sigma = log_sigma;
  data.clean_rms = 0.11;
  data.clean_binarization = 0.06;
  for (int i = 0; i < sites; ++i) {
    quell::DynamicsSeries series;
    series.site = i;
    series.label = std::to_string(i) + " layer" + std::to_string(i);
    const double mid = log_sigma ? std::pow(10.0, -1.0 + 0.5 * (i % 5)) : 0.3 + 0.3 * (i % 5);
    const int count = log_sigma ? 17 : 21;
    if (log_sigma) {
      series.sigma.push_back(0.0);
      series.rms.push_back(0.1);
      series.binarization.push_back(0.05);
    }
    for (int k = 0; k < count; ++k) {
      const double sigma = log_sigma ? std::pow(10.0, -2.0 + 0.25 * k) : 0.1 * k;
      const double x = log_sigma ? 3.0 * std::log10(sigma / mid) : (sigma - mid) / 0.15;
      const double f = 1.0 / (1.0 + std::exp(-x));
      series.sigma.push_back(sigma);
      series.rms.push_back(i % 2 == 0 ? 0.1 + 0.9 * f : 0.1);
      series.binarization.push_back(i % 3 == 0 ? 0.05 + 0.85 * f : 0.05);
    }
    data.series.push_back(series);
  }
  return data;
}

TEST(Plot, DynamicsFigureInBothFormats) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  auto data = dynamics(16);
  data.series[3].label = "3 a_b.c@d";
  const auto paths = quell::write_dynamics_figures(data, dir.str());
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(fs::path(paths[0]).filename(), "dynamics.png");
  EXPECT_EQ(fs::path(paths[1]).filename(), "dynamics.svg");
  // Nothing else is left in the directory: no scripts, data or temporary outputs.
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"dynamics.png", "dynamics.svg"}));
  EXPECT_TRUE(is_png(paths[0]));
  const std::string svg = read_file(paths[1]);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  // Every site in the legend, labels literal, the clean reference explained.
  for (const auto& series : data.series) {
    EXPECT_NE(svg.find(series.label), std::string::npos) << series.label;
  }
  EXPECT_NE(svg.find("clean-trained models"), std::string::npos);
  EXPECT_NE(svg.find("site (network order)"), std::string::npos);
}

TEST(Plot, DynamicsFormatsRespected) {
  {
    ScratchDir dir("plot");
    EXPECT_TRUE(quell::write_dynamics_figures(dynamics(3), dir.str(), {false, false}).empty());
    EXPECT_TRUE(entries(dir.str()).empty());
  }
  SKIP_WITHOUT_GNUPLOT();
  {
    ScratchDir dir("plot");
    const auto paths = quell::write_dynamics_figures(dynamics(3), dir.str(), {true, false});
    ASSERT_EQ(paths.size(), 1u);
    EXPECT_TRUE(is_png(paths[0]));
    EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"dynamics.png"}));
  }
  {
    ScratchDir dir("plot");
    const auto paths = quell::write_dynamics_figures(dynamics(3), dir.str(), {false, true});
    ASSERT_EQ(paths.size(), 1u);
    EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"dynamics.svg"}));
    EXPECT_NE(read_file(paths[0]).find("2 layer2"), std::string::npos);
  }
}

TEST(Plot, DynamicsNanCleanReferencesAndSparseSeries) {
  SKIP_WITHOUT_GNUPLOT();
  for (const bool log_sigma : {true, false}) {
    ScratchDir dir("plot");
    auto data = dynamics(5, log_sigma);
    data.clean_rms = NAN;
    data.clean_binarization = NAN;
    data.series[0].sigma = {0.0};  // nothing left on a log axis
    data.series[0].rms = {0.1};
    data.series[0].binarization = {0.05};
    data.series[1].sigma.clear();  // no point at all
    data.series[1].rms.clear();
    data.series[1].binarization.clear();
    for (double& b : data.series[2].binarization) b = NAN;  // one statistic missing
    data.series[3].rms[4] = 0.0;                            // not on a log RMS axis
    data.series[3].rms[5] = NAN;
    const auto paths = quell::write_dynamics_figures(data, dir.str(), {true, true});
    ASSERT_EQ(paths.size(), 2u) << "log_sigma=" << log_sigma;
    EXPECT_TRUE(is_png(paths[0]));
    const std::string svg = read_file(paths[1]);
    EXPECT_EQ(svg.find("clean-trained models"), std::string::npos) << "log_sigma=" << log_sigma;
    EXPECT_NE(svg.find("1 layer1 (no data)"), std::string::npos) << "log_sigma=" << log_sigma;
  }
}

TEST(Plot, DynamicsManySitesGetAColourBox) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_dynamics_figures(dynamics(71), dir.str(), {true, true});
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_TRUE(is_png(paths[0]));
  const std::string svg = read_file(paths[1]);
  EXPECT_NE(svg.find("site (network order)"), std::string::npos);
  EXPECT_NE(svg.find("0 layer0"), std::string::npos);  // colour box labels in network order
}

TEST(Plot, DynamicsEmptySeriesIsAnError) {
  ScratchDir dir("plot");
  quell::DynamicsPlotData data;
  const std::string message = message_of([&] { quell::write_dynamics_figures(data, dir.str()); });
  EXPECT_NE(message.find("no sites"), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, DynamicsMismatchedLengthsIsAnError) {
  ScratchDir dir("plot");
  auto data = dynamics(3);
  data.series[1].rms.pop_back();
  const std::string message = message_of([&] { quell::write_dynamics_figures(data, dir.str()); });
  EXPECT_NE(message.find("1 layer1"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, DynamicsMissingGnuplotOrDirectoryThrows) {
  ScratchDir dir("plot");
  const std::string missing = dir.file("no-such-dir");
  const std::string message =
      message_of([&] { quell::write_dynamics_figures(dynamics(3), missing); });
  EXPECT_NE(message, "<no exception>");
  EXPECT_FALSE(fs::exists(missing));

  ScratchDir empty_bin("plot-bin");
  const ScopedPath path(empty_bin.str());
  const std::string no_gnuplot =
      message_of([&] { quell::write_dynamics_figures(dynamics(3), dir.str()); });
  EXPECT_NE(no_gnuplot.find("gnuplot not found"), std::string::npos) << no_gnuplot;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, DynamicsFailureLeavesNoTemporaries) {
  ScratchDir dir("plot");
  ScratchDir scratch("plot-bin");
  // Writes half a figure next to the script (where the outputs go), then fails like gnuplot.
  const std::string bin = fake_gnuplot(scratch,
                                       "printf 'half' > \"$(dirname \"$2\")/dynamics.png\"\n"
                                       "echo \"\\\"$2\\\" line 3: invalid command\" >&2\n"
                                       "exit 1");
  {
    const ScopedPath path(bin);
    const std::string message =
        message_of([&] { quell::write_dynamics_figures(dynamics(4), dir.str()); });
    EXPECT_NE(message.find("gnuplot failed"), std::string::npos) << message;
    EXPECT_NE(message.find("\"figures.gp\" line 3: invalid command"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
    EXPECT_TRUE(entries(dir.str()).empty());
  }
  // An existing figure survives a failed run untouched.
  write_file(dir.file("dynamics.png"), "old figure");
  {
    const ScopedPath path(fake_gnuplot(scratch, "exit 0"));
    const std::string message = message_of([&] {
      quell::write_dynamics_figures(dynamics(4), dir.str(), {true, false});
    });
    EXPECT_NE(message.find("did not write"), std::string::npos) << message;
  }
  EXPECT_EQ(read_file(dir.file("dynamics.png")), "old figure");
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"dynamics.png"}));
}

// ---------------------------------------------------------------------------------------------
// Denoiser study (write_denoise_figures).

// Operating points of three groups (a placement search, a ranking, a fine-tune baseline) with a
// Pareto front of three points, and two robustness curves on a linear grid around the training
// level 1.
quell::DenoisePlotData denoise(bool with_curves = true) {
  quell::DenoisePlotData data;
  data.title = "test net, static+dynamic noise";
  data.clean_accuracy = 0.91;
  data.noisy_accuracy = 0.55;
  data.chance = 0.1;
  data.budget = 5.0;
  auto add = [&](const std::string& label, const std::string& group, double overhead, double acc,
                 bool pareto) {
    data.points.push_back({label, group, overhead, acc, acc - 0.02, acc + 0.02, pareto});
  };
  add("fine-tune", "fine-tune", 0.0, 0.70, true);
  add("conv1", "search", 1.2, 0.74, false);
  add("conv1,fc2", "search", 2.5, 0.82, true);
  add("conv1,conv2,fc1", "search", 4.0, 0.80, false);
  add("conv1,conv2,fc1,fc2", "search", 6.8, 0.86, true);
  add("top-1", "taylor", 1.5, 0.72, false);
  add("top-2", "taylor", 3.1, 0.78, false);
  add("all sites", "all sites", 9.5, 0.85, false);
  if (with_curves) {
    const std::vector<std::pair<std::string, double>> models = {
        {"unmitigated", 0.6}, {"denoisers (chosen)", 1.4}, {"fine-tuned", 1.1}};
    for (size_t m = 0; m < models.size(); ++m) {
      quell::SiteCurve curve;
      curve.site = static_cast<int>(m);
      curve.label = models[m].first;
      for (int k = 0; k <= 8; ++k) {
        const double sigma = 0.25 * k;
        const double acc = 0.1 + 0.81 / (1.0 + std::exp(3.0 * (sigma - models[m].second)));
        curve.points.push_back({sigma, acc, acc - 0.03, acc + 0.03});
      }
      data.curves.push_back(curve);
    }
    data.train_sigma = 1.0;
  }
  return data;
}

TEST(Plot, DenoiseFiguresInBothFormats) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_denoise_figures(denoise(), dir.str());
  const std::set<std::string> expected = {"pareto.png", "pareto.svg", "robustness.png",
                                          "robustness.svg"};
  std::set<std::string> returned;
  for (const auto& p : paths) returned.insert(fs::path(p).filename());
  EXPECT_EQ(returned, expected);
  EXPECT_EQ(paths.size(), expected.size());
  // Nothing else is left in the directory: no scripts, data or temporary outputs.
  EXPECT_EQ(entries(dir.str()), expected);
  EXPECT_TRUE(is_png(dir.file("pareto.png")));
  EXPECT_TRUE(is_png(dir.file("robustness.png")));
  const std::string pareto = read_file(dir.file("pareto.svg"));
  EXPECT_NE(pareto.find("</svg>"), std::string::npos);
  for (const char* text : {"search", "taylor", "fine-tune", "all sites", "Pareto front", "budget η",
                           "unmitigated", "clean", "chance", "conv1,fc2"}) {
    EXPECT_NE(pareto.find(text), std::string::npos) << text;
  }
  const std::string robustness = read_file(dir.file("robustness.svg"));
  EXPECT_NE(robustness.find("</svg>"), std::string::npos);
  for (const char* text : {"unmitigated", "denoisers (chosen)", "fine-tuned", "training level (1)",
                           "clean accuracy", "chance", "95% band"}) {
    EXPECT_NE(robustness.find(text), std::string::npos) << text;
  }
}

TEST(Plot, DenoiseWithoutCurvesWritesOnlyPareto) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_denoise_figures(denoise(false), dir.str());
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"pareto.png", "pareto.svg"}));
  EXPECT_TRUE(is_png(dir.file("pareto.png")));
}

TEST(Plot, FarRightOutlierIsNamedNotSqueezing) {
  SKIP_WITHOUT_GNUPLOT();
  // "all sites" at 60% (over 3x the next point and the budget) leaves the x range; an arrow
  // at the right edge names it. At 9.5% (the default data) it stays a plotted point.
  auto data = denoise(false);
  data.points.back().overhead = 60.0;
  ScratchDir dir("plot");
  quell::write_denoise_figures(data, dir.str(), {false, true});
  const std::string svg = read_file(dir.file("pareto.svg"));
  EXPECT_NE(svg.find("all sites at 60: 0.85"), std::string::npos);
  ScratchDir plain("plot");
  quell::write_denoise_figures(denoise(false), plain.str(), {false, true});
  EXPECT_EQ(read_file(plain.file("pareto.svg")).find("all sites at"), std::string::npos);
}

TEST(Plot, PointsFigureTakesItsNameAndAxis) {
  SKIP_WITHOUT_GNUPLOT();
  auto data = denoise();
  data.points_name = "tradeoff";
  data.x_label = "energy overhead (%)";
  data.points_what = "accuracy vs energy";
  ScratchDir dir("plot");
  const auto paths = quell::write_points_figure(data, dir.str());
  EXPECT_EQ(paths.size(), 2u);
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"tradeoff.png", "tradeoff.svg"}));
  const std::string svg = read_file(dir.file("tradeoff.svg"));
  EXPECT_NE(svg.find("energy overhead (%)"), std::string::npos);
  EXPECT_NE(svg.find("accuracy vs energy"), std::string::npos);
  EXPECT_THROW(quell::write_points_figure(quell::DenoisePlotData{}, dir.str()),
               std::runtime_error);
}

TEST(Plot, DenoiseFormatsRespected) {
  {
    ScratchDir dir("plot");
    EXPECT_TRUE(quell::write_denoise_figures(denoise(), dir.str(), {false, false}).empty());
    EXPECT_TRUE(entries(dir.str()).empty());
  }
  {
    // Both formats off: nothing is checked or written, even without points or a directory.
    ScratchDir dir("plot");
    EXPECT_TRUE(
        quell::write_denoise_figures(quell::DenoisePlotData{}, dir.file("missing"), {false, false})
            .empty());
  }
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  const auto paths = quell::write_denoise_figures(denoise(), dir.str(), {true, false});
  ASSERT_EQ(paths.size(), 2u);
  for (const auto& p : paths) EXPECT_TRUE(is_png(p)) << p;
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"pareto.png", "robustness.png"}));
}

TEST(Plot, DenoiseLabelsWithQuotesAreLiteral) {
  SKIP_WITHOUT_GNUPLOT();
  ScratchDir dir("plot");
  auto data = denoise();
  data.title = "it's \"quoted\" net";
  data.points[2].label = "conv1's \"fc2\"";  // on the front: drawn as a label
  data.points[2].group = "it's a_group";
  data.points[5].group = "say \"x\"\nnext";
  data.curves[1].label = "denoisers 'chosen' \"x\"";
  const auto paths = quell::write_denoise_figures(data, dir.str(), {false, true});
  ASSERT_EQ(paths.size(), 2u);
  const std::string pareto = read_file(dir.file("pareto.svg"));
  // The SVG escapes quotes as entities or not at all, depending on the gnuplot version.
  auto has = [](const std::string& svg, const std::string& a, const std::string& b) {
    return svg.find(a) != std::string::npos || svg.find(b) != std::string::npos;
  };
  EXPECT_TRUE(has(pareto, "conv1's \"fc2\"", "conv1&apos;s &quot;fc2&quot;"));
  EXPECT_TRUE(has(pareto, "it's a_group", "it&apos;s a_group"));
  EXPECT_TRUE(has(pareto, "say \"x\" next", "say &quot;x&quot; next"));
  const std::string robustness = read_file(dir.file("robustness.svg"));
  EXPECT_TRUE(
      has(robustness, "denoisers 'chosen' \"x\"", "denoisers &apos;chosen&apos; &quot;x&quot;"));
}

TEST(Plot, DenoiseNanValuesAndLogSigma) {
  SKIP_WITHOUT_GNUPLOT();
  for (const bool log_sigma : {false, true}) {
    ScratchDir dir("plot");
    auto data = denoise();
    data.log_sigma = log_sigma;  // the σ = 0 points are dropped on the log axis
    data.clean_accuracy = NAN;
    data.noisy_accuracy = NAN;
    data.budget = NAN;
    data.train_sigma = NAN;
    data.points[1].lo = NAN;        // no CI: the mean alone
    data.points[3].mean = NAN;      // not plottable
    data.points[4].overhead = NAN;  // not plottable, though on the front
    data.points[7].mean = NAN;      // the only point of its group
    data.curves[0].points[3].mean = NAN;
    data.curves[1].points[2].hi = NAN;
    data.curves[2].points.clear();
    const auto paths = quell::write_denoise_figures(data, dir.str(), {true, true});
    ASSERT_EQ(paths.size(), 4u) << "log_sigma=" << log_sigma;
    EXPECT_TRUE(is_png(dir.file("pareto.png")));
    EXPECT_TRUE(is_png(dir.file("robustness.png")));
    const std::string pareto = read_file(dir.file("pareto.svg"));
    EXPECT_EQ(pareto.find("budget"), std::string::npos);
    EXPECT_NE(pareto.find("all sites (no data)"), std::string::npos);
    const std::string robustness = read_file(dir.file("robustness.svg"));
    EXPECT_EQ(robustness.find("training level ("), std::string::npos);  // no legend entry
    EXPECT_NE(robustness.find("fine-tuned (no data)"), std::string::npos);
  }
  // Nothing plottable at all still draws (empty) figures.
  ScratchDir dir("plot");
  quell::DenoisePlotData data;
  data.points.push_back({"x", "g", NAN, NAN, NAN, NAN, true});
  data.chance = NAN;
  EXPECT_EQ(quell::write_denoise_figures(data, dir.str(), {true, false}).size(), 1u);
  EXPECT_TRUE(is_png(dir.file("pareto.png")));
}

TEST(Plot, DenoiseNoPointsIsAnError) {
  ScratchDir dir("plot");
  auto data = denoise();
  data.points.clear();
  const std::string message = message_of([&] { quell::write_denoise_figures(data, dir.str()); });
  EXPECT_NE(message.find("no operating points"), std::string::npos) << message;
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_TRUE(entries(dir.str()).empty());
}

TEST(Plot, DenoiseMissingGnuplotOrDirectoryThrows) {
  ScratchDir dir("plot");
  const std::string missing = dir.file("no-such-dir");
  const std::string message = message_of([&] { quell::write_denoise_figures(denoise(), missing); });
  EXPECT_NE(message, "<no exception>");
  if (quell::gnuplot_available()) {
    EXPECT_NE(message.find("no-such-dir"), std::string::npos) << message;
  }
  EXPECT_FALSE(fs::exists(missing));
  // A regular file is not a directory either.
  write_file(dir.file("a-file"), "x");
  EXPECT_THROW(quell::write_denoise_figures(denoise(), dir.file("a-file")), std::runtime_error);

  ScratchDir empty_bin("plot-bin");
  const ScopedPath path(empty_bin.str());
  const std::string no_gnuplot =
      message_of([&] { quell::write_denoise_figures(denoise(), dir.str()); });
  EXPECT_NE(no_gnuplot.find("gnuplot not found"), std::string::npos) << no_gnuplot;
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"a-file"}));
}

TEST(Plot, DenoiseFailureLeavesNoTemporaries) {
  ScratchDir dir("plot");
  ScratchDir scratch("plot-bin");
  write_file(dir.file("pareto.png"), "old figure");
  // Writes half a figure next to the script (where the outputs go), then fails like gnuplot.
  const std::string bin = fake_gnuplot(scratch,
                                       "printf 'half' > \"$(dirname \"$2\")/pareto.png\"\n"
                                       "echo \"\\\"$2\\\" line 9: invalid command\" >&2\n"
                                       "exit 1");
  {
    const ScopedPath path(bin);
    const std::string message =
        message_of([&] { quell::write_denoise_figures(denoise(), dir.str()); });
    EXPECT_NE(message.find("gnuplot failed"), std::string::npos) << message;
    EXPECT_NE(message.find("\"figures.gp\" line 9: invalid command"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
  {
    const ScopedPath path(fake_gnuplot(scratch, "exit 0"));
    const std::string message = message_of([&] {
      quell::write_denoise_figures(denoise(), dir.str(), {true, false});
    });
    EXPECT_NE(message.find("did not write"), std::string::npos) << message;
  }
  // The existing figure survives both failed runs untouched, and nothing else is left.
  EXPECT_EQ(read_file(dir.file("pareto.png")), "old figure");
  EXPECT_EQ(entries(dir.str()), (std::set<std::string>{"pareto.png"}));
}

}  // namespace
