/**
 * MobileNet v1 (Howard et al. 2017, alpha 1.0) as a tagseg Backbone, with the ImageNet-pretrained
 * weights of a Keras/TensorFlow.js LayersModel copied into explicit variables.
 *
 * Only the layers up to conv_pw_12_relu (or conv_dw_13_relu) are used: in the shipped model
 * conv_pw_13's kernel is missing from the project's local copy (see nn/pretrained.ts), everything
 * before it is pretrained.
 *
 * Output stride: the original net has stride 32 at conv_pw_12. For 16 the stride-2 depthwise
 * conv_dw_12 runs at stride 1; for 8 conv_dw_6 too (the same trick as IRN's ResNet-50 strides
 * (2, 2, 2, 1), without the dilation DeepLab would add because tfjs has no gradient for dilated
 * convs). The pretrained weights stay valid -- they are per-pixel filters -- but every 3x3 conv
 * after a removed downsampling sees a 2x (4x for two) smaller window in input pixels than during
 * ImageNet training, so the receptive field of the last map shrinks and the features are
 * somewhat off their trained distribution until fine-tuned.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { type Backbone, type Features, type OutputStride, checkFrozenStages } from './backbone.js';
import { relu6 } from './native.js';
import { Norm, type NormKind, type NormOptions, type NormUpdates } from './norm.js';
import { ParamStore, heNormalConv, normalTensor } from './params.js';
import { pretrainedNames, resolvePretrained } from './pretrained.js';
import { Rng } from './rng.js';

/** The registered pretrained model (nn/pretrained.ts) `loadMobileNetV1` uses by default. */
export const MOBILENET_PRETRAINED = 'mobilenet_v1_1.0_224';

/** [pointwise filters, depthwise stride] of blocks 1..13 (Keras applications/mobilenet.py). */
const BLOCKS: ReadonlyArray<readonly [number, number]> = [
  [64, 1],
  [128, 2],
  [128, 1],
  [256, 2],
  [256, 1],
  [512, 2],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [512, 1],
  [1024, 2],
  [1024, 1],
];

/** Blocks whose pointwise output is exposed as a feature level (strides 4, 8, 16 originally). */
const LEVEL_BLOCKS = [3, 5, 11];

export interface MobileNetOptions {
  /** 8, 16 or 32 (the original strides). Default 16. */
  outputStride?: OutputStride;
  /**
   * Default 'frozen': BN with the pretrained statistics, gamma/beta trainable (IRN's
   * FixedBatchNorm for its pretrained backbone). 'batch' fine-tunes the statistics too (they start
   * from the pretrained ones). 'group' replaces BN by GroupNorm with gamma/beta initialised from
   * BN's: the pretrained activations are then NOT reproduced and need fine-tuning.
   */
  norm?: NormKind;
  /** Last layer: 'conv_pw_12' (conv_pw_12_relu, default) or 'conv_dw_13' (conv_dw_13_relu). Both 1024 channels. */
  last?: 'conv_pw_12' | 'conv_dw_13';
  /** BatchNorm momentum, PyTorch convention, default 0.1 (Keras trained it with 0.99 = torch 0.01). */
  bnMomentum?: number;
  /** GroupNorm groups (upper bound), default 32. */
  groups?: number;
  /** Seed of the random init used when no pretrained weights are given. */
  seed?: number;
}

/** Keras BN epsilon of the MobileNet model (model.json: epsilon 0.001). */
const KERAS_BN_EPS = 1e-3;

/** take(name, shape): a clone of the Keras MobileNet weight `name`, checked against `shape`; undefined without weights (random init). */
function pretrainedTaker(weights: Map<string, tf.Tensor> | null): (name: string, shape: number[]) => tf.Tensor | undefined {
  return (name, shape) => {
    if (!weights) return undefined;
    const t = weights.get(name);
    if (!t) throw new TagsegError(`pretrained MobileNet weight '${name}' is missing`, { hint: 'is this a Keras MobileNet v1 (alpha 1.0) LayersModel?' });
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      throw new TagsegError(`pretrained MobileNet weight '${name}' has shape [${t.shape.join(', ')}], expected [${shape.join(', ')}]`, {
        hint: 'only alpha 1.0 MobileNet v1 is supported',
      });
    }
    return t.clone();
  };
}

