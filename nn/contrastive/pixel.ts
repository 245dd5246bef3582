/**
 * Cross-image pixel contrast with pixel and region memories (Wang et al. 2021, "Exploring
 * Cross-Image Pixel Contrast for Semantic Segmentation"; tfzhou/ContrastiveSeg
 * lib/loss/loss_contrast_mem.py PixelContrastLoss, lib/models/nets/hrnet.py _dequeue_and_enqueue).
 *
 * Anchors (`sampleAnchors`): per image, every class with more than `maxViews` labelled pixels;
 * n_view = min(maxSamples / #(image, class) pairs, maxViews) anchors per pair, half hard (labelled c,
 * predicted otherwise) and half easy (labelled c and predicted c), the other kind filling in when
 * one kind is short; drawn without replacement.
 *
 * Loss (supervised InfoNCE, `contrastLoss`): with l_am = a . m / T over the contrast set m,
 *   L_a = -(T / T_base) mean_{m in P(a)} [ l_am - log(exp(l_am) + sum_{n in N(a)} exp(l_an)) ],
 * P(a) = contrast entries of a's class, N(a) = entries of other classes; mean over anchors.
 * With memory the contrast set is the filled slots of both queues (constants); without
 * (memorySize 0) it is the anchors themselves, a excluded from P(a) (ContrastiveSeg without memory).
 *
 * Memory (`update`, after the optimizer step): per image and labelled class, the L2-normalised class
 * mean embedding goes into the region queue, and min(n, pixelsPerImage) of the class's pixels,
 * drawn without replacement, into the pixel queue. Each queue is `memorySize` slots per class with
 * a pointer that advances by the number of items written, modulo the size.
 *
 * Deviations from the official code, deliberately:
 * - Its pixel-queue pointer advances by 1 instead of K after writing K items (methods.md 4), and
 *   when ptr + K >= size it overwrites the last K slots and resets to 0; here writes wrap around
 *   slot by slot and the pointer moves by K.
 * - It draws the enqueued pixels as `this_feat[:, perm[:K]]`, i.e. positions 0..num_pixel-1 of the
 *   whole image rather than of the class's pixels; here they are drawn among the class's pixels.
 * - It skips class 0 (`x > 0`; Cityscapes-specific) in the enqueue and in `_sample_negative`; here
 *   every class is used, 255 is ignored.
 * - Its queues start as random unit vectors that are contrasted as if they were data; here they
 *   start empty and only filled slots are used, so the first steps (empty memory) give a zero loss.
 * - Anchors whose class has no entry in the contrast set are dropped (the official code divides
 *   by zero there).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import type { Rng } from '../rng.js';
import { IGNORE_LABEL, argmaxRows, checkBatch, checkPositive, checkPositiveInt, l2Rows, readLabels, sampleWithoutReplacement, zeroLoss } from './common.js';
import type { ContrastBatch, ContrastLoss, ContrastUpdateBatch } from './index.js';

export interface PixelContrastOptions {
  classes: number;
  dim: number;
  /** Slots per class of each queue (ContrastiveSeg 5000; 0 = no memory, contrast within the batch). */
  memorySize: number;
  /** Pixels per (image, class) enqueued per step (ContrastiveSeg pixel_update_freq 10). */
  pixelsPerImage: number;
  /** InfoNCE temperature (ContrastiveSeg 0.07 with memory, 0.1 without). */
  temperature: number;
  /** Base temperature: the loss is scaled by temperature / baseTemperature (ContrastiveSeg: equal, scale 1). */
  baseTemperature: number;
  /** Anchors per batch at most (ContrastiveSeg max_samples 1024). */
  maxSamples: number;
  /** Anchors per (image, class) at most; classes with no more pixels than this in an image are skipped (max_views 100). */
  maxViews: number;
}

