#!/usr/bin/env bash
# The main job: install + build, train lenet5-bn on Fashion-MNIST, evaluate it clean and under
# additive noise on all sites at a few levels (sigma relative to each site's activation std).
#   scripts/demo.sh            (QUELL_DEMO_EPOCHS, QUELL_DEMO_DIR to override)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/bootstrap.sh build
EPOCHS=${QUELL_DEMO_EPOCHS:-5}
OUT=${QUELL_DEMO_DIR:-runs/demo}
mkdir -p "$OUT"
CKPT="$OUT/lenet5-bn.pt"
if [ ! -f "$CKPT" ] || [ -n "${QUELL_DEMO_RETRAIN:-}" ]; then
  build/quell train --model lenet5-bn --epochs "$EPOCHS" --out "$CKPT" --metrics "$OUT/train.json"
else
  echo "demo: reusing $CKPT (set QUELL_DEMO_RETRAIN=1 to train again)" >&2
fi
build/quell eval --checkpoint "$CKPT" --noise 'all=add:1:rel=std' \
  --levels 0.02,0.05,0.1,0.2,0.5,1 --draws 5 --json "$OUT/eval.json" --csv "$OUT/eval.csv"
echo "demo: results in $OUT/ (eval.json, eval.csv, train.json)" >&2
