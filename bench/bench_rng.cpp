// Micro-benchmark of quell's fused noise kernels against torch's own way of adding noise,
// `noise.normal_(); x.add_(noise, sigma)`, measured in the same run.
//
// Prints one Markdown row per (kernel, size, threads): ns/element as the median and the
// minimum over the repetitions, and the ratio of each to the torch baseline of the same size
// and thread count (< 1 is faster). The minimum is the cost without interference from other
// processes; on a shared machine the median of multi-threaded rows can be dominated by
// OpenMP waiting for a descheduled worker.
// Usage: bench_rng [repetitions=30]

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "quell/rng.h"

// Internal to src/rng.cpp (also used by tests/test_rng.cpp): one block of 256 normals by one
// implementation, 0 generic, 1 AVX2, 2 AVX-512; false if this CPU lacks it.
namespace quell::detail {
bool normal_block_on_path(int path, RngStream s, uint32_t substream, uint64_t block, float* out);
}  // namespace quell::detail

namespace {

struct Timing {
  double median_ns = 0;
  double min_ns = 0;
};

// Wall time of `reps` runs of fn(rep), after one warm-up run.
Timing time_runs(int reps, const std::function<void(int)>& fn) {
  fn(-1);
  std::vector<double> times;
  times.reserve(reps);
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    fn(r);
    const auto t1 = std::chrono::steady_clock::now();
    times.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count());
  }
  std::sort(times.begin(), times.end());
  return {times[reps / 2], times.front()};
}

struct Kernel {
  std::string name;
  std::function<void(int)> run;  // argument: repetition index, -1 for the warm-up
};

}  // namespace

int main(int argc, char** argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 30;
  const int all_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  const double sigma = 0.1;
  torch::NoGradGuard no_grad;

  int avx2 = 0;
  int avx512 = 0;
#if defined(__x86_64__) || defined(__i386__)
  avx2 = __builtin_cpu_supports("avx2") ? 1 : 0;
  avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
                   __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")
               ? 1
               : 0;
#endif
#ifdef _OPENMP
  const int openmp = 1;
#else
  const int openmp = 0;  // at::parallel_for in our translation units then runs serially
#endif
  std::fprintf(stderr,
               "bench_rng: torch %s, %d repetitions, hardware threads %d, cpu avx2=%d "
               "avx512=%d (quell takes the widest), compiled with OpenMP=%d\n",
               TORCH_VERSION, reps, all_threads, avx2, avx512, openmp);
  // The generator alone on each CPU path (blocks of 256 normals into an L1-resident buffer),
  // one thread: shows what the dispatch picks and what the narrower paths would cost.
  for (int path = 0; path < 3; ++path) {
    alignas(64) float block_out[256];
    const int blocks = path == 0 ? 256 : 4096;
    float sink = 0;
    bool available = true;
    const Timing t = time_runs(reps, [&](int r) {
      for (int b = 0; b < blocks; ++b) {
        const quell::RngStream s{/*key=*/7, static_cast<uint64_t>(r + 2)};
        available = quell::detail::normal_block_on_path(path, s, /*substream=*/0,
                                                        static_cast<uint64_t>(b), block_out);
        sink += block_out[b % 256];
      }
    });
    static const char* const kPathNames[] = {"generic", "AVX2", "AVX-512"};
    if (available) {
      std::fprintf(stderr,
                   "bench_rng: generator only, %s path: %.3f ns/normal min, %.3f median%s\n",
                   kPathNames[path], t.min_ns / (blocks * 256.0), t.median_ns / (blocks * 256.0),
                   sink == 12345.0f ? " " : "");
    }
  }
  std::printf(
      "| kernel | numel | threads | ns/element median | ns/element min | ratio median | "
      "ratio min |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|\n");

  const std::vector<int64_t> sizes = {int64_t{4704} * 256, int64_t{1000000}};
  std::vector<int> thread_counts = {1};
  if (all_threads > 1) thread_counts.push_back(all_threads);

  for (const int threads : thread_counts) {
    at::set_num_threads(threads);
    for (const int64_t numel : sizes) {
      torch::Tensor x = torch::randn({numel});
      torch::Tensor noise = torch::empty_like(x);
      auto gen = at::detail::createCPUGenerator(/*seed_val=*/1234);
      auto stream = [](int r) { return quell::RngStream{/*key=*/7, static_cast<uint64_t>(r + 1)}; };
      // The first entry is the baseline the ratios refer to.
      const std::vector<Kernel> kernels = {
          {"torch normal_+add_ (baseline)",
           [&](int) {
             noise.normal_(/*mean=*/0.0, /*std=*/1.0, gen);
             x.add_(noise, sigma);
           }},
          // One memory pass for scale: the cheapest in-place update of x (a factor that is
          // not exactly 1, so no fast path can skip the work).
          {"torch x.mul_(c) (one memory pass)", [&](int) { x.mul_(1.0000001); }},
          {"quell add_normal_", [&](int r) { quell::add_normal_(x, stream(r), sigma); }},
          {"quell mul_normal_", [&](int r) { quell::mul_normal_(x, stream(r), sigma); }},
          {"quell mul_add_normal_",
           [&](int r) { quell::mul_add_normal_(x, stream(r), sigma, sigma); }},
          {"quell normal_fill_", [&](int r) { quell::normal_fill_(noise, stream(r)); }},
      };
      Timing baseline;
      for (const Kernel& kernel : kernels) {
        const Timing t = time_runs(reps, kernel.run);
        if (&kernel == &kernels.front()) baseline = t;
        const double n = static_cast<double>(numel);
        std::printf("| %s | %lld | %d | %.3f | %.3f | %.3f | %.3f |\n", kernel.name.c_str(),
                    static_cast<long long>(numel), threads, t.median_ns / n, t.min_ns / n,
                    t.median_ns / baseline.median_ns, t.min_ns / baseline.min_ns);
      }
    }
  }
  return 0;
}
