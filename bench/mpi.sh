#!/usr/bin/env bash
# MPI scaling on this machine (docs/mpi.md): a noisy-training Walking Noise sweep of lenet5-bn
# on Fashion-MNIST and data-parallel training, each with 1 and 2 ranks, timed in the same run.
# Prints the times, the speed-ups and the parallel efficiencies.
#   bench/mpi.sh [BUILD_DIR]        (default build; needs a build with QUELL_WITH_MPI)
set -euo pipefail
cd "$(dirname "$0")/.."
QUELL=${1:-build}/quell
OUT=$(mktemp -d /tmp/quell-mpi-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
CORES=$(nproc)
MPIRUN=(mpirun --oversubscribe --allow-run-as-root --bind-to none)

seconds() {  # seconds of wall time of "$@"
  local t0 t1
  t0=$(date +%s.%N)
  "$@" >/dev/null 2>"$OUT/last.err" || { cat "$OUT/last.err" >&2; exit 1; }
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }

# 3 sites x 2 repeats + 2 clean references = 8 training units of different lengths (sites
# that reach chance stop early).
SWEEP=(walk --train --model lenet5-bn --sites conv1,relu2,fc3 --grid 1e-1:1e1 --per-decade 2
       --repeats 2 --epochs 1 --train-limit 6000 --limit 2000 --figures none)
TRAIN=(train --model lenet5-bn --epochs 1 --limit 20000 --batch-size 256 --no-test)

echo "machine: $CORES cores; 1 rank uses $CORES threads, 2 ranks use $((CORES / 2 > 0 ? CORES / 2 : 1)) each"
s1=$(seconds "$QUELL" "${SWEEP[@]}" --out "$OUT/sweep1")
s2=$(seconds "${MPIRUN[@]}" -n 2 "$QUELL" "${SWEEP[@]}" --out "$OUT/sweep2")
cmp -s "$OUT/sweep1/walk.csv" "$OUT/sweep2/walk.csv" && same=yes ||
  same="no: $(diff "$OUT/sweep1/walk.csv" "$OUT/sweep2/walk.csv" | grep -c '^<') rows differ (1 rank trains with $CORES threads, each rank with fewer: reductions round differently; same threads give identical rows, see the tests)"
t1=$(seconds "$QUELL" "${TRAIN[@]}" --out "$OUT/t1.pt")
t2=$(seconds "${MPIRUN[@]}" -n 2 "$QUELL" "${TRAIN[@]}" --out "$OUT/t2.pt")
printf "noisy-training sweep: 1 rank %.1f s, 2 ranks %.1f s: speed-up %.2f, efficiency %.2f; same walk.csv: %s\n" \
  "$s1" "$s2" "$(ratio "$s1" "$s2")" "$(ratio "$s1" "$(ratio "$s2" 0.5)")" "$same"
printf "data-parallel training (20000 images, batch 256): 1 rank %.1f s (%.0f img/s), 2 ranks %.1f s (%.0f img/s): speed-up %.2f\n" \
  "$t1" "$(ratio 20000 "$t1")" "$t2" "$(ratio 20000 "$t2")" "$(ratio "$t1" "$t2")"
