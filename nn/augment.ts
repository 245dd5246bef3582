/**
 * Batch augmentations on tensors, deterministic given the Rng passed in. Each is split into
 * "sample parameters" (pure JS, consumes the Rng in a fixed order) and "apply" (a pure tensor
 * function), so the same crop / flip can be applied to label maps or CAMs, and the parameters
 * can be logged. Applied to input images only: cropAndResize has no gradient in tfjs, and none
 * is needed.
 *
 * Images are float [B,H,W,3] in [0, 255] (augment before `backbone.preprocess`).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../pipeline/errors.js';
import type { Rng } from './rng.js';

/** A crop in pixel coordinates: rows [top, top + height), columns [left, left + width). */
export interface CropBox {
  top: number;
  left: number;
  height: number;
  width: number;
}

export interface RandomResizedCropOptions {
  /** Output [height, width]. */
  size: [number, number];
  /** Range of the crop area as a fraction of the image area. Default [0.08, 1] (torchvision). */
  scale?: [number, number];
  /** Range of the crop aspect ratio w/h, sampled log-uniformly. Default [3/4, 4/3] (torchvision). */
  ratio?: [number, number];
}

/**
 * Sample one crop per image with torchvision's RandomResizedCrop.get_params: up to 10 tries of
 * (area ~ U(scale) * H*W, log-ratio ~ U(log ratio)), else a central crop with the ratio clamped.
 */
export function sampleResizedCrops(rng: Rng, batch: number, height: number, width: number, opts: RandomResizedCropOptions): CropBox[] {
  const [smin, smax] = opts.scale ?? [0.08, 1];
  const [rmin, rmax] = opts.ratio ?? [3 / 4, 4 / 3];
  if (!(0 < smin && smin <= smax && smax <= 1)) throw new TagsegError(`crop scale must satisfy 0 < min <= max <= 1, got [${smin}, ${smax}]`);
  if (!(0 < rmin && rmin <= rmax)) throw new TagsegError(`crop ratio must satisfy 0 < min <= max, got [${rmin}, ${rmax}]`);
  const area = height * width;
  const boxes: CropBox[] = [];
  for (let b = 0; b < batch; b++) {
    let box: CropBox | undefined;
    for (let attempt = 0; attempt < 10 && !box; attempt++) {
      const target = area * rng.uniform(smin, smax);
      const ar = Math.exp(rng.uniform(Math.log(rmin), Math.log(rmax)));
      const w = Math.round(Math.sqrt(target * ar));
      const h = Math.round(Math.sqrt(target / ar));
      if (w > 0 && h > 0 && w <= width && h <= height) {
        box = { top: rng.int(0, height - h + 1), left: rng.int(0, width - w + 1), height: h, width: w };
      }
    }
    if (!box) {
      const inRatio = width / height;
      let w: number;
      let h: number;
      if (inRatio < rmin) {
        w = width;
        h = Math.round(w / rmin);
      } else if (inRatio > rmax) {
        h = height;
        w = Math.round(h * rmax);
      } else {
        w = width;
        h = height;
      }
      box = { top: Math.floor((height - h) / 2), left: Math.floor((width - w) / 2), height: h, width: w };
    }
    boxes.push(box);
  }
  return boxes;
}

/**
 * Crop box b of image b and resize it to `size`: x [B,H,W,C] -> [B,size[0],size[1],C] (float32).
 * 'bilinear' for images, 'nearest' for label maps (pass extrapolationValue 255 for labels; boxes
 * inside the image never extrapolate). Pixel centres of the box's first/last row map to the
 * output's first/last row (tf.image.cropAndResize's corner-aligned sampling).
 */
export function cropAndResizeBatch(
  x: tf.Tensor4D,
  boxes: CropBox[],
  size: [number, number],
  method: 'bilinear' | 'nearest' = 'bilinear',
  extrapolationValue = 0,
): tf.Tensor4D {
  return tf.tidy(() => {
    const [b, h, w] = x.shape;
    if (boxes.length !== b) throw new TagsegError(`cropAndResizeBatch: ${boxes.length} boxes for a batch of ${b}`);
    const norm = (v: number, n: number) => (n > 1 ? v / (n - 1) : 0);
    const coords = boxes.flatMap((bx) => [norm(bx.top, h), norm(bx.left, w), norm(bx.top + bx.height - 1, h), norm(bx.left + bx.width - 1, w)]);
    const boxT = tf.tensor2d(coords, [b, 4], 'float32');
    const ind = tf.tensor1d(boxes.map((_, i) => i), 'int32');
    return tf.image.cropAndResize(tf.cast(x, 'float32') as tf.Tensor4D, boxT, ind, size, method, extrapolationValue);
  });
}

/** Random resized crop of images [B,H,W,C] -> [B,size[0],size[1],C]; returns the boxes used too. */
export function randomResizedCrop(images: tf.Tensor4D, rng: Rng, opts: RandomResizedCropOptions): { images: tf.Tensor4D; boxes: CropBox[] } {
  const [b, h, w] = images.shape;
  const boxes = sampleResizedCrops(rng, b, h, w, opts);
  return { images: cropAndResizeBatch(images, boxes, opts.size, 'bilinear'), boxes };
}

