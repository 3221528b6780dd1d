// Multi-execution planning (docs/plan.md).
#include "quell/plan.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <stdexcept>

#include "studies/lazy_greedy.h"

namespace quell {

std::vector<std::string> allocation_schemes() {
  return {"uniform", "inverse_lin", "inverse_sqrt", "inverse_square", "inverse_log10",
          "lin",     "sqrt",        "log10"};
}

std::vector<double> scheme_weights(const std::string& scheme,
                                   const std::vector<double>& robustness) {
  const auto names = allocation_schemes();
  if (std::find(names.begin(), names.end(), scheme) == names.end()) {
    std::string known;
    for (const auto& n : names) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown allocation scheme '" + scheme + "' (known: " + known +
                                ")");
  }
  double largest = 0.0;
  for (double mu : robustness) {
    if (std::isnan(mu) || mu <= 0) {
      throw std::invalid_argument("site robustness must be > 0, got " + std::to_string(mu));
    }
    if (std::isfinite(mu)) largest = std::max(largest, mu);
  }
  std::vector<double> w;
  for (double mu : robustness) {
    if (!std::isfinite(mu)) mu = largest > 0 ? 2.0 * largest : 1.0;
    double v = 1.0;
    if (scheme == "inverse_lin") v = 1.0 / mu;
    if (scheme == "inverse_sqrt") v = 1.0 / std::sqrt(mu);
    if (scheme == "inverse_square") v = 1.0 / (mu * mu);
    if (scheme == "inverse_log10") v = 1.0 / std::log10(1.0 + mu);
    if (scheme == "lin") v = mu;
    if (scheme == "sqrt") v = std::sqrt(mu);
    if (scheme == "log10") v = std::log10(1.0 + mu);
    w.push_back(v);
  }
  return w;
}

std::vector<int> allocate_repeats(const std::vector<double>& weights, int64_t total) {
  const int64_t n = static_cast<int64_t>(weights.size());
  if (total < n) {
    throw std::invalid_argument("a total of " + std::to_string(total) + " repetitions over " +
                                std::to_string(n) + " sites is below one per site");
  }
  bool any = false;
  for (double w : weights) {
    if (std::isnan(w) || w < 0) throw std::invalid_argument("allocation weights must be >= 0");
    any |= w > 0;
  }
  std::vector<int> k(weights.size(), 1);
  for (int64_t unit = n; unit < total; ++unit) {
    size_t best = 0;
    double best_q = -1.0;
    for (size_t i = 0; i < weights.size(); ++i) {
      const double q = (any ? weights[i] : 1.0) / static_cast<double>(k[i]);
      if (q > best_q) {
        best_q = q;
        best = i;
      }
    }
    ++k[best];
  }
  return k;
}

std::vector<int> fit_budget(const std::vector<int>& sites, const std::vector<double>& weights,
                            int num_sites, const AllocationCost& cost, double budget,
                            int64_t max_total) {
  if (weights.size() != sites.size()) {
    throw std::invalid_argument("fit_budget: one weight per planned site");
  }
  std::vector<int> best(static_cast<size_t>(num_sites), 1);
  const int64_t l = static_cast<int64_t>(sites.size());
  // The divisor method extends the allocation one unit at a time, so cost grows with the
  // total: walk up until the next unit does not fit.
  for (int64_t total = l + 1; total <= max_total; ++total) {
    const std::vector<int> k = allocate_repeats(weights, total);
    std::vector<int> full(static_cast<size_t>(num_sites), 1);
    for (size_t i = 0; i < sites.size(); ++i) full.at(static_cast<size_t>(sites[i])) = k[i];
    if (cost(full) > budget) break;
    best = full;
  }
  return best;
}

int next_repeat(int k) {
  if (k < 4) return k + 1;
  // 4, 6, 8, 12, 16, 24, ...: alternately x1.5 and x4/3.
  int p = 1;
  while (p * 2 <= k) p *= 2;
  return k < p + p / 2 ? p + p / 2 : 2 * p;
}

AllocationBatchEvaluator one_by_one(AllocationEvaluator evaluate) {
  return [evaluate = std::move(evaluate)](const std::vector<std::vector<int>>& ks) {
    std::vector<Summary> out;
    for (const auto& k : ks) out.push_back(evaluate(k));
    return out;
  };
}

std::vector<int> optimise_allocation(const std::vector<int>& sites, const std::vector<int>& start,
                                     const AllocationCost& cost, double budget,
                                     const AllocationBatchEvaluator& evaluate,
                                     const Summary& start_accuracy, double min_gain, int width,
                                     double target, std::vector<AllocationScore>* tried,
                                     const ProgressFn& progress) {
  std::vector<int> current = start;
  double current_acc = start_accuracy.mean;
  double current_cost = cost(current);
  std::vector<double> last_ratio(sites.size(), std::numeric_limits<double>::infinity());
  Progress prog;
  int step = 0;
  while (!(target > 0 && current_acc >= target)) {
    std::vector<size_t> fits;
    std::vector<std::vector<int>> proposals(sites.size());
    std::vector<double> costs(sites.size(), 0.0);
    for (size_t i = 0; i < sites.size(); ++i) {
      std::vector<int> k = current;
      int& ki = k.at(static_cast<size_t>(sites[i]));
      ki = next_repeat(ki);
      costs[i] = cost(k);
      if (costs[i] <= budget) {
        fits.push_back(i);
        proposals[i] = std::move(k);
      }
    }
    if (fits.empty()) break;
    ++step;
    detail::keep_most_promising(fits, last_ratio, width, step);
    prog.done = 0;
    prog.total = static_cast<int64_t>(fits.size());
    prog.what = "step " + std::to_string(step);
    double best_ratio = -std::numeric_limits<double>::infinity();
    size_t best = sites.size();
    Summary best_acc;
    std::vector<std::vector<int>> batch;
    for (size_t i : fits) batch.push_back(proposals[i]);
    const std::vector<Summary> results = evaluate(batch);
    for (size_t j = 0; j < fits.size(); ++j) {
      const size_t i = fits[j];
      const Summary& acc = results.at(j);
      if (tried) tried->push_back({proposals[i], acc, costs[i], "search", step});
      const double gain = acc.mean - current_acc;
      const double added = std::max(costs[i] - current_cost, 1e-12);
      last_ratio[i] = gain / added;
      if (gain > min_gain && last_ratio[i] > best_ratio) {
        best_ratio = last_ratio[i];
        best = i;
        best_acc = acc;
      }
      ++prog.done;
      prog.accuracy = acc.mean;
      if (progress) progress(prog);
    }
    if (best == sites.size()) break;
    current = proposals[best];
    current_acc = best_acc.mean;
    current_cost = costs[best];
  }
  return current;
}

std::string allocation_label(const std::vector<int>& repeats,
                             const std::vector<std::string>& site_names) {
  std::string s;
  for (size_t i = 0; i < repeats.size(); ++i) {
    if (repeats[i] > 1) {
      s += (s.empty() ? "" : "+") + site_names.at(i) + ":" + std::to_string(repeats[i]);
    }
  }
  return s.empty() ? "none" : s;
}

}  // namespace quell
