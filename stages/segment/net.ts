/**
 * SegNet: the CAM stage's backbone + a head from the registry (nn/seg_heads: the DeepLab-style
 * ContextHead by default), and its on-disk form, a
 * self-contained model directory that `tagseg predict` loads without the project:
 *
 *   <dir>/config.json    SegModelConfig: backbone settings (the CAM model's config), classes,
 *                        background, head settings, working size and default inference scales
 *   <dir>/classes.json   {"classes": [...], "background": ..., "void": 255}, for `tagseg eval --classes`
 *   <dir>/weights/       nn/checkpoint format, variables 'backbone/<name>' and 'seg/<name>'
 *
 * Backbone choice: the weights of models/cam, i.e. on photos the ImageNet-pretrained MobileNet
 * fine-tuned on the dataset's tags, on the synthetic set the from-scratch ResNet the cam stage
 * trained; so the backbone always matches the cam params (IRN and PSA start their segmentation
 * networks from ImageNet weights; starting from the tag classifier is at least as informed, and
 * costs nothing). A loaded model rebuilds the backbone as an empty shell and fills it from
 * weights/, so the pretrained MobileNet file is not needed at prediction time.
 */
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { type Backbone, disposeFeatures } from '../../nn/backbone.js';
import { loadModelWeights, readModelConfig, saveModelDir } from '../../nn/checkpoint.js';
import type { NormUpdates } from '../../nn/norm.js';
import type { DenseCrfOptions } from '../../ops/crf.js';
import { type NamedVariables, mergeNamed } from '../../nn/params.js';
import { TagsegError } from '../../pipeline/errors.js';
import { DEFAULT_SEG_HEAD, type SegHead, type SegHeadConfig, buildSegHead, segHeadConfig } from '../../nn/seg_heads/index.js';
import { upsampleLogits } from '../../nn/seg_heads/deeplab.js';
import { type CamModelConfig, type CamNet, buildCamNet, loadCamModel } from '../../nn/cam_net.js';

export const SEG_MODEL_FORMAT = 'tagseg-segment-model';

export interface SegModelConfig {
  format: typeof SEG_MODEL_FORMAT;
  version: 1;
  /** The CAM model the backbone came from (its backbone settings rebuild the same network). */
  cam: CamModelConfig;
  /** Dataset classes; output channel k = class k. */
  classes: string[];
  background: number | null;
  /** The head's registry kind (absent: deeplab) and settings. */
  head: SegHeadConfig;
  /** Long side images are resized to before the network (ingest.size; 0 = original size). */
  workingSize: number;
  /** Default inference settings of `tagseg predict`. */
  scales: number[];
  flip: boolean;
  /** Dense CRF on the probabilities, or null (absent in models written before segment.crf: none). */
  crf?: DenseCrfOptions | null;
  /** Provenance. */
  labels?: 'pseudo' | 'gt';
  paramsHash?: string;
  epochs?: number;
}

export interface SegNet {
  backbone: Backbone;
  head: SegHead;
  config: SegModelConfig;
  named(): NamedVariables;
  dispose(): void;
}

export interface SegNetOptions {
  classes: string[];
  background: number | null;
  /** Head from the registry (nn/seg_heads; default deeplab), built from the segment params below. */
  head?: string;
  /** segment.head_dim. */
  dim: number;
  /** segment.decoder. */
  decoder: boolean;
  workingSize: number;
  scales: number[];
  flip: boolean;
  crf: DenseCrfOptions | null;
  seed: number;
}

type AssembleOptions = Omit<SegNetOptions, 'head' | 'dim' | 'decoder'>;

async function assemble(backbone: Backbone, cam: CamModelConfig, headConfig: SegHeadConfig, o: AssembleOptions): Promise<SegNet> {
  let head: SegHead;
  try {
    head = await buildSegHead(headConfig, backbone.channels, o.classes.length, o.seed + 11);
  } catch (err) {
    backbone.dispose();
    throw err;
  }
  const config: SegModelConfig = {
    format: SEG_MODEL_FORMAT, version: 1, cam, classes: [...o.classes], background: o.background,
    head: headConfig, workingSize: o.workingSize, scales: [...o.scales], flip: o.flip,
    crf: o.crf,
  };
  return {
    backbone,
    head,
    config,
    named: () => mergeNamed(backbone.params.named('backbone/'), head.params.named('seg/')),
    dispose() {
      backbone.dispose();
      head.dispose();
    },
  };
}

/** Backbone from the CAM model in `camDir` (its classifier dropped) + a fresh head. */
export async function segNetFromCam(camDir: string, o: SegNetOptions): Promise<SegNet> {
  const cam = await loadCamModel(camDir);
  if (JSON.stringify(cam.config.classes) !== JSON.stringify(o.classes)) {
    cam.dispose();
    throw new TagsegError('the CAM model was trained on another class list than images.arrow holds', { file: path.join(camDir, 'config.json'), hint: 'rerun `tagseg run cam_train`' });
  }
  return segNetOnCam(cam, o);
}

/** Backbone of a loaded CAM model (its classifier dropped) + a fresh head; the SegNet owns the backbone, disposed on failure. */
export async function segNetOnCam(cam: CamNet, o: SegNetOptions): Promise<SegNet> {
  cam.head.dispose();
  let headConfig: SegHeadConfig;
  try {
    headConfig = await segHeadConfig(o.head ?? DEFAULT_SEG_HEAD, { head_dim: o.dim, decoder: o.decoder });
  } catch (err) {
    cam.backbone.dispose();
    throw err;
  }
  return assemble(cam.backbone, cam.config, headConfig, o);
}

/** Write config.json, classes.json, weights/ and the `extra` files (val_ids.txt) as the folder `dir`. */
export async function saveSegModel(dir: string, net: SegNet, extra: Record<string, string> = {}): Promise<void> {
  const classes = { classes: net.config.classes, background: net.config.background, void: 255 };
  await saveModelDir(dir, net.named(), net.config, { 'classes.json': classes, ...extra });
}

/** Load a model directory written by the segment stage. The caller disposes it. */
export async function loadSegModel(dir: string): Promise<SegNet> {
  const config = await readModelConfig<SegModelConfig>(dir, SEG_MODEL_FORMAT, 'segmentation model', 'pass the folder the segment stage wrote (models/segment)');
  const shell = await buildCamNet(config.cam, 0, false);
  shell.head.dispose();
  const net = await assemble(shell.backbone, config.cam, config.head, {
    classes: config.classes, background: config.background,
    workingSize: config.workingSize, scales: config.scales, flip: config.flip, crf: config.crf ?? null, seed: 0,
  });
  net.config = { ...config };
  await loadModelWeights(net, dir);
  return net;
}

/**
 * RGB images x [B, H, W, 3] in [0, 255] -> logits [B, H, W, K] at the input size (upsampled
 * bilinearly from the head's stride). training: backbone BatchNorm in training mode, its batch
 * statistics recorded into `updates` (nn/norm.ts); the head has no statistics.
 */
export function segLogits(net: SegNet, x: tf.Tensor4D, training: boolean, updates?: NormUpdates): tf.Tensor4D {
  return tf.tidy(() => {
    const f = net.backbone.forward(net.backbone.preprocess(x), training, updates);
    const logits = net.head.forward(f);
    disposeFeatures(f);
    return upsampleLogits(logits, [x.shape[1], x.shape[2]]);
  });
}
