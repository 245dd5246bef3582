/**
 * Scale benchmark (issue 26): every stage on synthetic sets of growing size, wall time, seconds per image (per
 * image-epoch for the training part of cam/affinity/contrast/segment) and peak RSS per stage.
 *   npm run bench -- scale [--sizes 1000,5000,20000] [--stages synth,ingest,...] [--out runs/bench-scale] [--epochs 1] [--px 128] [--set key=value ...]
 * `--set` (repeatable) adds a params override to a new workspace, e.g. `--stages synth,ingest,cam,refine,segment
 * --set refine.source=cam` measures segment on pseudo-masks refined from the CAMs, without affinity and contrast.
 * Each (size, stage) run leaves <out>/<size>/<stage>.json and is skipped next time, so the benchmark can be stopped
 * and continued (the workspace <out>/<size>/ws keeps the finished stages' outputs). <out>/table.md sums it up.
 * Peak RSS is the child's max resident set (GNU time); times are wall clock, so noisy on a shared machine.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeOverrides } from '../stages/params.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const TRAINED = new Set(['cam_train', 'affinity_train', 'contrast_train', 'segment']);

interface Args { sizes: number[]; stages: string[]; out: string; epochs: number; px: number; sets: string[] }

function parseArgs(argv: string[]): Args {
  const get = (flag: string, dflt: string) => {
    const i = argv.indexOf(flag);
    return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1] : dflt;
  };
  const a: Args = {
    sizes: get('--sizes', '1000,5000,20000').split(',').map(Number),
    stages: get('--stages', 'synth,ingest,cam_train,cam,affinity_train,affinity,contrast_train,contrast,refine,segment,audit,audit_report').split(','),
    out: path.resolve(get('--out', path.join(ROOT, 'runs', 'bench-scale'))),
    epochs: Number(get('--epochs', '1')),
    px: Number(get('--px', '128')),
    sets: argv.flatMap((v, i) => (argv[i - 1] === '--set' ? [v] : [])),
  };
  if (a.sizes.some((n) => !(Number.isInteger(n) && n > 0))) throw new Error(`--sizes: positive integers, got ${get('--sizes', '')}`);
  if (!(Number.isInteger(a.epochs) && a.epochs > 0) || !(Number.isInteger(a.px) && a.px >= 32)) throw new Error('--epochs >= 1, --px >= 32');
  return a;
}

/** Runs `cmd` under GNU time; returns wall seconds, peak RSS (MiB) and stdout. */
function timed(cmd: string[], cwd: string): Promise<{ wall: number; rssMiB: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('/usr/bin/time', ['-f', 'TAGSEG_TIME %e %M', ...cmd], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
    child.on('error', reject);
    child.on('close', (code) => {
      const m = /TAGSEG_TIME ([\d.]+) (\d+)/.exec(stderr);
      if (code !== 0 || !m) return reject(new Error(`${cmd.join(' ')} exited ${code}:\n${stderr.slice(-3000)}`));
      resolve({ wall: Number(m[1]), rssMiB: Math.round(Number(m[2]) / 1024), stdout });
    });
  });
}

async function workspace(dir: string, a: Args, n: number): Promise<string> {
  const ws = path.join(dir, 'ws');
  if (!existsSync(path.join(ws, 'params.yaml'))) {
    await timed(['node', path.join(ROOT, 'bin/tagseg.js'), 'workspace', ws], ROOT);
    const e = String(a.epochs);
    await writeOverrides(path.join(ws, 'params.yaml'), [
      `synth.images=${n}`, `synth.size=${a.px}`, `ingest.size=${a.px}`,
      `cam.epochs=${e}`, `affinity.epochs=${e}`, `contrast.epochs=${e}`, `segment.epochs=${e}`, ...a.sets,
    ]);
  }
  return ws;
}

interface StageRun { size: number; stage: string; wall: number; perImage: number; trainPerImageEpoch: number | null; peakRssMiB: number }

/** Training seconds per image-epoch from the stage's `run --json` result (LoopResult + trainImages). */
function trainRate(stdout: string, stage: string): number | null {
  try {
    const r = (JSON.parse(stdout) as Record<string, { training?: { seconds: number; epochs: number; resumedFrom: number }; trainImages?: number }>)[stage];
    const t = r?.training;
    if (!t || !r.trainImages) return null;
    return t.seconds / (r.trainImages * Math.max(1, t.epochs - t.resumedFrom));
  } catch {
    return null;
  }
}

async function runOne(a: Args, n: number, stage: string): Promise<StageRun> {
  const dir = path.join(a.out, String(n));
  const done = path.join(dir, `${stage}.json`);
  if (existsSync(done)) return JSON.parse(await fs.readFile(done, 'utf8')) as StageRun;
  const ws = await workspace(dir, a, n);
  const cli = ['node', 'bin/tagseg.js', '-q'];
  const cmd = stage === 'synth' ? [...cli, 'synth', '--from-params'] : [...cli, 'run', stage, '--json'];
  process.stderr.write(`scale: ${n} images, ${stage} ...\n`);
  const t = await timed(cmd, ws);
  const run: StageRun = {
    size: n, stage, wall: t.wall, perImage: t.wall / n,
    trainPerImageEpoch: TRAINED.has(stage) ? trainRate(t.stdout, stage) : null, peakRssMiB: t.rssMiB,
  };
  await fs.writeFile(done, `${JSON.stringify(run, null, 1)}\n`);
  return run;
}

function table(runs: StageRun[]): string {
  const f = (v: number | null, d: number) => (v === null ? '-' : v.toFixed(d));
  const lines = ['| images | stage | wall s | s/image | train s/image-epoch | peak RSS MiB |', '|---:|---|---:|---:|---:|---:|'];
  for (const r of runs) lines.push(`| ${r.size} | ${r.stage} | ${f(r.wall, 1)} | ${f(r.perImage, 4)} | ${f(r.trainPerImageEpoch, 4)} | ${r.peakRssMiB} |`);
  return `${lines.join('\n')}\n${ratios(runs)}`;
}

/** Issue 26's targets per stage, largest size over smallest: peak RSS (<= 1.3x) and seconds per image, per image-epoch for training (<= 1.2x). */
function ratios(runs: StageRun[]): string {
  const sizes = [...new Set(runs.map((r) => r.size))].sort((x, y) => x - y);
  if (sizes.length < 2) return '';
  const lo = sizes[0];
  const hi = sizes[sizes.length - 1];
  const lines = ['', `| stage | peak RSS ${hi} / ${lo} | s per image (train: per image-epoch) ${hi} / ${lo} |`, '|---|---:|---:|'];
  for (const small of runs.filter((r) => r.size === lo)) {
    const big = runs.find((r) => r.size === hi && r.stage === small.stage);
    if (!big) continue;
    const rate = (r: StageRun) => r.trainPerImageEpoch ?? r.perImage;
    lines.push(`| ${small.stage} | ${(big.peakRssMiB / small.peakRssMiB).toFixed(2)}x | ${(rate(big) / rate(small)).toFixed(2)}x |`);
  }
  return `${lines.join('\n')}\n`;
}

async function main(): Promise<void> {
  const a = parseArgs(process.argv.slice(2));
  await fs.mkdir(a.out, { recursive: true });
  const runs: StageRun[] = [];
  for (const n of a.sizes) {
    for (const stage of a.stages) {
      runs.push(await runOne(a, n, stage));
      await fs.writeFile(path.join(a.out, 'table.md'), table(runs));
    }
  }
  process.stdout.write(table(runs));
}

await main();
