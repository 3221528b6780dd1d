// Weight statistics of a model's analog (conv/linear) layers, with the binarisation index of
// Walking Noise: under multiplicative-noise training the weights self-binarise (index -> 1),
// Gaussian-shaped weights sit at 0. See docs/inspect.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

#include "quell/io.h"
#include "quell/models.h"
#include "quell/report.h"

namespace quell {

/// Statistics of one weight tensor (or of all analog weights together).
struct WeightStats {
  int site = -1;              ///< site of the layer; -1 for the whole-model aggregate
  std::string name;           ///< site name ("conv1"); "all" for the aggregate
  std::string op;             ///< "conv" / "linear"; "all" for the aggregate
  int64_t count = 0;          ///< number of weights
  double mean_abs = 0.0;      ///< E[|w|]
  double rms = 0.0;           ///< sqrt(E[w²])
  double max_abs = 0.0;       ///< max |w|
  double binarization = 0.0;  ///< binarization_index() of the weights
  /// {"site", "name", "op", "count", "mean_abs", "rms", "max_abs", "binarization"}; NaN (only
  /// from non-finite weights) is written as null.
  Json to_json() const;
};

/// Binarisation index of a weight tensor:
///   b = (π/2 − E[w²]/E[|w|]²) / (π/2 − 1), clamped to [0, 1].
/// E[w²]/E[|w|]² is 1 for weights of constant magnitude (b = 1, e.g. ±c) and π/2 for
/// zero-mean Gaussian weights (b = 0); uniform symmetric weights give 4/3 (b ≈ 0.416).
/// Heavier tails than Gaussian (ratio > π/2, e.g. sparse weights) clamp to 0. The index is
/// invariant to the scale of w. Computed in double precision. Edge cases: an empty or all-zero
/// tensor has no shape to speak of and gets 0 (not NaN); a tensor with a non-finite element
/// gets NaN.
double binarization_index(const torch::Tensor& w);

/// Statistics of an arbitrary tensor (all elements), with the given labels. Computed in double
/// precision; an empty tensor gives count 0 and all statistics 0.
WeightStats tensor_weight_stats(const torch::Tensor& w, int site, const std::string& name,
                                const std::string& op);

/// Per conv/linear layer of the model (ModelImpl::analog_weights(), site order), the weight
/// statistics (biases are not included). The model is not modified.
std::vector<WeightStats> weight_stats(ModelImpl& model);

/// The statistics of all analog weights of the model taken together: site -1, name and op
/// "all". count, mean_abs, rms and max_abs are those of the pooled weights. The binarisation
/// index is that of the pooled weights with each layer first divided by its own mean |w|: layers
/// of different scales would otherwise pool into a heavy-tailed mixture reading 0 even when
/// every layer is binarised (all-zero layers contribute zeros). A model without conv/linear
/// layers gives count 0.
WeightStats aggregate_weight_stats(ModelImpl& model);

/// The definition of the binarisation index, as result files state it.
extern const char* const kBinarizationDefinition;

/// The weight statistics of a model (`quell inspect`): per conv/linear layer and pooled.
struct InspectReport {
  Json provenance;         ///< RunContext::to_json of the run
  std::string checkpoint;  ///< the model's file
  ModelSpec model;
  std::string dataset;     ///< the dataset it was trained on ("" if unknown)
  Json train_config = Json::object();
  std::vector<WeightStats> layers;
  WeightStats all;
  Json to_json() const;
  /// One row per layer, then the aggregate (site -1, name "all").
  std::string csv() const;
  /// The table `quell inspect` prints.
  std::string table() const;
};

/// The weight statistics of `model`; `checkpoint`, `dataset` and `train_config` are recorded.
InspectReport inspect_model(ModelImpl& model, const std::string& checkpoint,
                            const std::string& dataset, const Json& train_config,
                            const std::string& device = "cpu");

}  // namespace quell
