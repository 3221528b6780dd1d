// Analog devices: the conv/linear/weight-matmul layers' weights held as conductances on analog
// tiles, with a memory technology's programming noise, drift and 1/f read noise over the time
// since programming, global drift compensation, and the tile's input/output path (DAC, output
// noise, ADC and their bounds). The models, their sources and units: docs/devices.md.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "quell/io.h"
#include "quell/rng.h"

namespace quell {

/// A memory technology's statistics as functions of the target conductance. Conductances are in
/// µS; g_T = g / g_max is the normalised target in [0, 1].
struct DeviceModel {
  enum class Kind {
    kIdeal,  ///< conductances exactly as programmed, no drift, no read noise
    kPCM,    ///< Nandakumar et al. 2019 / Joshi et al. 2020 (aihwkit's PCMLikeNoiseModel)
    kReRAM,  ///< Wan et al. 2022 (aihwkit's ReRamWan2022NoiseModel): deviation σ(g_T, t)
    kTable,  ///< a lab's own measurements: σ_prog, μ_ν, σ_ν, Q_s at points of g
  };
  /// One row of a table model (g and sigma_prog in µS).
  struct Point {
    double g = 0.0, sigma_prog = 0.0, nu_mean = 0.0, nu_std = 0.0, q_s = 0.0;
  };
  Kind kind = Kind::kIdeal;
  std::string name = "ideal";  ///< "ideal", "pcm", "reram" or the table's name
  std::string source;          ///< a table's file, recorded
  double g_max = 25.0;         ///< µS that max|w| maps to (PCM 25, ReRAM 40 by default)
  double t0 = 20.0;            ///< s: drift reference, the first read after programming
  double t_read = 250e-9;      ///< s: read duration in the 1/f noise law
  std::vector<Point> table;    ///< kTable: ascending g, interpolated linearly, held at the ends

  /// "ideal", "pcm", "reram", or a .json / .csv table file (format in docs/devices.md).
  /// Throws std::invalid_argument naming the problem.
  static DeviceModel parse(const std::string& text);
  static DeviceModel from_json(const Json& j);
  Json to_json() const;
  bool ideal() const { return kind == Kind::kIdeal; }
  void validate() const;

  // The statistics, elementwise on g (µS, any shape, float64). Ideal: zeros.
  /// σ of the programming noise (µS) at target g.
  torch::Tensor sigma_prog(const torch::Tensor& g) const;
  /// Mean and spread of the drift exponent ν at target g (PCM and tables).
  torch::Tensor nu_mean(const torch::Tensor& g) const;
  torch::Tensor nu_std(const torch::Tensor& g) const;
  /// The 1/f read-noise coefficient Q_s at programmed g (PCM and tables).
  torch::Tensor q_s(const torch::Tensor& g) const;
  /// ReRAM: σ of the deviation from the target (µS) at time t, from the fits at 1 s, 1 day and
  /// 2 days (interpolated linearly in ln t, held outside).
  torch::Tensor reram_sigma(const torch::Tensor& g, double t) const;
};

/// The tile's input and output path (aihwkit's IOParameters, one pass): inputs scaled by their
/// absolute maximum per sample (noise management), clipped to ±inp_bound and quantised with
/// step inp_bound / (2^dac_bits − 2); the product in units of max|w|; Gaussian output noise of σ
/// out_noise; outputs clipped to ±out_bound and quantised with step out_bound / (2^adc_bits − 2);
/// then scaled back. 0 turns a part off. Bias is digital (added after the ADC).
struct TileIO {
  int dac_bits = 0;
  double inp_bound = 1.0;
  bool noise_management = true;  ///< divide each sample's input by its max |x| first
  double out_noise = 0.0;        ///< σ per output and pass (dynamic), normalised units
  int adc_bits = 0;
  double out_bound = 0.0;        ///< 0: no output bound
  /// Iterative bound management: a sample whose ideal output exceeds out_bound is run again
  /// with its input divided by the smallest power of two that brings it inside.
  bool bound_management = false;
  /// The array's size (cells): not simulated (a layer is one tile to the accuracy model), read
  /// by the cost model (quell/cost.h apply_device); 0 = the hardware preset's.
  int64_t rows = 0, cols = 0;

