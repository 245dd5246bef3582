import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { backboneConfig, backboneKinds, buildBackbone, registerBackbone } from '../../nn/backbones/index.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { defaultParams, validateParams } from '../../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet, imageTensor, loadCamModel, saveCamModel } from '../../nn/cam_net.js';

let tmp: string;
beforeAll(async () => {
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-backbones-'));
});
afterAll(() => fs.rm(tmp, { recursive: true, force: true }));

describe('backbone registry (nn/backbones)', () => {
  it('saves the built-in backbones settings as before (models/cam/config.json bytes)', async () => {
    const cam = { ...defaultParams().cam, output_stride: 8 as const, width: 16, depth: [1, 1, 1, 1] };
    expect(JSON.stringify(await backboneConfig('resnet', cam))).toBe('{"kind":"resnet","outputStride":8,"norm":"batch","width":16,"depth":[1,1,1,1]}');
    expect(JSON.stringify(await backboneConfig('mobilenet', { ...cam, output_stride: 16, norm: 'frozen' }))).toBe(
      '{"kind":"mobilenet","outputStride":16,"norm":"frozen","pretrained":""}',
    );
  });

  it('cam.backbone accepts the registered names only, and an unknown kind is a TagsegError', async () => {
    expect(backboneKinds().slice(0, 2)).toEqual(['resnet', 'mobilenet']);
    const raw = structuredClone(defaultParams()) as unknown as { cam: { backbone: string } };
    raw.cam.backbone = 'vgg';
    expect(() => validateParams(raw)).toThrow(/cam\.backbone.*resnet \| mobilenet/);
    await expect(buildBackbone({ kind: 'vgg', outputStride: 8, norm: 'batch' }, 0, false)).rejects.toThrow(TagsegError);
  });

  it('a toy backbone registered with one line builds, saves and reloads a CAM net', async () => {
    const raw = structuredClone(defaultParams()) as unknown as { cam: { backbone: string } };
    raw.cam.backbone = 'toy';
    expect(() => validateParams(raw)).toThrow(/cam\.backbone: expected one of resnet \| mobilenet, got string "toy"/); // control: not yet registered
    registerBackbone('toy', async () => (await import('./toy_backbone.js')).toy);
    expect(validateParams(raw).cam.backbone).toBe('toy'); // params.yaml can now name it

    const backbone = await backboneConfig('toy', { ...defaultParams().cam, output_stride: 8, width: 5 });
    expect(backbone).toEqual({ kind: 'toy', outputStride: 8, norm: 'batch', channels: 5 });
    const net = await buildCamNet({ format: CAM_MODEL_FORMAT, version: 1, backbone, classes: ['a', 'b', 'c'], background: null, outputs: [0, 2] }, 3, true);
    expect(net.backbone.name).toBe('toy');
    expect(net.config.featureChannels).toBe(5);
    const img = imageTensor(Uint8Array.from({ length: 16 * 24 * 3 }, (_, i) => (i * 29) % 256), 16, 24);
    const logits = tf.tidy(() => net.head.classifierLogits(net.backbone.forward(net.backbone.preprocess(img), false).last));
    expect(logits.shape).toEqual([1, 2]);

    await saveCamModel(path.join(tmp, 'cam'), net);
    const back = await loadCamModel(path.join(tmp, 'cam'));
    expect(back.config.backbone).toEqual(backbone);
    const again = tf.tidy(() => back.head.classifierLogits(back.backbone.forward(back.backbone.preprocess(img), false).last));
    expect(Array.from(again.dataSync())).toEqual(Array.from(logits.dataSync()));
    tf.dispose([img, logits, again]);
    net.dispose();
    back.dispose();
  });
});
