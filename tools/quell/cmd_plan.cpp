// quell plan: multi-execution planning. Allocates repeated noisy executions over the sites of a
// checkpoint under a repetition or energy budget (or for an accuracy target), evaluates every
// allocation under noise, costs it with the hardware model, and puts it beside the other
// mitigations (docs/plan.md). The study is quell::run_plan_study; this file maps flags to its
// options and prints.
#include <cmath>
#include <filesystem>
#include <iostream>

#include "common.h"
#include "quell/dist.h"
#include "quell/plan_study.h"

namespace quell::cli {
namespace {

namespace fs = std::filesystem;

struct PlanArgs {
  std::string checkpoint;
  std::string hardware = "isaac";
  std::vector<std::string> set;
  std::string figures = "png,svg";
  PlanStudyOptions study;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

void run(PlanArgs& a) {
  PlanStudyOptions& o = a.study;
  // Flag-level checks first, so the messages name the flags.
  for (double k : o.mean_repeats) {
    if (!(k >= 1.0) || !std::isfinite(k)) {
      throw std::invalid_argument("--mean-repeats must be >= 1, got " + fmt_double(k));
    }
  }
  for (double e : o.energy_budgets) {
    if (!(e >= 0.0) || !std::isfinite(e)) {
      throw std::invalid_argument("--energy-budget must be >= 0 (%), got " + fmt_double(e));
    }
  }
  if (std::isnan(o.target) || o.target < 0 || o.target > 1) {
    throw std::invalid_argument("--target must be an accuracy in [0, 1]");
  }
  for (const auto& s : o.schemes) scheme_weights(s, {1.0});  // unknown names fail here
  o.figures = parse_figure_formats(a.figures);
  if (!o.walk_json.empty() && !fs::exists(o.walk_json)) {
    throw std::invalid_argument("--walk " + o.walk_json + ": no such file");
  }
  if (!o.denoise_report.empty() && !fs::exists(o.denoise_report)) {
    throw std::invalid_argument("--denoise-report " + o.denoise_report + ": no such file");
  }
  o.hardware = load_hardware_config(a.hardware);
  for (const auto& s : a.set) o.hardware.set(s);
  o.hardware.validate();

  CheckpointMeta meta;
  Model model = load_checked(a.checkpoint, "", &meta, &a.data);
  a.data.use_checkpoint_dataset(meta);
  o.device = a.runtime.torch_device();
  o.noise = a.noise.build(model->site_names());
  if (o.noise.empty()) {
    throw std::invalid_argument("no noise to plan against: give it with --noise (or --noise-config)");
  }
  for (const auto& [site, cfg] : o.noise.sites) {
    if (cfg.repeats != 1) {  // the library says so too; here the message names the flag
      throw std::invalid_argument("the noise sets repeat counts (site " +
                                  model->site_names()[site] +
                                  "); quell plan chooses them: drop --repeat");
    }
  }
  o.source = a.checkpoint;
  o.monitor = cli_monitor();
  check_plan_study(*model, o);  // before any data is read
  const Dataset train = a.data.load(Split::kTrain);
  const Dataset test = a.data.load(Split::kTest);
  const PlanReport report = run_plan_study(model, train, test, o);
  if (!dist::is_root()) return;
  std::cout << report.table() << "wrote " << join(report.written) << " to " << o.out
            << std::endl;
}

}  // namespace

void add_plan_command(CLI::App& app) {
  auto args = std::make_shared<PlanArgs>();
  CLI::App* cmd = app.add_subcommand(
      "plan", "Multi-execution planner: repetitions per site under a budget, evaluated and costed");
  cmd->add_option("checkpoint", args->checkpoint, "Trained checkpoint, or a TorchScript file")->required();
  cmd->add_option("--out", args->study.out, "Output directory")->required();
  cmd->add_option("--sites", args->study.sites,
                  "Sites that may be repeated (all | names, indices, ranges); only sites with "
                  "dynamic noise are planned")
      ->capture_default_str();
  cmd->add_option("--walk", args->study.walk_json,
                  "Robustness from a quell walk result (walk.json midpoints); default: the "
                  "measured accuracy drop with the noise at each site alone");
  cmd->add_option("--schemes", args->study.schemes,
                  "Allocation schemes: " + join(allocation_schemes()))
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--mean-repeats", args->study.mean_repeats,
                  "Repetition budgets: mean k over the planned sites (sum k = L * mean), e.g. "
                  "2,4 (the default when no budget is given)")
      ->delimiter(',');
  cmd->add_option("--energy-budget", args->study.energy_budgets,
                  "Energy budgets: overhead in % of the base inference, e.g. 25,100")
      ->delimiter(',');
  cmd->add_option("--target", args->study.target,
                  "Accuracy target: the cheapest allocation per scheme reaching it on validation");
  cmd->add_option("--max-mean", args->study.max_mean, "Largest mean k tried for --target and energy fits")
      ->check(CLI::Range(1.0, 1024.0))
      ->capture_default_str();
  cmd->add_option("--search", args->study.search, "Optimised allocation: greedy or none")
      ->check(CLI::IsMember({"greedy", "none"}))
      ->capture_default_str();
  cmd->add_option("--search-width", args->study.search_width,
                  "Sites re-evaluated per greedy step after the first (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-draws", args->study.search_draws,
                  "Noise draws (and chips, for static noise) per validation evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--val-size", args->study.val_size,
                  "Validation images, held out from the end of the training set")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--min-gain", args->study.min_gain, "Smallest validation gain a greedy step must make")
      ->capture_default_str();
  cmd->add_option("--hardware", args->hardware,
                  "Cost model preset (" + join(hardware_preset_names()) + ") or JSON file")
      ->capture_default_str();
  cmd->add_option("--set", args->set, "Override a cost constant FIELD=VALUE, repeatable");
  cmd->add_option("--denoise-report", args->study.denoise_report,
                  "A quell denoise report.json for the same checkpoint and noise: its "
                  "mitigations join the comparison, costed with the same hardware model");
  add_metric_option(*cmd, args->study.metric, true);
  cmd->add_option("--draws", args->study.eval.draws, "Noise draws per chip in the test evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--chips", args->study.eval.chips, "Chip instances in the test evaluation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--restart", args->study.restart,
                "Discard the journal of an earlier run in --out (default: resume it)");
  cmd->add_option("--figures", args->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  args->data.add_for_checkpoint(*cmd);
  args->noise.add(*cmd);
  args->runtime.add(*cmd);
  cmd->callback([args] {
    args->runtime.apply();
    run(*args);
  });
}

}  // namespace quell::cli
