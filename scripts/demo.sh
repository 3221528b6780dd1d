#!/usr/bin/env bash
# The main job: install + build, train lenet5-bn on Fashion-MNIST, evaluate it clean and under
# additive noise on all sites at a few levels (sigma relative to each site's activation std),
# then walk additive noise through its 16 sites (Walking Noise: midpoint per site, figures).
#   scripts/demo.sh            (QUELL_DEMO_EPOCHS, QUELL_DEMO_DIR to override)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh build quell quell_python
scripts/install_python.sh build  # import quell (docs/python.md)
EPOCHS=${QUELL_DEMO_EPOCHS:-5}
OUT=${QUELL_DEMO_DIR:-runs/demo}
mkdir -p "$OUT"
CKPT="$OUT/lenet5-bn.pt"
WALK_RESTART=()
if [ ! -f "$CKPT" ] || [ -n "${QUELL_DEMO_RETRAIN:-}" ]; then
  WALK_RESTART=(--restart)  # a new checkpoint: the old walk does not apply
  build/quell train --model lenet5-bn --epochs "$EPOCHS" --out "$CKPT" --metrics "$OUT/train.json"
else
  echo "demo: reusing $CKPT (set QUELL_DEMO_RETRAIN=1 to train again)" >&2
fi
build/quell eval --checkpoint "$CKPT" --noise 'all=add:1:rel=std' \
  --levels 0.02,0.05,0.1,0.2,0.5,1 --draws 5 --json "$OUT/eval.json" --csv "$OUT/eval.csv"
# A walk interrupted earlier resumes; a finished one is re-reported from its journal.
build/quell walk "$CKPT" --out "$OUT/walk" "${WALK_RESTART[@]}"
echo "demo: results in $OUT/ (eval.json, eval.csv, train.json; walk/: walk.csv, walk.json," \
  "curves/midpoints/heatmap .png and .svg)" >&2
