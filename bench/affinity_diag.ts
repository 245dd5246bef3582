// Affinity stage diagnostics on a workspace: label quality, affinity AUC, random-walk settings sweep, GT-oracle walk.
/*
 * (not a test)
 *   npm run bench -- affinity_diag <workspace> [options]
 * Needs <workspace>/cache/{images,cams}.arrow (cam stage done) and, unless --train, models/affinity.
 * Scores the images of dataset.train_split that have masks (--limit N: the first N of them).
 *
 * Sections (--sections, default all):
 *   labels  the affinity labels of params.yaml (and of each --conf-fg value with a bg class) against
 *           ground truth on the stride-4 grid (a cell's GT = the majority label of its 4x4 block,
 *           void where void wins): share of cells confident, accuracy of the confident ones
 *           (fg-labelled and bg-labelled apart), and how much of the GT fg got a confident fg label.
 *   auc     predicted a_ij ('full' layout, every offset of affinity.radius) for pairs whose two ends
 *           have a GT label: ROC AUC of a_ij for same-label (positive) vs different-label pairs,
 *           mean a_ij of each, and the share of different-label pairs with a_ij > 0.5. Pairs that
 *           cross a GT boundary are the ones the walk must not leak through.
 *   walk    mIoU (best bg threshold of the stage's sweep 0.05..0.95, or argmax without bg) of the
 *           CAMs and of the walk for every combination of --betas x --logts x --bg x --norm:
 *             bg   alpha: walk [(1 - max CAM)^alpha, CAMs] (PSA, the stage's mode with a bg class)
 *                  none:  walk the CAMs alone, threshold bg afterwards (IRN sem_seg_bg_thres)
 *             norm max:   each walked fg channel / its max (the stage), none: raw walked scores
 *           and, with a bg class, `argmax` = PSA's argmax over the walked [bg, fg] (bg alpha only).
 *           --oracle adds the same walks over GT affinities (1 same label, 0 different; the model's
 *           a_ij where an end is void): the ceiling the walk itself allows with perfect affinities.
 * Model: --model DIR (default <workspace>/models/affinity), or --train: train a fresh AffinityNet
 * with the workspace params (+ --set affinity.key=value ..., e.g. --set affinity.levels=[1,2,3]
 * --set affinity.reduce=[64,128,256]) into a temp dir, as the stage would; reports the training time.
 * Output: text tables on stdout; --json FILE writes every figure.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { type Row, readAll } from '../pipeline/arrow.js';
import { initBackend } from '../pipeline/backend.js';
import YAML from 'yaml';
import { type Params, defaultParams, validateParams } from '../stages/params.js';
import { ThresholdSweep } from '../maps/evaluate.js';
import { decodeFloat16, decodeFloat32 } from '../maps/f16.js';
import { affinities } from '../nn/affinity_head.js';
import { imageAffinityLabels } from '../stages/affinity/image_labels.js';
import { type AffinityNet, affinityNetFromCam, embed, loadAffinityModel } from '../nn/affinity_net.js';
import { IGNORE } from '../stages/affinity/pairs.js';
import { LABEL_STRIDE, trainAffinity } from '../stages/affinity/train.js';
import { type Offset, neighbourOffsets, randomWalk, withBackground } from '../ops/randomwalk.js';

const SWEEP = Array.from({ length: 19 }, (_, i) => Math.round((i + 1) * 5) / 100);

interface Args {
  ws: string;
  sections: Set<string>;
  model: string | null;
  train: boolean;
  sets: string[];
  limit: number;
  betas: number[];
  logts: number[];
  bg: string[];
  norm: string[];
  confFg: number[];
  oracle: boolean;
  json: string | null;
}

function parseArgs(argv: string[]): Args {
  const a: Args = {
    ws: '', sections: new Set(['labels', 'auc', 'walk']), model: null, train: false, sets: [], limit: Infinity,
    betas: [], logts: [], bg: ['alpha', 'none'], norm: ['max', 'none'], confFg: [], oracle: false, json: null,
  };
  const nums = (s: string) => s.split(',').map(Number);
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const v = () => {
      const x = argv[++i];
      if (x === undefined) throw new Error(`${k} needs a value`);
      return x;
    };
    if (k === '--sections') a.sections = new Set(v().split(','));
    else if (k === '--model') a.model = v();
    else if (k === '--train') a.train = true;
    else if (k === '--set') a.sets.push(v());
    else if (k === '--limit') a.limit = Number(v());
    else if (k === '--betas') a.betas = nums(v());
    else if (k === '--logts') a.logts = nums(v());
    else if (k === '--bg') a.bg = v().split(',');
    else if (k === '--norm') a.norm = v().split(',');
    else if (k === '--conf-fg') a.confFg = nums(v());
    else if (k === '--oracle') a.oracle = true;
    else if (k === '--json') a.json = v();
    else if (!k.startsWith('--') && !a.ws) a.ws = k;
    else throw new Error(`unknown argument ${k}`);
  }
  if (!a.ws) throw new Error('usage: affinity_diag <workspace> [--train] [--set affinity.k=v] [--betas ..] [--logts ..] [--oracle]');
  return a;
}

interface Item {
  id: string;
  tags: number[];
  h: number;
  w: number;
  H: number;
  W: number;
  pixels: Uint8Array;
  mask: Uint8Array;
  cams: Float32Array;
  /** GT on the label grid [h * w] (majority of the stride x stride block, 255 = void). */
  gridGt: Uint8Array;
}

