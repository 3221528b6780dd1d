// The library's study entry points (quell/*_study.h, quell/load.h, quell/report.h): each study
// runs from C++ without the CLI, its report reads back from the files it wrote (to_json ->
// from_json -> to_json is the identity), a walk resumes from its journal, options are validated
// with messages that name the field, and loading follows the checkpoint.
#include <gtest/gtest.h>

#include <set>

#include <fstream>

#include "quell/denoise_study.h"
#include "quell/dist.h"
#include "quell/eval_study.h"
#include "quell/inspect.h"
#include "quell/journal.h"
#include "quell/load.h"
#include "quell/plan_study.h"
#include "quell/train_study.h"
#include "quell/walk_study.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::blob_dataset;
using quell::testing::error_of;
using quell::testing::lines_of;
using quell::testing::read_file;
using quell::testing::ScratchDir;

// One small trained model shared by the tests of this file (trained once: ~1 s).
struct Trained {
  Dataset train = blob_dataset(800, 1, 28, 28, 10, 11);
  Dataset test = blob_dataset(300, 1, 28, 28, 10, 12);
  Model model{nullptr};
  TrainReport report;
  Trained() {
    torch::manual_seed(3);
    model = make_model(ModelSpec::for_dataset("mlp", train));
    TrainStudyOptions o;
    o.train.epochs = 2;
    o.data.name = "blobs";
    report = run_train_study(model, train, &test, o);
  }
};

Trained& trained() {
  static Trained t;
  return t;
}

NoiseConfig noise_of(const std::string& rule, const ModelImpl& m) {
  return build_noise_config({rule}, {}, {}, "", 1, m.site_names());
}

TEST(TrainStudy, RecordsTheCheckpointAndTestsClean) {
  const TrainReport& r = trained().report;
  ASSERT_TRUE(r.tested);
  EXPECT_GT(r.test_accuracy, 0.5);  // blobs are learnt in two epochs (chance 0.1)
  EXPECT_EQ(r.test_samples, 300);
  EXPECT_EQ(r.meta.spec.name, "mlp");
  EXPECT_EQ(r.meta.metrics.at("epochs").size(), 2u);
  EXPECT_EQ(r.meta.provenance.at("device"), "cpu");
  EXPECT_EQ(r.metrics_json().at("test_accuracy"), r.test_accuracy);
}

TEST(EvalStudy, LevelsAndRoundTrip) {
  Trained& t = trained();
  EvalStudyOptions o;
  o.noise = noise_of("all=add:0.5:rel=std", *t.model);
  o.levels = {0.0, 1.0};
  o.eval.draws = 3;
  const EvalReport r = run_eval_study(t.model, t.test, o);
  ASSERT_EQ(r.levels.size(), 2u);
  // Level 0 scales every sigma to 0: the clean accuracy, in every draw.
  EXPECT_DOUBLE_EQ(r.levels[0].result.accuracy.mean, r.clean_accuracy);
  EXPECT_LT(r.levels[1].result.accuracy.mean, r.clean_accuracy);
  EXPECT_EQ(r.levels[1].result.draws.size(), 3u);
  const Json j = r.to_json();
  EXPECT_EQ(EvalReport::from_json(j).to_json(), j);
  // Level 0 has no noise left: one exact pass; level 1 has its three draws.
  EXPECT_TRUE(r.levels[0].result.deterministic);
  EXPECT_EQ(lines_of(r.csv()).size(), 1u + 1u + 3u);
  EXPECT_NE(error_of([&] {
              EvalStudyOptions bad = o;
              bad.levels = {-1};
              run_eval_study(t.model, t.test, bad);
            }).find("negative"),
            std::string::npos);
}

