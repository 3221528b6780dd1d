// Analog devices (quell/device.h, docs/devices.md): every published formula against values
// computed by hand, the moments of programming noise, drift and read noise (tolerances from the
// sample sizes), drift compensation restoring the mean response, an ideal device reproducing
// the clean model exactly, the tile I/O's converters, the readers' errors, and the studies over
// time (eval rows, device walk, hardware-aware training).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "quell/device.h"
#include "quell/eval.h"
#include "quell/eval_study.h"
#include "quell/script.h"
#include "quell/train.h"
#include "quell/walk.h"
#include "test_util.h"

namespace quell {
namespace {

namespace fs = std::filesystem;
using quell::testing::blob_dataset;
using quell::testing::throws_with;

double at(const torch::Tensor& t, int64_t i) { return t.flatten()[i].item<double>(); }

torch::Tensor us(std::initializer_list<double> v) { return torch::tensor(std::vector<double>(v), torch::kDouble); }

// ---- Formulas, by hand ------------------------------------------------------------------------

TEST(Devices, PcmFormulasMatchHandValues) {
  const DeviceModel pcm = DeviceModel::parse("pcm");
  ASSERT_EQ(pcm.g_max, 25.0);
  // σ_prog = −1.1731 g_T² + 1.9650 g_T + 0.2635 (µS at g_max = 25 µS).
  const torch::Tensor sp = pcm.sigma_prog(us({0.0, 12.5, 25.0}));
  EXPECT_NEAR(at(sp, 0), 0.26348, 1e-12);
  EXPECT_NEAR(at(sp, 1), 0.26348 + 1.9650 * 0.5 - 1.1731 * 0.25, 1e-12);  // 0.952705
  EXPECT_NEAR(at(sp, 2), 1.05538, 1e-12);
  // μ_ν = min(max(−0.0155 ln g_T + 0.0244, 0.049), 0.1), σ_ν = min(max(−0.0125 ln g_T − 0.0059,
  // 0.008), 0.045) at g_T = 1, 0.5, 0.1, 0.01, 1e-4, and 0 (clipped at 1e-7 as aihwkit does).
  const torch::Tensor g = us({25.0, 12.5, 2.5, 0.25, 0.0025, 0.0});
  const torch::Tensor mu = pcm.nu_mean(g), sd = pcm.nu_std(g), qs = pcm.q_s(g);
  const double mu_hand[] = {0.049, 0.049, 0.06009006894140771, 0.09578013788281542, 0.1, 0.1};
  const double sd_hand[] = {0.008, 0.008, 0.02288231366242557, 0.045, 0.045, 0.045};
  // Q_s = min(0.0088 / g_T^0.65, 0.2).
  const double qs_hand[] = {0.0088, 0.013808680122982813, 0.03930815610928476, 0.17558308371726142,
                            0.2, 0.2};
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(at(mu, i), mu_hand[i], 1e-12) << i;
    EXPECT_NEAR(at(sd, i), sd_hand[i], 1e-12) << i;
    EXPECT_NEAR(at(qs, i), qs_hand[i], 1e-12) << i;
  }
  // Another g_max scales the µS polynomial as aihwkit does (σ · g_max / 25).
  DeviceModel wide = pcm;
  wide.g_max = 50.0;
  EXPECT_NEAR(at(wide.sigma_prog(us({25.0})), 0), 0.952705 * 2.0, 1e-12);
}

TEST(Devices, ReramFitsAndTheirInterpolationInLogTime) {
  const DeviceModel r = DeviceModel::parse("reram");
  ASSERT_EQ(r.g_max, 40.0);
  const torch::Tensor g = us({20.0});  // g_T = 0.5
  const double s1 = 0.348 + 16.030 * 0.5 - 43.853 * 0.25 + 45.393 * 0.125 - 16.815 * 0.0625;
  const double sday = 0.701 + 22.086 * 0.5 - 50.773 * 0.25 + 47.095 * 0.125 - 16.458 * 0.0625;
  const double s2 = 0.782 + 20.274 * 0.5 - 43.507 * 0.25 + 37.062 * 0.125 - 11.934 * 0.0625;
  EXPECT_NEAR(at(r.reram_sigma(g, 1.0), 0), s1, 1e-12);
  EXPECT_NEAR(at(r.reram_sigma(g, 0.01), 0), s1, 1e-12);  // before 1 s: the 1 s fit
  EXPECT_NEAR(at(r.reram_sigma(g, 86400.0), 0), sday, 1e-12);
  EXPECT_NEAR(at(r.reram_sigma(g, 172800.0), 0), s2, 1e-12);
  EXPECT_NEAR(at(r.reram_sigma(g, 3.0e8), 0), s2, 1e-12);  // past 2 days: held
  // Halfway between 1 s and 1 day in ln t (t = sqrt(86400) s): the mean of the two fits.
  EXPECT_NEAR(at(r.reram_sigma(g, std::sqrt(86400.0)), 0), 0.5 * (s1 + sday), 1e-9);
  EXPECT_NEAR(at(r.sigma_prog(g), 0), s1, 1e-12);
}

TEST(Devices, DurationsParseWithUnitsAndRejectNonsense) {
  EXPECT_EQ(parse_duration("3600"), 3600.0);
  EXPECT_EQ(parse_duration("1h"), 3600.0);
  EXPECT_EQ(parse_duration("2 d"), 172800.0);
  EXPECT_EQ(parse_duration("1mo"), 30 * 86400.0);
  EXPECT_EQ(parse_duration("10y"), 10 * 365.25 * 86400.0);
  EXPECT_EQ(parse_duration("1e3s"), 1000.0);
  EXPECT_EQ(parse_duration("0"), 0.0);
  EXPECT_EQ(parse_durations("1s,1h,10y").size(), 3u);
  EXPECT_EQ(duration_str(3600.0), "1 h");
  EXPECT_EQ(duration_str(10 * 365.25 * 86400.0), "10 y");
  EXPECT_EQ(durations_as_seconds("1s:1d"), "1:86400");
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { parse_duration("1 fortnight"); },
                                                 {"fortnight", "unknown unit"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { parse_duration("-1h"); }, {">= 0"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { parse_duration("nan"); }, {"nan"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { parse_durations("1h,,2h"); }, {"empty"}));
}

// ---- Moments of the noise sources -------------------------------------------------------------

// n weights all at +w_max/2 (target 12.5 µS on the plus device, 0 on the minus device).
constexpr int64_t kN = 200000;
torch::Tensor half_weights() {
  torch::Tensor w = torch::full({kN / 100, 100}, 0.5f);
  w[0][0] = 1.0f;  // max |w| = 1: the target of the others is g_max / 2
  return w;
}

DeviceConfig pcm_only(double prog, double drift, double read, double time) {
  DeviceConfig c;
  c.model = DeviceModel::parse("pcm");
  c.prog_scale = prog;
  c.drift_scale = drift;
  c.read_scale = read;
  c.time = time;
  return c;
}

// Mean and standard deviation of the flattened tensor without its first element.
std::pair<double, double> moments(const torch::Tensor& t) {
  const torch::Tensor v = t.flatten().narrow(0, 1, t.numel() - 1);
  return {v.mean().item<double>(), v.std().item<double>()};
}

TEST(Devices, ProgrammingNoiseHasThePublishedSpread) {
  const auto p = program_weight(half_weights(), pcm_only(1, 0, 0, 0), 7, 0, 3);
  const auto [mean, sd] = moments(p.g_plus);
  const double sigma = 0.952705;  // σ_prog(12.5 µS)
  // Mean within 5 standard errors; the sample std of n normals within 5 of its SE 1/sqrt(2n).
  EXPECT_NEAR(mean, 12.5, 5 * sigma / std::sqrt(double(kN)));
  EXPECT_NEAR(sd / sigma, 1.0, 5 / std::sqrt(2.0 * kN));
  // The unused minus device is programmed towards 0 µS: N(0, 0.26348²) clipped at 0, whose mean
  // is σ/sqrt(2π).
  const auto [mean0, sd0] = moments(p.g_minus);
  (void)sd0;
  EXPECT_NEAR(mean0, 0.26348 / std::sqrt(2 * M_PI), 0.01);
  EXPECT_GE(p.g_minus.min().item<double>(), 0.0);
  // The effective weight is (g+ − g−) · max|w| / g_max.
  EXPECT_NEAR(at(p.weight, 5), (at(p.g_plus, 5) - at(p.g_minus, 5)) / 25.0, 1e-6);
}

TEST(Devices, DriftExponentsFollowTheirDistribution) {
  const double t = 86400.0;
  const auto p = program_weight(half_weights(), pcm_only(0, 1, 0, t), 7, 0, 3);
  // g(t) = g_T ((t + t0) / t0)^−ν: ν = −ln(g / g_T) / ln((t + t0) / t0) ~ |N(0.049, 0.008²)|.
  const torch::Tensor nu = -torch::log(p.g_plus / 12.5) / std::log((t + 20.0) / 20.0);
  const auto [mean, sd] = moments(nu);
  EXPECT_NEAR(mean, 0.049, 5 * 0.008 / std::sqrt(double(kN)));
  EXPECT_NEAR(sd / 0.008, 1.0, 5 / std::sqrt(2.0 * kN));
  // The same chip at another time: the same exponent per device (drawn once per chip).
  const auto later = program_weight(half_weights(), pcm_only(0, 1, 0, 100 * t), 7, 0, 3);
  const torch::Tensor nu_later =
      -torch::log(later.g_plus / 12.5) / std::log((100 * t + 20.0) / 20.0);
  // (element 0 is the one at max |w|, whose target is 25 µS)
  const auto rest = [](const torch::Tensor& t) { return t.flatten().narrow(0, 1, t.numel() - 1); };
  EXPECT_LT((rest(nu_later) - rest(nu)).abs().max().item<double>(), 1e-9);
  // Another chip: other exponents.
  const auto other = program_weight(half_weights(), pcm_only(0, 1, 0, t), 7, 1, 3);
  EXPECT_GT((other.g_plus - p.g_plus).abs().max().item<double>(), 1e-3);
}

TEST(Devices, ReadNoiseGrowsWithTheLogOfTime) {
  for (double t : {0.0, 3600.0, 3.15e8}) {
    const auto p = program_weight(half_weights(), pcm_only(0, 0, 1, t), 7, 0, 3);
    // σ = g · Q_s(g) · sqrt(ln((t + t0 + t_read) / (2 t_read))).
    const double sigma = 12.5 * 0.013808680122982813 *
                         std::sqrt(std::log((t + 20.0 + 250e-9) / (2 * 250e-9)));
    const auto [mean, sd] = moments(p.g_plus);
    EXPECT_NEAR(mean, 12.5, 5 * sigma / std::sqrt(double(kN))) << t;
    EXPECT_NEAR(sd / sigma, 1.0, 5 / std::sqrt(2.0 * kN)) << t;
  }
}

TEST(Devices, ReadNoiseIsDrawnPerTimeOrPerDraw) {
  DeviceConfig c = pcm_only(1, 0, 1, 3600.0);  // programming and read noise, no drift
  const torch::Tensor w = half_weights();
  // Per time (aihwkit): every draw of a chip holds the same conductances.
  EXPECT_TRUE(torch::equal(program_weight(w, c, 7, 0, 3, 0).weight,
                           program_weight(w, c, 7, 0, 3, 1).weight));
  NoiseConfig cfg;
  cfg.device = c;
  EXPECT_FALSE(cfg.has_dynamic());
  // Per draw: the read noise differs between draws, programming and drift do not.
  c.read_per_draw = true;
  cfg.device = c;
  EXPECT_TRUE(cfg.has_dynamic());
  const auto a = program_weight(w, c, 7, 0, 3, 0), b = program_weight(w, c, 7, 0, 3, 1);
  EXPECT_FALSE(torch::equal(a.weight, b.weight));
  EXPECT_TRUE(torch::equal(a.weight, program_weight(w, c, 7, 0, 3, 0).weight));
  DeviceConfig no_read = c;
  no_read.read_scale = 0;
  EXPECT_TRUE(torch::equal(program_weight(w, no_read, 7, 0, 3, 0).weight,
                           program_weight(w, no_read, 7, 0, 3, 1).weight));
  // The spread between two draws is the read noise's: sqrt(2) sigma.
  const double sigma = 12.5 * 0.013808680122982813 *
                       std::sqrt(std::log((3600.0 + 20.0 + 250e-9) / (2 * 250e-9)));
  const double sd = moments(a.g_plus - b.g_plus).second;
  EXPECT_NEAR(sd / (std::sqrt(2.0) * sigma), 1.0, 0.05);  // programming noise changes g a little
  EXPECT_EQ(DeviceConfig::from_json(c.to_json({}), {}).read_per_draw, true);
}

TEST(Devices, ReramDeviationGrowsFromOneSecondToTwoDays) {
  DeviceConfig c;
  c.model = DeviceModel::parse("reram");
  auto spread = [&](double t) {
    c.time = t;
    return moments(program_weight(half_weights(), c, 7, 0, 3).g_plus).second;
  };
  const torch::Tensor g = us({20.0});
  EXPECT_NEAR(spread(1.0) / at(c.model.reram_sigma(g, 1.0), 0), 1.0, 5 / std::sqrt(2.0 * kN));
  EXPECT_NEAR(spread(172800.0) / at(c.model.reram_sigma(g, 172800.0), 0), 1.0,
              5 / std::sqrt(2.0 * kN));
}

// ---- Drift compensation, the ideal device -----------------------------------------------------

TEST(Devices, DriftCompensationRestoresTheMeanResponse) {
  torch::manual_seed(3);
  const torch::Tensor w = torch::randn({64, 16, 3, 3}) * 0.1 + 0.02;
  auto response = [](const torch::Tensor& v) {
    return v.reshape({v.size(0), -1}).sum(1).abs().sum().item<double>();
  };
  DeviceConfig c = pcm_only(0, 1, 0, 3.15e8);  // ten years of drift alone
  const auto drifted = program_weight(w, c, 1, 0, 1);
  EXPECT_LT(response(drifted.weight), 0.5 * response(w));  // (t/t0)^−0.05 and worse
  c.compensation = true;
  const auto compensated = program_weight(w, c, 1, 0, 1);
  EXPECT_NEAR(response(compensated.weight) / response(w), 1.0, 1e-5);
  EXPECT_GT(compensated.compensation, 2.0);
  // With programming and read noise the reference is the programmed state, as in aihwkit.
  c.prog_scale = c.read_scale = 1;
  const auto noisy = program_weight(w, c, 1, 0, 1);
  DeviceConfig at_zero = c;
  at_zero.time = 0;
  at_zero.read_scale = at_zero.drift_scale = 0;
  at_zero.compensation = false;
  const auto programmed = program_weight(w, at_zero, 1, 0, 1);
  EXPECT_NEAR(response(noisy.weight) / response(programmed.weight), 1.0, 1e-5);
}

Model trained_mlp(const Dataset& data) {
  torch::manual_seed(1);
  Model m = make_model(ModelSpec::for_dataset("mlp-bn", data));
  TrainOptions o;
  o.epochs = 2;
  o.batch_size = 64;
  o.lr = 3e-3;
  train(*m, data, o);
  return m;
}

TEST(Devices, AnIdealDeviceReproducesTheCleanModelExactly) {
  const Dataset data = blob_dataset(400, 1, 28, 28, 10, 5);
  Model m = trained_mlp(data);
  m->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor clean = m->forward(data.inputs);
  NoiseConfig cfg;
  cfg.device.model = DeviceModel::parse("ideal");
  EXPECT_FALSE(cfg.device.enabled());
  // A PCM device with every effect scaled to zero at t = 0 holds the weights exactly.
  cfg.device = pcm_only(0, 0, 0, 0);
  for (const auto& [site, w] : m->analog_weights()) {
    EXPECT_TRUE(torch::equal(program_weight(w, cfg.device, 1, 0, site).weight, w)) << site;
  }
  {
    WeightNoiseGuard guard(*m, cfg, 0);
    EXPECT_TRUE(torch::equal(m->forward(data.inputs), clean));
  }
  // The guard restores the clean weights after a real device.
  cfg.device = pcm_only(1, 1, 1, 86400.0);
  {
    WeightNoiseGuard guard(*m, cfg, 0);
    EXPECT_FALSE(torch::equal(m->forward(data.inputs), clean));
  }
  EXPECT_TRUE(torch::equal(m->forward(data.inputs), clean));
}

// ---- Tile I/O ---------------------------------------------------------------------------------

TEST(Devices, DacAndAdcQuantiseOnTheirGrids) {
  const auto identity = [](const torch::Tensor& x) { return x; };
  TileIO io;
  io.dac_bits = 3;  // step = bound / (2^3 − 2) = 1/6 of the sample's max |x|
  const torch::Tensor x = torch::tensor({{0.1, -0.5, 1.0, 0.3}, {2.0, 0.4, -0.7, 0.0}});
  const torch::Tensor y = tile_forward(io, x, identity, 1.0, {}, RngStream{1, 2});
  for (int64_t n = 0; n < 2; ++n) {
    const double scale = x[n].abs().max().item<double>();
    for (int64_t i = 0; i < 4; ++i) {
      const double q = std::round(x[n][i].item<double>() / scale * 6.0) / 6.0 * scale;
      EXPECT_NEAR(y[n][i].item<double>(), q, 1e-6) << n << "," << i;
    }
  }
  // ADC: outputs clipped to ±out_bound and rounded to out_bound / (2^b − 2).
  TileIO adc;
  adc.noise_management = false;
  adc.adc_bits = 3;
  adc.out_bound = 2.0;
  const torch::Tensor big = torch::tensor({{0.2, 0.5, -3.0, 2.6}});
  const torch::Tensor z = tile_forward(adc, big, identity, 1.0, {}, RngStream{1, 2});
  const double expected[] = {1.0 / 3.0, 2.0 / 3.0, -2.0, 2.0};
  for (int i = 0; i < 4; ++i) EXPECT_NEAR(z[0][i].item<double>(), expected[i], 1e-6);
  // Bound management runs a clipping sample again with its input halved (in units of the
  // bound) until it fits, and scales the output back: no clipping, the product preserved.
  adc.adc_bits = 0;
  adc.bound_management = true;
  const torch::Tensor fit = tile_forward(adc, big, identity, 1.0, {}, RngStream{1, 2});
  EXPECT_TRUE(torch::allclose(fit, big.to(fit.scalar_type()), 1e-6, 1e-6));
}

TEST(Devices, TheFusedEvaluationPathEqualsTheTensorPath) {
  // Without autograd the tile I/O runs as fused loops; with autograd on, as tensor ops. Both
  // must give the same outputs: noise, converters, bound management and bias included.
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({6, 3, 8, 8}) * 2.0;
  const torch::Tensor w = torch::randn({5, 3, 3, 3});
  const torch::Tensor bias = torch::randn({5});
  const auto conv = [&](const torch::Tensor& v) { return torch::conv2d(v, w, {}, 1, 1); };
  const torch::Tensor rows = torch::randn({4, 7, 9});
  const torch::Tensor wl = torch::randn({6, 9});
  const auto linear = [&](const torch::Tensor& v) { return torch::linear(v, wl); };
  for (const char* spec : {"dac=5", "aihwkit", "aihwkit:out_bound=3", "dac=4:adc=4:out_bound=2:nm=off",
                           "out_noise=0.1"}) {
    const TileIO io = TileIO::parse(spec);
    const double ws = w.abs().max().item<double>();
    torch::Tensor fused, tensor_path, fused_rows, tensor_rows;
    {
      torch::NoGradGuard no_grad;
      fused = tile_forward(io, x, conv, ws, bias, RngStream{3, 4}, 3);
      fused_rows = tile_forward(io, rows, linear, 1.5, {}, RngStream{3, 5}, 1);
    }
    {
      torch::AutoGradMode grad(true);
      tensor_path = tile_forward(io, x, conv, ws, bias, RngStream{3, 4}, 3);
      tensor_rows = tile_forward(io, rows, linear, 1.5, {}, RngStream{3, 5}, 1);
    }
    // Up to float rounding (a quantisation step may flip where a value sits on a boundary).
    const double step = io.adc_bits > 0 ? io.out_bound / ((1 << io.adc_bits) - 2) : 0.0;
    const double tol = 1e-4 + 1.01 * step * ws * x.abs().max().item<double>();
    EXPECT_LT((fused - tensor_path).abs().max().item<double>(), tol) << spec;
    EXPECT_LT((fused - tensor_path).abs().gt(1e-3).sum().item<int64_t>(), fused.numel() / 100 + 1)
        << spec;
    EXPECT_LT((fused_rows - tensor_rows).abs().gt(1e-3).sum().item<int64_t>(),
              fused_rows.numel() / 100 + 1)
        << spec;
    // A product that must see the whole batch (an imported segment reading other inputs) gives
    // the same result when bound management reruns whole batches.
    const auto whole = [&](const torch::Tensor& v) {
      EXPECT_EQ(v.size(0), rows.size(0));
      return linear(v);
    };
    torch::NoGradGuard no_grad;
    const torch::Tensor batch = tile_forward(io, rows, whole, 1.5, {}, RngStream{3, 5}, 1, false);
    EXPECT_LT((batch - fused_rows).abs().max().item<double>(), 1e-4) << spec;
  }
}

TEST(Devices, OutputNoiseHasItsSigmaInUnitsOfTheFullScale) {
  TileIO io;
  io.noise_management = false;
  io.out_noise = 0.06;
  const torch::Tensor x = torch::zeros({200, 1000});
  const double w_scale = 2.5;  // noise is added in units of max|w| × input scale (1 here)
  const torch::Tensor y =
      tile_forward(io, x, [](const torch::Tensor& v) { return v; }, w_scale, {}, RngStream{4, 5});
  const double sd = y.std().item<double>();
  EXPECT_NEAR(sd / (0.06 * w_scale), 1.0, 5 / std::sqrt(2.0 * 200000));
  EXPECT_NEAR(y.mean().item<double>(), 0.0, 5 * 0.06 * w_scale / std::sqrt(200000.0));
}

TEST(Devices, FineConvertersOnAnImportedTransformerMatchItsCleanOutputs) {
  // Every analog layer of an imported transformer (q, k, v, a projection reading the heads'
  // reshaped output, MLP, head) through a 20-bit DAC: the clean outputs, bias included.
  const fs::path fixture = fs::path(QUELL_FIXTURES_DIR) / "tiny_lm.script.pt";
  if (!fs::exists(fixture)) GTEST_SKIP() << "no fixture " << fixture;
  ModelSpec spec;
  spec.name = fixture.string();
  spec.input_shape = {8};
  spec.input_dtype = "int64";
  spec.num_classes = 0;
  Model m = load_script_model(spec);
  m->eval();
  torch::NoGradGuard no_grad;
  const torch::Tensor ids = torch::randint(0, 11, {16, 8}, torch::kLong);
  const torch::Tensor clean = m->forward(ids);
  NoiseConfig cfg;
  cfg.device.tile.dac_bits = 20;
  // The attention projection reads the heads' output and the block input (for its shape):
  // which one its weight multiplies is hidden in the segment, so it cannot go on a tile.
  m->engine().configure(cfg);
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { m->forward(ids); },
                                                 {"proj", "several activations"}));
  std::vector<int> layers;
  const auto names = m->site_names();
  for (const auto& [site, w] : m->analog_weights()) {
    if (names[site].find("proj") == std::string::npos) layers.push_back(site);
  }
  ASSERT_GE(layers.size(), 4u);
  cfg.device.all_layers = false;
  cfg.device.layers = layers;
  m->engine().configure(cfg);
  const torch::Tensor tiled = m->forward(ids);
  m->engine().configure(NoiseConfig{});
  EXPECT_FALSE(torch::equal(tiled, clean));
  EXPECT_TRUE(torch::allclose(tiled, clean, 1e-3, 1e-3))
      << (tiled - clean).abs().max().item<double>();
}

