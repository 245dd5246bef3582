import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { skipWithout } from '../helpers/ci.js';
import { disposeFeatures } from '../../nn/backbone.js';
import { MobileNetV1, loadLayersModelFrom, loadLayersModelWeights, loadMobileNetV1 } from '../../nn/mobilenet.js';
import { MOBILENET_DIR as modelDir, MOBILENET_PRESENT as present } from '../helpers/models.js';

const skip = skipWithout('pretrained MobileNet', present ? undefined : `no model.json in ${modelDir} (the weights come from ../shared/models beside the clone, or $TAGSEG_MODELS_DIR)`);

beforeAll(async () => {
  await initBackend();
  expect(tf.getBackend()).toBe('tensorflow');
});

/** Activations of the Keras LayersModel itself, running its own layers in order up to `until` (input x in [-1, 1]). */
function referenceActivations(model: tf.LayersModel, x: tf.Tensor4D, until: string[]): Map<string, tf.Tensor> {
  const out = new Map<string, tf.Tensor>();
  tf.tidy(() => {
    let h: tf.Tensor = x;
    for (const layer of model.layers) {
      if (layer.getClassName() === 'InputLayer') continue;
      h = layer.apply(h) as tf.Tensor;
      if (until.includes(layer.name)) out.set(layer.name, tf.keep(h));
      if (out.size === until.length) break;
    }
  });
  return out;
}

const maxAbsDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]);

describe.skipIf(skip)('pretrained MobileNet v1', () => {
  it('re-implemented forward matches the LayersModel at conv_pw_12_relu and conv_dw_13_relu (original strides)', async () => {
    const model = await loadLayersModelFrom(modelDir);
    const weights = await loadLayersModelWeights(modelDir);
    const x = tf.randomUniform([2, 64, 64, 3], -1, 1, 'float32', 11) as tf.Tensor4D;
    const ref = referenceActivations(model, x, ['conv_pw_12_relu', 'conv_dw_13_relu']);
    model.dispose();

    const net = new MobileNetV1(weights, { outputStride: 32, last: 'conv_pw_12' });
    const f = net.forward(x, false);
    expect(f.last.shape).toEqual([2, 2, 2, 1024]);
    const refPw12 = ref.get('conv_pw_12_relu')!;
    expect(refPw12.shape).toEqual(f.last.shape);
    // non-trivial activations, reproduced
    expect(tf.tidy(() => tf.max(refPw12).dataSync()[0])).toBeGreaterThan(0.5);
    expect(maxAbsDiff(f.last, refPw12)).toBeLessThan(1e-3);

    const net13 = new MobileNetV1(weights, { outputStride: 32, last: 'conv_dw_13' });
    const f13 = net13.forward(x, false);
    expect(maxAbsDiff(f13.last, ref.get('conv_dw_13_relu')!)).toBeLessThan(1e-3);

    // control: the same comparison with random weights fails by a wide margin
    const random = new MobileNetV1(null, { outputStride: 32 });
    const fr = random.forward(x, false);
    expect(maxAbsDiff(fr.last, refPw12)).toBeGreaterThan(0.1);

    [f, f13, fr].forEach(disposeFeatures);
    [net, net13, random].forEach((n) => n.dispose());
    tf.dispose([x, ...ref.values(), ...weights.values()]);
  });

  it('loads at output stride 16 and 8 with the pretrained weights', async () => {
    const before = tf.memory().numTensors;
    for (const os of [16, 8] as const) {
      const net = await loadMobileNetV1({ outputStride: os });
      expect(net.pretrained).toBe(true);
      expect(net.norm).toBe('frozen');
      const x = tf.zeros([1, 64, 64, 3]) as tf.Tensor4D;
      const f = net.forward(x, true);
      expect(f.levels.map((l) => l.shape)).toEqual(net.strides.map((s, i) => [1, 64 / s, 64 / s, net.channels[i]]));
      expect(f.stride).toBe(os);
      disposeFeatures(f);
      x.dispose();
      net.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('errors clearly on a missing model', async () => {
    await expect(loadMobileNetV1({ path: `${modelDir}/does-not-exist` })).rejects.toThrow(/model not found/);
  });
});
