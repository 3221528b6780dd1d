#!/usr/bin/env bash
# The fault tests (tests/test_faults.cpp) at length: disk full, a read-only output directory, and
# each resumable study (walk, walk --train, denoise) killed KILLS times (default 10) at random
# moments per seed, for each SEED given (default 1 2 3), every resumed result compared with an
# uninterrupted run. The normal suite runs the same tests with 2 kills and one seed.
#   scripts/faults.sh [KILLS [SEED...]]
# Needs root (tmpfs and read-only bind mounts in a private mount namespace). Builds build/ first.
set -euo pipefail
cd "$(dirname "$0")/.."
KILLS=${1:-10}
SEEDS=("${@:2}")
[ ${#SEEDS[@]} -gt 0 ] || SEEDS=(1 2 3)
scripts/bootstrap.sh build quell quell_tests
for seed in "${SEEDS[@]}"; do
  echo "faults: seed $seed, $KILLS kills per study" >&2
  QUELL_FAULT_KILLS=$KILLS QUELL_FAULT_SEED=$seed build/tests/quell_tests --gtest_filter='Faults.*'
done
