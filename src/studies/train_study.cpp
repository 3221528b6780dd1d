// Training with its checkpoint record (`quell train`).
#include "quell/train_study.h"
#include "quell/metric.h"

#include "quell/dist.h"

namespace quell {

TrainReport run_train_study(Model model, const Dataset& train_set, const Dataset* test,
                            const TrainStudyOptions& opts) {
  TORCH_CHECK(model, "run_train_study: no model");
  model->to(opts.device);
  TrainOptions t = opts.train;
  t.progress = opts.monitor.bar("train");
  TrainReport r;
  r.result = train(*model, train_set, t);
  if (!dist::is_root()) return r;  // rank 0 alone tests and writes
  CheckpointMeta& meta = r.meta;
  meta.spec = model->spec();
  meta.dataset = train_set.name;
  DataOptions recorded = opts.data;
  if (recorded.name == "images") {
    // The test split and the checkpoint take the train split's normalisation.
    recorded.mean = train_set.mean;
    recorded.stddev = train_set.stddev;
  }
  meta.data = recorded.preprocessing_json();
  meta.train_config = t.to_json(model->site_names());
  meta.train_config["limit"] = opts.data.limit;
  meta.provenance = RunContext::capture(opts.device.str()).to_json();
  meta.provenance["mpi_ranks"] = dist::size();
  Json epochs = Json::array();
  for (const auto& e : r.result.epochs) {
    epochs.push_back({{"epoch", e.epoch},
                      {"loss", e.loss},
                      {"train_accuracy", e.accuracy},
                      {"seconds", e.seconds}});
  }
  meta.metrics = {{"epochs", epochs}, {"seconds", r.result.seconds}};
  if (opts.data.name == "images") {
    meta.metrics["skipped_images"] = {{"train", train_set.skipped.size()}};
  }
  if (test != nullptr) {
    // Accuracy (over positions for ids per position); MSE for real targets.
    const TargetKind kind = test->target_kind();
    const Metric metric = kind == TargetKind::kClass      ? Metric()
                          : kind == TargetKind::kSequence ? Metric::parse("token-accuracy")
                                                          : Metric::parse("mse");
    const DrawResult clean = run_pass(*model, *test, EvalOptions{}.batch_size, metric);
    r.tested = true;
    r.test_accuracy = clean.accuracy;
    r.test_loss = clean.loss;
    r.test_samples = test->size();
    meta.metrics[kind == TargetKind::kReal ? "test_mse" : "test_accuracy"] = clean.accuracy;
    meta.metrics["test_loss"] = clean.loss;
    meta.metrics["test_samples"] = test->size();
    if (opts.data.name == "images") {
      meta.metrics["skipped_images"]["test"] = test->skipped.size();
    }
  }
  if (!opts.out.empty() && dist::is_root()) save_checkpoint(opts.out, *model, meta);
  return r;
}

Json TrainReport::metrics_json() const {
  Json j = meta.metrics;
  j["train_config"] = meta.train_config;
  j["provenance"] = meta.provenance;
  return j;
}

}  // namespace quell
