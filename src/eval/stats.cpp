// Summary statistics and Student's t distribution.
//
// The t CDF goes through the regularized incomplete beta function (Numerical Recipes 3rd ed.,
// section 6.4 and 6.14.9):  for t >= 0,  P(T < -t) = 0.5 * I_x(dof/2, 1/2),  x = dof/(dof + t^2).
// I_x is evaluated by its continued fraction with the modified Lentz method. The quantile is
// the root of that tail in t >= 0, found by bracketing and Newton steps safeguarded by bisection.

#include "quell/stats.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>

namespace quell {
namespace {

constexpr double kEps = std::numeric_limits<double>::epsilon();
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr double kPi = 3.14159265358979323846;
// The continued fraction below loses accuracy in proportion to dof; above this many degrees of
// freedom the expansion of the t distribution around the normal is used instead where it is
// accurate (see use_normal_expansion).
constexpr double kLargeDof = 1e7;
constexpr int kMaxContinuedFractionSteps = 100000;

void check_dof(double dof, const char* fn) {
  if (!(dof > 0.0)) {  // also rejects NaN
    std::ostringstream msg;
    msg << fn << ": degrees of freedom must be > 0, got " << dof;
    throw std::invalid_argument(msg.str());
  }
}

// lgamma(z) - [(z - 1/2) log z - z + log(2 pi) / 2], Stirling series; |error| < 2e-15 for z >= 20.
double stirling_remainder(double z) {
  const double z2 = z * z;
  return (1.0 / 12.0 - (1.0 / 360.0 - (1.0 / 1260.0 - 1.0 / (1680.0 * z2)) / z2) / z2) / z;
}

// log B(a, b). For a large argument the difference lgamma(big) - lgamma(big + small) is taken
// from the Stirling series with log1p, avoiding the cancellation of two huge lgamma values.
double log_beta(double a, double b) {
  const double big = std::max(a, b);
  const double small = std::min(a, b);
  if (big < 20.0) return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b);
  const double log_gamma_ratio = -(big - 0.5) * std::log1p(small / big) -
                                 small * std::log(big + small) + small + stirling_remainder(big) -
                                 stirling_remainder(big + small);
  return std::lgamma(small) + log_gamma_ratio;
}

// Continued fraction of I_x(a, b) (NR 6.4.5), evaluated with the modified Lentz method.
// Converges quickly for x < (a + 1) / (a + b + 2). Long double, and x and 1 - x passed separately,
// because for large a the result depends on a * (1 - x): in double it lost a relative 2e-11 at
// dof = 1e6 (checked against mpmath).
long double beta_continued_fraction(long double a, long double b, long double x) {
  constexpr long double kTiny = 1e-300L;
  constexpr long double kLongEps = std::numeric_limits<long double>::epsilon();
  const long double qab = a + b;
  const long double qap = a + 1;
  const long double qam = a - 1;
  long double c = 1;
  long double d = 1 - qab * x / qap;
  if (std::fabs(d) < kTiny) d = kTiny;
  d = 1 / d;
  long double h = d;
  for (int m = 1; m <= kMaxContinuedFractionSteps; ++m) {
    const long double m2 = 2 * m;
    // Even step d_{2m}.
    long double aa = m * (b - m) * x / ((qam + m2) * (a + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    h *= d * c;
    // Odd step d_{2m+1}.
    aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
    d = 1 + aa * d;
    if (std::fabs(d) < kTiny) d = kTiny;
    c = 1 + aa / c;
    if (std::fabs(c) < kTiny) c = kTiny;
    d = 1 / d;
    const long double delta = d * c;
    h *= delta;
    if (std::fabs(delta - 1) < 4 * kLongEps) return h;
  }
  TORCH_INTERNAL_ASSERT(false, "incomplete beta continued fraction did not converge for a=", a,
                        " b=", b, " x=", static_cast<double>(x));
  return h;
}

// x = dof / (dof + t^2) = 1 / (1 + r^2) with r = |t| / sqrt(dof), and y = 1 - x, both in long
// double: I_x(dof/2, 1/2) depends on dof * y, so y must carry more than double's absolute
// precision when dof is large. Logs from log1p, without overflow for huge r.
struct BetaArgument {
  long double x;
  long double y;
  double log_x;
  double log_y;
};

BetaArgument beta_argument(double t, double dof) {
  const double r = std::fabs(t) / std::sqrt(dof);
  if (r <= 1.0) {
    const long double r2 = static_cast<long double>(r) * r;
    return {1 / (1 + r2), r2 / (1 + r2), -std::log1p(r * r), 2.0 * std::log(r) - std::log1p(r * r)};
  }
  const double s = 1.0 / r;
  const long double s2 = static_cast<long double>(s) * s;
  return {s2 / (1 + s2), 1 / (1 + s2), 2.0 * std::log(s) - std::log1p(s * s), -std::log1p(s * s)};
}

// I_x(a, b), NR 6.4.
double regularized_incomplete_beta(double a, double b, const BetaArgument& arg) {
  if (arg.log_x == -kInf) return 0.0;
  if (arg.log_y == -kInf) return 1.0;
  const double front = std::exp(a * arg.log_x + b * arg.log_y - log_beta(a, b));
  if (arg.x < (a + 1.0) / (a + b + 2.0)) {
    return front * static_cast<double>(beta_continued_fraction(a, b, arg.x)) / a;
  }
  // Symmetry I_x(a, b) = 1 - I_{1-x}(b, a), where that continued fraction converges.
  return 1.0 - front * static_cast<double>(beta_continued_fraction(b, a, arg.y)) / b;
}

double normal_pdf(double z) { return std::exp(-0.5 * z * z) / std::sqrt(2.0 * kPi); }

// The second-order expansion in student_t_lower_tail neglects a relative error of about
// (u^4 / (4 dof))^3 / 6 (checked against mpmath); keep it below 1e-14.
bool use_normal_expansion(double u, double dof) {
  return dof > kLargeDof && u * u * u * u < 1.5e-4 * dof;
}

// P(T < -|t|) without cancellation (always <= 1/2).
double student_t_lower_tail(double t, double dof) {
  const double u = std::fabs(t);
  if (std::isinf(u)) return 0.0;
  if (use_normal_expansion(u, dof)) {
    // Asymptotic expansion in 1/dof (Fisher 1925): 1 - F(u) = Q(u) + phi(u) [g1(u) / dof +
    // g2(u) / dof^2] + O(dof^-3); coefficients checked against mpmath at dof = 1e12.
    const double u2 = u * u;
    const double g1 = (u2 + 1.0) * u / 4.0;
    const double g2 = (((3.0 * u2 - 7.0) * u2 - 5.0) * u2 - 3.0) * u / 96.0;
    return 0.5 * std::erfc(u / std::sqrt(2.0)) + normal_pdf(u) * (g1 + g2 / dof) / dof;
  }
  return 0.5 * regularized_incomplete_beta(0.5 * dof, 0.5, beta_argument(u, dof));
}

// Density of Student's t, (1 + t^2/dof)^(-(dof+1)/2) / (sqrt(dof) B(dof/2, 1/2)); only steers
// the Newton steps of the quantile.
double student_t_pdf(double t, double dof) {
  if (use_normal_expansion(std::fabs(t), dof)) {
    const double t2 = t * t;
    return normal_pdf(t) * (1.0 + (t2 * t2 - 2.0 * t2 - 1.0) / (4.0 * dof));
  }
  // (1 + t^2/dof) = 1 / x.
  const double log_x = beta_argument(t, dof).log_x;
  return std::exp(0.5 * (dof + 1.0) * log_x - 0.5 * std::log(dof) - log_beta(0.5 * dof, 0.5));
}

}  // namespace

double student_t_cdf(double t, double dof) {
  check_dof(dof, "student_t_cdf");
  if (std::isnan(t)) throw std::invalid_argument("student_t_cdf: t is NaN");
  const double tail = student_t_lower_tail(t, dof);
  return t < 0.0 ? tail : 1.0 - tail;
}

double student_t_quantile(double p, double dof) {
  check_dof(dof, "student_t_quantile");
  if (!(p > 0.0 && p < 1.0)) {
    std::ostringstream msg;
    msg << "student_t_quantile: probability must be in (0, 1), got " << p;
    throw std::invalid_argument(msg.str());
  }
  if (p == 0.5) return 0.0;
  // Solve P(T < -t) = q for t > 0 with q = min(p, 1 - p); 1 - p is exact for p >= 1/2.
  const double q = std::min(p, 1.0 - p);
  const double sign = p < 0.5 ? -1.0 : 1.0;

  // Bracket: tail(lo) > q >= tail(hi).
  double lo = 0.0;
  double hi = 1.0;
  while (student_t_lower_tail(hi, dof) > q) {
    lo = hi;
    hi *= 2.0;
    if (std::isinf(hi)) return sign * kInf;  // the quantile exceeds the largest double
  }

  double t = 0.5 * (lo + hi);
  for (int iter = 0; iter < 200; ++iter) {
    const double excess = student_t_lower_tail(t, dof) - q;  // decreasing in t
    if (excess == 0.0) break;
    if (excess > 0.0) {
      lo = t;
    } else {
      hi = t;
    }
    // Newton step on tail(t) - q (derivative -pdf), bisection if it leaves the bracket.
    const double pdf = student_t_pdf(t, dof);
    const double step = pdf > 0.0 ? excess / pdf : kInf;
    if (std::fabs(step) <= 4.0 * kEps * t) {
      t += step;
      break;
    }
    const double newton = t + step;
    t = newton > lo && newton < hi ? newton : 0.5 * (lo + hi);
    if (hi - lo <= 4.0 * kEps * hi) break;
  }
  return sign * t;
}

Summary summarize(const std::vector<double>& samples, double level) {
  if (!(level > 0.0 && level < 1.0)) {
    std::ostringstream msg;
    msg << "summarize: confidence level must be in (0, 1), got " << level;
    throw std::invalid_argument(msg.str());
  }
  for (size_t i = 0; i < samples.size(); ++i) {
    if (!std::isfinite(samples[i])) {
      std::ostringstream msg;
      msg << "summarize: sample " << i << " of " << samples.size() << " is "
          << (std::isnan(samples[i]) ? "NaN" : "infinite") << "; expected finite values";
      throw std::invalid_argument(msg.str());
    }
  }

  Summary s;
  s.n = static_cast<int64_t>(samples.size());
  if (s.n == 0) return s;

  const auto [min_it, max_it] = std::minmax_element(samples.begin(), samples.end());
  s.min = *min_it;
  s.max = *max_it;

  double sum = 0.0;
  for (double v : samples) sum += v;
  s.mean = sum / static_cast<double>(s.n);
  // The mean may fall outside [min, max] by rounding (e.g. all samples equal); keep it inside.
  s.mean = std::clamp(s.mean, s.min, s.max);
  s.ci_low = s.ci_high = s.mean;
  if (s.n < 2) return s;

  // Two-pass variance with the rounding-error correction of Chan, Golub & LeVeque (1983).
  double sum_sq = 0.0;
  double sum_dev = 0.0;
  for (double v : samples) {
    const double dev = v - s.mean;
    sum_sq += dev * dev;
    sum_dev += dev;
  }
  const double n = static_cast<double>(s.n);
  const double variance = std::max(0.0, (sum_sq - sum_dev * sum_dev / n) / (n - 1.0));
  s.std = std::sqrt(variance);

  const double t = student_t_quantile(0.5 + 0.5 * level, n - 1.0);
  const double half_width = t * s.std / std::sqrt(n);
  s.ci_low = s.mean - half_width;
  s.ci_high = s.mean + half_width;
  return s;
}

}  // namespace quell
