// Walking Noise: grids, the midpoint on constructed curves, the journal (resume, torn lines,
// merging), and sweeps on a small trained model: prefix caching changes nothing, early stop and
// grid extension follow their rules, an interrupted sweep resumes without lost or duplicated
// rows, shards merge into the unsharded sweep, the adaptive search finds the midpoint.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "quell/walk.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::blob_dataset;
using quell::testing::read_file;
using quell::testing::ScratchDir;
namespace fs = std::filesystem;

// ---------------------------------------------------------------------------------------------
// Grids and the walked noise

TEST(SigmaGrid, LogGridHasTheRequestedPointsPerDecade) {
  const SigmaGrid g = SigmaGrid::parse("1e-2:1e4", 4);
  ASSERT_EQ(g.values.size(), 25u);  // 6 decades x 4 + 1
  EXPECT_DOUBLE_EQ(g.values.front(), 1e-2);
  EXPECT_NEAR(g.values.back() / 1e4, 1.0, 1e-12);
  for (size_t i = 1; i < g.values.size(); ++i) {
    EXPECT_NEAR(g.values[i] / g.values[i - 1], std::pow(10.0, 0.25), 1e-12);
  }
  EXPECT_NEAR(g.beyond(4) / 1e5, 1.0, 1e-12);
  EXPECT_TRUE(g.extendable());
}

TEST(SigmaGrid, LinearGridAndLists) {
  const SigmaGrid lin = SigmaGrid::parse("0:2:0.1");
  ASSERT_EQ(lin.values.size(), 21u);
  EXPECT_EQ(lin.values.front(), 0.0);
  EXPECT_NEAR(lin.values.back(), 2.0, 1e-12);
  EXPECT_NEAR(lin.beyond(1), 2.1, 1e-12);
  const SigmaGrid list = SigmaGrid::parse("1, 0.1,0.5,0.1");
  EXPECT_EQ(list.values, (std::vector<double>{0.1, 0.5, 1.0}));
  EXPECT_FALSE(list.extendable());
  EXPECT_TRUE(std::isnan(list.beyond(1)));
}

TEST(SigmaGrid, BadGridsAreErrors) {
  for (const char* bad : {"", "0:1", "1:0.5", "-1:2", "nan:1", "1:inf", "1:2:0", "1:2:-1", "a:b",
                          "1:2:3:4", "0.1,-2", "0.1,nan"}) {
    EXPECT_THROW(SigmaGrid::parse(bad, 4), std::invalid_argument) << bad;
  }
  EXPECT_THROW(SigmaGrid::parse("1e-2:1", 0), std::invalid_argument);
}

TEST(WalkNoise, KindsRatiosAndOptions) {
  EXPECT_EQ(WalkNoise::parse("add").at(0.3).sigma_add, 0.3);
  EXPECT_EQ(WalkNoise::parse("add").at(0.3).sigma_mul, 0.0);
  EXPECT_EQ(WalkNoise::parse("mul").at(0.3).sigma_mul, 0.3);
  const NoiseSpec mixed = WalkNoise::parse("muladd:r=0.25").at(2.0);
  EXPECT_EQ(mixed.kind, NoiseKind::kMulAdd);
  EXPECT_DOUBLE_EQ(mixed.sigma_add, 0.5);  // A r
  EXPECT_DOUBLE_EQ(mixed.sigma_mul, 1.5);  // A (1 - r)
  EXPECT_EQ(WalkNoise::parse("addmul:r=0.5").at(1.0).kind, NoiseKind::kAddMul);
  EXPECT_EQ(WalkNoise::parse("add:rel=std").at(1.0).scale, SigmaScale::kStd);
  EXPECT_EQ(WalkNoise::parse("add:static").at(1.0).temporal, Temporal::kStatic);
  for (const char* bad : {"add:0.1", "add:r=0.5", "muladd:r=1.5", "muladd:r=x", "foo",
                          "add:bogus"}) {
    EXPECT_THROW(WalkNoise::parse(bad), std::invalid_argument) << bad;
  }
}

// ---------------------------------------------------------------------------------------------
// The midpoint on constructed curves

TEST(Midpoint, InterpolatesLinearlyInLogSigma) {
  CrossingStatus st;
  // Between 1 (0.7) and 10 (0.3) the threshold 0.5 is halfway: sqrt(1 * 10) in log sigma.
  EXPECT_NEAR(crossing_point({0.1, 1, 10}, {0.9, 0.7, 0.3}, 0.5, &st), std::sqrt(10.0), 1e-12);
  EXPECT_EQ(st, CrossingStatus::kCrossed);
}

