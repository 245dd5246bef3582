/** Registry entry: MobileNet v1 of nn/mobilenet.ts, with the weights named by cam.pretrained. */
import { MobileNetV1, loadMobileNetV1 } from '../mobilenet.js';
import type { BackboneEntry } from './index.js';

export const mobilenet: BackboneEntry = {
  config: (p) => ({ outputStride: p.output_stride, norm: p.norm, pretrained: p.pretrained }),
  build: async (c, seed, initWeights) => {
    const opts = { outputStride: c.outputStride, norm: c.norm, seed };
    return initWeights ? loadMobileNetV1({ ...opts, ...(c.pretrained ? { path: c.pretrained } : {}) }) : new MobileNetV1(null, opts);
  },
};