TEST(WalkStudy, ResumesFromItsJournalAndReadsBack) {
  Trained& t = trained();
  ScratchDir dir;
  WalkStudyOptions o;
  o.out = (std::filesystem::path(dir.str()) / "walk").string();
  o.figures = {false, false};
  o.sites = "1,2";
  o.walk.grid = SigmaGrid::parse("0.1:10", 2);
  o.walk.noise = WalkNoise::parse("add");
  o.walk.repeats = 2;
  o.data.name = "blobs";
  const WalkReport first = run_walk_study(t.model, t.test, o);
  ASSERT_EQ(first.result.sites.size(), 2u);
  EXPECT_GT(first.result.evaluations, 0);
  const std::string csv = read_file(std::filesystem::path(dir.str()) / "walk" / "walk.csv");
  EXPECT_EQ(csv, first.csv());
  // A second run finds every evaluation in the journal: nothing is evaluated, same rows.
  const WalkReport again = run_walk_study(t.model, t.test, o);
  EXPECT_EQ(again.result.evaluations, 0);
  EXPECT_EQ(again.csv(), csv);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(again.result.sites[i].midpoint.to_json(), first.result.sites[i].midpoint.to_json());
  }
  // walk.json through its type: the curves and midpoints come back.
  const WalkReport read = WalkReport::read((std::filesystem::path(dir.str()) / "walk" / "walk.json").string());
  ASSERT_EQ(read.result.sites.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(read.result.sites[i].name, first.result.sites[i].name);
    EXPECT_EQ(read.result.sites[i].sigma, first.result.sites[i].sigma);
    EXPECT_EQ(read.result.sites[i].midpoint.to_json(), first.result.sites[i].midpoint.to_json());
  }
  EXPECT_EQ(read.grid.values, first.grid.values);
  const auto sens =
      walk_sensitivity((std::filesystem::path(dir.str()) / "walk" / "walk.json").string(), t.model->site_names());
  EXPECT_EQ(sens.size(), 2u);
  // Other weights: the journal belongs to another model and the study refuses it.
  Model other = clone_model(*t.model);
  {
    torch::NoGradGuard no_grad;
    other->parameters()[0].add_(0.01);
  }
  EXPECT_NE(model_state_digest(*other), model_state_digest(*t.model));
  EXPECT_THROW(run_walk_study(other, t.test, o), std::runtime_error);
  WalkStudyOptions no_out = o;
  no_out.out.clear();
  EXPECT_NE(error_of([&] { run_walk_study(t.model, t.test, no_out); }).find("output directory"),
            std::string::npos);
}

TEST(DenoiseAndPlanStudies, RunFromTheLibraryAndReadBack) {
  Trained& t = trained();
  ScratchDir dir;
  DenoiseStudyOptions d;
  d.noise = noise_of("all=add:0.5:rel=std", *t.model);
  d.sites = "1,3";
  d.ratios = {4};
  d.budgets = {60};
  d.val_size = 100;
  d.search_limit = 200;
  d.taylor_samples = 200;
  d.train.epochs = 1;
  d.eval.draws = 3;
  d.eval.chips = 1;
  d.robust_draws = 2;
  d.robustness_levels = {0.0, 1.0};
  d.out = (std::filesystem::path(dir.str()) / "denoise").string();
  d.figures = {false, false};
  d.source = "in-memory mlp";
  const DenoiseReport r = run_denoise_study(t.model, t.train, t.test, d);
  ASSERT_GE(r.comparison.size(), 3u);  // unmitigated, chosen/taylor, all sites, fine-tune
  EXPECT_EQ(r.comparison.front().model, "unmitigated");
  EXPECT_TRUE(r.comparison.back().is_finetune());
  EXPECT_EQ(r.rankings.count("taylor"), 1u);
  EXPECT_EQ(r.context.device, "cpu");
  // What was written is what the report says, and report.json reads back to the same document.
  const auto dir_d = std::filesystem::path(dir.str()) / "denoise";
  EXPECT_EQ(read_file(dir_d / "report.csv"), r.report_csv());
  EXPECT_EQ(read_file(dir_d / "points.csv"), r.points_csv());
  EXPECT_EQ(read_file(dir_d / "rankings.csv"), r.rankings_csv());
  const DenoiseReport back = DenoiseReport::read((dir_d / "report.json").string());
  EXPECT_EQ(back.to_json(), r.to_json());
  EXPECT_EQ(back.table(), r.table());
  // The backbone is left as it was: no blocks.
  EXPECT_FALSE(t.model->has_denoisers());
  // A curve's point at the configured noise (level 1) is taken from the row's own evaluation
  // (its first robust_draws draws of 3): the passes a robustness evaluation runs, same values.
  EvalOptions ro = d.eval;
  ro.draws = d.robust_draws;
  ro.chips = d.robust_draws;
  const Summary direct = evaluate(*t.model, t.test, d.noise, ro).headline();
  ASSERT_FALSE(r.robustness.empty());
  EXPECT_EQ(r.robustness[0].label, "unmitigated");
  ASSERT_EQ(r.robustness[0].points.size(), 2u);
  EXPECT_EQ(r.robustness[0].points[1].sigma, 1.0);
  EXPECT_EQ(r.robustness[0].points[1].mean, direct.mean);
  EXPECT_EQ(r.robustness[0].points[1].lo, direct.ci_low);
  EXPECT_EQ(r.robustness[0].points[1].hi, direct.ci_high);
  EXPECT_NE(r.comparison.front().noisy.headline().mean, direct.mean) << "3 draws against 2";

  // The planner reads that report through its type and costs its mitigations.
  PlanStudyOptions p;
  p.noise = d.noise;
  p.sites = "1-3";
  p.mean_repeats = {2};
  p.search = "none";
  p.val_size = 100;
  p.eval.draws = 2;
  p.hardware = load_hardware_config("isaac");
  p.denoise_report = (dir_d / "report.json").string();
  p.out = (std::filesystem::path(dir.str()) / "plan").string();
  p.figures = {false, false};
  const PlanReport plan = run_plan_study(t.model, t.train, t.test, p);
  EXPECT_EQ(plan.others.size(), r.comparison.size() - 1);
  EXPECT_EQ(plan.allocations.front().method, "unmitigated");
  EXPECT_EQ(plan.allocations.size(), 1u + p.schemes.size());
  const Json pj = plan.to_json();
  EXPECT_EQ(PlanReport::from_json(pj).to_json(), pj);
  EXPECT_EQ(read_file(std::filesystem::path(dir.str()) / "plan" / "allocations.csv"), plan.allocations_csv());

  // Bad options name the field and the value.
  DenoiseStudyOptions bad = d;
  bad.budgets = {-1};
  EXPECT_NE(error_of([&] { bad.validate(); }).find("budgets"), std::string::npos);
  PlanStudyOptions bad_plan = p;
  bad_plan.target = 2;
  EXPECT_NE(error_of([&] { bad_plan.validate(); }).find("target"), std::string::npos);
  PlanStudyOptions other_noise = p;
  other_noise.noise = noise_of("all=add:0.25:rel=std", *t.model);
  other_noise.out.clear();
  EXPECT_NE(error_of([&] { run_plan_study(t.model, t.train, t.test, other_noise); })
                .find("noise differs"),
            std::string::npos);
}

