// Analytical cost of one inference on a mixed-signal accelerator: conv/linear layers on analog
// crossbar arrays, everything else (element-wise ops, partial-sum accumulation, denoising
// blocks) on a small digital unit beside them. Formulas, constants and sources: docs/cost.md.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "quell/blocks.h"
#include "quell/device.h"
#include "quell/io.h"

namespace quell {

class ModelImpl;

/// Per-operation constants. Energies in pJ, areas in µm², times in ns, each given at its
/// reference node (analog_ref_nm or digital_ref_nm) and scaled to node_nm by
/// (node_nm / ref)^exponent (docs/cost.md).
struct HardwareConfig {
  std::string name = "isaac";
  std::string description;
  double node_nm = 32.0;  ///< technology node the estimate is for

  // Analog arrays (weight-stationary: every conv/linear layer has its own tiles).
  double analog_ref_nm = 32.0;
  int64_t array_rows = 128;
  int64_t array_cols = 128;
  int input_bits = 8;            ///< activation precision driven into the arrays
  int dac_bits = 1;              ///< bits per DAC conversion; input_bits/dac_bits cycles per vector
  int weight_bits = 8;
  int cell_bits = 2;             ///< a weight spans ceil(weight_bits/cell_bits) columns
  int adc_bits = 8;
  int64_t adcs_per_array = 1;    ///< columns share ADCs: cols/adcs conversions per ADC per cycle
  double cell_energy_pj = 0.0;   ///< per cell and input cycle
  double dac_energy_pj = 0.0;    ///< per DAC conversion (at dac_bits)
  double adc_fom_fj = 0.0;       ///< Walden figure of merit: E_ADC = FoM · 2^adc_bits
  double adc_rate_gsps = 1.2;    ///< conversions per ns per ADC
  double array_read_ns = 100.0;  ///< one input cycle of an array
  double array_area_um2 = 0.0;
  double adc_area_um2 = 0.0;
  double dac_area_um2 = 0.0;

  // Digital logic and memories.
  double digital_ref_nm = 45.0;
  int digital_bits = 8;                   ///< precision of the denoiser unit: 8, 16 or 32
  std::map<int, double> mac_energy_pj;    ///< by precision: multiply + accumulate
  std::map<int, double> mac_area_um2;     ///< by precision
  double op_energy_pj = 0.0;              ///< one element-wise op / partial-sum add (32-bit add)
  double sram_energy_pj_per_byte = 0.0;   ///< for an 8 KB array; ∝ sqrt(size / 8 KB)
  double dram_energy_pj_per_byte = 0.0;
  double sram_bit_area_um2 = 0.0;
  int64_t buffer_kb = 64;                 ///< activation buffer of the analog side
  int64_t pe_rows = 8, pe_cols = 8;       ///< denoiser unit PE array
  int64_t unit_sram_kb = 32;              ///< denoiser unit's weight + activation SRAM
  double clock_mhz = 1000.0;              ///< digital clock
  int activation_bits = 8;                ///< bytes moved per activation = bits / 8

  // Technology scaling. "stillmaker": digital energy and area by the Stillmaker & Baas factors
  // (45 -> 7 nm; power law with the exponents outside that range); "power": (node/ref)^exponent.
  std::string scaling = "stillmaker";
  double digital_energy_exponent = 1.0;
  double digital_area_exponent = 2.0;
  double digital_delay_exponent = 1.0;
  double analog_energy_exponent = 0.0;
  double analog_area_exponent = 0.0;

  /// Sources of the defaults, keyed by field name (copied into every output).
  std::map<std::string, std::string> sources;

  /// Throws std::invalid_argument naming the first bad field (non-positive sizes, bits, ...).
  void validate() const;
  Json to_json() const;
  /// Fields not present keep their value in `base`; an unknown key throws naming it.
  static HardwareConfig from_json(const Json& j, const HardwareConfig& base);
  /// Applies "field=value" (numbers; "mac_energy_pj.8=0.3" for map entries).
  void set(const std::string& assignment);

