// Training as one library call: clean or noise-aware training of a model, its clean test
// accuracy, and the checkpoint record (`quell train`).
#pragma once

#include <string>

#include "quell/checkpoint.h"
#include "quell/progress.h"
#include "quell/report.h"
#include "quell/train.h"

namespace quell {

struct TrainStudyOptions {
  /// Epochs, batch size, optimiser, learning rate, schedule, seed, noise, calibration samples,
  /// data parallelism; progress is set by the study.
  TrainOptions train;
  /// The training data's options, recorded in the checkpoint (dataset, limit, image
  /// preprocessing; the normalisation is taken from the training set).
  DataOptions data;
  std::string out;  ///< checkpoint file to write (rank 0); empty: none
  torch::Device device = torch::kCPU;
  StudyMonitor monitor;
};

struct TrainReport {
  CheckpointMeta meta;  ///< spec, dataset, preprocessing, train_config, metrics, provenance
  TrainResult result;
  bool tested = false;  ///< a test set was given: meta.metrics has test_accuracy/test_loss
  double test_accuracy = 0.0;  ///< over positions for ids per position; MSE for real targets
  double test_loss = 0.0;
  int64_t test_samples = 0;
  /// The --metrics document: meta.metrics with train_config and provenance.
  Json metrics_json() const;
};

/// Trains `model` (initialised by the caller, e.g. make_model after torch::manual_seed) on
/// `train`, evaluates it clean on `test` when given, and writes the checkpoint to opts.out.
TrainReport run_train_study(Model model, const Dataset& train, const Dataset* test,
                            const TrainStudyOptions& opts);

}  // namespace quell
