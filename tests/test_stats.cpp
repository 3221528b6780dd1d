// Tests for quell/stats.h: Student's t distribution and summaries with confidence intervals.
// Reference values from mpmath at 40 digits (betainc-based CDF, findroot for quantiles).

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "quell/stats.h"

namespace {

using quell::student_t_cdf;
using quell::student_t_quantile;
using quell::summarize;

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

TEST(StudentT, KnownQuantiles) {
  struct Case {
    double dof;
    double t975;
  };
  const Case cases[] = {{1, 12.706204736174705}, {2, 4.3026527297494639}, {4, 2.7764451051977944},
                        {7, 2.3646242515927853}, {9, 2.2621571627982055}, {29, 2.0452296421327043},
                        {1e6, 1.959966356814107}};
  for (const Case& c : cases) {
    EXPECT_NEAR(student_t_quantile(0.975, c.dof), c.t975, 1e-10 * c.t975) << "dof=" << c.dof;
    EXPECT_NEAR(student_t_quantile(0.025, c.dof), -c.t975, 1e-10 * c.t975) << "dof=" << c.dof;
  }
  EXPECT_NEAR(student_t_quantile(0.95, 2), 2.9199855803537257, 1e-10);
  // Far tail: relative accuracy where a CDF near 1 would have lost it.
  EXPECT_NEAR(student_t_quantile(1e-10, 3), -2225.7692846830932, 1e-10 * 2225.77);
}

TEST(StudentT, LargeDofApproachesNormal) {
  const double z975 = 1.9599639845400542;
  EXPECT_NEAR(student_t_quantile(0.975, kInf), z975, 1e-12);
  EXPECT_NEAR(student_t_quantile(0.975, 1e12), z975, 1e-10);
  // Both sides of dof = 1e7, where the CDF switches from the continued fraction to the
  // expansion around the normal; still above the normal quantile (heavier tails).
  EXPECT_NEAR(student_t_quantile(0.975, 0.999e7), 1.9599642220046701, 1e-13);
  EXPECT_NEAR(student_t_quantile(0.975, 1.001e7), 1.9599642215302153, 1e-13);
  EXPECT_GT(student_t_quantile(0.975, 1e9), z975);
}

TEST(StudentT, KnownCdfValues) {
  // Closed forms: dof 1 is Cauchy, dof 2 is t / (2 sqrt(2 + t^2)) + 1/2.
  const double pi = std::acos(-1.0);
  for (double t : {-30.0, -3.0, -1.0, -0.1, 0.0, 0.5, 2.0, 100.0}) {
    EXPECT_NEAR(student_t_cdf(t, 1), 0.5 + std::atan(t) / pi, 1e-14) << "t=" << t;
    EXPECT_NEAR(student_t_cdf(t, 2), 0.5 + t / (2.0 * std::sqrt(2.0 + t * t)), 1e-14) << "t=" << t;
  }
  EXPECT_DOUBLE_EQ(student_t_cdf(0.0, 7), 0.5);
  // Tails keep relative accuracy.
  EXPECT_NEAR(student_t_cdf(-1e10, 1), 3.1830988618379067e-11, 1e-12 * 3.18e-11);
  EXPECT_NEAR(student_t_cdf(-50, 3), 8.8085760206359871e-6, 1e-12 * 8.81e-6);
  // Non-integer and fractional degrees of freedom.
  EXPECT_NEAR(student_t_cdf(0.3, 2.5), 0.60632881425240139, 1e-13);
  EXPECT_NEAR(student_t_cdf(-3, 0.5), 0.18365407799297172, 1e-13);
  // Large dof, both sides of the dof = 1e7 switch.
  EXPECT_NEAR(student_t_cdf(-2, 1e6), 0.022750266925659604, 1e-13);
  EXPECT_NEAR(student_t_cdf(-2, 1.5e7), 0.022750140946673911, 1e-13);
  EXPECT_NEAR(student_t_cdf(-2, 1e9), 0.022750132083156624, 1e-13);
  EXPECT_NEAR(student_t_cdf(-7, 1.2e7), 1.2798791527758389e-12, 1e-12 * 1.28e-12);
  EXPECT_NEAR(student_t_cdf(-20, 1e8), 2.7547312883288967e-89, 1e-12 * 2.75e-89);
  EXPECT_EQ(student_t_cdf(-kInf, 3), 0.0);
  EXPECT_EQ(student_t_cdf(kInf, 3), 1.0);
  EXPECT_EQ(student_t_cdf(-kInf, kInf), 0.0);
  EXPECT_EQ(student_t_cdf(kInf, kInf), 1.0);
  EXPECT_NEAR(student_t_cdf(-2, kInf), 0.022750131948179207, 1e-15);
  EXPECT_NEAR(student_t_cdf(-1, 0.05), 0.44828130601559168, 1e-14);
}

TEST(StudentT, CdfIsSymmetric) {
  for (double dof : {0.7, 1.0, 3.0, 10.0, 100.0, 1e8}) {
    for (double t : {0.01, 0.5, 1.0, 2.5, 10.0, 1e3}) {
      EXPECT_NEAR(student_t_cdf(-t, dof) + student_t_cdf(t, dof), 1.0, 1e-15)
          << "dof=" << dof << " t=" << t;
    }
  }
}

TEST(StudentT, CdfInvertsQuantile) {
  for (double dof : {0.5, 1.0, 2.0, 4.0, 9.5, 29.0, 1000.0, 1e9}) {
    for (double p : {1e-6, 0.001, 0.025, 0.1, 0.3, 0.5, 0.6, 0.9, 0.975, 0.999, 1 - 1e-6}) {
      const double t = student_t_quantile(p, dof);
      // Relative 1e-12 on the smaller tail, plus rounding of 1 - tail for p > 1/2.
      const double tolerance = 1e-12 * std::min(p, 1.0 - p) + 2.3e-16;
      EXPECT_NEAR(student_t_cdf(t, dof), p, tolerance) << "dof=" << dof << " p=" << p;
    }
    // Monotone in p.
    EXPECT_LT(student_t_quantile(0.3, dof), student_t_quantile(0.31, dof)) << "dof=" << dof;
  }
  // Tiny tail probabilities: relative accuracy.
  for (double p : {1e-20, 1e-100}) {
    const double t = student_t_quantile(p, 5);
    EXPECT_NEAR(student_t_cdf(t, 5) / p, 1.0, 1e-10) << "p=" << p;
  }
  // A quantile beyond the largest double (Cauchy at p = 1e-320 is about -3e319).
  EXPECT_EQ(student_t_quantile(1e-320, 1), -kInf);
}

TEST(StudentT, RejectsBadArguments) {
  for (double dof : {0.0, -1.0, kNaN}) {
    EXPECT_THROW(student_t_cdf(1.0, dof), std::invalid_argument) << "dof=" << dof;
    EXPECT_THROW(student_t_quantile(0.5, dof), std::invalid_argument) << "dof=" << dof;
  }
  for (double p : {0.0, 1.0, -0.1, 1.5, kNaN}) {
    EXPECT_THROW(student_t_quantile(p, 3), std::invalid_argument) << "p=" << p;
  }
  EXPECT_THROW(student_t_cdf(kNaN, 3), std::invalid_argument);
  try {
    student_t_quantile(1.5, 3);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("1.5"), std::string::npos) << e.what();
  }
}

