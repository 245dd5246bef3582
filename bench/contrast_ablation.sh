#!/usr/bin/env bash
# RCA ablation / design-choice runs on a prepared workspace (cache/ + models/cam + models/affinity
# present; synthetic or MSRC-v2): each variant runs `tagseg run contrast_train contrast` with the workspace's
# params.yaml + its --set in its own copy of the workspace, then one line per variant with the
# four mIoUs of metrics/contrast.json (the `dvc exp run -S` of this runner).
#   npm run bench -- contrast_ablation BASE_WS OUT_DIR LANES 'name|--set a=b --set c=d' ...
# e.g. 'both|' 'contrast-only|--set contrast.aggregation=false' 'aggregation-only|--set contrast.contrast_weight=0'
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
base=$(cd "$1" && pwd); out=$2; lanes=$3; shift 3
mkdir -p "$out"
run_one() {
  local name=${1%%|*} sets=${1#*|}
  local ws="$out/$name"
  rm -rf "$ws"
  node "$repo/bin/tagseg.js" workspace "$ws" > /dev/null
  # params.yaml: the base workspace's (its dataset and recipe), so variants differ only by their --set
  cp "$base/params.yaml" "$ws/params.yaml"
  mkdir -p "$ws/models" "$ws/metrics"
  cp -r "$base/cache" "$ws/"
  if [ -d "$base/datasets" ]; then cp -r "$base/datasets" "$ws/"; fi
  cp -r "$base/models/cam" "$base/models/affinity" "$ws/models/"
  rm -f "$ws/cache/contrast_cams.arrow"
  # shellcheck disable=SC2086
  (cd "$ws" && node bin/tagseg.js run contrast_train contrast $sets > run.log 2>&1) || echo "$name FAILED (see $ws/run.log)"
}
export -f run_one; export out base repo
printf '%s\n' "$@" | xargs -P "$lanes" -I{} bash -c 'run_one "$@"' _ {}
printf '%-22s %6s %6s %6s %6s\n' variant cam rca rw rca_rw
for spec in "$@"; do
  name=${spec%%|*}
  node -e '
    const m = JSON.parse(require("fs").readFileSync(process.argv[1] + "/metrics/contrast.json", "utf8"));
    const f = (s) => (s.miou === null ? "-" : (100 * s.miou).toFixed(1));
    console.log(process.argv[2].padEnd(22), [m.cam, m.rca, m.random_walk, m.rca_random_walk].map((s) => f(s).padStart(6)).join(" "));
  ' "$out/$name" "$name" 2>/dev/null || printf '%-22s failed\n' "$name"
done