TEST(Midpoint, ExactForCurvesLinearInLogSigma) {
  // acc = 0.9 - 0.2 log10(sigma / 0.01) crosses 0.5 at sigma = 1 exactly, which no grid point
  // hits (3 points per decade from 0.013): linear interpolation in log sigma recovers it.
  const SigmaGrid g = SigmaGrid::parse("0.013:1e3", 3);
  std::vector<double> mean;
  for (double s : g.values) mean.push_back(std::max(0.1, 0.9 - 0.2 * std::log10(s / 0.01)));
  EXPECT_NEAR(crossing_point(g.values, mean, 0.5), 1.0, 1e-9);
}

TEST(Midpoint, StatusesAndEdgeCases) {
  CrossingStatus st;
  EXPECT_TRUE(std::isnan(crossing_point({1, 2, 3}, {0.9, 0.8, 0.6}, 0.5, &st)));
  EXPECT_EQ(st, CrossingStatus::kNotCrossed);
  EXPECT_TRUE(std::isnan(crossing_point({1, 2}, {0.4, 0.2}, 0.5, &st)));
  EXPECT_EQ(st, CrossingStatus::kBelowGrid);
  // A segment starting at sigma 0 is interpolated linearly in sigma.
  EXPECT_NEAR(crossing_point({0, 0.1}, {0.9, 0.1}, 0.5, &st), 0.05, 1e-12);
  // The first downward crossing counts, even if the curve recovers later.
  EXPECT_NEAR(crossing_point({1, 10, 100, 1000}, {0.9, 0.1, 0.9, 0.1}, 0.5, &st),
              std::sqrt(10.0), 1e-12);
  // Exactly at the threshold is not below it: the crossing starts there.
  EXPECT_NEAR(crossing_point({1, 10, 100}, {0.9, 0.5, 0.1}, 0.5, &st), 10.0, 1e-9);
  EXPECT_TRUE(std::isnan(crossing_point({}, {}, 0.5, &st)));
}

TEST(Midpoint, NoSpreadWithoutRepeats) {
  const Midpoint one = estimate_midpoint({1, 10}, {{0.7}, {0.3}}, 0.5);
  EXPECT_TRUE(one.crossed());
  EXPECT_TRUE(std::isnan(one.lo));
  // Identical repeats: every resample is the same curve.
  const Midpoint same = estimate_midpoint({1, 10}, {{0.7, 0.7}, {0.3, 0.3}}, 0.5);
  EXPECT_NEAR(same.lo, same.value, 1e-12);
  EXPECT_NEAR(same.hi, same.value, 1e-12);
  EXPECT_EQ(same.crossed_fraction, 1.0);
}

TEST(Midpoint, BootstrapIntervalCoversTheTrueMidpoint) {
  // Curves with known midpoint mu = 1: mean acc = 0.1 + 0.8 / (1 + sigma^2) on a log grid,
  // threshold 0.5 (crossed exactly at sigma = 1), each repeat perturbed by N(0, 0.02^2).
  // Linear interpolation between grid points is biased slightly; with 8 points per decade the
  // bias is < 0.3% (computed below), small against the interval. With 3 repeats (as in a
  // default sweep) the nominal coverage is 95%; over 200 trials coverage below 85% would be
  // > 6 binomial standard deviations (sqrt(0.95 * 0.05 / 200) = 0.015) below 95%, and above
  // 99.5% would mean intervals far too wide.
  const SigmaGrid g = SigmaGrid::parse("0.01:100", 8);
  std::vector<double> truth;
  for (double s : g.values) truth.push_back(0.1 + 0.8 / (1.0 + s * s));
  ASSERT_NEAR(crossing_point(g.values, truth, 0.5), 1.0, 3e-3);
  std::mt19937_64 gen(5);
  std::normal_distribution<double> noise(0.0, 0.02);
  int covered = 0;
  const int trials = 200;
  for (int t = 0; t < trials; ++t) {
    std::vector<std::vector<double>> samples;
    for (double m : truth) {
      std::vector<double> reps;
      for (int r = 0; r < 3; ++r) reps.push_back(m + noise(gen));
      samples.push_back(reps);
    }
    const Midpoint m = estimate_midpoint(g.values, samples, 0.5, 400, t + 1);
    ASSERT_TRUE(m.crossed());
    if (m.lo <= 1.0 && 1.0 <= m.hi) ++covered;
  }
  EXPECT_GE(covered, 170) << covered << " of " << trials;
  EXPECT_LE(covered, 199) << covered << " of " << trials;
}

