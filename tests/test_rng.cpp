// Tests for quell/rng.h: SplitMix64 known answers, the inverse normal CDF's accuracy,
// Gaussian quality, independence, determinism under threading and chunking, and the fused noise kernels.
//
// Every test is seeded (fixed key and stream), so it is deterministic; the statistical bounds
// are still derived from the sample size (5 standard errors unless stated: a correct generator
// fails one with probability ~6e-7 for a random seed, a biased one fails it).

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/rng.h"

// Internals of src/rng.cpp, not part of the public header; exposed for these tests only.
namespace quell::detail {
uint64_t splitmix64_output(uint64_t seed, uint64_t counter);
float reference_normal(RngStream s, uint32_t substream, uint64_t index);
bool normal_block_on_path(int path, RngStream s, uint32_t substream, uint64_t block, float* out);
float approx_normal_from_word(uint32_t w);
}  // namespace quell::detail

namespace {

using quell::RngStream;

constexpr int64_t kN = 1000000;  // sample size of the statistical tests
constexpr double kPi = 3.14159265358979323846;

struct Moments {
  double mean = 0;
  double var = 0;       // population variance (divide by n)
  double skewness = 0;  // E[c^3] / var^1.5
  double kurtosis = 0;  // E[c^4] / var^2 (3 for a normal)
};

Moments moments(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kDouble).flatten();
  Moments m;
  m.mean = d.mean().item<double>();
  const torch::Tensor c = d - m.mean;
  const torch::Tensor c2 = c * c;
  m.var = c2.mean().item<double>();
  m.skewness = (c2 * c).mean().item<double>() / std::pow(m.var, 1.5);
  m.kurtosis = (c2 * c2).mean().item<double>() / (m.var * m.var);
  return m;
}

// Sample correlation of a and b (same numel), or of their squares: one pass in double.
double correlation(const torch::Tensor& a, const torch::Tensor& b, bool squares = false) {
  const torch::Tensor x = a.to(torch::kDouble).contiguous();
  const torch::Tensor y = b.to(torch::kDouble).contiguous();
  const double* px = x.data_ptr<double>();
  const double* py = y.data_ptr<double>();
  const int64_t n = x.numel();
  double sx = 0, sy = 0, sxx = 0, syy = 0, sxy = 0;
  for (int64_t i = 0; i < n; ++i) {
    const double u = squares ? px[i] * px[i] : px[i];
    const double v = squares ? py[i] * py[i] : py[i];
    sx += u;
    sy += v;
    sxx += u * u;
    syy += v * v;
    sxy += u * v;
  }
  const double cov = sxy / n - (sx / n) * (sy / n);
  return cov / std::sqrt((sxx / n - (sx / n) * (sx / n)) * (syy / n - (sy / n) * (sy / n)));
}

double std_normal_cdf(double x) { return 0.5 * std::erfc(-x / std::sqrt(2.0)); }

torch::Tensor filled(int64_t n, RngStream s, torch::ScalarType type = torch::kFloat) {
  torch::Tensor t = torch::empty({n}, torch::TensorOptions().dtype(type));
  quell::normal_fill_(t, s);
  return t;
}

bool bit_identical(const torch::Tensor& a, const torch::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  const torch::Tensor ca = a.contiguous();
  const torch::Tensor cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * ca.element_size()) == 0;
}

// Restores LibTorch's intra-op thread count when a test changes it.
struct ThreadCountGuard {
  int saved = at::get_num_threads();
  ~ThreadCountGuard() { at::set_num_threads(saved); }
};

// ---- the generator itself ---------------------------------------------------------------

TEST(SplitMix, KnownAnswers) {
  // Vigna's splitmix64.c seeded with 0: its first outputs (the counter hash is output c).
  using quell::detail::splitmix64_output;
  EXPECT_EQ(splitmix64_output(0, 0), 0xE220A8397B1DCDAFull);
  EXPECT_EQ(splitmix64_output(0, 1), 0x6E789E6AA1B965F4ull);
  EXPECT_EQ(splitmix64_output(0, 2), 0x06C45D188009454Full);
}

