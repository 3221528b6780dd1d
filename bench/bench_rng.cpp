// Micro-benchmark of quell's fused noise kernels against torch's own way of adding noise,
// `noise.normal_(); x.add_(noise, sigma)`, measured in the same run.
//
// Prints one Markdown row per (kernel, size, threads): median ns/element over the repetitions
// and the ratio to the torch baseline of the same size and thread count (< 1 is faster).
// Usage: bench_rng [repetitions=30]

#include "quell/rng.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace {

// Median wall time of `reps` runs of fn(rep) in nanoseconds, after one warm-up run.
double median_ns(int reps, const std::function<void(int)>& fn) {
  fn(-1);
  std::vector<double> times;
  times.reserve(reps);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(r);
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  std::nth_element(times.begin(), times.begin() + reps / 2, times.end());
  return times[reps / 2];
}

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 30;
  const int all_threads =
      static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double sigma = 0.1;
  torch::NoGradGuard no_grad;

  std::fprintf(stderr, "bench_rng: torch %s, %d repetitions, median time, hardware threads %d\n",
               TORCH_VERSION, reps, all_threads);
  std::printf("| kernel | numel | threads | ns/element | ratio vs torch normal_+add_ |\n");
  std::printf("|---|---:|---:|---:|---:|\n");

  const std::vector<int64_t> sizes = {int64_t{4704} * 256, int64_t{1000000}};
  std::vector<int> thread_counts = {1};
  if (all_threads > 1) thread_counts.push_back(all_threads);

  for (const int threads : thread_counts) {
    at::set_num_threads(threads);
    for (const int64_t numel : sizes) {
      torch::Tensor x = torch::randn({numel});
      torch::Tensor noise = torch::empty_like(x);
      auto gen = at::detail::createCPUGenerator(/*seed_val=*/1234);
      const double baseline = median_ns(reps, [&](int) {
        noise.normal_(/*mean=*/0.0, /*std=*/1.0, gen);
        x.add_(noise, sigma);
      });

      // One memory pass for scale: the cheapest possible in-place update of x.
      const double one_pass = median_ns(reps, [&](int) { x.mul_(1.0); });

      const std::vector<std::pair<std::string, std::function<void(int)>>> kernels = {
          {"torch normal_+add_ (baseline)", nullptr},
          {"torch x.mul_(1) (one memory pass)", nullptr},
          {"quell add_normal_",
           [&](int r) { quell::add_normal_(x, {/*key=*/7, static_cast<uint64_t>(r + 1)}, sigma); }},
          {"quell mul_normal_",
           [&](int r) { quell::mul_normal_(x, {/*key=*/7, static_cast<uint64_t>(r + 1)}, sigma); }},
          {"quell mul_add_normal_",
           [&](int r) {
             quell::mul_add_normal_(x, {/*key=*/7, static_cast<uint64_t>(r + 1)}, sigma, sigma);
           }},
          {"quell normal_fill_",
           [&](int r) { quell::normal_fill_(noise, {/*key=*/7, static_cast<uint64_t>(r + 1)}); }},
      };
      for (const auto& [name, fn] : kernels) {
        double ns = 0.0;
        if (name.rfind("torch normal_", 0) == 0) {
          ns = baseline;
        } else if (name.rfind("torch x.mul_", 0) == 0) {
          ns = one_pass;
        } else {
          ns = median_ns(reps, fn);
        }
        std::printf("| %s | %lld | %d | %.3f | %.3f |\n", name.c_str(),
                    static_cast<long long>(numel), threads, ns / static_cast<double>(numel),
                    ns / baseline);
      }
    }
  }
  return 0;
}
