// The cost model: per-layer arithmetic against hand-computed cases, repetitions, denoising
// blocks, technology scaling, configuration files and presets.
#include <gtest/gtest.h>

#include <cmath>

#include "quell/cost.h"
#include "quell/models.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::ScratchDir;
using quell::testing::write_file;

// Round numbers, every scale factor 1 (node = reference nodes, power-law scaling).
HardwareConfig round_config() {
  HardwareConfig h = hardware_preset("isaac");
  h.scaling = "power";
  h.node_nm = h.analog_ref_nm = h.digital_ref_nm = 40.0;
  h.array_rows = h.array_cols = 64;
  h.input_bits = 4;
  h.dac_bits = 2;  // 2 input cycles
  h.weight_bits = 4;
  h.cell_bits = 4;  // 1 slice
  h.adc_bits = 5;
  h.adc_fom_fj = 1000.0;  // 32 pJ per conversion
  h.adcs_per_array = 1;
  h.adc_rate_gsps = 1.0;  // 64 ns to convert 64 columns
  h.array_read_ns = 100.0;
  h.cell_energy_pj = 0.01;
  h.dac_energy_pj = 0.5;
  h.array_area_um2 = 25.0;
  h.adc_area_um2 = 1200.0;
  h.dac_area_um2 = 0.2;
  h.op_energy_pj = 0.1;
  h.mac_energy_pj = {{8, 0.3}};
  h.mac_area_um2 = {{8, 400.0}};
  h.sram_energy_pj_per_byte = 1.25;
  h.buffer_kb = 8;  // 1.25 pJ per byte
  h.unit_sram_kb = 8;
  h.dram_energy_pj_per_byte = 100.0;
  h.sram_bit_area_um2 = 0.5;
  h.activation_bits = 8;
  h.digital_bits = 8;
  h.pe_rows = h.pe_cols = 8;
  h.clock_mhz = 1000.0;  // 1 ns per cycle
  return h;
}

Model lenet() { return make_model(ModelSpec{"lenet5-bn", 1, 28, 28, 10}); }

TEST(CostModel, ConvLayerMatchesHandComputation) {
  // lenet5-bn conv1: 1 -> 6 channels, 5x5, output 6x28x28: fan-in 25, 784 positions.
  const HardwareConfig h = round_config();
  const CostReport r = estimate_cost(*lenet(), h);
  const LayerCost& c = r.layers.at(1);
  ASSERT_EQ(c.name, "conv1");
  EXPECT_EQ(c.unit, "analog");
  EXPECT_EQ(c.macs, 784 * 25 * 6);
  EXPECT_EQ(c.weights, 150);
  EXPECT_EQ(c.tiles, 1);
  const int64_t cycles = 784 * 2;
  EXPECT_EQ(c.dac_conversions, cycles * 25);
  EXPECT_EQ(c.adc_conversions, cycles * 6);
  EXPECT_DOUBLE_EQ(c.analog_pj, cycles * 25 * 6 * 0.01);
  EXPECT_DOUBLE_EQ(c.dac_pj, cycles * 25 * 0.5);
  EXPECT_DOUBLE_EQ(c.adc_pj, cycles * 6 * 32.0);
  EXPECT_EQ(c.digital_ops, cycles * 6 + 4704);  // shift-and-add per conversion, bias
  EXPECT_NEAR(c.digital_pj, (cycles * 6 + 4704) * 0.1, 1e-9);
  EXPECT_NEAR(c.sram_pj, (784 + 4704) * 1.25, 1e-9);  // read input, write output
  EXPECT_DOUBLE_EQ(c.latency_ns, cycles * 100.0);  // read (100 ns) slower than ADCs (64 ns)
  EXPECT_DOUBLE_EQ(c.area_um2, 25.0 + 1200.0 + 64 * 0.2);
}

