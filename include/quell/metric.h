// What a study measures: the task's metric (accuracy, perplexity, MSE, ...) with its direction
// and its floor, and the task's training loss. Definitions and the scale of "halfway" for the
// midpoint: docs/walk.md, "Metrics".
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "quell/data.h"

namespace quell {

/// A metric over a dataset, accumulated batch by batch as sums (so passes split over threads,
/// batches or processes add up to the same value).
class Metric {
 public:
  enum class Kind {
    kAccuracy,       ///< top-1 accuracy of class targets
    kTopK,           ///< top-k accuracy of class targets
    kTokenAccuracy,  ///< top-1 accuracy over the positions of per-position targets
    kCrossEntropy,   ///< mean cross-entropy in nats (per sample or per position)
    kPerplexity,     ///< exp(mean cross-entropy)
    kMse,            ///< mean squared error over all target elements
    kRelativeMse,    ///< MSE / variance of the targets (1 - R²)
  };

  /// The sums one batch (or several) contributes.
  struct Sums {
    double value = 0.0;  ///< the metric's numerator (correct count, summed loss, squared error)
    double count = 0.0;  ///< samples, positions or elements it is over
    double loss = 0.0;   ///< the task loss, summed
    double loss_count = 0.0;
    Sums& operator+=(const Sums& o);
  };

  Metric() = default;  ///< accuracy
  /// "accuracy", "top5" (any k: "top-k" with a number, "top3", "top-3"), "token-accuracy",
  /// "cross-entropy", "perplexity", "mse", "relative-mse". Throws std::invalid_argument naming
  /// the text and listing the known metrics.
  static Metric parse(const std::string& text);
  /// The usual metric of a task: accuracy (class), perplexity (per position), MSE (real).
  static Metric default_for(TargetKind kind);
  /// parse(text), or default_for(kind) when text is empty or "auto".
  static Metric choose(const std::string& text, TargetKind kind);
  static std::vector<std::string> names();

  Kind kind() const { return kind_; }
  int k() const { return k_; }
  /// Canonical name ("accuracy", "top5", "perplexity", ...), what parse() reads back.
  std::string name() const;
  /// The key of its values in JSON and CSV: "accuracy", "top5_accuracy", "token_accuracy",
  /// "cross_entropy", "perplexity", "mse", "relative_mse".
  std::string key() const;
  /// For tables and figures: "accuracy", "top-5 accuracy", "perplexity", "MSE", ...
  std::string label() const;
  bool is_accuracy() const { return kind_ == Kind::kAccuracy; }
  bool higher_is_better() const;
  /// Whether it reads as a fraction (printed as such, axes from 0 to 1).
  bool is_fraction() const;

  /// Throws std::invalid_argument if the metric cannot measure targets of this kind (e.g.
  /// perplexity of real values, top-5 of 3 classes).
  void check(TargetKind kind, int64_t classes) const;

  /// The value a model that has learnt nothing gets: chance for accuracies (1/C, k/C, 1/V), the
  /// loss of the uniform prediction ln C for cross-entropy (C for perplexity), the variance of
  /// the targets for MSE (the loss of predicting their mean; 1 for relative MSE). `classes` is
  /// the number of outputs the model predicts over (>= the data's classes).
  double floor(const Dataset& data, int64_t classes) const;

  /// The sums of one batch: `output` the model's output ([N, C], [N, T, C] or real values
  /// shaped like the targets), `target` the batch's targets.
  Sums measure(const torch::Tensor& output, const torch::Tensor& target) const;
  /// The metric's value from sums (NaN when count is 0).
  double value(const Sums& s) const;
  /// The mean task loss from sums.
  static double loss(const Sums& s);

  /// The scale in which "halfway" is meant (docs/walk.md): the value itself for accuracies and
  /// MSE, the logarithm for perplexity (so its midpoint is cross-entropy's); then oriented so that
  /// higher is better. Accuracy: the identity (midpoints exactly as without metrics).
  double score(double value) const;
  /// The inverse of score().
  double from_score(double score) const;

  /// The variance of the targets that relative MSE divides by (set by bind()).
  double target_variance() const { return variance_; }
  /// This metric with what it needs from the data (relative MSE: the targets' variance).
  Metric bind(const Dataset& data) const;

  bool operator==(const Metric& o) const { return kind_ == o.kind_ && k_ == o.k_; }
  bool operator!=(const Metric& o) const { return !(*this == o); }

 private:
  Kind kind_ = Kind::kAccuracy;
  int k_ = 1;
  double variance_ = 1.0;
};

/// The metric a study uses on `data`: Metric::choose(text, its target kind), checked against
/// the data (`classes`: the model's outputs) and bound to it. Throws std::invalid_argument.
Metric resolve_metric(const std::string& text, const Dataset& data, int64_t classes);

/// The metric a search that maximises it (denoise, plan) uses: as resolve_metric, with
/// token-accuracy as the default for per-position ids; a metric where lower is better (loss,
/// perplexity, MSE) throws std::invalid_argument naming `study`.
Metric resolve_search_metric(const std::string& text, const Dataset& data, int64_t classes,
                             const std::string& study);

/// The kind of the targets: integer [N] (class ids), integer [N, T] (per-position ids;
/// negative = ignored), floating (real values). Throws std::invalid_argument for others.
TargetKind target_kind(const torch::Tensor& targets);

/// The task loss of a batch (mean): cross-entropy for class ids ([N, C] outputs) and
/// per-position ids ([N, T, C] outputs, negative targets ignored), mean squared error for real
/// targets (outputs of the targets' shape). What training, denoisers and the Taylor ranking
/// minimise.
torch::Tensor task_loss(const torch::Tensor& output, const torch::Tensor& target);

/// The sum over the batch's samples of each sample's own task loss (its mean over positions or
/// elements): row n of its gradient at a site is the gradient of sample n's loss (the Taylor
/// ranking). For class ids: the summed cross-entropy.
torch::Tensor task_loss_sum(const torch::Tensor& output, const torch::Tensor& target);

/// Throws std::invalid_argument naming `what` if a model output of per-sample shape
/// `output_shape` cannot be scored against `data`'s targets.
void check_output_fits(const std::vector<int64_t>& output_shape, const Dataset& data,
                       const std::string& what);

}  // namespace quell
