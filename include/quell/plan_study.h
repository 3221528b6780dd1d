// The multi-execution study as one library call: repetitions per site under repetition or
// energy budgets or an accuracy target, each allocation evaluated under noise and costed, beside
// the mitigations of a denoise report (docs/plan.md). `quell plan` is a thin shell over it.
#pragma once

#include <string>
#include <vector>

#include "quell/cost.h"
#include "quell/denoise_study.h"
#include "quell/plan.h"
#include "quell/plot.h"
#include "quell/progress.h"
#include "quell/report.h"

namespace quell {

struct PlanStudyOptions {
  /// What the searches maximise and the reports show: accuracy, topK or token-accuracy
  /// (quell/metric.h); empty = accuracy, or token-accuracy for ids per position.
  std::string metric;
  NoiseConfig noise;          ///< the noise to plan against (required; no repeat counts in it)
  std::string sites = "all";  ///< sites that may be repeated; only those with dynamic noise are
  std::string walk_json;      ///< robustness from walk midpoints; empty: measured drops
  std::vector<std::string> schemes = {"uniform", "inverse_lin", "inverse_sqrt",
                                      "inverse_square"};
  /// Repetition budgets: mean k over the planned sites. With no budget and no target: {2, 4}.
  std::vector<double> mean_repeats;
  std::vector<double> energy_budgets;  ///< energy overhead budgets, % of the base inference
  double target = 0.0;                 ///< accuracy target (0 = none)
  double max_mean = 16.0;              ///< largest mean k for targets and energy fits
  std::string search = "greedy";       ///< greedy | none
  int search_width = 4;
  int search_draws = 2;
  int64_t val_size = 5000;  ///< validation images from the end of the training set
  double min_gain = 0.0;
  HardwareConfig hardware;  ///< the cost model (e.g. load_hardware_config("isaac"))
  /// A quell denoise report for the same model and noise: its mitigations join the comparison.
  std::string denoise_report;
  EvalOptions eval;  ///< test evaluation: draws, chips, batch size

  std::string out;  ///< output directory (plan.json, allocations.csv, points.csv, figure); empty:
                    ///< nothing is written
  /// With `out`: every finished evaluation goes to out/journal.jsonl, so a study killed at any
  /// moment resumes there with the results of an uninterrupted run; restart discards the
  /// journal first. Under MPI rank 0 writes it and every rank reads it.
  bool restart = false;
  PlotFormats figures{true, true};
  std::string source;  ///< the model's file, recorded in plan.json
  torch::Device device = torch::kCPU;
  StudyMonitor monitor;

  /// Throws std::invalid_argument naming the field and value of the first bad option.
  void validate() const;
};

/// One reported allocation, evaluated on the test set.
struct PlanAllocation {
  std::string method;  ///< "unmitigated", "uniform", "inverse_lin", ..., "optimised"
  std::string budget;  ///< "k=2", "energy<=50%", "target 0.85"
  std::vector<int> repeats;
  std::string label;   ///< allocation_label
  double total_repeats = 0.0;
  double energy_pj = 0.0;
  double energy_overhead_pct = 0.0;
  double latency_overhead_pct = 0.0;
  Summary validation;
  EvalResult test;
  bool pareto = false;
};

/// A mitigation from a denoise report, costed with the same hardware model.
struct PlanOtherMitigation {
  std::string method, placement;
  double param_overhead_pct = 0.0;
  double energy_overhead_pct = 0.0, latency_overhead_pct = 0.0, area_overhead_pct = 0.0;
  Summary test;
  bool pareto = false;
  bool is_finetune() const { return placement == "whole network"; }
};

struct PlannedSite {
  int site = 0;
  std::string name;
  double sensitivity = 0.0;
  double robustness = 0.0;
  double energy_per_execution_pj = 0.0;
};

/// What run_plan_study found; writes and reads plan.json and the CSV files.
struct PlanReport {
  /// What the values are (accuracy unless named otherwise); JSON, CSV and table use its name.
  Metric metric;
  RunContext context;
  std::string checkpoint;
  ModelSpec model;
  std::string dataset;
  Json noise;
  double clean_accuracy = 0.0;
  std::string sensitivity_source;
  std::vector<PlannedSite> planned_sites;
  std::vector<std::string> not_planned;  ///< static noise only
  Json base_cost;                         ///< CostReport::to_json of the base inference
  double base_energy_pj = 0.0;
  std::string hardware;                   ///< the cost model's name
  std::vector<PlanAllocation> allocations;  ///< first: unmitigated
  std::vector<PlanOtherMitigation> others;
  std::string denoise_report;             ///< where `others` came from
  int eval_draws = 0, eval_chips = 0;
  std::string search_method;
  int search_width = 0, search_draws = 0;
  int64_t validation_size = 0;
  int evaluations = 0;
  std::vector<AllocationScore> points;  ///< every allocation the searches evaluated
  std::vector<std::string> site_names;
  std::vector<std::string> written;

  Json to_json() const;  ///< the plan.json document
  static PlanReport from_json(const Json& j);
  static PlanReport read(const std::string& path);
  std::string allocations_csv() const;
  std::string points_csv() const;
  /// The table `quell plan` prints.
  std::string table() const;
  DenoisePlotData plot_data() const;
};

/// The checks run_plan_study makes before any work, against `model`: the options, noise without
/// repeat counts and valid for its calibration, a denoise report for the same noise and sites,
/// planned sites with dynamic noise. A front end calls it before loading data. Throws
/// std::invalid_argument naming the field and value.
void check_plan_study(ModelImpl& model, const PlanStudyOptions& opts);

/// Runs the study on `model` with validation data from the end of `train` and test data `test`.
/// Throws std::invalid_argument for bad options, noise without a dynamic component at the
/// planned sites, or a denoise report for other noise. Under MPI every rank runs it (the
/// evaluations are shared); rank 0 writes.
PlanReport run_plan_study(Model model, const Dataset& train, const Dataset& test,
                          const PlanStudyOptions& opts);

}  // namespace quell
