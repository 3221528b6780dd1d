// Walking Noise: noise at one site at a time, σ swept over a grid, midpoint per site.
// Method and definitions: docs/walk.md.
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "quell/eval.h"
#include "quell/noise.h"
#include "quell/train.h"

namespace quell {

/// The σ values of a sweep, ascending. Log grids ("MIN:MAX" with points per decade) and linear
/// grids ("MIN:MAX:STEP") also know how to continue past their end; explicit lists
/// ("0.1,0.3,1") do not.
struct SigmaGrid {
  enum class Spacing { kLog, kLinear, kList };
  Spacing spacing = Spacing::kLog;
  std::vector<double> values;
  double step = 0.0;  ///< kLog: ratio between neighbours; kLinear: difference
  std::string text;   ///< as given

  /// Parses "1e-2:1e4" (log, `per_decade` points per decade, both ends included when they lie
  /// on the lattice), "0:2:0.1" (linear) or "0.1,0.5,2" (list). Throws std::invalid_argument
  /// naming the problem (negative, NaN, min >= max, log grid starting at 0, empty, ...).
  static SigmaGrid parse(const std::string& text, int per_decade = 4);
  /// The value `k` steps past the last one (k >= 1); NaN for lists.
  double beyond(int k) const;
  bool extendable() const { return spacing != Spacing::kList; }
  Json to_json() const;
};

/// The walked noise: one component whose σ (amplitude A for mixed noise) is the swept value.
/// Text: "add", "mul", "muladd:r=0.3", "addmul:r=0.3", plus NoiseSpec options (":rel=std",
/// ":static", ...).
struct WalkNoise {
  NoiseSpec base;      ///< kind, scale, temporal options; σ fields are unused
  double ratio = 0.5;  ///< mixed: σ_add = A·r, σ_mul = A·(1−r)
  static WalkNoise parse(const std::string& text);
  /// The component at swept value `sigma`.
  NoiseSpec at(double sigma) const;
  std::string str() const;
  Json to_json() const;
};

/// One evaluation: the metric's value (accuracy by default) of the model with the walked noise
/// at `site` and level `sigma`.
/// site >= 0: a network site; kGlobalSite: every walked site at once; kCleanSite: a clean
/// reference (noisy training: a model trained and evaluated without noise).
struct WalkRecord {
  static constexpr int kGlobalSite = -1;
  static constexpr int kCleanSite = -2;
  int site = 0;
  double sigma = 0.0;
  int repeat = 0;
  double accuracy = 0.0;  ///< the metric's value (WalkOptions::metric)
  double loss = 0.0;
  Json extra;  ///< noisy training: weight statistics of the trained model (else null)
  /// The value goes under `key` (Metric::key()); from_json takes it under any key.
  Json to_json(const std::string& key = "accuracy") const;
  static WalkRecord from_json(const Json& j);
};

/// Where μ lies relative to the evaluated points.
enum class CrossingStatus {
  kCrossed,     ///< mean accuracy falls below the threshold between two evaluated σ
  kNotCrossed,  ///< never below the threshold up to the largest σ evaluated
  kBelowGrid,   ///< already below the threshold at the smallest σ
};
const char* crossing_str(CrossingStatus s);

/// The midpoint μ of one curve with its uncertainty.
struct Midpoint {
  CrossingStatus status = CrossingStatus::kNotCrossed;
  double value = std::numeric_limits<double>::quiet_NaN();
  double lo = std::numeric_limits<double>::quiet_NaN();  ///< 2.5% bootstrap percentile
  double hi = std::numeric_limits<double>::quiet_NaN();  ///< 97.5% bootstrap percentile
  double crossed_fraction = 0.0;  ///< share of bootstrap resamples that cross
  bool crossed() const { return status == CrossingStatus::kCrossed; }
  Json to_json() const;
};

/// The σ where `mean` first falls from >= threshold to < threshold, interpolated linearly in
/// log σ between the two bracketing points (linearly in σ when the lower one is 0). `sigma`
/// ascending. Sets *status; returns NaN unless crossed.
double crossing_point(const std::vector<double>& sigma, const std::vector<double>& mean,
                      double threshold, CrossingStatus* status = nullptr);

/// μ from per-σ samples (samples[i] = accuracies of the repeats at sigma[i]) with a 95%
/// interval from a parametric bootstrap: each point's mean is redrawn as mean + s/√n · t_ν,
/// with s the standard deviation over repeats pooled over the points around the crossing
/// (ν its degrees of freedom), `resamples` times. Without repeats (ν = 0) or without a
/// crossing, lo/hi stay NaN.
Midpoint estimate_midpoint(const std::vector<double>& sigma,
                           const std::vector<std::vector<double>>& samples, double threshold,
                           int resamples = 2000, uint64_t seed = 1);

/// The curve of one site, summarised.
struct SiteCurveSummary {
  int site = 0;
  std::string name;
  std::vector<double> sigma;
  std::vector<Summary> accuracy;  ///< the metric per σ, over repeats
  Midpoint midpoint;
  bool early_stopped = false;     ///< stopped at chance before the end of the grid
  int extended = 0;               ///< points evaluated past the end of the grid
  int expected_repeats = 0;
  bool complete = true;           ///< every evaluated σ has all its repeats
};

/// What to sweep and how.
struct WalkOptions {
  std::vector<int> sites;  ///< walked sites (network order)
  bool global = false;     ///< also the reference curve with the noise on all walked sites
  WalkNoise noise;
  SigmaGrid grid;
  /// Device walk (docs/devices.md): when set, what is walked is not `noise` but this device on
  /// one analog layer at a time (every other layer digital and ideal), and the grid sweeps
  /// `device_sweep`. Repeat r is chip r.
  std::optional<DeviceConfig> device;
  enum class DeviceSweep {
    kTime,   ///< seconds since programming (at the device's scale)
    kScale,  ///< DeviceConfig::scale (at the device's time)
  };
  DeviceSweep device_sweep = DeviceSweep::kTime;
  /// The device configuration of one evaluation: `device` on `layers` at swept value `value`.
  NoiseConfig device_config(const std::vector<int>& layers, double value) const;
  int repeats = 3;
  bool early_stop = true;  ///< stop a site after two consecutive grid points at chance
  /// What each evaluation measures; the midpoint is where it has gone halfway from clean to
  /// its floor, in its score scale (Metric::score, docs/walk.md).
  Metric metric;
  double chance = 0.0;     ///< the metric's floor; 0: Metric::floor (1 / classes for accuracy)
  /// "At chance" = mean score <= score(chance) + margin; < 0: automatic.
  double chance_margin = -1.0;
  int max_extend = 40;     ///< points past the grid end until two are at chance (0: never)
  /// max_extend, or 0 for a device time sweep: its grid is the device's lifetime, and a layer
  /// that survives it is "not crossed", not extrapolated to 10^40 s.
  int extend_limit() const {
    return device && device_sweep == DeviceSweep::kTime ? 0 : max_extend;
  }
  uint64_t seed = 1;       ///< noise streams (and, for noisy training, initialisation)
  int64_t batch_size = 256;
  bool prefix_cache = true;        ///< reuse the clean activation entering the walked site
  int64_t cache_bytes = int64_t{1} << 30;  ///< memory for cached prefixes
  bool adaptive = false;   ///< search each midpoint instead of evaluating the whole grid
  double tolerance = 0.05; ///< adaptive: relative half-width of the final bracket
  int shard_index = 0;     ///< this process runs units u with u % shard_count == shard_index
  int shard_count = 1;
  bool evaluate = true;    ///< false: only summarise what the journal holds (after a merge)
  /// Dynamic distribution (MPI ranks): when set, this process runs the k-th unit of its shard
  /// only if claim() handed it k; claim() returns 0, 1, 2, ... across all processes, each
  /// number once (see dist::TaskCounter), and is called again after each unit it ran.
  std::function<int64_t()> claim;
  ProgressFn progress;