export class MobileNetV1 implements Backbone {
  readonly name = 'mobilenet_v1';
  readonly outputStride: OutputStride;
  readonly norm: NormKind;
  readonly strides: number[];
  readonly channels: number[];
  readonly params = new ParamStore();
  readonly last: 'conv_pw_12' | 'conv_dw_13';
  readonly pretrained: boolean;
  private readonly dwStrides: number[];
  /** `name`: the Keras layer name (conv1, conv_dw_<i>, conv_pw_<i>); its norm is `${name}_bn`. */
  private readonly layers: { name: string; conv: tf.Variable; norm: Norm; depthwise: boolean; stride: number; block: number }[] = [];
  /** Layers [0, frozenLayers) are kept fixed (freezeStages). */
  private frozenLayers = 0;

  /**
   * `weights`: Keras weight names ('conv1/kernel', 'conv_dw_1_bn/gamma', ...) -> tensors, e.g. from
   * `loadLayersModelWeights`; the tensors are copied (the caller keeps and disposes them).
   * null: random init (He normal convs, BN identity), for from-scratch baselines and tests.
   */
  constructor(weights: Map<string, tf.Tensor> | null, opts: MobileNetOptions = {}) {
    this.outputStride = opts.outputStride ?? 16;
    this.norm = opts.norm ?? 'frozen';
    this.last = opts.last ?? 'conv_pw_12';
    this.pretrained = weights !== null;
    if (![8, 16, 32].includes(this.outputStride)) throw new TagsegError(`mobilenet outputStride must be 8, 16 or 32, got ${this.outputStride}`);
    const normOpts: NormOptions = { kind: this.norm, eps: KERAS_BN_EPS, momentum: opts.bnMomentum, groups: opts.groups };
    const rng = new Rng(opts.seed ?? 0);
    const p = this.params;
    const take = pretrainedTaker(weights);
    const addNorm = (name: string, c: number): Norm => {
      const init = {
        gamma: take(`${name}/gamma`, [c]) as tf.Tensor1D | undefined,
        beta: take(`${name}/beta`, [c]) as tf.Tensor1D | undefined,
        movingMean: take(`${name}/moving_mean`, [c]) as tf.Tensor1D | undefined,
        movingVariance: take(`${name}/moving_variance`, [c]) as tf.Tensor1D | undefined,
      };
      return new Norm(p, name, c, normOpts, init);
    };

    // Stride-2 depthwise convs switched to stride 1 to reach the output stride (see file comment).
    this.dwStrides = BLOCKS.map(([, s]) => s);
    if (this.outputStride <= 16) this.dwStrides[11] = 1; // conv_dw_12
    if (this.outputStride <= 8) this.dwStrides[5] = 1; // conv_dw_6

    const conv1Shape: [number, number, number, number] = [3, 3, 3, 32];
    this.layers.push({
      name: 'conv1',
      conv: p.add('conv1.kernel', take('conv1/kernel', conv1Shape) ?? heNormalConv(rng, conv1Shape), true),
      norm: addNorm('conv1_bn', 32),
      depthwise: false,
      stride: 2,
      block: 0,
    });
    this.strides = [];
    this.channels = [];
    this.addBlocks(take, addNorm, rng);
  }

