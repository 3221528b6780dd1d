// The check that a ThreadSanitizer run can fail (scripts/sanitize.sh tsan runs it first): a data
// race inside an at::parallel_for body, where quell's own parallel code runs (LibTorch's OpenMP
// pool), must be reported, and the same loop writing disjoint elements must not. A setup that
// hid OpenMP's threads from TSan, or one that drowned it in false reports, fails here.
#include <ATen/Parallel.h>

#include <cstdint>
#include <cstdio>
#include <vector>

// Every chunk adds into one variable without synchronisation: a race.
int64_t racy_sum(int64_t n) {
  int64_t sum = 0;
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) sum += i;
  });
  return sum;
}

// Each chunk writes its own elements: no race.
int64_t disjoint_sum(int64_t n) {
  std::vector<int64_t> v(static_cast<size_t>(n));
  at::parallel_for(0, n, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) v[static_cast<size_t>(i)] = i;
  });
  int64_t sum = 0;
  for (int64_t x : v) sum += x;
  return sum;
}

int main() {
  const int64_t n = 1 << 16;
  std::printf("threads %d, disjoint %lld, racy %lld\n", at::get_num_threads(),
              static_cast<long long>(disjoint_sum(n)), static_cast<long long>(racy_sum(n)));
  return 0;
}
