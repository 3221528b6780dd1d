// Summary statistics for accuracies under noise: mean, std, Student-t 95% confidence interval.
#pragma once

#include <cstdint>
#include <vector>

namespace quell {

/// Summary of n samples of a random quantity (e.g. accuracy over noise draws).
struct Summary {
  int64_t n = 0;
  double mean = 0.0;
  double std = 0.0;     ///< sample standard deviation (n - 1 in the denominator); 0 for n < 2
  double ci_low = 0.0;  ///< mean - t_{0.975, n-1} * std / sqrt(n); equals mean for n < 2
  double ci_high = 0.0;
  double min = 0.0;
  double max = 0.0;
  double half_width() const { return 0.5 * (ci_high - ci_low); }
};

/// Summarises samples with a two-sided confidence interval at `level` (default 95%).
Summary summarize(const std::vector<double>& samples, double level = 0.95);

/// CDF of Student's t distribution with `dof` degrees of freedom (dof > 0).
double student_t_cdf(double t, double dof);
/// Quantile p of Student's t distribution (0 < p < 1, dof > 0).
double student_t_quantile(double p, double dof);

}  // namespace quell
