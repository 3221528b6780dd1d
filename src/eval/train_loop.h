// Internal pieces shared by the training loops (train.cpp, denoise.cpp): the cosine learning
// rate and the per-epoch bookkeeping (loss, accuracy, progress, divergence check).
#pragma once

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <string>

#include "quell/dist.h"
#include "quell/models.h"
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
  /// Accuracy is top-1 for class ids, over positions for per-position ids, NaN for real targets.
  void add(const torch::Tensor& loss, const torch::Tensor& logits, const torch::Tensor& y,
           int64_t step) {
    const int64_t m = y.size(0);
    loss_sum_ += loss.item<double>() * static_cast<double>(m);
    seen_ += m;
    if (y.is_floating_point()) {
      positions_ = -1;  // real targets: no accuracy
    } else if (y.dim() == 2) {  // per-position ids: token accuracy over the counted positions
      const torch::Tensor keep = y.ge(0);
      correct_ += logits.argmax(-1).eq(y).logical_and(keep).sum().item<int64_t>();
      positions_ += keep.sum().item<int64_t>();
    } else {
      correct_ += logits.argmax(1).eq(y).sum().item<int64_t>();
      positions_ += m;
    }
    if (report_) {
      progress_.done = step;
      progress_.loss = loss_sum_ / static_cast<double>(seen_);
      progress_.accuracy = accuracy();
      report_(progress_);
    }
  }

  /// The epoch's statistics; throws naming `what` if the loss is not finite.
  EpochStats finish(const std::string& what) const {
    EpochStats es;
    es.epoch = epoch_;
    es.loss = loss_sum_ / static_cast<double>(seen_);
    es.accuracy = accuracy();
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
  /// Top-1 (token) accuracy so far; NaN for real targets.
  double accuracy() const {
    return positions_ > 0 ? static_cast<double>(correct_) / static_cast<double>(positions_)
                          : std::nan("");
  }
  double loss_sum_ = 0.0;
  int64_t correct_ = 0, seen_ = 0, positions_ = 0;
  std::chrono::steady_clock::time_point start_ = std::chrono::steady_clock::now();
};

/// Sums the gradient of every parameter that requires one over the MPI ranks (one flat
/// buffer, one allreduce).
inline void allreduce_gradients(ModelImpl& model) {
  std::vector<torch::Tensor> params;
  std::vector<torch::Tensor> flat;
  for (auto& p : model.parameters()) {
    if (!p.requires_grad()) continue;
    params.push_back(p);
    flat.push_back(p.grad().defined() ? p.grad().reshape({-1}) : torch::zeros({p.numel()}, p.options()));
  }
  if (params.empty()) return;
  torch::Tensor buffer = torch::cat(flat).to(torch::kCPU).contiguous();
  dist::allreduce_sum(buffer);
  int64_t offset = 0;
  for (auto& p : params) {
    torch::Tensor g = buffer.narrow(0, offset, p.numel()).view(p.sizes()).to(p.device());
    if (p.grad().defined()) {
      p.mutable_grad().copy_(g);
    } else {
      p.mutable_grad() = g.clone();
    }
    offset += p.numel();
  }
}

/// Rank 0's parameters and floating-point buffers on every rank.
inline void broadcast_parameters(ModelImpl& model) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> all = model.parameters();
  for (const auto& b : model.buffers()) all.push_back(b);
  for (auto& t : all) {
    if (!t.is_floating_point()) continue;
    torch::Tensor c = t.to(torch::kCPU).contiguous().clone();
    if (!dist::is_root()) c.zero_();
    dist::allreduce_sum(c);  // only rank 0 contributes
    t.copy_(c.to(t.device()));
  }
}

/// The mean of each floating-point buffer (BN running statistics) over the ranks.
inline void average_buffers(ModelImpl& model) {
  torch::NoGradGuard no_grad;
  for (auto& b : model.buffers()) {
    if (!b.is_floating_point()) continue;
    torch::Tensor c = b.to(torch::kCPU).contiguous().clone();
    dist::allreduce_sum(c);
    b.copy_((c / static_cast<double>(dist::size())).to(b.device()));
  }
}

}  // namespace quell::detail