/** ContrastiveSeg's settings with memory (configs/cityscapes/H_48_D_4_MEM.json, loss_contrast_mem.py). */
export const PIXEL_DEFAULTS: Omit<PixelContrastOptions, 'classes' | 'dim'> = {
  memorySize: 5000,
  pixelsPerImage: 10,
  temperature: 0.07,
  baseTemperature: 0.07,
  maxSamples: 1024,
  maxViews: 100,
};

/** Sampled anchors: flat pixel indices (b * h * w + y * w + x) and their classes. */
export interface Anchors {
  index: number[];
  cls: number[];
}

/**
 * ContrastiveSeg `_hard_anchor_sampling`: labels y and predictions pred [B * hw] -> anchors.
 * Order: image, then class ascending, hard before easy within a pair.
 */
export function sampleAnchors(y: Int32Array, pred: Int32Array, b: number, hw: number, o: { maxSamples: number; maxViews: number }, rng: Rng): Anchors {
  const pairs: { img: number; cls: number; hard: number[]; easy: number[] }[] = [];
  for (let i = 0; i < b; i++) {
    const byClass = new Map<number, { hard: number[]; easy: number[] }>();
    for (let p = i * hw; p < (i + 1) * hw; p++) {
      const c = y[p];
      if (c === IGNORE_LABEL) continue;
      let e = byClass.get(c);
      if (!e) byClass.set(c, (e = { hard: [], easy: [] }));
      (pred[p] === c ? e.easy : e.hard).push(p);
    }
    for (const c of [...byClass.keys()].sort((p, q) => p - q)) {
      const e = byClass.get(c)!;
      if (e.hard.length + e.easy.length > o.maxViews) pairs.push({ img: i, cls: c, ...e });
    }
  }
  const out: Anchors = { index: [], cls: [] };
  if (pairs.length === 0) return out;
  const nView = Math.min(Math.floor(o.maxSamples / pairs.length), o.maxViews);
  for (const p of pairs) {
    const nh = p.hard.length;
    const ne = p.easy.length;
    let keepHard: number;
    let keepEasy: number;
    if (nh >= nView / 2 && ne >= nView / 2) {
      keepHard = Math.floor(nView / 2);
      keepEasy = nView - keepHard;
    } else if (nh >= nView / 2) {
      keepEasy = ne;
      keepHard = nView - ne;
    } else {
      // ne >= nView / 2 here: nh + ne > maxViews >= nView
      keepHard = nh;
      keepEasy = nView - nh;
    }
    for (const idx of [...sampleWithoutReplacement(rng, p.hard, keepHard), ...sampleWithoutReplacement(rng, p.easy, keepEasy)]) {
      out.index.push(idx);
      out.cls.push(p.cls);
    }
  }
  return out;
}

/**
 * Supervised InfoNCE of anchors [A, D] (classes ya) against a contrast set [M, D] (classes ym); see
 * the file comment. `self`: the contrast set is the anchors (M = A) and a is not its own positive.
 * Anchors without positives are left out of the mean; none left -> 0. Differentiable w.r.t. both inputs.
 */