/** GT on the stride grid: the majority label of each block (void counted as a label). */
function gridLabels(mask: Uint8Array, H: number, W: number, h: number, w: number, s: number): Uint8Array {
  const out = new Uint8Array(h * w);
  const count = new Map<number, number>();
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      count.clear();
      for (let yy = y * s; yy < Math.min(H, (y + 1) * s); yy++) {
        for (let xx = x * s; xx < Math.min(W, (x + 1) * s); xx++) {
          const m = mask[yy * W + xx];
          count.set(m, (count.get(m) ?? 0) + 1);
        }
      }
      let best = IGNORE;
      let n = -1;
      for (const [k, c] of count) if (c > n) [best, n] = [k, c];
      out[y * w + x] = best;
    }
  }
  return out;
}

async function loadItems(ws: string, p: Params, limit: number): Promise<{ items: Item[]; classes: string[]; background: number | null }> {
  const camRows = await readAll(path.join(ws, 'cache/cams.arrow'));
  const imgRows = await readAll(path.join(ws, 'cache/images.arrow'));
  const info = await import('../pipeline/arrow.js').then((m) => m.readInfo(path.join(ws, 'cache/cams.arrow')));
  const extra = info.meta.extra ?? {};
  const background = typeof extra.background === 'number' ? extra.background : null;
  const f16 = extra.dtype !== 'float32';
  // by id in images.arrow's order: cams.arrow may be a folder of shards' parts (rows by part)
  const camById = new Map<string, Row>(camRows.map((r) => [r.id as string, r]));
  const items: Item[] = [];
  for (const ir of imgRows) {
    const cr = camById.get(ir.id as string);
    if (!cr || cr.split !== p.dataset.train_split || items.length >= limit) continue;
    if (!ir.mask) continue;
    const h = cr.height as number;
    const w = cr.width as number;
    const H = ir.height as number;
    const W = ir.width as number;
    const mask = ir.mask as Uint8Array;
    items.push({
      id: cr.id as string, tags: cr.tags as number[], h, w, H, W, pixels: ir.pixels as Uint8Array, mask,
      cams: f16 ? decodeFloat16(cr.cams as Uint8Array) : decodeFloat32(cr.cams as Uint8Array),
      gridGt: gridLabels(mask, H, W, h, w, LABEL_STRIDE),
    });
  }
  return { items, classes: info.meta.classes, background };
}

// ------------------------------------------------------------------------------------------ labels

function labelQuality(items: Item[], p: Params, background: number | null, confFg: number): Record<string, number> {
  const a = p.affinity;
  let cells = 0, conf = 0, ok = 0, fgConf = 0, fgOk = 0, bgConf = 0, bgOk = 0, gtFg = 0, gtFgHit = 0;
  for (const it of items) {
    const lab = imageAffinityLabels(it.cams, it.tags, it.h, it.w, { pixels: it.pixels, height: it.H, width: it.W },
      { background, confFg, confBg: a.conf_bg, margin: a.margin, floor: a.floor, crf: a.crf }, LABEL_STRIDE);
    for (let i = 0; i < lab.length; i++) {
      const g = it.gridGt[i];
      if (g === IGNORE) continue;
      cells++;
      const isFgGt = g !== background;
      if (isFgGt) gtFg++;
      if (lab[i] === IGNORE) continue;
      conf++;
      const right = lab[i] === g;
      if (right) ok++;
      if (lab[i] === background) {
        bgConf++;
        if (right) bgOk++;
      } else {
        fgConf++;
        if (right) fgOk++;
        if (right && isFgGt) gtFgHit++;
      }
    }
  }
  const r = (x: number, n: number) => (n > 0 ? x / n : NaN);
  return {
    confFg, confident: r(conf, cells), accuracy: r(ok, conf), fgShare: r(fgConf, conf), fgAccuracy: r(fgOk, fgConf),
    bgAccuracy: r(bgOk, bgConf), gtFgCovered: r(gtFgHit, gtFg),
  };
}

