// quell sites: the table of noise sites of a model or checkpoint.
#include <iomanip>
#include <map>
#include <sstream>

#include "common.h"
#include "quell/script.h"

namespace quell::cli {
namespace {

struct SitesArgs {
  std::string model = "lenet5-bn";
  std::string checkpoint;
  std::string format = "table";
  std::string out = "-";
  GeometryArgs geometry;
};

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "x" : "") + std::to_string(s[i]);
  return out;
}

// Ops of an imported graph after which quell places no site, grouped: "aten::mean (top level,
// not a site kind)", with a count when an op repeats.
std::string unplaced_text(const ScriptInfo& script) {
  if (script.unplaced.empty()) return "every compute op of the imported graph is a site\n";
  std::map<std::string, int> groups;
  std::vector<std::string> order;
  for (const auto& u : script.unplaced) {
    const std::string key = u.op + " (" + (u.where.empty() ? "top level" : u.where) + ", " +
                            u.reason + ")";
    if (groups[key]++ == 0) order.push_back(key);
  }
  std::string out = "ops without a site:";
  for (const auto& key : order) {
    out += "\n  " + key + (groups[key] > 1 ? " x" + std::to_string(groups[key]) : "");
  }
  return out + "\n";
}

void run(const SitesArgs& a, bool model_given, const std::string& device) {
  check_writable(a.out);
  Model model{nullptr};
  if (!a.checkpoint.empty()) {
    model = load_checked(a.checkpoint, model_given ? a.model : "", nullptr, nullptr, &a.geometry);
  } else {
    // Geometry of the default dataset unless given explicitly (no data is read).
    model = make_model(a.geometry.spec(a.model));
  }
  const auto sites = model->sites();
  std::ostringstream os;
  if (a.format == "json") {
    Json rows = Json::array();
    for (const auto& s : sites) {
      rows.push_back({{"index", s.index},
                      {"name", s.name},
                      {"op", s.op},
                      {"shape", s.shape},
                      {"numel", s.numel()},
                      {"params", s.params}});
    }
    Json blocks = Json::array();
    for (const auto& b : model->denoiser_placement()) {
      blocks.push_back({{"site", b.site},
                        {"name", sites[static_cast<size_t>(b.site)].name},
                        {"block", b.block.str()},
                        {"params", b.block.params(sites[static_cast<size_t>(b.site)].shape)}});
    }
    Json unplaced = Json::array();
    if (const ScriptInfo* script = model->script_info()) {
      for (const auto& u : script->unplaced) {
        unplaced.push_back({{"op", u.op}, {"where", u.where}, {"reason", u.reason}});
      }
    }
    Json j{{"model", model->spec().to_json()},
           {"unplaced_ops", unplaced},
           {"total_params", model->num_params()},
           {"sites", rows},
           {"denoisers", blocks},
           {"denoiser_params", model->num_denoiser_params()},
           {"provenance", provenance()}};
    j["provenance"]["device"] = device;
    os << j.dump(2) << "\n";
  } else if (a.format == "csv") {
    CsvTable t({"index", "name", "op", "shape", "numel", "params"});
    for (const auto& s : sites) {
      t.add_row({std::to_string(s.index), s.name, s.op, shape_str(s.shape),
                 std::to_string(s.numel()), std::to_string(s.params)});
    }
    os << t.str();
  } else {
    os << "model " << model->spec().name << " (" << sites.size() << " sites, "
       << model->num_params() << " parameters)\n";
    os << std::left << std::setw(6) << "index" << std::setw(22) << "name" << std::setw(11) << "op"
       << std::setw(12) << "shape" << std::right << std::setw(9) << "params"
       << "\n";
    for (const auto& s : sites) {
      os << std::left << std::setw(6) << s.index << std::setw(22) << s.name << std::setw(11) << s.op
         << std::setw(12) << shape_str(s.shape) << std::right << std::setw(9) << s.params << "\n";
    }
    if (const ScriptInfo* script = model->script_info()) {
      os << unplaced_text(*script);
    }
    const auto blocks = model->denoiser_placement();
    if (!blocks.empty()) {
      os << blocks.size() << " denoising block(s), " << model->num_denoiser_params()
         << " parameters (" << fmt_double(100.0 * static_cast<double>(model->num_denoiser_params()) /
                                              static_cast<double>(model->num_params()), 3)
         << "% of the backbone):";
      for (const auto& b : blocks) {
        const auto& site = sites[static_cast<size_t>(b.site)];
        os << " " << site.name << " " << b.block.str() << " (" << b.block.params(site.shape)
           << ")";
      }
      os << "\n";
    }
  }
  emit(a.out, os.str());
}

}  // namespace

void add_sites_command(CLI::App& app) {
  auto args = std::make_shared<SitesArgs>();
  auto runtime = std::make_shared<RuntimeArgs>();
  CLI::App* cmd = app.add_subcommand("sites", "List the noise sites of a model or checkpoint");
  auto* model_opt = cmd->add_option("--model", args->model, "Model name (" + join(model_names()) + ") or a TorchScript file")
                        ->capture_default_str();
  cmd->add_option("--checkpoint", args->checkpoint, "Checkpoint file or TorchScript file (overrides --model)");
  args->geometry.add(*cmd);
  cmd->add_option("--format", args->format, "table, csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->add_option("--out", args->out, "Output file ('-' = stdout)")->capture_default_str();
  runtime->add(*cmd);
  cmd->callback([args, runtime, model_opt] {
    runtime->apply();
    run(*args, model_opt->count() > 0, runtime->device);
  });
}

}  // namespace quell::cli
