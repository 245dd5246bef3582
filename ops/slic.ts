/**
 * SLIC superpixels (Achanta et al. 2012, "SLIC Superpixels Compared to State-of-the-Art Superpixel
 * Methods", TPAMI), pure JS and deterministic, on uint8 RGB images.
 *
 * SPML (twke18/SPML, methods.md 6) takes its low-level regions from HED contours + UCM
 * (datasets/voc12/*_hed.txt, precomputed with a trained edge detector); tagseg has no edge model,
 * so SLIC stands in for them: a deterministic over-segmentation that follows colour edges.
 *
 * Steps, as in the reference implementation:
 * 1. sRGB (D65) -> CIELAB.
 * 2. Centres on a regular grid of step S = sqrt(N / segments) (ny x nx cells), each moved to the
 *    lowest-gradient pixel of its 3 x 3 neighbourhood (it stays unless a pixel is strictly lower;
 *    first in scan order among equally low ones).
 * 3. `iters` rounds: every centre claims the pixels of its 2S x 2S window whose distance
 *    D^2 = d_lab^2 + (d_xy / S)^2 m^2 (m = compactness) is lower than their current one (ties: the
 *    earlier centre); centres move to the mean (Lab, y, x) of their pixels (an empty centre stays).
 *    A pixel no window reached takes its nearest centre.
 * 4. Connectivity: 4-connected components relabelled in scan order; a component smaller than
 *    minSize (default S^2 / 4) joins the previously labelled component next to its first pixel.
 * Labels are 0..count-1 in scan order of the components' first pixels.
 */
import { TagsegError } from '../pipeline/errors.js';

export interface SlicOptions {
  /** Requested number of superpixels (the grid gives about this many). */
  segments: number;
  /** Weight m of spatial against colour distance (Achanta: 10 for CIELAB in [0, 100]). */
  compactness: number;
  /** Assignment/update rounds. Default 10 (Achanta). */
  iters?: number;
  /** Components smaller than this many pixels are merged into a neighbour. Default S^2 / 4. */
  minSize?: number;
}

export interface SlicResult {
  /** [h * w] superpixel of each pixel, 0..count-1. */
  labels: Int32Array;
  count: number;
}

/** sRGB uint8 [h * w * 3] -> CIELAB planes (D65 white). */
export function rgbToLab(rgb: Uint8Array, n: number): { l: Float64Array; a: Float64Array; b: Float64Array } {
  const lin = new Float64Array(256);
  for (let v = 0; v < 256; v++) {
    const c = v / 255;
    lin[v] = c <= 0.04045 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  }
  const f = (t: number) => (t > 0.008856 ? Math.cbrt(t) : 7.787 * t + 16 / 116);
  const L = new Float64Array(n);
  const A = new Float64Array(n);
  const B = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    const r = lin[rgb[3 * i]];
    const g = lin[rgb[3 * i + 1]];
    const bl = lin[rgb[3 * i + 2]];
    const x = (0.4124564 * r + 0.3575761 * g + 0.1804375 * bl) / 0.95047;
    const y = 0.2126729 * r + 0.7151522 * g + 0.072175 * bl;
    const z = (0.0193339 * r + 0.119192 * g + 0.9503041 * bl) / 1.08883;
    const fx = f(x);
    const fy = f(y);
    const fz = f(z);
    L[i] = 116 * fy - 16;
    A[i] = 500 * (fx - fy);
    B[i] = 200 * (fy - fz);
  }
  return { l: L, a: A, b: B };
}

/** SLIC superpixels of an RGB image rgb [h * w * 3] (row-major, interleaved). */
/** The image as CIELAB planes (step 1) with its size. */
interface Lab { L: Float64Array; A: Float64Array; B: Float64Array; h: number; w: number }
/** Cluster centres: l, a, b, y, x. */
interface Centres { cl: Float64Array; ca: Float64Array; cb: Float64Array; cy: Float64Array; cx: Float64Array }

/** Bad sizes and options are TagsegErrors before any work. */
function checkSlicArgs(rgb: Uint8Array, h: number, w: number, o: SlicOptions, iters: number): void {
  if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0)) throw new TagsegError(`slic: bad image size ${h} x ${w}`);
  if (rgb.length !== h * w * 3) throw new TagsegError(`slic: expected ${h * w * 3} bytes for ${h} x ${w} RGB, got ${rgb.length}`);
  if (!(Number.isInteger(o.segments) && o.segments > 0)) throw new TagsegError(`slic: segments must be a positive integer, got ${o.segments}`);
  if (!(Number.isFinite(o.compactness) && o.compactness > 0)) throw new TagsegError(`slic: compactness must be positive, got ${o.compactness}`);
  if (!(Number.isInteger(iters) && iters >= 0)) throw new TagsegError(`slic: iters must be a non-negative integer, got ${iters}`);
}

