/** Benchmark of AffinityNet's pair affinities (nn/affinity_head.ts `affinities`; not a test):
 * the WebAssembly engine (ops/affinity_wasm.ts, the default) against the TensorFlow one, back to back.
 *   npm run bench -- pairs [reps] [radius] [dim]
 *
 * Two shapes of the MSRC-v2 recipe (radius 5: 34 offsets; D = 448, PSA's embedding):
 * - inference, the random walk's 'full' layout of one 320 x 214 photo's stride-4 grid [1, 54, 80, D];
 * - training, forward + backward of a batch of 128 px crops, 'region' layout [8, 32, 32, D].
 * Each rep runs tf then wasm on the same input; printed: the median time of each, the median of
 * the per-rep ratios (tf / wasm) and the largest difference of values (and, training, gradients).
 */
import * as tf from '@tensorflow/tfjs';
import { cpus, loadavg } from 'node:os';
import { affinities, setAffinityEngine, type AffinityEngine } from '../nn/affinity_head.js';
import { initBackend } from '../pipeline/backend.js';
import { neighbourOffsets } from '../ops/randomwalk.js';

const reps = Number(process.argv[2] ?? 7);
const radius = Number(process.argv[3] ?? 5);
const dim = Number(process.argv[4] ?? 448);
await initBackend();
const offsets = neighbourOffsets(radius);
const median = (v: number[]) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];

/** ms of one call of `run` on `engine`, and what it returned (flattened). */
function timed(engine: AffinityEngine, run: () => tf.Tensor[]): { ms: number; out: Float32Array[] } {
  setAffinityEngine(engine);
  const t0 = performance.now();
  const ts = run();
  const out = ts.map((t) => t.dataSync() as Float32Array);
  const ms = performance.now() - t0;
  tf.dispose(ts);
  return { ms, out };
}

function compare(label: string, run: () => tf.Tensor[]): void {
  timed('tf', run);
  timed('wasm', run); // warm-up: kernels compiled, memory grown
  const t: number[] = [];
  const w: number[] = [];
  let diff = 0;
  for (let r = 0; r < reps; r++) {
    const a = timed('tf', run);
    const b = timed('wasm', run);
    t.push(a.ms);
    w.push(b.ms);
    a.out.forEach((x, i) => x.forEach((v, j) => (diff = Math.max(diff, Math.abs(v - b.out[i][j])))));
  }
  const ratios = t.map((x, i) => x / w[i]);
  console.log(`${label.padEnd(44)} tf ${median(t).toFixed(1).padStart(7)} ms   wasm ${median(w).toFixed(1).padStart(6)} ms   tf / wasm ${median(ratios).toFixed(2).padStart(5)}x   max |diff| ${diff.toExponential(1)}`);
}

console.log(`pair affinities, radius ${radius} (${offsets.length} offsets), D = ${dim}, ${reps} reps; ${cpus().length} cores, load ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
const f = tf.randomNormal([1, 54, 80, dim], 0, 1, 'float32', 1) as tf.Tensor4D;
compare('inference, full layout [1, 54, 80, D]', () => [affinities(f, offsets, radius, 'full')]);
const ft = tf.randomNormal([8, 32, 32, dim], 0, 1, 'float32', 2) as tf.Tensor4D;
const rf = radius - 1;
const wts = tf.randomUniform([8, offsets.length, 32 - rf, 32 - 2 * rf], -1, 1, 'float32', 3);
compare('training, forward + backward [8, 32, 32, D]', () => {
  const { value, grad } = tf.valueAndGrad((x: tf.Tensor) => tf.sum(tf.mul(affinities(x as tf.Tensor4D, offsets, radius), wts)) as tf.Scalar)(ft);
  return [value, grad];
});
tf.dispose([f, ft, wts]);
