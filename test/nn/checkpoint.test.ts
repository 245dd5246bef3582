import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { checkpointExists, loadCheckpoint, loadModelWeights, readCheckpoint, readModelConfig, saveCheckpoint, saveModelDir } from '../../nn/checkpoint.js';
import { CamHead } from '../../nn/heads.js';
import { SGD } from '../../nn/optim.js';
import { mergeNamed } from '../../nn/params.js';
import { ResNet } from '../../nn/resnet.js';
import { Rng } from '../../nn/rng.js';

let tmp: string;
beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-ckpt-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

function model(seed: number, width = 4) {
  const net = new ResNet({ width, depth: [1, 1, 1, 1], outputStride: 16, seed });
  const head = new CamHead(net.channels[3], 3, { seed });
  const vars = mergeNamed(net.params.named('backbone/'), head.params.named('head/'));
  const opt = new SGD(
    [
      { name: 'backbone', params: net.params.namedTrainable('backbone/') },
      { name: 'head', params: head.params.namedTrainable('head/'), lrMult: 10 },
    ],
    { lr: 0.1, momentum: 0.9 },
  );
  const dispose = () => {
    opt.dispose();
    net.dispose();
    head.dispose();
  };
  return { net, head, vars, opt, dispose };
}

const snapshot = (m: Map<string, tf.Tensor>) => new Map([...m].map(([k, v]) => [k, Array.from(v.dataSync())]));

