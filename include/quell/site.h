// The site logic: what happens to a value at a noise site (noise, ADC, multi-execution,
// observation). One implementation, independent of how the model was built, so built-in models
// and imported ones share it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <utility>
#include <vector>

#include "quell/noise.h"
#include "quell/rng.h"

namespace quell {

/// Clean-activation statistics of one site, measured on training data (see Model::calibrate).
struct SiteCalibration {
  double std = 0.0;     ///< standard deviation over all elements and samples
  double absmax = 0.0;  ///< max |x|
  double min = 0.0;
  double max = 0.0;
  bool valid = false;
  Json to_json() const;
  static SiteCalibration from_json(const Json& j);
};

/// Applies NoiseConfig site by site. Holds the per-chip static noise patterns and the counter
/// that makes dynamic noise fresh on every forward pass. Random streams are derived from
/// (config seed, chip, draw, site, forward index, repetition, component), so a result depends
/// only on the seeds and the batch size, not on threads or on what ran before.
class SiteEngine {
 public:
  /// Called with (site index, clean value) before the site's noise, when set.
  using Observer = std::function<void(int, const torch::Tensor&)>;

  void configure(NoiseConfig config);
  const NoiseConfig& config() const { return config_; }
  void set_calibration(std::vector<SiteCalibration> calibration);
  const std::vector<SiteCalibration>& calibration() const { return calibration_; }
  /// Selects the chip instance (static / aging patterns, weight noise) and the dynamic draw.
  /// Resets the forward counter, so (chip, draw) fully determines the noise of a pass.
  void set_draw(uint64_t chip, uint64_t draw);
  /// Marks the start of a forward pass (advances the dynamic-noise counter).
  void begin_forward() { ++forward_index_; }
  /// Sets the counter: the k-th pass after set_draw has index k (batch k-1 of a sequential
  /// evaluation), so batches evaluated out of order or on several threads get their noise.
  void set_forward_index(uint64_t index) { forward_index_ = index; }
  uint64_t forward_index() const { return forward_index_; }
  bool has_observer() const { return static_cast<bool>(observer_); }
  void set_observer(Observer observer) { observer_ = std::move(observer); }

  /// Applies site `site` to x: x [N, ...] (N = batch). Identity when the site has no config.
  /// `owned`: x may be modified in place (it is a fresh op output nobody else holds). Under
  /// autograd (grad mode on and x requiring grad) the result is built out of place and
  /// differentiable: noise passes the gradient as its Jacobian (1 for additive, η for
  /// multiplicative), ADC uses the straight-through estimator.
  torch::Tensor apply(torch::Tensor x, int site, bool owned);

  /// The tile I/O of analog layer `site` in this configuration, or nullptr (ideal or digital).
  /// With k repetitions at the site (--repeat), its output noise is that of k reads averaged:
  /// σ / √k (the tile's programmed weights and read noise are the same in every repetition).
  const TileIO* tile(int site) const;
  /// The stream of the tile output noise of analog layer `site` in the current pass.
  RngStream tile_stream(int site) const;

  /// True if site `site` changes its input under the current configuration.
  bool active(int site) const;

  /// If the logic of `site` in this pass (without autograd) is exactly x + sigma * n, with n the
  /// normals of `stream` by flat element index (what add_normal_ adds), returns true with them:
  /// one dynamic additive component, no ADC, repetitions folded in (σ/√k). Lets a fused kernel
  /// draw the same noise. False for anything else, including no noise.
  bool additive_only(int site, RngStream* stream, double* sigma) const;

 private:
  torch::Tensor apply_once(torch::Tensor x, int site, const SiteConfig& cfg, int repetition,
                           bool differentiable, bool owned);
  /// The stream of dynamic noise component `component`, repetition `repetition`, at `site` in
  /// the current pass.
  RngStream dynamic_stream(int site, int repetition, size_t component) const;
  /// The chip's standard-normal pattern of a component: one sample's shape, or one value per
  /// channel (NoiseSpec::per_channel).
  const torch::Tensor& static_pattern(int site, int component, const torch::Tensor& like,
                                     bool per_channel = false);
  double effective_sigma(double sigma, const NoiseSpec& spec, int site) const;
  const SiteCalibration& calib(int site, const char* why) const;

  NoiseConfig config_;
  std::vector<SiteCalibration> calibration_;
  uint64_t chip_ = 0;
  uint64_t draw_ = 0;
  uint64_t forward_index_ = 0;
  std::map<std::pair<int, int>, torch::Tensor> static_cache_;
  mutable std::map<int, TileIO> repeated_tiles_;  ///< tile(): output noise of averaged repetitions
  Observer observer_;
};

}  // namespace quell
