/**
 * SPML pixel-to-segment contrast (Ke et al. 2021, "Universal Weakly Supervised Segmentation by
 * Pixel-to-Segment Contrastive Learning"; twke18/SPML spml/utils/segsort/{common,loss}.py,
 * spml/models/predictions/segsort_softmax.py, bashscripts/voc12/train_spml_tag.sh).
 *
 * Segments (`segments`): per image, the valid pixels (label != 255) are clustered by spherical
 * k-means (ops/kmeans.ts, `clusters` centres, `kmeansIters` rounds) on the embedding concatenated
 * with the pixel's location (y, x in [-0.5, 0.5]) and re-normalised, as SPML's segment_by_kmeans
 * clusters `embeddings_with_loc`; then every cluster is cut by the semantic label and by the
 * low-level region: segment = (image, cluster, label, superpixel). SPML's low-level regions are
 * HED contours + UCM; here SLIC superpixels (ops/slic.ts) stand in for them.
 * Prototype of a segment = the normalised sum of its embeddings (with gradient, as SPML's
 * calculate_prototypes_from_labels inside the graph).
 *
 * SegSort+ loss of a pixel i with embedding e_i, own segment s(i), concentration k and a relation
 * that splits prototypes into "same" and "different" for i:
 *   num_i = sum_{s same, s != s(i)} exp(k p_s . e_i)   (exp(k p_s(i) . e_i) when there is no such s)
 *   L_i = -log( num_i / (num_i + sum_{s different} exp(k p_s . e_i)) ),   mean over pixels.
 * Relations (SPML's tag recipe: sem_ann / sem_occ / img_sim; feature affinity is off for tags):
 * - semantic annotation: same = same pseudo-label (k 6, weight 0.3);
 * - semantic co-occurrence: same = the two images share a tag, background left out (k 8, weight 0.3);
 * - low-level similarity: within each image, same = same superpixel, on the location-augmented
 *   embeddings and prototypes (k 16, weight 0.1), averaged over images.
 *
 * Deviations: SPML initialises k-means on a regular 6 x 6 grid of the crop (kmeans_num_clusters
 * [6, 6] -> 36 clusters, configs/voc12_template.yaml + initialize_cluster_labels); here the
 * k-means++ init of ops/kmeans.ts, with the same 36 centres by default. SPML also keeps the
 * segment prototypes of the last 2 batches as extra (constant) prototypes for the two semantic
 * relations (memory_bank_size 2); this module uses the current batch only.
 */
import * as tf from '@tensorflow/tfjs';
import { kmeans } from '../../ops/kmeans.js';
import { slic } from '../../ops/slic.js';
import { TagsegError } from '../../pipeline/errors.js';
import type { Rng } from '../rng.js';
import { IGNORE_LABEL, checkBatch, checkPositive, checkPositiveInt, l2Rows, readLabels, zeroLoss } from './common.js';
import type { ContrastBatch, ContrastLoss } from './index.js';

export interface SpmlOptions {
  classes: number;
  dim: number;
  /** Mixed into the per-image k-means seeds. */
  seed: number;
  /** Background class, left out of the co-occurrence tags (null: none). */
  background: number | null;
  /** k-means centres per image (SPML 6 x 6 grid = 36). */
  clusters: number;
  /** k-means rounds (SPML 10). */
  kmeansIters: number;
  /** SLIC superpixels requested per image (stand-in for HED + UCM regions). */
  superpixels: number;
  /** SLIC compactness (Achanta 10). */
  compactness: number;
  /** Concentrations k (SPML 6 / 8 / 16). */
  annotationConcentration: number;
  cooccurrenceConcentration: number;
  lowlevelConcentration: number;
  /** Relation weights (SPML 0.3 / 0.3 / 0.1; 0 switches a relation off). */
  annotationWeight: number;
  cooccurrenceWeight: number;
  lowlevelWeight: number;
}

