// The multi-execution planner: scheme weights, integer allocation, budget fits and the measured
// greedy allocation (budgets respected on random problems, choice by gain per cost).
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <random>

#include "quell/plan.h"

namespace quell {
namespace {

int sum(const std::vector<int>& k) { return std::accumulate(k.begin(), k.end(), 0); }

TEST(PlanSchemes, WeightsFollowTheirFormulas) {
  const std::vector<double> mu = {1.0, 4.0, 0.25};
  const auto inv = scheme_weights("inverse_lin", mu);
  EXPECT_DOUBLE_EQ(inv[0], 1.0);
  EXPECT_DOUBLE_EQ(inv[1], 0.25);
  EXPECT_DOUBLE_EQ(inv[2], 4.0);
  EXPECT_DOUBLE_EQ(scheme_weights("inverse_square", mu)[1], 1.0 / 16.0);
  EXPECT_DOUBLE_EQ(scheme_weights("inverse_sqrt", mu)[2], 2.0);
  EXPECT_DOUBLE_EQ(scheme_weights("sqrt", mu)[1], 2.0);
  EXPECT_DOUBLE_EQ(scheme_weights("lin", mu)[2], 0.25);
  EXPECT_DOUBLE_EQ(scheme_weights("log10", mu)[0], std::log10(2.0));
  EXPECT_DOUBLE_EQ(scheme_weights("inverse_log10", mu)[0], 1.0 / std::log10(2.0));
  for (double w : scheme_weights("uniform", mu)) EXPECT_DOUBLE_EQ(w, 1.0);
  // A site that never degrades counts as twice the most robust measured one.
  const auto w = scheme_weights("inverse_lin", {1.0, INFINITY, 2.0});
  EXPECT_DOUBLE_EQ(w[1], 1.0 / 4.0);
  EXPECT_THROW(scheme_weights("cubic", mu), std::invalid_argument);
  EXPECT_THROW(scheme_weights("uniform", {1.0, 0.0}), std::invalid_argument);
  EXPECT_THROW(scheme_weights("uniform", {std::nan("")}), std::invalid_argument);
  EXPECT_EQ(allocation_schemes().size(), 8u);
}

TEST(PlanAllocate, SumsToTheTotalExtendsAndIsProportional) {
  const std::vector<double> w = {1.0, 2.0, 4.0, 0.0};
  std::vector<int> last(w.size(), 1);
  for (int64_t total = 4; total <= 200; ++total) {
    const auto k = allocate_repeats(w, total);
    ASSERT_EQ(sum(k), total);
    for (size_t i = 0; i < k.size(); ++i) {
      EXPECT_GE(k[i], 1);
      EXPECT_GE(k[i], last[i]) << "total " << total;  // one more unit never takes one away
    }
    EXPECT_EQ(k[3], 1);  // weight 0: the minimum
    last = k;
  }
  // Large totals approach k_i / (total - 1) = w_i / Σw (within one unit per site).
  const auto k = allocate_repeats(w, 701);
  EXPECT_NEAR(k[0], 100, 2);
  EXPECT_NEAR(k[1], 200, 2);
  EXPECT_NEAR(k[2], 400, 2);
  // Equal weights (or all zero) share equally; ties go to the lower index.
  EXPECT_EQ(allocate_repeats({0.0, 0.0, 0.0}, 7), (std::vector<int>{3, 2, 2}));
  EXPECT_EQ(allocate_repeats({1.0, 1.0}, 2), (std::vector<int>{1, 1}));
  EXPECT_THROW(allocate_repeats({1.0, 1.0}, 1), std::invalid_argument);
  EXPECT_THROW(allocate_repeats({1.0, -1.0}, 4), std::invalid_argument);
}

TEST(PlanLadder, NextRepeat) {
  std::vector<int> seq = {1};
  while (seq.size() < 12) seq.push_back(next_repeat(seq.back()));
  EXPECT_EQ(seq, (std::vector<int>{1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64}));
  EXPECT_EQ(next_repeat(5), 6);
  EXPECT_EQ(next_repeat(7), 8);
}

// A random planning problem: per-site cost per execution, site count, planned subset.
struct Problem {
  int n = 0;
  std::vector<int> sites;
  std::vector<double> site_cost;
  double base = 0;
  double cost(const std::vector<int>& k) const {
    double c = base;
    for (int i = 0; i < n; ++i) c += site_cost[i] * k[i];
    return c;
  }
};

Problem random_problem(std::mt19937& rng) {
  Problem p;
  p.n = std::uniform_int_distribution<int>(2, 12)(rng);
  std::uniform_real_distribution<double> u(0.1, 10.0);
  for (int i = 0; i < p.n; ++i) {
    p.site_cost.push_back(u(rng));
    if (std::bernoulli_distribution(0.7)(rng) || (i == p.n - 1 && p.sites.empty())) {
      p.sites.push_back(i);
    }
  }
  p.base = u(rng);
  return p;
}

TEST(PlanBudget, FitBudgetRespectsTheBudgetAndIsMaximal) {
  std::mt19937 rng(5);
  for (int trial = 0; trial < 50; ++trial) {
    const Problem p = random_problem(rng);
    std::vector<double> w;
    for (size_t i = 0; i < p.sites.size(); ++i) w.push_back(std::uniform_real_distribution<double>(0.0, 3.0)(rng));
    const std::vector<int> ones(p.n, 1);
    const double budget = p.cost(ones) * std::uniform_real_distribution<double>(0.9, 4.0)(rng);
    const AllocationCost cost = [&](const std::vector<int>& k) { return p.cost(k); };
    const int64_t max_total = 20 * static_cast<int64_t>(p.sites.size());
    const auto k = fit_budget(p.sites, w, p.n, cost, budget, max_total);
    ASSERT_EQ(static_cast<int>(k.size()), p.n);
    int64_t total = 0;
    for (int i = 0; i < p.n; ++i) {
      const bool planned = std::find(p.sites.begin(), p.sites.end(), i) != p.sites.end();
      if (!planned) {
        EXPECT_EQ(k[i], 1);
      }
      if (planned) total += k[i];
    }
    if (total > static_cast<int64_t>(p.sites.size())) {
      EXPECT_LE(p.cost(k), budget) << "trial " << trial;
    }
    // Maximal: the next unit of the same scheme does not fit (or the cap is reached).
    if (total < max_total) {
      const auto next = allocate_repeats(w, total + 1);
      std::vector<int> full(p.n, 1);
      for (size_t i = 0; i < p.sites.size(); ++i) full[p.sites[i]] = next[i];
      EXPECT_GT(p.cost(full), budget) << "trial " << trial;
    }
  }
}

TEST(PlanBudget, OptimiseNeverEvaluatesOverBudgetOnRandomProblems) {
  std::mt19937 rng(11);
  for (int trial = 0; trial < 50; ++trial) {
    const Problem p = random_problem(rng);
    std::vector<double> gain(p.n);
    for (auto& g : gain) g = std::uniform_real_distribution<double>(0.0, 0.2)(rng);
    // Accuracy with diminishing returns in every site's k (plus a little noise-free structure).
    const AllocationEvaluator eval = [&](const std::vector<int>& k) {
      Summary s;
      s.mean = 0.5;
      for (int i = 0; i < p.n; ++i) s.mean += gain[i] * (1.0 - 1.0 / k[i]);
      s.ci_low = s.ci_high = s.mean;
      s.n = 1;
      return s;
    };
    const AllocationCost cost = [&](const std::vector<int>& k) { return p.cost(k); };
    const std::vector<int> ones(p.n, 1);
    const double budget = p.cost(ones) * std::uniform_real_distribution<double>(1.0, 5.0)(rng);
    const int width = std::uniform_int_distribution<int>(0, 3)(rng);
    std::vector<AllocationScore> tried;
    const auto k = optimise_allocation(p.sites, ones, cost, budget, one_by_one(eval), eval(ones),
                                       0.0, width, 0.0, &tried);
    EXPECT_LE(p.cost(k), budget + 1e-9) << "trial " << trial;
    for (const auto& t : tried) {
      EXPECT_LE(t.cost, budget + 1e-9) << "trial " << trial;
      EXPECT_DOUBLE_EQ(t.cost, p.cost(t.repeats));
      for (int i = 0; i < p.n; ++i) {
        const bool planned = std::find(p.sites.begin(), p.sites.end(), i) != p.sites.end();
        if (!planned) {
          EXPECT_EQ(t.repeats[i], 1);
        }
      }
    }
    // Without laziness greedy stops only when no further ladder step fits or none gains.
    if (width != 0) continue;
    for (int s : p.sites) {
      std::vector<int> more = k;
      more[s] = next_repeat(more[s]);
      if (p.cost(more) <= budget) {
        EXPECT_LE(eval(more).mean - eval(k).mean, 1e-12) << "trial " << trial;
      }
    }
  }
}

TEST(PlanGreedy, PicksTheBestGainPerCostAndStopsAtTheTarget) {
  // Three sites: site 0 gains 0.10 for cost 10, site 1 gains 0.03 for cost 1 (better per
  // cost), site 2 gains nothing.
  const std::vector<int> sites = {0, 1, 2};
  const std::vector<double> unit = {10.0, 1.0, 1.0};
  const AllocationCost cost = [&](const std::vector<int>& k) {
    double c = 0;
    for (int i = 0; i < 3; ++i) c += unit[i] * k[i];
    return c;
  };
  const AllocationEvaluator eval = [](const std::vector<int>& k) {
    Summary s;
    s.mean = 0.5 + (k[0] > 1 ? 0.10 : 0.0) + (k[1] > 1 ? 0.03 : 0.0);
    return s;
  };
  const std::vector<int> ones = {1, 1, 1};
  std::vector<AllocationScore> tried;
  auto k = optimise_allocation(sites, ones, cost, 13.0, one_by_one(eval), eval(ones), 0.0, 0, 0.0,
                               &tried);
  EXPECT_EQ(k, (std::vector<int>{1, 2, 1}));  // +10 for site 0 no longer fits after site 1
  EXPECT_EQ(tried.front().step, 1);
  // With room for both it takes site 1 first, then site 0.
  tried.clear();
  k = optimise_allocation(sites, ones, cost, 100.0, one_by_one(eval), eval(ones), 0.0, 0, 0.0,
                          &tried);
  EXPECT_EQ(k[0], 2);
  EXPECT_EQ(k[1], 2);
  EXPECT_EQ(k[2], 1);  // no gain: never raised
  // A target stops the search as soon as it is reached.
  k = optimise_allocation(sites, ones, cost, 100.0, one_by_one(eval), eval(ones), 0.0, 0, 0.52,
                          nullptr);
  EXPECT_EQ(k, (std::vector<int>{1, 2, 1}));
  EXPECT_EQ(allocation_label(k, {"a", "b", "c"}), "b:2");
  EXPECT_EQ(allocation_label(ones, {"a", "b", "c"}), "none");
}

}  // namespace
}  // namespace quell