TEST(Summarize, HandComputedSample) {
  // {3, 1, 2}: mean 2, sample variance ((1)^2 + (-1)^2 + 0^2) / 2 = 1,
  // half width t_{0.975, 2} / sqrt(3) = 4.30265273 / 1.7320508 = 2.48413771.
  const quell::Summary s = summarize({3.0, 1.0, 2.0});
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, 2.0);
  EXPECT_DOUBLE_EQ(s.std, 1.0);
  EXPECT_DOUBLE_EQ(s.min, 1.0);
  EXPECT_DOUBLE_EQ(s.max, 3.0);
  EXPECT_NEAR(s.ci_low, 2.0 - 2.4841377117503311, 1e-12);
  EXPECT_NEAR(s.ci_high, 2.0 + 2.4841377117503311, 1e-12);
  EXPECT_NEAR(s.half_width(), 2.4841377117503311, 1e-12);

  // 90% interval uses t_{0.95, 2}.
  const quell::Summary s90 = summarize({3.0, 1.0, 2.0}, 0.90);
  EXPECT_NEAR(s90.half_width(), 1.6858544608470491, 1e-12);

  // {2, 4, 4, 4, 5, 5, 7, 9}: mean 5, squared deviations sum to 32, std sqrt(32 / 7).
  const quell::Summary s8 = summarize({2, 4, 4, 4, 5, 5, 7, 9});
  EXPECT_DOUBLE_EQ(s8.mean, 5.0);
  EXPECT_NEAR(s8.std, std::sqrt(32.0 / 7.0), 1e-14);
  EXPECT_NEAR(s8.half_width(), 2.3646242515927853 * std::sqrt(32.0 / 7.0) / std::sqrt(8.0), 1e-12);
}