// ------------------------------------------------------------------------------------------ affinities

/** 'full' layout affinities [K, h, w] of every item, read back to plain arrays. */
function predictAffinities(net: AffinityNet, items: Item[], offsets: readonly Offset[], radius: number): Float32Array[] {
  return items.map((it) => {
    const t = tf.tidy(() => {
      const x = tf.cast(tf.tensor4d(it.pixels, [1, it.H, it.W, 3], 'int32'), 'float32') as tf.Tensor4D;
      return tf.squeeze(affinities(embed(net, x, [it.h, it.w]), offsets, radius, 'full'), [0]);
    });
    const d = t.dataSync() as Float32Array;
    t.dispose();
    return d;
  });
}

/** GT affinities: 1 for same label, 0 for different, the model's value where an end is void. */
function oracleAffinities(items: Item[], pred: Float32Array[], offsets: readonly Offset[]): Float32Array[] {
  return items.map((it, n) => {
    const { h, w, gridGt: g } = it;
    const out = Float32Array.from(pred[n]);
    offsets.forEach(({ dy, dx }, k) => {
      for (let y = 0; y + dy < h; y++) {
        for (let x = Math.max(0, -dx); x < Math.min(w, w - dx); x++) {
          const a = g[y * w + x];
          const b = g[(y + dy) * w + x + dx];
          if (a !== IGNORE && b !== IGNORE) out[(k * h + y) * w + x] = a === b ? 1 : 0;
        }
      }
    });
    return out;
  });
}

function affinityAuc(items: Item[], aff: Float32Array[], offsets: readonly Offset[]): Record<string, number> {
  const B = 1000;
  const pos = new Float64Array(B + 1);
  const neg = new Float64Array(B + 1);
  let sPos = 0, sNeg = 0, negHigh = 0;
  items.forEach((it, n) => {
    const { h, w, gridGt: g } = it;
    offsets.forEach(({ dy, dx }, k) => {
      for (let y = 0; y + dy < h; y++) {
        for (let x = Math.max(0, -dx); x < Math.min(w, w - dx); x++) {
          const a = g[y * w + x];
          const b = g[(y + dy) * w + x + dx];
          if (a === IGNORE || b === IGNORE) continue;
          const v = aff[n][(k * h + y) * w + x];
          const bin = Math.min(B, Math.max(0, Math.round(v * B)));
          if (a === b) {
            pos[bin]++;
            sPos += v;
          } else {
            neg[bin]++;
            sNeg += v;
            if (v > 0.5) negHigh++;
          }
        }
      }
    });
  });
  // AUC = P(a_pos > a_neg) + P(tie) / 2, over the histogram
  let nPos = 0, nNeg = 0;
  for (let i = 0; i <= B; i++) {
    nPos += pos[i];
    nNeg += neg[i];
  }
  let below = 0, auc = 0;
  for (let i = 0; i <= B; i++) {
    auc += pos[i] * (below + neg[i] / 2);
    below += neg[i];
  }
  return { auc: auc / (nPos * nNeg), meanSame: sPos / nPos, meanDiff: sNeg / nNeg, diffAbove05: negHigh / nNeg, samePairs: nPos, diffPairs: nNeg };
}

// ------------------------------------------------------------------------------------------ walk

interface WalkConfig {
  beta: number;
  logt: number;
  bg: 'alpha' | 'none';
  norm: 'max' | 'none';
}

