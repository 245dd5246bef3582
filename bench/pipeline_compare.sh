#!/usr/bin/env bash
# The MSRC-v2 pipeline of another checkout and of this one, back to back on this machine, and their ratio stage by stage.
#   BASE=/path/to/other/checkout npm run bench -- pipeline_compare [extra --set args...]
# Runs BASE's bench/pipeline_msrc.sh, then this checkout's, each from scratch in its own workspace
# (OUT/base, OUT/this; OUT defaults to /tmp/tagseg-pipeline-compare), each log in OUT/<side>.log.
# A side whose log ends with its total is kept and not run again, so the comparison can be
# stopped and continued (delete OUT to start over). Then prints the wall time of each stage on both
# sides and the ratio this / base. A stage this side has and BASE lacks counts with the BASE stage
# its name starts with (cam_train with cam, where BASE trains and maps in one stage; audit_report
# with audit). Machines differ by up to 2x: only ratios from one such run compare two commits.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
base=${BASE:?set BASE to the checkout to compare with (a git worktree of another commit, with node_modules)}
base=$(cd "$base" && pwd)
out=${OUT:-/tmp/tagseg-pipeline-compare}
mkdir -p "$out"
for side in base this; do
  dir=$([ "$side" = base ] && echo "$base" || echo "$here")
  if grep -q '^total ' "$out/$side.log" 2>/dev/null; then echo "== $side: kept from an earlier run ($out/$side.log)"; continue; fi
  echo "== $side: $(git -C "$dir" log --oneline -1 | cut -c1-60), started $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
  WS="$out/$side" bash "$dir/bench/pipeline_msrc.sh" "$@" > "$out/$side.log.part" 2>&1
  mv "$out/$side.log.part" "$out/$side.log"
done
node - "$out/base.log" "$out/this.log" <<'EOF'
const fs = require('node:fs');
/** The stage table pipeline_msrc.sh prints at its end: stage -> [wall s, peak RSS MiB]. */
function table(file) {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const at = lines.findIndex((l) => /^stage\s+wall s/.test(l));
  const rows = new Map();
  for (const l of lines.slice(at + 1)) {
    const [stage, wall, rss] = l.trim().split(/\s+/);
    if (stage === 'total') return { rows, total: Number(wall) };
    rows.set(stage, [Number(wall), Number(rss)]);
  }
  throw new Error(`${file}: no total line`);
}
const [b, t] = process.argv.slice(2).map(table);
const groups = new Map([...b.rows.keys()].map((s) => [s, []]));
for (const s of t.rows.keys()) {
  const owner = b.rows.has(s) ? s : [...b.rows.keys()].find((k) => s.startsWith(k));
  if (!owner) throw new Error(`stage ${s} has no counterpart in BASE`);
  groups.get(owner).push(s);
}
console.log(`${'stage'.padEnd(38)} ${'base s'.padStart(8)} ${'this s'.padStart(8)} ${'this / base'.padStart(12)} ${'peak RSS MiB base / this'.padStart(26)}`);
for (const [s, parts] of groups) {
  const wall = parts.reduce((a, p) => a + t.rows.get(p)[0], 0);
  const rss = Math.max(0, ...parts.map((p) => t.rows.get(p)[1]));
  const [bw, br] = b.rows.get(s);
  console.log(`${(parts.length > 1 ? `${s} (${parts.join(' + ')})` : s).padEnd(38)} ${bw.toFixed(1).padStart(8)} ${wall.toFixed(1).padStart(8)} ${(wall / bw).toFixed(2).padStart(12)} ${`${br} / ${rss}`.padStart(26)}`);
}
console.log(`${'total'.padEnd(38)} ${b.total.toFixed(1).padStart(8)} ${t.total.toFixed(1).padStart(8)} ${(t.total / b.total).toFixed(2).padStart(12)}`);
EOF
