// Process-wide runtime settings.
#pragma once

#include <cstdint>
#include <functional>

namespace quell {

/// Uses `threads` threads for LibTorch's intra-op parallelism (0 = all cores) and keeps
/// OpenBLAS single-threaded: LibTorch already parallelises around its BLAS calls, and
/// OpenBLAS's own pthreads (Debian's libopenblas0-pthread) would oversubscribe the cores and spin
/// in sched_yield (measured: 1.8x slower lenet5-bn inference on 2 cores). Returns the count set.
int set_threads(int threads);

/// Runs fn(thread, item) for every item in [0, n) on `threads` OpenMP threads (item i on thread
/// i % threads), without autograd; LibTorch ops inside run single-threaded. Rethrows the first
/// exception a thread raised. Used to evaluate one batch per thread: the ops of one batch are
/// small, so this beats splitting every op over the threads.
void parallel_items(int64_t n, int threads, const std::function<void(int, int64_t)>& fn);

}  // namespace quell