// Q(t) = sqrt(2) erfc^-1(t), the z >= 0 with P(|N(0,1)| > z) = t, by Newton in double.
double exact_two_sided_quantile(double t) {
  double z = t < 0.5 ? std::sqrt(-2.0 * std::log(t)) : 0.5;
  for (int it = 0; it < 100; ++it) {
    const double f = std::erfc(z / std::sqrt(2.0)) - t;
    const double df = -std::sqrt(2.0 / kPi) * std::exp(-0.5 * z * z);
    const double next = std::max(0.5 * z, z - f / df);
    if (std::abs(next - z) < 1e-15) return next;
    z = next;
  }
  return z;
}

TEST(Approximations, InverseNormalCdfAccuracy) {
  // The bounds documented in src/rng.cpp, against Q in double, over every octave of the
  // 31-bit grid t = k / 2^31 (k odd): |Phi(n) - Phi(exact)| and, for |n| >= 1, the relative
  // error of the tail probability P(|N| > |n|) = erfc(|n| / sqrt 2).
  double max_cdf_abs = 0;
  double max_tail_rel = 0;
  float max_normal = 0;
  for (int octave = 0; octave < 31; ++octave) {
    const uint64_t lo = uint64_t{1} << octave;
    const uint64_t step = std::max<uint64_t>(2, (lo / 4096) * 2);  // even: keeps k odd
    for (uint64_t k = lo | 1u; k < 2 * lo; k += step) {
      for (const uint32_t w : {static_cast<uint32_t>(k), static_cast<uint32_t>(k - 1)}) {
        // w and w with bit 0 clear give the same k; the sign is bit 31.
        const float n = quell::detail::approx_normal_from_word(w);
        const float negative = quell::detail::approx_normal_from_word(w | 0x80000000u);
        EXPECT_EQ(negative, -n);
        ASSERT_GE(n, 0.0f);
        max_normal = std::max(max_normal, n);
        const double t = std::ldexp(static_cast<double>(k), -31);
        const double tail = std::erfc(n / std::sqrt(2.0));
        max_cdf_abs = std::max(max_cdf_abs, 0.5 * std::abs(tail - t));
        if (n >= 1.0f) max_tail_rel = std::max(max_tail_rel, std::abs(tail / t - 1.0));
        EXPECT_NEAR(n, exact_two_sided_quantile(t), 1e-4) << k;
      }
    }
  }
  EXPECT_LT(max_cdf_abs, 2e-6);
  EXPECT_LT(max_tail_rel, 2e-5);
  // The cut: the smallest t is 2^-31.
  EXPECT_NEAR(max_normal, exact_two_sided_quantile(std::ldexp(1.0, -31)), 1e-4);
  EXPECT_EQ(quell::detail::approx_normal_from_word(0x7FFFFFFFu), 0.0f);  // k rounds to 2^31
}

TEST(Mapping, ReferenceMappingMatchesKernels) {
  // The vectorised kernels follow the documented element -> (hash counter, word) mapping,
  // computed here by scalar code, bit for bit; substream 1 is what the mixed kernels add.
  const RngStream s{/*key=*/11, /*stream=*/22};
  const torch::Tensor n = filled(kN, s);
  const float* p = n.data_ptr<float>();
  torch::Tensor zeros = torch::zeros({kN});
  quell::mul_add_normal_(zeros, s, /*sigma_mul=*/1.0, /*sigma_add=*/1.0);  // 0*(...) + n2
  const float* p2 = zeros.data_ptr<float>();
  std::vector<int64_t> indices;
  for (int64_t i = 0; i < 1024; ++i) indices.push_back(i);  // every position of 4 blocks
  for (int64_t i : {12345, 32767, 32768, 500000, 999999}) indices.push_back(i);
  for (int64_t i : indices) {
    EXPECT_EQ(p[i], quell::detail::reference_normal(s, 0, static_cast<uint64_t>(i))) << i;
    EXPECT_EQ(p2[i], quell::detail::reference_normal(s, 1, static_cast<uint64_t>(i))) << i;
  }
}

