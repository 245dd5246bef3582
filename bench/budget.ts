// Time budget per stage: TensorFlow kernels vs reading tensors back vs other main-thread work vs idle, cores kept busy, and the share of the machine's conv peak reached.
/*
 * (not a test)
 *   npm run bench -- budget --ws DIR [--stages cam_train,cam,...] [--seconds 120] [--out DIR]
 * Runs `tagseg run <stage>` in the workspace DIR (one whose upstream outputs exist, e.g. the
 * one bench/pipeline_msrc.sh leaves) for each stage, under bench/budget_preload.mjs, which times
 * every TensorFlow kernel and read-back and counts the conv / matmul FLOPs (see that file). A
 * stage longer than --seconds (default 120; 0 = whole stages) is cut there: the window's shares
 * stand for the stage when its work is the same per image or per step (a cut stage keeps its
 * previous outputs). Each finished stage's record is kept in --out (default DIR/budget), so a
 * stopped run continues where it stopped. The conv peak is `tagseg doctor`'s probe, measured here
 * before the stages.
 * Columns: wall s; cores = CPU s / wall s (every thread); then the main thread's wall time split
 * into TF kernels, read-back, other (JS, Arrow, PNG, sharp calls, GC) and idle (awaiting I/O,
 * CRF workers, decoders), in % of wall; GFLOP of conv/matmul kernels; their GFLOP/s inside
 * those kernels and over the wall time, and the latter in % of the probe.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const argv = process.argv.slice(2);
const opt = (name: string, dflt?: string): string | undefined => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : dflt;
};
const ws = opt('--ws');
if (!ws || !fs.existsSync(path.join(ws, 'dvc.yaml'))) {
  console.error('usage: npm run bench -- budget --ws <workspace with dvc.yaml and its upstream outputs> [--stages a,b] [--seconds 120] [--out dir]');
  process.exit(2);
}
const seconds = Number(opt('--seconds', '120'));
const out = path.resolve(opt('--out', path.join(ws, 'budget'))!);
const { loadPipeline } = await import('../cli/dag.js');
// Topological order, as repro runs them.
const all = (await loadPipeline(path.resolve(ws), { validate: false })).dag.stages.map((st) => st.name);
const stages = (opt('--stages') ?? all.filter((s) => s !== 'synth').join(',')).split(',');
fs.mkdirSync(out, { recursive: true });

interface Budget {
  wallS: number;
  cpuS: number;
  elu: { activeS: number; idleS: number };
  kernelS: number;
  readS: number;
  flops: Record<string, { gflop: number; s: number }>;
  byKernel: Record<string, { calls: number; s: number }>;
  cut: boolean;
}

/** The conv2d peak of this machine (tagseg doctor's probe), kept with the records. */
async function peak(): Promise<number> {
  const file = path.join(out, 'probe.json');
  if (fs.existsSync(file)) return (JSON.parse(fs.readFileSync(file, 'utf8')) as { conv2dGflops: number }).conv2dGflops;
  const { initBackend } = await import('../pipeline/backend.js');
  const { throughputProbe } = await import('../cli/doctor.js');
  await initBackend();
  const p = throughputProbe(5);
  fs.writeFileSync(file, JSON.stringify(p));
  return p.conv2dGflops;
}

/** The stage's record: kept from an earlier run, or measured now (null when the stage failed). */
function runStage(stage: string): Budget | null {
  const file = path.join(out, `${stage}.json`);
  if (!fs.existsSync(file) && !measure(stage, file)) return null;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as Budget;
}

/** Run `tagseg run <stage>` under the preload; its record lands in `file`. */
function measure(stage: string, file: string): boolean {
  const tmp = `${file}.part`;
  fs.rmSync(tmp, { force: true });
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import ${path.join(here, 'budget_preload.mjs')}`.trim(),
    TAGSEG_BUDGET_FILE: tmp,
    TAGSEG_BUDGET_SECONDS: String(seconds),
    TF_CPP_MIN_LOG_LEVEL: '2',
  };
  delete env.TAGSEG_BUDGET_PID;
  const r = spawnSync(process.execPath, ['bin/tagseg.js', '-q', 'run', stage], { cwd: ws, env, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0 || !fs.existsSync(tmp)) {
    console.log(`${stage}: failed (status ${r.status})\n${(r.stderr ?? '').slice(-1500)}`);
    return false;
  }
  fs.renameSync(tmp, file);
  return true;
}

const pct = (x: number, of: number) => `${((100 * x) / of).toFixed(0)}%`.padStart(6);
const probe = await peak();
console.log(`time budget of ${ws}; ${os.cpus().length} cores, conv2d probe ${probe} GFLOP/s, window ${seconds || 'whole stage'} s, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log('stage            wall s  cores  kernels  read-back  other   idle   GFLOP  GFLOP/s in kernels  GFLOP/s over wall  of probe  top kernels');
for (const stage of stages) {
  const b = runStage(stage);
  if (!b) continue;
  const other = Math.max(0, b.elu.activeS - b.kernelS - b.readS);
  const gflop = Object.values(b.flops).reduce((s, f) => s + f.gflop, 0);
  const flopKernelS = Object.values(b.flops).reduce((s, f) => s + f.s, 0);
  const top = Object.entries(b.byKernel).slice(0, 3).map(([k, v]) => `${k} ${((100 * v.s) / b.wallS).toFixed(0)}%`).join(', ');
  console.log(
    [
      `${stage}${b.cut ? '*' : ''}`.padEnd(15),
      b.wallS.toFixed(1).padStart(7),
      (b.cpuS / b.wallS).toFixed(2).padStart(6),
      pct(b.kernelS, b.wallS).padStart(8),
      pct(b.readS, b.wallS).padStart(10),
      pct(other, b.wallS),
      pct(b.elu.idleS, b.wallS),
      gflop.toFixed(0).padStart(7),
      (flopKernelS > 0 ? gflop / flopKernelS : 0).toFixed(1).padStart(19),
      (gflop / b.wallS).toFixed(1).padStart(18),
      pct(gflop / b.wallS, probe).padStart(9),
      ` ${top}`,
    ].join(' '),
  );
}
console.log('* cut after the window; shares are of the window. kernels + read-back + other + idle = 100% of wall (the main thread).');
