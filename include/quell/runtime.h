// Process-wide runtime settings.
#pragma once

#include <cstdint>
#include <functional>

namespace quell {

/// Uses `threads` threads for LibTorch's intra-op parallelism (0 = all cores) and keeps
/// OpenBLAS single-threaded: LibTorch already parallelises around its BLAS calls, and
/// OpenBLAS's own pthreads (Debian's libopenblas0-pthread) would oversubscribe the cores and spin
/// in sched_yield (measured: 1.8x slower lenet5-bn inference on 2 cores). Also calls
/// keep_freed_buffers(). Returns the count set.
int set_threads(int threads);

/// Lets glibc's malloc keep freed buffers of up to 32 MiB in the heap for reuse (and up to
/// 256 MiB free at the top of each heap) instead of returning them to the kernel. LibTorch
/// allocates every activation and gradient afresh; under glibc's defaults a buffer of a few MiB
/// (a batch of 256 feature maps) could go back to the kernel on free and be page-faulted in again
/// on the next allocation: measured, an evaluation of lenet5-bn with denoising blocks spent 4.2 s
/// of 13 s in the kernel, 0.1 s after this (docs/bench.md). Results are unchanged. Without glibc,
/// nothing is done. Called by set_threads; idempotent.
void keep_freed_buffers();

/// Runs fn(thread, item) for every item in [0, n) on `threads` OpenMP threads (item i on thread
/// i % threads), without autograd; LibTorch ops inside run single-threaded. Rethrows the first
/// exception a thread raised. Used to evaluate one batch per thread: the ops of one batch are
/// small, so this beats splitting every op over the threads.
void parallel_items(int64_t n, int threads, const std::function<void(int, int64_t)>& fn);

}  // namespace quell