TEST(Mapping, AllCpuPathsGiveIdenticalBits) {
  // Generic, AVX2 and AVX-512 implementations (those this CPU has) agree bit for bit, also
  // for a block far out (block 2^30: counters 2^37 ..), checked against the scalar
  // reference there.
  const RngStream s{/*key=*/123, /*stream=*/456};
  const uint64_t blocks[] = {0, 1, 2, 127, 128, 4097, uint64_t{1} << 30};
  int paths_run = 0;
  for (int path = 0; path < 3; ++path) {
    for (uint32_t substream : {0u, 1u}) {
      for (uint64_t block : blocks) {
        float generic[256];
        float other[256];
        ASSERT_TRUE(quell::detail::normal_block_on_path(0, s, substream, block, generic));
        if (!quell::detail::normal_block_on_path(path, s, substream, block, other)) continue;
        ++paths_run;
        EXPECT_EQ(std::memcmp(generic, other, sizeof generic), 0)
            << "path " << path << " block " << block << " substream " << substream;
        for (int i = 0; i < 256; i += 37) {
          EXPECT_EQ(other[i], quell::detail::reference_normal(s, substream, block * 256 + i))
              << "path " << path << " block " << block << " element " << i;
        }
      }
    }
  }
  EXPECT_GE(paths_run, 14);  // at least the generic path, 2 substreams x 7 blocks
}

// ---- Gaussian quality -------------------------------------------------------------------

TEST(NormalFill, MomentsMatchStandardNormal) {
  const Moments m = moments(filled(kN, {/*key=*/1, /*stream=*/2}));
  const double n = static_cast<double>(kN);
  // Standard errors of sample moments of N(0,1): mean 1/sqrt(n), variance sqrt(2/n),
  // skewness sqrt(6/n), kurtosis sqrt(24/n); bound 5 standard errors.
  EXPECT_LT(std::abs(m.mean), 5.0 / std::sqrt(n));
  EXPECT_LT(std::abs(m.var - 1.0), 5.0 * std::sqrt(2.0 / n));
  EXPECT_LT(std::abs(m.skewness), 5.0 * std::sqrt(6.0 / n));
  EXPECT_LT(std::abs(m.kurtosis - 3.0), 5.0 * std::sqrt(24.0 / n));
}

TEST(NormalFill, MeanAndStdParameters) {
  const double mean = -1.5;
  const double sd = 0.25;
  torch::Tensor t = torch::empty({kN});
  quell::normal_fill_(t, {/*key=*/1, /*stream=*/3}, mean, sd);
  const Moments m = moments(t);
  const double n = static_cast<double>(kN);
  // Same 5-standard-error bounds, scaled by sd.
  EXPECT_LT(std::abs(m.mean - mean), 5.0 * sd / std::sqrt(n));
  EXPECT_LT(std::abs(m.var / (sd * sd) - 1.0), 5.0 * std::sqrt(2.0 / n));
}

TEST(NormalFill, TailFractions) {
  const torch::Tensor a = filled(kN, {/*key=*/1, /*stream=*/4}).abs();
  const double n = static_cast<double>(kN);
  struct Tail {
    double z;
    double p;  // P(|N(0,1)| > z) = erfc(z / sqrt 2)
  };
  for (const Tail t :
       {Tail{1.0, std::erfc(1.0 / std::sqrt(2.0))}, Tail{2.0, std::erfc(2.0 / std::sqrt(2.0))},
        Tail{3.0, std::erfc(3.0 / std::sqrt(2.0))}, Tail{4.0, std::erfc(4.0 / std::sqrt(2.0))}}) {
    const double count = (a > t.z).sum().item<double>();
    // The count is Binomial(n, p): 5 standard deviations sqrt(n p (1 - p)) around n p.
    EXPECT_LT(std::abs(count - n * t.p), 5.0 * std::sqrt(n * t.p * (1.0 - t.p)))
        << "P(|n| > " << t.z << ")";
  }
  // The smallest tail probability is 2^-31, which cuts the tail at Q(2^-31) = 6.23
  // (documented in src/rng.cpp); everything must be finite and inside it.
  EXPECT_TRUE(torch::isfinite(a).all().item<bool>());
  EXPECT_LE(a.max().item<float>(), 6.2325f);
}

TEST(NormalFill, KolmogorovSmirnovAndChiSquare) {
  const torch::Tensor sorted = std::get<0>(filled(kN, {/*key=*/1, /*stream=*/5}).sort());
  const float* x = sorted.data_ptr<float>();
  const double n = static_cast<double>(kN);
  constexpr int kBins = 100;
  std::vector<double> bin_count(kBins, 0.0);
  double d_max = 0;
  for (int64_t i = 0; i < kN; ++i) {
    const double f = std_normal_cdf(x[i]);
    d_max = std::max({d_max, std::abs(f - i / n), std::abs(f - (i + 1) / n)});
    bin_count[std::min(kBins - 1, static_cast<int>(f * kBins))] += 1;
  }
  // Kolmogorov distribution: P(sqrt(n) D > 1.95) = 0.001.
  EXPECT_LT(d_max * std::sqrt(n), 1.95);
  // 100 equiprobable bins of Phi(x): chi-square with 99 degrees of freedom has mean 99 and
  // standard deviation sqrt(198) = 14.07; bound mean + 5 sd = 169.4.
  double chi2 = 0;
  const double expected = n / kBins;
  for (double c : bin_count) chi2 += (c - expected) * (c - expected) / expected;
  EXPECT_LT(chi2, 99.0 + 5.0 * std::sqrt(198.0));
}

