#!/usr/bin/env bash
# CAM stage on MSRC-v2 (train split tags; test tags scored as held-out): mobilenet (pretrained) and/or resnet (scratch).
#   bash bench/cam_msrc.sh [mobilenet|resnet|both] [extra --set args...]
# Workspace: runs/msrc-bench, made with --preset msrc-v2 (reused: ingest is skipped the second time).
# Prints metrics/cam.json and peak RSS.
set -euo pipefail
which=${1:-both}; shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
# The pretrained MobileNet (cam.pretrained) from the shared models folder, never downloaded.
export TAGSEG_MODELS_DIR=${TAGSEG_MODELS_DIR:-$here/../shared/models}
ws=${WS:-$here/runs/msrc-bench}
[ -f "$ws/params.yaml" ] || node "$here/bin/tagseg.js" workspace "$ws" --preset msrc-v2 --set dataset.root="$(cd "$here/../shared/datasets/msrc-v2" && pwd)" >/dev/null
grep -q '^# tagseg workspace --preset msrc-v2' "$ws/params.yaml" || { echo "$ws was not made with --preset msrc-v2: delete it (or set WS)" >&2; exit 1; }
cd "$ws"
node bin/tagseg.js -q repro ingest >/dev/null
run() {
  rm -rf models/cam
  echo "== $*"
  /usr/bin/time -f "peak RSS %M KiB, wall %e s" node bin/tagseg.js run cam_train cam "$@" 2>&1 | grep -v "^cam maps\|^cam train\|oneDNN\|absl"
  cat metrics/cam_train.json metrics/cam.json
}
# MobileNet: the MSRC-v2 recipe of presets/photos.yaml (its comments give the measurements).
if [ "$which" = mobilenet ] || [ "$which" = both ]; then
  run "$@"
fi
# ResNet from scratch: the preset's MobileNet-only cam keys (norm, output_stride, head_lr_mult,
# recam_weight) back at the defaults this run was measured with.
if [ "$which" = resnet ] || [ "$which" = both ]; then
  run --set cam.backbone=resnet --set cam.norm=batch --set cam.output_stride=8 --set cam.head_lr_mult=10 --set cam.recam_weight=0 \
      --set cam.probe_iters=0 --set cam.scales=[1.0,0.5,1.5] --set cam.width=32 --set cam.optimizer=adamw --set cam.lr=0.003 \
      --set cam.epochs=15 --set cam.batch_size=16 --set cam.crop=224 --set cam.crop_scale=[0.3,1.0] "$@"
fi
