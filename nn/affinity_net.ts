/**
 * AffinityNet: the CAM stage's backbone (weights from models/cam, PSA initialises AffinityNet
 * from the classification network too) + AffinityHead (head.ts), and its on-disk form:
 *
 *   <dir>/config.json   AffinityModelConfig (the CAM model's config + head settings + radius)
 *   <dir>/weights/      nn/checkpoint format, variables 'backbone/<name>' and 'affinity/<name>'
 *
 * The backbone runs in inference mode (BatchNorm statistics frozen) during training as in PSA,
 * whose resnet38 keeps every BatchNorm in eval mode while training AffinityNet; gradients still
 * reach the convolutions. The head uses GroupNorm (no statistics).
 */
import * as tf from '@tensorflow/tfjs';
import { type Backbone, disposeFeatures } from './backbone.js';
import { loadModelWeights, readModelConfig, saveModelDir } from './checkpoint.js';
import { type NamedVariables, mergeNamed } from './params.js';
import { type CamModelConfig, buildCamNet, loadCamModel } from './cam_net.js';
import { AffinityHead } from './affinity_head.js';

export const AFFINITY_MODEL_FORMAT = 'tagseg-affinity-model';

export interface AffinityModelConfig {
  format: typeof AFFINITY_MODEL_FORMAT;
  version: 1;
  /** The CAM model the backbone came from (its backbone settings build the same network). */
  cam: CamModelConfig;
  head: { levels: number[]; reduce: number[]; dim: number };
  /** Pair radius on the label grid and the grid's stride. */
  radius: number;
  stride: number;
  paramsHash?: string;
  epochs?: number;
}

export interface AffinityNet {
  backbone: Backbone;
  head: AffinityHead;
  config: AffinityModelConfig;
  named(): NamedVariables;
  dispose(): void;
}

/**
 * Backbone from the CAM model in `camDir` (its classifier is dropped) + a fresh AffinityHead on
 * the backbone levels `levels` (default: the head's default, the last three) reduced to `reduce`.
 */
export async function affinityNetFromCam(
  camDir: string, o: { dim: number; radius: number; stride: number; seed: number; levels?: number[]; reduce?: number[] },
): Promise<AffinityNet> {
  const cam = await loadCamModel(camDir);
  cam.head.dispose();
  const backbone = cam.backbone;
  let head: AffinityHead;
  try {
    head = new AffinityHead(backbone.channels, { dim: o.dim, seed: o.seed + 7, levels: o.levels, reduce: o.reduce });
  } catch (err) {
    backbone.dispose();
    throw err;
  }
  const config: AffinityModelConfig = {
    format: AFFINITY_MODEL_FORMAT, version: 1, cam: cam.config,
    head: { levels: head.levels, reduce: head.reduce, dim: head.dim }, radius: o.radius, stride: o.stride,
  };
  return assemble(backbone, head, config);
}

function assemble(backbone: Backbone, head: AffinityHead, config: AffinityModelConfig): AffinityNet {
  return {
    backbone,
    head,
    config,
    named: () => mergeNamed(backbone.params.named('backbone/'), head.params.named('affinity/')),
    dispose() {
      backbone.dispose();
      head.dispose();
    },
  };
}

/** Write config.json + weights/ into `dir`. */
export async function saveAffinityModel(dir: string, net: AffinityNet): Promise<void> {
  await saveModelDir(dir, net.named(), net.config);
}

/** Load a model written by saveAffinityModel (models/affinity; the contrast stage walks with it). The caller disposes it. */
export async function loadAffinityModel(dir: string): Promise<AffinityNet> {
  const config = await readModelConfig<AffinityModelConfig>(dir, AFFINITY_MODEL_FORMAT, 'affinity model', 'run `tagseg run affinity_train` first');
  const cam = await buildCamNet(config.cam, 0, false);
  cam.head.dispose();
  const backbone = cam.backbone;
  let head: AffinityHead;
  try {
    head = new AffinityHead(backbone.channels, { levels: config.head.levels, reduce: config.head.reduce, dim: config.head.dim });
  } catch (err) {
    backbone.dispose();
    throw err;
  }
  const net: AffinityNet = {
    backbone, head, config,
    named: () => mergeNamed(backbone.params.named('backbone/'), head.params.named('affinity/')),
    dispose() {
      backbone.dispose();
      head.dispose();
    },
  };
  await loadModelWeights(net, dir);
  return net;
}

/**
 * Embeddings f [B, size[0], size[1], D] of RGB images x [B, H, W, 3] in [0, 255]. The backbone is
 * always in inference mode (frozen BatchNorm, see the file comment).
 */
export function embed(net: AffinityNet, x: tf.Tensor4D, size: [number, number]): tf.Tensor4D {
  return tf.tidy(() => {
    const f = net.backbone.forward(net.backbone.preprocess(x), false);
    const out = net.head.forward(f, true, undefined, size);
    disposeFeatures(f);
    return out;
  });
}