// ---- independence -----------------------------------------------------------------------

TEST(NormalFill, NoCorrelationWithinAStream) {
  const torch::Tensor t = filled(kN + 256, {/*key=*/1, /*stream=*/6});
  const double bound = 5.0 / std::sqrt(static_cast<double>(kN));
  // For independent normals the sample correlation has standard error 1/sqrt(n). Lag 1
  // pairs the two halves of one 64-bit hash (and neighbouring hashes), 2 neighbouring hash
  // counters, 256 neighbouring blocks; 63, 64, 128, 192 were the old generator's structure.
  for (int64_t lag : {1, 2, 63, 64, 128, 192, 256}) {
    const torch::Tensor a = t.slice(0, 0, kN);
    const torch::Tensor b = t.slice(0, lag, kN + lag);
    EXPECT_LT(std::abs(correlation(a, b)), bound) << "lag " << lag;
    // Squares test dependence beyond linear (e.g. two normals sharing a magnitude):
    // corr(a^2, b^2) also has standard error 1/sqrt(n) for independent normals.
    EXPECT_LT(std::abs(correlation(a, b, /*squares=*/true)), bound) << "squares, lag " << lag;
  }
}

TEST(NormalFill, StreamsAndKeysAreIndependent) {
  const torch::Tensor base = filled(kN, {/*key=*/1, /*stream=*/7});
  // Standard error of a correlation between independent samples: 1/sqrt(n).
  const double bound = 5.0 / std::sqrt(static_cast<double>(kN));
  for (const RngStream other :
       {RngStream{1, 8}, RngStream{2, 7}, RngStream{0, 7}, RngStream{1, quell::mix_seed(7, 1)}}) {
    const torch::Tensor t = filled(kN, other);
    EXPECT_FALSE(torch::equal(base, t)) << other.key << "," << other.stream;
    EXPECT_LT(std::abs(correlation(base, t)), bound) << other.key << "," << other.stream;
    EXPECT_LT(std::abs(correlation(base, t, /*squares=*/true)), bound)
        << other.key << "," << other.stream;
  }
}

TEST(MixSeed, DeterministicOrderSensitiveAndMixing) {
  EXPECT_EQ(quell::mix_seed(1, 2), quell::mix_seed(1, 2));
  EXPECT_NE(quell::mix_seed(1, 2), quell::mix_seed(2, 1));
  EXPECT_NE(quell::mix_seed(0, 0), 0u);
  EXPECT_EQ(quell::mix_seed(1, 2, 3), quell::mix_seed(quell::mix_seed(1, 2), 3));
  std::vector<uint64_t> seen;
  double flipped_bits = 0;
  int trials = 0;
  for (uint64_t a = 0; a < 64; ++a) {
    for (uint64_t b = 0; b < 64; ++b) {
      const uint64_t h = quell::mix_seed(a, b);
      seen.push_back(h);
      // Avalanche: flipping input bit (a+b) % 64 of b flips each output bit with p = 1/2.
      flipped_bits += __builtin_popcountll(h ^ quell::mix_seed(a, b ^ (1ull << ((a + b) % 64))));
      ++trials;
    }
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::unique(seen.begin(), seen.end()), seen.end());  // no collisions on the grid
  // Flipped bits per trial ~ Binomial(64, 1/2): sd 4, so the mean of 4096 has sd 1/16; the
  // bound is 5 of those.
  EXPECT_NEAR(flipped_bits / trials, 32.0, 5.0 / 16.0);
}

// ---- determinism ------------------------------------------------------------------------

