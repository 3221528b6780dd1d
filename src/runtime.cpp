#include "quell/runtime.h"

#include <dlfcn.h>

#include <algorithm>
#include <thread>

namespace quell {

int set_threads(int threads) {
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

}  // namespace quell
