// Weight statistics and the binarisation index (quell/inspect.h), and `quell inspect` end to end.

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "quell/checkpoint.h"
#include "quell/inspect.h"
#include "quell/models.h"
#include "quell_test_paths.h"  // QUELL_CLI_PATH, QUELL_TEST_TMP
#include "test_util.h"

namespace quell {
namespace {

using quell::testing::lines_of;
using quell::testing::shell_quote;
using quell::testing::tokens_of;

namespace fs = std::filesystem;
constexpr double kPi = 3.14159265358979323846;

// Index from a given moment ratio E[w²]/E[|w|]², unclamped.
double index_of_ratio(double ratio) { return (kPi / 2 - ratio) / (kPi / 2 - 1); }

torch::Tensor gaussian(int64_t n, uint64_t seed, double sigma = 1.0) {
  auto gen = at::detail::createCPUGenerator(seed);
  return torch::randn({n}, gen, torch::kDouble) * sigma;
}

torch::Tensor uniform(int64_t n, uint64_t seed, double half_width = 1.0) {
  auto gen = at::detail::createCPUGenerator(seed);
  return (torch::rand({n}, gen, torch::kDouble) * 2 - 1) * half_width;
}

// Constant magnitude c with random signs.
torch::Tensor plus_minus(std::vector<int64_t> shape, double c, uint64_t seed,
                         torch::Dtype dtype = torch::kFloat) {
  auto gen = at::detail::createCPUGenerator(seed);
  torch::Tensor signs = torch::randint(2, shape, gen, torch::kDouble) * 2 - 1;
  return (signs * c).to(dtype);
}

// ---------------------------------------------------------------------------------------------
// binarization_index

// For w ~ N(0, σ²), r = E[w²]/E[|w|]² = π/2, so b = 0. The estimate r̂ = mean(w²)/mean(|w|)²
// from n samples has, by the delta method with the moments of |Z| (E|Z| = √(2/π), E Z² = 1,
// E|Z|³ = 2√(2/π), E Z⁴ = 3), variance ≈ 0.699/n: sd(r̂) ≈ 0.836/√n = 8.4e-4 at n = 1e6 (a
// simulation of 200 samples gave 8.6e-4), i.e. sd(b̂) = sd(r̂)/(π/2 − 1) ≈ 1.5e-3; the bias is
// O(1/n). The bound 0.01 is more than 6 sd: a correct implementation fails it with probability
// below 1e-9, while b of a uniform (0.416) or a 10%-off ratio (0.27) is far outside it.
TEST(Inspect, GaussianWeightsGiveIndexNearZero) {
  constexpr int64_t kN = 1000000;
  for (uint64_t seed : {1, 2, 3}) {
    for (double sigma : {1.0, 0.05}) {
      const double b = binarization_index(gaussian(kN, seed, sigma));
      EXPECT_GE(b, 0.0) << "seed " << seed;
      EXPECT_LT(std::fabs(b), 0.01) << "seed " << seed << " sigma " << sigma;
    }
  }
  // The same sample in float (how weights are stored) gives the same answer.
  const torch::Tensor w = gaussian(kN, 4);
  EXPECT_NEAR(binarization_index(w.to(torch::kFloat)), binarization_index(w), 1e-6);
}

TEST(Inspect, ConstantMagnitudeGivesExactlyOne) {
  for (double c : {1.0, 0.1, 3e-7, 250.0}) {
    EXPECT_NEAR(binarization_index(plus_minus({1000}, c, 1)), 1.0, 1e-12) << c;
    EXPECT_NEAR(binarization_index(plus_minus({6, 1, 5, 5}, c, 2, torch::kDouble)), 1.0, 1e-12)
        << c;
  }
  // All of one sign, and a single element.
  EXPECT_NEAR(binarization_index(torch::full({17}, -0.3)), 1.0, 1e-12);
  EXPECT_NEAR(binarization_index(torch::tensor({0.7})), 1.0, 1e-12);
}

TEST(Inspect, UniformWeightsGiveAnalyticValue) {
  // Symmetric uniform: E[w²]/E[|w|]² = (a²/3)/(a/2)² = 4/3, so b = (π/2 − 4/3)/(π/2 − 1).
  const double expected = index_of_ratio(4.0 / 3.0);
  EXPECT_NEAR(expected, 0.41602, 1e-5);
  // Deterministic: midpoints of n equal cells of [-1, 1] give mean|w| = 1/2 exactly and
  // mean w² = 1/3 − 1/(3n²)... up to rounding, so the ratio is 4/3 − O(1/n²).
  constexpr int64_t kN = 200000;
  const torch::Tensor grid =
      (torch::arange(kN, torch::kDouble) + 0.5) * (2.0 / static_cast<double>(kN)) - 1.0;
  EXPECT_NEAR(binarization_index(grid), expected, 1e-9);
  // Random: a sample of 1e6 from U(-1, 1). By the delta method (moments of U(0,1)) the ratio
  // estimate has sd ≈ 0.487/√n = 4.9e-4, i.e. 8.5e-4 in b; 5e-3 is about 6 sd.
  EXPECT_NEAR(binarization_index(uniform(1000000, 5)), expected, 5e-3);
}

TEST(Inspect, IndexFollowsTheFormulaInside) {
  // Half ±1, half ±0.5: E|w| = 0.75, E w² = 0.625, ratio 10/9.
  std::vector<double> v;
  for (int i = 0; i < 100; ++i) v.push_back((i % 2 ? 1.0 : -1.0) * (i < 50 ? 1.0 : 0.5));
  EXPECT_NEAR(binarization_index(torch::tensor(v)), index_of_ratio(10.0 / 9.0), 1e-14);
  // Heavier tails than Gaussian clamp to 0: Laplace (ratio 2) and sparse weights.
  auto gen = at::detail::createCPUGenerator(9);
  const torch::Tensor laplace = -torch::log(torch::rand({200000}, gen, torch::kDouble)) *
                                (torch::randint(2, {200000}, gen, torch::kDouble) * 2 - 1);
  EXPECT_EQ(binarization_index(laplace), 0.0);
  torch::Tensor sparse = torch::zeros({1000});
  sparse[3] = 0.5;
  sparse[700] = -0.2;
  EXPECT_EQ(binarization_index(sparse), 0.0);
}

TEST(Inspect, IndexIsScaleAndSignInvariant) {
  const torch::Tensor w = uniform(100000, 11);
  const double b = binarization_index(w);
  ASSERT_GT(b, 0.3);  // inside (0, 1), so no clamping could hide a scale dependence
  ASSERT_LT(b, 0.5);
  for (double k : {1e-30, 1e-3, 0.37, 7.5, 1e4, 1e30}) {
    EXPECT_NEAR(binarization_index(w * k), b, 1e-12) << k;
  }
  EXPECT_NEAR(binarization_index(-w), b, 1e-15);
  // Tiny float weights (squares below float's range) do not underflow.
  EXPECT_NEAR(binarization_index((w * 1e-30).to(torch::kFloat)), b, 1e-6);
}

TEST(Inspect, ZerosEmptyAndNonFinite) {
  // All-zero and empty: defined as 0, not NaN.
  EXPECT_EQ(binarization_index(torch::zeros({6, 1, 5, 5})), 0.0);
  EXPECT_EQ(binarization_index(torch::empty({0})), 0.0);
  const WeightStats z = tensor_weight_stats(torch::zeros({10, 3}), 4, "fc", "linear");
  EXPECT_EQ(z.count, 30);
  EXPECT_EQ(z.mean_abs, 0.0);
  EXPECT_EQ(z.rms, 0.0);
  EXPECT_EQ(z.max_abs, 0.0);
  EXPECT_EQ(z.binarization, 0.0);
  const WeightStats e = tensor_weight_stats(torch::empty({0, 4}), 1, "x", "conv");
  EXPECT_EQ(e.count, 0);
  EXPECT_EQ(e.binarization, 0.0);
  EXPECT_EQ(e.rms, 0.0);
  // A non-finite weight makes the index NaN (the weights are broken, not binarised).
  for (double bad :
       {std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()}) {
    torch::Tensor w = uniform(100, 1);
    w[7] = bad;
    EXPECT_TRUE(std::isnan(binarization_index(w))) << bad;
    EXPECT_TRUE(std::isnan(binarization_index(w.to(torch::kFloat)))) << bad;
    const WeightStats s = tensor_weight_stats(w, 1, "x", "conv");
    EXPECT_FALSE(std::isfinite(s.max_abs));
    // JSON has no NaN: it is written as null.
    EXPECT_TRUE(s.to_json().at("binarization").is_null());
  }
}

TEST(Inspect, TensorStatsAreTheMoments) {
  const torch::Tensor w = torch::tensor({-2.0, 1.0, 0.0, 3.0, -0.5});
  const WeightStats s = tensor_weight_stats(w, 7, "fc2", "linear");
  EXPECT_EQ(s.site, 7);
  EXPECT_EQ(s.name, "fc2");
  EXPECT_EQ(s.op, "linear");
  EXPECT_EQ(s.count, 5);
  EXPECT_NEAR(s.mean_abs, 6.5 / 5, 1e-15);
  EXPECT_NEAR(s.rms, std::sqrt(14.25 / 5), 1e-15);
  EXPECT_EQ(s.max_abs, 3.0);
  const double ratio = (14.25 / 5) / ((6.5 / 5) * (6.5 / 5));
  EXPECT_NEAR(s.binarization, std::clamp(index_of_ratio(ratio), 0.0, 1.0), 1e-14);
  const Json j = s.to_json();
  EXPECT_EQ(j.at("site"), 7);
  EXPECT_EQ(j.at("name"), "fc2");
  EXPECT_EQ(j.at("count"), 5);
  EXPECT_EQ(j.at("max_abs").get<double>(), 3.0);
  EXPECT_EQ(j.at("mean_abs").get<double>(), s.mean_abs);
}

// ---------------------------------------------------------------------------------------------
// weight_stats on models

// Plain double loops over several tensors taken as one pool: an independent reference.
struct Reference {
  int64_t n = 0;
  double sum_abs = 0, sum_sq = 0, max_abs = 0;
  void add(const torch::Tensor& t) {
    const torch::Tensor d = t.detach().to(torch::kDouble).contiguous();
    const double* p = d.data_ptr<double>();
    for (int64_t i = 0; i < d.numel(); ++i) {
      sum_abs += std::fabs(p[i]);
      sum_sq += p[i] * p[i];
      max_abs = std::max(max_abs, std::fabs(p[i]));
    }
    n += d.numel();
  }
  double mean_abs() const { return sum_abs / n; }
  double rms() const { return std::sqrt(sum_sq / n); }
  double index() const {
    return std::clamp(index_of_ratio((sum_sq / n) / (mean_abs() * mean_abs())), 0.0, 1.0);
  }
};

void expect_matches(const WeightStats& s, const Reference& r) {
  EXPECT_EQ(s.count, r.n) << s.name;
  EXPECT_NEAR(s.mean_abs, r.mean_abs(), 1e-12 * r.max_abs) << s.name;
  EXPECT_NEAR(s.rms, r.rms(), 1e-12 * r.max_abs) << s.name;
  EXPECT_EQ(s.max_abs, r.max_abs) << s.name;
  EXPECT_NEAR(s.binarization, r.index(), 1e-10) << s.name;
}

TEST(Inspect, WeightStatsOfLenet5BnWithKnownWeights) {
  torch::manual_seed(3);
  Model m = make_model(ModelSpec{});    // lenet5-bn, 1x28x28, 10 classes
  auto params = m->named_parameters();  // the tensors share the model's storage
  auto* conv1 = params.find("conv1.weight");
  auto* conv2 = params.find("conv2.weight");
  auto* fc2 = params.find("fc2.weight");
  ASSERT_NE(conv1, nullptr);
  ASSERT_NE(conv2, nullptr);
  ASSERT_NE(fc2, nullptr);
  {
    torch::NoGradGuard g;
    conv1->copy_(plus_minus({6, 1, 5, 5}, 0.5, 1));  // binarised: b = 1
    conv2->zero_();                                  // all zero: b = 0
    // fc2: a uniform grid on [-0.2, 0.2], b = (π/2 − 4/3)/(π/2 − 1) up to O(1/n²).
    fc2->copy_(((torch::arange(fc2->numel()).to(torch::kDouble) + 0.5) *
                    (2.0 / static_cast<double>(fc2->numel())) -
                1.0)
                   .mul(0.2)
                   .view(fc2->sizes()));
  }
  const torch::Tensor fc3_before = m->named_parameters()["fc3.weight"].clone();
  const auto stats = weight_stats(*m);
  ASSERT_EQ(stats.size(), 5u);
  const std::vector<int> sites = {1, 5, 9, 12, 15};
  const std::vector<std::string> names = {"conv1", "conv2", "fc1", "fc2", "fc3"};
  const std::vector<std::string> ops = {"conv", "conv", "linear", "linear", "linear"};
  const std::vector<int64_t> counts = {150, 2400, 400 * 120, 120 * 84, 840};
  for (size_t i = 0; i < stats.size(); ++i) {
    EXPECT_EQ(stats[i].site, sites[i]);
    EXPECT_EQ(stats[i].name, names[i]);
    EXPECT_EQ(stats[i].op, ops[i]);
    EXPECT_EQ(stats[i].count, counts[i]) << names[i];
  }
  EXPECT_NEAR(stats[0].mean_abs, 0.5, 1e-12);
  EXPECT_NEAR(stats[0].rms, 0.5, 1e-12);
  EXPECT_EQ(stats[0].max_abs, 0.5);
  EXPECT_NEAR(stats[0].binarization, 1.0, 1e-12);
  EXPECT_EQ(stats[1].mean_abs, 0.0);
  EXPECT_EQ(stats[1].binarization, 0.0);
  // fc2's values are floats of the grid: 1e-6 covers their rounding.
  EXPECT_NEAR(stats[3].mean_abs, 0.1, 1e-7);
  EXPECT_NEAR(stats[3].rms, 0.2 / std::sqrt(3.0), 1e-7);
  EXPECT_NEAR(stats[3].binarization, index_of_ratio(4.0 / 3.0), 1e-6);
  // fc1 and fc3 keep their default (uniform Kaiming) init: check against plain loops.
  for (size_t i : {size_t{2}, size_t{4}}) {
    Reference r;
    r.add(m->named_parameters()[names[i] + ".weight"]);
    expect_matches(stats[i], r);
  }
  // The aggregate pools every conv/linear weight (biases excluded); its index is that of the
  // pool with each layer in units of its own mean |w| (the zero layer stays zeros).
  Reference all, shapes;
  for (const auto& n : names) {
    const torch::Tensor w = m->named_parameters()[n + ".weight"].to(torch::kDouble);
    all.add(w);
    const double mean_abs = w.abs().mean().item<double>();
    shapes.add(mean_abs > 0 ? w / mean_abs : w);
  }
  const WeightStats agg = aggregate_weight_stats(*m);
  EXPECT_EQ(agg.site, -1);
  EXPECT_EQ(agg.name, "all");
  EXPECT_EQ(agg.op, "all");
  EXPECT_EQ(agg.count, 150 + 2400 + 48000 + 10080 + 840);
  EXPECT_EQ(agg.count, all.n);
  EXPECT_NEAR(agg.mean_abs, all.mean_abs(), 1e-12);
  EXPECT_NEAR(agg.rms, all.rms(), 1e-12);
  EXPECT_EQ(agg.max_abs, all.max_abs);
  EXPECT_NEAR(agg.binarization, shapes.index(), 1e-10);
  EXPECT_EQ(agg.max_abs, 0.5);  // conv1's ±0.5 is larger than the Kaiming bounds after it
  // Inspection changes nothing and leaves no autograd history.
  EXPECT_TRUE(torch::equal(m->named_parameters()["fc3.weight"], fc3_before));
  for (const auto& p : m->parameters()) {
    EXPECT_TRUE(p.requires_grad());
    EXPECT_FALSE(p.grad().defined());
  }
}

TEST(Inspect, AggregateOfBinarisedLayersOfDifferentScalesIsOne) {
  torch::manual_seed(4);
  Model m = make_model(ModelSpec{});
  double c = 1e-3;
  float largest = 0.0f;
  {
    torch::NoGradGuard g;
    for (auto& [site, w] : m->analog_weights()) {
      w.copy_(plus_minus(w.sizes().vec(), c, static_cast<uint64_t>(site)));
      largest = static_cast<float>(c);
      c *= 10;  // 1e-3 ... 10
    }
  }
  for (const auto& s : weight_stats(*m)) EXPECT_NEAR(s.binarization, 1.0, 1e-12) << s.name;
  const WeightStats agg = aggregate_weight_stats(*m);
  EXPECT_NEAR(agg.binarization, 1.0, 1e-12);
  // Pooled as raw numbers, the five scales would be a heavy-tailed mixture.
  std::vector<torch::Tensor> raw;
  for (const auto& sw : m->analog_weights()) raw.push_back(sw.second.reshape({-1}));
  EXPECT_EQ(binarization_index(torch::cat(raw)), 0.0);
  EXPECT_EQ(agg.max_abs, static_cast<double>(largest));
}

TEST(Inspect, WeightStatsCoverEveryRegisteredModel) {
  for (const auto& name : model_names()) {
    SCOPED_TRACE(name);
    ModelSpec spec;
    spec.name = name;
    if (name == "vgg-s" || name == "resnet20") {
      spec.in_channels = 3;
      spec.height = spec.width = 32;
    }
    torch::manual_seed(1);
    Model m = make_model(spec);
    const auto stats = weight_stats(*m);
    const auto analog = m->analog_weights();
    ASSERT_EQ(stats.size(), analog.size());
    ASSERT_FALSE(stats.empty());
    const auto site_names = m->site_names();
    int64_t total = 0;
    double max_abs = 0.0;
    for (size_t i = 0; i < stats.size(); ++i) {
      EXPECT_EQ(stats[i].site, analog[i].first);
      EXPECT_EQ(stats[i].name, site_names.at(static_cast<size_t>(analog[i].first)));
      EXPECT_TRUE(stats[i].op == "conv" || stats[i].op == "linear") << stats[i].op;
      EXPECT_EQ(stats[i].count, analog[i].second.numel());
      // Kaiming-uniform init: near the uniform value, never binarised.
      // (sd of the estimate ≈ 0.85/√n: 0.07 for the smallest layer, conv1 of lenet5 with 150)
      EXPECT_GT(stats[i].binarization, 0.1) << stats[i].name;
      EXPECT_LT(stats[i].binarization, 0.7) << stats[i].name;
      total += stats[i].count;
      max_abs = std::max(max_abs, stats[i].max_abs);
    }
    const WeightStats agg = aggregate_weight_stats(*m);
    EXPECT_EQ(agg.count, total);
    EXPECT_EQ(agg.max_abs, max_abs);
  }
}

// ---------------------------------------------------------------------------------------------
// quell inspect, run as a child process

struct CliRun {
  int exit_code = -1;
  std::string out, err;
};

std::ostream& operator<<(std::ostream& os, const CliRun& r) {
  return os << "\nexit " << r.exit_code << "\n--- stdout ---\n"
            << r.out << "--- stderr ---\n"
            << r.err << "---";
}




std::vector<std::string> csv_fields(const std::string& line) {
  std::vector<std::string> fields;
  std::istringstream in(line);
  for (std::string f; std::getline(in, f, ',');) fields.push_back(f);
  return fields;
}

void expect_close(double got, double want) {
  EXPECT_NEAR(got, want, 1e-12 * std::max(1.0, std::fabs(want)));
}

class InspectCli : public ::testing::Test {
 protected:
  // One checkpoint for the suite: lenet5-bn with conv1 binarised (±0.25) and conv2 all zero.
  static void SetUpTestSuite() {
    fs::create_directories(QUELL_TEST_TMP);
    std::string pattern = (fs::path(QUELL_TEST_TMP) / "quell_inspect_XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr) << std::strerror(errno);
    root_ = new fs::path(pattern);
    torch::manual_seed(11);
    Model m = make_model(ModelSpec{});
    {
      torch::NoGradGuard g;
      m->named_parameters()["conv1.weight"].copy_(plus_minus({6, 1, 5, 5}, 0.25, 2));
      m->named_parameters()["conv2.weight"].zero_();
    }
    m->eval();
    m->calibrate(torch::randn({8, 1, 28, 28}));
    CheckpointMeta meta;
    meta.spec = m->spec();
    meta.dataset = "fashion-mnist";
    save_checkpoint(checkpoint(), *m, meta);
    expected_ = new std::vector<WeightStats>(weight_stats(*m));
    expected_->push_back(aggregate_weight_stats(*m));
  }
  static void TearDownTestSuite() {
    std::error_code ignored;
    if (!std::getenv("QUELL_KEEP_TEST_TMP")) fs::remove_all(*root_, ignored);
    delete root_;
    delete expected_;
    root_ = nullptr;
    expected_ = nullptr;
  }
  static std::string checkpoint() { return (*root_ / "l5.pt").string(); }
  static std::string path(const std::string& name) { return (*root_ / name).string(); }

  static CliRun run(const std::vector<std::string>& args) {
    static int counter = 0;
    const std::string tag = std::to_string(::getpid()) + "_" + std::to_string(counter++);
    const std::string out = path("stdout_" + tag), err = path("stderr_" + tag);
    std::string cmd = shell_quote(QUELL_CLI_PATH);
    for (const auto& a : args) cmd += " " + shell_quote(a);
    cmd += " </dev/null >" + shell_quote(out) + " 2>" + shell_quote(err);
    CliRun r;
    const int status = std::system(cmd.c_str());
    r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    r.out = testing::read_file(out);
    r.err = testing::read_file(err);
    fs::remove(out);
    fs::remove(err);
    return r;
  }

  static fs::path* root_;
  static std::vector<WeightStats>* expected_;  ///< five layers, then the aggregate
};
fs::path* InspectCli::root_ = nullptr;
std::vector<WeightStats>* InspectCli::expected_ = nullptr;

TEST_F(InspectCli, TableHasEveryLayerAndTheAggregate) {
  // Positional checkpoint and --checkpoint give the same table.
  const CliRun r = run({"inspect", checkpoint(), "--threads", "1"});
  ASSERT_EQ(r.exit_code, 0) << r;
  EXPECT_TRUE(r.err.empty()) << r;
  const CliRun r2 = run({"inspect", "--checkpoint", checkpoint(), "--threads", "1"});
  ASSERT_EQ(r2.exit_code, 0) << r2;
  EXPECT_EQ(r.out, r2.out);

  const auto lines = lines_of(r.out);
  // Title, header, 5 layers, aggregate, two lines of definitions.
  ASSERT_EQ(lines.size(), 10u) << r;
  EXPECT_NE(lines[0].find("lenet5-bn"), std::string::npos) << r;
  EXPECT_EQ(tokens_of(lines[1]), (std::vector<std::string>{"site", "name", "op", "count", "mean|w|",
                                                           "rms", "max|w|", "binarisation"}));
  for (size_t i = 0; i < 6; ++i) {
    const WeightStats& e = (*expected_)[i];
    const auto t = tokens_of(lines[2 + i]);
    ASSERT_EQ(t.size(), 8u) << lines[2 + i];
    EXPECT_EQ(t[0], i < 5 ? std::to_string(e.site) : "-");
    EXPECT_EQ(t[1], e.name);
    EXPECT_EQ(t[2], e.op);
    EXPECT_EQ(std::stoll(t[3]), e.count);
    // Six significant digits for the magnitudes, four decimals for the index.
    EXPECT_NEAR(std::stod(t[4]), e.mean_abs, 1e-5 * e.max_abs + 1e-12) << lines[2 + i];
    EXPECT_NEAR(std::stod(t[5]), e.rms, 1e-5 * e.max_abs + 1e-12) << lines[2 + i];
    EXPECT_NEAR(std::stod(t[6]), e.max_abs, 1e-5 * e.max_abs + 1e-12) << lines[2 + i];
    EXPECT_NEAR(std::stod(t[7]), e.binarization, 5e-5) << lines[2 + i];
  }
  // The binarised and the zeroed layer read as such.
  EXPECT_EQ(tokens_of(lines[2])[7], "1.0000");
  EXPECT_EQ(tokens_of(lines[3])[7], "0.0000");
  EXPECT_EQ(tokens_of(lines[7])[1], "all");
}

TEST_F(InspectCli, JsonAndCsvCarryExactValues) {
  const CliRun j = run({"inspect", checkpoint(), "--format", "json", "--out", path("s.json")});
  ASSERT_EQ(j.exit_code, 0) << j;
  EXPECT_TRUE(j.out.empty()) << "--out FILE leaves stdout empty" << j;
  const Json doc = Json::parse(testing::read_file(path("s.json")));
  EXPECT_EQ(doc.at("checkpoint"), checkpoint());
  EXPECT_EQ(doc.at("model").at("name"), "lenet5-bn");
  EXPECT_EQ(doc.at("dataset"), "fashion-mnist");
  for (const char* key : {"quell_version", "git_commit", "libtorch_version", "utc_time"}) {
    EXPECT_TRUE(doc.at("provenance").contains(key)) << key;
  }
  ASSERT_EQ(doc.at("layers").size(), 5u);
  // Same statistics as computed here from the model saved; torch's reductions may split the
  // sums differently with another thread count, hence the 1e-12 relative tolerance.
  for (size_t i = 0; i < 6; ++i) {
    const WeightStats& e = (*expected_)[i];
    const Json& row = i < 5 ? doc.at("layers")[i] : doc.at("all");
    EXPECT_EQ(row.at("site"), e.site);
    EXPECT_EQ(row.at("name"), e.name);
    EXPECT_EQ(row.at("op"), e.op);
    EXPECT_EQ(row.at("count"), e.count);
    expect_close(row.at("mean_abs").get<double>(), e.mean_abs);
    expect_close(row.at("rms").get<double>(), e.rms);
    EXPECT_EQ(row.at("max_abs").get<double>(), e.max_abs);
    expect_close(row.at("binarization").get<double>(), e.binarization);
  }
  EXPECT_EQ(doc.at("all").at("site"), -1);

  // CSV to stdout: header, 5 layers, aggregate; shortest round-trip numbers.
  const CliRun c = run({"inspect", "-c", checkpoint(), "--format", "csv"});
  ASSERT_EQ(c.exit_code, 0) << c;
  const auto lines = lines_of(c.out);
  ASSERT_EQ(lines.size(), 7u) << c;
  EXPECT_EQ(lines[0], "site,name,op,count,mean_abs,rms,max_abs,binarization");
  for (size_t i = 0; i < 6; ++i) {
    const WeightStats& e = (*expected_)[i];
    const auto f = csv_fields(lines[1 + i]);
    ASSERT_EQ(f.size(), 8u) << lines[1 + i];
    EXPECT_EQ(std::stoi(f[0]), e.site);
    EXPECT_EQ(f[1], e.name);
    EXPECT_EQ(std::stoll(f[3]), e.count);
    EXPECT_EQ(f[2], e.op);
    expect_close(std::stod(f[4]), e.mean_abs);
    expect_close(std::stod(f[5]), e.rms);
    EXPECT_EQ(std::stod(f[6]), e.max_abs);
    expect_close(std::stod(f[7]), e.binarization);
  }
}

TEST_F(InspectCli, ErrorsAreOneLine) {
  const std::string missing = path("no_such.pt");
  const std::string garbage = path("garbage.pt");
  testing::write_file(garbage, "this is not a checkpoint");
  for (const std::string& bad : {missing, garbage}) {
    const CliRun r = run({"inspect", bad, "--out", path("never.json"), "--format", "json"});
    EXPECT_EQ(r.exit_code, 1) << r;
    const auto err = lines_of(r.err);
    ASSERT_EQ(err.size(), 1u) << r;
    EXPECT_EQ(err[0].rfind("quell: error:", 0), 0u) << r;
    EXPECT_NE(err[0].find(bad), std::string::npos) << r;
    EXPECT_TRUE(r.out.empty()) << r;
    EXPECT_FALSE(fs::exists(path("never.json")));
  }
  // No checkpoint at all, or a bad format: usage errors (exit 2).
  const CliRun none = run({"inspect"});
  EXPECT_EQ(none.exit_code, 2) << none;
  EXPECT_EQ(lines_of(none.err).size(), 1u) << none;
  const CliRun fmt = run({"inspect", checkpoint(), "--format", "xml"});
  EXPECT_EQ(fmt.exit_code, 2) << fmt;
  // A checkpoint of another model than --model says.
  const CliRun mismatch = run({"inspect", checkpoint(), "--model", "mlp"});
  EXPECT_EQ(mismatch.exit_code, 1) << mismatch;
  EXPECT_NE(mismatch.err.find("'mlp'"), std::string::npos) << mismatch;
}

}  // namespace
}  // namespace quell