/** Step 2: centres on the ny x nx grid, each moved to the lowest-gradient pixel of its 3 x 3 neighbourhood. */
function seedCentres(lab: Lab, ny: number, nx: number): Centres {
  const { L, A, B, h, w } = lab;
  const k = ny * nx;
  const c0: Centres = { cl: new Float64Array(k), ca: new Float64Array(k), cb: new Float64Array(k), cy: new Float64Array(k), cx: new Float64Array(k) };
  const grad = (y: number, x: number) => {
    const p = (yy: number, xx: number) => Math.min(h - 1, Math.max(0, yy)) * w + Math.min(w - 1, Math.max(0, xx));
    const d2 = (i: number, j: number) => (L[i] - L[j]) ** 2 + (A[i] - A[j]) ** 2 + (B[i] - B[j]) ** 2;
    return d2(p(y, x + 1), p(y, x - 1)) + d2(p(y + 1, x), p(y - 1, x));
  };
  for (let j = 0; j < ny; j++) {
    for (let i = 0; i < nx; i++) {
      const y0 = Math.min(h - 1, Math.floor(((j + 0.5) * h) / ny));
      const x0 = Math.min(w - 1, Math.floor(((i + 0.5) * w) / nx));
      let by = y0;
      let bx = x0;
      let bg = grad(y0, x0);
      for (let dy = -1; dy <= 1; dy++) {
        for (let dx = -1; dx <= 1; dx++) {
          const yy = y0 + dy;
          const xx = x0 + dx;
          if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
          const g = grad(yy, xx);
          if (g < bg) {
            bg = g;
            by = yy;
            bx = xx;
          }
        }
      }
      const c = j * nx + i;
      const p = by * w + bx;
      c0.cl[c] = L[p];
      c0.ca[c] = A[p];
      c0.cb[c] = B[p];
      c0.cy[c] = by;
      c0.cx[c] = bx;
    }
  }
  return c0;
}

/** Step 3, assignment: every centre claims the pixels of its 2S x 2S window it is nearer to (ties: the earlier centre). */
function assignPixels(lab: Lab, c0: Centres, win: number, m2: number, label: Int32Array, dist: Float64Array): void {
  const { L, A, B, h, w } = lab;
  const { cl, ca, cb, cy, cx } = c0;
  dist.fill(Infinity);
  for (let c = 0; c < cl.length; c++) {
    const y0 = Math.max(0, Math.round(cy[c]) - win);
    const y1 = Math.min(h - 1, Math.round(cy[c]) + win);
    const x0 = Math.max(0, Math.round(cx[c]) - win);
    const x1 = Math.min(w - 1, Math.round(cx[c]) + win);
    for (let y = y0; y <= y1; y++) {
      for (let x = x0; x <= x1; x++) {
        const p = y * w + x;
        const dc = (L[p] - cl[c]) ** 2 + (A[p] - ca[c]) ** 2 + (B[p] - cb[c]) ** 2;
        const ds = (y - cy[c]) ** 2 + (x - cx[c]) ** 2;
        const D = dc + ds * m2;
        if (D < dist[p]) {
          dist[p] = D;
          label[p] = c;
        }
      }
    }
  }
}

/** Step 3, update: each centre moves to the mean (Lab, y, x) of its pixels; an empty centre stays. */
function updateCentres(lab: Lab, c0: Centres, label: Int32Array, sum: Float64Array, cnt: Int32Array): void {
  const { L, A, B, w } = lab;
  sum.fill(0);
  cnt.fill(0);
  for (let p = 0; p < label.length; p++) {
    const c = label[p];
    if (c < 0) continue;
    sum[5 * c] += L[p];
    sum[5 * c + 1] += A[p];
    sum[5 * c + 2] += B[p];
    sum[5 * c + 3] += Math.floor(p / w);
    sum[5 * c + 4] += p % w;
    cnt[c]++;
  }
  for (let c = 0; c < cnt.length; c++) {
    if (cnt[c] === 0) continue;
    c0.cl[c] = sum[5 * c] / cnt[c];
    c0.ca[c] = sum[5 * c + 1] / cnt[c];
    c0.cb[c] = sum[5 * c + 2] / cnt[c];
    c0.cy[c] = sum[5 * c + 3] / cnt[c];
    c0.cx[c] = sum[5 * c + 4] / cnt[c];
  }
}