TEST(Determinism, SameStreamSameBitsAcrossThreadCounts) {
  // Two threads split the 3907 blocks in two chunks (only when compiled with OpenMP, see
  // for_each_block in src/rng.cpp; otherwise both runs are single-threaded).
  ThreadCountGuard guard;
  const RngStream s{/*key=*/42, /*stream=*/9};
  at::set_num_threads(1);
  const torch::Tensor one = filled(kN, s);
  const torch::Tensor again = filled(kN, s);
  torch::Tensor x1 = torch::ones({kN});
  quell::mul_add_normal_(x1, s, 0.1, 0.2);
  at::set_num_threads(2);
  const torch::Tensor two = filled(kN, s);
  torch::Tensor x2 = torch::ones({kN});
  quell::mul_add_normal_(x2, s, 0.1, 0.2);
  EXPECT_TRUE(bit_identical(one, again));
  EXPECT_TRUE(bit_identical(one, two));
  EXPECT_TRUE(bit_identical(x1, x2));
}

TEST(Determinism, ValuesDependOnElementIndexOnly) {
  ThreadCountGuard guard;
  at::set_num_threads(2);
  const RngStream s{/*key=*/42, /*stream=*/10};
  const torch::Tensor big = filled(kN, s);
  // Lengths below one block, not a multiple of the block, below and above the parallel grain.
  for (int64_t n : {1, 7, 255, 257, 1000, 32769, 100003}) {
    EXPECT_TRUE(bit_identical(filled(n, s), big.slice(0, 0, n))) << n;
  }
  // Shape does not matter, only the row-major element index.
  torch::Tensor shaped = torch::empty({10, 100, 1000});
  quell::normal_fill_(shaped, s);
  EXPECT_TRUE(bit_identical(shaped.flatten(), big));
  torch::Tensor scalar = torch::zeros({});
  quell::normal_fill_(scalar, s);
  EXPECT_EQ(scalar.item<float>(), big[0].item<float>());
}

TEST(Determinism, NonContiguousHalfAndDoubleUseTheSameNormals) {
  const RngStream s{/*key=*/5, /*stream=*/6};
  const torch::Tensor ref = filled(64 * 1000, s).view({64, 1000});
  // A transposed view is filled in its logical row-major order.
  torch::Tensor storage = torch::empty({1000, 64});
  torch::Tensor view = storage.t();
  ASSERT_FALSE(view.is_contiguous());
  quell::normal_fill_(view, s);
  EXPECT_TRUE(bit_identical(view, ref));
  // float64 gets the float normals widened exactly; half gets them rounded.
  EXPECT_TRUE(
      bit_identical(filled(64 * 1000, s, torch::kDouble), ref.flatten().to(torch::kDouble)));
  EXPECT_TRUE(bit_identical(filled(64 * 1000, s, torch::kHalf), ref.flatten().to(torch::kHalf)));
  // A non-contiguous add_normal_ equals the contiguous one.
  torch::Tensor base = torch::linspace(-1, 1, 64 * 1000).view({64, 1000});
  torch::Tensor contiguous = base.clone();
  torch::Tensor strided = base.t().contiguous().t();
  quell::add_normal_(contiguous, s, 0.5);
  quell::add_normal_(strided, s, 0.5);
  EXPECT_TRUE(bit_identical(contiguous, strided));
}

TEST(Determinism, ZeroSigmaIsBitIdentity) {
  torch::Tensor x = torch::randn({1000}, torch::Generator(at::detail::createCPUGenerator(3)));
  x[0] = std::numeric_limits<float>::quiet_NaN();
  x[1] = -0.0f;
  x[2] = std::numeric_limits<float>::infinity();
  const torch::Tensor before = x.clone();
  const RngStream s{/*key=*/1, /*stream=*/1};
  quell::add_normal_(x, s, 0.0);
  quell::mul_normal_(x, s, 0.0);
  quell::mul_add_normal_(x, s, 0.0, 0.0);
  quell::add_mul_normal_(x, s, 0.0, 0.0);
  EXPECT_TRUE(bit_identical(x, before));  // memcmp: NaN and -0 included
}

// ---- fused kernels ----------------------------------------------------------------------

