// Fused inference (src/fused.h): batch norm + ReLU + 2x2 max pool chains give exactly the bits
// of LibTorch's separate ops, on crafted tensors (NaN, infinities, odd sizes) and through whole
// models, clean and noisy, from every site; and chains break where a site does something.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "model/fused.h"
#include "quell/models.h"
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::spec_for;

// Equal bits up to the NaN payload: same NaN positions, equal elsewhere (-0 == 0).
bool same_values(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.sizes() != b.sizes()) return false;
  return torch::equal(a.isnan(), b.isnan()) && torch::equal(a.nan_to_num(0.0), b.nan_to_num(0.0));
}

// Batch-norm statistics far from the identity, so alpha and beta round in every way.
void randomise(torch::nn::BatchNorm2d& bn, uint64_t seed) {
  torch::NoGradGuard g;
  auto gen = at::detail::createCPUGenerator(seed);
  bn->running_mean.uniform_(-2.0, 2.0, gen);
  bn->running_var.uniform_(0.05, 4.0, gen);
  bn->weight.uniform_(-2.0, 2.0, gen);
  bn->bias.uniform_(-1.0, 1.0, gen);
}

#define SKIP_WITHOUT_FUSED_KERNELS()                                            \
  if (!detail::fused_kernels_available()) {                                     \
    GTEST_SKIP() << "this CPU has no AVX-512: the fused kernels never run here"; \
  }

TEST(Fused, ChainsGiveTheBitsOfTheSeparateOps) {
  SKIP_WITHOUT_FUSED_KERNELS();
  torch::NoGradGuard no_grad;
  // Widths below, at and above one 16-lane vector of outputs, odd sizes (floor mode drops the
  // last row and column), and one spatial element.
  const std::vector<std::vector<int64_t>> shapes = {
      {3, 5, 28, 28}, {2, 4, 10, 10}, {2, 3, 7, 37}, {1, 2, 2, 2}, {2, 3, 33, 70}, {2, 6, 1, 1}};
  int checked = 0;
  for (const auto& shape : shapes) {
    torch::nn::BatchNorm2d bn(shape[1]);
    randomise(bn, 7 + shape[3]);
    bn->eval();
    torch::Tensor x =
        torch::randn(shape, torch::Generator(at::detail::createCPUGenerator(shape[2]))) * 3.0;
    auto flat = x.view({-1});
    flat[0] = std::numeric_limits<float>::quiet_NaN();
    flat[flat.numel() / 2] = std::numeric_limits<float>::infinity();
    flat[flat.numel() - 1] = -std::numeric_limits<float>::infinity();
    flat[1] = -0.0f;
    for (const bool with_bn : {false, true}) {
      for (const bool relu : {false, true}) {
        for (const bool pool : {false, true}) {
          if (pool && (shape[2] < 2 || shape[3] < 2)) continue;
          if (!with_bn && !relu && !pool) continue;
          detail::FusedChain chain;
          chain.bn = with_bn ? bn.get() : nullptr;
          chain.relu = relu;
          chain.pool = pool;
          ASSERT_TRUE(detail::fused_applies(chain, x));
          torch::Tensor want = x;
          if (with_bn) want = bn->forward(want);
          if (relu) want = torch::relu(want);
          if (pool) want = torch::max_pool2d(want, 2, 2);
          const torch::Tensor got = detail::run_fused(chain, x);
          EXPECT_TRUE(same_values(got, want))
              << "shape " << x.sizes() << " bn " << with_bn << " relu " << relu << " pool "
              << pool << ": largest difference "
              << (got - want).abs().nan_to_num(0.0).max().item<float>();
          ++checked;
        }
      }
    }
  }
  EXPECT_EQ(checked, 6 * 7 - 4);
  // What the kernels do not take.
  torch::nn::BatchNorm2d bn(3);
  detail::FusedChain chain;
  chain.bn = bn.get();
  chain.relu = chain.pool = true;
  EXPECT_FALSE(detail::fused_applies(chain, torch::randn({2, 3, 4, 4}, torch::kDouble)));
  EXPECT_FALSE(detail::fused_applies(chain, torch::randn({2, 3, 4, 4}).transpose(2, 3)));
  EXPECT_FALSE(detail::fused_applies(chain, torch::randn({2, 4, 4, 4})));  // channel count
  bn->train();
  EXPECT_FALSE(detail::fused_applies(chain, torch::randn({2, 3, 4, 4})));
}