/** SPML's tag settings (bashscripts/voc12/train_spml_tag.sh, methods.md 6) + SLIC's defaults. */
export const SPML_DEFAULTS: Omit<SpmlOptions, 'classes' | 'dim' | 'seed' | 'background'> = {
  clusters: 36,
  kmeansIters: 10,
  superpixels: 50,
  compactness: 10,
  annotationConcentration: 6,
  cooccurrenceConcentration: 8,
  lowlevelConcentration: 16,
  annotationWeight: 0.3,
  cooccurrenceWeight: 0.3,
  lowlevelWeight: 0.1,
};

/** Segments of a batch; arrays over valid pixels are image-major, in pixel order. */
export interface SpmlSegments {
  /** Flat indices (b * h * w + y * w + x) of the valid pixels [P]. */
  pixels: Int32Array;
  /** Per valid pixel: image, label, k-means cluster (within its image), superpixel (within its image), segment. */
  image: Int32Array;
  label: Int32Array;
  cluster: Int32Array;
  superpixel: Int32Array;
  segment: Int32Array;
  /** Per segment: image, label, superpixel. */
  segImage: number[];
  segLabel: number[];
  segSuperpixel: number[];
  /** Valid pixels per image [B]. */
  counts: number[];
}

/**
 * Numbers the distinct (image, cluster, label, superpixel) keys of the valid pixels in order of
 * first appearance: the intersection of the clusters with the labels and the superpixels.
 */
export function intersectSegments(image: Int32Array, cluster: Int32Array, label: Int32Array, superpixel: Int32Array): Pick<SpmlSegments, 'segment' | 'segImage' | 'segLabel' | 'segSuperpixel'> {
  const ids = new Map<string, number>();
  const segment = new Int32Array(image.length);
  const segImage: number[] = [];
  const segLabel: number[] = [];
  const segSuperpixel: number[] = [];
  for (let i = 0; i < image.length; i++) {
    const key = `${image[i]},${cluster[i]},${label[i]},${superpixel[i]}`;
    let s = ids.get(key);
    if (s === undefined) {
      s = segImage.length;
      ids.set(key, s);
      segImage.push(image[i]);
      segLabel.push(label[i]);
      segSuperpixel.push(superpixel[i]);
    }
    segment[i] = s;
  }
  return { segment, segImage, segLabel, segSuperpixel };
}

/** Location features [h * w, 2]: (y, x) as torch.linspace(0, 1, n) - 0.5 (SPML generate_location_features). */
function location(h: number, w: number, p: number): [number, number] {
  const y = Math.floor(p / w);
  const x = p % w;
  return [(h > 1 ? y / (h - 1) : 0) - 0.5, (w > 1 ? x / (w - 1) : 0) - 0.5];
}

/**
 * SegSort+ negative log-likelihood per pixel (see the file comment): e [P, D], prototypes [S, D],
 * own segment [P], same [P, S] (1 = same relation; may include the own segment), hasOther [P]
 * (1 when a same prototype other than the own one exists), valid [P, S] (1 = prototype counts for
 * this pixel; null = all) -> [P].
 */
export function segsortNll(e: tf.Tensor2D, protos: tf.Tensor2D, own: tf.Tensor1D, same: tf.Tensor2D, hasOther: tf.Tensor1D, concentration: number, valid: tf.Tensor2D | null = null): tf.Tensor1D {
  return tf.tidy(() => {
    const s = protos.shape[0];
    let sim = tf.exp(tf.mul(tf.matMul(e, protos, false, true), concentration)); // [P, S]
    if (valid) sim = tf.mul(sim, valid);
    const ownM = tf.oneHot(own, s, 1, 0, 'float32') as tf.Tensor2D;
    const ownSim = tf.sum(tf.mul(sim, ownM), 1);
    const others = tf.sum(tf.mul(sim, tf.mul(same, tf.sub(1, ownM))), 1);
    const num = tf.add(tf.mul(hasOther, others), tf.mul(tf.sub(1, hasOther), ownSim));
    const diff = tf.sum(tf.mul(sim, tf.sub(1, same)), 1);
    return tf.sub(tf.log(tf.add(diff, num)), tf.log(num)) as tf.Tensor1D;
  });
}

