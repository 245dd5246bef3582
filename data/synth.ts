import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import sharp from 'sharp';
import { orderedMap } from '../pipeline/concurrency.js';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, replaceDirAtomic, tempPathFor } from '../pipeline/fsutil.js';
import { progress } from '../pipeline/log.js';
import { encodeIndexedPng } from './palette.js';
import { removeTree } from '../pipeline/remove_tree.js';

/**
 * Synthetic VOC-layout dataset with exact masks, for tests, benchmarks and sanity checks of the
 * whole pipeline (a WSSS method that cannot segment these is broken, not unlucky).
 *
 * Each image: a smooth low-saturation noise background of random hue, with 1-3 shapes (ellipse,
 * rotated rectangle, triangle/star-convex polygon; 20-50% of the side; later shapes occlude
 * earlier ones and the mask follows) of distinct classes. A class is a colour family plus a
 * pattern (stripes, checks, dots, waves, rings, crosshatch, blobs) at a class-specific angle and
 * period; every instance jitters hue, saturation, brightness, angle, period, phase and lighting,
 * and pixels get noise, so classes are not a colour lookup but a small CNN learns them quickly.
 *
 * Deterministic: every image draws from its own mulberry32 stream seeded by (seed, index), so
 * the same options give byte-identical files. Images are generated and written one by one (a
 * few encodes in flight), so memory does not grow with `images`.
 */
export interface SynthOptions {
  /** Output dataset folder; replaced atomically (built in a temp sibling, then renamed). */
  out: string;
  images: number;
  /** Image side in pixels (images are square). */
  size: number;
  /** Number of foreground classes K (1..56); class 0 is "background". */
  classes: number;
  /**
   * Fraction of images in `val.txt`, in [0, 1): rounded to a count, but at least 1 when > 0 and
   * at most images - 1 (train is never empty); the rest are in `train.txt`.
   */
  valFraction: number;
  seed: number;
}

export interface SynthResult {
  out: string;
  images: number;
  /** All class names, index order: `["background", ...K foreground names]`. */
  classes: string[];
}

const HUES: readonly [string, number][] = [
  ['red', 0],
  ['orange', 30],
  ['yellow', 56],
  ['green', 120],
  ['cyan', 182],
  ['blue', 228],
  ['purple', 275],
  ['pink', 322],
];
const PATTERNS = ['stripes', 'checks', 'dots', 'waves', 'rings', 'crosshatch', 'blobs'] as const;
type Pattern = (typeof PATTERNS)[number];
/** HUES.length and PATTERNS.length are coprime, so (k % 8, k % 7) is unique for k < 56. */
export const MAX_SYNTH_CLASSES = HUES.length * PATTERNS.length;

interface ClassStyle {
  name: string;
  hue: number;
  pattern: Pattern;
  /** Radians. */
  angle: number;
  /** Pattern period as a fraction of the image side. */
  period: number;
  saturation: number;
}

/** The fixed look of foreground class k (0-based): independent of the seed, so names are stable. */
function classStyle(k: number): ClassStyle {
  const [hueName, hue] = HUES[k % HUES.length];
  const pattern = PATTERNS[k % PATTERNS.length];
  return {
    name: `${hueName}-${pattern}`,
    hue,
    pattern,
    angle: (((k * 47) % 180) * Math.PI) / 180,
    period: 0.07 + 0.012 * ((k * 3) % 5),
    saturation: 0.6 + 0.07 * (k % 5),
  };
}

/** Class names of a synthetic dataset with `k` foreground classes (index 0 = background). */
export function synthClassNames(k: number): string[] {
  return ['background', ...Array.from({ length: k }, (_, i) => classStyle(i).name)];
}

