/**
 * Pure measures of one label map (no tensors, no I/O), used per (image, class) by the audit.
 *
 * Label maps are uint8 [H, W], row-major, values = dataset class indices, 255 = ignore (a pseudo
 * mask's "unsure" pixels, or void in ground truth). Images are sRGB uint8 [H, W, 3].
 */
import { TagsegError } from '../../pipeline/errors.js';

export const IGNORE = 255;

function checkSize(what: string, n: number, H: number, W: number): void {
  if (n !== H * W) throw new TagsegError(`${what}: ${n} values, expected ${H} x ${W}`);
}

/** Pixels of each label value 0..255 in `labels`. */
export function labelCounts(labels: Uint8Array): Float64Array {
  const counts = new Float64Array(256);
  for (const v of labels) counts[v]++;
  return counts;
}

export interface Components {
  /** Number of 4-connected regions of class `c` (scipy.ndimage.label's default connectivity). */
  count: number;
  /** Pixels of the largest region (0 when the class is absent). */
  largest: number;
}

/**
 * 4-connected components of the pixels equal to `c` (iterative flood fill with an explicit
 * stack: no recursion depth limit on large regions). A fragmented pseudo-mask (many small
 * islands of one class) is a typical failure of CAM-based labels.
 */
export function components(labels: Uint8Array, H: number, W: number, c: number): Components {
  checkSize('components', labels.length, H, W);
  const seen = new Uint8Array(H * W);
  const stack = new Int32Array(H * W);
  let count = 0;
  let largest = 0;
  for (let start = 0; start < labels.length; start++) {
    if (labels[start] !== c || seen[start]) continue;
    count++;
    let size = 0;
    let top = 0;
    stack[top++] = start;
    seen[start] = 1;
    while (top > 0) {
      const p = stack[--top];
      size++;
      const y = (p / W) | 0;
      const x = p - y * W;
      if (x > 0 && !seen[p - 1] && labels[p - 1] === c) { seen[p - 1] = 1; stack[top++] = p - 1; }
      if (x < W - 1 && !seen[p + 1] && labels[p + 1] === c) { seen[p + 1] = 1; stack[top++] = p + 1; }
      if (y > 0 && !seen[p - W] && labels[p - W] === c) { seen[p - W] = 1; stack[top++] = p - W; }
      if (y < H - 1 && !seen[p + W] && labels[p + W] === c) { seen[p + W] = 1; stack[top++] = p + W; }
    }
    if (size > largest) largest = size;
  }
  return { count, largest };
}

/**
 * Sobel gradient magnitude of the luminance (0.299 R + 0.587 G + 0.114 B) of an sRGB image
 * [H, W, 3] -> float32 [H, W], borders replicated. Units: grey levels per pixel x 8 at most
 * (the unnormalised 3x3 Sobel kernels, as OpenCV's Sobel with ksize 3).
 */
export function sobelMagnitude(pixels: Uint8Array, H: number, W: number): Float32Array {
  checkSize('sobelMagnitude', pixels.length, H * 3, W);
  const lum = new Float32Array(H * W);
  for (let i = 0; i < H * W; i++) lum[i] = 0.299 * pixels[3 * i] + 0.587 * pixels[3 * i + 1] + 0.114 * pixels[3 * i + 2];
  const out = new Float32Array(H * W);
  const at = (y: number, x: number) => lum[Math.min(H - 1, Math.max(0, y)) * W + Math.min(W - 1, Math.max(0, x))];
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const a = at(y - 1, x - 1), b = at(y - 1, x), c = at(y - 1, x + 1);
      const d = at(y, x - 1), f = at(y, x + 1);
      const g = at(y + 1, x - 1), h = at(y + 1, x), i = at(y + 1, x + 1);
      const gx = c + 2 * f + i - (a + 2 * d + g);
      const gy = g + 2 * h + i - (a + 2 * b + c);
      out[y * W + x] = Math.sqrt(gx * gx + gy * gy);
    }
  }
  return out;
}

/**
 * Strong edges: pixels whose gradient magnitude is at or above the image's `quantile` of
 * magnitudes and above `floor` (so a flat image has no edges at all). A per-image quantile makes
 * "strong" mean "among this image's strongest", independent of its contrast. Returns 0/1 [H, W].
 */
export function strongEdges(magnitude: Float32Array, quantile: number, floor: number): Uint8Array {
  if (!(quantile >= 0 && quantile <= 1)) throw new TagsegError(`strongEdges: quantile ${quantile} is outside [0, 1]`);
  const n = magnitude.length;
  const out = new Uint8Array(n);
  if (n === 0) return out;
  const t = Math.max(kthSmallest(magnitude, Math.min(n - 1, Math.floor(quantile * n))), floor);
  for (let i = 0; i < n; i++) out[i] = magnitude[i] >= t && magnitude[i] > floor ? 1 : 0;
  return out;
}

