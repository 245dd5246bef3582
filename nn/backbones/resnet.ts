/** Registry entry: the from-scratch ResNet of nn/resnet.ts (no pretrained weights). */
import { ResNet } from '../resnet.js';
import type { BackboneEntry } from './index.js';

export const resnet: BackboneEntry = {
  config: (p) => ({ outputStride: p.output_stride, norm: p.norm, width: p.width, depth: p.depth }),
  build: async (c, seed) => new ResNet({ width: c.width, depth: c.depth, outputStride: c.outputStride, norm: c.norm, seed }),
};