/** mulberry32: tiny, fast, good enough for textures; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A 32-bit seed for image `index` of run `seed` (murmur3 finaliser over both). */
function imageSeed(seed: number, index: number): number {
  let h = (seed >>> 0) ^ Math.imul(index + 1, 0x9e3779b1);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function hsv(h: number, s: number, v: number): [number, number, number] {
  h = (((h % 360) + 360) % 360) / 60;
  const c = v * s;
  const x = c * (1 - Math.abs((h % 2) - 1));
  const m = v - c;
  const [r, g, b] = h < 1 ? [c, x, 0] : h < 2 ? [x, c, 0] : h < 3 ? [0, c, x] : h < 4 ? [0, x, c] : h < 5 ? [x, 0, c] : [c, 0, x];
  return [(r + m) * 255, (g + m) * 255, (b + m) * 255];
}

/** Smooth value noise in [0, 1] on a `cells x cells` lattice, sampled at (x, y) in [0, 1). */
class ValueNoise {
  private readonly grid: Float32Array;
  constructor(
    rng: () => number,
    private readonly cells: number,
  ) {
    this.grid = new Float32Array((cells + 1) * (cells + 1));
    for (let i = 0; i < this.grid.length; i++) this.grid[i] = rng();
  }
  at(x: number, y: number): number {
    const n = this.cells;
    const gx = Math.min(Math.max(x, 0), 0.999999) * n;
    const gy = Math.min(Math.max(y, 0), 0.999999) * n;
    const ix = Math.floor(gx);
    const iy = Math.floor(gy);
    let fx = gx - ix;
    let fy = gy - iy;
    fx = fx * fx * (3 - 2 * fx);
    fy = fy * fy * (3 - 2 * fy);
    const g = this.grid;
    const w = n + 1;
    const a = g[iy * w + ix] + (g[iy * w + ix + 1] - g[iy * w + ix]) * fx;
    const b = g[(iy + 1) * w + ix] + (g[(iy + 1) * w + ix + 1] - g[(iy + 1) * w + ix]) * fx;
    return a + (b - a) * fy;
  }
}

interface Shape {
  cls: number;
  cx: number;
  cy: number;
  /** Inside test in image pixel coordinates. */
  inside: (x: number, y: number) => boolean;
  bbox: [number, number, number, number];
}

function makeShape(rng: () => number, size: number, cls: number): Shape {
  const d = size * (0.2 + 0.3 * rng());
  const r = d / 2;
  const margin = r * 0.6;
  const cx = margin + rng() * (size - 2 * margin);
  const cy = margin + rng() * (size - 2 * margin);
  const kind = Math.floor(rng() * 3);
  const rot = rng() * Math.PI;
  const cos = Math.cos(rot);
  const sin = Math.sin(rot);
  let inside: (x: number, y: number) => boolean;
  if (kind === 0) {
    const a = r * (0.75 + 0.25 * rng());
    const b = r * (0.5 + 0.5 * rng());
    inside = (x, y) => {
      const u = ((x - cx) * cos + (y - cy) * sin) / a;
      const v = (-(x - cx) * sin + (y - cy) * cos) / b;
      return u * u + v * v <= 1;
    };
  } else if (kind === 1) {
    const a = r * (0.6 + 0.3 * rng());
    const b = r * (0.45 + 0.4 * rng());
    inside = (x, y) => {
      const u = (x - cx) * cos + (y - cy) * sin;
      const v = -(x - cx) * sin + (y - cy) * cos;
      return Math.abs(u) <= a && Math.abs(v) <= b;
    };
  } else {
    // Star-convex polygon: 3..6 vertices at sorted angles (never self-intersecting).
    const n = 3 + Math.floor(rng() * 4);
    const angles = Array.from({ length: n }, (_, i) => ((i + 0.15 + 0.7 * rng()) / n) * 2 * Math.PI + rot);
    const vx = angles.map((t) => cx + r * (0.7 + 0.3 * rng()) * Math.cos(t));
    const vy = angles.map((t) => cy + r * (0.7 + 0.3 * rng()) * Math.sin(t));
    inside = (x, y) => {
      let c = false;
      for (let i = 0, j = n - 1; i < n; j = i++) {
        if (vy[i] > y !== vy[j] > y && x < ((vx[j] - vx[i]) * (y - vy[i])) / (vy[j] - vy[i]) + vx[i]) c = !c;
      }
      return c;
    };
  }
  const x0 = Math.max(0, Math.floor(cx - r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const x1 = Math.min(size - 1, Math.ceil(cx + r));
  const y1 = Math.min(size - 1, Math.ceil(cy + r));
  return { cls, cx, cy, inside, bbox: [x0, y0, x1, y1] };
}

/** Per-instance texture: the class style with jitter, as a function of pixel -> RGB. */
function makeTexture(rng: () => number, size: number, style: ClassStyle, cx: number, cy: number): (x: number, y: number, out: Float32Array) => void {
  const hue = style.hue + (rng() - 0.5) * 20;
  const sat = Math.min(1, style.saturation * (0.85 + 0.3 * rng()));
  const val = 0.75 + 0.2 * rng();
  const light = hsv(hue, sat * 0.8, val);
  const dark = hsv(hue + (rng() - 0.5) * 16, sat, val * (0.3 + 0.15 * rng()));
  const angle = style.angle + (rng() - 0.5) * 0.4;
  const period = style.period * size * (0.87 + 0.26 * rng());
  const ca = Math.cos(angle);
  const sa = Math.sin(angle);
  const ph1 = rng();
  const ph2 = rng();
  const k = (2 * Math.PI) / period;
  // Lighting: a linear ramp across the shape, +-15%.
  const lx = (rng() - 0.5) * 0.3 / size;
  const ly = (rng() - 0.5) * 0.3 / size;
  const blobs = style.pattern === 'blobs' ? new ValueNoise(rng, Math.max(2, Math.round((size / period) * 1.6))) : null;
  const pattern = style.pattern;
  return (x, y, out) => {
    const dx = x - cx;
    const dy = y - cy;
    const u = dx * ca + dy * sa;
    const v = -dx * sa + dy * ca;
    let t: number;
    switch (pattern) {
      case 'stripes':
        t = Math.sin(k * u + 2 * Math.PI * ph1) > 0 ? 1 : 0;
        break;
      case 'checks':
        t = Math.sin(k * u + 2 * Math.PI * ph1) * Math.sin(k * v + 2 * Math.PI * ph2) > 0 ? 1 : 0;
        break;
      case 'dots': {
        const fu = u / period + ph1 - Math.floor(u / period + ph1) - 0.5;
        const fv = v / period + ph2 - Math.floor(v / period + ph2) - 0.5;
        t = fu * fu + fv * fv < 0.09 ? 0 : 1;
        break;
      }
      case 'waves':
        t = Math.sin(k * (u + 0.3 * period * Math.sin(k * 0.5 * v + 2 * Math.PI * ph2)) + 2 * Math.PI * ph1) > 0 ? 1 : 0;
        break;
      case 'rings':
        t = Math.sin(k * Math.sqrt(dx * dx + dy * dy) + 2 * Math.PI * ph1) > 0 ? 1 : 0;
        break;
      case 'crosshatch':
        t = Math.abs(Math.sin(0.5 * k * u + Math.PI * ph1)) < 0.35 || Math.abs(Math.sin(0.5 * k * v + Math.PI * ph2)) < 0.35 ? 0 : 1;
        break;
      default:
        t = (blobs as ValueNoise).at(x / size, y / size) > 0.5 ? 1 : 0;
    }
    const shade = 1 + lx * dx + ly * dy;
    out[0] = (dark[0] + (light[0] - dark[0]) * t) * shade;
    out[1] = (dark[1] + (light[1] - dark[1]) * t) * shade;
    out[2] = (dark[2] + (light[2] - dark[2]) * t) * shade;
  };
}

/** One image: RGB `[size, size, 3]`, mask `[size, size]` and its tags (classes present, sorted). */
/**
 * The shapes of one image and the shape owning each pixel (-1: background). Layouts where a class
 * is nearly hidden (< 2% of the image) are redrawn: such a tag would name an object no one can
 * see. After 20 tries the last layout is kept (tags still exact).
 */
function layoutShapes(rng: () => number, size: number, k: number): { shapes: Shape[]; owner: Int8Array } {
  const n = size * size;
  const owner = new Int8Array(n);
  let shapes: Shape[] = [];
  for (let attempt = 0; attempt < 20; attempt++) {
    const count = Math.min(k, 1 + Math.floor(rng() * 3));
    const pool = Array.from({ length: k }, (_, i) => i + 1);
    shapes = [];
    for (let s = 0; s < count; s++) {
      const pick = Math.floor(rng() * pool.length);
      shapes.push(makeShape(rng, size, pool.splice(pick, 1)[0]));
    }
    owner.fill(-1);
    const area = new Int32Array(shapes.length);
    shapes.forEach((sh, s) => {
      const [x0, y0, x1, y1] = sh.bbox;
      for (let y = y0; y <= y1; y++) {
        for (let x = x0; x <= x1; x++) {
          if (sh.inside(x + 0.5, y + 0.5)) owner[y * size + x] = s;
        }
      }
    });
    for (let i = 0; i < n; i++) if (owner[i] >= 0) area[owner[i]]++;
    if (area.every((a) => a >= 0.02 * n)) break;
  }
  return { shapes, owner };
}

/** The pixels and the class mask of a layout: textured shapes on a noisy background, per-pixel noise on top. */
function paintImage(rng: () => number, size: number, shapes: Shape[], owner: Int8Array): { rgb: Uint8Array; mask: Uint8Array } {
  const n = size * size;
  const rgb = new Uint8Array(n * 3);
  const mask = new Uint8Array(n);
  // Background: two low-saturation colours of one random hue, mixed by two octaves of smooth noise.
  const bgHue = rng() * 360;
  const c1 = hsv(bgHue, 0.05 + 0.3 * rng(), 0.35 + 0.45 * rng());
  const c2 = hsv(bgHue + (rng() - 0.5) * 60, 0.05 + 0.3 * rng(), 0.35 + 0.45 * rng());
  const coarse = new ValueNoise(rng, 2 + Math.floor(rng() * 3));
  const fine = new ValueNoise(rng, 6 + Math.floor(rng() * 5));
  const textures = shapes.map((sh) => makeTexture(rng, size, classStyle(sh.cls - 1), sh.cx, sh.cy));
  const px = new Float32Array(3);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const i = y * size + x;
      const s = owner[i];
      if (s < 0) {
        const t = 0.7 * coarse.at(x / size, y / size) + 0.3 * fine.at(x / size, y / size);
        px[0] = c1[0] + (c2[0] - c1[0]) * t;
        px[1] = c1[1] + (c2[1] - c1[1]) * t;
        px[2] = c1[2] + (c2[2] - c1[2]) * t;
      } else {
        textures[s](x, y, px);
        mask[i] = shapes[s].cls;
      }
      const noise = (rng() - 0.5) * 16;
      rgb[i * 3] = clamp255(px[0] + noise);
      rgb[i * 3 + 1] = clamp255(px[1] + noise);
      rgb[i * 3 + 2] = clamp255(px[2] + noise);
    }
  }
  return { rgb, mask };
}

export function renderImage(seed: number, index: number, size: number, k: number): { rgb: Uint8Array; mask: Uint8Array; tags: number[] } {
  const rng = mulberry32(imageSeed(seed, index));
  const { shapes, owner } = layoutShapes(rng, size, k);
  const { rgb, mask } = paintImage(rng, size, shapes, owner);
  const present = new Set<number>();
  for (let i = 0; i < mask.length; i++) if (mask[i] !== 0) present.add(mask[i]);
  return { rgb, mask, tags: [...present].sort((a, b) => a - b) };
}

function clamp255(v: number): number {
  return v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
}

function checkOptions(o: SynthOptions): void {
  const bad = (reason: string): never => {
    throw new TagsegError(`synthetic dataset: ${reason}`, { file: o.out });
  };
  if (!Number.isInteger(o.images) || o.images < 1) bad(`images must be an integer >= 1, got ${o.images}`);
  if (!Number.isInteger(o.size) || o.size < 16 || o.size > 4096) bad(`size must be an integer in 16..4096, got ${o.size}`);
  if (!Number.isInteger(o.classes) || o.classes < 1 || o.classes > MAX_SYNTH_CLASSES) {
    bad(`classes must be an integer in 1..${MAX_SYNTH_CLASSES}, got ${o.classes}`);
  }
  if (!(o.valFraction >= 0 && o.valFraction < 1)) bad(`valFraction must be in [0, 1), got ${o.valFraction}`);
  if (!Number.isInteger(o.seed)) bad(`seed must be an integer, got ${o.seed}`);
}

/** Indices of the validation images: an exact count, drawn by a seeded shuffle. */
function valSet(seed: number, images: number, valFraction: number): Uint8Array {
  let nVal = Math.round(images * valFraction);
  if (valFraction > 0 && images > 1) nVal = Math.min(Math.max(nVal, 1), images - 1);
  if (images === 1) nVal = 0;
  const rng = mulberry32(imageSeed(seed, -1));
  const order = new Int32Array(images);
  for (let i = 0; i < images; i++) order[i] = i;
  for (let i = images - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = order[i];
    order[i] = order[j];
    order[j] = t;
  }
  const isVal = new Uint8Array(images);
  for (let i = 0; i < nVal; i++) isVal[order[i]] = 1;
  return isVal;
}

/** At most this many images drawn, encoded and written at once. */
const WRITES_IN_FLIGHT = 8;

export async function generateSynthetic(opts: SynthOptions): Promise<SynthResult> {
  checkOptions(opts);
  const out = path.resolve(opts.out);
  const names = synthClassNames(opts.classes);
  await ensureDir(path.dirname(out));
  const staged = tempPathFor(out);
  try {
    const lists = await writeImages(opts, staged, names);
    const classesJson = { classes: names, background: 0, void: 255 };
    const setDir = path.join(staged, 'ImageSets', 'Segmentation');
    await Promise.all([
      fs.writeFile(path.join(staged, 'classes.json'), `${JSON.stringify(classesJson, null, 1)}\n`),
      fs.writeFile(path.join(staged, 'tags.csv'), `${lists.tagLines.join('\n')}\n`),
      fs.writeFile(path.join(setDir, 'train.txt'), lists.train.length ? `${lists.train.join('\n')}\n` : ''),
      fs.writeFile(path.join(setDir, 'val.txt'), lists.val.length ? `${lists.val.join('\n')}\n` : ''),
    ]);
    await replaceDirAtomic(staged, out);
  } catch (err) {
    await removeTree(staged);
    throw err;
  }
  return { out, images: opts.images, classes: names };
}

/**
 * Draw and write every image and mask under `staged`; the split and tag lists come back in image
 * order (drawing is synchronous, the PNG encodes and writes of several images overlap).
 */
async function writeImages(opts: SynthOptions, staged: string, names: string[]): Promise<{ train: string[]; val: string[]; tagLines: string[] }> {
  const { images, size, classes: k, seed } = opts;
  const imgDir = path.join(staged, 'JPEGImages');
  const maskDir = path.join(staged, 'SegmentationClass');
  await Promise.all([ensureDir(imgDir), ensureDir(maskDir), ensureDir(path.join(staged, 'ImageSets', 'Segmentation'))]);
  const digits = Math.max(4, String(images - 1).length);
  const isVal = valSet(seed, images, opts.valFraction);
  const draw = async (i: number) => {
    const id = `syn_${String(i).padStart(digits, '0')}`;
    const { rgb, mask, tags } = renderImage(seed, i, size, k);
    const png = await sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
      .png({ compressionLevel: 6, adaptiveFiltering: true })
      .toBuffer();
    await Promise.all([
      fs.writeFile(path.join(imgDir, `${id}.png`), png),
      fs.writeFile(path.join(maskDir, `${id}.png`), encodeIndexedPng(mask, size, size)),
    ]);
    return { id, tags, val: isVal[i] === 1 };
  };
  const lists = { train: [] as string[], val: [] as string[], tagLines: ['image_id,tags'] };
  const bar = progress('synth', images);
  try {
    for await (const r of orderedMap(Array(images).keys(), draw, { concurrency: WRITES_IN_FLIGHT })) {
      (r.val ? lists.val : lists.train).push(r.id);
      lists.tagLines.push(`${r.id},${r.tags.map((t) => names[t]).join('|')}`);
      bar.tick();
    }
  } finally {
    bar.stop();
  }
  return lists;
}