TEST(Devices, RepetitionsAverageTheTilesOutputNoise) {
  SiteEngine engine;
  NoiseConfig cfg;
  cfg.device.tile = TileIO::parse("out_noise=0.08");
  cfg.sites[3].repeats = 4;
  engine.configure(cfg);
  ASSERT_NE(engine.tile(3), nullptr);
  EXPECT_DOUBLE_EQ(engine.tile(3)->out_noise, 0.04);  // four reads averaged: sigma / 2
  EXPECT_DOUBLE_EQ(engine.tile(2)->out_noise, 0.08);
}

TEST(Devices, FineConvertersOnConvAndLinearLayersMatchTheCleanModel) {
  // A 20-bit DAC, no noise, no ADC: the tile path (product without bias, scaling, digital
  // bias) reproduces the clean layers to float precision.
  const Dataset data = blob_dataset(64, 3, 32, 32, 10, 6);
  for (const char* name : {"lenet5-bn", "mlp-bn"}) {
    torch::manual_seed(2);
    Model m = make_model(ModelSpec::for_dataset(name, data));
    m->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor clean = m->forward(data.inputs);
    NoiseConfig cfg;
    cfg.device.tile.dac_bits = 20;
    m->engine().configure(cfg);
    const torch::Tensor tiled = m->forward(data.inputs);
    m->engine().configure(NoiseConfig{});
    EXPECT_FALSE(torch::equal(tiled, clean)) << name;  // it did run the tile path
    EXPECT_TRUE(torch::allclose(tiled, clean, 1e-4, 1e-4)) << name;
    // A coarse DAC changes the outputs more than a fine one.
    cfg.device.tile.dac_bits = 3;
    m->engine().configure(cfg);
    const torch::Tensor coarse = m->forward(data.inputs);
    m->engine().configure(NoiseConfig{});
    EXPECT_GT((coarse - clean).abs().mean().item<double>(),
              10 * (tiled - clean).abs().mean().item<double>())
        << name;
  }
}