TEST(Summarize, EmptyAndSingleSample) {
  const quell::Summary empty = summarize({});
  EXPECT_EQ(empty.n, 0);
  EXPECT_EQ(empty.mean, 0.0);
  EXPECT_EQ(empty.std, 0.0);
  EXPECT_EQ(empty.ci_low, 0.0);
  EXPECT_EQ(empty.ci_high, 0.0);
  EXPECT_EQ(empty.min, 0.0);
  EXPECT_EQ(empty.max, 0.0);

  const quell::Summary one = summarize({0.75});
  EXPECT_EQ(one.n, 1);
  EXPECT_EQ(one.mean, 0.75);
  EXPECT_EQ(one.std, 0.0);
  EXPECT_EQ(one.ci_low, 0.75);
  EXPECT_EQ(one.ci_high, 0.75);
  EXPECT_EQ(one.min, 0.75);
  EXPECT_EQ(one.max, 0.75);
}

TEST(Summarize, ConstantSamplesHaveZeroWidth) {
  const quell::Summary s = summarize(std::vector<double>(10, 0.1));
  EXPECT_EQ(s.mean, 0.1);
  EXPECT_EQ(s.std, 0.0);
  EXPECT_EQ(s.ci_low, 0.1);
  EXPECT_EQ(s.ci_high, 0.1);
}

TEST(Summarize, RejectsNonFiniteSamplesAndBadLevel) {
  try {
    summarize({1.0, kNaN, 2.0});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("NaN"), std::string::npos) << msg;
    EXPECT_NE(msg.find("sample 1"), std::string::npos) << msg;
  }
  EXPECT_THROW(summarize({1.0, kInf}), std::invalid_argument);
  for (double level : {0.0, 1.0, -0.5, 95.0, kNaN}) {
    EXPECT_THROW(summarize({1.0, 2.0}, level), std::invalid_argument) << "level=" << level;
  }
}

TEST(Summarize, ConfidenceIntervalCoverage) {
  // For normal samples the t interval is exact: it covers the true mean with probability 0.95.
  constexpr int kTrials = 2000;
  constexpr int kSampleSize = 5;
  std::mt19937_64 rng(20240531);
  std::normal_distribution<double> normal(0.0, 1.0);
  int covered = 0;
  std::vector<double> sample(kSampleSize);
  for (int trial = 0; trial < kTrials; ++trial) {
    for (double& x : sample) x = normal(rng);
    const quell::Summary s = summarize(sample, 0.95);
    if (s.ci_low <= 0.0 && 0.0 <= s.ci_high) ++covered;
  }
  // The count of covering intervals is Binomial(2000, 0.95): its rate has standard deviation
  // sqrt(0.95 * 0.05 / 2000) = 0.0049. Five standard deviations (a correct implementation fails
  // with probability < 1e-6) still separate 0.95 from a wrong quantile: a normal z = 1.96 instead
  // of t_{0.975,4} = 2.78 covers only ~88%, a one-sided 0.95 quantile ~ 90%.
  const double rate = static_cast<double>(covered) / kTrials;
  const double bound = 5.0 * std::sqrt(0.95 * 0.05 / kTrials);
  EXPECT_NEAR(rate, 0.95, bound) << covered << " of " << kTrials << " intervals cover 0";
}

}  // namespace
