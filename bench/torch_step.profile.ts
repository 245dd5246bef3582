/**
 * Per-kernel profile of one tagseg CAM training step (the bench/torch_step.ts network and shapes).
 *   node --import tsx bench/torch_step.profile.ts [width] [batch] [size] [repeats]
 * Prints the top kernels by total time (tf.profile; tfjs-node kernels run synchronously, so each
 * kernel's time is its wall time, the minimum over the repeats) and the kernel calls per step.
 */
import * as tf from '@tensorflow/tfjs';
import { CamHead } from '../nn/heads.js';
import { multilabelSoftMarginLoss } from '../nn/losses.js';
import { AdamW } from '../nn/optim.js';
import { ResNet } from '../nn/resnet.js';
import { trainStep } from '../nn/train.js';
import { initBackend } from '../pipeline/backend.js';

const [width, batch, size] = [16, 16, 112].map((d, i) => Number(process.argv[2 + i] ?? d));
await initBackend();
const net = new ResNet({ width, depth: [1, 1, 1, 1], outputStride: 8 });
const head = new CamHead(net.channels[3], 4);
const opt = new AdamW(
  [
    { name: 'backbone', params: net.params.namedTrainable('b/') },
    { name: 'head', params: head.params.namedTrainable('h/'), lrMult: 10 },
  ],
  { lr: 0.003, weightDecay: 1e-4 },
);
const x = tf.randomUniform([batch, size, size, 3]) as tf.Tensor4D;
const y = tf.cast(tf.greater(tf.randomUniform([batch, 4]), 0.5), 'float32') as tf.Tensor2D;
const step = () => tf.tidy(() => { trainStep(opt, (u) => multilabelSoftMarginLoss(head.classifierLogits(net.forward(x, true, u).last), y)); });
for (let i = 0; i < 3; i++) step();

// The machine is shared: per kernel call (same sequence every step) keep the minimum over the
// repeats, which is what it costs when nothing else runs.
const reps = Number(process.argv[5] ?? 5);
const best: { key: string; ms: number }[] = [];
const walls: number[] = [];
for (let r = 0; r < reps; r++) {
  const t0 = performance.now();
  const info = await tf.profile(step);
  walls.push(performance.now() - t0);
  for (let i = 0; i < info.kernels.length; i++) {
    const k = info.kernels[i];
    const ms = await k.kernelTimeMs;
    const t = typeof ms === 'number' ? ms : 0;
    const key = `${k.name} ${k.inputShapes.map((sh) => `[${sh ?? ''}]`).join('')}`;
    if (r === 0) best.push({ key, ms: t });
    else if (best[i]?.key === key) best[i].ms = Math.min(best[i].ms, t);
  }
}
const group = (keyOf: (key: string) => string) => {
  const m = new Map<string, { ms: number; n: number }>();
  for (const b of best) {
    const e = m.get(keyOf(b.key)) ?? { ms: 0, n: 0 };
    e.ms += b.ms;
    e.n++;
    m.set(keyOf(b.key), e);
  }
  return [...m].sort((a, b) => b[1].ms - a[1].ms);
};
const total = best.reduce((a, b) => a + b.ms, 0);
walls.sort((a, b) => a - b);
console.log(`kernel calls/step ${best.length}, sum of per-call min kernel times ${total.toFixed(1)} ms, profiled wall/step min ${walls[0].toFixed(1)} ms`);
console.log('("unnamed" = a tf.customGrad node: its time includes the raw TF kernels it runs)');
console.log('-- by kernel --');
for (const [k, v] of group((key) => key.split(' ')[0]).slice(0, 15)) console.log(`${v.ms.toFixed(1).padStart(7)} ms ${String(v.n).padStart(4)}x  ${k}`);
console.log('-- by kernel + input shapes --');
for (const [k, v] of group((key) => key).slice(0, 25)) console.log(`${v.ms.toFixed(1).padStart(7)} ms ${String(v.n).padStart(4)}x  ${k}`);
