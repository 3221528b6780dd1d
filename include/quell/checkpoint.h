// Checkpoints: architecture, weights, calibration and the full configuration in one file.
#pragma once

#include <string>

#include "quell/io.h"
#include "quell/models.h"

namespace quell {

/// What a checkpoint holds besides the weights.
struct CheckpointMeta {
  ModelSpec spec;
  std::string dataset;  ///< dataset the model was trained on (normalisation follows it)
  /// How its inputs were prepared: DataOptions::preprocessing_json() with the mean/std actually
  /// used (image folders); {} in checkpoints written before it existed.
  Json data = Json::object();
  Json train_config = Json::object();
  Json metrics = Json::object();
  Json provenance = Json::object();
};

/// Saves model weights, buffers, calibration and meta atomically to `path`.
void save_checkpoint(const std::string& path, ModelImpl& model, const CheckpointMeta& meta);

/// Loads a checkpoint: builds the model from its spec, checks every parameter and buffer
/// (present, same shape), installs the calibration. Throws std::runtime_error naming the file
/// and the problem (missing, not a quell checkpoint, mismatched tensors).
Model load_checkpoint(const std::string& path, CheckpointMeta* meta = nullptr);

/// The checkpoint's metadata record (`quell_meta`) as stored, unparsed, without building the
/// model; the archive is checked as load_checkpoint checks it (every member's CRC, its code).
/// Throws std::runtime_error naming the file and the problem.
std::string read_checkpoint_meta_text(const std::string& path);

/// A fresh copy of `model` (no file involved): same architecture (an imported model's archive
/// included), weights, buffers, calibration and denoising blocks, on the CPU, in eval mode.
Model clone_model(ModelImpl& model);

}  // namespace quell
