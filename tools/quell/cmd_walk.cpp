// quell walk: Walking Noise sweeps (noise at one site at a time), midpoints and figures. The
// study is quell::run_walk_study; this file maps flags to its options and prints.
#include <cstdio>
#include <iostream>

#include "common.h"
#include "quell/dist.h"
#include "quell/walk_study.h"

namespace quell::cli {
namespace {

struct WalkArgs {
  std::string checkpoint;
  std::string model;
  std::string noise = "add";
  std::string grid = "1e-2:1e4";
  bool grid_given = false;
  int per_decade = 4;
  bool no_early_stop = false;
  bool no_prefix_cache = false;
  int64_t cache_mb = 1024;
  std::string figures = "png,svg";
  std::string sweep;  // device walk: time | scale
  NoiseArgs device;   // its device flags
  WalkStudyOptions study;
  DataArgs data;
  RuntimeArgs runtime;
};

void parse_shard(const std::string& text, WalkOptions& o) {
  if (text.empty()) return;
  int i = 0, n = 0;
  char tail = 0;
  if (std::sscanf(text.c_str(), "%d/%d%c", &i, &n, &tail) != 2 || n < 1 || i < 1 || i > n) {
    throw std::invalid_argument("--shard '" + text + "': expected I/N with 1 <= I <= N, e.g. 2/4");
  }
  o.shard_index = i - 1;
  o.shard_count = n;
}

void run(WalkArgs& a) {
  a.runtime.apply();
  WalkStudyOptions& s = a.study;
  WalkOptions& w = s.walk;
  if (s.out.empty()) throw std::invalid_argument("--out DIR is required");
  if (std::filesystem::exists(s.out) && !std::filesystem::is_directory(s.out)) {
    throw std::invalid_argument("--out " + s.out + ": exists and is not a directory");
  }
  parse_shard(s.shard_text, w);
  s.figures = parse_figure_formats(a.figures);
  if ((s.figures.png || s.figures.svg) && !gnuplot_available()) {
    throw std::runtime_error("gnuplot is not installed (apt-get install gnuplot-nox), or use "
                             "--figures none");
  }
  const bool device_walk = !a.device.device_model.empty() || !a.device.tile.empty();
  if (!device_walk && !a.sweep.empty()) {
    throw std::invalid_argument("--sweep needs a device to walk (--device-model or --tile)");
  }
  std::string grid = a.grid;
  if (device_walk) {
    const bool time = a.sweep.empty() || a.sweep == "time";
    w.device_sweep = time ? WalkOptions::DeviceSweep::kTime : WalkOptions::DeviceSweep::kScale;
    if (!a.grid_given) grid = time ? "1:1e9" : "0.1:100";
    if (time) grid = durations_as_seconds(grid);
  }
  w.grid = SigmaGrid::parse(grid, a.per_decade);
  w.noise = WalkNoise::parse(a.noise);
  w.early_stop = !a.no_early_stop;
  w.prefix_cache = !a.no_prefix_cache;
  w.cache_bytes = a.cache_mb * (int64_t{1} << 20);
  for (const auto& m : s.merge) {
    if (!std::filesystem::exists(std::filesystem::path(m) / "journal.jsonl")) {
      throw std::invalid_argument("--merge " + m + ": no journal.jsonl there");
    }
  }
  if (dist::size() > 1 && !s.merge.empty()) {
    throw std::invalid_argument("--merge runs as one process, not under mpirun");
  }

  // The model: a trained checkpoint (clean-training setting), or a spec to train (noisy).
  CheckpointMeta meta;
  Model model{nullptr};
  if (!a.checkpoint.empty()) {
    model = load_checked(a.checkpoint, a.model, &meta, &a.data);
  } else if (!s.noisy_training) {
    throw std::invalid_argument("a checkpoint is required (or --train with --model)");
  } else if (a.model.empty()) {
    throw std::invalid_argument("--train needs --model NAME or a checkpoint");
  }
  a.data.use_checkpoint_dataset(meta);
  s.data = a.data.options(Split::kTest);
  const Dataset test = load_dataset(s.data);
  if (!model) model = make_model(ModelSpec::for_dataset(a.model, test));  // the site table
  if (device_walk) {
    DeviceConfig d;
    a.device.apply_device(d, model->site_names());
    w.device = d;
  }
  s.source = a.checkpoint;
  if (!a.checkpoint.empty()) s.model_digest = file_digest(a.checkpoint);
  s.device = a.runtime.torch_device();
  s.monitor = cli_monitor();
  s.monitor.message = nullptr;
  Dataset train;
  if (s.noisy_training) {
    DataOptions tr;
    tr.name = test.name;
    tr.dir = s.data.dir;
    tr.split = Split::kTrain;
    tr.limit = s.train_limit;
    tr.shuffle_seed = s.data.shuffle_seed;
    train = load_dataset(tr);
  }
  const WalkReport report = run_walk_study(model, test, s, s.noisy_training ? &train : nullptr);
  if (!dist::is_root()) return;
  std::cout << report.table() << "wrote " << join(report.written) << " in " << s.out << "\n";
}

}  // namespace

void add_walk_command(CLI::App& app) {
  auto a = std::make_shared<WalkArgs>();
    CLI::App* cmd = app.add_subcommand(
      "walk",
      "Walking Noise: noise at one site at a time over a sigma grid; midpoint per site, CSV, "
      "JSON and figures. Resumable (journal in --out), shardable (--shard, --merge)");
  cmd->add_option("checkpoint,--checkpoint,-c", a->checkpoint,
                  "Trained checkpoint or TorchScript file (clean-training setting; with --train "
                  "optional, it then only gives the model)");
  cmd->add_option("--model", a->model, "Model name (checked against the checkpoint; with --train "
                                       "and no checkpoint, the model to train)");
  cmd->add_option("--out,-o", a->study.out, "Output directory (journal.jsonl, walk.csv, walk.json, "
                                      "figures); an unfinished sweep there is resumed")
      ->required();
  cmd->add_option("--sites", a->study.sites,
                  "Walked sites: all, or names, indices and ranges a-b, comma-separated; 'none' "
                  "with --global for the global curve only")
      ->capture_default_str();
  cmd->add_option("--noise", a->noise,
                  "Walked noise: add | mul | muladd:r=R | addmul:r=R (mixed: sigma is the "
                  "amplitude A, sigma_add = A*r, sigma_mul = A*(1-r)), options as in --noise of "
                  "eval (rel=std|range, static, ...)")
      ->capture_default_str();
  cmd->add_option("--grid", a->grid,
                  "Sigma grid: MIN:MAX (log, --per-decade points per decade), MIN:MAX:STEP "
                  "(linear, e.g. 0:2:0.1) or a list 0.1,0.3,1. Device walks: times with units "
                  "(default 1:1e9 seconds) or scales (default 0.1:100)")
      ->capture_default_str()
      ->each([a](const std::string&) { a->grid_given = true; });
  cmd->add_option("--sweep", a->sweep,
                  "Device walk (with --device-model or --tile): the device on one analog layer "
                  "at a time, sweeping the time since programming or its noise scale")
      ->check(CLI::IsMember({"time", "scale"}));
  a->device.add_device(*cmd);
  cmd->add_option("--per-decade", a->per_decade, "Points per decade of a log grid")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--repeats,-r", a->study.walk.repeats,
                  "Noisy evaluations per point (noisy training: trained models per point)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--global", a->study.walk.global,
                "Also the reference curve with the noise on all walked sites at once");
  cmd->add_flag("--no-early-stop", a->no_early_stop,
                "Evaluate the whole grid (default: a site stops after two points at chance)");
  add_metric_option(*cmd, a->study.metric);
  cmd->add_option("--chance", a->study.walk.chance,
                  "The metric's floor: chance accuracy (default 1 / classes; for other "
                  "metrics their floor, docs/walk.md)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--chance-margin", a->study.walk.chance_margin,
                  "'At chance' means mean accuracy <= chance + margin (default max(0.02, "
                  "3*sqrt(p(1-p)/n_test))); other metrics: within margin of their floor in "
                  "score units (default 2% of clean-to-floor, docs/walk.md)")
      ->check(CLI::Range(0.0, 1.0));
  cmd->add_option("--max-extend", a->study.walk.max_extend,
                  "Points past the end of a log/linear grid, until two are at chance, so every "
                  "site can cross (0 = never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--adaptive", a->study.walk.adaptive,
                "Search each midpoint instead of evaluating the whole grid: bracket it from the "
                "grid's geometric middle, then refine around the crossing interpolated in log sigma");
  cmd->add_option("--tolerance", a->study.walk.tolerance,
                  "Adaptive: stop when the bracket around the midpoint is within this relative "
                  "width")
      ->capture_default_str();
  cmd->add_option("--seed", a->study.walk.seed,
                  "Seed of the noise draws (noisy training: also initialisation)")
      ->capture_default_str();
  cmd->add_option("--batch-size", a->study.walk.batch_size,
                  "Evaluation batch size (part of the noise streams: results depend on it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--cache-mb", a->cache_mb,
                  "Memory for cached clean activations entering the walked site")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--no-prefix-cache", a->no_prefix_cache,
                "Run the full forward pass for every evaluation (same results, slower)");
  cmd->add_option("--shard", a->study.shard_text,
                  "Run only shard I of N (I/N): units (site, or site x repeat when training) "
                  "u with u mod N = I-1");
  cmd->add_option("--merge", a->study.merge,
                  "Merge the journals of these shard output directories into --out and write "
                  "the outputs (no new evaluations)")
      ->expected(1, -1);
  cmd->add_flag("--restart", a->study.restart, "Discard an existing journal in --out");
  cmd->add_option("--figures", a->figures, "Figure formats: png,svg | png | svg | none")
      ->capture_default_str();
  // Noisy training.
  cmd->add_flag("--train", a->study.noisy_training,
                "Noisy training: train a fresh model per (site, sigma, repeat) with the noise on, "
                "evaluate it with the same noise");
  cmd->add_option("--epochs", a->study.train_options.epochs, "Noisy training: epochs per model")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--lr", a->study.train_options.lr, "Noisy training: learning rate")->capture_default_str();
  cmd->add_option("--train-batch", a->study.train_options.batch_size, "Noisy training: batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--train-limit", a->study.train_limit,
                  "Noisy training: use only the first N training samples (0 = all)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--eval-draws", a->study.eval_draws,
                  "Noisy training: noisy evaluation passes per trained model")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("--save-models", a->study.save_models,
                "Noisy training: keep every trained model in --out/models");
  a->data.add_for_checkpoint(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
