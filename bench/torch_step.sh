#!/usr/bin/env bash
# One CAM training step: PyTorch CPU vs tagseg (tfjs native), same net, shapes and thread count,
# interleaved in one run; prints both medians and the tagseg/torch ratio (see bench/torch_step.ts).
#   bash bench/torch_step.sh [width] [batch] [size] [rounds] [steps-per-round]
# Needs torch in .cache/py (python3 -m venv .cache/py && .cache/py/bin/pip install torch), or PYTHON=...
# Per-kernel profile of the tagseg step: node --import tsx bench/torch_step.profile.ts
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-2}
exec node --import tsx bench/torch_step.ts "$@"
