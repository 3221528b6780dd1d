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
TRAIN=(train --model lenet5-bn --epochs 1 --batch-size 256 --no-test)

echo "machine: $CORES cores; 1 rank uses $CORES threads, 2 ranks use $((CORES / 2 > 0 ? CORES / 2 : 1)) each"
s1=$(seconds "$QUELL" "${SWEEP[@]}" --out "$OUT/sweep1")
s1t=$(seconds "$QUELL" "${SWEEP[@]}" --threads 1 --out "$OUT/sweep1t")
s2=$(seconds "${MPIRUN[@]}" -n 2 "$QUELL" "${SWEEP[@]}" --out "$OUT/sweep2")
cmp -s "$OUT/sweep1t/walk.csv" "$OUT/sweep2/walk.csv" && same=yes || same=NO
t1=$(seconds "$QUELL" "${TRAIN[@]}" --out "$OUT/t1.pt")
t1t=$(seconds "$QUELL" "${TRAIN[@]}" --threads 1 --out "$OUT/t1t.pt")
t2=$(seconds "${MPIRUN[@]}" -n 2 "$QUELL" "${TRAIN[@]}" --out "$OUT/t2.pt")
printf "noisy-training sweep: 1 rank x %d threads %.1f s, 1 rank x 1 thread %.1f s, 2 ranks x 1 thread %.1f s\n" \
  "$CORES" "$s1" "$s1t" "$s2"
printf "  speed-up of 2 ranks over 1 rank x 1 thread %.2f (efficiency %.2f), over 1 rank x %d threads %.2f; walk.csv identical to 1 rank x 1 thread: %s\n" \
  "$(ratio "$s1t" "$s2")" "$(ratio "$s1t" "$(ratio "$s2" 0.5)")" "$CORES" "$(ratio "$s1" "$s2")" "$same"
printf "data-parallel training (one epoch, 60000 images, batch 256): 1 rank x %d threads %.1f s (%.0f img/s), 1 rank x 1 thread %.1f s (%.0f img/s), 2 ranks x 1 thread %.1f s (%.0f img/s)\n" \
  "$CORES" "$t1" "$(ratio 60000 "$t1")" "$t1t" "$(ratio 60000 "$t1t")" "$t2" "$(ratio 60000 "$t2")"
printf "  speed-up of 2 ranks over 1 rank x 1 thread %.2f, over 1 rank x %d threads %.2f (times include process start-up)\n" \
  "$(ratio "$t1t" "$t2")" "$CORES" "$(ratio "$t1" "$t2")"
