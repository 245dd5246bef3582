/**
 * The CAM network: a backbone from the registry of nn/backbones (from-scratch ResNet, pretrained
 * MobileNet v1, ...) + CamHead, and its on-disk form so later stages (affinity, contrast) can
 * load backbone + head:
 *
 *   <dir>/config.json   CamModelConfig (backbone settings, dataset classes, classifier outputs)
 *   <dir>/weights/      nn/checkpoint format (manifest.json + weights.bin), variables named
 *                       'backbone/<name>' and 'head/<name>', no optimizer state
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from './backbone.js';
import { type BackboneConfig, buildBackbone } from './backbones/index.js';
import { loadModelWeights, readModelConfig, saveModelDir } from './checkpoint.js';
import { CamHead } from './heads.js';
import { type NamedVariables, mergeNamed } from './params.js';
import { TagsegError } from '../pipeline/errors.js';

export const CAM_MODEL_FORMAT = 'tagseg-cam-model';

export type { BackboneConfig } from './backbones/index.js';

export interface CamModelConfig {
  format: typeof CAM_MODEL_FORMAT;
  version: 1;
  backbone: BackboneConfig;
  /** Channels of the last feature map (head input). */
  featureChannels: number;
  /** Dataset class list. */
  classes: string[];
  /** Dataset index of background, or null. */
  background: number | null;
  /** Dataset class index of each classifier output (background never is one). */
  outputs: number[];
  /** Params hash of the training run and epochs trained (provenance). */
  paramsHash?: string;
  epochs?: number;
}

export interface CamNet {
  backbone: Backbone;
  head: CamHead;
  config: CamModelConfig;
  /** All variables under checkpoint names ('backbone/...', 'head/...'). */
  named(): NamedVariables;
  dispose(): void;
}

/**
 * Build a network for `config`. `initWeights`: true loads the backbone's pretrained weights, if
 * it has any (training start); false builds a randomly initialised shell (to be filled by a checkpoint).
 */
export async function buildCamNet(config: Omit<CamModelConfig, 'featureChannels'>, seed: number, initWeights: boolean): Promise<CamNet> {
  const backbone: Backbone = await buildBackbone(config.backbone, seed, initWeights);
  const featureChannels = backbone.channels[backbone.channels.length - 1];
  const head = new CamHead(featureChannels, config.outputs.length, { seed: seed + 1 });
  const full: CamModelConfig = { ...config, featureChannels };
  return {
    backbone,
    head,
    config: full,
    named: () => mergeNamed(backbone.params.named('backbone/'), head.params.named('head/')),
    dispose() {
      backbone.dispose();
      head.dispose();
    },
  };
}

/** Write config.json + weights/ into `dir` (weights replaced atomically, config after them). */
export async function saveCamModel(dir: string, net: CamNet): Promise<void> {
  await saveModelDir(dir, net.named(), net.config);
}

/** Load a model written by the cam stage (models/cam). The caller disposes it. */
export async function loadCamModel(dir: string): Promise<CamNet> {
  const config = await readModelConfig<CamModelConfig>(dir, CAM_MODEL_FORMAT, 'CAM model', 'run `tagseg run cam_train` first');
  const file = path.join(dir, 'config.json');
  const net = await buildCamNet(config, 0, false);
  await loadModelWeights(net, dir);
  if (net.config.featureChannels !== config.featureChannels) {
    net.dispose();
    throw new TagsegError(`config says ${config.featureChannels} feature channels, the backbone has ${net.config.featureChannels}`, { file });
  }
  return net;
}

/** RGB uint8 [H,W,3] pixels -> float tensor [1,H,W,3] in [0,255]. */
export function imageTensor(pixels: Uint8Array, height: number, width: number): tf.Tensor4D {
  return tf.tidy(() => tf.cast(tf.tensor4d(pixels, [1, height, width, 3], 'int32'), 'float32') as tf.Tensor4D);
}