export function contrastLoss(anchors: tf.Tensor2D, ya: readonly number[], contrast: tf.Tensor2D, ym: readonly number[], temperature: number, baseTemperature: number, self = false): tf.Scalar {
  return tf.tidy(() => {
    const a = ya.length;
    const m = ym.length;
    if (anchors.shape[0] !== a || contrast.shape[0] !== m || (self && a !== m)) {
      throw new TagsegError(`contrastLoss: ${anchors.shape[0]} anchors with ${a} classes, ${contrast.shape[0]} entries with ${m} classes`);
    }
    // positives per anchor from class counts (JS): the masks below are [A, M] tensors, never JS arrays
    const perClass = new Map<number, number>();
    for (const c of ym) perClass.set(c, (perClass.get(c) ?? 0) + 1);
    const keep = new Float32Array(a);
    let kept = 0;
    ya.forEach((c, i) => {
      const np = (perClass.get(c) ?? 0) - (self ? 1 : 0);
      if (np > 0) {
        keep[i] = 1 / np;
        kept++;
      }
    });
    if (kept === 0) return tf.add(zeroLoss(anchors), zeroLoss(contrast)) as tf.Scalar;
    // Shift by the constant 1 / T instead of ContrastiveSeg's detached row max: the loss is
    // invariant to per-row shifts, unit vectors keep a . m - 1 in [-2, 0], so exp stays in
    // [e^(-2/T), 1] (normal float32 for T >= 0.03), and no [A, M] max tensor is needed.
    const logits = tf.mul(tf.sub(tf.matMul(anchors, contrast, false, true), 1), 1 / temperature);
    const same = tf.cast(tf.equal(tf.tensor2d(Int32Array.from(ya), [a, 1], 'int32'), tf.tensor2d(Int32Array.from(ym), [1, m], 'int32')), 'float32');
    const e = tf.exp(logits);
    const negSum = tf.sum(tf.mul(e, tf.sub(1, same)), 1, true);
    const logProb = tf.sub(logits, tf.log(tf.add(e, negSum)));
    const pos = self ? tf.sub(same, tf.eye(a)) : same;
    const meanPos = tf.mul(tf.sum(tf.mul(pos, logProb), 1), tf.tensor1d(keep)); // 0 for anchors without positives
    return tf.mul(tf.sum(meanPos), -(temperature / baseTemperature) / kept) as tf.Scalar;
  });
}

export class PixelContrast implements ContrastLoss {
  readonly kind = 'pixel' as const;
  readonly o: PixelContrastOptions;
  /** [K * S, D] float32: class k's slots are rows k*S .. (k+1)*S - 1 (absent when memorySize is 0). */
  readonly pixelQueue?: tf.Variable;
  readonly regionQueue?: tf.Variable;
  /** [K] int32: next slot of each class. */
  readonly pixelPtr?: tf.Variable;
  readonly regionPtr?: tf.Variable;
  /** [K] int32: filled slots of each class (<= S). */
  readonly pixelCount?: tf.Variable;
  readonly regionCount?: tf.Variable;

  constructor(o: PixelContrastOptions) {
    const who = 'pixel contrast';
    checkPositiveInt(who, 'classes', o.classes);
    checkPositiveInt(who, 'dim', o.dim);
    if (!(Number.isInteger(o.memorySize) && o.memorySize >= 0)) throw new TagsegError(`${who}: memorySize must be a non-negative integer, got ${o.memorySize}`);
    checkPositiveInt(who, 'pixelsPerImage', o.pixelsPerImage);
    checkPositiveInt(who, 'maxSamples', o.maxSamples);
    checkPositiveInt(who, 'maxViews', o.maxViews);
    checkPositive(who, 'temperature', o.temperature);
    checkPositive(who, 'baseTemperature', o.baseTemperature);
    this.o = { ...o };
    if (o.memorySize > 0) {
      const rows = o.classes * o.memorySize;
      // tf.variable copies nothing and takes no ownership: dispose the initial value
      const own = (t: tf.Tensor) => {
        const v = tf.variable(t, false);
        t.dispose();
        return v;
      };
      this.pixelQueue = own(tf.zeros([rows, o.dim]));
      this.regionQueue = own(tf.zeros([rows, o.dim]));
      this.pixelPtr = own(tf.zeros([o.classes], 'int32'));
      this.regionPtr = own(tf.zeros([o.classes], 'int32'));
      this.pixelCount = own(tf.zeros([o.classes], 'int32'));
      this.regionCount = own(tf.zeros([o.classes], 'int32'));
    }
  }

  /** Pointers and fill counts (JSON; the same numbers as the int32 variables). */
  state(): { pixelPtr: number[]; pixelCount: number[]; regionPtr: number[]; regionCount: number[] } {
    const read = (v?: tf.Variable) => (v ? Array.from(v.dataSync()) : []);
    return { pixelPtr: read(this.pixelPtr), pixelCount: read(this.pixelCount), regionPtr: read(this.regionPtr), regionCount: read(this.regionCount) };
  }