TEST(CostModel, LinearLayerTilesAndSlices) {
  // lenet5-bn fc1: 400 -> 120. With 2-bit cells a 4-bit weight spans 2 columns: 240 columns.
  HardwareConfig h = round_config();
  h.cell_bits = 2;
  h.adcs_per_array = 4;  // 16 columns per ADC: 16 ns < 100 ns read
  const CostReport r = estimate_cost(*lenet(), h);
  const LayerCost& c = r.layers.at(9);
  ASSERT_EQ(c.name, "fc1");
  const int64_t row_tiles = 7, col_tiles = 4;  // ceil(400/64), ceil(240/64)
  EXPECT_EQ(c.tiles, row_tiles * col_tiles);
  EXPECT_EQ(c.macs, 400 * 120);
  EXPECT_EQ(c.dac_conversions, 2 * 400 * col_tiles);
  EXPECT_EQ(c.adc_conversions, 2 * 240 * row_tiles);
  EXPECT_DOUBLE_EQ(c.analog_pj, 2 * 400 * 240 * 0.01);
  EXPECT_DOUBLE_EQ(c.latency_ns, 2 * 100.0);
  EXPECT_DOUBLE_EQ(c.area_um2, 28 * (25.0 + 4 * 1200.0 + 64 * 0.2));
  // The ADCs set the cycle when they are slower than the read.
  h.adcs_per_array = 1;
  h.array_read_ns = 10.0;
  EXPECT_DOUBLE_EQ(h.cycle_ns(), 64.0);
  EXPECT_DOUBLE_EQ(estimate_cost(*lenet(), h).layers.at(9).latency_ns, 2 * 64.0);
}

TEST(CostModel, DigitalOpsInputAndTotals) {
  const HardwareConfig h = round_config();
  const CostReport r = estimate_cost(*lenet(), h);
  const LayerCost& in = r.layers.at(0);
  EXPECT_EQ(in.unit, "io");
  EXPECT_DOUBLE_EQ(in.dram_pj, 784 * 100.0);
  const LayerCost& bn = r.layers.at(2);
  EXPECT_EQ(bn.digital_ops, 2 * 4704);
  EXPECT_NEAR(bn.digital_pj, 2 * 4704 * 0.1, 1e-9);
  EXPECT_DOUBLE_EQ(bn.latency_ns, std::ceil(2 * 4704 / 64.0));
  const LayerCost& pool = r.layers.at(4);
  EXPECT_EQ(pool.digital_ops, 6 * 14 * 14 * 4);  // 2x2 window per output
  // Totals are the sums of the rows; the base equals the total without repeats or blocks.
  double e = 0, t = 0;
  int64_t macs = 0;
  for (const auto& l : r.layers) {
    e += l.energy_pj();
    t += l.latency_ns;
    macs += l.macs;
  }
  EXPECT_NEAR(r.total.energy_pj(), e, 1e-6 * e);
  EXPECT_NEAR(r.total.latency_ns, t, 1e-9 * t);
  EXPECT_EQ(r.total.macs, macs);
  EXPECT_EQ(macs, 117600 + 240000 + 48000 + 10080 + 840);
  EXPECT_DOUBLE_EQ(r.base.energy_pj(), r.total.energy_pj());
  EXPECT_DOUBLE_EQ(r.energy_overhead_pct(), 0.0);
  // The activation buffer is part of the chip area.
  double tiles_area = 0;
  for (const auto& l : r.layers) tiles_area += l.area_um2;
  EXPECT_DOUBLE_EQ(r.total.area_um2, tiles_area + 8 * 8192 * 0.5);
}

TEST(CostModel, RepetitionsMultiplyTheSiteAndAddTheAverage) {
  const HardwareConfig h = round_config();
  const Model m = lenet();
  const CostReport once = estimate_cost(*m, h);
  std::vector<int> k(16, 1);
  k[1] = 3;
  const CostReport r = estimate_cost(*m, h, k);
  const LayerCost& c1 = once.layers[1];
  const LayerCost& c3 = r.layers[1];
  EXPECT_EQ(c3.repeats, 3);
  EXPECT_EQ(c3.adc_conversions, 3 * c1.adc_conversions);
  EXPECT_DOUBLE_EQ(c3.adc_pj, 3 * c1.adc_pj);
  EXPECT_DOUBLE_EQ(c3.area_um2, c1.area_um2);  // same arrays, time-multiplexed
  const double avg_pj = 3 * 4704 * 0.1;        // k-1 adds and one scale per element
  EXPECT_NEAR(c3.energy_pj(), 3 * c1.energy_pj() + avg_pj, 1e-9 * c3.energy_pj());
  EXPECT_NEAR(c3.latency_ns, 3 * c1.latency_ns + std::ceil(3 * 4704 / 64.0), 1e-9);
  EXPECT_NEAR(r.total.energy_pj() - once.total.energy_pj(), 2 * c1.energy_pj() + avg_pj,
              1e-6 * r.total.energy_pj());
  EXPECT_DOUBLE_EQ(r.base.energy_pj(), once.total.energy_pj());
  EXPECT_NEAR(r.energy_overhead_pct(),
              100.0 * (2 * c1.energy_pj() + avg_pj) / once.total.energy_pj(), 1e-6);
  EXPECT_DOUBLE_EQ(r.area_overhead_pct(), 0.0);
  // Other sites are unchanged.
  EXPECT_DOUBLE_EQ(r.layers[5].energy_pj(), once.layers[5].energy_pj());
  // Bad repeat vectors.
  EXPECT_THROW(estimate_cost(*m, h, std::vector<int>(3, 1)), std::invalid_argument);
  k[4] = 0;
  EXPECT_THROW(estimate_cost(*m, h, k), std::invalid_argument);
}