/** The valid pixels (label != 255) of each image in flat batch indices, and their count per image. */
function validPixels(y: ArrayLike<number>, nb: number, hw: number): { pixels: number[]; counts: number[] } {
  const pixels: number[] = [];
  const counts: number[] = [];
  for (let i = 0; i < nb; i++) {
    let c = 0;
    for (let p = i * hw; p < (i + 1) * hw; p++) {
      if (y[p] !== IGNORE_LABEL) {
        pixels.push(p);
        c++;
      }
    }
    counts.push(c);
  }
  return { pixels, counts };
}

/** k-means input of image i's n valid pixels (from pixels[start]): embedding + location, normalised (SPML embeddings_with_loc). */
function embeddingsWithLoc(emb: Float32Array, pixels: number[], start: number, n: number, d: number, h: number, w: number, i: number): Float32Array {
  const hw = h * w;
  const x = new Float32Array(n * (d + 2));
  for (let r = 0; r < n; r++) {
    const p = pixels[start + r];
    let ss = 0;
    for (let j = 0; j < d; j++) {
      const v = emb[p * d + j];
      x[r * (d + 2) + j] = v;
      ss += v * v;
    }
    const [ly, lx] = location(h, w, p - i * hw);
    x[r * (d + 2) + d] = ly;
    x[r * (d + 2) + d + 1] = lx;
    ss += ly * ly + lx * lx;
    const inv = 1 / Math.max(Math.sqrt(ss), 1e-12);
    for (let j = 0; j < d + 2; j++) x[r * (d + 2) + j] *= inv;
  }
  return x;
}

/**
 * Per-pixel flags "a same prototype other than the own one exists" for the two semantic relations,
 * from counts (JS), and the image-shares-a-tag matrix [B, B] of the co-occurrence relation.
 */
function semanticFlags(seg: SpmlSegments, tags: readonly (readonly number[])[], background: number | null): { annHas: Float32Array; share: Float32Array; occHas: Float32Array } {
  const nb = tags.length;
  const perLabel = new Map<number, number>();
  for (const l of seg.segLabel) perLabel.set(l, (perLabel.get(l) ?? 0) + 1);
  const annHas = Float32Array.from(seg.label, (l) => ((perLabel.get(l) ?? 0) > 1 ? 1 : 0));
  const tagSets = tags.map((t) => new Set(t.filter((c) => c !== background)));
  const share = new Float32Array(nb * nb);
  for (let i = 0; i < nb; i++) for (let j = 0; j < nb; j++) share[i * nb + j] = [...tagSets[i]].some((c) => tagSets[j].has(c)) ? 1 : 0;
  const segsPerImage = new Array<number>(nb).fill(0);
  for (const i of seg.segImage) segsPerImage[i]++;
  const occCount = Array.from({ length: nb }, (_, i) => segsPerImage.reduce((acc, c, j) => acc + share[i * nb + j] * c, 0) - share[i * nb + i]);
  const occHas = Float32Array.from(seg.image, (i) => (occCount[i] > 0 ? 1 : 0));
  return { annHas, share, occHas };
}

/**
 * The low-level relation of image i (its cnt pixels from row `start`): same = same superpixel, on
 * the location-augmented embeddings eLoc and prototypes protosLoc, the image's segments renumbered
 * locally. Mean NLL; call inside tf.tidy.
 */
function lowlevelImageNll(seg: SpmlSegments, eLoc: tf.Tensor2D, protosLoc: tf.Tensor2D, i: number, start: number, concentration: number): tf.Scalar {
  const cnt = seg.counts[i];
  const local = new Map<number, number>();
  seg.segImage.forEach((im, s) => {
    if (im === i) local.set(s, local.size);
  });
  const segIds = [...local.keys()];
  const own = Int32Array.from(seg.segment.subarray(start, start + cnt), (s) => local.get(s)!);
  const sp = seg.superpixel.subarray(start, start + cnt);
  const spCount = new Map<number, number>();
  for (const s of segIds) spCount.set(seg.segSuperpixel[s], (spCount.get(seg.segSuperpixel[s]) ?? 0) + 1);
  const same = tf.cast(
    tf.equal(tf.tensor2d(Int32Array.from(sp), [cnt, 1], 'int32'), tf.tensor2d(Int32Array.from(segIds, (s) => seg.segSuperpixel[s]), [1, segIds.length], 'int32')),
    'float32',
  ) as tf.Tensor2D;
  const has = tf.tensor1d(Float32Array.from(sp, (v) => ((spCount.get(v) ?? 0) > 1 ? 1 : 0)));
  const ei = tf.slice(eLoc, [start, 0], [cnt, eLoc.shape[1]]) as tf.Tensor2D;
  const pi = tf.gather(protosLoc, tf.tensor1d(segIds, 'int32')) as tf.Tensor2D;
  return tf.mean(segsortNll(ei, pi, tf.tensor1d(own, 'int32'), same, has, concentration)) as tf.Scalar;
}

