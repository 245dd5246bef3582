/**
 * Cost per training step of the contrastive losses of the `segment` stage (not a test):
 * loss + gradient w.r.t. the embeddings (tf.variableGrads), and the pixel memory update, at
 * B = 8, 40 x 40 grid, K = 21 classes, D = 64 and 256, on synthetic blocky label maps
 * (3 classes + a 255 band per image) with noisy probabilities. The pixel memory is filled first,
 * so its cost is the steady state (memory slots x classes x 2 queues).
 *   npx tsx bench/contrastive.ts [reps=3]
 * Env: DIMS=64,256   PIXEL_MEMORY=500,5000 (slots per class; 5000 = ContrastiveSeg, needs ~6 GB at D = 256)
 *      SPML_CLUSTERS=36 SPML_SUPERPIXELS=50 (k-means centres and SLIC superpixels per image)
 */
import * as tf from '@tensorflow/tfjs';
import { performance } from 'node:perf_hooks';
import { cpus, loadavg } from 'node:os';
import { type ContrastBatch, type ContrastLoss, createContrastLoss } from '../nn/contrastive/index.js';
import { PixelContrast } from '../nn/contrastive/pixel.js';
import { SpmlContrast } from '../nn/contrastive/spml.js';
import { Rng } from '../nn/rng.js';
import { initBackend } from '../pipeline/backend.js';

const reps = Number(process.argv[2] ?? 3);
const dims = (process.env.DIMS ?? '64,256').split(',').map(Number);
const memories = (process.env.PIXEL_MEMORY ?? '500').split(',').map(Number);
const B = 8;
const H = 40;
const W = 40;
const K = 21;

const info = await initBackend();
console.log(`backend ${info.name} (${info.flavour}), ${cpus().length} cpus, load ${loadavg().map((v) => v.toFixed(1)).join(' ')}`);

function makeBatch(d: number, rng: Rng): { batch: ContrastBatch; ev: tf.Variable } {
  const labels = new Int32Array(B * H * W);
  const probs = new Float32Array(B * H * W * K);
  const pixels: Uint8Array[] = [];
  const tags: number[][] = [];
  for (let b = 0; b < B; b++) {
    const cls = [0, 1 + rng.int(0, K - 1), 1 + rng.int(0, K - 1)];
    tags.push([...new Set(cls)]);
    const rgb = new Uint8Array(H * W * 3);
    const colours = cls.map(() => [rng.int(0, 256), rng.int(0, 256), rng.int(0, 256)]);
    const cx = rng.int(10, 30);
    const cy = rng.int(10, 30);
    for (let y = 0; y < H; y++) {
      for (let x = 0; x < W; x++) {
        const p = b * H * W + y * W + x;
        const region = x < cx ? 0 : y < cy ? 1 : 2;
        labels[p] = Math.abs(x - cx) <= 1 ? 255 : cls[region];
        rgb.set(colours[region].map((c) => Math.max(0, Math.min(255, c + rng.int(-20, 21)))), 3 * (y * W + x));
        // noisy logits favouring the true class
        let z = 0;
        const l = new Float64Array(K);
        for (let k = 0; k < K; k++) {
          l[k] = rng.normal(0, 1) + (k === cls[region] ? 3 : 0);
          z += Math.exp(l[k]);
        }
        for (let k = 0; k < K; k++) probs[p * K + k] = Math.exp(l[k]) / z;
      }
    }
    pixels.push(rgb);
  }
  const ev = tf.tidy(() => {
    const e = tf.tensor4d(Float32Array.from({ length: B * H * W * d }, () => rng.normal()), [B, H, W, d]);
    return tf.variable(tf.div(e, tf.norm(e, 2, 3, true)), true);
  });
  return {
    ev,
    batch: { embeddings: ev as unknown as tf.Tensor4D, labels: tf.tensor3d(labels, [B, H, W], 'int32'), probs: tf.tensor4d(probs, [B, H, W, K]), tags, pixels },
  };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function step(loss: ContrastLoss, b: ContrastBatch, ev: tf.Variable, rng: Rng): { ms: number; value: number } {
  const t0 = performance.now();
  const value = tf.tidy(() => {
    const { value: v, grads } = tf.variableGrads(() => loss.loss(b, rng), [ev]);
    grads[ev.name].dataSync();
    return v;
  });
  const ms = performance.now() - t0;
  const out = value.dataSync()[0];
  value.dispose();
  return { ms, value: out };
}

function bench(label: string, loss: ContrastLoss, b: ContrastBatch, ev: tf.Variable): void {
  const rng = new Rng(1);
  step(loss, b, ev, rng); // warm-up
  const times: number[] = [];
  let value = 0;
  for (let r = 0; r < reps; r++) ({ ms: times[r], value } = step(loss, b, ev, rng));
  let upd = '';
  if (loss.update) {
    const ut: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      loss.update({ embeddings: b.embeddings, labels: b.labels, probs: b.probs }, rng);
      ut.push(performance.now() - t0);
    }
    upd = `, update ${median(ut).toFixed(0)} ms`;
  }
  console.log(`${label.padEnd(34)} loss+grad ${median(times).toFixed(0).padStart(6)} ms (min ${Math.min(...times).toFixed(0)})${upd}  loss ${value.toFixed(4)}  tensors ${tf.memory().numTensors}`);
}

for (const d of dims) {
  const rng = new Rng(d);
  const { batch, ev } = makeBatch(d, rng);
  for (const mem of memories) {
    const pc = createContrastLoss('pixel', { classes: K, dim: d, seed: 0, pixel: { memorySize: mem } }) as PixelContrast;
    // fill both queues (steady state): mem random unit rows per class
    for (const which of ['pixel', 'region'] as const) {
      for (let k = 0; k < K; k++) {
        const rows = tf.tidy(() => {
          const r = tf.tensor2d(Float32Array.from({ length: mem * d }, () => rng.normal()), [mem, d]);
          return tf.div(r, tf.norm(r, 2, 1, true)) as tf.Tensor2D;
        });
        pc.enqueue(which, rows, new Array<number>(mem).fill(k));
        rows.dispose();
      }
    }
    bench(`pixel D=${d} memory ${mem}x${K}x2`, pc, batch, ev);
    pc.dispose();
  }
  const nomem = createContrastLoss('pixel', { classes: K, dim: d, seed: 0, pixel: { memorySize: 0, temperature: 0.1, baseTemperature: 0.1 } });
  bench(`pixel D=${d} no memory`, nomem, batch, ev);
  const reco = createContrastLoss('reco', { classes: K, dim: d, seed: 0 });
  bench(`reco D=${d}`, reco, batch, ev);
  const spmlOver = { clusters: Number(process.env.SPML_CLUSTERS ?? 36), superpixels: Number(process.env.SPML_SUPERPIXELS ?? 50) };
  const spml = createContrastLoss('spml', { classes: K, dim: d, seed: 0, background: 0, spml: spmlOver }) as SpmlContrast;
  bench(`spml D=${d} k=${spmlOver.clusters} sp=${spmlOver.superpixels}`, spml, batch, ev);
  // its JS part: SLIC + per-image k-means (read back), no gradient
  const ts: number[] = [];
  let segs = 0;
  for (let r = 0; r < reps; r++) {
    const t0 = performance.now();
    segs = spml.segments(batch, new Rng(r)).segImage.length;
    ts.push(performance.now() - t0);
  }
  console.log(`${'  of which segments (SLIC + k-means)'.padEnd(34)} ${median(ts).toFixed(0).padStart(6)} ms, ${segs} segments`);
  tf.dispose([batch.labels, batch.probs, ev]);
}
