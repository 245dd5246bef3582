/**
 * Affinity labels from CAMs, at feature (label-grid) resolution: which pixels are confidently a
 * foreground class, confidently background, or unknown (255, no pairs).
 *
 * With a background class (IRN step/cam_to_ir_label.py):
 *   fg map = argmax over [bg = conf_fg_thres (0.30), CAM_1..C]  (a class only where a CAM > 0.30)
 *   bg map = argmax over [bg = conf_bg_thres (0.05), CAM_1..C]  (bg only where every CAM <= 0.05)
 *   each map optionally refined (IRN: dense CRF, `refine`), then
 *   label = the fg map's class where it says fg; bg where BOTH maps say bg; else 255.
 *   Ties go to bg (numpy argmax takes the first maximum, and bg is first): a class needs a CAM
 *   strictly above the threshold; among classes the lower channel wins a tie.
 * Without a background class (MSRC-v2: every pixel belongs to one of the image's tagged classes;
 * tagseg's own rule, no reference code):
 *   one tag:   that class where its CAM >= floor, else 255;
 *   two+ tags: the top class where top >= floor AND top - second >= margin, else 255;
 *   no tag:    255 everywhere.
 *   With a refiner, IRN's two-map scheme carried over: the confident map above (255 = unsure) and
 *   the plain argmax over the tags are each refined, and a cell keeps the class on which both
 *   refined maps agree, else 255 (the refined confident map grows into the unsure band along
 *   image edges; the argmax map vetoes where the CAMs disagree).
 */
import * as tf from '@tensorflow/tfjs';
import { TagsegError } from '../../pipeline/errors.js';
import { IGNORE } from './pairs.js';

/**
 * Refines one label map (dataset class indices, no 255) in place of IRN's dense CRF, e.g. a
 * closure over the image calling ops/crf.ts. `which` says whether it is the fg (high threshold) or
 * bg (low threshold) map. Must return a map of the same size.
 */
export type LabelRefiner = (labels: Uint8Array, info: { height: number; width: number; which: RefinedMap }) => Uint8Array;

/**
 * Which map a LabelRefiner gets. With bg: 'fg' (high bg score, no 255) or 'bg' (low bg score, no
 * 255). Without bg: 'confident' (the margin/floor rule, 255 where unsure) or 'argmax' (no 255).
 */
export type RefinedMap = 'fg' | 'bg' | 'confident' | 'argmax';

export interface AffinityLabelOptions {
  /** Dataset index of the background class, or null when the dataset has none. */
  background: number | null;
  /** With bg: bg score of the fg map (IRN conf_fg_thres). Default 0.30. */
  confFgThres?: number;
  /** With bg: bg score of the bg map (IRN conf_bg_thres). Default 0.05. */
  confBgThres?: number;
  /** Without bg: the top class must beat the second by this much. Default 0.2. */
  margin?: number;
  /** Without bg: the top class score must be at least this. Default 0.3. */
  floor?: number;
  /** Refinement of each map before combining (IRN: dense CRF; see the file comment without bg). */
  refine?: LabelRefiner;
}

/**
 * With bg: the two confidence maps of IRN. cams [C, h, w] (max-normalised, float) of the tagged
 * classes, classes: their dataset indices (C of them) -> { fg, bg } int32 [h, w] of dataset class
 * indices: the class of argmax_c CAM where max_c CAM > confFgThres (resp. confBgThres), else
 * `background`. With C = 0 both maps are all background.
 */
export function confidenceMaps(
  cams: tf.Tensor3D,
  classes: readonly number[],
  background: number,
  confFgThres = 0.3,
  confBgThres = 0.05,
): { fg: tf.Tensor2D; bg: tf.Tensor2D } {
  checkInputs(cams, classes, background);
  const [c, h, w] = cams.shape;
  return tf.tidy(() => {
    if (c === 0) return { fg: tf.fill([h, w], background, 'int32') as tf.Tensor2D, bg: tf.fill([h, w], background, 'int32') as tf.Tensor2D };
    const x = tf.cast(cams, 'float32');
    const top = tf.max(x, 0);
    const cls = tf.gather(tf.tensor1d(classes as number[], 'int32'), tf.argMax(x, 0));
    const bgMap = tf.fill([h, w], background, 'int32');
    return {
      fg: tf.where(tf.greater(top, confFgThres), cls, bgMap) as tf.Tensor2D,
      bg: tf.where(tf.greater(top, confBgThres), cls, bgMap) as tf.Tensor2D,
    };
  });
}

/**
 * IRN's combination of the (refined) confidence maps, per pixel: fg[p] if fg[p] != background;
 * background if fg[p] and bg[p] are both background; else 255.
 */
export function combineConfidence(fg: Uint8Array, bg: Uint8Array, background: number): Uint8Array {
  if (fg.length !== bg.length) throw new TagsegError(`combineConfidence: maps of ${fg.length} and ${bg.length} pixels`);
  const out = new Uint8Array(fg.length);
  for (let i = 0; i < fg.length; i++) out[i] = fg[i] !== background ? fg[i] : bg[i] === background ? background : IGNORE;
  return out;
}

