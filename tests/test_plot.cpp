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

}  // namespace
