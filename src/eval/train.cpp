#include "quell/metric.h"
#include "quell/train.h"

#include <chrono>
#include <cmath>
#include <stdexcept>

#include "quell/dist.h"
#include "quell/rng.h"
#include "eval/train_loop.h"

namespace quell {

Json TrainOptions::to_json(const std::vector<std::string>& site_names) const {
  return Json{{"epochs", epochs},
              {"batch_size", batch_size},
              {"optimizer", optimizer},
              {"lr", lr},
              {"momentum", momentum},
              {"weight_decay", weight_decay},
              {"cosine", cosine},
              {"seed", seed},
              {"calib_samples", calib_samples},
              {"noise", noise.to_json(site_names)}};
}

namespace {

constexpr uint64_t kTrainChipTag = 0x545241494e434850ULL;

std::unique_ptr<torch::optim::Optimizer> make_optimizer(ModelImpl& model, const TrainOptions& o) {
  if (o.optimizer == "adam") {
    return std::make_unique<torch::optim::Adam>(
        model.parameters(), torch::optim::AdamOptions(o.lr).weight_decay(o.weight_decay));
  }
  if (o.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        model.parameters(),
        torch::optim::SGDOptions(o.lr).momentum(o.momentum).weight_decay(o.weight_decay));
  }
  throw std::invalid_argument("unknown optimizer '" + o.optimizer + "' (known: adam, sgd)");
}

bool needs_calibration(const NoiseConfig& cfg) {
  for (const auto& kv : cfg.sites) {
    if (kv.second.adc_bits > 0) return true;
    for (const auto& s : kv.second.noise) {
      // rel= scales only the additive part.
      if (s.scale != SigmaScale::kAbsolute && s.sigma_add > 0.0) return true;
    }
  }
  return false;
}

}  // namespace

TrainResult train(ModelImpl& model, const Dataset& data, const TrainOptions& opts) {
  if (opts.epochs < 0) throw std::invalid_argument("epochs must be >= 0");
  if (opts.batch_size < 1) throw std::invalid_argument("batch size must be >= 1");
  if (!(opts.lr > 0.0) || !std::isfinite(opts.lr)) {
    throw std::invalid_argument("learning rate must be a positive number");
  }
  if (data.size() == 0) throw std::invalid_argument("training set is empty");
  const torch::Device device =
      model.parameters().empty() ? torch::Device(torch::kCPU) : model.parameters().front().device();
  auto optimizer = make_optimizer(model, opts);
  const int64_t n = data.size();
  const int64_t steps_per_epoch = (n + opts.batch_size - 1) / opts.batch_size;
  const int64_t total_steps = steps_per_epoch * opts.epochs;
  const torch::Tensor calib_images = data.inputs.narrow(0, 0, std::min(n, opts.calib_samples));
  const bool calibrate_each_epoch = needs_calibration(opts.noise);
  model.engine().configure(opts.noise);

  // Under MPI every rank takes its share of each batch and the gradients are summed
  // (docs/mpi.md); all ranks start from rank 0's weights and stay identical.
  const int ranks = opts.data_parallel ? dist::size() : 1;
  const int rank = opts.data_parallel ? dist::rank() : 0;
  if (ranks > 1) detail::broadcast_parameters(model);
  auto gen = at::detail::createCPUGenerator(opts.seed);
  TrainResult result;
  const auto t_start = std::chrono::steady_clock::now();
  int64_t step = 0;
  Progress progress;
  progress.total = total_steps;
  for (int epoch = 0; epoch < opts.epochs; ++epoch) {
    if (calibrate_each_epoch) model.calibrate(calib_images, opts.calib_samples);
    model.train();
    const torch::Tensor perm = torch::randperm(n, gen, torch::kLong);
    progress.what = "epoch " + std::to_string(epoch + 1) + "/" + std::to_string(opts.epochs);
    detail::EpochMeter meter(epoch + 1, progress, opts.progress);
    for (int64_t b = 0; b < n; b += opts.batch_size) {
      if (opts.cosine) detail::set_lr(*optimizer, detail::cosine_lr(opts.lr, step, total_steps));
      const int64_t global = std::min(opts.batch_size, n - b);
      torch::Tensor idx = perm.narrow(0, b, global);
      if (ranks > 1) {  // data parallel: this rank's contiguous share of the batch
        const int64_t lo = global * rank / ranks, hi = global * (rank + 1) / ranks;
        idx = idx.narrow(0, lo, hi - lo);
      }
      const torch::Tensor x = data.inputs.index_select(0, idx).to(device);
      const torch::Tensor y = data.targets.index_select(0, idx).to(device);
      // Each step is its own chip and draw: fresh static, dynamic and weight noise. The tag
      // keeps training chips apart from the chips an evaluation with the same seed draws.
      const uint64_t chip = mix_seed(kTrainChipTag, static_cast<uint64_t>(step));
      model.engine().set_draw(chip, 0);
      optimizer->zero_grad();
      torch::Tensor logits, loss;
      {
        // Gradients at the perturbed weights, applied to the clean ones (hardware-aware
        // training); the guard restores the clean weights before the optimizer step.
        WeightNoiseGuard weights(model, opts.noise, chip);
        if (x.size(0) > 0) {  // (a rank's share of a last, tiny batch may be empty)
          logits = model.forward(x);
          loss = task_loss(logits, y);
          // Summed over the ranks, each rank's mean weighted by its share is the global mean.
          (ranks == 1 ? loss
                      : loss * (static_cast<double>(x.size(0)) / static_cast<double>(global)))
              .backward();
        }
      }
      if (ranks > 1) detail::allreduce_gradients(model);
      optimizer->step();
      ++step;
      if (loss.defined()) meter.add(loss, logits, y, step);
    }
    result.epochs.push_back(meter.finish("training"));
  }
  if (ranks > 1) detail::average_buffers(model);  // BN running statistics of all ranks' batches
  model.eval();
  model.engine().configure(NoiseConfig{});  // the trained model is evaluated clean by default
  model.calibrate(calib_images, opts.calib_samples);
  result.seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
  return result;
}

}  // namespace quell