  loss(batch: ContrastBatch, rng: Rng): tf.Scalar {
    const { b, h, w, d, n } = checkBatch('pixel contrast', batch, this.o.classes, this.o.dim);
    const y = readLabels('pixel contrast', batch.labels, this.o.classes);
    const { pred } = argmaxRows(batch.probs.dataSync() as Float32Array, n, this.o.classes);
    const anchors = sampleAnchors(y, pred, b, h * w, this.o, rng);
    const memory = this.memoryRows();
    return tf.tidy(() => {
      if (anchors.index.length === 0) return zeroLoss(batch.embeddings);
      const flat = tf.reshape(batch.embeddings, [n, d]) as tf.Tensor2D;
      const a = tf.gather(flat, tf.tensor1d(anchors.index, 'int32')) as tf.Tensor2D;
      if (!memory) return contrastLoss(a, anchors.cls, a, anchors.cls, this.o.temperature, this.o.baseTemperature, true);
      if (memory.cls.length === 0) return zeroLoss(batch.embeddings);
      const m = tf.concat(
        [tf.gather(this.pixelQueue!, tf.tensor1d(memory.pixelRows, 'int32')), tf.gather(this.regionQueue!, tf.tensor1d(memory.regionRows, 'int32'))],
        0,
      ) as tf.Tensor2D;
      const loss = contrastLoss(a, anchors.cls, m, memory.cls, this.o.temperature, this.o.baseTemperature);
      // keep every embedding on the gradient path even when no anchor has a positive
      return tf.add(loss, zeroLoss(batch.embeddings)) as tf.Scalar;
    });
  }

  /** Filled slot rows of both queues and their classes (null without memory). */
  private memoryRows(): { pixelRows: number[]; regionRows: number[]; cls: number[] } | null {
    if (!this.pixelCount || !this.regionCount) return null;
    const S = this.o.memorySize;
    const rowsOf = (count: Int32Array, cls: number[]) => {
      const rows: number[] = [];
      count.forEach((c, k) => {
        for (let s = 0; s < c; s++) {
          rows.push(k * S + s);
          cls.push(k);
        }
      });
      return rows;
    };
    const cls: number[] = [];
    const pr = rowsOf(this.pixelCount.dataSync() as Int32Array, cls);
    const rr = rowsOf(this.regionCount.dataSync() as Int32Array, cls);
    return { pixelRows: pr, regionRows: rr, cls };
  }

  update(batch: ContrastUpdateBatch, rng: Rng): void {
    if (!this.pixelQueue || !this.regionQueue) return;
    const { b, h, w, d, n } = checkBatch('pixel contrast', batch, this.o.classes, this.o.dim);
    const y = readLabels('pixel contrast', batch.labels, this.o.classes);
    const hw = h * w;
    const pixelIdx: number[] = [];
    const pixelCls: number[] = [];
    const regionCls: number[] = [];
    const regionPixels: number[][] = [];
    for (let i = 0; i < b; i++) {
      const byClass = new Map<number, number[]>();
      for (let p = i * hw; p < (i + 1) * hw; p++) {
        const c = y[p];
        if (c === IGNORE_LABEL) continue;
        let list = byClass.get(c);
        if (!list) byClass.set(c, (list = []));
        list.push(p);
      }
      for (const c of [...byClass.keys()].sort((p, q) => p - q)) {
        const list = byClass.get(c)!;
        regionCls.push(c);
        regionPixels.push(list);
        for (const p of sampleWithoutReplacement(rng, list, this.o.pixelsPerImage)) {
          pixelIdx.push(p);
          pixelCls.push(c);
        }
      }
    }
    if (regionCls.length === 0) return;
    const [px, rg] = tf.tidy(() => {
      const flat = tf.reshape(batch.embeddings, [n, d]) as tf.Tensor2D;
      const pixels = l2Rows(tf.gather(flat, tf.tensor1d(pixelIdx, 'int32')) as tf.Tensor2D);
      // region = class mean over the image's pixels of that class: a [R, N] averaging matrix
      // would be R x N; a segment sum over the concatenated member lists is linear in N
      const members = regionPixels.flat();
      const seg = regionPixels.flatMap((l, r) => l.map(() => r));
      const sums = tf.unsortedSegmentSum(tf.gather(flat, tf.tensor1d(members, 'int32')), tf.tensor1d(seg, 'int32'), regionCls.length);
      return [pixels, l2Rows(sums as tf.Tensor2D)];
    });
    try {
      this.enqueue('pixel', px, pixelCls);
      this.enqueue('region', rg, regionCls);
    } finally {
      tf.dispose([px, rg]);
    }
  }

