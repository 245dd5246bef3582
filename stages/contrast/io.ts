/**
 * What the two contrast stages share: the artifacts they write, and the one split of the
 * `contrast` params between them. `scales`, `flip` and `dtype` only change the maps (stage
 * `contrast`); every other key shapes ContrastNet and its memory (stage `contrast_train`).
 */
import { sectionKeys, sectionTrainHash } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import type { Params } from '../params.js';
import { contrastParams } from './params.js';

export const CONTRAST_OUTPUTS = {
  model: artifact('contrastModel'),
  trainMetrics: artifact('contrastTrainMetrics'),
  lossPlot: artifact('contrastLossPlot'),
  cams: artifact('contrastCams'),
  metrics: artifact('contrastMetrics'),
  classesPlot: artifact('contrastClassesPlot'),
} as const;

export const CONTRAST_KEYS = sectionKeys('contrast', Object.keys(contrastParams.shape), ['scales', 'flip', 'dtype', 'shards']);

/** The training hash: seed, train split, every training key of `contrast` and `dataHash` (the inputs' content). */
export function contrastTrainHash(p: Params, dataHash: string): string {
  return sectionTrainHash(p, CONTRAST_KEYS, dataHash);
}