/** The low-level similarity term (SPML img_sim): the per-image NLLs averaged over images with valid pixels; inside tf.tidy. */
function lowlevelLoss(seg: SpmlSegments, e: tf.Tensor2D, segment: tf.Tensor1D, h: number, w: number, concentration: number): tf.Scalar {
  const P = seg.pixels.length;
  const hw = h * w;
  const loc = new Float32Array(P * 2);
  seg.pixels.forEach((p, r) => loc.set(location(h, w, p % hw), 2 * r));
  const eLoc = l2Rows(tf.concat([e, tf.tensor2d(loc, [P, 2])], 1) as tf.Tensor2D); // [P, D + 2]
  const protosLoc = l2Rows(tf.unsortedSegmentSum(eLoc, segment, seg.segImage.length) as tf.Tensor2D);
  const perImage: tf.Scalar[] = [];
  let start = 0;
  for (let i = 0; i < seg.counts.length; i++) {
    if (seg.counts[i] === 0) continue;
    perImage.push(lowlevelImageNll(seg, eLoc, protosLoc, i, start, concentration));
    start += seg.counts[i];
  }
  return tf.mean(tf.stack(perImage)) as tf.Scalar;
}

export class SpmlContrast implements ContrastLoss {
  readonly kind = 'spml' as const;
  readonly o: SpmlOptions;

  constructor(o: SpmlOptions) {
    const who = 'spml contrast';
    checkPositiveInt(who, 'classes', o.classes);
    checkPositiveInt(who, 'dim', o.dim);
    checkPositiveInt(who, 'clusters', o.clusters);
    checkPositiveInt(who, 'superpixels', o.superpixels);
    if (!(Number.isInteger(o.kmeansIters) && o.kmeansIters >= 0)) throw new TagsegError(`${who}: kmeansIters must be a non-negative integer, got ${o.kmeansIters}`);
    if (!Number.isFinite(o.seed)) throw new TagsegError(`${who}: seed must be a finite number, got ${o.seed}`);
    if (o.background !== null && !(Number.isInteger(o.background) && o.background >= 0 && o.background < o.classes)) {
      throw new TagsegError(`${who}: background must be a class index in [0, ${o.classes}) or null, got ${o.background}`);
    }
    for (const k of ['compactness', 'annotationConcentration', 'cooccurrenceConcentration', 'lowlevelConcentration'] as const) checkPositive(who, k, o[k]);
    for (const k of ['annotationWeight', 'cooccurrenceWeight', 'lowlevelWeight'] as const) {
      if (!(Number.isFinite(o[k]) && o[k] >= 0)) throw new TagsegError(`${who}: ${k} must be >= 0, got ${o[k]}`);
    }
    this.o = { ...o };
  }

