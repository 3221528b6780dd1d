#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/) with clang and runs each for SECONDS (default 60) or
# QUELL_FUZZ_RUNS executions (default 1,000,000), whichever comes first:
#   scripts/fuzz.sh [SECONDS [TARGET[:SECONDS]...]]   e.g. scripts/fuzz.sh 600 idx image:120
# QUELL_FUZZ_JOBS=N runs N targets at a time (default 1; each target is one process on one core).
# The build (build-fuzz, or $QUELL_FUZZ_BUILD) compiles the whole library with clang-14 and
# -fsanitize=fuzzer-no-link,address,undefined (LibTorch is g++/libstdc++, which clang links too;
# OpenMP is GCC's libgomp, the one LibTorch uses). Seeds are written fresh by fuzz_seeds (real
# files made by quell's writers and studies, the first Fashion-MNIST samples when installed) plus
# the TorchScript fixtures and every past finding in tests/fixtures/fuzz/<target>/. The corpus
# grows in build-fuzz/fuzz-corpus/<target>; a finding is saved in build-fuzz/fuzz-findings/<target>/
# and makes the script exit non-zero. A summary line per target: executions, cov, ft, findings.
# Run it under `nice -n 19` on a shared machine. docs/testing.md has the results of past runs.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${1:-60}
ALL=(idx cifar image checkpoint checkpoint_meta script noise_rules noise_json reports walk_journal study_journal
     tensors devices)
if [ $# -gt 1 ]; then TARGETS=("${@:2}"); else TARGETS=("${ALL[@]}"); fi
BUILD=${QUELL_FUZZ_BUILD:-build-fuzz}

QUELL_EXTRA_PACKAGES="clang-14 libclang-rt-14-dev" scripts/bootstrap.sh -
if [ ! -f "$BUILD/build.ninja" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DQUELL_FUZZ=ON -DQUELL_BUILD_TESTS=OFF -DQUELL_BUILD_BENCH=OFF -DQUELL_BUILD_PYTHON=OFF \
    -DQUELL_WITH_MPI=OFF -DOpenMP_CXX_FLAGS=-fopenmp=libgomp -DOpenMP_CXX_LIB_NAMES=gomp \
    -DOpenMP_gomp_LIBRARY="$(g++ -print-file-name=libgomp.so)" >&2
fi
# QUELL_FUZZ_SKIP_BUILD=1 runs the targets as built (a commit alone would rebuild and relink).
[ -n "${QUELL_FUZZ_SKIP_BUILD:-}" ] || cmake --build "$BUILD" -j "$(nproc)" --target fuzz_all >&2

# Full stacks for allocations made inside the uninstrumented LibTorch, so that LSan suppressions
# can match their frames.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1:fast_unwind_on_malloc=0}
# Leaks proven to lie inside LibTorch (each with its reason in the file).
export LSAN_OPTIONS=${LSAN_OPTIONS:-suppressions=$PWD/scripts/lsan.supp}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export OMP_NUM_THREADS=1
SEEDS=$BUILD/fuzz-seeds
rm -rf "$SEEDS"
"$BUILD/fuzz/fuzz_seeds" "$SEEDS" /usr/share/datasets/fashion-mnist >&2
mkdir -p "$SEEDS/script"
cp tests/fixtures/*.pt "$SEEDS/script/"
for t in "${ALL[@]}"; do
  if [ -d "tests/fixtures/fuzz/$t" ]; then mkdir -p "$SEEDS/$t"; cp tests/fixtures/fuzz/"$t"/* "$SEEDS/$t/"; fi
done

JOBS=${QUELL_FUZZ_JOBS:-1}
if ! [[ "$JOBS" =~ ^[1-9][0-9]*$ ]]; then
  echo "fuzz: QUELL_FUZZ_JOBS must be a positive integer, got '$JOBS'" >&2
  exit 2
fi
RESULTS=$(mktemp -d)
trap 'rm -rf "$RESULTS"' EXIT
# One target: its libFuzzer run, then its summary line in $RESULTS/<n> (exit status in <n>.rc).
run_target() {
  local n=$1 spec=$2
  local t=${spec%%:*} secs=$SECS
  [ "$t" = "$spec" ] || secs=${spec#*:}
  local corpus=$BUILD/fuzz-corpus/$t findings=$BUILD/fuzz-findings/$t
  local log
  log=$BUILD/fuzz-logs/$t-$(date -u +%Y%m%dT%H%M%S).log
  mkdir -p "$corpus" "$findings" "$(dirname "$log")" "$SEEDS/$t"
  local dict=()
  case $t in
    noise_rules) dict=(-dict=fuzz/dict/noise_rules.dict) ;;
    noise_json | checkpoint_meta | reports | walk_journal | study_journal) dict=(-dict=fuzz/dict/json.dict) ;;
  esac
  local timeout=10
  [ "$t" = script ] && timeout=60
  echo "fuzz: $t for ${secs}s ($(date -u +%FT%TZ))" >&2
  local rc=0
  "$BUILD/fuzz/fuzz_$t" -max_total_time="$secs" -runs="${QUELL_FUZZ_RUNS:-1000000}" \
    -timeout="$timeout" -rss_limit_mb=4096 \
    -print_final_stats=1 -artifact_prefix="$findings/" "${dict[@]}" "$corpus" "$SEEDS/$t" \
    >"$log" 2>&1 || rc=$?
  local execs last cov ft found
  execs=$(grep -a -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$' || true)
  last=$(grep -a -E '^#[0-9]+' "$log" | tail -1 || true)
  cov=$(grep -o 'cov: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  ft=$(grep -o 'ft: [0-9]*' <<<"$last" | grep -o '[0-9]*' || true)
  found=$(find "$findings" -type f | wc -l)
  echo "fuzz: $t done ($(date -u +%FT%TZ))" >&2
  printf '%-14s execs %-9s cov %-6s ft %-7s findings %s (exit %s)\n' "$t" \
    "${execs:-?}" "${cov:-?}" "${ft:-?}" "$found" "$rc" >"$RESULTS/$n"
  echo "$rc" >"$RESULTS/$n.rc"
}

n=0
for spec in "${TARGETS[@]}"; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n || true; done
  run_target "$n" "$spec" &
  n=$((n + 1))
done
wait
status=0
summary=()
for ((i = 0; i < n; i++)); do
  summary+=("$(cat "$RESULTS/$i" 2>/dev/null || echo "${TARGETS[$i]%%:*}: no result")")
  [ "$(cat "$RESULTS/$i.rc" 2>/dev/null || echo 1)" -eq 0 ] || status=1
done
printf 'fuzz: %s\n' "${summary[@]}"
[ "$status" -eq 0 ] || echo "fuzz: findings in $BUILD/fuzz-findings (logs in $BUILD/fuzz-logs)" >&2
exit "$status"