function walkScores(
  items: Item[], aff: Float32Array[], offsets: readonly Offset[], radius: number, numClasses: number, background: number | null,
  configs: WalkConfig[], alpha: number,
): { config: WalkConfig; miou: number | null; threshold: number | null; argmax: number | null }[] {
  const sweeps = configs.map(() => new ThresholdSweep(numClasses, background, SWEEP));
  const argmax = configs.map((c) => (background !== null && c.bg === 'alpha' ? new ThresholdSweep(numClasses, null) : null));
  items.forEach((it, n) => {
    const C = it.tags.length;
    if (C === 0) return;
    // one walk per (beta, logt, bg); the norms share it
    const done = new Map<string, { fg: Float32Array; raw: Float32Array | null }>();
    configs.forEach((c, ci) => {
      const key = `${c.beta}/${c.logt}/${c.bg}`;
      let r = done.get(key);
      if (!r) {
        const withBg = c.bg === 'alpha' && background !== null;
        const rw = tf.tidy(() => {
          const cams = tf.tensor3d(it.cams, [C, it.h, it.w]);
          const a = tf.tensor3d(aff[n], [offsets.length, it.h, it.w]);
          return randomWalk(withBg ? withBackground(cams, { alpha }) : cams, a, offsets, radius, { beta: c.beta, logt: c.logt });
        });
        const all = rw.dataSync() as Float32Array;
        rw.dispose();
        r = withBg ? { fg: all.slice(it.h * it.w), raw: all } : { fg: all, raw: null };
        done.set(key, r);
      }
      let maps = r.fg;
      if (c.norm === 'max') {
        maps = Float32Array.from(r.fg);
        const m = it.h * it.w;
        for (let k = 0; k < C; k++) {
          let mx = 0;
          for (let i = 0; i < m; i++) mx = Math.max(mx, maps[k * m + i]);
          if (mx > 0) for (let i = 0; i < m; i++) maps[k * m + i] /= mx;
        }
      }
      sweeps[ci].addStrided(maps, it.tags, it.h, it.w, it.mask, it.H, it.W);
      const am = argmax[ci];
      if (am && r.raw && background !== null && c.norm === 'none') am.addStrided(r.raw, [background, ...it.tags], it.h, it.w, it.mask, it.H, it.W);
    });
  });
  return configs.map((config, i) => {
    const b = sweeps[i].result().best;
    const am = argmax[i];
    return { config, miou: b.miou, threshold: b.threshold, argmax: am && am.images > 0 ? am.result().best.miou : null };
  });
}

function camScore(items: Item[], numClasses: number, background: number | null): { miou: number | null; threshold: number | null } {
  const s = new ThresholdSweep(numClasses, background, SWEEP);
  for (const it of items) s.addStrided(it.cams, it.tags, it.h, it.w, it.mask, it.H, it.W);
  return s.result().best;
}

// ------------------------------------------------------------------------------------------ main