  /**
   * The batch's segments (see the file comment). Draws one k-means seed per image with valid
   * pixels from rng. Reads the embeddings back; creates no tensor that outlives the call.
   */
  segments(b: Pick<ContrastBatch, 'embeddings' | 'labels' | 'pixels'>, rng: Rng): SpmlSegments {
    const { b: nb, h, w, d } = checkBatch('spml contrast', b, this.o.classes, this.o.dim);
    const hw = h * w;
    if (b.pixels.length !== nb) throw new TagsegError(`spml contrast: ${b.pixels.length} pixel arrays for a batch of ${nb}`);
    const y = readLabels('spml contrast', b.labels, this.o.classes);
    const { pixels, counts } = validPixels(y, nb, hw);
    const P = pixels.length;
    const image = new Int32Array(P);
    const label = new Int32Array(P);
    const cluster = new Int32Array(P);
    const superpixel = new Int32Array(P);
    const emb = b.embeddings.dataSync() as Float32Array;
    let start = 0;
    for (let i = 0; i < nb; i++) {
      const n = counts[i];
      if (n === 0) continue;
      const rgb = b.pixels[i];
      if (!(rgb instanceof Uint8Array) || rgb.length !== hw * 3) {
        throw new TagsegError(`spml contrast: pixels[${i}] must be ${h} x ${w} x 3 uint8 (${hw * 3} bytes), got ${rgb?.length}`);
      }
      const sp = slic(rgb, h, w, { segments: this.o.superpixels, compactness: this.o.compactness }).labels;
      const x = embeddingsWithLoc(emb, pixels, start, n, d, h, w, i);
      const seed = (Math.imul(Math.trunc(this.o.seed) | 0, 0x9e3779b1) ^ rng.nextUint32()) >>> 0;
      const xt = tf.tensor2d(x, [n, d + 2]);
      const km = kmeans(xt, Math.min(this.o.clusters, n), { iters: this.o.kmeansIters, seed, spherical: true });
      const a = km.assign.dataSync() as Int32Array;
      tf.dispose([xt, km.centroids, km.assign]);
      for (let r = 0; r < n; r++) {
        const p = pixels[start + r];
        image[start + r] = i;
        label[start + r] = y[p];
        cluster[start + r] = a[r];
        superpixel[start + r] = sp[p - i * hw];
      }
      start += n;
    }
    return { pixels: Int32Array.from(pixels), image, label, cluster, superpixel, counts, ...intersectSegments(image, cluster, label, superpixel) };
  }

  loss(batch: ContrastBatch, rng: Rng): tf.Scalar {
    const { b: nb, h, w, d, n } = checkBatch('spml contrast', batch, this.o.classes, this.o.dim);
    if (batch.tags.length !== nb) throw new TagsegError(`spml contrast: ${batch.tags.length} tag lists for a batch of ${nb}`);
    const seg = this.segments(batch, rng);
    const P = seg.pixels.length;
    if (P === 0) return zeroLoss(batch.embeddings);
    const S = seg.segImage.length;
    const o = this.o;
    const { annHas, share, occHas } = semanticFlags(seg, batch.tags, o.background);
    return tf.tidy(() => {
      const flat = tf.reshape(batch.embeddings, [n, d]) as tf.Tensor2D;
      const e = tf.gather(flat, tf.tensor1d(seg.pixels, 'int32')) as tf.Tensor2D; // [P, D]
      const segment = tf.tensor1d(seg.segment, 'int32');
      const protos = l2Rows(tf.unsortedSegmentSum(e, segment, S) as tf.Tensor2D); // [S, D]
      let total: tf.Tensor = zeroLoss(batch.embeddings);
      if (o.annotationWeight > 0) {
        const same = tf.cast(tf.equal(tf.tensor2d(seg.label, [P, 1], 'int32'), tf.tensor2d(Int32Array.from(seg.segLabel), [1, S], 'int32')), 'float32') as tf.Tensor2D;
        const nll = segsortNll(e, protos, segment, same, tf.tensor1d(annHas), o.annotationConcentration);
        total = tf.add(total, tf.mul(tf.mean(nll), o.annotationWeight));
      }
      if (o.cooccurrenceWeight > 0) {
        const rows = tf.gather(tf.tensor2d(share, [nb, nb]), tf.tensor1d(seg.image, 'int32')); // [P, B]
        const same = tf.gather(rows, tf.tensor1d(seg.segImage, 'int32'), 1) as tf.Tensor2D; // [P, S]
        const nll = segsortNll(e, protos, segment, same, tf.tensor1d(occHas), o.cooccurrenceConcentration);
        total = tf.add(total, tf.mul(tf.mean(nll), o.cooccurrenceWeight));
      }
      if (o.lowlevelWeight > 0) total = tf.add(total, tf.mul(lowlevelLoss(seg, e, segment, h, w, o.lowlevelConcentration), o.lowlevelWeight));
      return total as tf.Scalar;
    });
  }

  variables(): Map<string, tf.Variable> {
    return new Map();
  }

  dispose(): void {}
}