TEST(CostModel, DenoisingBlocksRunOnTheDigitalUnit) {
  const HardwareConfig h = round_config();
  Model m = lenet();
  // A bottleneck r=2 after conv1 (6x28x28: m = 3) and an mlp r=4 after fc2 (84: m = 21).
  m->set_denoisers({{1, BlockSpec::parse("bottleneck:r=2")}, {12, BlockSpec::parse("mlp:r=4")}});
  const CostReport r = estimate_cost(*m, h);
  ASSERT_EQ(r.denoisers.size(), 2u);
  const LayerCost& b = r.denoisers[0];
  EXPECT_EQ(b.unit, "denoiser");
  EXPECT_EQ(b.macs, 784 * (6 * 3 + 9 * 3 * 3 + 3 * 6));
  EXPECT_EQ(b.weights, BlockSpec::parse("bottleneck:r=2").params({6, 28, 28}));
  EXPECT_NEAR(b.digital_pj, b.macs * 0.3 + 4704 * 0.1, 1e-9);
  // Weights, input and output, and the two hidden maps of m x 28 x 28 each written and read
  // back, one byte per value.
  EXPECT_NEAR(b.sram_pj, (b.weights + 2 * 4704 + 4 * 3 * 784) * 1.25, 1e-9);
  EXPECT_DOUBLE_EQ(b.latency_ns, std::ceil((b.macs + 4704) / 64.0));
  const LayerCost& mlp = r.denoisers[1];
  EXPECT_EQ(mlp.macs, 2 * 84 * 21);
  // Totals: base + blocks; area: base + the unit (PE array + SRAM).
  EXPECT_NEAR(r.total.energy_pj(), r.base.energy_pj() + b.energy_pj() + mlp.energy_pj(),
              1e-6 * r.total.energy_pj());
  EXPECT_DOUBLE_EQ(r.unit_area_um2, 64 * 400.0 + 8 * 8192 * 0.5);
  EXPECT_NEAR(r.total.area_um2, r.base.area_um2 + r.unit_area_um2, 1e-6);
  EXPECT_FALSE(r.weights_from_dram);
  EXPECT_GT(r.energy_overhead_pct(), 0.0);
  // Blocks larger than the unit's SRAM stream their weights from DRAM on every inference.
  HardwareConfig small = h;
  small.unit_sram_kb = 0;
  const CostReport d = estimate_cost(*m, small);
  EXPECT_TRUE(d.weights_from_dram);
  EXPECT_NEAR(d.denoiser_total.dram_pj, (b.weights + mlp.weights) * 100.0, 1e-9);
  // The same blocks given explicitly cost the same.
  Model plain = lenet();
  const CostReport e = estimate_cost(*plain, h, {}, m->denoiser_placement());
  EXPECT_DOUBLE_EQ(e.total.energy_pj(), r.total.energy_pj());
}

TEST(CostModel, TechnologyScaling) {
  HardwareConfig h = hardware_preset("isaac");
  h.node_nm = 45.0;
  EXPECT_DOUBLE_EQ(h.digital_energy_scale(), 1.0);
  h.node_nm = 32.0;  // Stillmaker & Baas factors from 45 nm
  EXPECT_NEAR(h.digital_energy_scale(), 0.66, 1e-12);
  EXPECT_NEAR(h.digital_area_scale(), 0.46, 1e-12);
  h.node_nm = 7.0;
  EXPECT_NEAR(h.digital_energy_scale(), 0.094, 1e-12);
  // Between table nodes: between their factors; smaller node, cheaper.
  double last = INFINITY;
  for (double node : {90.0, 45.0, 40.0, 32.0, 22.0, 16.0, 12.0, 7.0, 5.0}) {
    h.node_nm = node;
    EXPECT_LT(h.digital_energy_scale(), last) << node;
    last = h.digital_energy_scale();
  }
  h.node_nm = 22.0;
  EXPECT_GT(h.digital_area_scale(), 0.21);
  EXPECT_LT(h.digital_area_scale(), 0.46);
  // Above 45 nm and with "power": (node/ref)^exponent.
  h.node_nm = 90.0;
  EXPECT_NEAR(h.digital_energy_scale(), 2.0, 1e-12);
  EXPECT_NEAR(h.digital_area_scale(), 4.0, 1e-12);
  h.scaling = "power";
  h.node_nm = 22.5;
  EXPECT_NEAR(h.digital_energy_scale(), 0.5, 1e-12);
  EXPECT_NEAR(h.digital_delay_scale(), 0.5, 1e-12);
  // Analog constants are not scaled by default; the ADC follows 2^bits.
  EXPECT_DOUBLE_EQ(h.analog_energy_scale(), 1.0);
  const double e8 = h.adc_energy_pj();
  h.adc_bits = 6;
  EXPECT_NEAR(h.adc_energy_pj(), e8 / 4.0, 1e-12);
  // The digital energy of a model falls with the node; its ADC energy does not.
  HardwareConfig a = hardware_preset("isaac"), b = a;
  b.node_nm = 16.0;
  const Model m = lenet();
  const CostReport ra = estimate_cost(*m, a), rb = estimate_cost(*m, b);
  EXPECT_LT(rb.total.digital_pj, ra.total.digital_pj);
  EXPECT_DOUBLE_EQ(rb.total.adc_pj, ra.total.adc_pj);
}

