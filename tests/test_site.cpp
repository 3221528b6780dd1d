// The site logic: noise moments (statistical, with bounds from the sample size), identity at
// sigma 0, determinism, static patterns shared by every input, aging growth, relative sigma,
// ADC quantisation, multi-execution variance reduction, and gradients.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <string>
#include <vector>

#include "quell/site.h"

namespace quell {
namespace {

// The contract every noise kind and temporal mode shares.
const std::vector<std::string> kAllComponents = {"add:0.3",
                                                 "mul:0.3",
                                                 "muladd:0.4/0.5",
                                                 "addmul:0.4/0.5",
                                                 "add:0.3:static",
                                                 "mul:0.3:static",
                                                 "muladd:0.4/0.5:static",
                                                 "addmul:0.4/0.5:aging:age=4",
                                                 "add:0.3:rel=std",
                                                 "add:0.3:rel=range:static",
                                                 "muladd:0.4/0.5:static:per=channel"};

SiteEngine engine_for(const std::string& component, int site = 1, uint64_t seed = 11) {
  NoiseConfig cfg;
  cfg.seed = seed;
  cfg.sites[site].noise = {NoiseSpec::parse(component)};
  SiteEngine e;
  e.configure(cfg);
  std::vector<SiteCalibration> cal(4);
  for (auto& c : cal) {
    c.std = 2.0;
    c.absmax = 4.0;
    c.min = -4.0;
    c.max = 4.0;
    c.valid = true;
  }
  e.set_calibration(cal);
  e.set_draw(0, 0);
  e.begin_forward();
  return e;
}

torch::Tensor apply(SiteEngine& e, const torch::Tensor& x, int site = 1) {
  torch::NoGradGuard g;
  return e.apply(x.clone(), site, /*owned=*/true);
}

TEST(SiteContract, EveryComponentKeepsShapeIsFiniteAndDeterministic) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({8, 3, 5, 5});
  for (const auto& comp : kAllComponents) {
    SiteEngine a = engine_for(comp), b = engine_for(comp);
    const torch::Tensor ya = apply(a, x), yb = apply(b, x);
    EXPECT_EQ(ya.sizes(), x.sizes()) << comp;
    EXPECT_TRUE(torch::isfinite(ya).all().item<bool>()) << comp;
    EXPECT_TRUE(torch::equal(ya, yb)) << comp << ": same seeds must give the same result";
    EXPECT_FALSE(torch::equal(ya, x)) << comp << ": noise must change the value";
    SiteEngine c = engine_for(comp, 1, /*seed=*/12);
    EXPECT_FALSE(torch::equal(apply(c, x), ya)) << comp << ": another seed, other noise";
  }
}

TEST(SiteContract, SigmaZeroIsTheIdentity) {
  const torch::Tensor x = torch::randn({4, 2, 3, 3});
  for (const auto& comp : {"add:0", "mul:0", "muladd:0/0.5", "add:0:static", "mul:0:aging"}) {
    SiteEngine e = engine_for(comp);
    EXPECT_FALSE(e.active(1)) << comp;
    EXPECT_TRUE(torch::equal(apply(e, x), x)) << comp;
  }
  SiteEngine e = engine_for("add:0.5");
  EXPECT_TRUE(torch::equal(apply(e, x, /*site=*/2), x)) << "unconfigured sites are the identity";
}

TEST(SiteContract, NotOwnedInputIsNotModifiedAndGivesTheOwnedResult) {
  // A value the engine does not own (the caller's input, a cached activation) gets its noise
  // written to a new tensor: the same bits as in place on a copy, for every component, with
  // ADC, with repetitions and with a strided input; the input keeps its bits.
  const torch::Tensor x = torch::randn({4, 3, 5, 5});
  const torch::Tensor keep = x.clone();
  const torch::Tensor strided = x.transpose(2, 3).contiguous().transpose(2, 3);
  ASSERT_FALSE(strided.is_contiguous());
  torch::NoGradGuard g;
  auto check = [&](SiteEngine e, const std::string& what) {
    SiteEngine twin = e;
    const torch::Tensor owned = twin.apply(x.clone(), 1, /*owned=*/true);
    for (const auto& input : {x, strided}) {
      SiteEngine fresh = e;
      const torch::Tensor y = fresh.apply(input, 1, /*owned=*/false);
      EXPECT_TRUE(torch::equal(y, owned)) << what;
      EXPECT_FALSE(torch::equal(y, keep)) << what;
      EXPECT_TRUE(torch::equal(input, keep)) << what << ": the input was written";
    }
  };
  for (const auto& comp : kAllComponents) {
    check(engine_for(comp), comp);
    for (int repeats : {2, 3}) {
      NoiseConfig cfg;
      cfg.seed = 11;
      cfg.sites[1].noise = {NoiseSpec::parse(comp)};
      cfg.sites[1].repeats = repeats;
      cfg.sites[1].adc_bits = repeats == 3 ? 4 : 0;
      SiteEngine e = engine_for(comp);
      e.configure(cfg);
      e.set_draw(0, 0);
      e.begin_forward();
      check(e, comp + " x" + std::to_string(repeats));
    }
  }
}

TEST(SiteContract, GradientsFlowThroughEveryComponent) {
  for (const auto& comp : kAllComponents) {
    SiteEngine e = engine_for(comp);
    const torch::Tensor x = torch::randn({4, 3, 2, 2}, torch::requires_grad());
    const torch::Tensor y = e.apply(x, 1, true);
    y.sum().backward();
    ASSERT_TRUE(x.grad().defined()) << comp;
    EXPECT_TRUE(torch::isfinite(x.grad()).all().item<bool>()) << comp;
  }
}

TEST(SiteGradient, AdditiveJacobianIsIdentityMultiplicativeIsEta) {
  // d/dx (x + ε) = 1; d/dx (x ⊙ η) = η, and η = y / x for the same draw.
  torch::Tensor x = torch::rand({1000}, torch::kDouble) + 0.5;
  x.requires_grad_(true);
  SiteEngine a = engine_for("add:0.3");
  a.apply(x, 1, true).sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), torch::ones_like(x)));
  x.mutable_grad() = torch::Tensor();
  SiteEngine m = engine_for("mul:0.3");
  const torch::Tensor y = m.apply(x, 1, true);
  y.sum().backward();
  EXPECT_TRUE(torch::allclose(x.grad(), (y / x).detach(), 1e-12, 1e-12));
}

