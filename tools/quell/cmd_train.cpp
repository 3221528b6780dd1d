// quell train: clean or noise-aware training; writes a checkpoint.
#include <iostream>

#include "common.h"
#include "quell/dist.h"
#include "quell/checkpoint.h"
#include "quell/train.h"

namespace quell::cli {
namespace {

struct TrainArgs {
  std::string model = "lenet5-bn";
  std::string out;
  std::string metrics_out;
  TrainOptions opts;
  bool no_cosine = false;
  bool eval_test = true;
  DataArgs data;
  NoiseArgs noise;
  RuntimeArgs runtime;
};

void run(TrainArgs& a) {
  a.runtime.apply();
  if (a.out == "-") throw std::invalid_argument("--out must be a file path, not '-'");
  check_writable(a.out);
  if (!a.metrics_out.empty() && a.metrics_out != "-") check_writable(a.metrics_out);
  const torch::Device device = a.runtime.torch_device();
  const Dataset train_set = a.data.load(Split::kTrain);
  // Image folders: the test split and the checkpoint take the train split's normalisation.
  a.data.mean = train_set.mean;
  a.data.stddev = train_set.stddev;
  torch::manual_seed(a.opts.seed);
  Model model = make_model(ModelSpec::for_dataset(a.model, train_set));
  model->to(device);
  TrainOptions opts = a.opts;
  opts.cosine = !a.no_cosine;
  opts.noise = a.noise.build(model->site_names());
  const int ranks = dist::size();
  opts.data_parallel = ranks > 1;
  opts.progress = dist::is_root() ? progress_bar("train") : nullptr;
  if (dist::is_root()) {
    std::cerr << "training " << a.model << " on " << train_set.name << " (" << train_set.size()
              << " samples, " << opts.epochs << " epochs, " << at::get_num_threads()
              << " threads"
              << (ranks > 1 ? ", data parallel over " + std::to_string(ranks) + " ranks" : "")
              << ")\n";
  }
  const TrainResult result = train(*model, train_set, opts);
  if (!dist::is_root()) return;  // rank 0 alone writes the checkpoint and metrics

  CheckpointMeta meta;
  meta.spec = model->spec();
  meta.dataset = train_set.name;
  meta.data = a.data.options(Split::kTrain).preprocessing_json();
  meta.train_config = opts.to_json(model->site_names());
  meta.train_config["limit"] = a.data.limit;
  meta.provenance = provenance();
  meta.provenance["device"] = a.runtime.device;
  meta.provenance["mpi_ranks"] = ranks;
  Json epochs = Json::array();
  for (const auto& e : result.epochs) {
    epochs.push_back({{"epoch", e.epoch},
                      {"loss", e.loss},
                      {"train_accuracy", e.accuracy},
                      {"seconds", e.seconds}});
  }
  meta.metrics = {{"epochs", epochs}, {"seconds", result.seconds}};
  if (a.data.dataset == "images") {
    meta.metrics["skipped_images"] = {{"train", train_set.skipped.size()}};
  }
  if (a.eval_test) {
    Dataset test_set = a.data.load(Split::kTest);
    const DrawResult clean = run_pass(*model, test_set, EvalOptions{}.batch_size);
    meta.metrics["test_accuracy"] = clean.accuracy;
    meta.metrics["test_loss"] = clean.loss;
    meta.metrics["test_samples"] = test_set.size();
    if (a.data.dataset == "images") {
      meta.metrics["skipped_images"]["test"] = test_set.skipped.size();
    }
    // stdout carries the metrics JSON when --metrics is '-'.
    (a.metrics_out == "-" ? std::cerr : std::cout)
        << "test accuracy " << fmt_double(clean.accuracy, 4) << " (" << test_set.size()
        << " samples), training took " << fmt_double(result.seconds, 3) << " s\n";
  }
  save_checkpoint(a.out, *model, meta);
  std::cerr << "wrote " << a.out << "\n";
  if (!a.metrics_out.empty()) {
    Json j = meta.metrics;
    j["train_config"] = meta.train_config;
    j["provenance"] = meta.provenance;
    emit(a.metrics_out, j.dump(2) + "\n");
  }
}

}  // namespace

void add_train_command(CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  CLI::App* cmd = app.add_subcommand("train", "Train a model (clean, or noise-aware with --noise)");
  cmd->add_option("--model", a->model,
                  "Model name (" + join(model_names()) +
                      ") or a TorchScript file (trained from its weights; --epochs 0 imports it)")->capture_default_str();
  cmd->add_option("--out,-o", a->out, "Checkpoint file to write")->required();
  cmd->add_option("--metrics", a->metrics_out, "Also write training metrics as JSON here");
  cmd->add_option("--epochs", a->opts.epochs, "Epochs")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_option("--batch-size", a->opts.batch_size, "Batch size")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--optimizer", a->opts.optimizer, "adam or sgd")
      ->check(CLI::IsMember({"adam", "sgd"}))
      ->capture_default_str();
  cmd->add_option("--lr", a->opts.lr, "Learning rate")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_option("--momentum", a->opts.momentum, "SGD momentum")->capture_default_str();
  cmd->add_option("--weight-decay", a->opts.weight_decay, "Weight decay")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  cmd->add_flag("--no-cosine", a->no_cosine, "Constant learning rate (default: cosine annealing)");
  cmd->add_option("--seed", a->opts.seed, "Seed of initialisation and shuffling")
      ->capture_default_str();
  cmd->add_option("--calib-samples", a->opts.calib_samples,
                  "Training images used to calibrate site statistics")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  cmd->add_flag("!--no-test", a->eval_test, "Skip the clean test-set evaluation at the end");
  a->data.add(*cmd);
  a->noise.add(*cmd);
  a->runtime.add(*cmd);
  cmd->callback([a] { run(*a); });
}

}  // namespace quell::cli
