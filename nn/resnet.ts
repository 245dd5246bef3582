/**
 * ResNet backbone with basic blocks (He et al. 2016, the ResNet-18/34 block), trained from
 * scratch, as explicit variables + a pure forward function.
 *
 * Layout follows torchvision's ResNet: 7x7/2 conv stem + 3x3/2 max pool (stride 4), then four
 * stages of `depth[i]` blocks with width * [1, 2, 4, 8] channels. Output stride 16 / 8 is reached
 * by NOT downsampling in the last one / two stages (IRN uses strides (2, 2, 2, 1) for stride 16:
 * irn net/resnet50_cam.py). The reference code keeps the receptive field with dilation instead;
 * tfjs has no gradient for dilated convs, so stride-8 maps here see a smaller context -- a
 * deliberate trade-off (methods.md section 1).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import { type Backbone, type Features, type OutputStride, checkFrozenStages } from './backbone.js';
import { maxPool, relu } from './native.js';
import { Norm, type NormKind, type NormUpdates } from './norm.js';
import { ParamStore, heNormalConv } from './params.js';
import { Rng } from './rng.js';

export interface ResNetOptions {
  /** Channels of the first stage (stages have width * [1, 2, 4, 8]). Default 64. */
  width?: number;
  /** Basic blocks per stage (4 stages). Default [2, 2, 2, 2] (ResNet-18). */
  depth?: number[];
  /** 8, 16 or 32. Default 16. */
  outputStride?: OutputStride;
  /** Default 'batch'. */
  norm?: NormKind;
  /** GroupNorm groups (upper bound), default 32. */
  groups?: number;
  /** BatchNorm momentum, PyTorch convention (weight of the new statistic), default 0.1. */
  bnMomentum?: number;
  /** Initialise the last norm gamma of each residual branch to 0 (Goyal et al. 2017). Default false, as torchvision. */
  zeroInitResidual?: boolean;
  /** Seed of the weight initialisation. Default 0. */
  seed?: number;
}

interface Block {
  stride: number;
  conv1: tf.Variable;
  norm1: Norm;
  conv2: tf.Variable;
  norm2: Norm;
  down?: { conv: tf.Variable; norm: Norm };
}

/** ImageNet channel mean/std (torchvision; IRN's imutils.Normalize). */
const MEAN = [0.485, 0.456, 0.406];
const STD = [0.229, 0.224, 0.225];

export class ResNet implements Backbone {
  readonly name = 'resnet';
  readonly outputStride: OutputStride;
  readonly norm: NormKind;
  readonly strides: number[];
  readonly channels: number[];
  readonly params = new ParamStore();
  readonly width: number;
  readonly depth: number[];
  private readonly stemConv: tf.Variable;
  private readonly stemNorm: Norm;
  private readonly stages: Block[][] = [];
  /** The stem and stages [0, frozen) are kept fixed (freezeStages). */
  private frozen = 0;

  constructor(opts: ResNetOptions = {}) {
    this.width = opts.width ?? 64;
    this.depth = opts.depth ?? [2, 2, 2, 2];
    this.outputStride = opts.outputStride ?? 16;
    this.norm = opts.norm ?? 'batch';
    if (!Number.isInteger(this.width) || this.width < 1) throw new TagsegError(`resnet width must be a positive integer, got ${this.width}`);
    if (this.depth.length !== 4 || !this.depth.every((d) => Number.isInteger(d) && d >= 1)) {
      throw new TagsegError(`resnet depth must be 4 positive integers (blocks per stage), got [${this.depth.join(', ')}]`);
    }
    if (![8, 16, 32].includes(this.outputStride)) throw new TagsegError(`resnet outputStride must be 8, 16 or 32, got ${this.outputStride}`);
    const normOpts = { kind: this.norm, groups: opts.groups, momentum: opts.bnMomentum, eps: 1e-5 };
    const rng = new Rng(opts.seed ?? 0);
    const p = this.params;

    this.stemConv = p.add('stem.conv.kernel', heNormalConv(rng, [7, 7, 3, this.width]), true);
    this.stemNorm = new Norm(p, 'stem.norm', this.width, normOpts);

    // Stage strides: stem+pool give 4; stage 1 -> 8; stage 2 -> 16 unless os 8; stage 3 -> 32 only for os 32.
    const stageStride = [1, 2, this.outputStride >= 16 ? 2 : 1, this.outputStride === 32 ? 2 : 1];
    this.strides = [];
    this.channels = [];
    let cin = this.width;
    let total = 4;
    for (let s = 0; s < 4; s++) {
      const cout = this.width * 2 ** s;
      total *= stageStride[s];
      const blocks: Block[] = [];
      for (let b = 0; b < this.depth[s]; b++) {
        const stride = b === 0 ? stageStride[s] : 1;
        const pre = `stage${s + 1}.block${b}`;
        const block: Block = {
          stride,
          conv1: p.add(`${pre}.conv1.kernel`, heNormalConv(rng, [3, 3, cin, cout]), true),
          norm1: new Norm(p, `${pre}.norm1`, cout, normOpts),
          conv2: p.add(`${pre}.conv2.kernel`, heNormalConv(rng, [3, 3, cout, cout]), true),
          norm2: new Norm(p, `${pre}.norm2`, cout, normOpts, { zeroGamma: opts.zeroInitResidual ?? false }),
        };
        if (stride !== 1 || cin !== cout) {
          block.down = {
            conv: p.add(`${pre}.down.kernel`, heNormalConv(rng, [1, 1, cin, cout]), true),
            norm: new Norm(p, `${pre}.down.norm`, cout, normOpts),
          };
        }
        blocks.push(block);
        cin = cout;
      }
      this.stages.push(blocks);
      this.strides.push(total);
      this.channels.push(cout);
    }
  }