// Moments over n = 400k elements. The sample mean of n i.i.d. N(0, σ²) values has std σ/√n; the
// sample variance has std σ²·√(2/n). Bounds are 5 of those standard errors: a false failure has
// probability < 1e-6 per check.
constexpr int64_t kN = 400000;
const double kMeanTol = 5.0 / std::sqrt(static_cast<double>(kN));
const double kVarTol = 5.0 * std::sqrt(2.0 / static_cast<double>(kN));

TEST(SiteMoments, AdditiveDynamic) {
  const double sigma = 0.3;
  SiteEngine e = engine_for("add:0.3");
  const torch::Tensor x = torch::full({kN / 100, 100}, 1.5, torch::kDouble);
  const torch::Tensor eps = apply(e, x) - x;
  EXPECT_NEAR(eps.mean().item<double>(), 0.0, sigma * kMeanTol);
  EXPECT_NEAR(eps.var().item<double>() / (sigma * sigma), 1.0, kVarTol);
}

TEST(SiteMoments, MultiplicativeDynamic) {
  // y = x ⊙ η, η ~ N(1, σ²): y/x has mean 1 and variance σ².
  const double sigma = 0.2;
  SiteEngine e = engine_for("mul:0.2");
  const torch::Tensor x = torch::full({kN}, -3.0, torch::kDouble);
  const torch::Tensor eta = apply(e, x) / x;
  EXPECT_NEAR(eta.mean().item<double>(), 1.0, sigma * kMeanTol);
  EXPECT_NEAR(eta.var().item<double>() / (sigma * sigma), 1.0, kVarTol);
}