  /**
   * Writes rows [R, D] of classes `cls` into a queue, in order: row r goes to slot ptr[c] of its
   * class, then ptr[c] = (ptr[c] + 1) mod S (so R_c rows move class c's pointer by R_c mod S).
   * More than S rows of one class in one call: the later rows win, as if written one by one.
   */
  enqueue(which: 'pixel' | 'region', rows: tf.Tensor2D, cls: readonly number[]): void {
    const queue = which === 'pixel' ? this.pixelQueue : this.regionQueue;
    const ptrVar = which === 'pixel' ? this.pixelPtr : this.regionPtr;
    const countVar = which === 'pixel' ? this.pixelCount : this.regionCount;
    if (!queue || !ptrVar || !countVar) throw new TagsegError('pixel contrast: enqueue needs memorySize > 0');
    const { classes: K, memorySize: S, dim: D } = this.o;
    if (rows.rank !== 2 || rows.shape[1] !== D || rows.shape[0] !== cls.length) {
      throw new TagsegError(`pixel contrast: enqueue of [${rows.shape.join(', ')}] rows with ${cls.length} classes, dim ${D}`);
    }
    if (cls.length === 0) return;
    const ptr = Int32Array.from(ptrVar.dataSync());
    const count = Int32Array.from(countVar.dataSync());
    const slotRow = new Map<number, number>();
    cls.forEach((c, r) => {
      if (!(Number.isInteger(c) && c >= 0 && c < K)) throw new TagsegError(`pixel contrast: enqueue class ${c} outside [0, ${K})`);
      slotRow.set(c * S + ptr[c], r);
      ptr[c] = (ptr[c] + 1) % S;
      count[c] = Math.min(S, count[c] + 1);
    });
    const slots = [...slotRow.keys()];
    const next = tf.tidy(() => {
      const src = tf.gather(rows, tf.tensor1d(slots.map((s) => slotRow.get(s)!), 'int32'));
      return tf.tensorScatterUpdate(queue, tf.tensor2d(slots, [slots.length, 1], 'int32'), src);
    });
    queue.assign(next);
    next.dispose();
    const p = tf.tensor1d(ptr, 'int32');
    const c = tf.tensor1d(count, 'int32');
    ptrVar.assign(p);
    countVar.assign(c);
    tf.dispose([p, c]);
  }

  variables(): Map<string, tf.Variable> {
    const out = new Map<string, tf.Variable>();
    if (this.pixelQueue) {
      out.set('pixel_queue', this.pixelQueue);
      out.set('pixel_ptr', this.pixelPtr!);
      out.set('pixel_count', this.pixelCount!);
      out.set('region_queue', this.regionQueue!);
      out.set('region_ptr', this.regionPtr!);
      out.set('region_count', this.regionCount!);
    }
    return out;
  }

  dispose(): void {
    tf.dispose([this.pixelQueue, this.regionQueue, this.pixelPtr, this.regionPtr, this.pixelCount, this.regionCount].filter((v): v is tf.Variable => v !== undefined));
  }
}