// Small options of a denoise study on the shared mlp.
DenoiseStudyOptions small_denoise(const ModelImpl& m) {
  DenoiseStudyOptions d;
  // Static and dynamic: the per-chip calibration and every bound run (and resume).
  d.noise = noise_of("all=add:0.4:static:rel=std+add:0.3:rel=std", m);
  d.calibration.samples = 200;
  d.calibration.epochs = 2;
  d.sites = "1,3,5";
  d.ratios = {4};
  d.budgets = {60};
  d.val_size = 100;
  d.search_limit = 200;
  d.taylor_samples = 200;
  d.train.epochs = 1;
  d.eval.draws = 2;
  d.eval.chips = 1;
  d.robustness_levels = {0.5, 1.0};
  d.figures = {false, false};
  return d;
}

// A monitor whose progress callbacks count, and throw at call `stop_at` (0: never): a study
// stopped there as if killed.
StudyMonitor stopping_monitor(int* calls, int stop_at) {
  StudyMonitor m;
  m.progress = [calls, stop_at](const std::string&) -> ProgressFn {
    return [calls, stop_at](const Progress&) {
      if (++*calls == stop_at) throw std::runtime_error("stopped");
    };
  };
  return m;
}

// The report without what differs between two identical runs: provenance and wall times.
Json without_provenance(Json j) {
  j.erase("provenance");
  for (auto& row : j["comparison"]) {
    if (row.contains("calibration")) row["calibration"].erase("seconds_per_chip");
  }
  return j;
}

