/**
 * ContrastNet (RCA, maeve07/RCA models/rca.py) built from the CAM model, and its on-disk form:
 *
 *   backbone     models/cam's backbone (weights loaded; trained further)
 *   coarse       CamHead on the plain features, initialised from models/cam's classifier (RCA
 *                `extra_convs`, trained with weight 0.4; its CAM gives the region masks)
 *   aggregation  Aggregation (aggregate.ts) of the features with the memory centroids
 *   refined      CamHead on the aggregated features, also initialised from models/cam's classifier
 *                (RCA: 20 per-class 3-layer conv heads from scratch; one 1x1 conv here, so the
 *                refined CAM starts equal to the CAM)
 *   projection   the contrast anchor's projection head (RCA `extra_F`)
 *   memory       MemoryBank (memory.ts): queue, pointers, centroids (non-trainable)
 *
 *   <dir>/config.json   ContrastModelConfig
 *   <dir>/weights/      nn/checkpoint format: 'backbone/', 'coarse/', 'refined/', 'aggregation/',
 *                       'projection/', 'memory/' variables (the memory makes inference reproducible)
 */
import * as tf from '@tensorflow/tfjs';
import type { Backbone } from '../../nn/backbone.js';
import { loadModelWeights, readModelConfig, saveModelDir } from '../../nn/checkpoint.js';
import { CamHead } from '../../nn/heads.js';
import { type NamedVariables, mergeNamed } from '../../nn/params.js';
import { type CamModelConfig, buildCamNet, loadCamModel } from '../../nn/cam_net.js';
import { Aggregation, Projection, type Similarity } from './aggregate.js';
import { MemoryBank } from './memory.js';

export const CONTRAST_MODEL_FORMAT = 'tagseg-contrast-model';

export interface ContrastModelConfig {
  format: typeof CONTRAST_MODEL_FORMAT;
  version: 1;
  /** The CAM model the network started from (its backbone settings build the same network). */
  cam: CamModelConfig;
  memory: { size: number; centroids: number };
  aggregation: { enabled: boolean; dim: number; similarity: Similarity };
  paramsHash?: string;
  epochs?: number;
}

export interface ContrastSettings {
  memorySize: number;
  centroids: number;
  dim: number;
  similarity: Similarity;
  aggregation: boolean;
  seed: number;
}

export class ContrastNet {
  constructor(
    readonly backbone: Backbone,
    readonly coarse: CamHead,
    readonly refined: CamHead,
    readonly aggregation: Aggregation,
    readonly projection: Projection,
    readonly memory: MemoryBank,
    readonly config: ContrastModelConfig,
  ) {}

  get numClasses(): number {
    return this.coarse.numClasses;
  }

  /** Every variable under its checkpoint name (trainable, BN statistics, memory). */
  named(): NamedVariables {
    return mergeNamed(
      this.backbone.params.named('backbone/'), this.coarse.params.named('coarse/'), this.refined.params.named('refined/'),
      this.aggregation.params.named('aggregation/'), this.projection.params.named('projection/'), this.memory.params.named('memory/'),
    );
  }

  /** The new layers (trained at head_lr_mult x lr). */
  namedHeads(): NamedVariables {
    return mergeNamed(
      this.coarse.params.namedTrainable('coarse/'), this.refined.params.namedTrainable('refined/'),
      this.aggregation.params.namedTrainable('aggregation/'), this.projection.params.namedTrainable('projection/'),
    );
  }

  /**
   * What the refined head reads, from backbone features f [B, h, w, C]: f aggregated with the
   * memory centroids when aggregation is enabled, else f itself.
   */
  refinedFeatures(f: tf.Tensor4D): tf.Tensor4D {
    const a = this.config.aggregation;
    if (!a.enabled) return f;
    return this.aggregation.forward(f, this.memory.centroids as tf.Tensor2D, this.memory.valid as tf.Tensor1D, a.similarity, 20 / this.config.memory.centroids);
  }

  /** Refined class maps before ReLU [B, h, w, K] from backbone features f [B, h, w, C]. */
  refinedMaps(f: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => this.refined.camMaps(this.refinedFeatures(f)));
  }

  dispose(): void {
    this.backbone.dispose();
    this.coarse.dispose();
    this.refined.dispose();
    this.aggregation.dispose();
    this.projection.dispose();
    this.memory.dispose();
  }
}

function assemble(backbone: Backbone, coarse: CamHead, cam: CamModelConfig, s: ContrastSettings): ContrastNet {
  const C = cam.featureChannels;
  const K = coarse.numClasses;
  const refined = new CamHead(C, K, { seed: s.seed + 11 });
  const aggregation = new Aggregation(C, s.dim, s.seed + 13);
  const projection = new Projection(C, s.seed + 17);
  const memory = new MemoryBank({ classes: K, size: s.memorySize, dim: C, centroids: s.centroids });
  const config: ContrastModelConfig = {
    format: CONTRAST_MODEL_FORMAT, version: 1, cam,
    memory: { size: s.memorySize, centroids: s.centroids },
    aggregation: { enabled: s.aggregation, dim: s.dim, similarity: s.similarity },
  };
  return new ContrastNet(backbone, coarse, refined, aggregation, projection, memory, config);
}

/** ContrastNet from the CAM model in `camDir`: backbone + coarse head loaded, refined head = a copy of the CAM classifier. */
export async function contrastNetFromCam(camDir: string, s: ContrastSettings): Promise<ContrastNet> {
  const cam = await loadCamModel(camDir);
  let net: ContrastNet;
  try {
    net = assemble(cam.backbone, cam.head, cam.config, s);
  } catch (err) {
    cam.dispose();
    throw err;
  }
  net.refined.kernel.assign(cam.head.kernel);
  return net;
}

/** Write config.json + weights/ into `dir`. */
export async function saveContrastModel(dir: string, net: ContrastNet): Promise<void> {
  await saveModelDir(dir, net.named(), net.config);
}

/** Load a model written by saveContrastModel (models/contrast). The caller disposes it. */
export async function loadContrastModel(dir: string): Promise<ContrastNet> {
  const config = await readModelConfig<ContrastModelConfig>(dir, CONTRAST_MODEL_FORMAT, 'contrast model', 'run `tagseg run contrast_train` first');
  const cam = await buildCamNet(config.cam, 0, false);
  const net = assemble(cam.backbone, cam.head, cam.config, {
    memorySize: config.memory.size, centroids: config.memory.centroids, dim: config.aggregation.dim,
    similarity: config.aggregation.similarity, aggregation: config.aggregation.enabled, seed: 0,
  });
  await loadModelWeights(net, dir);
  net.config.paramsHash = config.paramsHash;
  net.config.epochs = config.epochs;
  return net;
}
