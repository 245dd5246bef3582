/**
 * The audit's pure measures on hand-made arrays: connected components, Sobel edges, dilation,
 * boundary alignment, IoU between label maps, pixel agreement, the suspicion score, and the
 * per-image audit on a 4 x 4 case computed by hand.
 */
import { describe, expect, it } from 'vitest';
import { type AuditSettings, auditImage } from '../../stages/audit/image.js';
import {
  boundaryAlignment, classOverlap, components, dilate, iouOf, kthSmallest, labelCounts, pixelAgreement, sobelMagnitude, strongEdges,
} from '../../stages/audit/measures.js';
import { SUSPICION_TERMS, suspicionScore, suspicionTerms } from '../../stages/audit/suspicion.js';
import { type MeasureRecord, decodeRecord, encodeRecord, toCsv } from '../../stages/audit/columns.js';
import { isBadMask, rankImages, spearman } from '../../stages/audit/report_stage.js';

const U = (xs: number[]) => Uint8Array.from(xs);

describe('audit measures', () => {
  it('components counts 4-connected regions (diagonal neighbours are separate) and the largest', () => {
    const m = U([
      1, 1, 0, 1,
      0, 1, 0, 0,
      1, 0, 0, 1,
      1, 0, 1, 1,
    ]);
    expect(components(m, 4, 4, 1)).toEqual({ count: 4, largest: 3 });
    expect(components(m, 4, 4, 0)).toEqual({ count: 2, largest: 6 });
    expect(components(m, 4, 4, 2)).toEqual({ count: 0, largest: 0 });
    expect(() => components(m, 3, 4, 1)).toThrow(/expected 3 x 4/);
  });

  it('components handles one region covering a large image without recursion', () => {
    expect(components(new Uint8Array(500 * 500).fill(3), 500, 500, 3)).toEqual({ count: 1, largest: 250000 });
  });

  it('sobelMagnitude: 0 on a flat image, 4 x step next to a vertical step edge', () => {
    const H = 3, W = 4;
    const px = new Uint8Array(H * W * 3);
    for (let y = 0; y < H; y++) for (let x = 2; x < W; x++) px.fill(100, 3 * (y * W + x), 3 * (y * W + x) + 3);
    const g = sobelMagnitude(px, H, W);
    // grey 100 (all channels equal: luminance weights sum to 1); columns 1 and 2 see the step.
    expect(Array.from(g.slice(0, 4)).map((v) => Math.round(v))).toEqual([0, 400, 400, 0]);
    expect(Math.max(...sobelMagnitude(new Uint8Array(H * W * 3).fill(7), H, W))).toBe(0);
  });

  it('kthSmallest is the value sorting puts at k, also with long runs of ties (quickselect vs sort)', () => {
    let seed = 3;
    const rnd = () => ((seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0) / 4294967296);
    for (const [n, levels] of [[1, 5], [2, 2], [37, 1], [1000, 3], [5000, 1000], [4096, 0]] as const) {
      const v = Float32Array.from({ length: n }, () => (levels === 0 ? rnd() : Math.floor(rnd() * levels)));
      const sorted = Float32Array.from(v).sort();
      for (const k of [0, n >> 2, n >> 1, n - 1]) expect(kthSmallest(v, k)).toBe(sorted[k]);
    }
    // control: the k-th is not just any element (so the check can fail)
    const w = Float32Array.from([5, 1, 4, 2, 3]);
    expect(kthSmallest(w, 1)).toBe(2);
    expect(kthSmallest(w, 1)).not.toBe(w[1]);
  });

  it('strongEdges keeps the top quantile above the floor; a flat image has none', () => {
    const mag = Float32Array.from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(Array.from(strongEdges(mag, 0.8, 0))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    expect(Array.from(strongEdges(mag, 0.5, 7))).toEqual([0, 0, 0, 0, 0, 0, 0, 0, 1, 1]);
    expect(Array.from(strongEdges(new Float32Array(4), 0.5, 0))).toEqual([0, 0, 0, 0]);
  });

  it('dilate grows by r in x and y (a square), clipped at the borders', () => {
    const b = new Uint8Array(25);
    b[12] = 1;
    expect(Array.from(dilate(b, 5, 5, 1))).toEqual([
      0, 0, 0, 0, 0,
      0, 1, 1, 1, 0,
      0, 1, 1, 1, 0,
      0, 1, 1, 1, 0,
      0, 0, 0, 0, 0,
    ]);
    const c = new Uint8Array(25);
    c[0] = 1;
    expect(dilate(c, 5, 5, 2).reduce((a, v) => a + v, 0)).toBe(9);
    expect(Array.from(dilate(c, 5, 5, 0))).toEqual(Array.from(c));
  });

  it('boundaryAlignment counts outline pixels (not the image border) and those on edges', () => {
    const labels = U([
      1, 1, 0, 0,
      1, 1, 0, 0,
      255, 1, 0, 0,
    ]);
    // outline of 1: (0,1) next to 0, (1,0) next to 255 below, (1,1) next to 0, (2,1) next to 255 and 0 -> 4; (0,0) is interior.
    const near = U([0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0]);
    expect(boundaryAlignment(labels, near, 3, 4, 1)).toEqual({ boundary: 4, aligned: 2 });
    expect(boundaryAlignment(new Uint8Array(12).fill(1), near, 3, 4, 1)).toEqual({ boundary: 0, aligned: 0 });
  });

  it('classOverlap leaves out pixels either map ignores; pixelAgreement counts ignore in a as disagreement', () => {
    const a = U([1, 1, 0, 255, 1, 2]);
    const b = U([1, 0, 1, 1, 255, 2]);
    expect(classOverlap(a, b, 1)).toEqual({ inter: 1, union: 3 });
    expect(iouOf(classOverlap(a, b, 1))).toBeCloseTo(1 / 3);
    expect(iouOf(classOverlap(a, b, 5))).toBeNull();
    // b labels 5 pixels; a agrees on 0 and 5 -> 2 / 5 (a's 255 at index 3 disagrees)
    expect(pixelAgreement(a, b)).toBeCloseTo(2 / 5);
    expect(pixelAgreement(a, new Uint8Array(6).fill(255))).toBeNull();
    expect(Array.from(labelCounts(a).slice(0, 3))).toEqual([1, 3, 1]);
  });
});

describe('suspicion', () => {
  const clean = {
    ignoreFraction: 0, meanConfidence: 1, agreements: [1, 1, null], emptyTags: 0, foregroundTags: 2, fragmentation: 0,
    boundaryAlignment: 1, edgeChance: 0.2, largeLowConfidence: 0, classesPresent: 2,
  };
  const w = Object.fromEntries(SUSPICION_TERMS.map((t) => [t, 1])) as Record<(typeof SUSPICION_TERMS)[number], number>;

  it('is 0 for a clean mask and names no reason', () => {
    expect(suspicionScore(suspicionTerms(clean), w)).toEqual({ score: 0, reasons: [] });
  });

  it('terms by hand: misalignment relative to chance, empty tags as a share, weighted mean', () => {
    const t = suspicionTerms({ ...clean, ignoreFraction: 0.5, meanConfidence: 0.75, agreements: [0.5, 1], emptyTags: 1, boundaryAlignment: 0.6 });
    expect(t.ignore).toBe(0.5);
    expect(t.low_confidence).toBeCloseTo(0.25);
    expect(t.disagreement).toBeCloseTo(0.25);
    expect(t.empty_tags).toBe(0.5);
    expect(t.misalignment).toBeCloseTo(1 - (0.6 - 0.2) / 0.8);
    expect(suspicionTerms({ ...clean, boundaryAlignment: 0.1 }).misalignment).toBe(1);
    expect(suspicionTerms({ ...clean, boundaryAlignment: null }).misalignment).toBe(0);
    expect(suspicionTerms({ ...clean, meanConfidence: null, agreements: [null] })).toMatchObject({ low_confidence: 1, disagreement: 1 });
    const only = { ...w, low_confidence: 0, disagreement: 0, empty_tags: 0, misalignment: 0, fragmentation: 0, large_low_confidence: 0, ignore: 3 };
    const s = suspicionScore({ ...t, ignore: 0.5 }, { ...only, empty_tags: 1 });
    expect(s.score).toBeCloseTo((3 * 0.5 + 1 * 0.5) / 4);
    expect(s.reasons).toEqual(['ignore', 'empty_tags']);
  });

  it('rejects negative or all-zero weights', () => {
    const t = suspicionTerms(clean);
    expect(() => suspicionScore(t, { ...w, ignore: -1 })).toThrow(/weights.ignore/);
    expect(() => suspicionScore(t, Object.fromEntries(SUSPICION_TERMS.map((k) => [k, 0])) as typeof w)).toThrow(/all 0/);
  });

  it('spearman: +1 / -1 for monotone pairs, average ranks for ties, null without spread', () => {
    expect(spearman([1, 2, 3, 4], [10, 20, 30, 45])).toBeCloseTo(1);
    expect(spearman([1, 2, 3, 4], [4, 3, 2, 1])).toBeCloseTo(-1);
    expect(spearman([1, 1, 2], [1, 2, 3])).toBeCloseTo(0.866, 3);
    expect(spearman([1, 1, 1], [1, 2, 3])).toBeNull();
    expect(spearman([1, 2], [1, 2])).toBeNull();
  });
});

describe('auditImage', () => {
  const settings: AuditSettings = {
    edgeQuantile: 0.5, edgeFloor: 1, edgeTolerance: 0, largeArea: 0.3, lowConfidence: 0.5,
    weights: Object.fromEntries(SUSPICION_TERMS.map((t) => [t, 1])) as AuditSettings['weights'],
  };
  const classes = ['bg', 'cat', 'dog'];
  // 4 x 4, left half cat (1), right half bg (0); tags bg + cat + dog.
  const H = 4, W = 4;
  const gt = U([1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0, 1, 1, 0, 0]);
  const pixels = new Uint8Array(H * W * 3);
  gt.forEach((v, i) => pixels.fill(v === 1 ? 200 : 0, 3 * i, 3 * i + 3));

  it('one row per tagged / present / ground-truth class, measures by hand', () => {
    // final: cat on column 0-1 except one ignore pixel; a stray cat pixel in the bg.
    const final = U([1, 1, 0, 0, 1, 255, 0, 0, 1, 1, 0, 1, 1, 1, 0, 0]);
    const confidence = new Uint8Array(16).fill(255);
    const cam = U([1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 0]);
    const r = auditImage({
      id: 'x', split: 'train', height: H, width: W, pixels, tags: [0, 1, 2], maps: { cam, random_walk: cam, rca: gt }, final, confidence, gt,
      meanMargin: 0.5, refineFlags: ['empty:dog'],
    }, classes, 0, settings);
    expect(r.classRows.map((c) => c.class_name)).toEqual(['bg', 'cat', 'dog']);
    const cat = r.classRows[1];
    expect(cat.area).toBeCloseTo(8 / 16);
    expect(cat.area_cam).toBeCloseTo(12 / 16);
    expect(cat.components).toBe(2);
    expect(cat.largest_share).toBeCloseTo(7 / 8);
    // rca (= gt) labels 8 cat pixels; final left 1 of them ignore
    expect(cat.ignore_fraction).toBeCloseTo(1 / 8);
    // cam vs final over 15 labelled pixels: cam cat 11 there, final cat 8, both 7 -> 7 / 12
    expect(cat.iou_cam_final).toBeCloseTo(7 / 12);
    // vs gt (final's ignore left out): inter 7, final cat 8, gt cat 7 -> IoU 7/8, precision 7/8, recall 1
    expect(cat.gt_iou).toBeCloseTo(7 / 8);
    expect(cat.gt_precision).toBeCloseTo(7 / 8);
    expect(cat.gt_recall).toBeCloseTo(1);
    expect(cat.confidence).toBe(1);
    const dog = r.classRows[2];
    expect(dog).toMatchObject({ tagged: true, in_gt: false, area: 0, empty_tag: true, components: 0, gt_iou: null, confidence: null });
    expect(r.classRows[0].empty_tag).toBe(false);
    expect(r.image.ignore_fraction).toBeCloseTo(1 / 16);
    expect(r.image.empty_tags).toBe(1);
    expect(r.image.tags).toEqual(['bg', 'cat', 'dog']);
    expect(r.image.classes).toEqual(['bg', 'cat']);
    // fragmentation: foreground (cat) pixels outside the largest region: 1 of 8
    expect(r.image.fragmentation).toBeCloseTo(1 / 8);
    expect(r.image.terms.empty_tags).toBeCloseTo(1 / 2);
    expect(r.image.suspicion).toBeGreaterThan(0);
    expect(r.image.refine_flags).toEqual(['empty:dog']);
  });

  it('the same image with a perfect pseudo-mask is less suspicious', () => {
    const base = { id: 'y', split: 'train', height: H, width: W, pixels, tags: [0, 1], gt, meanMargin: null, refineFlags: [] };
    const good = auditImage({ ...base, maps: { cam: gt, random_walk: gt, rca: gt }, final: gt, confidence: new Uint8Array(16).fill(255) }, classes, 0, settings);
    const bad = auditImage({ ...base, maps: { cam: gt, random_walk: gt, rca: gt }, final: U(Array.from(gt).map((v) => 1 - v)), confidence: new Uint8Array(16).fill(100) }, classes, 0, settings);
    expect(good.image.suspicion).toBe(0);
    expect(good.image.gt_miou).toBe(1);
    expect(bad.image.gt_miou).toBe(0);
    expect(bad.image.suspicion).toBeGreaterThan(0.2);
    expect(bad.image.reasons[0]).toBe('disagreement');
  });

  it('rejects maps of the wrong size and classes outside the class list', () => {
    const base = { id: 'z', split: 'train', height: H, width: W, pixels, gt: null, meanMargin: null, refineFlags: [], confidence: new Uint8Array(16) };
    expect(() => auditImage({ ...base, tags: [1], maps: { cam: gt, random_walk: gt, rca: new Uint8Array(3) }, final: gt }, classes, 0, settings)).toThrow(/rca labels has 3 values/);
    expect(() => auditImage({ ...base, tags: [7], maps: { cam: gt, random_walk: gt, rca: gt }, final: gt }, classes, 0, settings)).toThrow(/class index 7/);
  });

  it('rankImages ranks by suspicion, ties by id', () => {
    const rows = [{ id: 'b', suspicion: 0.2 }, { id: 'a', suspicion: 0.2 }, { id: 'c', suspicion: 0.9 }].map((r) => ({ ...r, rank: 0 }));
    rankImages(rows as unknown as Parameters<typeof rankImages>[0]);
    expect(rows.map((r) => [r.id, r.rank])).toEqual([['b', 3], ['a', 2], ['c', 1]]);
  });

  it('isBadMask: low GT mIoU, or mostly ignore even when the labelled rest is right, or nothing labelled', () => {
    expect(isBadMask({ gt_miou: 0.9, gt_coverage: 0.9 }, 0.5, 0.5)).toBe(false);
    expect(isBadMask({ gt_miou: 0.3, gt_coverage: 0.9 }, 0.5, 0.5)).toBe(true);
    expect(isBadMask({ gt_miou: 1, gt_coverage: 0.03 }, 0.5, 0.5)).toBe(true);
    expect(isBadMask({ gt_miou: null, gt_coverage: 0 }, 0.5, 0.5)).toBe(true);
  });

  it('toCsv quotes commas and quotes, joins lists, leaves nulls empty', () => {
    const csv = toCsv([{ name: 'a', type: 'utf8' }, { name: 'b', type: 'list<utf8>' }, { name: 'c', type: 'float32' }], [{ a: 'x,"y"', b: ['p', 'q'], c: null }, { a: 'z', b: [], c: 0.5 }]);
    expect(csv).toBe('a,b,c\n"x,""y""",p|q,\nz,,0.5\n');
  });
});

describe('measure records (cache/audit_measures.arrow)', () => {
  it('give back every number as the same double, NaN, -0 and infinities included', () => {
    const odd = [0.1 + 0.2, -0, NaN, Infinity, -Infinity, 1e-300, 0];
    const r = { image: { suspicion: 0.1 + 0.2, odd }, classRows: [], tags: [1], heat: [], file: 'f', pixels: { agreement: [], gt: null } } as unknown as MeasureRecord;
    const back = decodeRecord(encodeRecord(r)) as unknown as { image: { suspicion: number; odd: number[] } };
    expect(back.image.odd.map((v, i) => Object.is(v, odd[i]))).toEqual(odd.map(() => true));
    expect(back.image.suspicion).toBe(0.1 + 0.2);
    // control: plain JSON loses them
    const plain = JSON.parse(JSON.stringify(r)) as { image: { odd: unknown[] } };
    expect(plain.image.odd.slice(1, 5)).toEqual([0, null, null, null]);
    expect(Object.is(plain.image.odd[1], -0)).toBe(false);
  });
});
