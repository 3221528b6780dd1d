// quell inspect: weight statistics of a checkpoint's conv/linear layers (docs/inspect.md).
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

void run(const InspectArgs& a) {
  a.runtime.apply();
  check_writable(a.out);
  CheckpointMeta meta;
  Model model = load_checked(a.checkpoint, a.model, &meta);
  const InspectReport r =
      inspect_model(*model, a.checkpoint, meta.dataset, meta.train_config, a.runtime.device);
  emit(a.out, a.format == "json" ? r.to_json().dump(2) + "\n"
              : a.format == "csv" ? r.csv()
                                  : r.table());
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
