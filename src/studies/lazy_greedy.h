// The lazy step shared by the measured greedy searches (denoise placements, plan allocations).
#pragma once

#include <algorithm>
#include <cstddef>
#include <vector>

namespace quell::detail {

/// After the first step of a lazy greedy search, keeps only the `width` candidates (indices in
/// `fits`) with the best gain per cost at their last evaluation; width 0 keeps all.
inline void keep_most_promising(std::vector<size_t>& fits, const std::vector<double>& last_ratio,
                                int width, int step) {
  if (width <= 0 || step <= 1 || static_cast<int>(fits.size()) <= width) return;
  std::stable_sort(fits.begin(), fits.end(),
                   [&](size_t a, size_t b) { return last_ratio[a] > last_ratio[b]; });
  fits.resize(static_cast<size_t>(width));
}

}  // namespace quell::detail