TEST(Kernels, AddNormalIsXPlusSigmaTimesTheStream) {
  const RngStream s{/*key=*/3, /*stream=*/1};
  const double sigma = 0.3;
  const torch::Tensor x = torch::randn({kN}, torch::Generator(at::detail::createCPUGenerator(4)));
  torch::Tensor y = x.clone();
  quell::add_normal_(y, s, sigma);
  const torch::Tensor d = (y.to(torch::kDouble) - x.to(torch::kDouble)) / sigma;
  const Moments m = moments(d);
  const double n = static_cast<double>(kN);
  // (y - x) / sigma ~ N(0, 1): 5 standard errors as in MomentsMatchStandardNormal.
  EXPECT_LT(std::abs(m.mean), 5.0 / std::sqrt(n));
  EXPECT_LT(std::abs(m.var - 1.0), 5.0 * std::sqrt(2.0 / n));
  // And it is exactly the normal_fill_ stream, up to float rounding: sigma rounded to float
  // and the product sigma n each contribute 2^-24 |sigma n|, the sum 2^-24 |y|; divided by
  // sigma and with a factor 2 margin: |d - n| <= 2^-23 (|y| / sigma + 2 |n|).
  const torch::Tensor n_ref = filled(kN, s).to(torch::kDouble);
  const torch::Tensor tol =
      (y.to(torch::kDouble).abs() / sigma + 2.0 * n_ref.abs()) * std::ldexp(1.0, -23);
  EXPECT_LE(((d - n_ref).abs() - tol).max().item<double>(), 0.0);
}

TEST(Kernels, MulNormalRatioMoments) {
  const RngStream s{/*key=*/3, /*stream=*/2};
  const double sigma = 0.2;
  const torch::Tensor x =
      torch::rand({kN}, torch::Generator(at::detail::createCPUGenerator(5))) * 1.5 + 0.5;
  torch::Tensor y = x.clone();
  quell::mul_normal_(y, s, sigma);
  const Moments m = moments(y.to(torch::kDouble) / x.to(torch::kDouble));
  const double n = static_cast<double>(kN);
  // y / x = 1 + sigma n: mean 1 with standard error sigma / sqrt(n), variance sigma^2 with
  // relative standard error sqrt(2 / n); 5 standard errors.
  EXPECT_LT(std::abs(m.mean - 1.0), 5.0 * sigma / std::sqrt(n));
  EXPECT_LT(std::abs(m.var / (sigma * sigma) - 1.0), 5.0 * std::sqrt(2.0 / n));
}

// Mean and variance of y for constant x = c, checked against the formula. The bound on the
// variance uses the sample's own fourth moment: SE(var) = sqrt(Var((y - mean)^2) / n), which
// holds whether or not y is Gaussian (add_mul's n1 n2 term is not).
void expect_mean_var(const torch::Tensor& y, double mean, double var, const char* what) {
  const torch::Tensor d = y.to(torch::kDouble);
  const double n = static_cast<double>(d.numel());
  const double sample_mean = d.mean().item<double>();
  const torch::Tensor c2 = (d - sample_mean).pow(2);
  const double sample_var = c2.mean().item<double>();
  const double se_var = std::sqrt(c2.var(/*unbiased=*/false).item<double>() / n);
  EXPECT_LT(std::abs(sample_mean - mean), 5.0 * std::sqrt(var / n)) << what;
  EXPECT_LT(std::abs(sample_var - var), 5.0 * se_var) << what;
}

TEST(Kernels, MixedKernelsMatchFormulaMoments) {
  const double c = 2.0;
  const double sm = 0.1;
  const double sa = 0.2;
  torch::Tensor y = torch::full({kN}, c);
  quell::mul_add_normal_(y, {/*key=*/3, /*stream=*/3}, sm, sa);
  // y = c (1 + sm n1) + sa n2 with n1, n2 independent: E = c, Var = c^2 sm^2 + sa^2 = 0.08
  // (0.16 if n1 and n2 were the same normals).
  expect_mean_var(y, c, c * c * sm * sm + sa * sa, "mul_add");

  torch::Tensor z = torch::full({kN}, c);
  quell::add_mul_normal_(z, {/*key=*/3, /*stream=*/4}, sm, sa);
  // z = (c + sa n2)(1 + sm n1) = c + c sm n1 + sa n2 + sa sm n1 n2, the four terms
  // uncorrelated: E = c, Var = c^2 sm^2 + sa^2 + sa^2 sm^2.
  expect_mean_var(z, c, c * c * sm * sm + sa * sa + sa * sa * sm * sm, "add_mul");
}

