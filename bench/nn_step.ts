/**
 * Time per training step (forward + backward + SGD + BN update), batch 8 at 128x128, 20 classes, MLSM.
 * (not a test)
 *   npm run bench -- nn_step [steps] [all|resnet|mobilenet]
 * Env NORMS=batch,group,frozen picks the norm variants (default all three).
 */
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../pipeline/backend.js';
import type { Backbone } from '../nn/backbone.js';
import { CamHead } from '../nn/heads.js';
import { multilabelSoftMarginLoss } from '../nn/losses.js';
import { loadMobileNetV1 } from '../nn/mobilenet.js';
import type { NormKind } from '../nn/norm.js';
import { SGD } from '../nn/optim.js';
import { ResNet } from '../nn/resnet.js';
import { trainStep } from '../nn/train.js';

const steps = Number(process.argv[2] ?? 5);
const info = await initBackend();
console.log(`backend ${info.name} (${info.flavour}), tf ${info.tfVersion}`);

async function bench(label: string, make: () => Promise<Backbone> | Backbone): Promise<void> {
  const net = await make();
  const head = new CamHead(net.channels[3], 20);
  const opt = new SGD(
    [
      { name: 'backbone', params: net.params.namedTrainable('b/') },
      { name: 'head', params: head.params.namedTrainable('h/'), lrMult: 10 },
    ],
    { lr: 0.01, momentum: 0.9, weightDecay: 1e-4 },
  );
  const x = tf.randomUniform([8, 128, 128, 3], -1, 1, 'float32', 1) as tf.Tensor4D;
  const y = tf.cast(tf.greater(tf.randomUniform([8, 20], 0, 1, 'float32', 2), 0.8), 'float32') as tf.Tensor2D;
  const step = () => trainStep(opt, (u) => multilabelSoftMarginLoss(head.classifierLogits(net.forward(x, true, u).last), y));
  step(); // warm-up (kernel selection, slot creation)
  const n0 = tf.memory().numTensors;
  const t: number[] = [];
  for (let i = 0; i < steps; i++) {
    const s = performance.now();
    step();
    t.push(performance.now() - s);
  }
  t.sort((a, b) => a - b);
  const fwd = performance.now();
  tf.tidy(() => head.classifierLogits(net.forward(x, false).last)).dispose();
  const fwdMs = performance.now() - fwd;
  console.log(
    `${label.padEnd(44)} params ${(net.params.size() / 1e6).toFixed(2)}M  step median ${t[Math.floor(t.length / 2)].toFixed(0)} ms (min ${t[0].toFixed(0)}, max ${t[t.length - 1].toFixed(0)})  eval fwd ${fwdMs.toFixed(0)} ms  leak ${tf.memory().numTensors - n0}`,
  );
  tf.dispose([x, y]);
  opt.dispose();
  head.dispose();
  net.dispose();
}

const which = process.argv[3] ?? 'all';
const norms = (process.env.NORMS ?? 'batch,group,frozen').split(',') as NormKind[];
for (const norm of norms) {
  if (which === 'all' || which === 'resnet')
    await bench(`ResNet w32 [1,1,1,1] os8 ${norm}`, () => new ResNet({ width: 32, depth: [1, 1, 1, 1], outputStride: 8, norm }));
}
for (const norm of norms) {
  if (which === 'all' || which === 'mobilenet') await bench(`MobileNet os16 ${norm}`, () => loadMobileNetV1({ outputStride: 16, norm }));
}