// ---------------------------------------------------------------------------------------------
// The journal

Json fp(int v = 1) { return Json{{"what", "test"}, {"v", v}}; }

WalkRecord rec(int site, double sigma, int repeat, double acc) {
  WalkRecord r;
  r.site = site;
  r.sigma = sigma;
  r.repeat = repeat;
  r.accuracy = acc;
  r.loss = 1.0;
  return r;
}

TEST(WalkJournal, ReopensAndRejectsAnotherSweep) {
  ScratchDir dir;
  const std::string path = dir.file("journal.jsonl");
  {
    WalkJournal j(path, fp());
    j.append({rec(1, 0.1, 0, 0.9), rec(1, 0.1, 1, 0.8)});
    j.append({rec(1, 0.1, 0, 0.5)});  // already there: not written twice
  }
  WalkJournal j(path, fp());
  ASSERT_EQ(j.records().size(), 2u);
  ASSERT_NE(j.find(1, 0.1, 1), nullptr);
  EXPECT_EQ(j.find(1, 0.1, 1)->accuracy, 0.8);
  EXPECT_EQ(j.find(1, 0.1, 0)->accuracy, 0.9);
  EXPECT_EQ(j.find(2, 0.1, 0), nullptr);
  try {
    WalkJournal other(path, fp(2));
    FAIL() << "a different fingerprint was accepted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("v: 1 vs 2"), std::string::npos) << e.what();
  }
}

TEST(WalkJournal, TornLastLineIsDroppedAndCorruptionIsAnError) {
  ScratchDir dir;
  const std::string path = dir.file("journal.jsonl");
  {
    WalkJournal j(path, fp());
    j.append({rec(0, 1.0, 0, 0.7)});
  }
  const std::string good = read_file(path);
  std::ofstream(path, std::ios::app) << R"({"site":0,"sigma":2.0,"rep)";  // killed mid-write
  {
    WalkJournal j(path, fp());
    EXPECT_EQ(j.records().size(), 1u);
    EXPECT_EQ(read_file(path), good);  // truncated back to the last whole line
    j.append({rec(0, 2.0, 0, 0.6)});
  }
  EXPECT_EQ(WalkJournal::read(path).second.size(), 2u);
  std::ofstream(path, std::ios::app) << "garbage\n" << rec(0, 3.0, 0, 0.5).to_json().dump() << "\n";
  EXPECT_THROW(WalkJournal(path, fp()), std::runtime_error);
  quell::testing::write_file(path, "{\"not\":\"a journal\"}\n");
  EXPECT_THROW(WalkJournal(path, fp()), std::runtime_error);
}

TEST(WalkJournal, MergeKeepsEveryRecordOnce) {
  ScratchDir dir;
  const std::string a = dir.file("a.jsonl"), b = dir.file("b.jsonl"), out = dir.file("m.jsonl");
  WalkJournal(a, fp()).append({rec(0, 1.0, 0, 0.7), rec(0, 1.0, 1, 0.6)});
  WalkJournal(b, fp()).append({rec(0, 1.0, 1, 0.6), rec(3, 1.0, 0, 0.2)});
  EXPECT_EQ(merge_journals({a, b}, out), 3u);
  const auto [f, records] = WalkJournal::read(out);
  EXPECT_EQ(f, fp());
  std::set<std::tuple<int, double, int>> keys;
  for (const auto& r : records) keys.insert({r.site, r.sigma, r.repeat});
  EXPECT_EQ(keys.size(), 3u);
  // Conflicting values and different sweeps are errors; nothing is written then.
  const std::string c = dir.file("c.jsonl"), d = dir.file("d.jsonl");
  WalkJournal(c, fp()).append({rec(0, 1.0, 0, 0.1)});
  WalkJournal(d, fp(2)).append({rec(9, 1.0, 0, 0.1)});
  const std::string before = read_file(out);
  EXPECT_THROW(merge_journals({a, c}, out), std::runtime_error);
  EXPECT_THROW(merge_journals({a, d}, out), std::runtime_error);
  EXPECT_EQ(read_file(out), before);
}

// ---------------------------------------------------------------------------------------------
// Sweeps on a trained model

class WalkModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    train_ = new Dataset(blob_dataset(1200, 1, 28, 28, 10, 21));
    test_ = new Dataset(blob_dataset(300, 1, 28, 28, 10, 22));
    torch::manual_seed(3);
    model_ = new Model(make_model(ModelSpec::for_dataset("mlp-bn", *train_)));
    TrainOptions o;
    o.epochs = 2;
    o.batch_size = 64;
    o.lr = 3e-3;
    train(**model_, *train_, o);
  }
  static void TearDownTestSuite() {
    delete model_;
    delete train_;
    delete test_;
  }
  static WalkOptions options() {
    WalkOptions o;
    o.sites = {0, 1, 3, 7, 10};
    o.noise = WalkNoise::parse("add");
    o.grid = SigmaGrid::parse("1e-1:1e3", 2);
    o.repeats = 2;
    o.batch_size = 128;  // 3 batches, the last one partial
    return o;
  }
  // Every field of every evaluation: the loss shows a difference in the noise that the
  // accuracy on 300 images may not.
  static std::vector<std::tuple<int, double, int, double, double>> rows(const WalkResult& r) {
    std::vector<std::tuple<int, double, int, double, double>> v;
    for (const auto& x : r.records) v.emplace_back(x.site, x.sigma, x.repeat, x.accuracy, x.loss);
    return v;
  }
  static Dataset* train_;
  static Dataset* test_;
  static Model* model_;
};
Dataset* WalkModelTest::train_ = nullptr;
Dataset* WalkModelTest::test_ = nullptr;
Model* WalkModelTest::model_ = nullptr;

TEST_F(WalkModelTest, PrefixCacheGivesTheSameResultsAsFullForwardPasses) {
  WalkOptions o = options();
  o.global = true;
  const WalkResult cached = walk_clean_model(**model_, *test_, o);
  o.prefix_cache = false;
  const WalkResult full = walk_clean_model(**model_, *test_, o);
  o.prefix_cache = true;
  o.cache_bytes = 128 * 64 * 4;  // room for part of one batch's prefix: the rest recomputes
  const WalkResult partial = walk_clean_model(**model_, *test_, o);
  EXPECT_EQ(rows(cached), rows(full));
  EXPECT_EQ(rows(cached), rows(partial));
  EXPECT_GT(cached.clean_accuracy, 0.8);
  EXPECT_EQ(cached.evaluations, static_cast<int64_t>(cached.records.size()));
  // Noise hurts: every site crosses the midpoint on this grid, and the global curve (noise on
  // every walked site at once) crosses first.
  ASSERT_TRUE(cached.global.has_value());
  for (const auto& s : cached.sites) {
    EXPECT_TRUE(s.midpoint.crossed()) << s.name;
    EXPECT_LE(cached.global->midpoint.value, s.midpoint.value * 1.05) << s.name;
  }
}

TEST_F(WalkModelTest, EarlyStopAfterTwoPointsAtChance) {
  WalkOptions o = options();
  o.grid = SigmaGrid::parse("1e-1:1e6", 2);
  const WalkResult r = walk_clean_model(**model_, *test_, o);
  const double line = r.chance + r.margin;
  for (const auto& s : r.sites) {
    ASSERT_GE(s.sigma.size(), 2u);
    EXPECT_TRUE(s.early_stopped) << s.name;
    const size_t n = s.sigma.size();
    EXPECT_LT(n, o.grid.values.size()) << s.name;
    EXPECT_LE(s.accuracy[n - 1].mean, line);
    EXPECT_LE(s.accuracy[n - 2].mean, line);
    // No earlier pair of consecutive points was at chance (else it would have stopped there).
    for (size_t i = 0; i + 2 < n; ++i) {
      EXPECT_FALSE(s.accuracy[i].mean <= line && s.accuracy[i + 1].mean <= line) << s.name;
    }
    for (const auto& a : s.accuracy) EXPECT_EQ(a.n, 2);
  }
  o.early_stop = false;
  const WalkResult all = walk_clean_model(**model_, *test_, o);
  for (const auto& s : all.sites) EXPECT_EQ(s.sigma.size(), o.grid.values.size());
}