TEST(Kernels, MixedKernelsFollowTheirFormulasElementwise) {
  // In float64, with n1 = normal_fill_ of s (substream 0) and n2 = substream 1 (obtained as
  // mul_add_normal_ of zeros with sigma_add = 1), both kernels equal their formula exactly.
  const RngStream s{/*key=*/8, /*stream=*/8};
  const int64_t n = 100000;
  const double sm = 0.3;
  const double sa = 0.7;
  const torch::Tensor n1 = filled(n, s, torch::kDouble);
  torch::Tensor n2 = torch::zeros({n}, torch::kDouble);
  quell::mul_add_normal_(n2, s, /*sigma_mul=*/1.0, /*sigma_add=*/1.0);
  EXPECT_LT(std::abs(correlation(n1, n2)), 5.0 / std::sqrt(static_cast<double>(n)));

  const torch::Tensor x =
      torch::randn({n}, torch::Generator(at::detail::createCPUGenerator(9)), torch::kDouble);
  torch::Tensor mul_add = x.clone();
  quell::mul_add_normal_(mul_add, s, sm, sa);
  EXPECT_TRUE(torch::allclose(mul_add, x * (1 + sm * n1) + sa * n2, 1e-14, 1e-14));
  torch::Tensor add_mul = x.clone();
  quell::add_mul_normal_(add_mul, s, sm, sa);
  EXPECT_TRUE(torch::allclose(add_mul, (x + sa * n2) * (1 + sm * n1), 1e-14, 1e-14));

  // With one scale 0 the mixed kernels reduce to the single ones on the matching substream.
  torch::Tensor only_mul = x.clone();
  quell::mul_add_normal_(only_mul, s, sm, 0.0);
  EXPECT_TRUE(torch::allclose(only_mul, x * (1 + sm * n1), 1e-14, 1e-14));
  torch::Tensor only_add = x.clone();
  quell::add_mul_normal_(only_add, s, 0.0, sa);
  EXPECT_TRUE(torch::allclose(only_add, x + sa * n2, 1e-14, 1e-14));
  torch::Tensor mul = x.clone();
  quell::mul_normal_(mul, s, sm);
  EXPECT_TRUE(torch::allclose(mul, x * (1 + sm * n1), 1e-14, 1e-14));
}

TEST(Kernels, OutOfPlaceEqualsInPlaceOnACopyAndLeavesTheInput) {
  // Every kernel, float and double, contiguous and strided, zero and non-zero scales: the
  // out-of-place function returns exactly what the in-place one writes into a copy, as a new
  // contiguous tensor, and the input keeps its bits.
  const RngStream s{/*key=*/12, /*stream=*/34};
  using InPlace = std::function<void(torch::Tensor&)>;
  using OutOfPlace = std::function<torch::Tensor(const torch::Tensor&)>;
  struct Case {
    const char* name;
    InPlace in_place;
    OutOfPlace out_of_place;
  };
  const std::vector<Case> cases = {
      {"add", [&](torch::Tensor& x) { quell::add_normal_(x, s, 0.3); },
       [&](const torch::Tensor& x) { return quell::add_normal(x, s, 0.3); }},
      {"mul", [&](torch::Tensor& x) { quell::mul_normal_(x, s, 0.2); },
       [&](const torch::Tensor& x) { return quell::mul_normal(x, s, 0.2); }},
      {"mul_add", [&](torch::Tensor& x) { quell::mul_add_normal_(x, s, 0.2, 0.3); },
       [&](const torch::Tensor& x) { return quell::mul_add_normal(x, s, 0.2, 0.3); }},
      {"add_mul", [&](torch::Tensor& x) { quell::add_mul_normal_(x, s, 0.2, 0.3); },
       [&](const torch::Tensor& x) { return quell::add_mul_normal(x, s, 0.2, 0.3); }},
      {"mul_add sigma_mul 0", [&](torch::Tensor& x) { quell::mul_add_normal_(x, s, 0.0, 0.3); },
       [&](const torch::Tensor& x) { return quell::mul_add_normal(x, s, 0.0, 0.3); }},
      {"add sigma 0", [&](torch::Tensor& x) { quell::add_normal_(x, s, 0.0); },
       [&](const torch::Tensor& x) { return quell::add_normal(x, s, 0.0); }},
  };
  for (const auto dtype : {torch::kFloat, torch::kDouble}) {
    const torch::Tensor base =
        torch::randn({37, 300}, torch::Generator(at::detail::createCPUGenerator(11)))
            .to(dtype);
    for (const bool strided : {false, true}) {
      const torch::Tensor x = strided ? base.t().contiguous().t() : base.clone();
      ASSERT_EQ(x.is_contiguous(), !strided);
      const torch::Tensor before = x.clone();
      for (const auto& c : cases) {
        torch::Tensor expected = x.clone();
        c.in_place(expected);
        const torch::Tensor y = c.out_of_place(x);
        const std::string what = std::string(c.name) + (strided ? " strided " : " ") +
                                 c10::toString(dtype);
        EXPECT_TRUE(y.is_contiguous()) << what;
        EXPECT_NE(y.data_ptr(), x.data_ptr()) << what;
        EXPECT_EQ(y.scalar_type(), dtype) << what;
        EXPECT_TRUE(bit_identical(y, expected.contiguous())) << what;
        EXPECT_TRUE(bit_identical(x, before)) << what;
      }
    }
  }
  // Not differentiable: a tensor requiring grad under grad mode is refused, naming why.
  const torch::Tensor w = torch::zeros({8}, torch::requires_grad());
  try {
    quell::add_normal(w, s, 0.1);
    ADD_FAILURE() << "accepted a tensor that requires grad";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("not differentiable"), std::string::npos) << e.what();
  }
  EXPECT_THROW(quell::mul_normal(w.detach(), s, -1.0), std::invalid_argument);
}