// ---- Parsing and validation -------------------------------------------------------------------

TEST(Devices, TileSpecsParseAndBadOnesAreOneLineErrors) {
  const TileIO a = TileIO::parse("aihwkit");
  EXPECT_EQ(a.dac_bits, 7);
  EXPECT_EQ(a.adc_bits, 9);
  EXPECT_EQ(a.out_bound, 12.0);
  EXPECT_EQ(a.out_noise, 0.06);
  EXPECT_TRUE(a.bound_management);
  const TileIO b = TileIO::parse("aihwkit:out_noise=0:adc=8");
  EXPECT_EQ(b.out_noise, 0.0);
  EXPECT_EQ(b.adc_bits, 8);
  EXPECT_EQ(TileIO::parse(b.str()).to_json(), b.to_json());
  EXPECT_TRUE(TileIO::parse("ideal").ideal());
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { TileIO::parse("adc=8"); }, {"out_bound"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { TileIO::parse("dac=x"); }, {"dac"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { TileIO::parse("out_noise=-1"); },
                                                 {"out_noise", ">= 0"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { TileIO::parse("speed=3"); },
                                                 {"unknown key 'speed'"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { TileIO::parse("fast"); },
                                                 {"unknown preset 'fast'"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>([] { DeviceModel::parse("flash"); },
                                                 {"unknown device model 'flash'", "pcm"}));
}

TEST(Devices, TableModelsReadFromCsvAndJsonAndInterpolate) {
  const fs::path dir = fs::path(testing::kTmpRoot) / "quell_devices_table";
  fs::create_directories(dir);
  testing::write_file(dir / "lab.csv",
                      "# name = lab-rram\n# g_max = 30\ng,sigma_prog,nu_mean,nu_std,q_s\n"
                      "0,0.5,0.01,0.002,0.05\n10,1.0,0.02,0.004,0.02\n30,2.0,0.03,0.006,0.01\n");
  const DeviceModel csv = DeviceModel::parse((dir / "lab.csv").string());
  EXPECT_EQ(csv.kind, DeviceModel::Kind::kTable);
  EXPECT_EQ(csv.name, "lab-rram");
  EXPECT_EQ(csv.g_max, 30.0);
  const torch::Tensor g = us({5.0, 20.0, 40.0, 0.0});
  EXPECT_NEAR(at(csv.sigma_prog(g), 0), 0.75, 1e-12);  // halfway between 0.5 and 1.0
  EXPECT_NEAR(at(csv.nu_mean(g), 1), 0.025, 1e-12);
  EXPECT_NEAR(at(csv.nu_std(g), 2), 0.006, 1e-12);  // held past the last point
  EXPECT_NEAR(at(csv.q_s(g), 3), 0.05, 1e-12);
  testing::write_file(dir / "lab.json", csv.to_json().dump());
  const DeviceModel json = DeviceModel::parse((dir / "lab.json").string());
  EXPECT_EQ(json.table.size(), 3u);
  EXPECT_NEAR(at(json.sigma_prog(g), 1), 1.5, 1e-12);
  // Bad tables: one line naming the file and the problem.
  testing::write_file(dir / "down.csv", "g,sigma_prog,nu_mean,nu_std,q_s\n5,1,0,0,0\n2,1,0,0,0\n");
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { DeviceModel::parse((dir / "down.csv").string()); }, {"down.csv", "must increase"}));
  testing::write_file(dir / "cols.csv", "g,sigma\n1,2\n");
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { DeviceModel::parse((dir / "cols.csv").string()); }, {"cols.csv", "sigma_prog"}));
  testing::write_file(dir / "nan.csv", "g,sigma_prog,nu_mean,nu_std,q_s\n1,nan,0,0,0\n");
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { DeviceModel::parse((dir / "nan.csv").string()); }, {"nan.csv", "sigma_prog"}));
  testing::write_file(dir / "bad.json", "{\"points\": [{\"g\": 1}]}");
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { DeviceModel::parse((dir / "bad.json").string()); }, {"bad.json", "sigma_prog"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { DeviceModel::parse((dir / "missing.csv").string()); }, {"missing.csv", "cannot open"}));
  fs::remove_all(dir);
}

