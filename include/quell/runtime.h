// Process-wide runtime settings.
#pragma once

namespace quell {

/// Uses `threads` threads for LibTorch's intra-op parallelism (0 = all cores) and keeps
/// OpenBLAS single-threaded: LibTorch already parallelises around its BLAS calls, and
/// OpenBLAS's own pthreads (Debian's libopenblas0-pthread) would oversubscribe the cores and spin
/// in sched_yield (measured: 1.8x slower lenet5-bn inference on 2 cores). Returns the count set.
int set_threads(int threads);

}  // namespace quell