TEST(SiteMoments, MixedBothOrders) {
  // muladd: y = x·η + ε: E = x, Var = x²σm² + σa². addmul: y = (x + ε)·η: E = x,
  // Var = (x² + σa²)σm² + σa². Variance tolerance: 6 standard errors of a non-Gaussian sample
  // variance (kurtosis < 4 here), relative.
  const double x0 = 2.0, sa = 0.5 * 0.4, sm = 0.5 * 0.6;
  const torch::Tensor x = torch::full({kN}, x0, torch::kDouble);
  SiteEngine ma = engine_for("muladd:0.5/0.4");
  SiteEngine am = engine_for("addmul:0.5/0.4");
  const torch::Tensor y1 = apply(ma, x), y2 = apply(am, x);
  const double v1 = x0 * x0 * sm * sm + sa * sa;
  const double v2 = (x0 * x0 + sa * sa) * sm * sm + sa * sa;
  EXPECT_NEAR(y1.mean().item<double>(), x0, std::sqrt(v1) * kMeanTol);
  EXPECT_NEAR(y2.mean().item<double>(), x0, std::sqrt(v2) * kMeanTol);
  EXPECT_NEAR(y1.var().item<double>() / v1, 1.0, 6.0 * std::sqrt(3.0 / kN));
  EXPECT_NEAR(y2.var().item<double>() / v2, 1.0, 6.0 * std::sqrt(3.0 / kN));
}

TEST(SiteMoments, RelativeSigmaUsesCalibration) {
  // rel=std: σ_eff = σ · std_calibrated (2.0 in engine_for); rel=range: σ · max|x| (4.0).
  const torch::Tensor x = torch::zeros({kN}, torch::kDouble);
  SiteEngine s = engine_for("add:0.1:rel=std");
  SiteEngine r = engine_for("add:0.1:rel=range");
  EXPECT_NEAR(apply(s, x).std().item<double>() / 0.2, 1.0, kVarTol);
  EXPECT_NEAR(apply(r, x).std().item<double>() / 0.4, 1.0, kVarTol);
}

TEST(SiteMoments, RelativeSigmaWithoutCalibrationIsAnError) {
  NoiseConfig cfg;
  cfg.sites[0].noise = {NoiseSpec::parse("add:0.1:rel=std")};
  SiteEngine e;
  e.configure(cfg);
  torch::NoGradGuard g;
  EXPECT_THROW(e.apply(torch::zeros({2, 2}), 0, true), std::invalid_argument);
}

TEST(SiteTemporal, DynamicNoiseIsFreshEveryForwardPass) {
  SiteEngine e = engine_for("add:1");
  const torch::Tensor x = torch::zeros({64, 16});
  const torch::Tensor a = apply(e, x);
  e.begin_forward();
  const torch::Tensor b = apply(e, x);
  EXPECT_FALSE(torch::equal(a, b));
  // And i.i.d. over the batch: two samples of one pass differ.
  EXPECT_FALSE(torch::equal(a[0], a[1]));
  // set_draw resets the counter: the same (chip, draw) replays the same noise.
  e.set_draw(0, 0);
  e.begin_forward();
  EXPECT_TRUE(torch::equal(apply(e, x), a));
}