  // Derived, node-scaled quantities.
  double digital_energy_scale() const;
  double digital_area_scale() const;
  double digital_delay_scale() const;
  double analog_energy_scale() const;
  double analog_area_scale() const;
  double adc_energy_pj() const;  ///< per conversion, scaled
  double mac_energy_at(int bits) const;  ///< scaled; throws for a precision not in the table
  double mac_area_at(int bits) const;
  /// SRAM access energy per byte for an array of `kb` kilobytes, scaled.
  double sram_pj_per_byte(double kb) const;
  int64_t weight_slices() const;  ///< ceil(weight_bits / cell_bits)
  int64_t input_cycles() const;   ///< ceil(input_bits / dac_bits)
  double cycle_ns() const;        ///< max(array read, cols / (adcs · rate)); not node-scaled
};

/// Reads the analog tiles from a device configuration (quell/device.h), so accuracy (quell eval
/// --tile) and cost come from one description: a tile DAC of b bits (aihwkit's count: b bits
/// and a sign, 2^(b+1) − 3 levels) drives b + 1-bit inputs (input_bits; dac_bits is capped at
/// it), an ADC of b bits converts b + 1 bits (adc_bits), rows/cols set the arrays. Ideal
/// converters and rows/cols of 0 keep the preset's values. The sources say where each came from.
void apply_device(HardwareConfig& h, const DeviceConfig& device);

/// Names of the built-in presets, and a preset by name (throws listing the known ones).
std::vector<std::string> hardware_preset_names();
HardwareConfig hardware_preset(const std::string& name);
/// A preset, a JSON file ({"preset": NAME, ...fields}) or a preset name; throws naming the file.
HardwareConfig load_hardware_config(const std::string& name_or_file);

/// Cost of one layer (a site's op, a denoising block, or the averaging of repetitions) for one
/// input sample.
struct LayerCost {
  int site = -1;
  std::string name;
  std::string op;
  std::string unit;  ///< "analog", "digital", "io" or "denoiser"
  int repeats = 1;
  int64_t macs = 0;
  int64_t weights = 0;
  int64_t activations = 0;  ///< output elements
  int64_t tiles = 0;
  int64_t dac_conversions = 0;
  int64_t adc_conversions = 0;
  int64_t digital_ops = 0;  ///< element-wise ops and partial-sum adds (denoiser: its MACs)
  double analog_pj = 0.0;   ///< array cells
  double dac_pj = 0.0;
  double adc_pj = 0.0;
  double digital_pj = 0.0;
  double sram_pj = 0.0;
  double dram_pj = 0.0;
  double latency_ns = 0.0;
  double area_um2 = 0.0;
  double energy_pj() const {
    return analog_pj + dac_pj + adc_pj + digital_pj + sram_pj + dram_pj;
  }
  void add(const LayerCost& o);  ///< sums every count, energy, latency and area
  Json to_json() const;
};

/// Totals and per-layer rows; `base` is the same model without blocks and repetitions.
struct CostReport {
  HardwareConfig config;
  std::vector<LayerCost> layers;     ///< one per site, in site order (repetitions included)
  std::vector<LayerCost> denoisers;  ///< one per block
  LayerCost base;                    ///< totals of the backbone with k = 1 everywhere
  LayerCost total;                   ///< totals with repetitions and blocks
  LayerCost denoiser_total;
  double unit_area_um2 = 0.0;        ///< digital denoiser unit (PE array + SRAM); 0 without blocks
  bool weights_from_dram = false;    ///< block weights exceed the unit's SRAM
  double energy_overhead_pct() const;
  double latency_overhead_pct() const;
  double area_overhead_pct() const;
  Json to_json() const;
};

/// Estimates the cost of one inference of `model` (its sites and denoising blocks) on `hw`.
/// `repeats[i]` is site i's multi-execution count (empty = 1 everywhere; else one entry per
/// site, each >= 1). Throws std::invalid_argument for a bad repeat vector or configuration.
CostReport estimate_cost(const ModelImpl& model, const HardwareConfig& hw,
                         const std::vector<int>& repeats = {});
/// The same with the blocks of `blocks` instead of the model's own.
CostReport estimate_cost(const ModelImpl& model, const HardwareConfig& hw,
                         const std::vector<int>& repeats,
                         const std::vector<BlockPlacement>& blocks);

/// Per-layer table (energy in nJ, latency in µs, area in mm²) and totals, for a terminal.
std::string format_cost_table(const CostReport& report);
/// Long-form CSV: one row per layer and block, then base and total rows.
std::string format_cost_csv(const CostReport& report);

}  // namespace quell
