#!/usr/bin/env bash
# CAM stage on the default synthetic data (240 images, 128 px, 4 classes): mIoU, mAP, speed, peak RSS per optimiser.
#   npm run bench -- cam_synth [sgd|adamw|both] [extra --set args...]
# Uses a fresh workspace in a temp dir; prints metrics/cam_train.json, metrics/cam.json and the summary line of each run.
set -euo pipefail
which=${1:-both}; shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node "$here/bin/tagseg.js" workspace "$work/ws" >/dev/null
cd "$work/ws"
node bin/tagseg.js -q repro ingest >/dev/null
run() {
  rm -rf models/cam
  echo "== $*"
  /usr/bin/time -f "peak RSS %M KiB, wall %e s" node bin/tagseg.js run cam_train cam "$@" 2>&1 | grep -v "^cam maps\|^cam train\|oneDNN\|absl"
  cat metrics/cam_train.json metrics/cam.json
}
if [ "$which" = sgd ] || [ "$which" = both ]; then run --set cam.optimizer=sgd --set cam.lr=0.1 "$@"; fi
if [ "$which" = adamw ] || [ "$which" = both ]; then run --set cam.optimizer=adamw --set cam.lr=0.003 "$@"; fi
