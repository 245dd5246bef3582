/**
 * The segmentation head registry: a segment net's head is built through `buildSegHead` from the
 * `head` settings of its config (models/segment/config.json). Adding a head is one file here
 * exporting a SegHeadEntry plus one line in SEG_HEADS (or `registerSegHead` at run time). Entries
 * load lazily, like the backbones' (nn/backbones).
 */
import type * as tf from '@tensorflow/tfjs';
import type { Features } from '../backbone.js';
import type { ParamStore } from '../params.js';
import { TagsegError } from '../../pipeline/errors.js';

/** What the segment net, its training and the contrastive losses use of a head. */
export interface SegHead {
  /** Variables under stable names (saved as 'seg/<name>'). */
  readonly params: ParamStore;
  /** Stride of the logits relative to the input, for a backbone whose levels have `strides`. */
  outputStride(strides: readonly number[]): number;
  /** Features -> penultimate map [B, h, w, C] (what the contrastive projection heads read). */
  represent(f: Features): tf.Tensor4D;
  /** Penultimate map -> logits [B, h, w, K]. */
  classify(y: tf.Tensor4D): tf.Tensor4D;
  /** Features -> logits [B, h, w, K] at outputStride. */
  forward(f: Features): tf.Tensor4D;
  dispose(): void;
}

/** The segment.* params a head may read. */
export interface SegHeadParams {
  head_dim: number;
  decoder: boolean;
}

/** A head's settings (after its `kind`): `dim` channels of its penultimate map, and its own. */
export interface SegHeadSettings {
  dim: number;
  [setting: string]: unknown;
}

/** What the model's config.json `head` holds; `kind` absent = the default head. */
export type SegHeadConfig = { kind?: string } & SegHeadSettings;

export interface SegHeadEntry {
  /** Its saved settings (all but `kind`) from the segment params. */
  config(p: SegHeadParams): SegHeadSettings;
  /** A fresh head on backbone levels of `inChannels` channels, for `classes` outputs. */
  build(config: SegHeadConfig, inChannels: readonly number[], classes: number, seed: number): SegHead;
}

/** The head of configs without a `kind`: every model written before the registry. */
export const DEFAULT_SEG_HEAD = 'deeplab';

const SEG_HEADS = new Map<string, () => Promise<SegHeadEntry>>([
  ['deeplab', async () => (await import('./deeplab.js')).deeplab],
]);

/** Add a head at run time (tests; a built-in one belongs in SEG_HEADS). */
export function registerSegHead(kind: string, load: () => Promise<SegHeadEntry>): void {
  SEG_HEADS.set(kind, load);
}

/** The registered names, in registration order. */
export function segHeadKinds(): [string, ...string[]] {
  return [...SEG_HEADS.keys()] as [string, ...string[]];
}

async function entry(kind: string): Promise<SegHeadEntry> {
  const load = SEG_HEADS.get(kind);
  if (!load) throw new TagsegError(`unknown segmentation head '${kind}'`, { hint: `registered: ${segHeadKinds().join(', ')} (nn/seg_heads/index.ts)` });
  return load();
}

/** The settings to save for head `kind` under segment params `p` (the default head's without a kind). */
export async function segHeadConfig(kind: string, p: SegHeadParams): Promise<SegHeadConfig> {
  const settings = (await entry(kind)).config(p);
  return kind === DEFAULT_SEG_HEAD ? settings : { kind, ...settings };
}

export async function buildSegHead(config: SegHeadConfig, inChannels: readonly number[], classes: number, seed: number): Promise<SegHead> {
  return (await entry(config.kind ?? DEFAULT_SEG_HEAD)).build(config, inChannels, classes, seed);
}
