#!/usr/bin/env bash
# The Walking Noise sweep of the character-level transformer (examples/python/char_lm.py) over
# every site, on perplexity: quell's prefix-cached sweep against the same sweep with full
# forward passes (--no-prefix-cache), alternating in one run; prints evaluations per second and
# the ratio, and the same for the first site (tok) and the last (head) alone (docs/bench.md,
# "Sequence models").
#
#   bench/lm_walk.sh [ROUNDS]        (default 2 rounds of each; needs build/quell)
#
# Uses runs/char_lm (made by examples/python/char_lm.py when absent, ~45 min on 2 cores; set
# LM_DIR to use another). Each sweep: every site with values, 4 sigmas, 1 repeat, 512 test
# windows of 64 characters, no early stop, so both sides run the same evaluations.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
lm=${LM_DIR:-runs/char_lm}
quell=${QUELL:-build/quell}
if [[ ! -f $lm/char_lm.ts ]]; then
  /usr/bin/python3 examples/python/char_lm.py --out "$lm"
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
common=(walk "$lm/char_lm.ts" --dataset tensors --data-dir "$lm" --limit 512 --metric perplexity
        --grid 0.03,0.3,3,30 --repeats 1 --no-early-stop --max-extend 0 --figures none)

run() {  # run NAME [flags...] -> sweep seconds (walk.json: without loading), evaluations
  local name=$1
  shift
  rm -rf "$out/$name"
  "$quell" "${common[@]}" --out "$out/$name" "$@" >"$out/$name.log" 2>&1
  /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print(j['seconds'], j['evaluations_run'])" \
    "$out/$name/walk.json"
}

declare -a cached full
for ((i = 0; i < rounds; i++)); do
  read -r s e < <(run cached)
  cached+=("$s")
  evals=$e
  read -r s e < <(run full --no-prefix-cache)
  full+=("$s")
  if [[ $e != "$evals" ]]; then echo "evaluation counts differ: $evals vs $e" >&2; exit 1; fi
  # Both sweeps must give the same numbers: the cache changes the speed, not the result.
  if ! cmp -s <(cut -d, -f1-6 "$out/cached/walk.csv") <(cut -d, -f1-6 "$out/full/walk.csv"); then
    echo "the cached and the full sweep differ" >&2
    exit 1
  fi
done
# One shallow and one deep site alone: a deep site must not pay for the clean prefix.
declare -a tok_c tok_f head_c head_f
for ((i = 0; i < rounds; i++)); do
  read -r s e < <(run tok_c --sites tok); tok_c+=("$s")
  read -r s e < <(run tok_f --sites tok --no-prefix-cache); tok_f+=("$s")
  read -r s e < <(run head_c --sites head); head_c+=("$s")
  read -r s e < <(run head_f --sites head --no-prefix-cache); head_f+=("$s")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
mc=$(median "${cached[@]}")
mf=$(median "${full[@]}")
sites=$(/usr/bin/python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))['sites']))" \
  "$out/cached/walk.json")
printf 'char_lm walk: %d sites, %d evaluations of 512 windows, %d round(s), medians\n' \
  "$sites" "$evals" "$rounds"
printf '  prefix-cached  %8.1f s  %6.2f evaluations/s\n' "$mc" "$(echo "$evals / $mc" | bc -l)"
printf '  full forward   %8.1f s  %6.2f evaluations/s\n' "$mf" "$(echo "$evals / $mf" | bc -l)"
printf '  speed-up (full / cached): %.2fx\n' "$(echo "$mf / $mc" | bc -l)"
for site in tok head; do
  c=$(eval median "\${${site}_c[@]}")
  f=$(eval median "\${${site}_f[@]}")
  printf '  site %-5s alone (4 evaluations): cached %6.2f s, full %6.2f s, speed-up %.2fx\n' \
    "$site" "$c" "$f" "$(echo "$f / $c" | bc -l)"
done
echo "(sweep seconds from walk.json: the evaluations, without loading the model and the data)"