TEST_F(WalkModelTest, GridExtendsUntilEverySiteCrosses) {
  WalkOptions o = options();
  o.grid = SigmaGrid::parse("1e-2:1e-1", 2);  // far too small to hurt
  const WalkResult r = walk_clean_model(**model_, *test_, o);
  for (const auto& s : r.sites) {
    EXPECT_GT(s.extended, 0) << s.name;
    EXPECT_TRUE(s.midpoint.crossed()) << s.name;
    const size_t n = s.sigma.size();
    EXPECT_LE(s.accuracy[n - 1].mean, r.chance + r.margin) << s.name;
  }
  o.max_extend = 0;
  const WalkResult fixed = walk_clean_model(**model_, *test_, o);
  for (const auto& s : fixed.sites) {
    EXPECT_EQ(s.extended, 0);
    EXPECT_EQ(s.sigma.size(), 3u);
  }
}

TEST_F(WalkModelTest, InterruptedSweepResumesWithoutLostOrDuplicatedRows) {
  ScratchDir dir;
  const WalkOptions o = options();
  const WalkResult reference = walk_clean_model(**model_, *test_, o);
  const std::string path = dir.file("journal.jsonl");
  {
    WalkOptions killed = o;
    int64_t seen = 0;
    killed.progress = [&](const Progress& p) {
      seen = p.done;
      if (p.done >= 17) throw std::runtime_error("killed");
    };
    WalkJournal journal(path, o.fingerprint());
    EXPECT_THROW(walk_clean_model(**model_, *test_, killed, &journal), std::runtime_error);
    EXPECT_GE(seen, 17);
  }
  const size_t before = WalkJournal::read(path).second.size();
  ASSERT_GT(before, 0u);
  ASSERT_LT(before, reference.records.size());
  std::ofstream(path, std::ios::app) << "{\"site\":3,\"sig";  // and torn mid-line
  WalkJournal journal(path, o.fingerprint());
  const WalkResult resumed = walk_clean_model(**model_, *test_, o, &journal);
  EXPECT_EQ(rows(resumed), rows(reference));
  EXPECT_EQ(resumed.evaluations, static_cast<int64_t>(reference.records.size() - before));
  const auto stored = WalkJournal::read(path).second;
  EXPECT_EQ(stored.size(), reference.records.size());
  std::set<std::tuple<int, double, int>> keys;
  for (const auto& r : stored) keys.insert({r.site, r.sigma, r.repeat});
  EXPECT_EQ(keys.size(), stored.size());
  // A finished sweep reruns from the journal alone.
  WalkJournal again(path, o.fingerprint());
  EXPECT_EQ(walk_clean_model(**model_, *test_, o, &again).evaluations, 0);
}

TEST_F(WalkModelTest, ShardsMergeIntoTheUnshardedSweep) {
  ScratchDir dir;
  WalkOptions o = options();
  o.global = true;
  const WalkResult reference = walk_clean_model(**model_, *test_, o);
  std::vector<std::string> parts;
  int64_t evaluations = 0;
  for (int i = 0; i < 3; ++i) {
    WalkOptions shard = o;
    shard.shard_index = i;
    shard.shard_count = 3;
    parts.push_back(dir.file("shard" + std::to_string(i) + ".jsonl"));
    WalkJournal j(parts.back(), o.fingerprint());
    const WalkResult r = walk_clean_model(**model_, *test_, shard, &j);
    EXPECT_FALSE(r.complete());
    evaluations += r.evaluations;
  }
  EXPECT_EQ(evaluations, static_cast<int64_t>(reference.records.size()));  // no unit twice
  const std::string merged = dir.file("merged.jsonl");
  EXPECT_EQ(merge_journals(parts, merged), reference.records.size());
  WalkOptions summary = o;
  summary.evaluate = false;
  WalkJournal j(merged, o.fingerprint());
  const WalkResult r = walk_clean_model(**model_, *test_, summary, &j);
  EXPECT_TRUE(r.complete());
  EXPECT_EQ(r.evaluations, 0);
  EXPECT_EQ(rows(r), rows(reference));
  for (size_t s = 0; s < r.sites.size(); ++s) {
    EXPECT_EQ(r.sites[s].midpoint.value, reference.sites[s].midpoint.value);
  }
}