/**
 * The k-th smallest of `values` (0-based), the value sorting would put at k, by quickselect on a
 * copy (Hoare partition: runs of equal values, as in flat images, split evenly): O(n) expected,
 * where the sort it replaces was a fifth of the audit's per-image time. NaN-free input.
 */
export function kthSmallest(values: Float32Array, k: number): number {
  const a = Float32Array.from(values);
  let lo = 0;
  let hi = a.length - 1;
  while (lo < hi) {
    const pivot = a[(lo + hi) >>> 1];
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) {
        const x = a[i];
        a[i++] = a[j];
        a[j--] = x;
      }
    }
    // Now a[lo..j] <= pivot <= a[i..hi], and everything between j and i equals the pivot.
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return a[k];
  }
  return a[k];
}

/** Square (Chebyshev) dilation of a 0/1 map by `r` pixels: 1 wherever a 1 lies within r in x and y. */
export function dilate(bits: Uint8Array, H: number, W: number, r: number): Uint8Array {
  checkSize('dilate', bits.length, H, W);
  if (r <= 0) return bits.slice();
  // Separable: rows, then columns, each a running count over a window of 2r + 1.
  const rows = new Uint8Array(H * W);
  for (let y = 0; y < H; y++) {
    const o = y * W;
    let run = 0;
    for (let x = 0; x < Math.min(r, W); x++) run += bits[o + x];
    for (let x = 0; x < W; x++) {
      if (x + r < W) run += bits[o + x + r];
      if (x - r - 1 >= 0) run -= bits[o + x - r - 1];
      rows[o + x] = run > 0 ? 1 : 0;
    }
  }
  const out = new Uint8Array(H * W);
  for (let x = 0; x < W; x++) {
    let run = 0;
    for (let y = 0; y < Math.min(r, H); y++) run += rows[y * W + x];
    for (let y = 0; y < H; y++) {
      if (y + r < H) run += rows[(y + r) * W + x];
      if (y - r - 1 >= 0) run -= rows[(y - r - 1) * W + x];
      out[y * W + x] = run > 0 ? 1 : 0;
    }
  }
  return out;
}

export interface BoundaryAlignment {
  /** Boundary pixels of class c: pixels of c with a 4-neighbour (inside the image) that is not c. */
  boundary: number;
  /** Of those, the ones on `near` (a strong image edge within the tolerance). */
  aligned: number;
}

/**
 * How well the outline of class `c` follows image edges: boundary pixels of c (neighbours that
 * are another class or ignore; the image border is not a boundary) counted against `near`, the
 * dilated strong-edge map. aligned / boundary = 1 means every boundary pixel sits on an edge;
 * a random outline scores about the fraction of the image covered by `near` (the chance level).
 */
export function boundaryAlignment(labels: Uint8Array, near: Uint8Array, H: number, W: number, c: number): BoundaryAlignment {
  checkSize('boundaryAlignment labels', labels.length, H, W);
  checkSize('boundaryAlignment edges', near.length, H, W);
  let boundary = 0;
  let aligned = 0;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const p = y * W + x;
      if (labels[p] !== c) continue;
      const edge = (x > 0 && labels[p - 1] !== c) || (x < W - 1 && labels[p + 1] !== c)
        || (y > 0 && labels[p - W] !== c) || (y < H - 1 && labels[p + W] !== c);
      if (!edge) continue;
      boundary++;
      if (near[p]) aligned++;
    }
  }
  return { boundary, aligned };
}

export interface Overlap {
  /** Pixels labelled c in both maps. */
  inter: number;
  /** Pixels labelled c in either map. */
  union: number;
}

/**
 * Intersection and union of class c between two label maps, over the pixels where neither map is
 * ignore (an unlabelled pixel neither agrees nor disagrees). IoU = inter / union (null if union 0).
 */
export function classOverlap(a: Uint8Array, b: Uint8Array, c: number): Overlap {
  if (a.length !== b.length) throw new TagsegError(`classOverlap: maps of ${a.length} and ${b.length} pixels`);
  let inter = 0;
  let union = 0;
  for (let i = 0; i < a.length; i++) {
    const x = a[i];
    const y = b[i];
    if (x === IGNORE || y === IGNORE) continue;
    if (x === c) {
      union++;
      if (y === c) inter++;
    } else if (y === c) union++;
  }
  return { inter, union };
}

export const iouOf = (o: Overlap): number | null => (o.union > 0 ? o.inter / o.union : null);

/**
 * Fraction of the pixels labelled in `b` (not ignore) that `a` labels the same; null when `b`
 * labels nothing. Pixels where `a` is ignore count as disagreement.
 */
export function pixelAgreement(a: Uint8Array, b: Uint8Array): number | null {
  if (a.length !== b.length) throw new TagsegError(`pixelAgreement: maps of ${a.length} and ${b.length} pixels`);
  let same = 0;
  let n = 0;
  for (let i = 0; i < b.length; i++) {
    if (b[i] === IGNORE) continue;
    n++;
    if (a[i] === b[i]) same++;
  }
  return n > 0 ? same / n : null;
}
