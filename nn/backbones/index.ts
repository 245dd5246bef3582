/**
 * The backbone registry: `cam.backbone` names an entry, and every network built on a CAM model
 * (cam, affinity, contrast, segment) gets its backbone through `buildBackbone`. Adding a backbone
 * is one file here exporting a BackboneEntry plus one line in BACKBONES. Entries load lazily, so
 * stages/params.ts can list the names without loading tfjs.
 */
import type { Backbone, OutputStride } from '../backbone.js';
import type { NormKind } from '../norm.js';
import { TagsegError } from '../../pipeline/errors.js';

/** The cam.* params a backbone may read (the cam params section has them all). */
export interface BackboneParams {
  output_stride: OutputStride;
  norm: NormKind;
  width: number;
  depth: number[];
  pretrained: string;
}

/** A backbone's settings as saved in models/cam/config.json (after its `kind`). */
export interface BackboneSettings {
  outputStride: OutputStride;
  norm: NormKind;
  /** resnet only. */
  width?: number;
  depth?: number[];
  /** mobilenet only: where the initial (pretrained) weights came from; '' = the default model. */
  pretrained?: string;
  /** Settings of other backbones. */
  [setting: string]: unknown;
}

/** What models/cam/config.json holds: `kind` (the registry name) first, then its settings. */
export type BackboneConfig = { kind: string } & BackboneSettings;

export interface BackboneEntry {
  /** Its saved settings (all but `kind`, in the order they are written) from the cam params. */
  config(p: BackboneParams): BackboneSettings;
  /** Build from saved settings: `initWeights` loads pretrained weights (training start), else a random shell for a checkpoint. */
  build(config: BackboneConfig, seed: number, initWeights: boolean): Promise<Backbone>;
}

const BACKBONES = new Map<string, () => Promise<BackboneEntry>>([
  ['resnet', async () => (await import('./resnet.js')).resnet],
  ['mobilenet', async () => (await import('./mobilenet.js')).mobilenet],
]);

/** Add a backbone at run time (tests; a built-in one belongs in BACKBONES). */
export function registerBackbone(kind: string, load: () => Promise<BackboneEntry>): void {
  BACKBONES.set(kind, load);
}

/** The registered names, in registration order (the `cam.backbone` choices). */
export function backboneKinds(): [string, ...string[]] {
  return [...BACKBONES.keys()] as [string, ...string[]];
}

async function entry(kind: string): Promise<BackboneEntry> {
  const load = BACKBONES.get(kind);
  if (!load) throw new TagsegError(`unknown backbone '${kind}'`, { hint: `registered: ${backboneKinds().join(', ')} (nn/backbones/index.ts)` });
  return load();
}

/** The settings to save for backbone `kind` under cam params `p`. */
export async function backboneConfig(kind: string, p: BackboneParams): Promise<BackboneConfig> {
  return { kind, ...(await entry(kind)).config(p) };
}

export async function buildBackbone(config: BackboneConfig, seed: number, initWeights: boolean): Promise<Backbone> {
  return (await entry(config.kind)).build(config, seed, initWeights);
}