TEST(Devices, NoiseConfigurationsCarryTheDeviceThroughJson) {
  const std::vector<std::string> names{"input", "conv1", "relu1", "fc1"};
  const Json j = Json::parse(R"({"seed": 3, "device": {"model": "pcm", "time": "1d",
      "compensation": true, "layers": "conv1,fc1", "tile": "aihwkit",
      "tile_layers": [{"sites": "fc1", "dac_bits": 4}]}})");
  const NoiseConfig c = noise_config_from_json(j, names);
  EXPECT_EQ(c.device.time, 86400.0);
  EXPECT_TRUE(c.device.compensation);
  EXPECT_EQ(c.device.layers, (std::vector<int>{1, 3}));
  EXPECT_EQ(c.device.tile_of(1)->dac_bits, 7);
  EXPECT_EQ(c.device.tile_of(3)->dac_bits, 4);
  EXPECT_EQ(c.device.tile_of(2), nullptr);
  EXPECT_TRUE(c.has_static());
  EXPECT_TRUE(c.has_dynamic());  // the tile's output noise
  const NoiseConfig back = noise_config_from_json(c.to_json(names), names);
  EXPECT_EQ(back.to_json(names), c.to_json(names));
  EXPECT_EQ(c.scaled(0.5).device.scale, 0.5);
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        noise_config_from_json(Json::parse(R"({"device": {"model": "pcm", "time": -5}})"), names);
      },
      {"time", ">= 0"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] {
        noise_config_from_json(Json::parse(R"({"device": {"layers": "conv9"}})"), names);
      },
      {"conv9"}));
  EXPECT_TRUE(throws_with<std::invalid_argument>(
      [&] { noise_config_from_json(Json::parse(R"({"device": {"colour": 1}})"), names); },
      {"unknown key 'colour'"}));
}

