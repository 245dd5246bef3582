/**
 * One CAM training step in tagseg (tfjs native), the same network and shapes as bench/torch_step.py.
 *   node --import tsx bench/torch_step.ts [width] [batch] [size] [steps]
 * Prints the median step time in ms as JSON. bench/torch_step.sh runs both and prints the ratio.
 */
import * as tf from '@tensorflow/tfjs';
import { CamHead } from '../nn/heads.js';
import { multilabelSoftMarginLoss } from '../nn/losses.js';
import { AdamW } from '../nn/optim.js';
import { ResNet } from '../nn/resnet.js';
import { trainStep } from '../nn/train.js';
import { initBackend } from '../pipeline/backend.js';

const [width, batch, size, steps] = [16, 16, 112, 10].map((d, i) => Number(process.argv[2 + i] ?? d));
const info = await initBackend();
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
for (let i = 0; i < 2; i++) step();
const times: number[] = [];
for (let i = 0; i < steps; i++) {
  const t = performance.now();
  step();
  times.push(performance.now() - t);
}
times.sort((a, b) => a - b);
console.log(JSON.stringify({ framework: 'tagseg', backend: info.name, width, batch, size, median_ms: times[Math.floor(times.length / 2)], min_ms: times[0] }));
