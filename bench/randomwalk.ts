// Measures the sparse random walk (ops/randomwalk.ts) per image: wall time and peak memory (RSS, tf.memory bytes).
// Random walk per image: time + peak RSS / tensor bytes, C=3, beta 8, 256 steps, stride-4 grids of 320x240..1000x750, radius 5 and 10.
// Before / after in one run: 256 steps with the previous step kernel (dx innermost) vs the Chebyshev default (wasm engine; and on the tf engine), and their max difference.
/*
 * (not a test)
 *   npm run bench -- randomwalk [steps=256] [radii=5,10] [grids=80x60,160x120,250x188]
 * Each (grid, radius) runs in its own child process so that its peak RSS (getrusage maxRSS) is its
 * own. Affinities are random in [0.5, 1], in the 'full' layout [K, h, w] the stage uses for
 * inference; the map is C = 3 random channels. Reported per configuration:
 *   build   buildTransition (A^beta, degrees, normalised weights), ms
 *   base    `steps` steps one after the other with the step kernel before issue 25's work (weights
 *           [h, 1, W, 2 rx + 1], dx innermost; `baseStep` below), s: the baseline of issue 25 item 5
 *   steps   `steps` propagation steps one after the other with today's step kernel, s
 *   walk    the default (Chebyshev) propagation of the same map, s, and ms per step of the walk
 *   tf      the same walk on the TensorFlow engine (setRandomWalkEngine('tf'), the default until the
 *           wasm engine), s, and tf / walk
 *   ratio   base / walk and steps / walk, all timed in the same process back to back: the median of
 *           3 rounds' ratios (each round runs base, steps, walk once), with their range
 *   base s, steps s, walk s: the best of the 3 rounds
 *   diff    max |walk - base| and |steps - base| over the map (the map is in [0, 1])
 *   T       tensor bytes of the transition (O(N K))
 *   peak    tf.profile peakBytes of build and of one step (all live tensor bytes, T included)
 *   rss     RSS after backend init, and the process's peak RSS
 * The dev machine has 2 cores shared with other jobs: read times with the load average printed.
 */
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { type Transition, buildTransition, disposeTransition, neighbourOffsets, propagate, setRandomWalkEngine } from '../ops/randomwalk.js';
import { initBackend } from '../pipeline/backend.js';

const MB = 1024 * 1024;
const self = fileURLToPath(import.meta.url);

interface Result {
  h: number;
  w: number;
  radius: number;
  K: number;
  steps: number;
  buildMs: number;
  walkS: number;
  stepsS: number;
  baseS: number;
  tfS: number;
  baseRatios: number[];
  stepsRatios: number[];
  tfRatios: number[];
  diff: number;
  tBytes: number;
  peakBuild: number;
  peakStep: number;
  rssBase: number;
  rssPeak: number;
  leak: number;
}

/**
 * x [C, h, w] -> x T^steps with the step kernel as it was before issue 25's work: weights
 * [h, 1, W, 2 rx + 1] (dx innermost; transposed here from today's layout), unfold stacked on the
 * last axis and summed there, `steps` applications one after the other.
 */
function baseWalk(x: tf.Tensor3D, T: Transition, steps: number): tf.Tensor3D {
  const { ry, rx, paddedWidth: W, height: h, width: w } = T;
  const wts = T.groups.map((g) => tf.transpose(g.weights, [0, 1, 3, 2]));
  const C = x.shape[0];
  const step = (v: tf.Tensor3D) =>
    tf.tidy(() => {
      const xp = tf.pad(v, [[ry, ry], [0, 0], [rx, rx]]);
      const cols: tf.Tensor3D[] = [];
      for (let dx = -rx; dx <= rx; dx++) cols.push(tf.slice(xp, [0, 0, rx + dx], [h + 2 * ry, C, W]));
      const unfold = tf.stack(cols, 3) as tf.Tensor4D;
      const terms = T.groups.map((g, i) => tf.tidy(() => tf.sum(tf.mul(tf.slice(unfold, [ry + g.dy, 0, 0, 0], [h, C, W, 2 * rx + 1]), wts[i]), 3)));
      return (terms.length === 1 ? terms[0] : tf.addN(terms)) as tf.Tensor3D;
    });
  let cur = tf.tidy(() => tf.pad(tf.transpose(x, [1, 0, 2]), [[0, 0], [0, 0], [0, W - w]]) as tf.Tensor3D);
  for (let s = 0; s < steps; s++) {
    const next = step(cur);
    cur.dispose();
    cur = next;
  }
  const out = tf.tidy(() => tf.transpose(tf.slice(cur, [0, 0, 0], [h, C, w]), [1, 0, 2]) as tf.Tensor3D);
  tf.dispose([cur, ...wts]);
  return out;
}