// ---- argument checks --------------------------------------------------------------------

TEST(Errors, BadScalesThrowNamingTheValue) {
  torch::Tensor x = torch::zeros({10});
  const RngStream s;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  struct Bad {
    double value;
    const char* text;
  };
  for (const Bad bad : {Bad{-0.5, "-0.5"}, Bad{nan, "nan"}, Bad{inf, "inf"}, Bad{-inf, "-inf"}}) {
    auto expect_throw = [&](auto fn, const char* name) {
      try {
        fn();
        ADD_FAILURE() << name << " accepted " << bad.text;
      } catch (const std::invalid_argument& e) {
        EXPECT_NE(std::string(e.what()).find(bad.text), std::string::npos) << e.what();
      }
    };
    expect_throw([&] { quell::add_normal_(x, s, bad.value); }, "add_normal_");
    expect_throw([&] { quell::mul_normal_(x, s, bad.value); }, "mul_normal_");
    expect_throw([&] { quell::mul_add_normal_(x, s, bad.value, 0.1); }, "mul_add sigma_mul");
    expect_throw([&] { quell::mul_add_normal_(x, s, 0.1, bad.value); }, "mul_add sigma_add");
    expect_throw([&] { quell::add_mul_normal_(x, s, bad.value, 0.1); }, "add_mul sigma_mul");
    expect_throw([&] { quell::add_mul_normal_(x, s, 0.1, bad.value); }, "add_mul sigma_add");
    expect_throw([&] { quell::normal_fill_(x, s, 0.0, bad.value); }, "normal_fill_ std");
  }
  EXPECT_THROW(quell::normal_fill_(x, s, nan, 1.0), std::invalid_argument);
  EXPECT_TRUE(torch::equal(x, torch::zeros({10})));  // nothing was written
}

TEST(Errors, BadTensorsThrow) {
  const RngStream s;
  torch::Tensor ints = torch::zeros({4}, torch::kLong);
  EXPECT_THROW(quell::add_normal_(ints, s, 0.1), std::invalid_argument);
  torch::Tensor undefined;
  EXPECT_THROW(quell::normal_fill_(undefined, s), std::invalid_argument);
  torch::Tensor empty = torch::empty({0, 3});
  EXPECT_NO_THROW(quell::add_normal_(empty, s, 0.1));
}

TEST(Errors, RequiresGradUnderGradModeThrows) {
  const RngStream s;
  torch::Tensor w = torch::zeros({8}, torch::requires_grad());
  try {
    quell::add_normal_(w, s, 0.1);
    ADD_FAILURE() << "accepted a tensor that requires grad";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("requires grad"), std::string::npos) << e.what();
  }
  torch::NoGradGuard no_grad;
  const auto version = w._version();
  EXPECT_NO_THROW(quell::add_normal_(w, s, 0.1));
  // Raw writes bump the version counter like a torch in-place op, so autograd can see them.
  EXPECT_GT(w._version(), version);
  EXPECT_FALSE(torch::equal(w, torch::zeros({8})));
}

}  // namespace
