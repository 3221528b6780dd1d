#!/usr/bin/env bash
# The test suite under sanitizers (docs/testing.md):
#   scripts/sanitize.sh [asan|lsan|tsan|all]          (default all)
# asan: a Debug build (build-asan) with -DQUELL_SANITIZE="address;undefined" runs every GoogleTest
#       and the CLI end-to-end tests through ctest (not the Python package, not the installed-package
#       example: neither links the sanitizer runtimes). Any ASan or UBSan report fails the test.
# lsan: the same build's GoogleTest suite with leak detection (scripts/lsan.supp).
# tsan: a clang build (build-tsan) with -DQUELL_SANITIZE=thread and LLVM's OpenMP runs a canary
#       that must report its one race, then every GoogleTest and the CLI end-to-end tests with
#       2 threads, with scripts/tsan.supp (only reports proven to lie inside LibTorch or OpenMP).
# Debug here is -O1 -g (assertions on): -O0 makes the instrumented suite several times slower.
# CXX/CC choose the compiler (default: the system g++, as for the normal build).
# Run it under `nice -n 19` on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
WHAT=${1:-all}
ROOT=$PWD
QUELL_EXTRA_PACKAGES="clang-14 libclang-rt-14-dev libomp-14-dev" scripts/bootstrap.sh -
JOBS=$(nproc)

configure() {  # BUILD_DIR SANITIZERS
  if [ ! -f "$1/build.ninja" ]; then
    cmake -S . -B "$1" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" \
      -DQUELL_SANITIZE="$2" -DQUELL_BUILD_BENCH=OFF -DQUELL_BUILD_PYTHON=OFF >&2
  fi
  cmake --build "$1" -j "$JOBS" --target quell quell_tests >&2
}

run_asan() {
  configure build-asan "address;undefined"
  # allocator_may_return_null: an allocation too large for the machine fails as it does without
  # ASan (LibTorch then throws, quell reports it); FuzzRegressions replays such checkpoints.
  export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:allocator_may_return_null=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  (cd build-asan && ctest --output-on-failure -j "$JOBS" -E '^(CppExample|Python)$')
}

run_lsan() {
  configure build-asan "address;undefined"
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:allocator_may_return_null=1
  export LSAN_OPTIONS=suppressions=$ROOT/scripts/lsan.supp:print_suppressions=1
  export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
  # One process for the whole GoogleTest suite but the CLI fixture (ctest covers that with asan).
  build-asan/tests/quell_tests --gtest_filter='-Cli.*' --gtest_brief=1
}

run_tsan() {
  # TSan understands OpenMP's fork, join and barriers only through LLVM's libomp and its Archer
  # tool (libarcher.so, OMPT); GCC's libgomp synchronises through futexes TSan cannot see, so
  # every parallel region would be reported. This build is clang's with libomp; libomp also
  # serves LibTorch's GOMP_* calls (it exports them and is linked ahead of LibTorch's libgomp), so
  # LibTorch's own parallel regions are annotated too. MPI is left out (threads only).
  if [ ! -f build-tsan/build.ninja ]; then
    CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
      -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DQUELL_SANITIZE=thread -DQUELL_BUILD_BENCH=OFF \
      -DQUELL_BUILD_PYTHON=OFF -DQUELL_WITH_MPI=OFF -DOpenMP_CXX_FLAGS=-fopenmp=libomp \
      -DOpenMP_CXX_LIB_NAMES=omp -DOpenMP_omp_LIBRARY=/usr/lib/llvm-14/lib/libomp.so >&2
  fi
  cmake --build build-tsan -j "$JOBS" --target quell quell_tests >&2
  export OMP_TOOL_LIBRARIES=/usr/lib/llvm-14/lib/libarcher.so
  # ignore_noninstrumented_modules: what the uninstrumented libraries (libomp, LibTorch, libc)
  # do inside themselves through TSan's interceptors (libomp's own mutexes, initialised by one
  # thread and taken by another, are reported as races otherwise: Archer's advice, printed at
  # start). Every access quell's instrumented code makes is still checked.
  # allocator_may_return_null: as for asan (FuzzRegressions replays checkpoints too large to
  # allocate).
  export TSAN_OPTIONS="suppressions=$ROOT/scripts/tsan.supp:halt_on_error=1:second_deadlock_stack=1:ignore_noninstrumented_modules=1:allocator_may_return_null=1"
  export OMP_NUM_THREADS=2
  # The canary (tests/sanitizers/tsan_canary.cpp): this setup must report the race in its
  # at::parallel_for body and nothing else, or a clean run below would prove nothing.
  clang++-14 -g -O1 -fsanitize=thread -fopenmp=libomp -std=c++17 -D_GLIBCXX_USE_CXX11_ABI=1 \
    -isystem /usr/include/torch/csrc/api/include tests/sanitizers/tsan_canary.cpp \
    -o build-tsan/tsan_canary -L/usr/lib/llvm-14/lib -Wl,-rpath,/usr/lib/llvm-14/lib -ltorch_cpu -lc10
  local canary
  canary=$(TSAN_OPTIONS=${TSAN_OPTIONS/halt_on_error=1/halt_on_error=0} build-tsan/tsan_canary 2>&1 || true)
  if [ "$(grep -c 'WARNING: ThreadSanitizer' <<<"$canary")" != 1 ] ||
     ! grep -q 'SUMMARY: ThreadSanitizer: data race .*tsan_canary.cpp.* in racy_sum' <<<"$canary"; then
    echo "sanitize: the TSan canary did not report exactly its one race:" >&2
    echo "$canary" >&2
    exit 1
  fi
  echo "sanitize: the TSan canary's race was reported, and only it" >&2
  # Every GoogleTest, the CLI and fault suites too: the quell processes they start are this
  # build's, under the same options. Reports go to files (log_path), one per process: a child's
  # exit status alone could pass for an expected failure.
  local reports=$ROOT/build-tsan/tsan-reports status=0
  rm -rf "$reports" && mkdir -p "$reports"
  TSAN_OPTIONS="$TSAN_OPTIONS:log_path=$reports/report" \
    build-tsan/tests/quell_tests --gtest_brief=1 --gtest_filter="$TSAN_TESTS" || status=$?
  if compgen -G "$reports/report.*" >/dev/null; then
    cat "$reports"/report.* >&2
    echo "sanitize: ThreadSanitizer reports (above; files in $reports)" >&2
    exit 1
  fi
  return "$status"
}

# The whole suite by default (the threaded parts: evaluation batches and draws, the fused kernels,
# noise streams, image decoding, the walk and its prefix cache, training, the studies and the CLI
# on them); QUELL_TSAN_TESTS=<gtest filter> picks a part.
TSAN_TESTS=${QUELL_TSAN_TESTS:-'*'}

case $WHAT in
  asan) run_asan ;;
  lsan) run_lsan ;;
  tsan) run_tsan ;;
  all) run_asan; run_lsan; run_tsan ;;
  *) echo "usage: scripts/sanitize.sh [asan|lsan|tsan|all]" >&2; exit 2 ;;
esac