TEST(DirectConv, MatchesLibTorchWithinFloatRounding) {
  SKIP_WITHOUT_FUSED_KERNELS();
  torch::NoGradGuard no_grad;
  struct Case {
    int64_t cin, cout, k, pad, h, w;
    bool bias;
  };
  // lenet5's conv1, vgg-s / resnet20's first conv, output widths below, at and above one and
  // two 16-lane vectors, partial channel blocks, kernels 1-7, no bias.
  const std::vector<Case> cases = {{1, 6, 5, 2, 28, 28, true},  {3, 16, 3, 1, 32, 32, true},
                                   {3, 32, 3, 1, 32, 32, false}, {2, 9, 7, 3, 9, 16, true},
                                   {4, 17, 1, 0, 5, 33, true},   {1, 3, 4, 0, 20, 19, true},
                                   {3, 8, 3, 0, 3, 70, false},   {1, 1, 2, 1, 1, 1, true}};
  for (const Case& c : cases) {
    torch::nn::Conv2d conv(
        torch::nn::Conv2dOptions(c.cin, c.cout, c.k).padding(c.pad).bias(c.bias));
    const torch::Tensor x = torch::randn({3, c.cin, c.h, c.w});
    const torch::Tensor bias = c.bias ? conv->bias : torch::Tensor();
    ASSERT_TRUE(detail::direct_conv_applies(x, conv->weight, bias, {1, 1}, {c.pad, c.pad},
                                            {1, 1}, 1));
    const torch::Tensor want = conv->forward(x);
    const torch::Tensor got = detail::direct_conv2d(x, conv->weight, bias, c.pad);
    ASSERT_EQ(got.sizes(), want.sizes());
    // Each output sums cin k^2 products of magnitude |w||x|: float rounding in either order
    // is at most (cin k^2 + 1) 2^-24 sum |w||x| per output; 4x that as the bound.
    const torch::Tensor scale =
        torch::conv2d(x.abs(), conv->weight.abs(), {}, 1, c.pad) + (c.bias ? 1.0 : 0.0);
    const double bound = 4.0 * static_cast<double>(c.cin * c.k * c.k + 1) * std::ldexp(1.0, -24);
    EXPECT_LE(((got - want).abs() / scale.clamp_min(1e-30)).max().item<double>(), bound)
        << c.cin << "->" << c.cout << " k" << c.k << " pad " << c.pad << " " << c.h << "x" << c.w;
  }
  // What it does not take: stride, dilation, groups, unequal padding, 5 input channels, a
  // kernel of 9, doubles, and anything needing gradients.
  const torch::Tensor x = torch::randn({2, 3, 12, 12});
  const torch::Tensor w = torch::randn({4, 3, 3, 3});
  EXPECT_FALSE(detail::direct_conv_applies(x, w, {}, {2, 2}, {1, 1}, {1, 1}, 1));
  EXPECT_FALSE(detail::direct_conv_applies(x, w, {}, {1, 1}, {1, 1}, {2, 2}, 1));
  EXPECT_FALSE(detail::direct_conv_applies(x, w, {}, {1, 1}, {1, 0}, {1, 1}, 1));
  EXPECT_FALSE(detail::direct_conv_applies(torch::randn({2, 5, 12, 12}), torch::randn({4, 5, 3, 3}),
                                           {}, {1, 1}, {1, 1}, {1, 1}, 1));
  EXPECT_FALSE(detail::direct_conv_applies(x, torch::randn({4, 3, 9, 9}), {}, {1, 1}, {1, 1},
                                           {1, 1}, 1));
  EXPECT_FALSE(detail::direct_conv_applies(x.to(torch::kDouble), w.to(torch::kDouble), {},
                                           {1, 1}, {1, 1}, {1, 1}, 1));
  torch::GradMode::set_enabled(true);
  EXPECT_FALSE(detail::direct_conv_applies(x, w.requires_grad_(), {}, {1, 1}, {1, 1}, {1, 1}, 1));
  torch::GradMode::set_enabled(false);
}