describe('checkpoint', () => {
  it('round-trips variables, optimizer state and training state', async () => {
    const a = model(1);
    // one step so the momentum buffers and BN statistics are non-trivial
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 1) as tf.Tensor4D;
    const y = tf.tensor2d([
      [1, 0, 0],
      [0, 1, 1],
    ]);
    a.opt.minimize(() => tf.mean(tf.square(a.head.classifierLogits(a.net.forward(x, true).last))) as tf.Scalar).dispose();
    a.net.params.get('stem.norm.moving_mean').assign(tf.fill([4], 0.25));
    const rng = new Rng(9);
    rng.next();
    const dir = path.join(tmp, 'run1', 'ckpt');
    await saveCheckpoint(dir, { variables: a.vars, optimizer: a.opt, trainState: { epoch: 2, iter: 17, rng: rng.state() }, meta: { backbone: 'resnet' } });
    expect(await checkpointExists(dir)).toBe(true);
    expect((await fs.readdir(path.dirname(dir))).sort()).toEqual(['ckpt']); // no temp leftovers
    expect((await fs.readdir(dir)).sort()).toEqual(['manifest.json', 'weights.bin']);

    const b = model(2); // different init
    expect(Array.from(b.vars.get('head/classifier.kernel')!.dataSync())).not.toEqual(Array.from(a.vars.get('head/classifier.kernel')!.dataSync()));
    const before = tf.memory().numTensors;
    const res = await loadCheckpoint(dir, { variables: b.vars, optimizer: b.opt });
    expect(snapshot(b.vars)).toEqual(snapshot(a.vars));
    expect(snapshot(b.opt.stateTensors())).toEqual(snapshot(a.opt.stateTensors()));
    expect(a.opt.stateTensors().size).toBeGreaterThan(0);
    expect(b.opt.iterations).toBe(1);
    expect(Array.from(b.net.params.get('stem.norm.moving_mean').dataSync())).toEqual([0.25, 0.25, 0.25, 0.25]);
    const ts = res.trainState as { epoch: number; iter: number; rng: ReturnType<Rng['state']> };
    expect(ts.epoch).toBe(2);
    expect(ts.iter).toBe(17);
    expect(Rng.fromState(ts.rng).next()).toBe(rng.next());
    expect(res.meta).toEqual({ backbone: 'resnet' });
    // loading allocated optimizer slots only (created fresh in b); nothing else stays behind
    expect(tf.memory().numTensors - before).toBe(a.opt.stateTensors().size);
    tf.dispose([x, y]);
    a.dispose();
    b.dispose();
  });

  it('overwrites an existing checkpoint atomically', async () => {
    const a = model(1);
    const dir = path.join(tmp, 'over');
    await saveCheckpoint(dir, { variables: a.vars, trainState: { iter: 1 } });
    await saveCheckpoint(dir, { variables: a.vars, trainState: { iter: 2 } });
    const { manifest, tensors } = await readCheckpoint(dir);
    expect(manifest.trainState).toEqual({ iter: 2 });
    expect(tensors.size).toBe(a.vars.size);
    expect([...tensors.keys()].every((k) => k.startsWith('model/'))).toBe(true);
    tf.dispose([...tensors.values()]);
    expect((await fs.readdir(tmp)).filter((n) => n.includes('over'))).toEqual(['over']);
    a.dispose();
  });

  it('errors clearly on shape mismatch, missing and unexpected names, and changes nothing', async () => {
    const a = model(1, 4);
    const dir = path.join(tmp, 'mismatch');
    await saveCheckpoint(dir, { variables: a.vars });

    const wide = model(3, 8); // other width: every conv shape differs
    const k = wide.vars.get('backbone/stem.conv.kernel')!;
    const before = Array.from(k.dataSync());
    const err = await loadCheckpoint(dir, { variables: wide.vars }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as Error).message).toMatch(/shape mismatch for 'backbone\/stem.conv.kernel': checkpoint \[7, 7, 3, 4\], model \[7, 7, 3, 8\]/);
    expect((err as Error).message).toContain(path.join(dir, 'manifest.json'));
    expect(Array.from(k.dataSync())).toEqual(before);

    const missing = new Map(a.vars);
    missing.set('head/extra.kernel', tf.variable(tf.zeros([2])));
    await expect(loadCheckpoint(dir, { variables: missing })).rejects.toThrow(/missing in checkpoint: 'head\/extra.kernel'/);
    await expect(loadCheckpoint(dir, { variables: missing, allowMissing: true })).resolves.toBeDefined();

    const backboneOnly = a.net.params.named('backbone/');
    await expect(loadCheckpoint(dir, { variables: backboneOnly })).rejects.toThrow(/unexpected in checkpoint: 'head\/classifier.kernel'/);
    await expect(loadCheckpoint(dir, { variables: backboneOnly, allowUnexpected: true })).resolves.toBeDefined();

    await expect(loadCheckpoint(dir, { variables: a.vars, optimizer: a.opt })).rejects.toThrow(/no optimizer state/);
    missing.get('head/extra.kernel')!.dispose();
    a.dispose();
    wide.dispose();
  });

  it('detects corrupted weights and missing directories', async () => {
    const a = model(1);
    const dir = path.join(tmp, 'corrupt');
    await saveCheckpoint(dir, { variables: a.vars });
    const wfile = path.join(dir, 'weights.bin');
    const buf = await fs.readFile(wfile);
    buf[10] ^= 0xff;
    await fs.writeFile(wfile, buf);
    await expect(loadCheckpoint(dir, { variables: a.vars })).rejects.toThrow(/hash/);
    await expect(loadCheckpoint(path.join(tmp, 'nope'), { variables: a.vars })).rejects.toThrow(/cannot read checkpoint manifest/);
    expect(await checkpointExists(path.join(tmp, 'nope'))).toBe(false);
    a.dispose();
  });

  it('model folders: weights, extra files, then config.json; the config is checked for its format', async () => {
    const a = model(2);
    const dir = path.join(tmp, 'modeldir');
    await saveModelDir(dir, a.vars, { format: 'tagseg-test-model', n: 3 }, { 'classes.json': { classes: ['a', 'b'] } });
    expect(JSON.parse(await fs.readFile(path.join(dir, 'classes.json'), 'utf8'))).toEqual({ classes: ['a', 'b'] });
    expect(await readModelConfig(dir, 'tagseg-test-model', 'test model', 'make one')).toEqual({ format: 'tagseg-test-model', n: 3 });
    const b = model(3);
    await loadCheckpoint(path.join(dir, 'weights'), { variables: b.vars });
    expect(Array.from(b.vars.get('head/classifier.kernel')!.dataSync())).toEqual(Array.from(a.vars.get('head/classifier.kernel')!.dataSync()));
    await expect(readModelConfig(dir, 'tagseg-other-model', 'other model', 'run it')).rejects.toThrow(
      /config\.json: not a tagseg-other-model config \(format 'tagseg-test-model'\)/,
    );
    await expect(readModelConfig(path.join(tmp, 'nope'), 'x', 'test model', 'make one')).rejects.toThrow(/cannot read the test model config/);
    a.dispose();
    b.dispose();
  });

  it('loadModelWeights fills a net from a model folder, and disposes it when the folder is bad (no tensor left)', async () => {
    const a = model(4);
    const dir = path.join(tmp, 'modeldir-load');
    await saveModelDir(dir, a.vars, { format: 'tagseg-test-model' });
    const b = model(5);
    const net = { named: () => b.vars, dispose: b.dispose };
    expect(await loadModelWeights(net, dir)).toBe(net);
    expect(snapshot(b.vars)).toEqual(snapshot(a.vars));
    b.dispose();
    const before = tf.memory().numTensors;
    const c = model(6);
    expect(tf.memory().numTensors).toBeGreaterThan(before); // control: an undisposed net shows in the count
    await expect(loadModelWeights({ named: () => c.vars, dispose: c.dispose }, path.join(tmp, 'nope'))).rejects.toThrow(/cannot read checkpoint manifest/);
    expect(tf.memory().numTensors).toBe(before);
    a.dispose();
  });
});