TEST(SiteTemporal, StaticNoiseIsIdenticalForEveryInputAndPass) {
  for (const auto& comp : {"add:0.5:static", "mul:0.5:static", "muladd:0.5/0.5:static"}) {
    SiteEngine e = engine_for(comp);
    const torch::Tensor x = torch::ones({16, 3, 4, 4});
    const torch::Tensor a = apply(e, x);
    for (int64_t i = 1; i < 16; ++i) EXPECT_TRUE(torch::equal(a[i], a[0])) << comp;
    e.begin_forward();
    EXPECT_TRUE(torch::equal(apply(e, x), a)) << comp << ": static noise must not change per pass";
    e.set_draw(/*chip=*/1, 0);
    EXPECT_FALSE(torch::equal(apply(e, x), a)) << comp << ": another chip, another pattern";
    e.set_draw(/*chip=*/0, 5);
    EXPECT_TRUE(torch::equal(apply(e, x), a)) << comp << ": the draw does not change the chip";
  }
}

TEST(SiteTemporal, PerChannelStaticNoiseIsOneDeviationPerChannel) {
  for (const auto& comp : {"add:0.5:static:per=channel", "mul:0.5:aging:age=4:per=channel"}) {
    // [C,H,W]: every position of a channel gets the same deviation, channels differ.
    SiteEngine e = engine_for(comp);
    const torch::Tensor x = torch::ones({4, 3, 5, 6}, torch::kDouble);
    const torch::Tensor y = apply(e, x);
    for (int64_t c = 0; c < 3; ++c) {
      EXPECT_TRUE(torch::equal(y[0][c], torch::full({5, 6}, y[0][c][0][0].item<double>(),
                                                    torch::kDouble)))
          << comp;
    }
    EXPECT_NE(y[0][0][0][0].item<double>(), y[0][1][0][0].item<double>()) << comp;
    EXPECT_TRUE(torch::equal(y[3], y[0])) << comp;
    // [T,D]: every position of a feature the same, features differ.
    const torch::Tensor s = apply(e, torch::ones({2, 7, 4}, torch::kDouble));
    for (int64_t t = 1; t < 7; ++t) EXPECT_TRUE(torch::equal(s[0][t], s[0][0])) << comp;
    EXPECT_NE(s[0][0][0].item<double>(), s[0][0][1].item<double>()) << comp;
  }
  // The deviations are N(0, σ²) across channels: 4000 channels, σ = 0.5 (abs): the sample std
  // lies within 5 standard errors (SE ≈ σ/√(2n) = 0.0056) of σ.
  SiteEngine e = engine_for("add:0.5:static:per=channel");
  const torch::Tensor y = apply(e, torch::zeros({1, 4000, 2, 2}, torch::kDouble));
  EXPECT_NEAR(y.select(2, 0).select(2, 0).std().item<double>(), 0.5, 5 * 0.5 / std::sqrt(8000.0));
  // Static and aging only.
  EXPECT_THROW(NoiseSpec::parse("add:0.1:per=channel"), std::invalid_argument);
  EXPECT_THROW(NoiseSpec::parse("add:0.1:static:per=column"), std::invalid_argument);
}

TEST(SiteTemporal, AgingScalesTheSameStaticPattern) {
  // σ(t) = σ·(t/t_ref)^ν: the deviation at age 9 with ν = 0.5 is 3× the deviation at age 1.
  const torch::Tensor x = torch::zeros({2, 50}, torch::kDouble);
  SiteEngine young = engine_for("add:0.1:aging:age=1");
  SiteEngine old = engine_for("add:0.1:aging:age=9");
  const torch::Tensor d1 = apply(young, x), d9 = apply(old, x);
  EXPECT_TRUE(torch::allclose(d9, 3.0 * d1, 1e-12, 1e-15));
  EXPECT_TRUE(torch::equal(d1[0], d1[1]));
}