/** Without bg: the class where the two refined maps agree (and it is not 255), else 255. */
export function combineAgreement(confident: Uint8Array, argmax: Uint8Array): Uint8Array {
  if (confident.length !== argmax.length) throw new TagsegError(`combineAgreement: maps of ${confident.length} and ${argmax.length} pixels`);
  const out = new Uint8Array(confident.length);
  for (let i = 0; i < confident.length; i++) out[i] = confident[i] === argmax[i] ? confident[i] : IGNORE;
  return out;
}

/**
 * Without bg: cams [C, h, w] of the tagged classes, classes their dataset indices -> int32
 * [h, w] of dataset class indices or 255, by the margin/floor rule of the file comment.
 */
export function noBackgroundLabels(cams: tf.Tensor3D, classes: readonly number[], margin = 0.2, floor = 0.3): tf.Tensor2D {
  checkInputs(cams, classes, null);
  const [c, h, w] = cams.shape;
  return tf.tidy(() => {
    if (c === 0) return tf.fill([h, w], IGNORE, 'int32') as tf.Tensor2D;
    const x = tf.cast(cams, 'float32');
    const ids = tf.tensor1d(classes as number[], 'int32');
    const ignore = tf.fill([h, w], IGNORE, 'int32');
    if (c === 1) return tf.where(tf.greaterEqual(tf.squeeze(x, [0]), floor), tf.fill([h, w], classes[0], 'int32'), ignore) as tf.Tensor2D;
    const { values, indices } = tf.topk(tf.transpose(x, [1, 2, 0]), 2); // [h, w, 2], ties: lower channel first
    const [v1, v2] = tf.unstack(values, 2);
    const first = tf.squeeze(tf.slice(indices, [0, 0, 0], [h, w, 1]), [2]);
    const confident = tf.logicalAnd(tf.greaterEqual(v1, floor), tf.greaterEqual(tf.sub(v1, v2), margin));
    return tf.where(confident, tf.gather(ids, first), ignore) as tf.Tensor2D;
  });
}

/**
 * Affinity label map of one image: cams [C, h, w] (max-normalised CAMs of its tagged classes at
 * label-grid resolution), classes: their dataset indices -> Uint8Array [h * w] (row-major) of
 * dataset class indices or 255 (rules in the file comment). A refiner that must be awaited
 * (e.g. a CRF in a worker) composes the same pieces: confidenceMaps -> read -> refine ->
 * combineConfidence.
 */
export function affinityLabels(cams: tf.Tensor3D, classes: readonly number[], opts: AffinityLabelOptions): Uint8Array {
  const [, h, w] = cams.shape;
  if (opts.background === null) {
    const read = (t: tf.Tensor2D): Uint8Array => {
      try {
        return Uint8Array.from(t.dataSync());
      } finally {
        t.dispose();
      }
    };
    const confident = read(noBackgroundLabels(cams, classes, opts.margin ?? 0.2, opts.floor ?? 0.3));
    if (!opts.refine || classes.length < 2) return confident;
    // margin 0 and floor 0 accept every cell: the plain argmax over the tags
    const argmax = read(noBackgroundLabels(cams, classes, 0, 0));
    return combineAgreement(
      checkRefined(opts.refine(confident, { height: h, width: w, which: 'confident' }), h * w),
      checkRefined(opts.refine(argmax, { height: h, width: w, which: 'argmax' }), h * w),
    );
  }
  const background = opts.background;
  const maps = confidenceMaps(cams, classes, background, opts.confFgThres ?? 0.3, opts.confBgThres ?? 0.05);
  let fg: Uint8Array;
  let bg: Uint8Array;
  try {
    fg = Uint8Array.from(maps.fg.dataSync());
    bg = Uint8Array.from(maps.bg.dataSync());
  } finally {
    tf.dispose([maps.fg, maps.bg]);
  }
  if (opts.refine) {
    fg = checkRefined(opts.refine(fg, { height: h, width: w, which: 'fg' }), h * w);
    bg = checkRefined(opts.refine(bg, { height: h, width: w, which: 'bg' }), h * w);
  }
  return combineConfidence(fg, bg, background);
}

function checkRefined(m: Uint8Array, n: number): Uint8Array {
  if (!(m instanceof Uint8Array) || m.length !== n) throw new TagsegError(`affinity label refinement returned ${m?.length} values for ${n} pixels`);
  return m;
}

function checkInputs(cams: tf.Tensor, classes: readonly number[], background: number | null): void {
  if (cams.rank !== 3) throw new TagsegError(`affinity labels: cams must be [C, h, w], got [${cams.shape.join(', ')}]`);
  if (classes.length !== cams.shape[0]) {
    throw new TagsegError(`affinity labels: ${cams.shape[0]} CAM channels but ${classes.length} class indices`);
  }
  if (background !== null && !(Number.isInteger(background) && background >= 0 && background < IGNORE)) {
    throw new TagsegError(`affinity labels: background must be a class index in [0, 255) or null, got ${background}`);
  }
  const seen = new Set<number>();
  for (const k of classes) {
    if (!(Number.isInteger(k) && k >= 0 && k < IGNORE)) throw new TagsegError(`affinity labels: class index ${k} is not in [0, 255)`);
    if (k === background) throw new TagsegError(`affinity labels: class ${k} is the background class; pass foreground CAMs only`);
    if (seen.has(k)) throw new TagsegError(`affinity labels: class ${k} is listed twice`);
    seen.add(k);
  }
}