  /**
   * x: [B,H,W,3] (preprocessed) -> Features with 4 levels:
   * strides [4, 8, 16, 16] (os 16), [4, 8, 8, 8] (os 8), [4, 8, 16, 32] (os 32);
   * channels width * [1, 2, 4, 8]; level i is [B, ceil(H / s_i), ceil(W / s_i), c_i].
   */
  forward(x: tf.Tensor4D, training: boolean, updates?: NormUpdates): Features {
    return tf.tidy(() => {
      if (x.rank !== 4 || x.shape[3] !== 3) throw new TagsegError(`resnet expects [B,H,W,3] input, got [${x.shape.join(', ')}]`);
      let h = tf.conv2d(x, this.stemConv as tf.Tensor4D, 2, 'same');
      h = relu(this.stemNorm.apply(h, training && this.frozen === 0, updates));
      h = maxPool(h, 3, 2, 'same');
      const levels: tf.Tensor4D[] = [];
      for (const [s, blocks] of this.stages.entries()) {
        for (const b of blocks) h = this.block(b, h, training && s >= this.frozen, updates);
        levels.push(h);
      }
      return { levels, last: levels[3], stride: this.strides[3], strides: [...this.strides], channels: [...this.channels] };
    });
  }

  /** One basic block: x [B,H,W,cin] -> [B,ceil(H/stride),ceil(W/stride),cout]. */
  private block(b: Block, x: tf.Tensor4D, training: boolean, updates?: NormUpdates): tf.Tensor4D {
    return tf.tidy(() => {
      let h = tf.conv2d(x, b.conv1 as tf.Tensor4D, b.stride, 'same');
      h = relu(b.norm1.apply(h, training, updates));
      h = tf.conv2d(h, b.conv2 as tf.Tensor4D, 1, 'same');
      h = b.norm2.apply(h, training, updates);
      const shortcut = b.down ? b.down.norm.apply(tf.conv2d(x, b.down.conv as tf.Tensor4D, b.stride, 'same'), training, updates) : x;
      return relu(tf.add(h, shortcut)) as tf.Tensor4D;
    });
  }

  /** RGB [B,H,W,3] in [0,255] -> (x / 255 - ImageNet mean) / std. */
  preprocess(rgb: tf.Tensor4D): tf.Tensor4D {
    return tf.tidy(() => tf.div(tf.sub(tf.div(tf.cast(rgb, 'float32'), 255), MEAN), STD) as tf.Tensor4D);
  }

  variables(): tf.Variable[] {
    return this.params.trainable();
  }

  /** Stage n = the stem (frozen with stage 1) and stage<n>'s blocks (torchvision's layer<n>). */
  freezeStages(stages: number): number {
    checkFrozenStages(stages, this.stages.length);
    this.frozen = Math.max(this.frozen, stages);
    const prefixes = this.frozen === 0 ? [] : ['stem.', ...Array.from({ length: this.frozen }, (_, s) => `stage${s + 1}.`)];
    return this.params.setTrainable((v) => prefixes.some((p) => v.startsWith(p)), false);
  }

  dispose(): void {
    this.params.dispose();
  }
}