  /// Automatic margin of accuracies: max(0.02, 3·sqrt(chance·(1−chance)/n_test)); NaN for
  /// other metrics (margin_between).
  double margin_for(double chance_level, int64_t n_test) const;
  /// The margin for `metric`: margin_for for accuracies, else 2% of the distance from clean to
  /// the floor in score units (or chance_margin when set).
  double margin_between(double clean, double floor_value, int64_t n_test) const;
  /// The options that determine the results (not threads, shards or caching): a resumed or
  /// merged sweep must match them.
  Json fingerprint() const;
  void validate(int num_sites) const;
};

/// Noisy training: what each (site, σ, repeat) model is trained with.
struct NoisyTrainingOptions {
  ModelSpec spec;
  TrainOptions train;  ///< noise and seed are set per unit
  int eval_draws = 1;  ///< noisy evaluation passes per trained model
  std::string save_dir;  ///< non-empty: save each trained model's checkpoint here
  Json fingerprint() const;
};

/// Append-only record of finished evaluations, one JSON object per line, so a killed sweep
/// resumes where it stopped and shards merge without loss or duplication. The first line holds
/// the fingerprint; a torn last line (killed mid-write) is discarded on open.
class WalkJournal {
 public:
  /// Opens or creates `path`. An existing journal must carry the same fingerprint (else
  /// std::runtime_error naming the difference).
  WalkJournal(std::string path, Json fingerprint);
  const Json& fingerprint() const { return fingerprint_; }
  const std::vector<WalkRecord>& records() const { return records_; }
  /// The record for (site, sigma, repeat), if present.
  const WalkRecord* find(int site, double sigma, int repeat) const;
  /// Appends and flushes to disk (fsync) before returning.
  void append(const std::vector<WalkRecord>& records);
  /// Makes records known (find() returns them) without writing them to this journal: e.g. a
  /// rank's own journal that starts from the merged results of earlier runs.
  void preload(const std::vector<WalkRecord>& records);
  const std::string& path() const { return path_; }
  /// Reads a journal without opening it for writing.
  static std::pair<Json, std::vector<WalkRecord>> read(const std::string& path);

