// Noise specifications: what happens to a value at a site. Semantics: docs/noise.md.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "quell/device.h"
#include "quell/io.h"

namespace quell {

/// How the noise combines with the clean value x.
enum class NoiseKind {
  kAdditive,        ///< y = x + ε,            ε ~ N(0, σ_add²)
  kMultiplicative,  ///< y = x ⊙ η,            η ~ N(1, σ_mul²)
  kMulAdd,          ///< y = x ⊙ η + ε         (mixed, multiplicative first)
  kAddMul,          ///< y = (x + ε) ⊙ η       (mixed, additive first)
};

/// What σ is measured in.
enum class SigmaScale {
  kAbsolute,  ///< σ as given
  kStd,       ///< σ · std(x_clean) of the site, calibrated on training data
  kRange,     ///< σ · max|x_clean| of the site, calibrated on training data
};

/// When the noise is drawn.
enum class Temporal {
  kDynamic,  ///< fresh on every forward pass, i.i.d. per element (thermal/read noise)
  kStatic,   ///< drawn once per chip instance, identical for every input (process variation)
  kAging,    ///< static pattern whose size grows with device age t: σ(t) = σ·(t/t_ref)^ν
};

/// One noise component. A site may stack several (e.g. static process variation plus dynamic
/// read noise); they are applied in order.
struct NoiseSpec {
  NoiseKind kind = NoiseKind::kAdditive;
  double sigma_add = 0.0;  ///< σ of the additive part (kAdditive, kMulAdd, kAddMul)
  double sigma_mul = 0.0;  ///< σ of the multiplicative part (kMultiplicative, kMulAdd, kAddMul)
  SigmaScale scale = SigmaScale::kAbsolute;
  Temporal temporal = Temporal::kDynamic;
  double age = 1.0;           ///< device age t (kAging), in the units of age_ref
  double age_ref = 1.0;       ///< age at which the deviation has size σ
  double age_exponent = 0.5;  ///< ν: 0.5 = random-walk (diffusive) growth; 1 = linear drift
  /// Static / aging only: one deviation per channel (an analog array's column, shared by every
  /// position it computes) instead of one per element: the pattern of a [C,H,W] sample is
  /// [C,1,1], of a [T,D] sample [1,D]; [D] samples are per element either way.
  bool per_channel = false;

  /// Mixed noise from amplitude A and ratio r: σ_add = A·r, σ_mul = A·(1−r).
  static NoiseSpec mixed(double amplitude, double ratio, bool mul_first);
  /// Factor applied to σ for the temporal mode: (age/age_ref)^ν for kAging, else 1.
  double temporal_factor() const;
  bool is_zero() const { return sigma_add == 0.0 && sigma_mul == 0.0; }
  /// Throws std::invalid_argument naming the problem (negative, NaN or infinite σ; bad ages).
  void validate() const;
  Json to_json() const;
  static NoiseSpec from_json(const Json& j);
  /// Parses one component, e.g. "add:0.1", "mul:0.2:static", "muladd:0.5/0.3:rel=std",
  /// "add:0.05:aging:age=10:ref=1:nu=0.5". Grammar in docs/noise.md.
  static NoiseSpec parse(const std::string& text);
  std::string str() const;
};

/// Everything that happens at one site.
struct SiteConfig {
  std::vector<NoiseSpec> noise;  ///< components, applied in order
  int adc_bits = 0;              ///< 0 = no quantisation; else b-bit uniform over calibrated range
  int repeats = 1;               ///< multi-execution: average of k noisy copies (k >= 1)

  bool is_identity() const;
  bool has_static() const;
  void validate() const;
  Json to_json() const;
  static SiteConfig from_json(const Json& j);
};

/// Noise on conv/linear weights, drawn once per chip instance (programming variation).
struct WeightNoise {
  double sigma = 0.0;
  bool multiplicative = false;  ///< false: W + σ·s·Z ; true: W ⊙ (1 + σ·Z)
  bool relative = true;         ///< additive only: s = max|W| of the layer (else s = 1)
  bool enabled() const { return sigma > 0.0; }
  void validate() const;
  Json to_json() const;
  static WeightNoise from_json(const Json& j);
  /// Parses "0.02", "0.02:abs", "0.02:mul".
  static WeightNoise parse(const std::string& text);
};

/// A resolved configuration: one SiteConfig per site index that has any effect, plus seeds.
struct NoiseConfig {
  std::map<int, SiteConfig> sites;
  WeightNoise weight;
  /// Analog layers on device tiles (quell/device.h): programmed per chip, tile I/O per pass.
  DeviceConfig device;
  uint64_t seed = 1;  ///< base seed of all noise draws

  bool empty() const;
  /// Any static/aging component, weight noise or programmed devices: chips matter.
  bool has_static() const;
  bool has_dynamic() const;  ///< any dynamic component or tile output noise: draws matter
  /// A copy with every σ (sites, weights and the device's DeviceConfig::scale) multiplied by
  /// `factor`.
  NoiseConfig scaled(double factor) const;
  Json to_json(const std::vector<std::string>& site_names) const;
};

/// Resolves a site selector against a model's site names: "all", or a comma-separated list of
/// names, indices and inclusive index ranges "a-b". Throws std::invalid_argument for an unknown
/// name or an index out of range, listing what exists.
std::vector<int> select_sites(const std::string& selector, const std::vector<std::string>& names);

/// Applies command-line rules to `config` (see build_noise_config): a noise rule replaces the
/// selected sites' noise, an ADC rule sets their bits (0 = off), a repeat rule their k.
void apply_noise_rules(NoiseConfig& config, const std::vector<std::string>& noise_rules,
                       const std::vector<std::string>& adc_rules,
                       const std::vector<std::string>& repeat_rules,
                       const std::vector<std::string>& site_names);

/// Builds a NoiseConfig from command-line rules. Each noise rule is
/// "SELECTOR=COMPONENT[+COMPONENT...]"; adc rules "SELECTOR=BITS"; repeat rules "SELECTOR=K".
/// Later rules for the same site replace its noise (adc/repeats merge).
NoiseConfig build_noise_config(const std::vector<std::string>& noise_rules,
                               const std::vector<std::string>& adc_rules,
                               const std::vector<std::string>& repeat_rules,
                               const std::string& weight_noise, uint64_t seed,
                               const std::vector<std::string>& site_names);

/// Reads a NoiseConfig from JSON: {"seed":1, "weight_noise":{...}, "rules":[{"sites":"all",
/// "noise":[{...NoiseSpec...}], "adc_bits":8, "repeats":2}, ...], "device":{...DeviceConfig...}}.
NoiseConfig noise_config_from_json(const Json& j, const std::vector<std::string>& site_names);

}  // namespace quell