  /** The depthwise + pointwise blocks 1..12 (or up to conv_dw_13) after conv1, and the feature levels' strides and channels. */
  private addBlocks(take: (name: string, shape: number[]) => tf.Tensor | undefined, addNorm: (name: string, c: number) => Norm, rng: Rng): void {
    const p = this.params;
    let cin = 32;
    const nBlocks = this.last === 'conv_dw_13' ? 13 : 12;
    let stride = 2;
    for (let i = 1; i <= nBlocks; i++) {
      const [filters] = BLOCKS[i - 1];
      const dwShape: [number, number, number, number] = [3, 3, cin, 1];
      this.layers.push({
        name: `conv_dw_${i}`,
        // Random depthwise init: He normal with fan = 9 (one input channel per filter).
        conv: p.add(`conv_dw_${i}.depthwise_kernel`, take(`conv_dw_${i}/depthwise_kernel`, dwShape) ?? normalTensor(rng, dwShape, Math.sqrt(2 / 9)), true),
        norm: addNorm(`conv_dw_${i}_bn`, cin),
        depthwise: true,
        stride: this.dwStrides[i - 1],
        block: i,
      });
      stride *= this.dwStrides[i - 1];
      if (i === 13) break; // last = conv_dw_13: no conv_pw_13 (its kernel is not pretrained)
      const pwShape: [number, number, number, number] = [1, 1, cin, filters];
      this.layers.push({
        name: `conv_pw_${i}`,
        conv: p.add(`conv_pw_${i}.kernel`, take(`conv_pw_${i}/kernel`, pwShape) ?? heNormalConv(rng, pwShape), true),
        norm: addNorm(`conv_pw_${i}_bn`, filters),
        depthwise: false,
        stride: 1,
        block: i,
      });
      cin = filters;
      if (LEVEL_BLOCKS.includes(i)) {
        this.strides.push(stride);
        this.channels.push(filters);
      }
    }
    this.strides.push(stride);
    this.channels.push(cin);
  }


  /**
   * x: [B,H,W,3] in [-1, 1] (see `preprocess`) -> Features with 4 levels: conv_pw_3_relu (128 ch,
   * stride 4), conv_pw_5_relu (256, stride 8), conv_pw_11_relu (512, stride 16; 8 at os 8) and
   * the last map (1024 ch, stride = outputStride). Level i: [B, ceil(H/s_i), ceil(W/s_i), c_i].
   * Each conv is followed by norm and ReLU6, as in the Keras model.
   */
  forward(x: tf.Tensor4D, training: boolean, updates?: NormUpdates): Features {
    return tf.tidy(() => {
      if (x.rank !== 4 || x.shape[3] !== 3) throw new TagsegError(`mobilenet expects [B,H,W,3] input, got [${x.shape.join(', ')}]`);
      const levels: tf.Tensor4D[] = [];
      let h: tf.Tensor4D = x;
      for (const [i, l] of this.layers.entries()) {
        h = l.depthwise
          ? tf.depthwiseConv2d(h, l.conv as tf.Tensor4D, l.stride, 'same')
          : tf.conv2d(h, l.conv as tf.Tensor4D, l.stride, 'same');
        h = relu6(l.norm.apply(h, training && i >= this.frozenLayers, updates));
        if (!l.depthwise && LEVEL_BLOCKS.includes(l.block)) levels.push(h);
      }
      levels.push(h);
      return { levels, last: h, stride: this.strides[3], strides: [...this.strides], channels: [...this.channels] };
    });
  }

  /** RGB [B,H,W,3] in [0,255] -> x / 127.5 - 1 (the preprocessing MobileNet was trained with). */
  preprocess(rgb: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.sub(tf.div(tf.cast(rgb, 'float32'), 127.5), 1) as tf.Tensor4D);
  }

  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  /** Stage n ends at the n-th level's pointwise block (conv_pw_3, _5, _11), the last at the end; conv1 is frozen with stage 1. */
  freezeStages(stages: number): number {
    checkFrozenStages(stages, this.strides.length);
    const lastBlock = stages === 0 ? -1 : (LEVEL_BLOCKS[stages - 1] ?? Infinity);
    const n = this.layers.findIndex((l) => l.block > lastBlock);
    this.frozenLayers = Math.max(this.frozenLayers, n < 0 ? this.layers.length : n);
    const prefixes = this.layers.slice(0, this.frozenLayers).flatMap((l) => [`${l.name}.`, `${l.name}_bn.`]);
    return this.params.setTrainable((v) => prefixes.some((p) => v.startsWith(p)), false);
  }

  dispose(): void {
    this.params.dispose();
  }
}