TEST(DenoiseStudy, ResumesAfterAStopWithTheResultsOfAnUninterruptedRun) {
  Trained& t = trained();
  ScratchDir dir;
  DenoiseStudyOptions d = small_denoise(*t.model);
  d.out = (std::filesystem::path(dir.str()) / "full").string();
  int total = 0;
  d.monitor = stopping_monitor(&total, 0);
  const DenoiseReport full = run_denoise_study(t.model, t.train, t.test, d);
  ASSERT_GT(total, 6);
  // The wall time of each phase (provenance.seconds), within the total, read back.
  double phases = 0.0;
  for (const char* phase : {"rankings", "search", "final", "total"}) {
    EXPECT_EQ(full.seconds.count(phase), 1u) << phase;
  }
  for (const auto& [phase, seconds] : full.seconds) {
    EXPECT_GE(seconds, 0.0) << phase;
    if (phase != "total") phases += seconds;
  }
  EXPECT_LE(phases, full.seconds.at("total") + 1e-9);
  EXPECT_EQ(DenoiseReport::from_json(full.to_json()).seconds, full.seconds);
  for (const int stop : {total / 3, 2 * total / 3}) {
    d.out = (std::filesystem::path(dir.str()) / ("cut" + std::to_string(stop))).string();
    int calls = 0;
    d.monitor = stopping_monitor(&calls, stop);
    EXPECT_THROW(run_denoise_study(t.model, t.train, t.test, d), std::runtime_error);
    EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(d.out) / "journal.jsonl"));
    std::vector<std::string> notes;
    d.monitor = {};
    d.monitor.note = [&](const std::string& line) { notes.push_back(line); };
    const DenoiseReport resumed = run_denoise_study(t.model, t.train, t.test, d);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("resuming"), std::string::npos);
    EXPECT_EQ(without_provenance(resumed.to_json()), without_provenance(full.to_json()))
        << "stopped at progress call " << stop << " of " << total;
    EXPECT_EQ(resumed.report_csv(), full.report_csv());
    EXPECT_EQ(resumed.points_csv(), full.points_csv());
  }
  // The per-chip rows and the bounds are there, and read back.
  bool calibrated = false;
  for (const auto& r : full.comparison) calibrated |= r.is_calibrated();
  EXPECT_TRUE(calibrated) << full.table();
  std::set<std::string> bound_names;
  for (const auto& b : full.bounds) bound_names.insert(b.name);
  EXPECT_EQ(bound_names.count("static only"), 1u);
  EXPECT_EQ(bound_names.count("dynamic only"), 1u);
  EXPECT_EQ(bound_names.count("oracle <=60%"), 1u);
  EXPECT_EQ(DenoiseReport::from_json(full.to_json()).to_json(), full.to_json());
  EXPECT_NE(full.report_csv().find("bound: dynamic only"), std::string::npos);
  // Other options: the journal belongs to another study; restart discards it.
  DenoiseStudyOptions other = d;
  other.monitor = {};
  other.budgets = {30};
  EXPECT_NE(error_of([&] { run_denoise_study(t.model, t.train, t.test, other); })
                .find("different denoise study"),
            std::string::npos);
  other.restart = true;
  EXPECT_NO_THROW(run_denoise_study(t.model, t.train, t.test, other));
}

TEST(PlanStudy, ResumesAfterAStopWithTheResultsOfAnUninterruptedRun) {
  Trained& t = trained();
  ScratchDir dir;
  PlanStudyOptions p;
  p.noise = noise_of("all=add:1.0:rel=std", *t.model);
  p.mean_repeats = {2, 3};
  p.val_size = 100;
  p.eval.draws = 2;
  p.search_width = 2;
  p.hardware = load_hardware_config("isaac");
  p.figures = {false, false};
  p.out = (std::filesystem::path(dir.str()) / "full").string();
  int total = 0;
  p.monitor = stopping_monitor(&total, 0);
  const PlanReport full = run_plan_study(t.model, t.train, t.test, p);
  ASSERT_GT(total, 4);
  p.out = (std::filesystem::path(dir.str()) / "cut").string();
  int calls = 0;
  p.monitor = stopping_monitor(&calls, total / 2);
  EXPECT_THROW(run_plan_study(t.model, t.train, t.test, p), std::runtime_error);
  p.monitor = {};
  const PlanReport resumed = run_plan_study(t.model, t.train, t.test, p);
  EXPECT_EQ(without_provenance(resumed.to_json()), without_provenance(full.to_json()));
  EXPECT_EQ(resumed.points_csv(), full.points_csv());
}

TEST(StudyJournal, KeepsRecordsDropsATornLineAndRefusesOtherStudies) {
  ScratchDir dir;
  const std::string path = dir.file("j.jsonl");
  {
    StudyJournal j(path, "denoise", Json{{"a", 1}});
    j.append("x", Json{{"v", 0.1}});
    j.append("y", 2);
    j.append("x", 3);  // the first value stays
    EXPECT_EQ(j.find("x")->at("v"), 0.1);
  }
  {
    std::ofstream(path, std::ios::app) << "{\"key\": \"z\", \"val";  // killed mid-write
  }
  StudyJournal j(path, "denoise", Json{{"a", 1}});
  EXPECT_EQ(j.resumed(), 2u);
  EXPECT_EQ(j.find("z"), nullptr);
  EXPECT_EQ(*j.find("y"), 2);
  EXPECT_EQ(lines_of(read_file(path)).size(), 3u);  // the torn line is gone
  EXPECT_NE(error_of([&] { StudyJournal(path, "denoise", Json{{"a", 2}}); }).find("a: 1 vs 2"),
            std::string::npos);
  EXPECT_NE(error_of([&] { StudyJournal(path, "plan", Json{{"a", 1}}); }).find("not a quell plan"),
            std::string::npos);
}

