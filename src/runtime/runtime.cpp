#include "quell/runtime.h"

#include <dlfcn.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <omp.h>

#include <algorithm>
#include <exception>
#include <vector>
#include <thread>

namespace quell {

void keep_freed_buffers() {
#if defined(__GLIBC__)
  // Fixing either value also turns off glibc's dynamic mmap threshold, so both are set: 32 MiB is
  // the largest threshold glibc accepts on 64-bit systems.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 256 << 20);
#endif
}

int set_threads(int threads) {
  keep_freed_buffers();
  const int n =
      threads > 0 ? threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  at::set_num_threads(n);
  // Looked up at run time: the BLAS behind LibTorch is chosen by Debian's alternatives and need
  // not be OpenBLAS.
  using SetBlasThreads = void (*)(int);
  if (auto f = reinterpret_cast<SetBlasThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    f(1);
  }
  return n;
}

void parallel_items(int64_t n, int threads, const std::function<void(int, int64_t)>& fn) {
  threads = std::max(1, threads);
  std::vector<std::exception_ptr> errors(threads);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num();
    torch::NoGradGuard no_grad;  // grad mode is thread-local
    try {
      for (int64_t i = t; i < n; i += threads) fn(t, i);
    } catch (...) {
      errors[t] = std::current_exception();
    }
  }
  for (const auto& e : errors) {
    if (e) std::rethrow_exception(e);
  }
}

}  // namespace quell
