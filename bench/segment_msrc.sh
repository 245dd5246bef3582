#!/usr/bin/env bash
# Segment stage on MSRC-v2: oracle (ground truth) vs pseudo-masks on the same validation carve, mIoU and ratio; optionally each contrast option.
#   npm run bench -- segment_msrc [both|oracle|weak|contrast] [extra --set args...]
# Reads a workspace that already has cache/{dataset,images,pseudo_masks}.arrow, models/cam and
# metrics/refine.json (SRC, default runs/msrc-bench), COPIES them into WS (default
# /tmp/tagseg-segment-msrc; SRC is never modified) and runs `tagseg run segment` there.
# Prints each run's summary, wall time and peak RSS, and metrics/segment.json's scores.
set -euo pipefail
which=${1:-both}; shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
# The pretrained MobileNet (cam.pretrained) from the shared models folder, never downloaded.
export TAGSEG_MODELS_DIR=${TAGSEG_MODELS_DIR:-$here/../shared/models}
src=${SRC:-$here/runs/msrc-bench}
ws=${WS:-/tmp/tagseg-segment-msrc}
# The MSRC-v2 recipe (presets/msrc-v2.yaml: photos + face above body): WS is made with it, so its segment keys apply to these runs.
if [ ! -f "$ws/params.yaml" ]; then
  node "$here/bin/tagseg.js" workspace "$ws" --preset msrc-v2 --set dataset.root="$(cd "$here/../shared/datasets/msrc-v2" && pwd)" >/dev/null
fi
grep -q '^# tagseg workspace --preset msrc-v2' "$ws/params.yaml" || { echo "$ws was not made with --preset msrc-v2: delete it (or set WS)" >&2; exit 1; }
mkdir -p "$ws/cache" "$ws/models" "$ws/metrics"
for f in dataset.arrow images.arrow pseudo_masks.arrow; do
  if [ -f "$src/cache/$f" ]; then cp -u "$src/cache/$f" "$ws/cache/$f"; elif [ "$f" != pseudo_masks.arrow ] || [ "$which" != oracle ]; then echo "missing $src/cache/$f" >&2; exit 1; fi
done
rm -rf "$ws/models/cam" && cp -r "$src/models/cam" "$ws/models/cam" && rm -rf "$ws/models/cam/train"
[ -f "$src/metrics/refine.json" ] && cp "$src/metrics/refine.json" "$ws/metrics/refine.json"
cd "$ws"
declare -A miou
run() {
  local name=$1; shift
  rm -rf models/segment
  echo "== $name: $*"
  /usr/bin/time -f "peak RSS %M KiB, wall %e s" node bin/tagseg.js run segment "$@" 2>&1 | grep -v "^segment train\|^segment validation\|oneDNN\|absl"
  miou[$name]=$(node -e "const m=require('./metrics/segment.json'); console.log(m.val.miou)")
  node -e "const m=require('./metrics/segment.json'); console.log(JSON.stringify({val: {miou: m.val.miou, pixel_accuracy: m.val.pixel_accuracy, images: m.val.images}, pseudo_val: m.pseudo_val && m.pseudo_val.miou, chain: m.chain}))"
}
case "$which" in
  oracle) run oracle --set segment.labels=gt "$@" ;;
  weak) run weak --set segment.labels=pseudo "$@" ;;
  both)
    run oracle --set segment.labels=gt "$@"
    run weak --set segment.labels=pseudo "$@"
    node -e "const o=${miou[oracle]}, w=${miou[weak]}; console.log('weak / oracle mIoU: ' + w + ' / ' + o + ' = ' + (w / o).toFixed(3) + ' (target >= 0.85)')" ;;
  contrast)
    for c in none pixel reco spml; do run "contrast-$c" --set segment.labels=pseudo --set segment.contrast=$c "$@"; done ;;
  *) echo "usage: segment_msrc.sh [both|oracle|weak|contrast] [--set ...]" >&2; exit 2 ;;
esac