// ---- Studies ----------------------------------------------------------------------------------

TEST(Devices, EvaluationOverTimeWithAndWithoutCompensation) {
  const Dataset train_set = blob_dataset(1200, 1, 28, 28, 10, 1);
  const Dataset test_set = blob_dataset(300, 1, 28, 28, 10, 2);
  Model m = trained_mlp(train_set);
  EvalStudyOptions o;
  o.noise.device.model = DeviceModel::parse("pcm");
  o.times = {1.0, 3.15e8};
  o.both_compensations = true;
  o.eval.chips = 4;
  const EvalReport r = run_eval_study(m, test_set, o);
  ASSERT_EQ(r.levels.size(), 4u);
  EXPECT_EQ(r.levels[0].time, 1.0);
  EXPECT_EQ(r.levels[0].compensation, 0);
  EXPECT_EQ(r.levels[3].time, 3.15e8);
  EXPECT_EQ(r.levels[3].compensation, 1);
  for (const auto& l : r.levels) EXPECT_TRUE(l.result.chip_level);
  // Ten years of drift without compensation shrink every layer's weights by a factor near
  // (1.6e7)^−0.05 ≈ 0.44 per layer; compensation brings the response back.
  EXPECT_GT(r.levels[3].result.headline().mean, r.levels[2].result.headline().mean + 0.05);
  // The report reads back with its rows, and the CSV has the time columns.
  const EvalReport back = EvalReport::from_json(r.to_json());
  EXPECT_EQ(back.levels[3].time, 3.15e8);
  EXPECT_EQ(back.levels[3].compensation, 1);
  EXPECT_NE(r.csv().find("level,time_s,compensation,chip,draw,accuracy,loss"), std::string::npos);
  EXPECT_NE(r.table().find("1 s"), std::string::npos);
  // Times without a device are an error, before any evaluation.
  EvalStudyOptions bad;
  bad.times = {1.0};
  EXPECT_TRUE(throws_with<std::invalid_argument>([&] { run_eval_study(m, test_set, bad); },
                                                 {"device model"}));
}

