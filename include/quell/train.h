// Training: clean or noise-aware (noise on at chosen sites during training).
#pragma once

#include "quell/eval.h"

namespace quell {

struct TrainOptions {
  int epochs = 10;
  int64_t batch_size = 128;
  std::string optimizer = "adam";  ///< adam | sgd
  double lr = 1e-3;
  double momentum = 0.9;  ///< sgd only
  double weight_decay = 0.0;
  bool cosine = true;            ///< cosine annealing of lr to 0 over all steps
  uint64_t seed = 1;             ///< initialisation (done by the caller) and shuffling
  NoiseConfig noise;             ///< noise during training; empty = clean training
  int64_t calib_samples = 2048;  ///< training images used to calibrate the sites
  ProgressFn progress;           ///< called after every step
  /// Under MPI (dist::size() > 1): split every batch over the ranks and sum the gradients, so
  /// all ranks train this one model together (docs/mpi.md). Off: each rank trains its own
  /// model (e.g. the units of a distributed noisy-training sweep).
  bool data_parallel = false;
  Json to_json(const std::vector<std::string>& site_names) const;
};

struct EpochStats {
  int epoch = 0;
  double loss = 0.0;
  double accuracy = 0.0;  ///< training accuracy (with training noise, in train mode)
  double seconds = 0.0;
};

struct TrainResult {
  std::vector<EpochStats> epochs;
  double seconds = 0.0;
};

/// Trains `model` on `data`. Noise-aware training draws fresh noise every step (static
/// components too: each step sees a new chip instance, so the model learns to tolerate any).
/// Relative-σ noise needs calibration: the sites are recalibrated on clean training data at the
/// start of every epoch. The model is calibrated once more at the end (stored in checkpoints).
TrainResult train(ModelImpl& model, const Dataset& data, const TrainOptions& opts);

}  // namespace quell
