#!/usr/bin/env bash
# `npm run bench -- <name> [args]` runs bench/<name>.sh or bench/<name>.ts (tsx). Never part of npm test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# The pretrained MobileNet (cam.pretrained) from the shared models folder, never downloaded.
export TAGSEG_MODELS_DIR=${TAGSEG_MODELS_DIR:-$here/../../shared/models}
name=${1:-}
if [ -z "$name" ]; then
  echo "usage: npm run bench -- <name> [args]"; echo "benchmarks:"
  for f in "$here"/*.sh "$here"/*.ts; do [ -e "$f" ] || continue; b=$(basename "$f"); case "$b" in run.sh) continue ;; esac; echo "  ${b%.*}: $(grep -v '^#!' "$f" | sed 's/^[#/* ]*//' | grep -m1 '[A-Za-z]')"; done
  exit 2
fi
shift
case "$name" in run) echo "'$name' is not a benchmark"; exit 2 ;; esac
if [ -f "$here/$name.sh" ]; then exec bash "$here/$name.sh" "$@"; fi
if [ -f "$here/$name.ts" ]; then exec node --import tsx "$here/$name.ts" "$@"; fi
echo "no benchmark named '$name' in bench/"; exit 2