/** Pixels no window reached (iters 0, or centres that drifted away): nearest centre overall. */
function labelUnreached(lab: Lab, c0: Centres, m2: number, label: Int32Array, iters: number): void {
  const { L, A, B, w } = lab;
  const { cl, ca, cb, cy, cx } = c0;
  for (let p = 0; p < label.length; p++) {
    if (label[p] >= 0 && iters > 0) continue;
    const y = Math.floor(p / w);
    const x = p % w;
    let best = 0;
    let bd = Infinity;
    for (let c = 0; c < cl.length; c++) {
      const D = (L[p] - cl[c]) ** 2 + (A[p] - ca[c]) ** 2 + (B[p] - cb[c]) ** 2 + ((y - cy[c]) ** 2 + (x - cx[c]) ** 2) * m2;
      if (D < bd) {
        bd = D;
        best = c;
      }
    }
    label[p] = best;
  }
}

export function slic(rgb: Uint8Array, h: number, w: number, o: SlicOptions): SlicResult {
  const iters = o.iters ?? 10;
  checkSlicArgs(rgb, h, w, o, iters);
  const n = h * w;
  const { l: L, a: A, b: B } = rgbToLab(rgb, n);
  const lab: Lab = { L, A, B, h, w };
  const S = Math.max(1, Math.sqrt(n / o.segments));
  const ny = Math.max(1, Math.min(h, Math.round(h / S)));
  const nx = Math.max(1, Math.min(w, Math.round(w / S)));
  const k = ny * nx;
  const centres = seedCentres(lab, ny, nx);
  const label = new Int32Array(n).fill(-1);
  const dist = new Float64Array(n);
  const m2 = (o.compactness * o.compactness) / (S * S);
  const win = Math.ceil(S);
  const sum = new Float64Array(k * 5);
  const cnt = new Int32Array(k);
  for (let it = 0; it < iters; it++) {
    assignPixels(lab, centres, win, m2, label, dist);
    updateCentres(lab, centres, label, sum, cnt);
  }
  labelUnreached(lab, centres, m2, label, iters);
  return enforceConnectivity(label, h, w, o.minSize ?? (S * S) / 4);
}

/**
 * Relabels 4-connected components of `label` in scan order; components smaller than minSize join
 * the already relabelled component adjacent to their first pixel (Achanta's EnforceLabelConnectivity).
 */
export function enforceConnectivity(label: Int32Array, h: number, w: number, minSize: number): SlicResult {
  const n = h * w;
  const out = new Int32Array(n).fill(-1);
  const stack = new Int32Array(n);
  const members: number[] = [];
  let next = 0;
  for (let start = 0; start < n; start++) {
    if (out[start] >= 0) continue;
    // an adjacent, already relabelled component (left, up, right, down of the first pixel)
    const sy = Math.floor(start / w);
    const sx = start % w;
    let adjacent = -1;
    for (const [dy, dx] of [[0, -1], [-1, 0], [0, 1], [1, 0]] as const) {
      const yy = sy + dy;
      const xx = sx + dx;
      if (yy >= 0 && yy < h && xx >= 0 && xx < w && out[yy * w + xx] >= 0) {
        adjacent = out[yy * w + xx];
        break;
      }
    }
    const orig = label[start];
    members.length = 0;
    let top = 0;
    stack[top++] = start;
    out[start] = next;
    while (top > 0) {
      const p = stack[--top];
      members.push(p);
      const y = Math.floor(p / w);
      const x = p % w;
      const visit = (q: number) => {
        if (out[q] < 0 && label[q] === orig) {
          out[q] = next;
          stack[top++] = q;
        }
      };
      if (x > 0) visit(p - 1);
      if (x < w - 1) visit(p + 1);
      if (y > 0) visit(p - w);
      if (y < h - 1) visit(p + w);
    }
    if (members.length < minSize && adjacent >= 0) {
      for (const p of members) out[p] = adjacent;
    } else {
      next++;
    }
  }
  return { labels: out, count: next };
}