async function one(h: number, w: number, radius: number, steps: number): Promise<Result> {
  await initBackend();
  const rssBase = process.memoryUsage().rss;
  const offsets = neighbourOffsets(radius);
  const K = offsets.length;
  const aff = tf.randomUniform([K, h, w], 0.5, 1, 'float32', 1) as tf.Tensor3D;
  const x = tf.randomUniform([3, h, w], 0, 1, 'float32', 2) as tf.Tensor3D;
  // warm-up on a small grid (kernel setup), not counted
  {
    const a = tf.randomUniform([K, 24, 24], 0.5, 1) as tf.Tensor3D;
    const T = buildTransition(a, offsets, radius, 24, 24, 8);
    tf.dispose([a, propagate(tf.ones([3, 24, 24]) as tf.Tensor3D, T, 2)]);
    disposeTransition(T);
  }
  const n0 = tf.memory().numTensors;
  let t = performance.now();
  const T = buildTransition(aff, offsets, radius, h, w, 8);
  T.groups[T.groups.length - 1].weights.dataSync();
  const buildMs = performance.now() - t;
  const tBytes = T.groups.reduce((s, g) => s + g.weights.size * 4, 0);
  const peakStep = (await tf.profile(() => void propagate(x, T, 1).dispose())).peakBytes;
  // alternate the three paths, 3 rounds: the machine is shared, the per-round ratio is what to read
  let walkS = Infinity;
  let stepsS = Infinity;
  let baseS = Infinity;
  let tfS = Infinity;
  let diff = 0;
  const baseRatios: number[] = [];
  const stepsRatios: number[] = [];
  const tfRatios: number[] = [];
  for (let round = 0; round < 3; round++) {
    t = performance.now();
    const b = baseWalk(x, T, steps);
    const bd = b.dataSync();
    const bS = (performance.now() - t) / 1000;
    t = performance.now();
    const z = propagate(x, T, steps, { method: 'steps' });
    const zd = z.dataSync();
    const sS = (performance.now() - t) / 1000;
    t = performance.now();
    const y = propagate(x, T, steps);
    const yd = y.dataSync();
    const wS = (performance.now() - t) / 1000;
    setRandomWalkEngine('tf');
    t = performance.now();
    const v = propagate(x, T, steps);
    const vd = v.dataSync();
    const tS = (performance.now() - t) / 1000;
    setRandomWalkEngine('wasm');
    [baseS, stepsS, walkS, tfS] = [Math.min(baseS, bS), Math.min(stepsS, sS), Math.min(walkS, wS), Math.min(tfS, tS)];
    baseRatios.push(bS / wS);
    stepsRatios.push(sS / wS);
    tfRatios.push(tS / wS);
    for (let i = 0; i < yd.length; i++) diff = Math.max(diff, Math.abs(yd[i] - bd[i]), Math.abs(zd[i] - bd[i]), Math.abs(vd[i] - bd[i]));
    tf.dispose([y, z, b, v]);
  }
  disposeTransition(T);
  const leak = tf.memory().numTensors - n0;
  // peak tensor bytes while building T (a second build, profiled; the timing above is unprofiled)
  const prof = await tf.profile(() => disposeTransition(buildTransition(aff, offsets, radius, h, w, 8)));
  tf.dispose([aff, x]);
  return {
    h, w, radius, K, steps, buildMs, walkS, stepsS, baseS, tfS, baseRatios, stepsRatios, tfRatios, diff, tBytes,
    peakBuild: prof.peakBytes, peakStep, rssBase, rssPeak: process.resourceUsage().maxRSS * 1024, leak,
  };
}

/** Median of the per-round ratios and their range, e.g. "3.46x (2.6-5.4)". */
function ratio(xs: number[]): string {
  const s = [...xs].sort((a, b) => a - b);
  return `${s[Math.floor(s.length / 2)].toFixed(2)}x (${s[0].toFixed(1)}-${s[s.length - 1].toFixed(1)})`;
}

const argv = process.argv.slice(2);
if (argv[0] === '--one') {
  const [h, w, r, steps] = argv.slice(1).map(Number);
  console.log(JSON.stringify(await one(h, w, r, steps)));
} else {
  const steps = Number(argv[0] ?? 256);
  const radii = (argv[1] ?? '5,10').split(',').map(Number);
  const grids = (argv[2] ?? '80x60,160x120,250x188').split(',').map((g) => g.split('x').map(Number) as [number, number]);
  console.log(`random walk, C = 3, beta 8, ${steps} steps; ${os.cpus().length} cores, load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
  console.log('grid (w x h)   image       r    K   build ms   base s  steps s   walk s     tf s   ms/step  base/walk (range)  steps/walk (range)     tf/walk (range)      diff   T MB   peak build MB   peak step MB   RSS base MB   RSS peak MB');
  for (const radius of radii) {
    for (const [gw, gh] of grids) {
      const p = spawnSync(process.execPath, ['--import', 'tsx', self, '--one', String(gh), String(gw), String(radius), String(steps)], {
        encoding: 'utf8',
        env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '2' },
        maxBuffer: 16 * MB,
      });
      const line = p.stdout.trim().split('\n').pop() ?? '';
      if (p.status !== 0 || !line.startsWith('{')) {
        console.log(`${gw}x${gh} r ${radius}: failed (status ${p.status})\n${p.stderr.slice(-2000)}`);
        continue;
      }
      const r = JSON.parse(line) as Result;
      console.log(
        [
          `${gw}x${gh}`.padEnd(14),
          `${gw * 4}x${gh * 4}`.padEnd(10),
          String(radius).padStart(3),
          String(r.K).padStart(4),
          r.buildMs.toFixed(0).padStart(10),
          r.baseS.toFixed(2).padStart(8),
          r.stepsS.toFixed(2).padStart(8),
          r.walkS.toFixed(2).padStart(8),
          r.tfS.toFixed(2).padStart(8),
          ((r.walkS * 1000) / r.steps).toFixed(1).padStart(9),
          ratio(r.baseRatios).padStart(20),
          ratio(r.stepsRatios).padStart(20),
          ratio(r.tfRatios).padStart(20),
          r.diff.toExponential(1).padStart(9),
          (r.tBytes / MB).toFixed(1).padStart(6),
          (r.peakBuild / MB).toFixed(1).padStart(15),
          (r.peakStep / MB).toFixed(1).padStart(14),
          (r.rssBase / MB).toFixed(0).padStart(13),
          (r.rssPeak / MB).toFixed(0).padStart(13),
        ].join(' ') + (r.leak ? `   LEAK ${r.leak} tensors` : ''),
      );
    }
  }
}
