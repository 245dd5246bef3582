/**
 * What the two cam stages share: the artifacts they write, and the one split of the `cam` params
 * between them. `scales`, `flip` and `dtype` only change the maps (stage `cam`); every other key
 * shapes the classifier (stage `cam_train`) and is in its training hash, `epochs` included.
 */
import { sectionKeys, sectionTrainHash } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import type { Params } from '../params.js';
import { camParams } from './params.js';

export const CAM_OUTPUTS = {
  model: artifact('camModel'),
  trainMetrics: artifact('camTrainMetrics'),
  lossPlot: artifact('camLossPlot'),
  cams: artifact('cams'),
  metrics: artifact('camMetrics'),
  plot: artifact('camThresholdPlot'),
  classesPlot: artifact('camClassesPlot'),
} as const;

export const CAM_KEYS = sectionKeys('cam', Object.keys(camParams.shape), ['scales', 'flip', 'dtype', 'shards']);

/** The training hash: seed, train split, every training key of `cam` and `dataHash` (the inputs' content). */
export function trainHash(p: Params, dataHash: string): string {
  return sectionTrainHash(p, CAM_KEYS, dataHash);
}
