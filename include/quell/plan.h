// Multi-execution planning: how many times to repeat (and average) the noisy computation of
// each site, under a budget (Walking Noise's tailored multi-execution; docs/plan.md).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "quell/eval.h"
#include "quell/stats.h"

namespace quell {

/// Names of the allocation schemes (docs/plan.md): "uniform", and k proportional to a function
/// of each site's robustness μ: "inverse_lin" (1/μ), "inverse_sqrt" (1/√μ), "inverse_square"
/// (1/μ²), "inverse_log10" (1/log10(1+μ)), "lin" (μ), "sqrt" (√μ), "log10" (log10(1+μ)).
std::vector<std::string> allocation_schemes();

/// The weight of each site under `scheme`, from its robustness μ > 0 (e.g. the Walking Noise
/// midpoint; larger = more robust). A non-finite μ (a site that never degrades) counts as twice
/// the largest finite μ. Throws std::invalid_argument for an unknown scheme or μ <= 0 / NaN.
std::vector<double> scheme_weights(const std::string& scheme,
                                   const std::vector<double>& robustness);

/// Integer counts k_i >= 1 with Σ k_i == total, roughly proportional to w_i (a divisor method):
/// every site starts at 1 and each further repetition goes to the site with the largest
/// w_i / k_i (ties: the lower index), so the allocation for total + 1 extends the one for
/// total. All-zero weights share equally. Throws if total < weights.size() or a weight is
/// negative or NaN.
std::vector<int> allocate_repeats(const std::vector<double>& weights, int64_t total);

/// The cost of a repeat vector (one k per site of the model), e.g. energy from the cost model.
using AllocationCost = std::function<double(const std::vector<int>&)>;
/// Accuracy of a repeat vector under noise (e.g. a noisy evaluation on validation data).
using AllocationEvaluator = std::function<Summary(const std::vector<int>&)>;
/// Accuracies of several repeat vectors at once (e.g. spread over MPI ranks), in order.
using AllocationBatchEvaluator =
    std::function<std::vector<Summary>(const std::vector<std::vector<int>>&)>;
/// A batch evaluator that calls `evaluate` on each vector in turn.
AllocationBatchEvaluator one_by_one(AllocationEvaluator evaluate);

/// Spreads repetitions over `sites` (indices into a vector of `num_sites` counts) in
/// proportion to `weights` (one per planned site): the largest total whose allocation costs at
/// most `budget`, up to `max_total`. Sites not planned keep k = 1. Returns all ones when even
/// one extra repetition does not fit.
std::vector<int> fit_budget(const std::vector<int>& sites, const std::vector<double>& weights,
                            int num_sites, const AllocationCost& cost, double budget,
                            int64_t max_total);

/// The next count on the repetition ladder 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, ...
int next_repeat(int k);

/// An evaluated allocation.
struct AllocationScore {
  std::vector<int> repeats;
  Summary accuracy;
  double cost = 0.0;
  std::string method;
  int step = 0;
};

/// Measured greedy allocation: from `start`, repeatedly raise one planned site's k to the next
/// ladder value, keeping the step with the largest accuracy gain per unit of added cost, while
/// the cost stays within `budget`; stops when nothing fits, no step gains more than `min_gain`,
/// or the accuracy reaches `target` (> 0). Step 1 evaluates every site; later steps the `width`
/// best by their last gain per cost (lazy greedy; 0 = all); a step's candidates go to
/// `evaluate` as one batch. Every evaluation is appended to `tried` (method "search"). Never
/// evaluates an allocation over the budget.
std::vector<int> optimise_allocation(const std::vector<int>& sites, const std::vector<int>& start,
                                     const AllocationCost& cost, double budget,
                                     const AllocationBatchEvaluator& evaluate,
                                     const Summary& start_accuracy, double min_gain, int width,
                                     double target, std::vector<AllocationScore>* tried,
                                     const ProgressFn& progress = nullptr);

/// "conv1:3+fc1:2" (sites with k > 1), or "none".
std::string allocation_label(const std::vector<int>& repeats,
                             const std::vector<std::string>& site_names);

}  // namespace quell
