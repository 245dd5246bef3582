#!/usr/bin/env bash
# The whole pipeline on MSRC-v2 from scratch, stage by stage: wall time and peak RSS of each, total, and the chain table.
#   npm run bench -- pipeline_msrc [extra --set args...]
# Fresh workspace WS (default /tmp/tagseg-pipeline-msrc, deleted first) with the MSRC-v2 recipe
# (presets/msrc-v2.yaml: photos + face above body) plus your --set args;
# then `tagseg repro <stage>` for every dvc.yaml stage in order (synth skipped: MSRC has its own
# images), each under /usr/bin/time. Target: < 60 minutes on the 2-core dev machine.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
# The pretrained MobileNet (cam.pretrained) from the shared models folder, never downloaded.
export TAGSEG_MODELS_DIR=${TAGSEG_MODELS_DIR:-$here/../shared/models}
ws=${WS:-/tmp/tagseg-pipeline-msrc}
rm -rf "$ws"
node "$here/bin/tagseg.js" workspace "$ws" --preset msrc-v2 --set dataset.root="$(cd "$here/../shared/datasets/msrc-v2" && pwd)" "$@" >/dev/null
cd "$ws"
stages=$(node -e "const y=require('yaml'); const d=y.parse(require('fs').readFileSync('dvc.yaml','utf8')); console.log(Object.keys(d.stages).filter((s) => s !== 'synth').join(' '))")
report=$(mktemp)
total0=$(date +%s.%N)
for s in $stages; do
  echo "== $s"
  /usr/bin/time -o "$report.$s" -f "%e %M" node bin/tagseg.js -q repro "$s" 2>&1 | grep -v "oneDNN\|absl" | tail -25
done
total=$(echo "$(date +%s.%N) - $total0" | bc)
echo
printf '%-10s %9s %14s\n' stage 'wall s' 'peak RSS MiB'
for s in $stages; do read -r wall kib < "$report.$s"; printf '%-10s %9.1f %14d\n' "$s" "$wall" $((kib / 1024)); done
printf '%-10s %9.1f\n' total "$total"
rm -f "$report" "$report".*
[ -f metrics/segment.json ] && node -e "const m=require('./metrics/segment.json'); for (const [step, c] of Object.entries(m.chain)) console.log(step.padEnd(26), c.split.padEnd(6), c.miou === null ? '-' : (100 * c.miou).toFixed(1))"
