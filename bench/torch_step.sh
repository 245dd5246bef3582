#!/usr/bin/env bash
# One CAM training step: PyTorch CPU vs tagseg (tfjs native), same net and shapes, ratio in one run.
#   bash bench/torch_step.sh [width] [batch] [size] [steps]   (needs torch in .cache/py: python3 -m venv .cache/py && .cache/py/bin/pip install torch)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.cache/py/bin/python}
t=$(cd "$here" && node --import tsx bench/torch_step.ts "$@" 2>/dev/null | tail -1)
p=$("$py" "$here/bench/torch_step.py" "$@" | tail -1)
echo "$t"; echo "$p"
node -e "const a=JSON.parse(process.argv[1]),b=JSON.parse(process.argv[2]);console.log('tagseg/torch median step time ratio:',(a.median_ms/b.median_ms).toFixed(2))" "$t" "$p"
