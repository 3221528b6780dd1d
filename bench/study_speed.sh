#!/usr/bin/env bash
# The README's default denoise study, timed against an older commit in the same run: builds
# BASE's `quell` in a worktree of its own, then runs the study with BASE's and this checkout's
# `quell` alternately on one checkpoint, and prints each phase's seconds (the report's
# provenance.seconds), the speed-up, and every comparison row's drop side by side (docs/bench.md,
# "The denoise study").
#
#   bench/study_speed.sh BASE [ROUNDS]     e.g. bench/study_speed.sh 4512fc0    (default 1 round)
#
# One round is BASE then this checkout, so ROUNDS=2 runs BASE, HEAD, BASE, HEAD. Needs
# build/quell (scripts/bootstrap.sh builds it) and about 40 minutes per round on 2 cores for
# BASE = 4512fc0; run it with the machine to itself. Environment:
#   STUDY_DIR   where worktree, builds and runs go (default runs/study-speed)
#   STUDY_CKPT  the backbone (default runs/demo/lenet5-bn.pt; trained as scripts/demo.sh does
#               when missing)
#   STUDY_ARGS  the study's flags (default the README's: --budget 2,5 and its noise)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: bench/study_speed.sh BASE [ROUNDS]" >&2
  exit 2
fi
rounds=${2:-1}
if ! [[ $rounds =~ ^[1-9][0-9]*$ ]]; then
  echo "study_speed: ROUNDS must be a positive integer, got '$rounds'" >&2
  exit 2
fi
base=$(git rev-parse --short=7 "$1^{commit}") || {
  echo "study_speed: '$1' is not a commit of this repository" >&2
  exit 2
}
head=$(git rev-parse --short=7 HEAD)
[ -z "$(git status --porcelain --untracked-files=no)" ] || head="$head+changes"
dir=${STUDY_DIR:-runs/study-speed}
ckpt=${STUDY_CKPT:-runs/demo/lenet5-bn.pt}
read -r -a args <<<"${STUDY_ARGS:---budget 2,5 --noise all=add:0.25:static:rel=std+add:0.125:rel=std}"
[ -x build/quell ] || { echo "study_speed: build/quell is missing (scripts/bootstrap.sh)" >&2; exit 2; }
mkdir -p "$dir"

# BASE's quell, built once (Release, the CLI only).
src=$dir/src-$base bld=$dir/build-$base
if [ ! -x "$bld/quell" ]; then
  [ -d "$src" ] || git worktree add --detach "$src" "$base" >&2
  [ -f "$bld/build.ninja" ] || cmake -S "$src" -B "$bld" -G Ninja -DCMAKE_BUILD_TYPE=Release >&2
  cmake --build "$bld" -j "$(nproc)" --target quell >&2
fi
if [ ! -f "$ckpt" ]; then
  mkdir -p "$(dirname "$ckpt")"
  build/quell train --model lenet5-bn --epochs 5 --out "$ckpt"
fi

run() {  # run LABEL QUELL ROUND
  local out=$dir/run-$1-$3
  echo "study_speed: $1 round $3 ($(date -u +%FT%TZ))" >&2
  /usr/bin/time -f '%e %U' -o "$out.time" "$2" denoise "$ckpt" --out "$out" --restart \
    "${args[@]}" >"$out.log" 2>&1 || {
    echo "study_speed: $1's study failed; its log: $out.log" >&2
    tail -3 "$out.log" >&2
    exit 1
  }
}
for ((r = 1; r <= rounds; r++)); do
  run base "$bld/quell" "$r"
  run head build/quell "$r"
done

/usr/bin/python3 - "$dir" "$rounds" "$base" "$head" <<'PY'
import json, statistics, sys
d, rounds, base, head = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def load(label, r):
    rep = json.load(open(f"{d}/run-{label}-{r}/report.json"))
    wall, user = (float(x) for x in open(f"{d}/run-{label}-{r}.time").read().split()[-2:])
    return rep, wall, user
runs = {l: [load(l, r) for r in range(1, rounds + 1)] for l in ("base", "head")}
phases = ["rankings", "search", "final", "calibration", "bounds", "robustness", "total"]
print(f"denoise study: {base} (base) against {head} (head), {rounds} round(s), seconds")
print(f"| phase | {' | '.join(f'base {r}' for r in range(1, rounds + 1))} | "
      f"{' | '.join(f'head {r}' for r in range(1, rounds + 1))} | median ratio |")
print("|---|" + "---:|" * (2 * rounds + 1))
for p in phases + ["wall", "user"]:
    def val(x):
        rep, wall, user = x
        return {"wall": wall, "user": user}.get(p, rep["provenance"].get("seconds", {}).get(p))
    b = [val(x) for x in runs["base"]]
    h = [val(x) for x in runs["head"]]
    if all(v is None for v in b + h):
        continue
    ratio = (statistics.median(b) / statistics.median(h)
             if None not in b + h and statistics.median(h) > 0 else None)
    cells = ["" if v is None else f"{v:.0f}" for v in b + h]
    print(f"| {p} | {' | '.join(cells)} | {'' if ratio is None else f'{ratio:.2f}x'} |")
print()
print("drop in points (test set; base round 1, head round 1):")
print("| row | params base | drop base | params head | drop head |")
print("|---|---:|---:|---:|---:|")
rows = lambda rep: {r["model"]: r for r in rep["comparison"]}
b, h = rows(runs["base"][0][0]), rows(runs["head"][0][0])
for name in list(b) + [n for n in h if n not in b]:
    cell = lambda rs: (f"{rs[name]['params']} | {rs[name]['drop_vs_clean_points']:.2f}"
                       if name in rs else "- | -")
    print(f"| {name} | {cell(b)} | {cell(h)} |")
PY