TEST_F(WalkModelTest, AdaptiveSearchFindsTheMidpointWithFewerEvaluations) {
  WalkOptions o = options();
  o.repeats = 3;
  o.grid = SigmaGrid::parse("1e-2:1e3", 8);
  const WalkResult grid = walk_clean_model(**model_, *test_, o);
  o.adaptive = true;
  o.tolerance = 0.05;
  const WalkResult adaptive = walk_clean_model(**model_, *test_, o);
  EXPECT_LT(adaptive.evaluations * 2, grid.evaluations);
  for (size_t s = 0; s < grid.sites.size(); ++s) {
    const auto& g = grid.sites[s].midpoint;
    const auto& a = adaptive.sites[s].midpoint;
    ASSERT_TRUE(g.crossed() && a.crossed()) << grid.sites[s].name;
    // Both estimate the crossing of the same mean curve from different noise draws on 300
    // test images: they agree within the search tolerance plus both intervals.
    const double slack = 0.05 * g.value + (g.hi - g.lo) + (a.hi - a.lo);
    EXPECT_NEAR(a.value, g.value, slack) << grid.sites[s].name;
    // The final bracket is within the tolerance.
    const auto& sig = adaptive.sites[s].sigma;
    double below = 0, above = INFINITY;
    for (size_t i = 0; i < sig.size(); ++i) {
      const double m = adaptive.sites[s].accuracy[i].mean;
      if (m >= adaptive.threshold) below = std::max(below, sig[i]);
    }
    for (size_t i = 0; i < sig.size(); ++i) {
      if (adaptive.sites[s].accuracy[i].mean < adaptive.threshold && sig[i] > below) {
        above = std::min(above, sig[i]);
      }
    }
    EXPECT_LE(above / below, 1.0 + o.tolerance + 1e-12) << grid.sites[s].name;
  }
}

TEST_F(WalkModelTest, NoisyTrainingRecordsAccuracyAndWeightStatistics) {
  ScratchDir dir;
  WalkOptions o;
  o.sites = {1};
  o.noise = WalkNoise::parse("add");
  o.grid = SigmaGrid::parse("0.01,1000");
  o.repeats = 1;
  o.max_extend = 0;
  NoisyTrainingOptions nt;
  nt.spec = ModelSpec::for_dataset("mlp", *train_);
  nt.train.epochs = 1;
  nt.train.batch_size = 64;
  nt.train.lr = 3e-3;
  nt.save_dir = dir.str();
  const Dataset small_train = blob_dataset(600, 1, 28, 28, 10, 23);
  WalkJournal j(dir.file("journal.jsonl"), o.fingerprint());
  const auto names = make_model(nt.spec)->site_names();
  const WalkResult r = walk_noisy_training(small_train, *test_, nt, o, names, &j);
  EXPECT_TRUE(r.complete());
  ASSERT_EQ(r.records.size(), 3u);  // clean reference + 2 sigmas
  EXPECT_EQ(r.records[0].site, WalkRecord::kCleanSite);
  EXPECT_GT(r.clean_accuracy, 0.5);
  const auto& s = r.sites.at(0);
  ASSERT_EQ(s.sigma.size(), 2u);
  EXPECT_GT(s.accuracy[0].mean, 0.5);          // sigma 0.01: trains fine
  EXPECT_LT(s.accuracy[1].mean, 0.1 + r.margin);  // sigma 1000 at conv output: chance
  EXPECT_TRUE(s.midpoint.crossed());
  for (const auto& rec : r.records) {
    ASSERT_TRUE(rec.extra.contains("all")) << rec.to_json().dump();
    EXPECT_GT(rec.extra.at("all").at("rms").get<double>(), 0.0);
    EXPECT_EQ(rec.extra.at("weights").size(), 4u);  // mlp: 4 linear layers
  }
  int saved = 0;
  for (const auto& e : fs::directory_iterator(dir.str())) saved += e.path().extension() == ".pt";
  EXPECT_EQ(saved, 3);
  // Rerun: all from the journal.
  WalkJournal again(dir.file("journal.jsonl"), o.fingerprint());
  EXPECT_EQ(walk_noisy_training(small_train, *test_, nt, o, names, &again).evaluations, 0);
}

TEST_F(WalkModelTest, BadOptionsAreErrors) {
  WalkOptions o = options();
  o.sites = {99};
  EXPECT_THROW(walk_clean_model(**model_, *test_, o), std::invalid_argument);
  o = options();
  o.repeats = 0;
  EXPECT_THROW(walk_clean_model(**model_, *test_, o), std::invalid_argument);
  o = options();
  o.shard_index = 3;
  o.shard_count = 3;
  EXPECT_THROW(walk_clean_model(**model_, *test_, o), std::invalid_argument);
  o = options();
  o.adaptive = true;
  o.tolerance = 0;
  EXPECT_THROW(walk_clean_model(**model_, *test_, o), std::invalid_argument);
}

}  // namespace
}  // namespace quell