TEST(InspectReport, TableCsvAndJson) {
  Trained& t = trained();
  const InspectReport r = inspect_model(*t.model, "x.pt", "blobs", Json::object(), "cpu");
  EXPECT_EQ(r.layers.size(), weight_stats(*t.model).size());
  EXPECT_EQ(lines_of(r.csv()).size(), r.layers.size() + 2);
  EXPECT_EQ(r.to_json().at("provenance").at("device"), "cpu");
  EXPECT_NE(r.table().find("trained on blobs"), std::string::npos);
}

TEST(Load, DataSelectionFollowsTheCheckpoint) {
  CheckpointMeta meta;
  meta.dataset = "mnist";
  DataSelection sel;
  EXPECT_EQ(sel.resolve(meta, Split::kTest).name, "mnist");
  EXPECT_EQ(sel.resolve(meta, Split::kTest).split, Split::kTest);
  sel.options.name = "fashion-mnist";
  sel.dataset_set = true;
  EXPECT_EQ(sel.resolve(meta, Split::kTrain).name, "fashion-mnist");
  // Image folders take the checkpoint's preprocessing unless chosen.
  DataOptions recorded;
  recorded.name = "images";
  recorded.channels = 1;
  recorded.height = 20;
  recorded.width = 24;
  recorded.mean = {0.5};
  recorded.stddev = {0.25};
  meta.dataset = "images";
  meta.data = recorded.preprocessing_json();
  DataSelection images;
  images.options.name = "images";
  images.options.height = images.options.width = 32;
  const DataOptions o = images.resolve(meta, Split::kTest);
  EXPECT_EQ(o.height, 20);
  EXPECT_EQ(o.width, 24);
  EXPECT_EQ(o.channels, 1);
  EXPECT_EQ(o.mean, std::vector<double>{0.5});
  images.size_set = true;
  EXPECT_EQ(images.resolve(meta, Split::kTest).height, 32);
}

TEST(Load, ModelFilesAndGeometry) {
  ScratchDir dir;
  const std::string missing = (std::filesystem::path(dir.str()) / "missing.pt").string();
  EXPECT_NE(error_of([&] { load_model(missing); }).find(missing), std::string::npos);
  const std::string path = (std::filesystem::path(dir.str()) / "m.pt").string();
  CheckpointMeta meta;
  meta.spec = trained().model->spec();
  save_checkpoint(path, *trained().model, meta);
  EXPECT_EQ(load_model(path)->spec().name, "mlp");
  LoadOptions expect;
  expect.expected_model = "lenet5";
  EXPECT_THROW(load_model(path, nullptr, expect), std::invalid_argument);
  EXPECT_EQ(file_digest(path), file_digest(path));
  EXPECT_EQ(file_digest(path).size(), 16u);
  const ModelSpec cifar = spec_for_geometry("vgg-s", "cifar100");
  EXPECT_EQ(cifar.in_channels, 3);
  EXPECT_EQ(cifar.num_classes, 100);
  EXPECT_THROW(spec_for_geometry("mlp", "images"), std::invalid_argument);
  EXPECT_THROW(check_model_fits(cifar, trained().test, "x"), std::invalid_argument);
}

TEST(Report, RunContextAndSummaries) {
  const RunContext c = RunContext::capture("cuda:1");
  EXPECT_EQ(c.device, "cuda:1");
  EXPECT_FALSE(c.quell_version.empty());
  EXPECT_EQ(RunContext::from_json(c.to_json()).to_json(), c.to_json());
  Summary s = summarize({0.5, 0.6, 0.7});
  const Summary back = summary_from_json(summary_to_json(s, true));
  EXPECT_EQ(back.mean, s.mean);
  EXPECT_EQ(back.ci_low, s.ci_low);
  EXPECT_EQ(back.max, s.max);
  EXPECT_TRUE(std::isinf(number_from_json(number_or_string(INFINITY))));
  EXPECT_EQ(number_from_json(number_or_string(2.5)), 2.5);
}

TEST(Dist, ShareRowsComputesEachRowOnceInOneProcess) {
  int calls = 0;
  const auto rows = dist::share_rows(4, 3, [&](int64_t i) {
    ++calls;
    return std::vector<double>{static_cast<double>(i), 2.0 * i};
  });
  EXPECT_EQ(calls, 4);
  ASSERT_EQ(rows.size(), 4u);
  EXPECT_EQ(rows[3], (std::vector<double>{3.0, 6.0, 0.0}));  // narrower rows are zero-filled
}

}  // namespace
}  // namespace quell