/**
 * Load a tfjs LayersModel from a local directory / model.json path (read with node:fs, works on
 * any backend) or from a URL (http(s)://, or file:// where tfjs-node registered it), with
 * strict: false so weights missing from the manifest (conv_pw_13/kernel here) keep their init.
 */
export async function loadLayersModelFrom(pathOrUrl: string): Promise<tf.LayersModel> {
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(pathOrUrl)) {
    try {
      return await tf.loadLayersModel(pathOrUrl, { strict: false });
    } catch (err) {
      throw new TagsegError(`could not load the LayersModel at ${pathOrUrl}: ${messageOf(err)}`, { cause: err });
    }
  }
  let file = path.resolve(pathOrUrl);
  try {
    if ((await fs.stat(file)).isDirectory()) file = path.join(file, 'model.json');
  } catch (err) {
    throw new TagsegError(`model not found: ${messageOf(err)}`, {
      file,
      hint: `pass a registered model name (${pretrainedNames().join(', ')}), a folder holding model.json, or its URL`,
    });
  }
  return tf.loadLayersModel(fileSystemHandler(file), { strict: false });
}

/** A tf.io.IOHandler reading model.json + its weight files with node:fs. */
function fileSystemHandler(modelJson: string): tf.io.IOHandler {
  return {
    async load(): Promise<tf.io.ModelArtifacts> {
      let json: { modelTopology?: object; weightsManifest?: tf.io.WeightsManifestConfig; format?: string; generatedBy?: string; convertedBy?: string };
      try {
        json = JSON.parse(await fs.readFile(modelJson, 'utf8'));
      } catch (err) {
        throw new TagsegError(`cannot read model.json: ${messageOf(err)}`, { file: modelJson });
      }
      if (!json.modelTopology) throw new TagsegError('model.json has no modelTopology (not a LayersModel)', { file: modelJson });
      const dir = path.dirname(modelJson);
      const specs: tf.io.WeightsManifestEntry[] = [];
      const buffers: Buffer[] = [];
      for (const group of json.weightsManifest ?? []) {
        for (const p of group.paths) {
          const f = path.join(dir, p);
          try {
            buffers.push(await fs.readFile(f));
          } catch (err) {
            throw new TagsegError(`weight file listed in model.json cannot be read: ${messageOf(err)}`, { file: f });
          }
        }
        specs.push(...group.weights);
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength) as ArrayBuffer;
      return {
        modelTopology: json.modelTopology,
        weightSpecs: specs,
        weightData,
        format: json.format,
        generatedBy: json.generatedBy,
        convertedBy: json.convertedBy,
      };
    },
  };
}

/**
 * Every weight of a LayersModel as Keras name ('conv1/kernel', 'conv1_bn/moving_mean', ...) ->
 * tensor copy. The caller owns (disposes) the tensors; the model is disposed.
 */
export async function loadLayersModelWeights(pathOrUrl: string): Promise<Map<string, tf.Tensor>> {
  const model = await loadLayersModelFrom(pathOrUrl);
  try {
    const out = new Map<string, tf.Tensor>();
    for (const w of model.weights) out.set(w.originalName, tf.clone(w.read()));
    return out;
  } finally {
    model.dispose();
  }
}

/**
 * The pretrained MobileNet v1 backbone. `path`: a registered model name, folder / model.json or
 * URL of the LayersModel (nn/pretrained.ts resolves it); default MOBILENET_PRETRAINED.
 */
export async function loadMobileNetV1(opts: MobileNetOptions & { path?: string } = {}): Promise<MobileNetV1> {
  const weights = await loadLayersModelWeights(await resolvePretrained(opts.path || MOBILENET_PRETRAINED));
  try {
    return new MobileNetV1(weights, opts);
  } finally {
    tf.dispose([...weights.values()]);
  }
}