/** One flip decision per image, true with probability p. */
export function sampleFlips(rng: Rng, batch: number, p = 0.5): boolean[] {
  return Array.from({ length: batch }, () => rng.bernoulli(p));
}

/** Mirror (left-right) the images whose flag is set: x [B,H,W,C] -> [B,H,W,C]. */
export function applyHorizontalFlip(x: tf.Tensor4D, flips: boolean[]): tf.Tensor4D {
  return tf.tidy(() => {
    if (flips.length !== x.shape[0]) throw new TagsegError(`applyHorizontalFlip: ${flips.length} flags for a batch of ${x.shape[0]}`);
    if (!flips.some(Boolean)) return x.clone();
    const mirrored = tf.reverse(x, 2);
    const mask = tf.tensor4d(flips.map((f) => (f ? 1 : 0)), [x.shape[0], 1, 1, 1], 'bool');
    return tf.where(tf.broadcastTo(mask, x.shape), mirrored, x) as tf.Tensor4D;
  });
}

/** Random horizontal flip with probability p per image; returns the flags too. */
export function randomHorizontalFlip(images: tf.Tensor4D, rng: Rng, p = 0.5): { images: tf.Tensor4D; flips: boolean[] } {
  const flips = sampleFlips(rng, images.shape[0], p);
  return { images: applyHorizontalFlip(images, flips), flips };
}

export interface ColorJitterOptions {
  /** Factor drawn from [1 - b, 1 + b]. IRN: 0.3 (irn voc12/dataloader.py ColorJitter). Default 0. */
  brightness?: number;
  /** Default 0. */
  contrast?: number;
  /** Default 0. */
  saturation?: number;
}

/** Per-image jitter factors (1 = unchanged). */
export interface JitterFactors {
  brightness: number;
  contrast: number;
  saturation: number;
}

/** One set of factors per image, each uniform in [max(0, 1 - s), 1 + s] (torchvision ColorJitter). */
export function sampleColorJitter(rng: Rng, batch: number, opts: ColorJitterOptions): JitterFactors[] {
  const draw = (s: number | undefined) => (s ? rng.uniform(Math.max(0, 1 - s), 1 + s) : 1);
  const out: JitterFactors[] = [];
  for (let b = 0; b < batch; b++) {
    const brightness = draw(opts.brightness);
    const contrast = draw(opts.contrast);
    const saturation = draw(opts.saturation);
    out.push({ brightness, contrast, saturation });
  }
  return out;
}

/**
 * Apply jitter factors to RGB images [B,H,W,3] in [0, maxValue] -> same shape, clipped to the range.
 * As torchvision's functional ops: brightness x*f; contrast (x - m)*f + m with m the image's mean
 * grey level; saturation (x - grey)*f + grey with grey = 0.299 R + 0.587 G + 0.114 B per pixel.
 * Applied in that fixed order (torchvision shuffles the order per call; a fixed order keeps the
 * parameters a plain record). Hue jitter is not implemented.
 */
export function applyColorJitter(images: tf.Tensor4D, factors: JitterFactors[], maxValue = 255): tf.Tensor4D {
  return tf.tidy(() => {
    const b = images.shape[0];
    if (factors.length !== b) throw new TagsegError(`applyColorJitter: ${factors.length} factor sets for a batch of ${b}`);
    if (images.shape[3] !== 3) throw new TagsegError(`applyColorJitter expects RGB images, got ${images.shape[3]} channels`);
    const col = (k: keyof JitterFactors) => tf.tensor4d(factors.map((f) => f[k]), [b, 1, 1, 1], 'float32');
    const grey = (x: tf.Tensor4D) => tf.sum(tf.mul(x, [0.299, 0.587, 0.114]), 3, true);
    let x = tf.cast(images, 'float32') as tf.Tensor4D;
    x = tf.clipByValue(tf.mul(x, col('brightness')), 0, maxValue) as tf.Tensor4D;
    const m = tf.mean(grey(x), [1, 2, 3], true);
    x = tf.clipByValue(tf.add(tf.mul(tf.sub(x, m), col('contrast')), m), 0, maxValue) as tf.Tensor4D;
    const g = grey(x);
    x = tf.clipByValue(tf.add(tf.mul(tf.sub(x, g), col('saturation')), g), 0, maxValue) as tf.Tensor4D;
    return x;
  });
}

/** Random colour jitter of RGB images [B,H,W,3] in [0, maxValue]; returns the factors too. */
export function colorJitter(images: tf.Tensor4D, rng: Rng, opts: ColorJitterOptions, maxValue = 255): { images: tf.Tensor4D; factors: JitterFactors[] } {
  const factors = sampleColorJitter(rng, images.shape[0], opts);
  return { images: applyColorJitter(images, factors, maxValue), factors };
}
