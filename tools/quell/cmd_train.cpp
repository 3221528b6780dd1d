// quell train: clean or noise-aware training; writes a checkpoint.
#include <iostream>

#include "common.h"
#include "quell/dist.h"
#include "quell/checkpoint.h"
#include "quell/train.h"
#include "quell/train_study.h"

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
  TrainStudyOptions o;
  o.device = a.runtime.torch_device();
  const Dataset train_set = a.data.load(Split::kTrain);
  // Image folders: the test split and the checkpoint take the train split's normalisation.
  a.data.set_normalisation(train_set.mean, train_set.stddev);
  o.data = a.data.options(Split::kTrain);
  torch::manual_seed(a.opts.seed);
  Model model = make_model(ModelSpec::for_dataset(a.model, train_set));
  o.train = a.opts;
  o.train.cosine = !a.no_cosine;
  o.train.noise = a.noise.build(model->site_names());
  const int ranks = dist::size();
  o.train.data_parallel = ranks > 1;
  o.out = a.out;
  o.monitor = cli_monitor();
  if (dist::is_root()) {
    std::cerr << "training " << a.model << " on " << train_set.name << " (" << train_set.size()
              << " samples, " << o.train.epochs << " epochs, " << at::get_num_threads()
              << " threads"
              << (ranks > 1 ? ", data parallel over " + std::to_string(ranks) + " ranks" : "")
              << ")\n";
  }
  Dataset test_set;
  if (a.eval_test && dist::is_root()) test_set = a.data.load(Split::kTest);
  const TrainReport r = run_train_study(model, train_set, a.eval_test ? &test_set : nullptr, o);
  if (!dist::is_root()) return;  // rank 0 alone writes the checkpoint and metrics
  if (r.tested) {
    // stdout carries the metrics JSON when --metrics is '-'.
    (a.metrics_out == "-" ? std::cerr : std::cout)
        << "test accuracy " << fmt_double(r.test_accuracy, 4) << " (" << r.test_samples
        << " samples), training took " << fmt_double(r.result.seconds, 3) << " s\n";
  }
  std::cerr << "wrote " << a.out << "\n";
  if (!a.metrics_out.empty()) emit(a.metrics_out, r.metrics_json().dump(2) + "\n");
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
