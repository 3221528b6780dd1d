// quell denoise: denoising blocks in a frozen checkpoint: rankings, placement search under a
// parameter budget, training, and one report comparing the mitigations (docs/denoise.md). The
// study is quell::run_denoise_study; this file maps flags to its options and prints.
#include <cmath>
#include <iostream>

#include "common.h"
#include "quell/denoise_study.h"
#include "quell/dist.h"
#include "quell/walk.h"

namespace quell::cli {
namespace {

struct DenoiseArgs {
  std::string checkpoint;
  std::string scale_range = "1";
  std::string robustness = "0:2:0.25";
  std::string figures = "png,svg";
  DenoiseStudyOptions study;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

// "LO:HI" or "X".
std::pair<double, double> parse_range(const std::string& text, const std::string& what) {
  const auto colon = text.find(':');
  auto num = [&](const std::string& t) {
    try {
      size_t used = 0;
      const double v = std::stod(t, &used);
      if (used == t.size() && std::isfinite(v) && v >= 0) return v;
    } catch (const std::exception&) {
    }
    throw std::invalid_argument(what + " '" + text + "': expected LO:HI or X, numbers >= 0");
  };
  if (colon == std::string::npos) return {num(text), num(text)};
  const double lo = num(text.substr(0, colon)), hi = num(text.substr(colon + 1));
  if (hi < lo) throw std::invalid_argument(what + " '" + text + "': HI is below LO");
  return {lo, hi};
}

// Robustness levels: a walk grid ("0:2:0.25", "0.5,1,2", "0.1:10" log) or "none".
std::vector<double> parse_levels(const std::string& text) {
  if (text.empty() || text == "none") return {};
  try {
    return SigmaGrid::parse(text).values;
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("--robustness: ") + e.what());
  }
}

void run(DenoiseArgs& a) {
  // Under mpirun every rank runs the study in lockstep; rank 0 prints and writes (docs/mpi.md).
  a.runtime.apply();
  DenoiseStudyOptions& o = a.study;
  o.distributed = dist::size() > 1;
  o.figures = parse_figure_formats(a.figures);
  for (double b : o.budgets) {
    if (!(b > 0) || !std::isfinite(b)) {
      throw std::invalid_argument("--budget: every budget must be a positive percentage");
    }
  }
  for (int r : o.ratios) {
    if (r < 1) throw std::invalid_argument("--ratios: every ratio must be >= 1");
  }
  std::tie(o.train.scale_lo, o.train.scale_hi) = parse_range(a.scale_range, "--scale-range");
  o.robustness_levels = parse_levels(a.robustness);
  o.calibrate = o.calibration.samples > 0;
  if (!o.walk_json.empty() && !std::filesystem::exists(o.walk_json)) {
    throw std::invalid_argument("--walk " + o.walk_json + ": no such file");
  }
  if (std::filesystem::exists(o.out) && !std::filesystem::is_directory(o.out)) {
    throw std::invalid_argument("--out " + o.out + ": exists and is not a directory");
  }
  if ((o.figures.png || o.figures.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox), or use "
                             "--figures none");
  }
  BlockSpec::parse(o.block);

  Model backbone = load_checked(a.checkpoint, "", &o.meta, &a.data);
  a.data.use_checkpoint_dataset(o.meta);
  o.noise = a.noise.build(backbone->site_names());
  if (o.noise.empty()) {
    throw std::invalid_argument("no noise to mitigate: give it with --noise (or --noise-config)");
  }
  o.source = a.checkpoint;
  o.device = a.runtime.torch_device();
  o.monitor = cli_monitor();
  check_denoise_study(*backbone, o);  // before any data is read
  const Dataset train = a.data.load(Split::kTrain);
  const Dataset test = a.data.load(Split::kTest);
  const DenoiseReport report = run_denoise_study(backbone, train, test, o);
  if (!dist::is_root()) return;
  std::cout << report.table() << "\nwrote " << join(report.written) << " in " << o.out << "\n";
}

}  // namespace

