// quell eval: accuracy under a noise configuration, over noise draws and chip instances.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "common.h"
#include "quell/checkpoint.h"
#include "quell/eval_study.h"

namespace quell::cli {
namespace {

struct EvalArgs {
  std::string checkpoint;
  std::string model;
  std::string split = "test";
  std::vector<double> levels;
  std::string times;
  std::string metric;
  std::string json_out, csv_out;
  EvalOptions opts;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

// The configuration as the user gave it, for the table's title; sigmas scale with the level.
std::string describe(const NoiseArgs& n, const NoiseConfig& resolved) {
  if (resolved.empty()) return "none";
  std::string s;
  for (const auto& r : n.noise) s += (s.empty() ? "" : " ") + r;
  for (const auto& r : n.adc) s += (s.empty() ? "adc " : " adc ") + r;
  for (const auto& r : n.repeat) s += (s.empty() ? "repeat " : " repeat ") + r;
  if (!n.weight_noise.empty()) s += (s.empty() ? "weights " : " weights ") + n.weight_noise;
  if (!n.config_file.empty()) s += (s.empty() ? "" : " + ") + n.config_file;
  const DeviceConfig& d = resolved.device;
  if (d.enabled()) {
    s += (s.empty() ? "device " : " device ") + d.model.name;
    if (!d.tile.ideal()) s += " tile " + d.tile.str();
  }
  return s + " (sigma x level)";
}

void run(EvalArgs& a) {
  a.runtime.apply();
  for (const auto& p : {a.json_out, a.csv_out}) check_writable(p);
  if (a.json_out == "-" && a.csv_out == "-") {
    throw std::invalid_argument("--json and --csv cannot both write to stdout ('-')");
  }
  CheckpointMeta meta;
  Model model = load_checked(a.checkpoint, a.model, &meta, &a.data);
  // Evaluate on the training dataset of the checkpoint unless told otherwise.
  a.data.use_checkpoint_dataset(meta);
  EvalStudyOptions o;
  o.data = a.data.options(a.split == "train" ? Split::kTrain : Split::kTest);
  if (o.data.name != meta.dataset && !meta.dataset.empty()) {
    std::cerr << "note: checkpoint was trained on " << meta.dataset << ", evaluating on "
              << o.data.name << "\n";
  }
  const Dataset data = load_dataset(o.data);
  o.noise = a.noise.build(model->site_names());
  if (!a.levels.empty()) o.levels = a.levels;
  if (!a.times.empty()) o.times = parse_durations(a.times);
  o.both_compensations = a.noise.compensation == "both";
  o.eval = a.opts;
  o.metric = a.metric;
  o.split = a.split;
  o.source = a.checkpoint;
  o.noise_description = describe(a.noise, o.noise);
  o.device = a.runtime.torch_device();
  o.monitor = cli_monitor();
  const EvalReport report = run_eval_study(model, data, o);
  // The table is for people: on stderr when stdout carries JSON or CSV.
  (a.json_out == "-" || a.csv_out == "-" ? std::cerr : std::cout) << report.table() << std::flush;
  if (!a.json_out.empty()) emit(a.json_out, report.to_json().dump(2) + "\n");
  if (!a.csv_out.empty()) emit(a.csv_out, report.csv());
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto a = std::make_shared<EvalArgs>();
  CLI::App* cmd = app.add_subcommand(
      "eval", "Accuracy under noise: mean, std and 95% CI over noise draws and chip instances");
  cmd->add_option("--checkpoint,-c", a->checkpoint, "Checkpoint to evaluate, or a TorchScript file (imported and calibrated on the training split)")->required();
  cmd->add_option("--model", a->model, "Expected model name (checked against the checkpoint)");
  cmd->add_option("--split", a->split, "train or test")
      ->check(CLI::IsMember({"train", "test"}))
      ->capture_default_str();
  add_metric_option(*cmd, a->metric);
  cmd->add_option("--draws", a->opts.draws,
                  "Dynamic-noise draws per chip (ignored without dynamic noise)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--chips", a->opts.chips,
                  "Chip instances (static/aging/weight noise; ignored without them)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--batch-size", a->opts.batch_size, "Evaluation batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--levels", a->levels,
                  "Noise levels: evaluate the configuration with every sigma multiplied by each "
                  "level (comma-separated; default 1)")
      ->delimiter(',');
  cmd->add_option("--json", a->json_out, "Write results as JSON ('-' = stdout)");
  cmd->add_option("--csv", a->csv_out, "Write per-draw results as CSV ('-' = stdout)");
  cmd->add_option("--times", a->times,
                  "Device: evaluate at each time since programming, e.g. 1s,1h,1d,1mo,1y,10y "
                  "(with --device-model; default: --time)")
      ->type_name("LIST");
  a->data.add_for_checkpoint(*cmd);
  a->noise.compensation_both_allowed = true;
  a->noise.add(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
