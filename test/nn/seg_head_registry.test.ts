import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backboneConfig } from '../../nn/backbones/index.js';
import { buildSegHead, registerSegHead, segHeadConfig, segHeadKinds } from '../../nn/seg_heads/index.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { defaultParams } from '../../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { loadSegModel, saveSegModel, segLogits, segNetFromCam } from '../../stages/segment/net.js';

let tmp: string;
beforeAll(async () => {
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-segheads-'));
});
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

const SEG = { classes: ['a', 'b', 'c'], background: null, dim: 6, decoder: false, workingSize: 0, scales: [1], flip: false, crf: null, seed: 1 };

/** A small from-scratch CAM model folder (the segment net's backbone comes from it). */
async function camDir(): Promise<string> {
  const backbone = await backboneConfig('resnet', { ...defaultParams().cam, width: 4 });
  const cam = await buildCamNet({ format: CAM_MODEL_FORMAT, version: 1, backbone, classes: SEG.classes, background: null, outputs: [0, 1, 2] }, 3, true);
  const dir = path.join(tmp, 'cam');
  await saveCamModel(dir, cam);
  cam.dispose();
  return dir;
}

describe('segmentation head registry (nn/seg_heads)', () => {
  it('saves the built-in head as before (models/segment/config.json `head` bytes, no kind)', async () => {
    expect(JSON.stringify(await segHeadConfig('deeplab', { head_dim: 64, decoder: true }))).toBe('{"dim":64,"decoder":true}');
    expect(segHeadKinds()[0]).toBe('deeplab');
  });

  it('an unknown head is a TagsegError naming the registered ones', async () => {
    await expect(segHeadConfig('unet', { head_dim: 8, decoder: false })).rejects.toThrow(TagsegError);
    await expect(buildSegHead({ kind: 'unet', dim: 8 }, [4], 3, 0)).rejects.toThrow(/unknown segmentation head 'unet'/);
  });

  it('a toy head registered with one line builds, saves and reloads a segment net', async () => {
    registerSegHead('toy', async () => (await import('./toy_seg_head.js')).toyHead);

    const net = await segNetFromCam(await camDir(), { ...SEG, head: 'toy' });
    expect(net.config.head).toEqual({ kind: 'toy', dim: 6 });
    const img = tf.tidy(() => tf.randomUniform([1, 32, 40, 3], 0, 255, 'float32', 5) as tf.Tensor4D);
    const logits = segLogits(net, img, false);
    expect(logits.shape).toEqual([1, 32, 40, 3]);
    expect(net.named().has('seg/proj.kernel')).toBe(true);

    await saveSegModel(path.join(tmp, 'seg'), net);
    const back = await loadSegModel(path.join(tmp, 'seg'));
    expect(back.config.head).toEqual({ kind: 'toy', dim: 6 });
    const again = segLogits(back, img, false);
    expect(Array.from(again.dataSync())).toEqual(Array.from(logits.dataSync()));
    // Control: the default head on the same backbone gives other logits (the toy head was really used).
    const deeplab = await segNetFromCam(path.join(tmp, 'cam'), SEG);
    expect(deeplab.config.head).toEqual({ dim: 6, decoder: false });
    const other = segLogits(deeplab, img, false);
    expect(Array.from(other.dataSync())).not.toEqual(Array.from(logits.dataSync()));
    tf.dispose([img, logits, again, other]);
    [net, back, deeplab].forEach((n) => n.dispose());
  });
});