void add_denoise_command(CLI::App& app) {
  auto a = std::make_shared<DenoiseArgs>();
    CLI::App* cmd = app.add_subcommand(
      "denoise",
      "Denoising blocks in a frozen checkpoint: rank sites, search placements under parameter "
      "budgets, train the blocks, compare with no mitigation, blocks everywhere and noise-aware "
      "fine-tuning (report, checkpoints with blocks, figures)");
  cmd->add_option("checkpoint,--checkpoint,-c", a->checkpoint, "Trained backbone checkpoint, or a TorchScript file")
      ->required();
  cmd->add_option("--out,-o", a->study.out,
                  "Output directory (report.json/csv, points.csv, rankings.csv, robustness.csv, "
                  "denoised-BUDGET.pt, figures)")
      ->required();
  cmd->add_option("--budget", a->study.budgets,
                  "Parameter budgets eta in % of the backbone (comma-separated)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--block", a->study.block,
                  "Block kind: auto (bottleneck on [C,H,W] sites, position on [T,D] sites, mlp "
                  "on others) | bottleneck | mlp | position | channel")
      ->capture_default_str();
  cmd->add_option("--ratios", a->study.ratios,
                  "Reduction ratios r the search may use per block (comma-separated; the "
                  "ranking rules and 'all sites' use the first)")
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--sites", a->study.sites,
                  "Sites that may get a block: all, or names, indices and ranges a-b")
      ->capture_default_str();
  cmd->add_option("--search", a->study.search,
                  "Placement search: greedy (measured accuracy gain per parameter) | none "
                  "(ranking rules only)")
      ->check(CLI::IsMember({"greedy", "none"}))
      ->capture_default_str();
  cmd->add_option("--walk", a->study.walk_json,
                  "A quell walk result (walk.json): rank sites by Walking Noise midpoints too");
  cmd->add_flag("!--no-drop-ranking", a->study.drop_ranking,
                "Skip the ranking by measured accuracy drop with noise at one site alone");
  cmd->add_flag("!--no-all-sites", a->study.all_sites, "Skip the blocks-at-every-site comparison");
  cmd->add_flag("!--no-finetune", a->study.finetune, "Skip the noise-aware fine-tuning comparison");
  cmd->add_option("--calibrate", a->study.calibration.samples,
                  "Per-chip calibration (noise fixed per chip only): fine-tune every row's blocks "
                  "on each test chip with this many training samples and report them beside the "
                  "chip-agnostic blocks; 0 = off")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--calibrate-epochs", a->study.calibration.epochs,
                  "Epochs of each chip's calibration")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--calibrate-lr", a->study.calibration.lr,
                  "Learning rate of each chip's calibration (Adam, cosine)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--calibrate-feature-weight", a->study.calibration.feature_weight,
                  "Feature-loss weight of each chip's calibration (as --feature-weight)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--calibrate-holdout", a->study.calibration.holdout,
                  "Fraction of the calibration samples held out: a chip keeps its calibrated "
                  "blocks only if they lower the loss there (0 = no check)")
      ->check(CLI::Range(0.0, 0.5))
      ->capture_default_str();
  cmd->add_flag("!--no-bounds", a->study.bounds,
                "Skip the bounds (the backbone without the noise at the chosen sites, and with "
                "only the static or only the dynamic part of the noise)");
  cmd->add_option("--epochs", a->study.train.epochs,
                  "Epochs of block training for the final models (and of fine-tuning)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--lr", a->study.train.lr, "Learning rate of block training (Adam, cosine)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--finetune-lr", a->study.finetune_lr, "Learning rate of noise-aware fine-tuning")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--batch-size", a->study.train.batch_size, "Training batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--feature-weight", a->study.train.feature_weight,
                  "Weight of the feature loss pulling block outputs to the clean activations "
                  "(0 = cross-entropy only)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--scale-range", a->scale_range,
                  "Training noise level: X, or LO:HI to draw the factor on every sigma per batch")
      ->capture_default_str();
  cmd->add_option("--seed", a->study.train.seed, "Seed of shuffling and noise-level draws")
      ->capture_default_str();
  cmd->add_option("--train-limit", a->study.train_limit,
                  "Use only the first N training samples (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--val-size", a->study.val_size,
                  "Validation samples held out from the end of the training set for the "
                  "search (at most a fifth of it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--search-limit", a->study.search_limit,
                  "Training samples for each placement's short training in the search (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-epochs", a->study.search_epochs, "Epochs of each placement's short training")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--search-width", a->study.search_width,
                  "Search steps after the first evaluate only the N candidates with the best "
                  "gain per parameter at their last evaluation (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--search-draws", a->study.search_draws,
                  "Noise draws (and chips) per placement's validation")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--min-gain", a->study.min_gain,
                  "Search: stop when no block raises validation accuracy by more than this")
      ->capture_default_str();
  cmd->add_option("--taylor-samples", a->study.taylor_samples,
                  "Training images for the Taylor (gradient-norm) ranking")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  add_metric_option(*cmd, a->study.metric, true);
  cmd->add_option("--draws", a->study.eval.draws, "Final evaluation: dynamic-noise draws per chip")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--chips", a->study.eval.chips,
                  "Final evaluation: chip instances (static / aging / weight noise)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--robustness", a->robustness,
                  "Noise levels (x the configured sigma) of the robustness curves: MIN:MAX:STEP "
                  "(linear), MIN:MAX (log, 4 per decade) or a list; none to skip")
      ->capture_default_str();
  cmd->add_option("--robust-draws", a->study.robust_draws,
                  "Draws (and chips) per robustness point")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--restart", a->study.restart,
                "Discard the journal of an earlier run in --out (default: resume it)");
  cmd->add_option("--figures", a->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  a->data.add_for_checkpoint(*cmd);
  a->noise.add(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
