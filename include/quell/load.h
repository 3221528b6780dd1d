// Loading what a study works on: a model from a quell checkpoint or a TorchScript file, the
// data a checkpoint was trained on, and the check that the two fit.
#pragma once

#include <optional>
#include <string>

#include "quell/checkpoint.h"
#include "quell/data.h"
#include "quell/models.h"

namespace quell {

/// How load_model treats the file.
struct LoadOptions {
  /// Non-empty: the checkpoint's model must have this name (else std::invalid_argument).
  std::string expected_model;
  /// A TorchScript file is imported with the geometry and classes of this dataset's training
  /// split, which also calibrates its sites (DataOptions::split is ignored).
  std::optional<DataOptions> import_data;
  /// Without import_data: a TorchScript file is imported with this geometry (uncalibrated).
  std::optional<ModelSpec> import_spec;
};

/// Loads a quell checkpoint, or imports a TorchScript model (docs/models.md) from `path`. A
/// quell checkpoint is read once; only a file that is not one is probed for TorchScript. For an
/// imported model *meta records the import ({"imported": path} as train_config, the dataset it
/// was calibrated on). Throws std::runtime_error naming the file for a missing or unreadable
/// file, std::invalid_argument for a model other than `expected_model` or a TorchScript file
/// without import_data or import_spec.
Model load_model(const std::string& path, CheckpointMeta* meta = nullptr,
                 const LoadOptions& opts = {});

/// Data options as a caller chose them, and which of them it chose explicitly: the others
/// follow the checkpoint (its dataset; for image folders its preprocessing).
struct DataSelection {
  DataOptions options;
  bool dataset_set = false;        ///< options.name was chosen
  bool size_set = false;           ///< options.height / width were chosen
  bool channels_set = false;       ///< options.channels was chosen
  bool resize_set = false;         ///< options.resize was chosen
  bool normalisation_set = false;  ///< options.mean / stddev were chosen
  /// The options to load `split` with for a model from `meta`: the checkpoint's dataset unless
  /// one was chosen; for image folders also its preprocessing (input size, channels, resize,
  /// mean/std) unless chosen, and without a preprocessing record its model's input geometry.
  DataOptions resolve(const CheckpointMeta& meta, Split split) const;
};

/// Throws std::invalid_argument naming `what` if `data` does not fit the model's input shape,
/// input dtype and classes (images with class ids: the same classes; other tasks: no more
/// classes than the model's outputs).
void check_model_fits(const ModelSpec& spec, const Dataset& data, const std::string& what);
/// The same, and that the model's output can be scored against the data's targets
/// (check_output_fits in quell/metric.h).
void check_model_fits(const ModelImpl& model, const Dataset& data, const std::string& what);

/// The spec of model `name` built for the input geometry of `dataset` (fashion-mnist, mnist:
/// 1x28x28, 10 classes; cifar10/100: 3x32x32, 10/100), with any non-zero override applied. An
/// "images" dataset has no fixed geometry: all four overrides are needed (else
/// std::invalid_argument). A TorchScript file as `name` knows its classes unless given.
ModelSpec spec_for_geometry(const std::string& name, const std::string& dataset,
                            int64_t channels = 0, int64_t height = 0, int64_t width = 0,
                            int64_t classes = 0);

/// FNV-1a of a file's bytes as 16 hex digits: a resumed study must use the very same file.
std::string file_digest(const std::string& path);
/// FNV-1a of the tensors' bytes (each made contiguous on the CPU), in order, as 16 hex digits:
/// the fingerprint of in-memory weights or data for a resumable study.
std::string tensor_digest(const std::vector<torch::Tensor>& tensors);

/// The first `count` samples of `data` from `start` (views, no copy).
Dataset slice_dataset(const Dataset& data, int64_t start, int64_t count);

}  // namespace quell