const pct = (v: number | null | undefined) => (v === null || v === undefined || Number.isNaN(v) ? '   -' : (100 * v).toFixed(1).padStart(5));

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  await initBackend();
  const ws = path.resolve(args.ws);
  // Only seed, dataset and affinity matter here: the workspace's, on top of the defaults, so a
  // params.yaml that lacks a newer stage's section still works.
  const file = path.join(ws, 'params.yaml');
  const raw = YAML.parse(await fs.readFile(file, 'utf8')) as Record<string, unknown>;
  const p = validateParams({ ...defaultParams(), seed: raw.seed, dataset: raw.dataset, affinity: raw.affinity }, file, args.sets);
  const a = p.affinity;
  const t0 = performance.now();
  const { items, classes, background } = await loadItems(ws, p, args.limit);
  const out: Record<string, unknown> = { workspace: ws, images: items.length, affinity: a };
  console.log(`${items.length} train images with masks (${classes.length} classes, background ${background ?? 'none'}), loaded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  if (args.sections.has('labels')) {
    const values = background === null ? [a.conf_fg] : [...new Set([a.conf_fg, ...args.confFg])];
    const rows = values.map((v) => labelQuality(items, p, background, v));
    out.labels = rows;
    console.log('\n== affinity labels vs GT on the stride-4 grid');
    console.log(`${background === null ? `margin ${a.margin} floor ${a.floor}` : 'conf_fg'}  confident  accuracy  fg-acc  bg-acc  fg-share  GT-fg-covered`);
    for (const r of rows) {
      console.log(`${(background === null ? '' : String(r.confFg)).padEnd(7)}  ${pct(r.confident)}      ${pct(r.accuracy)}    ${pct(r.fgAccuracy)}  ${pct(r.bgAccuracy)}  ${pct(r.fgShare)}     ${pct(r.gtFgCovered)}`);
    }
  }

  if (!args.sections.has('auc') && !args.sections.has('walk')) return finish(args, out);
  const offsets = neighbourOffsets(a.radius);
  let net: AffinityNet;
  let tmp: string | null = null;
  if (args.train) {
    tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'affdiag-'));
    net = await affinityNetFromCam(path.join(ws, 'models/cam'), { dim: a.dim, radius: a.radius, stride: LABEL_STRIDE, seed: p.seed, levels: a.levels, reduce: a.reduce });
    const train = items.map((it) => ({
      id: it.id, pixels: it.pixels, height: it.H, width: it.W,
      labels: imageAffinityLabels(it.cams, it.tags, it.h, it.w, { pixels: it.pixels, height: it.H, width: it.W },
        { background, confFg: a.conf_fg, confBg: a.conf_bg, margin: a.margin, floor: a.floor, crf: a.crf }, LABEL_STRIDE),
    }));
    const ts = performance.now();
    const r = await trainAffinity({ net, images: train, affinity: a, background, seed: p.seed, checkpointDir: path.join(tmp, 'train'), hash: 'diag' });
    out.training = { seconds: (performance.now() - ts) / 1000, losses: r.losses, crop: r.crop, levels: net.head.levels };
    console.log(`\ntrained ${r.epochs} epochs on ${train.length} images in ${((performance.now() - ts) / 1000).toFixed(0)} s, head levels [${net.head.levels.join(', ')}], losses ${r.losses.map((l) => l.toFixed(3)).join(' ')}`);
  } else {
    net = await loadAffinityModel(args.model ?? path.join(ws, 'models/affinity'));
    if (net.config.radius !== a.radius) throw new Error(`model radius ${net.config.radius} != affinity.radius ${a.radius}`);
  }
  try {
    const ta = performance.now();
    const aff = predictAffinities(net, items, offsets, a.radius);
    console.log(`affinities of ${items.length} images in ${((performance.now() - ta) / 1000).toFixed(1)} s`);
    if (args.sections.has('auc')) {
      const r = affinityAuc(items, aff, offsets);
      out.auc = r;
      console.log('\n== predicted a_ij vs GT (pairs within the radius, both ends labelled)');
      console.log(`AUC ${r.auc.toFixed(4)}  mean a: same ${r.meanSame.toFixed(3)}, different ${r.meanDiff.toFixed(3)}; different with a > 0.5: ${pct(r.diffAbove05)}%  (${r.samePairs} same, ${r.diffPairs} different pairs)`);
    }
    if (args.sections.has('walk')) {
      const betas = args.betas.length ? args.betas : [a.beta];
      const logts = args.logts.length ? args.logts : [a.logt];
      const bgs = (background === null ? ['none'] : args.bg) as WalkConfig['bg'][];
      const configs: WalkConfig[] = [];
      for (const beta of betas) for (const logt of logts) for (const bg of bgs) for (const norm of args.norm as WalkConfig['norm'][]) configs.push({ beta, logt, bg, norm });
      const cam = camScore(items, classes.length, background);
      out.cam = cam;
      console.log(`\n== random walk (CAM ${pct(cam.miou)} at ${cam.threshold ?? 'argmax'})`);
      const show = (label: string, affs: Float32Array[]) => {
        const tw = performance.now();
        const res = walkScores(items, affs, offsets, a.radius, classes.length, background, configs, a.alpha);
        console.log(`${label} (${((performance.now() - tw) / 1000).toFixed(0)} s)\n beta logt bg    norm   mIoU  thr   PSA-argmax`);
        for (const r of res) {
          const c = r.config;
          console.log(` ${String(c.beta).padStart(4)} ${String(c.logt).padStart(4)} ${c.bg.padEnd(5)} ${c.norm.padEnd(5)} ${pct(r.miou)}  ${String(r.threshold ?? '-').padEnd(5)} ${r.argmax === null ? '' : pct(r.argmax)}`);
        }
        return res;
      };
      out.walk = show('predicted affinities', aff);
      if (args.oracle) out.oracle = show('GT-oracle affinities', oracleAffinities(items, aff, offsets));
    }
  } finally {
    net.dispose();
    if (tmp) await fs.rm(tmp, { recursive: true, force: true });
  }
  await finish(args, out);
}

async function finish(args: Args, out: Record<string, unknown>): Promise<void> {
  if (args.json) await fs.writeFile(args.json, `${JSON.stringify(out, null, 2)}\n`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
