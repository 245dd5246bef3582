#!/usr/bin/env bash
# Import throughput and peak RSS for N synthetic images (default 5,000) at 128 px.
#   npm run bench -- ingest [N]   (or: bash bench/ingest.sh [N])
set -euo pipefail
N=${1:-5000}
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
node "$here/bin/tagseg.js" -q synth --out "$work/ds" --images "$N" --size 128 --classes 10 --val-fraction 0.2 --seed 0 >/dev/null
/usr/bin/time -f "peak RSS %M KiB, wall %e s" node "$here/bin/tagseg.js" -q import "$work/ds" --size 128 --out "$work/tables" --json > "$work/summary.json"
node -e "const r=require('$work/summary.json');console.log('images', r.images, '| images/s', r.imagesPerSecond.toFixed(1), '| peak RSS (in-process)', r.peakRssMiB, 'MiB');"
ls -la "$work/tables"
