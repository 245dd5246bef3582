/**
 * Linear probe vs fine-tuned CAM classifier on a workspace (diagnostic, not a test).
 *   npm run bench -- cam_probe <workspace> [--model DIR]
 * Fits the CAM head (GAP -> 1x1 conv, MLSM) on the frozen pretrained MobileNet's pooled features of
 * the train split (full-batch AdamW), then scores, for the probe and for the fine-tuned models/cam:
 * classification mAP per split (scale 1, no flip) and CAM mIoU on the train masks (single scale,
 * argmax over tags / bg sweep).
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { readAll, readInfo } from '../pipeline/arrow.js';
import { initBackend } from '../pipeline/backend.js';
import { multilabelSoftMarginLoss } from '../nn/losses.js';
import { multiLabelScores } from '../eval/metrics.js';
import { loadMobileNetV1 } from '../nn/mobilenet.js';
import { CamHead } from '../nn/heads.js';
import { AdamW } from '../nn/optim.js';
import { ThresholdSweep } from '../maps/evaluate.js';
import { classMap, foregroundTags, tagTarget } from '../maps/labels.js';
import { computeCams } from '../stages/cam/infer.js';
import { type CamNet, loadCamModel } from '../nn/cam_net.js';

const ws = process.argv[2];
const modelArg = process.argv.indexOf('--model');
const modelDir = modelArg > 0 ? process.argv[modelArg + 1] : path.join(ws, 'models/cam');
await initBackend();
const imagesFile = path.join(ws, 'cache/images.arrow');
const info = await readInfo(imagesFile);
const bg = typeof info.meta.extra?.background === 'number' ? (info.meta.extra.background as number) : null;
const map = classMap(info.meta.classes, bg);
const rows = await readAll(imagesFile);
const ft = await loadCamModel(modelDir);
const os = ft.config.backbone.outputStride;
const mn = await loadMobileNetV1({ outputStride: os, norm: 'frozen', seed: 0 });
const pooled: Float32Array[] = [];
for (const r of rows) {
  const v = tf.tidy(() => {
    const x = tf.cast(tf.tensor4d(r.pixels as Uint8Array, [1, r.height as number, r.width as number, 3], 'int32'), 'float32') as tf.Tensor4D;
    return tf.mean(mn.forward(mn.preprocess(x), false).last, [1, 2]);
  });
  pooled.push(v.dataSync() as Float32Array);
  v.dispose();
}
const train = rows.map((r, i) => ({ r, i })).filter(({ r }) => r.split === 'train');
const X = tf.tensor2d(train.flatMap(({ i }) => Array.from(pooled[i])), [train.length, pooled[0].length]);
const Y = tf.tensor2d(train.flatMap(({ r }) => Array.from(tagTarget(map, r.tags as number[]))), [train.length, map.outputs.length]);
const head = new CamHead(pooled[0].length, map.outputs.length, { seed: 1 });
const opt = new AdamW([{ name: 'head', params: head.params.namedTrainable('head/') }], { lr: 0.01, weightDecay: 1e-4 });
for (let it = 0; it < 600; it++) {
  const l = opt.minimize(() => multilabelSoftMarginLoss(tf.matMul(X, tf.reshape(head.kernel, [pooled[0].length, -1]) as tf.Tensor2D), Y));
  if (it % 200 === 0 || it === 599) console.log(`probe iter ${it} loss ${l.dataSync()[0].toFixed(4)}`);
  l.dispose();
}
const probe: CamNet = { backbone: mn, head, config: ft.config, named: () => new Map(), dispose: () => {} };
for (const [name, net] of [['probe', probe], ['fine-tuned', ft]] as const) {
  const cls = new Map<string, { s: Float32Array[]; l: Float32Array[] }>();
  const sweep = new ThresholdSweep(map.classes.length, map.background);
  for (const r of rows) {
    const H = r.height as number;
    const W = r.width as number;
    const tags = foregroundTags(map, r.tags as number[]);
    const c = await computeCams(net, map, r.pixels as Uint8Array, H, W, tags, { scales: [1], flip: false });
    const e = cls.get(r.split as string) ?? { s: [], l: [] };
    cls.set(r.split as string, e);
    e.s.push(c.logits.map((v) => 1 / (1 + Math.exp(-v))));
    e.l.push(tagTarget(map, r.tags as number[]));
    if (r.split === 'train' && r.mask) sweep.addStrided(c.maps, tags, c.height, c.width, r.mask as Uint8Array, H, W);
  }
  const res = sweep.result();
  console.log(`${name}: CAM mIoU ${(100 * (res.best.miou ?? 0)).toFixed(1)} (single scale) | ${[...cls].map(([s, e]) => `${s} mAP ${(100 * (multiLabelScores(e.s, e.l).mAP ?? 0)).toFixed(1)}`).join(', ')}`);
}
