// quell cost: energy, latency and area of one inference on a mixed-signal accelerator, with
// denoising blocks and repetitions (docs/cost.md).
#include <iostream>
#include <sstream>

#include "common.h"
#include "quell/cost.h"
#include "quell/denoise.h"

namespace quell::cli {
namespace {

struct CostArgs {
  std::string model = "lenet5-bn";
  std::string checkpoint;
  std::string hardware = "isaac";
  std::vector<std::string> set;
  double node = 0.0;
  std::vector<std::string> repeat;
  std::string denoisers;
  std::string tile, noise_config;
  std::string format = "table";
  std::string out = "-";
  bool list = false;
  GeometryArgs geometry;
};

void run(const CostArgs& a, bool model_given) {
  if (a.list) {
    std::ostringstream os;
    for (const auto& name : hardware_preset_names()) {
      os << name << ": " << hardware_preset(name).description << "\n";
    }
    emit(a.out, os.str());
    return;
  }
  check_writable(a.out);
  HardwareConfig hw = load_hardware_config(a.hardware);
  for (const auto& s : a.set) hw.set(s);
  if (a.node > 0) {
    hw.node_nm = a.node;
    hw.sources["node_nm"] = "set by the user (--node)";
  }
  hw.validate();

  Model model{nullptr};
  if (!a.checkpoint.empty()) {
    model = load_checked(a.checkpoint, model_given ? a.model : "", nullptr, nullptr, &a.geometry);
  } else {
    model = make_model(a.geometry.spec(a.model));
  }
  const auto names = model->site_names();
  // The tiles of a device configuration (the file quell eval reads, or --tile) set the
  // converters and arrays, so accuracy and cost come from one description.
  if (!a.noise_config.empty() || !a.tile.empty()) {
    NoiseArgs device_args;
    device_args.config_file = a.noise_config;
    device_args.tile = a.tile;
    apply_device(hw, device_args.build(names).device);
  }
  std::vector<int> repeats(names.size(), 1);
  if (!a.repeat.empty()) {
    const NoiseConfig rules = build_noise_config({}, {}, a.repeat, "", 1, names);
    for (const auto& [site, cfg] : rules.sites) repeats[static_cast<size_t>(site)] = cfg.repeats;
  }
  const std::vector<BlockPlacement> blocks = a.denoisers.empty()
                                                 ? model->denoiser_placement()
                                                 : parse_placement_label(a.denoisers, names);
  if (!a.denoisers.empty()) model->set_denoisers(blocks);  // validates the blocks' sites
  const CostReport report = estimate_cost(*model, hw, repeats, blocks);

  std::ostringstream os;
  if (a.format == "json") {
    Json j = report.to_json();
    j["model"] = model->spec().to_json();
    j["checkpoint"] = a.checkpoint;
    j["backbone_params"] = model->num_params();
    j["denoiser_params"] = model->num_denoiser_params();
    j["provenance"] = provenance();
    os << j.dump(2) << "\n";
  } else if (a.format == "csv") {
    os << format_cost_csv(report);
  } else {
    os << "model " << model->spec().name << " on '" << hw.name << "' at "
       << fmt_double(hw.node_nm) << " nm (" << hw.description << ")\n";
    os << format_cost_table(report);
  }
  emit(a.out, os.str());
}

}  // namespace

void add_cost_command(CLI::App& app) {
  auto args = std::make_shared<CostArgs>();
  CLI::App* cmd = app.add_subcommand(
      "cost", "Energy, latency and area of one inference on a mixed-signal accelerator");
  cmd->add_option("checkpoint", args->checkpoint,
                  "Checkpoint (its denoising blocks are costed too) or TorchScript file; without it, --model");
  auto* model_opt = cmd->add_option("--model", args->model, "Model name (" + join(model_names()) + ") or a TorchScript file")
                        ->capture_default_str();
  cmd->add_option("--hardware", args->hardware,
                  "Preset (" + join(hardware_preset_names()) +
                      ") or a JSON file {\"preset\": NAME, FIELD: VALUE, ...}")
      ->capture_default_str();
  cmd->add_option("--set", args->set,
                  "Override a constant: FIELD=VALUE (e.g. adc_bits=6, mac_energy_pj.8=0.25), "
                  "repeatable")
      ->type_name("FIELD=VALUE");
  cmd->add_option("--node", args->node, "Technology node in nm (scales the digital constants)")
      ->check(CLI::PositiveNumber);
  cmd->add_option("--repeat", args->repeat,
                  "Multi-execution rule SITES=K: those sites run K times (repeatable)")
      ->type_name("RULE");
  cmd->add_option("--denoisers", args->denoisers,
                  "Cost these blocks instead of the checkpoint's: a placement label as in "
                  "quell denoise's report, e.g. 'conv1/4+fc1/mlp8+bn2/ch'");
  cmd->add_option("--tile", args->tile,
                  "The analog tiles as quell eval --tile gives them (ideal | aihwkit | "
                  "dac=B:adc=B:rows=R:cols=C...): their DAC, ADC and array size replace the "
                  "preset's");
  cmd->add_option("--noise-config", args->noise_config,
                  "A JSON noise configuration whose \"device\" tile sets the converters and "
                  "arrays (--tile applies on top)")
      ->check(CLI::ExistingFile);
  args->geometry.add(*cmd);
  cmd->add_option("--format", args->format, "table, csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output file ('-' = stdout)")->capture_default_str();
  cmd->add_flag("--list-hardware", args->list, "List the hardware presets and exit");
  cmd->callback([args, model_opt] { run(*args, model_opt->count() > 0); });
}

}  // namespace quell::cli
