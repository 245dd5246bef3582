#!/usr/bin/env bash
# CAM stage on MSRC-v2 (train split tags; test tags scored as held-out): mobilenet (pretrained) and/or resnet (scratch).
#   bash bench/cam_msrc.sh [mobilenet|resnet|both] [extra --set args...]
# Workspace: runs/msrc-bench (reused: ingest is skipped the second time). Prints metrics/cam.json and peak RSS.
set -euo pipefail
which=${1:-both}; shift || true
here=$(cd "$(dirname "$0")/.." && pwd)
# The pretrained MobileNet (cam.pretrained) from the shared models folder, never downloaded.
export TAGSEG_MODELS_DIR=${TAGSEG_MODELS_DIR:-$here/../shared/models}
ws=${WS:-$here/runs/msrc-bench}
[ -f "$ws/params.yaml" ] || node "$here/bin/tagseg.js" workspace "$ws" --set dataset.root="$(cd "$here/../shared/datasets/msrc-v2" && pwd)" --set ingest.size=320 >/dev/null
cd "$ws"
node bin/tagseg.js -q repro ingest >/dev/null
run() {
  rm -rf models/cam
  echo "== $*"
  /usr/bin/time -f "peak RSS %M KiB, wall %e s" node bin/tagseg.js run cam "$@" 2>&1 | grep -v "^cam maps\|^cam train\|oneDNN\|absl"
  cat metrics/cam.json
}
# MobileNet: the MSRC-v2 recipe of bench/msrc_recipe.sh (its comments give the measurements).
# shellcheck source=msrc_recipe.sh
source "$here/bench/msrc_recipe.sh"
if [ "$which" = mobilenet ] || [ "$which" = both ]; then
  run "${MSRC_SETS[@]}" "$@"
fi
if [ "$which" = resnet ] || [ "$which" = both ]; then
  run --set cam.backbone=resnet --set cam.probe_iters=0 --set cam.scales=[1.0,0.5,1.5] --set cam.width=32 --set cam.optimizer=adamw --set cam.lr=0.003 \
      --set cam.epochs=15 --set cam.batch_size=16 --set cam.crop=224 --set cam.crop_scale=[0.3,1.0] "$@"
fi