TEST(Devices, DeviceWalkVisitsAnalogLayersAndKeepsChipsAcrossTimes) {
  const Dataset train_set = blob_dataset(1200, 1, 28, 28, 10, 1);
  const Dataset test_set = blob_dataset(200, 1, 28, 28, 10, 2);
  Model m = trained_mlp(train_set);
  WalkOptions w;
  for (const auto& sw : m->analog_weights()) w.sites.push_back(sw.first);
  w.global = true;
  w.repeats = 2;
  w.device = DeviceConfig();
  w.device->model = DeviceModel::parse("pcm");
  w.device_sweep = WalkOptions::DeviceSweep::kTime;
  w.grid = SigmaGrid::parse("1:1e9", 1);
  const WalkResult r = walk_clean_model(*m, test_set, w);
  ASSERT_EQ(r.sites.size(), w.sites.size());
  for (const auto& c : r.sites) EXPECT_EQ(c.extended, 0);  // time sweeps stop at the grid's end
  ASSERT_TRUE(r.global.has_value());
  // All layers drifting together hurt at least as much as any one alone, at the longest time.
  const double global_end = r.global->accuracy.back().mean;
  for (const auto& c : r.sites) EXPECT_LE(global_end, c.accuracy.back().mean + 0.03) << c.name;
  // Clean weights are restored after the walk.
  const double clean = run_pass(*m, test_set, 256).accuracy;
  EXPECT_EQ(clean, r.clean_accuracy);
  // A walk over the device's noise scale crosses the threshold on the first layer.
  w.device_sweep = WalkOptions::DeviceSweep::kScale;
  w.global = false;
  w.sites = {w.sites.front()};
  w.grid = SigmaGrid::parse("1:1e4", 2);
  const WalkResult s = walk_clean_model(*m, test_set, w);
  EXPECT_TRUE(s.sites.at(0).midpoint.crossed());
  // The fingerprint names the device, so a resumed journal of a noise walk cannot mix in.
  EXPECT_TRUE(w.fingerprint().contains("device"));
}

TEST(Devices, HardwareAwareTrainingRunsTheDeviceInTheForwardPass) {
  const Dataset train_set = blob_dataset(800, 1, 28, 28, 10, 1);
  torch::manual_seed(1);
  Model m = make_model(ModelSpec::for_dataset("mlp-bn", train_set));
  TrainOptions o;
  o.epochs = 1;
  o.batch_size = 64;
  o.noise.device.model = DeviceModel::parse("pcm");
  o.noise.device.tile = TileIO::parse("aihwkit");
  const TrainResult r = train(*m, train_set, o);
  ASSERT_FALSE(r.epochs.empty());
  EXPECT_TRUE(std::isfinite(r.epochs.back().loss));
  EXPECT_GT(r.epochs.back().accuracy, 0.5);  // it learns through the device and converters
}

}  // namespace
}  // namespace quell