  bool ideal() const {
    return dac_bits == 0 && out_noise == 0.0 && adc_bits == 0 && out_bound == 0.0;
  }
  /// "ideal", "aihwkit" (aihwkit's defaults: dac 7, adc 9, out_bound 12, out_noise 0.06,
  /// iterative bound management) or "dac=8:adc=8:out_noise=0.04:out_bound=10:inp_bound=1:nm=on:
  /// bm=on:rows=256:cols=256", each on top of "ideal" (or of a preset named first:
  /// "aihwkit:out_noise=0").
  static TileIO parse(const std::string& text);
  static TileIO from_json(const Json& j);
  Json to_json() const;
  std::string str() const;
  void validate() const;
};

/// One description of the analog hardware: which layers sit on tiles, their technology, the
/// weight mapping, the time since programming, drift compensation and the tile I/O.
struct DeviceConfig {
  DeviceModel model;
  /// Weight → conductance scale: "layer" (β = g_max / max|W| of the layer) or "channel"
  /// (per output channel: one tile column each). Differential pair: w > 0 on the plus device,
  /// w < 0 on the minus device, the other at 0 µS (both are programmed and drift).
  std::string mapping = "layer";
  double time = 0.0;         ///< s since programming finished (aihwkit's t_inference)
  bool compensation = false; ///< global drift compensation per layer
  double prog_scale = 1.0, drift_scale = 1.0, read_scale = 1.0;  ///< aihwkit's three scales
  /// When the 1/f read noise is drawn: once per chip and time (false, as aihwkit does), or
  /// afresh for every evaluation draw (true: the read noise is then dynamic, and `quell eval
  /// --draws` averages over it).
  bool read_per_draw = false;
  /// Every σ of the device (programming, drift exponent, read noise) times this: what
  /// NoiseConfig::scaled changes, and what a device walk over "scale" sweeps.
  double scale = 1.0;
  TileIO tile;                          ///< the I/O of every analog layer ...
  std::map<int, TileIO> tile_by_site;   ///< ... unless set for its site
  bool all_layers = true;               ///< every analog layer on tiles ...
  std::vector<int> layers;              ///< ... or these sites only (analog layers)

  /// Whether anything differs from digital weights and an ideal path.
  bool enabled() const;
  /// Whether weights change per chip (the model is not ideal on some layer).
  bool programs_weights() const { return !model.ideal() && (all_layers || !layers.empty()); }
  /// Whether site `site` (an analog layer) is on a tile.
  bool on(int site) const;
  /// The tile I/O of site `site`, or nullptr when it is off the tiles or ideal.
  const TileIO* tile_of(int site) const;
  void validate() const;
  Json to_json(const std::vector<std::string>& site_names) const;
  /// {"model": "pcm" | {...}, "mapping", "time", "compensation", "scales", "tile", "layers",
  /// "tile_layers": [{"sites": SELECTOR, ...TileIO}]}; selectors resolved against site_names.
  static DeviceConfig from_json(const Json& j, const std::vector<std::string>& site_names);
};

/// A duration: seconds, or a number with s, min, h, d, w, mo (30 d) or y (365.25 d), e.g. "1h",
/// "10y", "3600". Throws std::invalid_argument for anything else (negative, NaN, unknown unit).
double parse_duration(const std::string& text);
/// "1 s", "1 h", "10 y": the largest unit the value is a whole multiple of, else seconds.
std::string duration_str(double seconds);
/// A comma-separated list of durations, ascending as given.
std::vector<double> parse_durations(const std::string& text);
/// A walk grid of durations with units ("1s:10y", "1h,1d,1y", "1:1e9") in plain seconds, for
/// SigmaGrid::parse.
std::string durations_as_seconds(const std::string& grid);

/// What a chip's devices hold for one clean weight tensor W (dim 0 = outputs) at time t.
struct ProgrammedWeight {
  torch::Tensor weight;     ///< effective weights, W's dtype and device
  torch::Tensor g_plus, g_minus;  ///< conductances at time t (µS, float64, W's shape)
  double compensation = 1.0;      ///< the global drift compensation factor applied (1 if off)
};

/// Programs W on a chip: target conductances from the mapping, programming noise, drift to
/// `cfg.time` with each device's exponent, accumulated 1/f read noise, optional global drift
/// compensation (the factor that brings the layer's summed |W·1| back to its value right after
/// programming). The draws come from (seed, chip, site): the same chip holds the same programmed
/// conductances and exponents at every time; the read noise is drawn per time (and per `draw`
/// with DeviceConfig::read_per_draw).
ProgrammedWeight program_weight(const torch::Tensor& w, const DeviceConfig& cfg, uint64_t seed,
                                uint64_t chip, int site, uint64_t draw = 0);

/// An analog layer's product through the tile I/O `io`: `mvm` computes W·x without bias for an
/// input x; `w_scale` is max|W| of the layer (the weights' full scale); `bias` (may be
/// undefined) is added digitally at the end; `noise` draws the output noise of this pass. The
/// last `vector_dims` dimensions of x (and of the product) form one input (output) vector, whose
/// max |x| the noise management divides by: 1 for a linear layer or matmul (a row, a token),
/// 3 for a convolution (the whole sample: quell scales per image, not per patch). The bias [C]
/// is added on dim 1 when the vectors are whole samples and the product keeps the rank (a
/// convolution's [N, C, H, W]), else on the last dimension. Differentiable: rounding passes the gradient
/// straight through. `subsets`: whether `mvm` may run on some of the samples only (bound
/// management reruns the clipping ones); false when it reads other inputs of the full batch (an
/// imported graph segment), and the whole batch runs again.
torch::Tensor tile_forward(const TileIO& io, const torch::Tensor& x,
                           const std::function<torch::Tensor(const torch::Tensor&)>& mvm,
                           double w_scale, const torch::Tensor& bias, RngStream noise,
                           int vector_dims = 1, bool subsets = true);

}  // namespace quell
