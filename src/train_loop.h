// Internal pieces shared by the training loops (train.cpp, denoise.cpp): the cosine learning
// rate and the per-epoch bookkeeping (loss, accuracy, progress, divergence check).
#pragma once

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "quell/train.h"

namespace quell::detail {

/// Sets the learning rate of every parameter group.
inline void set_lr(torch::optim::Optimizer& opt, double lr) {
  for (auto& group : opt.param_groups()) group.options().set_lr(lr);
}

/// Cosine annealing from `lr` at step 0 to 0 at `total` steps.
inline double cosine_lr(double lr, int64_t step, int64_t total) {
  return 0.5 * lr *
         (1.0 + std::cos(M_PI * static_cast<double>(step) / static_cast<double>(total)));
}

/// Loss and accuracy of one epoch, reported to the progress callback after every step.
class EpochMeter {
 public:
  EpochMeter(int epoch, Progress& progress, const ProgressFn& report)
      : epoch_(epoch), progress_(progress), report_(report) {}

  /// One step: `loss` is the batch mean, `logits` and `y` the batch; `step` counts all steps.
  void add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& y,
           int64_t step) {
    const int64_t m = y.size(0);
    loss_sum_ += loss.item<double>() * static_cast<double>(m);
    correct_ += logits.argmax(1).eq(y).sum().item<int64_t>();
    seen_ += m;
    if (report_) {
      progress_.done = step;
      progress_.loss = loss_sum_ / static_cast<double>(seen_);
      progress_.accuracy = static_cast<double>(correct_) / static_cast<double>(seen_);
      report_(progress_);
    }
  }

  /// The epoch's statistics; throws naming `what` if the loss is not finite.
  EpochStats finish(const std::string& what) const {
    EpochStats es;
    es.epoch = epoch_;
    es.loss = loss_sum_ / static_cast<double>(seen_);
    es.accuracy = static_cast<double>(correct_) / static_cast<double>(seen_);
    es.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    if (!std::isfinite(es.loss)) {
      throw std::runtime_error(what + " diverged in epoch " + std::to_string(epoch_) +
                               " (loss is not finite); lower the learning rate or the noise");
    }
    return es;
  }

 private:
  int epoch_;
  Progress& progress_;
  const ProgressFn& report_;
  double loss_sum_ = 0.0;
  int64_t correct_ = 0, seen_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

}  // namespace quell::detail