TEST(CostModel, PresetsHaveSourcesAndEveryModelIsCosted) {
  for (const auto& name : hardware_preset_names()) {
    const HardwareConfig h = hardware_preset(name);
    EXPECT_NO_THROW(h.validate()) << name;
    EXPECT_FALSE(h.description.empty()) << name;
    for (const char* f : {"cell_energy_pj", "dac_energy_pj", "adc_fom_fj", "mac_energy_pj",
                          "sram_energy_pj_per_byte", "dram_energy_pj_per_byte", "scaling"}) {
      EXPECT_TRUE(h.sources.count(f)) << name << " has no source for " << f;
    }
    for (const auto& model : model_names()) {
      const ModelSpec spec{model, 3, 32, 32, 10};
      const Model m = make_model(spec);
      const CostReport r = estimate_cost(*m, h);
      EXPECT_EQ(r.layers.size(), static_cast<size_t>(m->num_sites())) << model;
      EXPECT_GT(r.total.energy_pj(), 0.0) << model;
      EXPECT_GT(r.total.latency_ns, 0.0) << model;
      EXPECT_TRUE(std::isfinite(r.total.area_um2)) << model;
      EXPECT_FALSE(format_cost_table(r).empty());
    }
  }
  EXPECT_THROW(hardware_preset("tpu"), std::invalid_argument);
}

TEST(CostModel, ConfigJsonRoundTripSetAndErrors) {
  const HardwareConfig h = hardware_preset("isaac");
  const HardwareConfig back = HardwareConfig::from_json(h.to_json(), HardwareConfig{});
  EXPECT_EQ(back.to_json(), h.to_json());
  HardwareConfig s = h;
  s.set("adc_bits=6");
  s.set("mac_energy_pj.8=0.25");
  EXPECT_EQ(s.adc_bits, 6);
  EXPECT_DOUBLE_EQ(s.mac_energy_pj.at(8), 0.25);
  EXPECT_EQ(s.sources.at("adc_bits"), "set by the user");
  EXPECT_THROW(s.set("adc_bitz=6"), std::invalid_argument);
  EXPECT_THROW(s.set("adc_bits=six"), std::invalid_argument);
  EXPECT_THROW(s.set("adc_bits"), std::invalid_argument);
  HardwareConfig bad = h;
  bad.adc_bits = 0;
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = h;
  bad.dac_bits = 9;  // more than input_bits
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = h;
  bad.cell_energy_pj = std::nan("");
  EXPECT_THROW(bad.validate(), std::invalid_argument);
  bad = h;
  bad.digital_bits = 4;  // no MAC entry
  EXPECT_THROW(bad.validate(), std::invalid_argument);

  const ScratchDir dir;
  const std::string file = dir.file("hw.json");
  write_file(file, R"({"preset": "isaac-adc6", "array_rows": 256, "array_cols": 256})");
  const HardwareConfig f = load_hardware_config(file);
  EXPECT_EQ(f.adc_bits, 6);
  EXPECT_EQ(f.array_rows, 256);
  write_file(file, R"({"array_rowz": 256})");
  try {
    load_hardware_config(file);
    ADD_FAILURE() << "unknown field accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("array_rowz"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("hw.json"), std::string::npos) << e.what();
  }
  write_file(file, "{not json");
  EXPECT_THROW(load_hardware_config(file), std::invalid_argument);
  EXPECT_THROW(load_hardware_config(dir.file("missing.json")),
               std::invalid_argument);
}

}  // namespace
}  // namespace quell
