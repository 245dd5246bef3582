/**
 * What the two affinity stages share: the artifacts they write, and the one split of the
 * `affinity` params between them. `beta`, `logt` and `alpha` only change the random walk
 * (stage `affinity`); every other key shapes AffinityNet (stage `affinity_train`), `radius`
 * included: the walk reads it from the model it was trained for.
 */
import { sectionKeys, sectionTrainHash } from '../../nn/stage_training.js';
import { artifact } from '../../pipeline/artifacts.js';
import type { Params } from '../params.js';
import { affinityParams } from './params.js';

export const AFFINITY_OUTPUTS = {
  model: artifact('affinityModel'),
  trainMetrics: artifact('affinityTrainMetrics'),
  lossPlot: artifact('affinityLossPlot'),
  cams: artifact('affinityCams'),
  metrics: artifact('affinityMetrics'),
  classesPlot: artifact('affinityClassesPlot'),
} as const;

export const AFFINITY_KEYS = sectionKeys('affinity', Object.keys(affinityParams.shape), ['beta', 'logt', 'alpha', 'shards']);

/** Label keys that only apply with a background class (labels.ts), and those that only apply without one. */
const BG_LABEL_KEYS = ['conf_fg', 'conf_bg'];
const NO_BG_LABEL_KEYS = ['margin', 'floor'];

/**
 * The training hash: seed, split, the affinity keys that shape the weights and the data.
 * `background` (the dataset's bg class or null) drops the label keys that do not apply to it, so
 * e.g. a new conf_bg default does not retrain an MSRC-v2 model.
 */
export function affinityTrainHash(p: Params, dataHash: string, background: number | null = null): string {
  return sectionTrainHash(p, AFFINITY_KEYS, dataHash, background === null ? BG_LABEL_KEYS : NO_BG_LABEL_KEYS);
}
