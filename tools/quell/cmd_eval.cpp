// quell eval: accuracy under a noise configuration, over noise draws and chip instances.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "common.h"
#include "quell/checkpoint.h"

namespace quell::cli {
namespace {

struct EvalArgs {
  std::string checkpoint;
  std::string model;
  std::string split = "test";
  std::vector<double> levels;
  std::string json_out, csv_out;
  EvalOptions opts;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

Json summary_json(const Summary& s) {
  return Json{{"n", s.n},
              {"mean", s.mean},
              {"std", s.std},
              {"ci95_low", s.ci_low},
              {"ci95_high", s.ci_high},
              {"min", s.min},
              {"max", s.max}};
}

// The configuration as the user gave it, for the table's title; sigmas scale with the level.
std::string describe(const NoiseArgs& n, const NoiseConfig& resolved) {
  if (resolved.empty()) return "none";
  std::string s;
  for (const auto& r : n.noise) s += (s.empty() ? "" : " ") + r;
  for (const auto& r : n.adc) s += (s.empty() ? "adc " : " adc ") + r;
  for (const auto& r : n.repeat) s += (s.empty() ? "repeat " : " repeat ") + r;
  if (!n.weight_noise.empty()) s += (s.empty() ? "weights " : " weights ") + n.weight_noise;
  if (!n.config_file.empty()) s += (s.empty() ? "" : " + ") + n.config_file;
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
  model->to(a.runtime.torch_device());
  // Evaluate on the training dataset of the checkpoint unless told otherwise.
  a.data.use_checkpoint_dataset(meta);
  if (a.data.dataset != meta.dataset && !meta.dataset.empty()) {
    std::cerr << "note: checkpoint was trained on " << meta.dataset << ", evaluating on "
              << a.data.dataset << "\n";
  }
  const Dataset data = a.data.load(a.split == "train" ? Split::kTrain : Split::kTest);
  const auto& spec = model->spec();
  check_model_fits(spec, data, a.checkpoint);
  const auto names = model->site_names();
  const NoiseConfig base = a.noise.build(names);
  if (a.levels.empty()) a.levels = {1.0};
  // Validate every level before the first (long) evaluation.
  std::vector<NoiseConfig> configs;
  for (double level : a.levels) configs.push_back(base.scaled(level));
  for (const auto& c : configs) model->engine().configure(c);

  EvalOptions clean_opts = a.opts;
  const EvalResult clean = evaluate(*model, data, NoiseConfig{}, clean_opts);
  Json levels = Json::array();
  CsvTable csv({"level", "chip", "draw", "accuracy", "loss"});
  std::ostringstream table;
  char line[256];
  std::snprintf(line, sizeof line, "%-10s %10s %10s %22s %6s\n", "level", "accuracy", "+-95%CI",
                "CI", "n");
  table << "model " << spec.name
        << (model->has_denoisers()
                ? " + " + std::to_string(model->denoiser_placement().size()) + " denoising block(s)"
                : std::string())
        << " on " << data.name << " " << a.split << " (" << data.size()
        << " samples); noise " << describe(a.noise, base) << ", chance "
        << fmt_double(data.chance(), 3) << "\n"
        << line;
  std::snprintf(line, sizeof line, "%-10s %10.4f %10s %22s %6d\n", "clean", clean.accuracy.mean,
                "-", "-", 1);
  table << line;
  for (size_t i = 0; i < configs.size(); ++i) {
    EvalOptions opts = a.opts;
    opts.progress = progress_bar("eval level " + fmt_double(a.levels[i]));
    const EvalResult r = evaluate(*model, data, configs[i], opts);
    const Summary& h = r.headline();
    std::snprintf(line, sizeof line, "%-10s %10.4f %10.4f   [%8.4f, %8.4f] %6lld%s\n",
                  fmt_double(a.levels[i]).c_str(), h.mean, h.half_width(), h.ci_low, h.ci_high,
                  static_cast<long long>(h.n), r.chip_level ? " chips" : "");
    table << line;
    Json draws = Json::array();
    for (const auto& d : r.draws) {
      draws.push_back(
          {{"chip", d.chip}, {"draw", d.draw}, {"accuracy", d.accuracy}, {"loss", d.loss}});
      csv.add_row({fmt_double(a.levels[i]), std::to_string(d.chip), std::to_string(d.draw),
                   fmt_double(d.accuracy, 8), fmt_double(d.loss, 8)});
    }
    levels.push_back({{"level", a.levels[i]},
                      {"config", configs[i].to_json(names)},
                      {"accuracy", summary_json(r.accuracy)},
                      {"chip_accuracy", summary_json(r.chip_accuracy)},
                      {"ci_over", r.chip_level ? "chips" : "draws"},
                      {"deterministic", r.deterministic},
                      {"draws", draws}});
  }
  // The table is for people: on stderr when stdout carries JSON or CSV.
  (a.json_out == "-" || a.csv_out == "-" ? std::cerr : std::cout) << table.str() << std::flush;
  Json prov = provenance();
  prov["device"] = a.runtime.device;
  Json j{{"provenance", prov},
         {"checkpoint", a.checkpoint},
         {"model", spec.to_json()},
         {"dataset",
          {{"name", data.name},
           {"split", a.split},
           {"samples", data.size()},
           {"limit", a.data.limit},
           {"shuffle_seed", a.data.shuffle_seed},
           {"chance", data.chance()}}},
         {"options",
          {{"draws", a.opts.draws},
           {"chips", a.opts.chips},
           {"batch_size", a.opts.batch_size},
           {"noise_seed", base.seed}}},
         {"noise", base.to_json(names)},
         {"clean", {{"accuracy", clean.accuracy.mean}, {"loss", clean.draws.at(0).loss}}},
         {"levels", levels}};
  if (a.data.dataset == "images") {
    DataOptions used = a.data.options(Split::kTest);  // with the normalisation actually applied
    used.mean = data.mean;
    used.stddev = data.stddev;
    j["dataset"]["preprocessing"] = used.preprocessing_json();
    j["dataset"]["skipped_images"] = data.skipped.size();
  }
  if (!a.json_out.empty()) emit(a.json_out, j.dump(2) + "\n");
  if (!a.csv_out.empty()) emit(a.csv_out, csv.str());
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
  a->data.add_for_checkpoint(*cmd);
  a->noise.add(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