TEST(SiteAdc, QuantisesToAtMostTwoToTheBLevelsAndClips) {
  NoiseConfig cfg;
  cfg.sites[0].adc_bits = 3;
  SiteEngine e;
  e.configure(cfg);
  SiteCalibration c;
  c.min = -1.0;
  c.max = 2.5;
  c.absmax = 2.5;
  c.std = 1.0;
  c.valid = true;
  e.set_calibration({c});
  const torch::Tensor x = torch::linspace(-3, 4, 10001, torch::kDouble);
  torch::NoGradGuard g;
  const torch::Tensor q = e.apply(x.clone(), 0, true);
  EXPECT_LE(std::get<0>(at::_unique(q)).numel(), 8);
  EXPECT_DOUBLE_EQ(q.min().item<double>(), -1.0);
  EXPECT_DOUBLE_EQ(q.max().item<double>(), 2.5);
  const double step = 3.5 / 7.0;
  const torch::Tensor inside = x.ge(-1.0).logical_and(x.le(2.5));
  EXPECT_LE((q - x).abs().masked_select(inside).max().item<double>(), step / 2 + 1e-12);
}

TEST(SiteAdc, StraightThroughGradient) {
  NoiseConfig cfg;
  cfg.sites[0].adc_bits = 2;
  SiteEngine e;
  e.configure(cfg);
  SiteCalibration c;
  c.min = 0;
  c.max = 1;
  c.valid = true;
  e.set_calibration({c});
  const torch::Tensor x = torch::rand({100}, torch::requires_grad());
  e.apply(x, 0, true).sum().backward();
  EXPECT_TRUE(torch::equal(x.grad(), torch::ones_like(x)));
}

TEST(SiteRepeats, AveragingKCopiesDividesTheVarianceByK) {
  // Var of the mean of k i.i.d. copies is σ²/k, for the additive shortcut and for the general
  // path (multiplicative). Relative tolerance kVarTol as above.
  const torch::Tensor x = torch::full({kN}, 2.0, torch::kDouble);
  for (const auto& comp : {"add:0.6", "mul:0.6"}) {
    for (int k : {1, 4, 9}) {
      NoiseConfig cfg;
      cfg.sites[0].noise = {NoiseSpec::parse(comp)};
      cfg.sites[0].repeats = k;
      SiteEngine e;
      e.configure(cfg);
      torch::NoGradGuard g;
      const torch::Tensor y = e.apply(x.clone(), 0, true);
      const double var = (std::string(comp) == "add:0.6" ? 0.36 : 0.36 * 4.0) / k;
      EXPECT_NEAR(y.var().item<double>() / var, 1.0, kVarTol) << comp << " k=" << k;
      EXPECT_NEAR(y.mean().item<double>(), 2.0, std::sqrt(var) * kMeanTol) << comp;
    }
  }
}

TEST(SiteRepeats, StaticPartIsNotAveragedAway) {
  // Repetition re-runs the same chip: the static deviation is shared by all copies.
  NoiseConfig one, many;
  one.sites[0].noise = {NoiseSpec::parse("add:0.5:static")};
  many = one;
  many.sites[0].repeats = 5;
  SiteEngine a, b;
  a.configure(one);
  b.configure(many);
  const torch::Tensor x = torch::zeros({3, 20});
  torch::NoGradGuard g;
  EXPECT_TRUE(torch::allclose(a.apply(x.clone(), 0, true), b.apply(x.clone(), 0, true)));
}

TEST(SiteEngineThreads, ResultDoesNotDependOnThreadCount) {
  const torch::Tensor x = torch::randn({64, 6, 28, 28});
  const int saved = at::get_num_threads();
  at::set_num_threads(1);
  SiteEngine a = engine_for("muladd:0.5/0.5");
  const torch::Tensor y1 = apply(a, x);
  at::set_num_threads(2);
  SiteEngine b = engine_for("muladd:0.5/0.5");
  const torch::Tensor y2 = apply(b, x);
  at::set_num_threads(saved);
  EXPECT_TRUE(torch::equal(y1, y2));
}

TEST(SiteObserver, SeesTheCleanValue) {
  SiteEngine e = engine_for("add:1");
  torch::Tensor seen;
  e.set_observer([&](int, const torch::Tensor& v) { seen = v.clone(); });
  const torch::Tensor x = torch::randn({3, 3});
  apply(e, x);
  EXPECT_TRUE(torch::equal(seen, x));
}

}  // namespace
}  // namespace quell
