// Timing helpers of the benchmarks: wall time of a call, medians, and paired measurements that
// alternate the two sides of a ratio so that load from other processes hits both alike.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <utility>
#include <vector>

namespace quell::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_of(const std::function<void()>& fn) {
  const auto t0 = Clock::now();
  fn();
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

/// Alternates a and b `reps` times after one warm-up each; returns their median seconds.
inline std::pair<double, double> paired(int reps, const std::function<void()>& a,
                                        const std::function<void()>& b) {
  a();
  b();
  std::vector<double> ta, tb;
  for (int r = 0; r < reps; ++r) {
    ta.push_back(seconds_of(a));
    tb.push_back(seconds_of(b));
  }
  return {median(ta), median(tb)};
}

}  // namespace quell::bench