Model trained_looking(const std::string& name) {
  torch::manual_seed(3);
  Model m = make_model(spec_for(name));
  uint64_t seed = 100;
  for (const auto& node : m->nodes()) {
    if (node.bn2d) {
      torch::nn::BatchNorm2d bn = node.bn2d;
      randomise(bn, ++seed);
    }
  }
  m->eval();
  return m;
}

class FusedModel : public ::testing::TestWithParam<std::string> {};

TEST_P(FusedModel, ForwardAndEverySuffixEqualTheUnfusedOps) {
  SKIP_WITHOUT_FUSED_KERNELS();
  Model m = trained_looking(GetParam());
  const auto& s = m->spec();
  const torch::Tensor x =
      torch::randn({5, s.in_channels, s.height, s.width},
                   torch::Generator(at::detail::createCPUGenerator(9)));
  torch::NoGradGuard g;
  auto both = [&](auto run) {
    m->set_fused_inference(false);
    const torch::Tensor plain = run();
    m->set_fused_inference(true);
    const torch::Tensor fused = run();
    return std::make_pair(plain, fused);
  };
  {
    const auto [plain, fused] = both([&] { return m->forward(x); });
    EXPECT_TRUE(torch::equal(plain, fused)) << "clean forward";
  }
  // Walking Noise's evaluations: the clean prefix, then noise at one site and the rest fused.
  for (int site = 0; site < m->num_sites(); ++site) {
    NoiseConfig cfg;
    cfg.seed = 5;
    cfg.sites[site].noise = {NoiseSpec::parse("add:0.3")};
    m->engine().configure(cfg);
    const auto [plain, fused] = both([&] {
      m->engine().set_draw(1, 2);
      ForwardState st = m->run_until(x, site);
      st.site_owned = false;
      return m->run_from(std::move(st));
    });
    EXPECT_TRUE(torch::equal(plain, fused)) << "noise at site " << site;
  }
  // Noise at every other site: chains break at each noisy site.
  NoiseConfig cfg;
  for (int site = 0; site < m->num_sites(); site += 2) {
    cfg.sites[site].noise = {NoiseSpec::parse("mul:0.2")};
  }
  m->engine().configure(cfg);
  const auto [plain, fused] = both([&] {
    m->engine().set_draw(0, 0);
    return m->forward(x);
  });
  EXPECT_TRUE(torch::equal(plain, fused)) << "noise at every other site";
  m->engine().configure(NoiseConfig{});
}

INSTANTIATE_TEST_SUITE_P(Registry, FusedModel,
                         ::testing::Values("lenet5", "lenet5-bn", "vgg-s", "resnet20", "mlp-bn"));

TEST(Fused, ObservedSitesAndBlocksStillSeeTheirValues) {
  SKIP_WITHOUT_FUSED_KERNELS();
  Model m = trained_looking("lenet5-bn");
  const torch::Tensor x = torch::randn({3, 1, 28, 28});
  torch::NoGradGuard g;
  std::vector<int> seen;
  m->engine().set_observer([&](int site, const torch::Tensor&) { seen.push_back(site); });
  const torch::Tensor observed = m->forward(x);
  EXPECT_EQ(static_cast<int>(seen.size()), m->num_sites()) << "an observer sees every site";
  m->engine().set_observer(nullptr);
  EXPECT_TRUE(torch::equal(m->forward(x), observed));
  // A block after bn1 (site 2) breaks the bn1-relu1-pool1 chain: the block runs.
  m->set_denoisers({BlockPlacement{2, BlockSpec::parse("auto")}});
  int calls = 0;
  m->set_denoiser_observer([&](int site, const torch::Tensor&) { calls += site == 2; });
  m->forward(x);
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace quell
