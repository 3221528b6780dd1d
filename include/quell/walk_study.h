// The Walking Noise study as one library call: a resumable, shardable, MPI-shared sweep over
// an output directory (journal.jsonl, walk.csv, walk.json, figures). `quell walk` is a thin
// shell over run_walk_study; WalkReport writes and reads walk.json and walk.csv.
#pragma once

#include <string>
#include <vector>

#include "quell/plot.h"
#include "quell/progress.h"
#include "quell/report.h"
#include "quell/walk.h"

namespace quell {

struct WalkStudyOptions {
  /// What to sweep and how (noise, grid, repeats, early stop, adaptive search, seed, batch
  /// size, prefix cache, shard). `walk.sites` is set from `sites`; claim and progress are set
  /// by the study.
  WalkOptions walk;
  /// What each evaluation measures (quell/metric.h): accuracy, top5, token-accuracy,
  /// cross-entropy, perplexity, mse, relative-mse; empty = the task's usual one (accuracy for
  /// class ids, perplexity for per-position ids, MSE for real targets). Sets walk.metric.
  std::string metric;
  /// Walked sites: all | none | names, indices, ranges a-b ("all" leaves out integer sites,
  /// such as token ids entering an embedding: noise does not apply to them).
  std::string sites = "all";
  /// Output directory (required): journal.jsonl (resumed when present), walk.csv, walk.json,
  /// figures.
  std::string out;
  bool restart = false;  ///< discard an existing journal in `out` first
  /// Output directories of shards whose journals are merged into `out` (no new evaluations).
  std::vector<std::string> merge;
  PlotFormats figures{true, true};
  /// Noisy training (the walk's second setting): a fresh model per (site, σ, repeat) trained
  /// with the noise on (`train_options`: epochs, lr, batch size; noise and seed per unit).
  bool noisy_training = false;
  TrainOptions train_options = [] {
    TrainOptions t;
    t.epochs = 5;
    return t;
  }();
  int64_t train_limit = 0;  ///< recorded in the fingerprint (the caller limits the data)
  int eval_draws = 1;       ///< noisy evaluation passes per trained model
  bool save_models = false;  ///< keep every trained model in out/models
  /// Recorded in walk.json and the fingerprint: the model's file, its digest (file_digest; empty:
  /// a digest of the model's parameters and buffers), the test data's dataset/limit/seed.
  std::string source;
  std::string model_digest;
  DataOptions data;
  std::string shard_text;  ///< "I/N" as given, for walk.json ("1/1" when empty)
  torch::Device device = torch::kCPU;
  StudyMonitor monitor;
};

/// What run_walk_study found: the sweep's result with what produced it. to_json() is walk.json.
struct WalkReport {
  RunContext context;
  bool noisy_training = false;
  std::string checkpoint;
  ModelSpec model;
  std::string dataset;
  int64_t samples = 0;
  int64_t limit = 0;
  uint64_t shuffle_seed = 0;
  WalkNoise noise;
  SigmaGrid grid;
  int repeats = 0;
  bool adaptive = false;
  WalkResult result;
  std::string shard = "1/1";
  int mpi_ranks = 1;
  std::vector<int64_t> evaluations_per_rank;
  Json fingerprint;
  /// Device walk: the device (DeviceConfig::to_json) and what was swept ("time" or "scale");
  /// null / empty for a noise walk.
  Json device = nullptr;
  std::string device_sweep;
  /// What was walked, for titles: "add noise", or "pcm device per layer, time since programming".
  std::string walked() const;
  /// The swept value's axis label: "noise level sigma", "time since programming (s)", ...
  std::string sweep_label() const;
  Json training = nullptr;  ///< noisy training: TrainOptions::to_json
  std::vector<std::string> site_names;
  std::vector<std::string> written;  ///< files written into the output directory

  std::string setting() const { return noisy_training ? "noisy training" : "clean training"; }
  Json to_json() const;
  /// Reads a walk.json: the curves, midpoints and summary (records stay in walk.csv and the
  /// journal). Throws std::invalid_argument naming the missing field.
  static WalkReport from_json(const Json& j);
  /// Reads a walk.json file; throws std::runtime_error naming the file if it cannot be read, is
  /// not JSON or not a walk result.
  static WalkReport read(const std::string& path);
  /// walk.csv: one row per evaluation (noisy training: with the weight statistics).
  std::string csv() const;
  /// The midpoint table `quell walk` prints.
  std::string table() const;
  WalkPlotData plot_data() const;
  DynamicsPlotData dynamics_data() const;
};

/// Runs (or resumes, merges, or summarises) the sweep of `model` on `test`. Noisy training
/// trains on `train` (required then); `model` gives the site table and the architecture. Under
/// mpirun (dist::size() > 1) every rank runs it, units going to whichever rank asks next, and
/// rank 0 returns the report (other ranks an empty one). Throws std::invalid_argument for bad
/// options, std::runtime_error for a journal of another sweep.
WalkReport run_walk_study(Model model, const Dataset& test, const WalkStudyOptions& opts,
                          const Dataset* train = nullptr);

/// A digest of a model's parameters and buffers (FNV-1a of their bytes, in order): the
/// fingerprint of an in-memory model for a resumable walk.
std::string model_state_digest(ModelImpl& model);

}  // namespace quell