 private:
  std::string path_;
  Json fingerprint_;
  std::vector<WalkRecord> records_;
  std::map<std::tuple<int, double, int>, size_t> index_;
};

/// Merges shard journals into `out` (created): fingerprints must agree; a record present in
/// several shards is kept once (conflicting values throw). Returns the number of records.
size_t merge_journals(const std::vector<std::string>& inputs, const std::string& out);

/// The result of a sweep (or of whatever part of it the journal holds).
/// Values in the metric's units (accuracy by default): clean_accuracy is the clean model's value,
/// chance its floor, threshold the value halfway between them in the score scale.
struct WalkResult {
  Metric metric;
  double clean_accuracy = 0.0;
  double chance = 0.0;
  double margin = 0.0;     ///< in score units (accuracy: accuracy units)
  double threshold = 0.0;  ///< accuracy: (clean + chance) / 2
  std::vector<SiteCurveSummary> sites;
  std::optional<SiteCurveSummary> global;
  std::vector<WalkRecord> records;  ///< every evaluation, in sweep order
  int64_t evaluations = 0;          ///< evaluations run by this call (not read from a journal)
  double seconds = 0.0;
  int units_total = 0;
  int units_done = 0;  ///< units whose walk finished (all shards: complete sweep)
  bool complete() const { return units_done == units_total; }
};

/// Setting 1, clean training + noisy evaluation: walks `opts.sites` of the trained `model` on
/// `test`. With a journal, evaluations already recorded are reused and new ones appended.
WalkResult walk_clean_model(ModelImpl& model, const Dataset& test, const WalkOptions& opts,
                            WalkJournal* journal = nullptr);

/// Setting 2, noisy training: for each (site, σ, repeat) trains a fresh model with the noise
/// on and evaluates it with the same noise; clean reference models give the clean accuracy.
WalkResult walk_noisy_training(const Dataset& train, const Dataset& test,
                               const NoisyTrainingOptions& nt, const WalkOptions& opts,
                               const std::vector<std::string>& site_names,
                               WalkJournal* journal = nullptr);

}  // namespace quell
