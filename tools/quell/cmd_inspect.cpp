// quell inspect: weight statistics of a checkpoint's conv/linear layers (docs/inspect.md).
#include <cstdio>
#include <sstream>

#include "common.h"
#include "quell/inspect.h"

namespace quell::cli {
namespace {

struct InspectArgs {
  std::string checkpoint;
  std::string model;
  std::string format = "table";
  std::string out = "-";
  RuntimeArgs runtime;
};

constexpr const char* kIndexDefinition =
    "(pi/2 - E[w^2]/E[|w|]^2) / (pi/2 - 1), clamped to [0,1]: 0 = Gaussian-shaped weights, "
    "1 = constant magnitude (binarised); empty or all-zero weights: 0";

std::string table_row(const WeightStats& s) {
  char line[256];
  std::snprintf(line, sizeof line, "%-5s %-22s %-7s %10lld %12.6g %12.6g %12.6g %13.4f\n",
                s.site < 0 ? "-" : std::to_string(s.site).c_str(), s.name.c_str(), s.op.c_str(),
                static_cast<long long>(s.count), s.mean_abs, s.rms, s.max_abs, s.binarization);
  return line;
}

std::vector<std::string> csv_row(const WeightStats& s) {
  return {std::to_string(s.site),
          s.name,
          s.op,
          std::to_string(s.count),
          fmt_double(s.mean_abs, 0),
          fmt_double(s.rms, 0),
          fmt_double(s.max_abs, 0),
          fmt_double(s.binarization, 0)};
}

void run(const InspectArgs& a) {
  a.runtime.apply();
  check_writable(a.out);
  CheckpointMeta meta;
  Model model = load_checked(a.checkpoint, a.model, &meta);
  const std::vector<WeightStats> layers = weight_stats(*model);
  const WeightStats all = aggregate_weight_stats(*model);
  std::ostringstream os;
  if (a.format == "json") {
    Json rows = Json::array();
    for (const auto& s : layers) rows.push_back(s.to_json());
    Json prov = provenance();
    prov["device"] = a.runtime.device;
    Json j{{"checkpoint", a.checkpoint},
           {"model", model->spec().to_json()},
           {"dataset", meta.dataset},
           {"train_config", meta.train_config},
           {"binarization_definition", kIndexDefinition},
           {"layers", rows},
           {"all", all.to_json()},
           {"provenance", prov}};
    os << j.dump(2) << "\n";
  } else if (a.format == "csv") {
    // The aggregate is the last row, site -1, name "all".
    CsvTable t({"site", "name", "op", "count", "mean_abs", "rms", "max_abs", "binarization"});
    for (const auto& s : layers) t.add_row(csv_row(s));
    t.add_row(csv_row(all));
    os << t.str();
  } else {
    os << "checkpoint " << a.checkpoint << ": model " << model->spec().name;
    if (!meta.dataset.empty()) os << " trained on " << meta.dataset;
    os << "; " << layers.size() << " conv/linear layers, " << all.count << " weights\n";
    char header[256];
    std::snprintf(header, sizeof header, "%-5s %-22s %-7s %10s %12s %12s %12s %13s\n", "site",
                  "name", "op", "count", "mean|w|", "rms", "max|w|", "binarisation");
    os << header;
    for (const auto& s : layers) os << table_row(s);
    os << table_row(all);
    os << "binarisation = " << kIndexDefinition << "\n";
    os << "all = every conv/linear weight pooled; its binarisation first divides each layer by "
          "its own mean|w|\n";
  }
  emit(a.out, os.str());
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto a = std::make_shared<InspectArgs>();
  CLI::App* cmd = app.add_subcommand(
      "inspect",
      "Weight statistics of a checkpoint: mean|w|, rms, max|w| and binarisation index "
      "per conv/linear layer and for all of them");
  // The checkpoint may be given as the positional argument or with --checkpoint / -c.
  cmd->add_option("checkpoint,--checkpoint,-c", a->checkpoint, "Checkpoint file")->required();
  cmd->add_option("--model", a->model, "Expected model name (checked against the checkpoint)");
  cmd->add_option("--format", a->format, "table, csv or json")
      ->check(CLI::IsMember({"table", "csv", "json"}))
      ->capture_default_str();
  cmd->add_option("--out", a->out, "Output file ('-' = stdout)")->capture_default_str();
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
